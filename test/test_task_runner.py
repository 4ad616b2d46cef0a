"""The task entry point on a running graph, as an operator uses it: the panda_bringup graph (the
robot_bringup nodes on the embedded MuJoCo Panda, ros2_control contract, free-running, every node
its own process) and `vla-task` in another process, over the RunTask action."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
import time

import numpy as np
import pytest

from vla_policy_node.core.task_progress import TaskLimits, TaskProgress, end_reason
from vla_policy_node.nodes.task_runner import TaskRequest, new_episode_id

DOMAIN_ID = 40          # this file's graph; 41: a domain with no graph at all
FEEDBACK = re.compile(r"^\[(?P<id>[^\]]+)\] (?P<phase>[^:]+): (?P<chunks>\d+) chunks, (?P<steps>\d+) steps")
RESULT = re.compile(r"vla-task: (?P<id>\S+): (?P<reason>\w+), success=(?P<success>\w+), (?P<steps>\d+) steps")


# ---- the pure parts --------------------------------------------------------------------------
def test_the_end_reason_follows_operator_then_success_then_limits():
    limits = TaskLimits(timeout_s=10.0, max_steps=100)
    assert end_reason(limits, 1.0, 5, False) is None
    assert end_reason(limits, 1.0, 100, False) == "step_limit"
    assert end_reason(limits, 10.0, 5, False) == "timeout"
    assert end_reason(limits, 10.0, 100, True) == "success"          # reached in the same instant as a limit
    assert end_reason(limits, 1.0, 5, True, canceled=True) == "canceled"
    assert end_reason(limits, 1.0, 5, True, canceled=True, preempted=True) == "preempted"
    assert end_reason(TaskLimits(timeout_s=10.0), 1.0, 10 ** 6, False) is None   # 0 = no step limit


def test_limits_and_requests_name_what_is_wrong():
    with pytest.raises(ValueError, match="timeout_s"):
        TaskLimits(timeout_s=0.0)
    with pytest.raises(ValueError, match="max_steps"):
        TaskLimits(timeout_s=1.0, max_steps=-1)
    with pytest.raises(ValueError, match="instruction"):
        TaskRequest(instruction="  ").check()
    with pytest.raises(ValueError, match="timeout_s"):
        TaskRequest(instruction="reach", timeout_s=-1.0).check()
    TaskRequest(task="reach").check()                                 # a simulator gives the instruction


def test_progress_counts_only_its_own_episode():
    progress = TaskProgress("reach_1")
    progress.on_chunk("reach_0", 5.0)              # a chunk of the previous episode still in flight
    progress.on_feedback("reach_0", 4)
    progress.on_chunk("reach_1", 12.5)
    progress.on_feedback("reach_1", 4)
    progress.on_feedback("reach_1", 3)
    assert (progress.chunks, progress.executed_steps, progress.last_latency_ms) == (1, 7, 12.5)
    assert new_episode_id("reach").startswith("reach_") and new_episode_id("") != new_episode_id("")


def test_health_levels_name_the_threshold():
    from vla_policy_node.core.health import ERROR, OK, WARN, Above, Flag, assess

    checks = [Above("latency_ms_p95", 50.0, 100.0, " ms"), Flag("estop", ERROR, "emergency stop latched"),
              Above("state_age_ms", 125.0, 250.0, " ms", when=lambda f: f["armed"])]
    assert assess({"latency_ms_p95": 20.0, "estop": False, "state_age_ms": 900.0, "armed": False}, checks) == \
        (OK, "OK")                                                    # stale state matters only when armed
    assert assess({"latency_ms_p95": 60.0, "armed": True, "state_age_ms": None}, checks) == \
        (WARN, "latency_ms_p95 60 ms > 50 ms")
    assert assess({"latency_ms_p95": 60.0, "estop": True, "armed": True, "state_age_ms": 300.0}, checks) == \
        (ERROR, "emergency stop latched; state_age_ms 300 ms > 250 ms")
    # a delay judged against the span of the chunk being executed (its length is its checkpoint's)
    from vla_policy_node.core.health import AboveShare
    share = [AboveShare("latency_ms_p95", "chunk_ms", 0.5, 1.0, " ms")]
    assert assess({"latency_ms_p95": 150.0, "chunk_ms": 500.0}, share) == (OK, "OK")
    assert assess({"latency_ms_p95": 150.0, "chunk_ms": 100.0}, share) == \
        (ERROR, "latency_ms_p95 150 ms > 1 x chunk_ms 100 ms")
    assert assess({"latency_ms_p95": 60.0, "chunk_ms": 100.0}, share)[0] == WARN


# ---- through the graph -----------------------------------------------------------------------
GRAPH_PROCESSES: dict = {}      # node name -> live process of the module's graph (respawns included)
GRAPH_OUT: list = []            # its output folder


@pytest.fixture(scope="module")
def graph_processes(graph):
    return GRAPH_PROCESSES


@pytest.fixture(scope="module")
def graph(tmp_path_factory):
    from vla_policy_node.graph_runner import run_graph

    out = tmp_path_factory.mktemp("panda_bringup")
    env = {"ROS_DOMAIN_ID": str(DOMAIN_ID), "ROS_AUTOMATIC_DISCOVERY_RANGE": "LOCALHOST"}
    stop, result, processes = threading.Event(), {}, GRAPH_PROCESSES
    GRAPH_OUT.append(out)
    overrides = {"task_runner": {"record_dir": str(out / "tasks")}}
    runner = threading.Thread(target=lambda: result.update(run_graph("panda_bringup", overrides, out / "logs", env=env,
                                                                     stop=stop, timeout_s=600, processes=processes)))
    runner.start()
    wait_until_active(env)
    yield env
    stop.set()
    runner.join(60)
    assert result.get("error") is None, result.get("error")
    restarts = {n: p["restarts"] for n, p in result["processes"].items() if p["restarts"]}
    assert restarts in ({}, {"policy": 1}), restarts          # only the policy, killed by its test
    processes.clear()


def vla_task(env: dict, *args: str, timeout_s: float = 150.0) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "vla_policy_node.task_cli", *args], env={**os.environ, **env},
                          capture_output=True, text=True, timeout=timeout_s)


def start_task(env: dict, *args: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "vla_policy_node.task_cli", *args], env={**os.environ, **env},
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def wait_for_feedback(proc: subprocess.Popen, phase: str, min_steps: int = 0, timeout_s: float = 90.0) -> list[str]:
    """Lines of a running vla-task until one shows `phase` with at least `min_steps` executed."""
    lines, deadline = [], time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line:
            break
        lines.append(line)
        m = FEEDBACK.match(line)
        if m and m["phase"] == phase and int(m["steps"]) >= min_steps:
            return lines
    raise AssertionError(f"no '{phase}' feedback with >= {min_steps} steps: {lines}")


def result_of(stdout: str) -> re.Match:
    m = RESULT.search(stdout)
    assert m, stdout
    return m


def test_an_instruction_and_arm_reach_the_target_as_on_a_physical_arm(graph):
    """The physical-arm path: no simulator reset, one goal resets perception, policy and executor
    with one episode id and arms; the arm reaches the target over the ros2_control contract."""
    done = vla_task(graph, "reach the red target", "--arm", "--timeout", "120")
    assert done.returncode == 0, done.stdout + done.stderr
    result = result_of(done.stdout)
    assert result["reason"] == "success" and result["success"] == "true" and int(result["steps"]) > 10
    moving = [FEEDBACK.match(line) for line in done.stdout.splitlines()]
    assert any(m and m["phase"] == "armed" and int(m["chunks"]) > 0 and m["id"] == result["id"] for m in moving)


def test_a_simulator_task_and_seed_reset_the_simulator_first(graph):
    done = vla_task(graph, "--task", "reach", "--seed", "100", "--arm", "--timeout", "120", "--quiet")
    assert done.returncode == 0, done.stdout + done.stderr
    result = result_of(done.stdout)
    assert result["id"].startswith("reach_") and result["reason"] == "success"
    assert done.stdout.count("\n") == 1                                   # --quiet: the result only
    # record_dir is set: the task's topics are in its own bag
    from vla_policy_node.data.bags import read_bag
    topics, chunks = set(), []
    for topic, _, _, msg in read_bag(GRAPH_OUT[0] / "tasks" / result["id"]):
        topics.add(topic)
        if topic == "/vla/action_chunk":
            chunks.append(msg.episode_id)
    assert {"/clock", "/joint_states", "/vla/observation", "/vla/action_chunk", "/vla/episode"} <= topics
    assert chunks and set(chunks) == {result["id"]}


def test_a_new_task_preempts_the_running_one(graph):
    first = start_task(graph, "wait here", "--timeout", "120")           # disarmed: the arm holds
    try:
        wait_for_feedback(first, "running (disarmed)")
        second = vla_task(graph, "hold here", "--timeout", "3", "--quiet")      # disarmed, ends by its timeout
        out, err = first.communicate(timeout=60)
    finally:
        first.kill()
    assert result_of(second.stdout)["reason"] == "timeout", second.stdout + second.stderr
    assert first.returncode == 1 and result_of(out)["reason"] == "preempted", out + err
    assert result_of(out)["id"] != result_of(second.stdout)["id"]


def test_ctrl_c_cancels_the_task_and_the_arm_holds(graph):
    task = start_task(graph, "--task", "reach", "--seed", "102", "--arm", "--timeout", "120")
    try:
        wait_for_feedback(task, "armed", min_steps=1)
        task.send_signal(signal.SIGINT)
        out, err = task.communicate(timeout=60)
    finally:
        task.kill()
    assert task.returncode == 1 and result_of(out)["reason"] == "canceled", out + err
    assert "canceling the task" in err
    status, positions = executor_status_and_joint_motion(graph)
    assert not status.armed and status.holding and status.hold_reason == "disarmed"
    assert np.max(np.ptp(positions, axis=0)) < 1e-3          # rad over the sampled second: holding still


def test_a_task_the_graph_cannot_run_is_named(graph):
    done = vla_task(graph, "--task", "no-such-task", "--arm", "--quiet")
    assert done.returncode == 1
    assert "/vla/sim/reset_episode refused" in done.stderr and "no-such-task" in done.stderr


def test_pause_holds_the_arm_and_resume_brings_the_graph_back(graph):
    """Lifecycle: pause deactivates the nodes (the executor disarms, arming is refused, the arm
    holds still); resume activates them again and a task runs."""
    paused = call_trigger(graph, "lifecycle_manager/pause")
    assert paused.success, paused.message
    refused = call_set_armed(graph, True)
    assert not refused.success and "inactive" in refused.message
    status, positions = executor_status_and_joint_motion(graph)
    assert not status.armed and status.holding
    assert np.max(np.ptp(positions, axis=0)) < 1e-3
    assert vla_task(graph, "reach the red target", "--arm", "--quiet", "--server-timeout", "5").returncode == 2
    resumed = call_trigger(graph, "lifecycle_manager/resume")
    assert resumed.success, resumed.message
    done = vla_task(graph, "--task", "reach", "--seed", "104", "--arm", "--timeout", "120", "--quiet")
    assert done.returncode == 0 and result_of(done.stdout)["reason"] == "success", done.stdout + done.stderr


def test_a_killed_policy_comes_back_active_without_an_operator(graph, graph_processes):
    """The policy process killed: the runner respawns it (unconfigured: autostart is off in bringup
    graphs), the lifecycle manager configures and activates it again (counted in its diagnostics:
    the unconfigured moment itself can be shorter than their period), and the next task succeeds."""
    name = "lifecycle_manager: lifecycle"

    def recovered(seen: dict) -> bool:
        values = seen.get(name, {}).get("values", {})
        return int(values.get("recoveries.policy", 0)) >= 1 and values.get("states.policy") == "active"

    before = diagnostics_of(graph, {name}, 30.0)[name]["values"]
    assert int(before["recoveries.policy"]) == 0, before
    graph_processes["policy"].kill()
    seen = diagnostics_of(graph, {name}, 90.0, until=recovered)
    assert recovered(seen), seen.get(name)
    assert wait_until_active(graph)["states.policy"] == "active"
    done = vla_task(graph, "--task", "reach", "--seed", "105", "--arm", "--timeout", "120", "--quiet")
    assert done.returncode == 0 and result_of(done.stdout)["reason"] == "success", done.stdout + done.stderr


def call_trigger(env: dict, service: str):
    from std_srvs.srv import Trigger
    return call_service(env, Trigger, service, Trigger.Request())


def call_set_armed(env: dict, armed: bool):
    from vla_msgs.srv import SetArmed
    return call_service(env, SetArmed, "/vla/executor/set_armed", SetArmed.Request(armed=armed))


def call_service(env: dict, srv_type, name: str, request, timeout_s: float = 90.0):
    import rclpy
    from rclpy.executors import SingleThreadedExecutor

    context = rclpy.Context()
    rclpy.init(context=context, domain_id=int(env["ROS_DOMAIN_ID"]))
    node = rclpy.create_node("service_probe", context=context)
    executor = SingleThreadedExecutor(context=context)
    executor.add_node(node)
    try:
        client = node.create_client(srv_type, name)
        assert client.wait_for_service(timeout_sec=20.0), f"service {name} missing"
        future = client.call_async(request)
        executor.spin_until_future_complete(future, timeout_sec=timeout_s)
        assert future.done(), f"{name} did not answer"
        return future.result()
    finally:
        executor.shutdown()
        node.destroy_node()
        context.try_shutdown()


def test_every_node_reports_its_health_on_diagnostics(graph):
    """/diagnostics from the graph's processes: one status per node with levels and figures."""
    statuses = diagnostics_of(graph, {"perception: observations", "policy: model", "executor: execution",
                                      "task_runner: tasks", "lifecycle_manager: lifecycle"})
    executor = statuses["executor: execution"]
    # after the tasks: disarmed; WARN allowed (a chunk delay above half the chunk on a loaded machine)
    assert executor["level"] in (0, 1) and executor["values"]["armed"] == "False", executor
    assert float(executor["values"]["command_rate_hz"]) >= 0 and executor["values"]["gate.outside_limits"] == "0"
    assert int(executor["values"]["counters.commands_sent"]) > 0
    policy = statuses["policy: model"]
    assert policy["values"]["backend"] == "reach_ik" and float(policy["values"]["process_rss_mb"]) > 20
    perception = statuses["perception: observations"]
    assert perception["level"] == 0 and float(perception["values"]["observation_rate_hz"]) > 1
    assert int(statuses["task_runner: tasks"]["values"]["tasks_run"]) >= 1     # the policy test restarted none
    manager = statuses["lifecycle_manager: lifecycle"]
    assert manager["level"] == 0 and {manager["values"][f"states.{n}"] for n in
                                      ("perception", "policy", "executor", "task_runner")} == {"active"}


def wait_until_active(env: dict, timeout_s: float = 120.0, namespace: str = "") -> dict:
    """Until the lifecycle manager reports every managed node active; its status values."""
    name = f"{namespace}/lifecycle_manager: lifecycle".lstrip("/")
    status = diagnostics_of(env, {name}, timeout_s,
                            until=lambda seen: name in seen and seen[name]["level"] == 0
                            and seen[name]["values"].get("target") == "active")[name]
    assert status["level"] == 0, status
    return status["values"]


def diagnostics_of(env: dict, names: set, timeout_s: float = 20.0, until=None) -> dict:
    """name -> {level, message, values} of the newest DiagnosticStatus of each of `names`
    (waiting until `until(seen)` holds, when given)."""
    import rclpy
    from diagnostic_msgs.msg import DiagnosticArray
    from rclpy.executors import SingleThreadedExecutor

    context = rclpy.Context()
    rclpy.init(context=context, domain_id=int(env["ROS_DOMAIN_ID"]))
    node = rclpy.create_node("diagnostics_probe", context=context)
    executor = SingleThreadedExecutor(context=context)
    executor.add_node(node)
    seen = {}

    def on_array(msg) -> None:
        for status in msg.status:
            seen[status.name] = {"level": status.level[0] if isinstance(status.level, bytes) else int(status.level),
                                 "message": status.message, "values": {kv.key: kv.value for kv in status.values}}
    node.create_subscription(DiagnosticArray, "/diagnostics", on_array, 10)
    try:
        deadline = time.monotonic() + timeout_s
        while not (until(seen) if until else names <= set(seen)) and time.monotonic() < deadline:
            executor.spin_once(timeout_sec=0.1)
    finally:
        executor.shutdown()
        node.destroy_node()
        context.try_shutdown()
    assert names <= set(seen), sorted(seen)
    return seen


def test_no_task_runner_is_named():
    done = vla_task({"ROS_DOMAIN_ID": str(DOMAIN_ID + 1)}, "reach", "--server-timeout", "2")
    assert done.returncode == 2 and "no task runner serves /vla/run_task" in done.stderr


def test_the_same_task_with_the_policy_behind_vla_serve(tmp_path):
    """The model core in another process behind the openpi protocol (as on a GPU box): the graph's
    policy node runs the `remote` backend, `vla-serve` runs reach_ik; the task still succeeds."""
    from vla_policy_node.graph_runner import run_graph

    serve = subprocess.Popen([sys.executable, "-m", "vla_policy_node.serving.server", "--backend", "reach_ik",
                              "--robot", "panda_ros2_control", "--host", "127.0.0.1", "--port", "0"],
                             stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    env = {"ROS_DOMAIN_ID": str(DOMAIN_ID + 2), "ROS_AUTOMATIC_DISCOVERY_RANGE": "LOCALHOST"}
    stop, result = threading.Event(), {}
    try:
        banner = serve.stdout.readline()
        port = re.search(r"ws://127.0.0.1:(\d+)", banner)
        assert port, banner
        overrides = {"policy": {"backend": "remote", "server": f"ws://127.0.0.1:{port[1]}"}}
        runner = threading.Thread(target=lambda: result.update(
            run_graph("panda_bringup", overrides, tmp_path / "logs", env=env, stop=stop, timeout_s=600)))
        runner.start()
        wait_until_active(env)
        done = vla_task(env, "reach the red target", "--arm", "--timeout", "120")
        stop.set()
        runner.join(60)
    finally:
        stop.set()
        serve.terminate()
        serve.wait(timeout=10)
    assert done.returncode == 0 and result_of(done.stdout)["reason"] == "success", done.stdout + done.stderr
    assert result.get("error") is None, result.get("error")
    policy_log = (tmp_path / "logs" / "policy.log").read_text()
    assert "remote" in policy_log


def test_two_namespaced_robots_run_one_task_each_without_cross_talk(tmp_path):
    """Two panda_bringup graphs (two embedded Pandas, each with its own /<ns>/clock) in one DDS
    domain under namespaces robot1 and robot2, a task on each at the same time."""
    from vla_policy_node.graph_runner import run_graph

    env = {"ROS_DOMAIN_ID": str(DOMAIN_ID + 3), "ROS_AUTOMATIC_DISCOVERY_RANGE": "LOCALHOST"}
    stop, results, runners = threading.Event(), {}, []
    for ns in ("robot1", "robot2"):
        runners.append(threading.Thread(target=lambda ns=ns: results.update({ns: run_graph(
            "panda_bringup", {}, tmp_path / ns, env=env, stop=stop, timeout_s=600, namespace=ns)})))
        runners[-1].start()
    try:
        for ns in ("robot1", "robot2"):
            wait_until_active(env, namespace=ns)
        tasks = {ns: start_task(env, "--namespace", ns, "--task", "reach", "--seed", str(seed), "--arm",
                                "--timeout", "150", "--quiet", "--server-timeout", "90")
                 for ns, seed in (("robot1", 100), ("robot2", 103))}
        outputs = {ns: proc.communicate(timeout=240) for ns, proc in tasks.items()}
        expected = {f"/{ns}/{t}" for ns in ("robot1", "robot2") for t in
                    ("clock", "joint_states", "vla/action_chunk", "panda_arm_controller/joint_trajectory")}
        topics = topic_names(env, expected)
    finally:
        stop.set()
        for runner in runners:
            runner.join(60)
    for ns, (out, err) in outputs.items():
        assert tasks[ns].returncode == 0 and result_of(out)["reason"] == "success", (ns, out, err)
    assert all(results[ns]["error"] is None for ns in results), results
    ours = [t for t in topics if "vla" in t or "joint" in t or "clock" in t or "camera" in t]
    assert ours and all(t.startswith(("/robot1/", "/robot2/")) for t in ours), ours     # nothing at the root
    for ns in ("robot1", "robot2"):
        assert {f"/{ns}/clock", f"/{ns}/joint_states", f"/{ns}/vla/action_chunk",
                f"/{ns}/panda_arm_controller/joint_trajectory"} <= set(topics)
        log = (tmp_path / ns / "task_runner.log").read_text()
        assert log.count("success after") == 1       # each runner ran its own task only


def topic_names(env: dict, expected: set, timeout_s: float = 20.0) -> list[str]:
    """The graph's topic names once discovery shows every `expected` one (or after `timeout_s`)."""
    import rclpy

    context = rclpy.Context()
    rclpy.init(context=context, domain_id=int(env["ROS_DOMAIN_ID"]))
    node = rclpy.create_node("topic_probe", context=context)
    try:
        deadline = time.monotonic() + timeout_s
        names = []
        while time.monotonic() < deadline:
            names = [name for name, _ in node.get_topic_names_and_types()]
            if expected <= set(names):
                break
            time.sleep(0.2)
        return names
    finally:
        node.destroy_node()
        context.try_shutdown()


def executor_status_and_joint_motion(env: dict, sample_s: float = 1.0):
    """The latched executor status and the joint positions seen over `sample_s` (s, wall)."""
    import rclpy
    from rclpy.executors import SingleThreadedExecutor
    from sensor_msgs.msg import JointState
    from vla_msgs.msg import ExecutorStatus

    from vla_policy_node.nodes.common import LATCHED_QOS, RELIABLE_QOS

    context = rclpy.Context()
    rclpy.init(context=context, domain_id=int(env["ROS_DOMAIN_ID"]))
    node = rclpy.create_node("task_probe", context=context)
    executor = SingleThreadedExecutor(context=context)
    executor.add_node(node)
    statuses, positions = [], []
    node.create_subscription(ExecutorStatus, "/vla/executor_status", statuses.append, LATCHED_QOS)
    node.create_subscription(JointState, "/joint_states", lambda m: positions.append(list(m.position)[:7]),
                             RELIABLE_QOS)
    try:
        deadline = time.monotonic() + 20.0
        while (not statuses or len(positions) < 2) and time.monotonic() < deadline:
            executor.spin_once(timeout_sec=0.1)
        positions.clear()
        end = time.monotonic() + sample_s
        while time.monotonic() < end:
            executor.spin_once(timeout_sec=0.05)
    finally:
        executor.shutdown()
        node.destroy_node()
        context.try_shutdown()
    assert statuses and len(positions) >= 2, (len(statuses), len(positions))
    return statuses[-1], np.asarray(positions)
