"""Every node's parameters as `ros2 param` sees them: each node built in this process, asked from a
peer node over DDS through the parameter services a `ros2 param` client calls
(rcl_interfaces/srv/ListParameters, DescribeParameters, GetParameters, SetParameters). Every
parameter is described (units, type, range, read-only as its node's table says); a set that is
read-only, out of range or of the wrong type is refused with its reason, also at launch; the live
ones change what the node does; a parameter declared twice is an error naming node and parameter."""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest
import rclpy
from conftest import BagWriter, wait_until
from rcl_interfaces.msg import ParameterType
from rclpy.executors import SingleThreadedExecutor
from rclpy.lifecycle import TransitionCallbackReturn
from rclpy.parameter import Parameter
from rclpy.parameter_client import AsyncParameterClient
from sensor_msgs.msg import JointState
from vla_msgs.msg import ExecutorStatus

from vla_policy_node.models.registry import backend_class
from vla_policy_node.nodes.common import LATCHED_QOS, RELIABLE_QOS, to_stamp
from vla_policy_node.nodes.managed import ManagedNode
from vla_policy_node.nodes.parameters import USE_SIM_TIME, Param, ParameterDeclaredTwice, declare, describe

DOMAIN_ID = 91
RCLPY_OWN = {"start_type_description_service"}      # rclpy declares and describes it (read-only)


def tiny_bag(folder):
    """A one-message rosbag2 folder: enough for the replay node to start."""
    writer = BagWriter(folder)
    T = writer.types
    js = T["sensor_msgs/msg/JointState"](header=writer.header(10 ** 9), name=["a"], position=np.zeros(1),
                                         velocity=np.zeros(0), effort=np.zeros(0))
    writer.put("/joint_states", "sensor_msgs/msg/JointState", 10 ** 9, js)
    writer.close()
    return folder


def build_nodes(context, tmp) -> dict:
    """One node of each class (three policies: the oracle, and a learned and the remote backend
    unconfigured, for their options), under names a `ros2 param` user would type."""
    from vla_policy_node.nodes.evaluator import EvaluatorNode
    from vla_policy_node.nodes.executor import ExecutorNode
    from vla_policy_node.nodes.imagination_monitor import ImaginationMonitorNode
    from vla_policy_node.nodes.lifecycle_manager import LifecycleManagerNode
    from vla_policy_node.nodes.perception import PerceptionNode
    from vla_policy_node.nodes.policy import PolicyNode
    from vla_policy_node.nodes.replay import ReplayNode
    from vla_policy_node.nodes.sim_bridge import SimBridgeNode
    from vla_policy_node.nodes.task_runner import TaskRunnerNode

    def make(cls, namespace="", **params):
        return cls(context=context, namespace=namespace,
                   parameter_overrides=[Parameter(k, value=v) for k, v in params.items()])

    return {
        "/perception": make(PerceptionNode),
        "/policy": make(PolicyNode, backend="oracle"),
        "/videovla/policy": make(PolicyNode, "videovla", backend="videovla", autostart=False),
        "/remote/policy": make(PolicyNode, "remote", backend="remote", autostart=False),
        # free-running on the wall clock, armed and in dry-run: the stale-state hold is what it does
        "/executor": make(ExecutorNode, lockstep=False, armed_at_start=True, dry_run=True, max_state_age_s=5.0),
        "/sim_bridge": make(SimBridgeNode, robot="panda_ros2_control", sim="panda_reach",
                            mujoco_cameras=["scene", ""], image_width=64, image_height=48),
        "/imagination_monitor": make(ImaginationMonitorNode),
        # refuses its run at once (a training seed), so it calls nothing
        "/evaluator": make(EvaluatorNode, seeds=[5], training_seeds="refuse", record=False, lockstep_nodes=[""],
                           output_dir=str(tmp / "evaluation")),
        "/task_runner": make(TaskRunnerNode),
        "/lifecycle_manager": make(LifecycleManagerNode, autostart=False, check_period_s=600.0),
        "/replay": make(ReplayNode, bag=str(tiny_bag(tmp / "reach_s3")), wait_for_start=True),
    }


class Peer:
    """This test's side: a node that calls the parameter services as `ros2 param` does."""

    def __init__(self, context):
        self.node = rclpy.create_node("ros2param_peer", context=context)
        self.clients = {}

    def call(self, target: str, method: str, *args):
        if target not in self.clients:
            client = AsyncParameterClient(self.node, target)
            assert client.wait_for_services(timeout_sec=20.0), f"{target}: parameter services missing"
            self.clients[target] = client
        future = getattr(self.clients[target], method)(*args)
        wait_until(future.done, 20.0, f"{target}: {method} answered")
        return future.result()

    def names(self, target: str) -> list[str]:
        return list(self.call(target, "list_parameters", []).result.names)

    def describe(self, target: str, names: list[str]) -> dict:
        return {d.name: d for d in self.call(target, "describe_parameters", names).descriptors}

    def values(self, target: str, names: list[str]) -> dict:
        return dict(zip(names, self.call(target, "get_parameters", names).values))

    def set(self, target: str, **values) -> dict:
        """`ros2 param set` for each value: name -> SetParametersResult."""
        params = [Parameter(k, value=v) for k, v in values.items()]
        return dict(zip(values, self.call(target, "set_parameters", params).results))


@pytest.fixture(scope="module")
def graph(tmp_path_factory):
    context = rclpy.Context()
    rclpy.init(context=context, domain_id=DOMAIN_ID)
    nodes = build_nodes(context, tmp_path_factory.mktemp("parameters"))
    peer = Peer(context)
    executor = SingleThreadedExecutor(context=context)
    for node in [*nodes.values(), peer.node]:
        executor.add_node(node)
    stop = threading.Event()

    def spin():
        while not stop.is_set():
            executor.spin_once(timeout_sec=0.05)

    spinner = threading.Thread(target=spin, daemon=True)
    spinner.start()
    try:
        yield nodes, peer
    finally:
        nodes["/replay"].stopping.set()
        stop.set()
        spinner.join(timeout=10.0)
        executor.shutdown()
        for node in nodes.values():
            if isinstance(node, ManagedNode) and node.configured:
                node.trigger_shutdown()
            node.destroy_node()
        peer.node.destroy_node()
        rclpy.shutdown(context=context)


def table(node) -> dict[str, Param]:
    """What the node says it declares: the rows of its tables (nodes/parameters.py) and use_sim_time."""
    return {USE_SIM_TIME.name: USE_SIM_TIME, **node.parameter_rows}


NODE_NAMES = ["/perception", "/policy", "/videovla/policy", "/remote/policy", "/executor", "/sim_bridge",
              "/imagination_monitor", "/evaluator", "/task_runner", "/lifecycle_manager", "/replay"]


@pytest.mark.parametrize("name", NODE_NAMES)
def test_every_parameter_is_described_with_its_type_range_and_read_only(graph, name):
    nodes, peer = graph
    expected = table(nodes[name])
    names = peer.names(name)
    assert set(names) == set(expected) | RCLPY_OWN, f"{name}: declared without a row, or a row not declared"
    assert len(expected) > 3, f"{name}: {sorted(expected)}"
    described = peer.describe(name, names)
    values = peer.values(name, names)
    for param, d in described.items():
        assert d.description.strip(), f"{name} {param}: no description"
        if param in RCLPY_OWN:
            continue
        row = expected[param]
        assert d.type == row.kind.value, f"{name} {param}: type {d.type}, expected {row.kind.name}"
        assert values[param].type == d.type, f"{name} {param}: value of type {values[param].type}, described {d.type}"
        assert d.read_only == (not row.live), f"{name} {param}: read_only {d.read_only}, live {row.live}"
        ranges = [(r.from_value, r.to_value) for r in (*d.floating_point_range, *d.integer_range)]
        assert ranges == ([tuple(row.range)] if row.range else []), f"{name} {param}: range {ranges}"


def test_the_options_a_backend_declares_are_parameters(graph):
    """The policy declares the chosen backend's options (models/backend.py), described by their help."""
    _, peer = graph
    options = {k: v for k, v in backend_class("videovla").options.items() if k != "checkpoint"}
    described = peer.describe("/videovla/policy", sorted(options))
    for key, spec in options.items():
        assert spec.help in described[key].description and described[key].read_only, key
    described = peer.describe("/remote/policy", ["server", "timeout_s", "token"])
    assert described["timeout_s"].type == ParameterType.PARAMETER_DOUBLE
    assert "(s)" in described["timeout_s"].description and described["timeout_s"].read_only
    assert "num_inference_steps" in peer.names("/videovla/policy")
    assert "num_inference_steps" not in peer.names("/policy")          # the oracle has no options


@pytest.mark.parametrize("name", NODE_NAMES)
def test_a_read_only_set_is_refused_with_its_reason(graph, name):
    nodes, peer = graph
    expected = table(nodes[name])
    fixed = [p for p, row in expected.items() if not row.live]
    current = {p: nodes[name].get_parameter_or(p).value for p in fixed}
    results = peer.set(name, **current)
    for param, result in results.items():
        assert not result.successful and "read-only" in result.reason, f"{name} {param}: {result}"
    assert {p: nodes[name].get_parameter_or(p).value for p in fixed} == current


def test_out_of_range_and_wrong_type_are_refused_with_their_reason(graph):
    nodes, peer = graph
    refused = peer.set("/executor", max_state_age_s=100.0, latency_margin_s=-1.0)
    assert all(not r.successful and "out of range" in r.reason for r in refused.values()), refused
    refused = peer.set("/imagination_monitor", threshold=3.0)
    assert not refused["threshold"].successful and "out of range" in refused["threshold"].reason
    wrong = peer.set("/executor", max_state_age_s=5, dry_run="no")          # `ros2 param set ... 5` is an integer
    assert all(not r.successful and "Wrong parameter type" in r.reason for r in wrong.values()), wrong
    wrong = peer.set("/sim_bridge", clock_offset_s="later")
    assert not wrong["clock_offset_s"].successful and "Wrong parameter type" in wrong["clock_offset_s"].reason
    assert nodes["/executor"].core.max_state_age_s == 5.0 and nodes["/executor"].core.dry_run


def test_the_on_set_callbacks_refuse_what_does_not_change_while_running(graph):
    """Behind rclpy's read-only check, the callbacks that apply live values refuse any other name."""
    nodes, _ = graph
    for name, param in (("/executor", Parameter("feedback_every", value=8)),
                        ("/sim_bridge", Parameter("real_time_factor", value=2.0)),
                        ("/imagination_monitor", Parameter("max_chunks", value=8))):
        result = nodes[name].on_parameters([param])
        assert not result.successful and param.name in result.reason and "not changeable" in result.reason


def test_executor_max_state_age_is_live(graph):
    """A state 1 s old is fresh under max_state_age_s 5 and makes the armed executor hold under 0.5;
    /diagnostics' stale-state level follows the new limit."""
    nodes, peer = graph
    executor = nodes["/executor"]
    state_pub = peer.node.create_publisher(JointState, "/joint_states", RELIABLE_QOS)

    def publish_old_state():
        js = JointState(name=["r_close", "l_close"], position=[0.0, 0.0])
        js.header.stamp = to_stamp(time.time() - 1.0)
        state_pub.publish(js)

    timer = peer.node.create_timer(0.02, publish_old_state)
    try:
        wait_until(lambda: executor.state_stamp is not None, 20.0, "robot state reaching the executor")

        def stale_holds_over(seconds: float) -> int:
            before, ticks = executor.core.counters["stale_holds"], executor.core.counters["ticks"]
            wait_until(lambda: executor.core.counters["ticks"] > ticks + 10, 20.0, "control ticks")
            time.sleep(seconds)
            return executor.core.counters["stale_holds"] - before

        assert executor.core.armed and stale_holds_over(0.3) == 0          # 1 s old < 5 s
        assert peer.set("/executor", max_state_age_s=0.5)["max_state_age_s"].successful
        assert executor.core.max_state_age_s == 0.5
        assert stale_holds_over(0.3) > 0                                   # 1 s old > 0.5 s: it holds
        state_age = next(c for c in executor.diagnostics.checks if getattr(c, "key", "") == "state_age_ms")
        assert (state_age.warn, state_age.error) == (250.0, 500.0)
        assert peer.set("/executor", max_state_age_s=5.0)["max_state_age_s"].successful
        assert stale_holds_over(0.3) == 0
    finally:
        peer.node.destroy_timer(timer)
        peer.node.destroy_publisher(state_pub)


def test_executor_latency_margin_and_dry_run_are_live(graph):
    nodes, peer = graph
    executor = nodes["/executor"]
    assert peer.set("/executor", latency_margin_s=0.125)["latency_margin_s"].successful
    assert executor.core.settings.latency_margin_s == 0.125     # the next request's lead (core.needs_chunk)
    armed = peer.set("/executor", dry_run=False)["dry_run"]
    assert not armed.successful and "disarm first" in armed.reason and executor.core.dry_run


def test_imagination_monitor_threshold_and_action_are_live(graph):
    """The same imagined and real frames are flagged, or not, by the threshold set while running."""
    nodes, peer = graph
    monitor = nodes["/imagination_monitor"].monitor
    rng = np.random.default_rng(0)
    real = rng.integers(0, 255, (128, 128, 3), dtype=np.uint8)
    imagined = np.clip(real[::2, ::2].astype(int) + rng.integers(-40, 40, (64, 64, 3)), 0, 255).astype(np.uint8)

    def compare(chunk_id: int):
        monitor.add_imagined(chunk_id, "ep", float(chunk_id), ["corner"], [imagined], [0.0])
        (result,) = monitor.on_real_frame("corner", float(chunk_id), real)
        return result

    assert all(r.successful for r in peer.set("/imagination_monitor", threshold=2.0, action="hold").values())
    calm = compare(1)
    assert not calm.exceeded and calm.threshold == 2.0
    assert peer.set("/imagination_monitor", threshold=0.5 * calm.divergence)["threshold"].successful
    flagged = compare(2)
    assert flagged.exceeded and flagged.action == "hold" and flagged.threshold == pytest.approx(0.5 * calm.divergence)
    refused = peer.set("/imagination_monitor", action="stop")["action"]
    assert not refused.successful and "stop" in refused.reason and monitor.settings.action == "hold"


def test_sim_bridge_clock_offset_is_live(graph):
    nodes, peer = graph
    sim = nodes["/sim_bridge"]
    before = sim.sim_time
    assert peer.set("/sim_bridge", clock_offset_s=5.0)["clock_offset_s"].successful
    assert sim.sim_time == pytest.approx(before + 5.0)


def test_the_evaluator_waits_for_a_node_that_comes_up_late(graph):
    """The time-protocol check reads a node's `lockstep` even when that node starts seconds after the
    evaluator asks (two graphs starting at once on two cores), and gives up on a node that never comes."""
    nodes, _ = graph
    evaluator = nodes["/evaluator"]
    late, stop = {}, threading.Event()

    def come_up():
        time.sleep(6.0)           # later than the 5 s a single unanswered wait used to allow
        node = rclpy.create_node("late_sim_bridge", context=evaluator.context,
                                 parameter_overrides=[Parameter("lockstep", value=True)],
                                 automatically_declare_parameters_from_overrides=True)
        spinner = SingleThreadedExecutor(context=evaluator.context)
        spinner.add_node(node)
        late["node"] = node
        while not stop.is_set():
            spinner.spin_once(timeout_sec=0.05)
        spinner.shutdown()

    thread = threading.Thread(target=come_up, daemon=True)
    thread.start()
    try:
        started = time.monotonic()
        assert evaluator.remote_parameter("late_sim_bridge", "lockstep") is True     # waits service_timeout_s
        assert time.monotonic() - started > 5.5
        assert evaluator.remote_parameter("no_such_node", "lockstep", 1.0) is None
    finally:
        stop.set()
        thread.join(timeout=10.0)
        if "node" in late:
            late["node"].destroy_node()


def test_the_evaluator_refuses_to_share_its_domain_with_another_graph(graph):
    """Two graphs in one ROS domain take each other's resets and commands: the evaluator refuses to
    start, naming the topic, both executors and the domain, rather than report wrong numbers."""
    nodes, _ = graph
    evaluator = nodes["/evaluator"]
    topic = evaluator.resolve_topic_name("vla/executor_status")
    if len(evaluator.get_publishers_info_by_topic(topic)) > 1:
        pytest.fail(f"{topic}: more than this graph's executor before the test")
    evaluator.check_one_graph()                                  # this graph alone: accepted
    others = []
    try:
        for namespace in ("/other", "/"):        # a graph under its own namespace is no conflict; one beside it is
            node = rclpy.create_node("executor", namespace=namespace, context=evaluator.context)
            node.create_publisher(ExecutorStatus, "vla/executor_status", LATCHED_QOS)
            others.append(node)
            if namespace == "/other":
                wait_until(lambda: evaluator.get_publishers_info_by_topic("/other/vla/executor_status"), 10.0,
                           "the namespaced executor")
                evaluator.check_one_graph()
        wait_until(lambda: len(evaluator.get_publishers_info_by_topic(topic)) >= 2, 10.0, f"a second publisher of {topic}")
        with pytest.raises(ValueError, match=rf"topic {topic}: \d executors publish it \(.*/executor.*\): another graph "
                                             rf"runs in ROS domain {DOMAIN_ID};"):
            evaluator.check_one_graph()
    finally:
        for node in others:
            node.destroy_node()


def test_executor_describe_output(graph, capsys):
    """The executor's parameters as `ros2 param describe /executor <name>` prints them."""
    _, peer = graph
    names = sorted(peer.names("/executor"))
    text = "\n".join(describe(d) for d in peer.describe("/executor", names).values())
    with capsys.disabled():
        print("\n" + text)
    assert ("Parameter name: max_state_age_s\n  Type: double\n"
            "  Description: hold still when the measured robot state is older than this (s)\n"
            "  Constraints:\n    Min value: 0.001\n    Max value: 60.0\n") in text + "\n"
    assert "Parameter name: lockstep\n  Type: boolean\n" in text and text.count("Read only: true") == len(names) - 3


# ---- at launch: values that do not fit their descriptor end the node, named ----------------------

@pytest.mark.parametrize("node, params", [
    ("executor", {"feedback_every": 0}),              # out of range
    ("executor", {"latency_margin_s": -1.0}),         # the old "unset" value: unset is now the robot file's
    ("executor", {"lockstep": 5}),                    # wrong type
    ("imagination_monitor", {"threshold": 0.0}),      # the old "unset" value
])
def test_launch_values_outside_their_descriptor_end_the_node(node, params):
    from vla_policy_node.nodes.executor import ExecutorNode
    from vla_policy_node.nodes.imagination_monitor import ImaginationMonitorNode

    cls = {"executor": ExecutorNode, "imagination_monitor": ImaginationMonitorNode}[node]
    context = rclpy.Context()
    rclpy.init(context=context, domain_id=DOMAIN_ID + 1)
    try:
        with pytest.raises(SystemExit) as exit_:
            cls(context=context, parameter_overrides=[Parameter(k, value=v) for k, v in params.items()])
        assert exit_.value.code == 2
    finally:
        rclpy.shutdown(context=context)


# ---- declared once ------------------------------------------------------------------------------

class Twice(ManagedNode):
    """A node whose configure declares a parameter it already declared at construction."""
    PARAMETERS = (Param("gain", 1.0, "a gain (1)", (0.0, 10.0)),)

    def __init__(self, **kwargs):
        super().__init__("twice", **kwargs)

    def setup(self) -> None:
        self.declare_parameter("gain", 2.0)


def test_a_parameter_declared_twice_is_an_error_naming_node_and_parameter():
    context = rclpy.Context()
    rclpy.init(context=context, domain_id=DOMAIN_ID + 1)
    node = Twice(context=context, parameter_overrides=[Parameter("autostart", value=False)])
    try:
        with pytest.raises(ParameterDeclaredTwice, match="node /twice: parameter gain declared twice"):
            node.declare_parameter("gain", 2.0)
        with pytest.raises(ParameterDeclaredTwice, match="node /twice: parameter gain declared twice"):
            declare(node, [Param("gain", 3.0, "again")])
        assert node.trigger_configure() == TransitionCallbackReturn.FAILURE and not node.configured
        assert node.get_parameter("gain").value == 1.0
    finally:
        node.destroy_node()
        rclpy.shutdown(context=context)


def test_configure_again_after_cleanup_reads_the_parameters_set_meanwhile():
    """cleanup -> set -> configure: setup() runs twice, declares nothing, and reads the new value."""
    from vla_policy_node.nodes.executor import ExecutorNode

    context = rclpy.Context()
    rclpy.init(context=context, domain_id=DOMAIN_ID + 1)
    node = ExecutorNode(context=context)
    try:
        assert node.configured and node.core.max_state_age_s == 0.25
        node.trigger_deactivate()
        node.trigger_cleanup()
        assert node.set_parameters([Parameter("max_state_age_s", value=0.75)])[0].successful
        assert node.trigger_configure() == TransitionCallbackReturn.SUCCESS
        assert node.configured and node.core.max_state_age_s == 0.75
    finally:
        if node.configured:
            node.trigger_shutdown()
        node.destroy_node()
        rclpy.shutdown(context=context)
