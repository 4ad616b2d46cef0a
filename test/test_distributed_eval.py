"""Closed-loop evaluation on Ray (evaluation/distributed.py): a local Ray instance with 2 workers,
each episode its own graph on its own ROS domain, merged into the report a local run of the same
episodes writes; a worker killed mid-episode is retried and named; a cluster of two nodes started
by `ray start` in other working directories runs one episode on each and writes the local run's
report. Plus the run-record merge."""

import dataclasses
import json
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
from pathlib import Path

import psutil
import pytest
from conftest import wait_until

from vla_policy_node.core.progress import StageThresholds
from vla_policy_node.evaluation.closed_loop_report import EvaluationProtocol
from vla_policy_node.evaluation.distributed import RayOptions, compare_runs
from vla_policy_node.evaluation.reports import EpisodeRecord
from vla_policy_node.evaluation.run_record import RunRecord, merge_records

ORACLE = ["--backend", "oracle", "--set", "executor.merge:=replace", "--tasks", "button-press",
          "--max-steps", "120", "--lockstep", "--quiet"]
EPISODES = [*ORACLE, "--seeds", "100,101"]


def _part(tasks, seeds, backend="oracle"):
    protocol = EvaluationProtocol("closed_loop", True, 60.0, tasks, seeds, 100, 100, "warn", True,
                                  StageThresholds(0.12, 0.15, 0.01), 1.0)
    episodes = [EpisodeRecord(f"{t}_s{s}", t, s, success=s % 2 == 0, steps=40 + s, progress_score=0.1 * s,
                              latencies_ms=[1.0 / 3.0, 2.0 + s], divergence=[(0.1, 0.2), (0.2, 1.0 / 7.0)],
                              extra={"wall_time_s": 1.5}) for t in tasks for s in seeds]
    rows = [{"success": e.success, "divergence": [0.2, 1.0 / 7.0], "times": [0.1, 0.2], "psnr": [30.0],
             "ssim": [0.9]} for e in episodes]
    return RunRecord(protocol, {"sim_bridge": True}, backend, "metaworld_sawyer", "sim_demo", ["/a"], episodes, rows)


def test_run_record_round_trip_keeps_every_float(tmp_path):
    record = _part(["button-press"], [100, 101])
    record.save(tmp_path)
    loaded = RunRecord.load(tmp_path)
    assert loaded.protocol == record.protocol
    assert loaded.episodes[1].latencies_ms == [1.0 / 3.0, 103.0]          # not rounded
    assert loaded.episodes[0].divergence == [(0.1, 0.2), (0.2, 1.0 / 7.0)]
    assert loaded.monitor_rows == record.monitor_rows


def test_merge_orders_episodes_as_one_run_and_refuses_what_is_not_one_run(tmp_path):
    parts = [_part(["drawer-open"], [101]), _part(["button-press"], [101]), _part(["button-press"], [100]),
             _part(["drawer-open"], [100])]
    merged = merge_records(parts, ["button-press", "drawer-open"], [100, 101])
    assert [e.name for e in merged.episodes] == ["button-press_s100", "button-press_s101", "drawer-open_s100",
                                                 "drawer-open_s101"]
    assert merged.protocol.tasks == ["button-press", "drawer-open"] and merged.protocol.seeds == [100, 101]
    whole = _part(["button-press", "drawer-open"], [100, 101])
    assert [dataclasses.asdict(e) for e in merged.episodes] == [dataclasses.asdict(e) for e in whole.episodes]
    assert merged.monitor_rows == whole.monitor_rows
    merged.write_report(tmp_path / "merged", tmp_path / "index")
    whole.write_report(tmp_path / "whole", tmp_path / "index")
    a, b = (json.loads((tmp_path / d / "report.json").read_text()) for d in ("merged", "whole"))
    for r in (a, b):
        r.pop("created")
    assert a == b

    with pytest.raises(ValueError, match="backend"):
        merge_records([_part(["button-press"], [100]), _part(["button-press"], [101], backend="bc")])
    with pytest.raises(ValueError, match="more than one part"):
        merge_records([_part(["button-press"], [100]), _part(["button-press"], [100])])


def test_ray_options_keep_domain_ids_in_the_safe_range():
    with pytest.raises(ValueError, match="ROS_DOMAIN_IDs 95-104"):
        RayOptions(workers=10, domain_base=95)
    with pytest.raises(ValueError, match="workers"):
        RayOptions(workers=0)


def _cli(*args, **kwargs):
    return subprocess.Popen([sys.executable, "-m", "vla_policy_node.evaluation.cli", "closed-loop", *args],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, **kwargs)


@pytest.fixture(scope="module")
def local_run(tmp_path_factory) -> Path:
    """EPISODES through one graph on this machine: the run the Ray runs must equal."""
    out_dir = tmp_path_factory.mktemp("local") / "run"
    local = _cli(*EPISODES, "--output", str(out_dir), env=dict(os.environ, ROS_DOMAIN_ID="62"))   # a domain of its own
    out = local.communicate(timeout=300)[0]
    assert local.returncode == 0, out[-3000:]
    return out_dir


def assert_same_report(local_dir: Path, ray_dir: Path) -> dict:
    """The Ray run's report is the local run's, episode by episode (success, steps, commands);
    returns its `distributed` section."""
    comparison = compare_runs(local_dir, ray_dir, "metaworld_sawyer")
    assert comparison == {"episodes": 2, "equal": True, "differences": []}
    local_report, ray_report = (json.loads((d / "report.json").read_text()) for d in (local_dir, ray_dir))
    section = ray_report.pop("distributed")
    assert section["completed"] == 2 and section["failed"] == [] and section["retried"] == []
    assert ray_report["summary"]["successes"] == local_report["summary"]["successes"] == 2
    assert ray_report["protocol"] == local_report["protocol"]
    assert len(local_report["episodes"]) == len(ray_report["episodes"]) == 2
    for a, b in zip(local_report["episodes"], ray_report["episodes"]):
        assert (a["name"], a["success"], a["steps"], a["time_to_success_s"]) == \
               (b["name"], b["success"], b["steps"], b["time_to_success_s"])
    for name in ("button-press_s100", "button-press_s101"):       # bags and videos where a local run puts them
        assert (ray_dir / "bags" / name / "metadata.yaml").is_file()
        assert (ray_dir / "videos" / f"{name}.mp4").is_file()
        assert (ray_dir / "shards" / name / "logs" / "policy.log").is_file()
    return section


@pytest.mark.slow
def test_ray_run_equals_the_local_run_episode_by_episode(tmp_path, local_run):
    ray_run = _cli(*EPISODES, "--output", str(tmp_path / "ray"), "--ray", "--workers", "2", "--domain-base", "63")
    out = ray_run.communicate(timeout=400)[0]
    assert ray_run.returncode == 0, out[-3000:]
    assert "ray: 2/2 episodes on 2 workers" in out
    section = assert_same_report(local_run, tmp_path / "ray")
    assert sorted(t["domain_id"] for e in section["per_episode"] for t in e["tries"]) == [63, 64]
    assert all(e["overhead_s"] > 0 for e in section["per_episode"])


def _graph_processes(root: psutil.Process) -> list[psutil.Process]:
    return [p for p in root.children(recursive=True) if "vla_" in " ".join(p.cmdline())]


def _evaluator_on(run: subprocess.Popen, domain: int) -> psutil.Process | None:
    """The evaluator of the graph `run` (a vla-eval process) has on ROS domain `domain`, or None."""
    if run.poll() is not None:
        pytest.fail(f"vla-eval ended with code {run.returncode}: {run.stdout.read()[-3000:]}")
    for p in psutil.Process(run.pid).children(recursive=True):
        try:
            if "vla_evaluator" in " ".join(p.cmdline()) and p.environ().get("ROS_DOMAIN_ID") == str(domain):
                return p
        except psutil.Error:
            continue
    return None


def _sim_time_span(domain: int, at_least_s: float, timeout_s: float) -> float:
    """Follow /clock on ROS domain `domain` until the simulator's time has advanced `at_least_s`
    from the first message seen; the span seen (fails after timeout_s)."""
    import rclpy
    from rclpy.executors import SingleThreadedExecutor
    from rclpy.qos import qos_profile_sensor_data
    from rosgraph_msgs.msg import Clock

    from vla_policy_node.nodes.common import to_sec

    context = rclpy.Context()
    rclpy.init(context=context, domain_id=domain)
    seen: list[float] = []
    try:
        node = rclpy.create_node("clock_watch", context=context)
        node.create_subscription(Clock, "/clock", lambda m: seen.append(to_sec(m.clock)), qos_profile_sensor_data)
        executor = SingleThreadedExecutor(context=context)
        executor.add_node(node)

        def span() -> float:
            executor.spin_once(timeout_sec=0.05)
            return seen[-1] - seen[0] if len(seen) > 1 and seen[-1] - seen[0] >= at_least_s else 0.0
        return wait_until(span, timeout_s, lambda: f"/clock on domain {domain}: {len(seen)} messages, "
                                                   f"{(seen[-1] - seen[0]) if seen else 0:.3f} s", period_s=0.0)
    finally:
        rclpy.shutdown(context=context)


@pytest.mark.slow
def test_a_worker_lost_mid_episode_is_retried_and_named(tmp_path):
    run = _cli(*ORACLE, "--seeds", "100", "--output", str(tmp_path / "ray"), "--ray", "--workers", "2",
               "--domain-base", "65")
    scratch = None
    try:
        evaluator = wait_until(lambda: _evaluator_on(run, 65), 180,
                               "a Ray worker of this run starting a graph on domain 65")
        output_dir = next(a.split(":=", 1)[1] for a in evaluator.cmdline() if a.startswith("output_dir:="))
        scratch = Path(output_dir).parent               # the worker's scratch folder, left behind when it is killed
        bag = Path(output_dir) / "bags" / "button-press_s100"
        # mid-episode: the bag is opened before the reset and finished (metadata.yaml) when the episode ends
        wait_until(bag.is_dir, 180, f"the episode starting (its bag {bag})")
        _sim_time_span(65, 0.25, 120)                   # 20 control steps of the episode at least
        worker = evaluator.parent()
        killed = _graph_processes(worker)
        assert not (bag / "metadata.yaml").exists(), "the episode ended before its worker was killed"
        worker.kill()
        out = run.communicate(timeout=400)[0]
    finally:
        if run.poll() is None:
            run.kill()
            run.wait()
        if scratch is not None:
            shutil.rmtree(scratch, ignore_errors=True)
    assert run.returncode == 0, out[-3000:]
    section = json.loads((tmp_path / "ray" / "report.json").read_text())["distributed"]
    assert section["retried"] == ["button-press_s100"] and section["failed"] == []
    tries = section["per_episode"][0]["tries"]
    assert len(tries) == 2 and tries[0]["error"] and "Worker" in tries[0]["error"] and tries[1]["error"] is None
    report = json.loads((tmp_path / "ray" / "report.json").read_text())
    assert report["summary"]["episodes"] == 1 and report["episodes"][0]["success"]
    # the lost worker's graph did not outlive it
    wait_until(lambda: not [p for p in killed if p.is_running() and p.status() != psutil.STATUS_ZOMBIE], 30,
               lambda: f"the killed worker's nodes still running: {[p.pid for p in killed if p.is_running()]}")
    assert os.path.isdir(tmp_path / "ray" / "bags" / "button-press_s100")


# ---- a cluster of two nodes -------------------------------------------------------------------
RAY = str(Path(sys.executable).parent / "ray")
RAY_NODE_PORTS = ("--node-manager-port", "--object-manager-port", "--dashboard-agent-listen-port",
                  "--dashboard-agent-grpc-port", "--metrics-export-port", "--runtime-env-agent-port")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _cluster_nodes(address: str, count: int, env: dict) -> list[str] | None:
    """Ids of the cluster's live nodes as `ray status` lists them, once there are `count`; else None."""
    status = subprocess.run([RAY, "status", "--address", address], capture_output=True, text=True, timeout=60, env=env)
    ids = re.findall(r"\bnode_([0-9a-f]+)", status.stdout) if status.returncode == 0 else []
    return ids if len(ids) == count else None


@pytest.fixture
def two_node_cluster(tmp_path):
    """A Ray cluster of two nodes on this machine, each started by `ray start` (as on two machines)
    in its own working directory with its own temp folder, ports and 1 CPU, and a token of its own
    (Ray's token authentication). Yields its address, the head's and the other node's ids and the
    environment that reaches it; stopped even when the test fails: each `ray start --block` (it
    stops its node's processes), then any process still naming its temp folder."""
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"} | {
        "RAY_USAGE_STATS_ENABLED": "0", "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": secrets.token_hex(32)}
    address = f"127.0.0.1:{_free_port()}"
    procs, temps = [], []

    def start(name: str, *args: str) -> None:
        (tmp_path / name).mkdir()
        temps.append(tempfile.mkdtemp(prefix="vla_ray_"))      # short: Ray's sockets live under it
        cmd = [RAY, "start", "--block", "--num-cpus", "1", "--num-gpus", "0",
               "--object-store-memory", str(200 * 2 ** 20), "--temp-dir", temps[-1], *args]
        for option in RAY_NODE_PORTS:
            cmd += [option, str(_free_port())]
        with open(tmp_path / f"{name}.log", "w") as log:
            procs.append(subprocess.Popen(cmd, cwd=tmp_path / name, env=env, stdout=log, stderr=subprocess.STDOUT,
                                          start_new_session=True))

    try:
        start("head", "--head", "--port", address.split(":")[1], "--include-dashboard", "false")
        head, = wait_until(lambda: _cluster_nodes(address, 1, env), 120,
                           lambda: f"the head node at {address}: {(tmp_path / 'head.log').read_text()[-2000:]}")
        start("node", "--address", address)
        nodes = wait_until(lambda: _cluster_nodes(address, 2, env), 120,
                           lambda: f"a second node: {(tmp_path / 'node.log').read_text()[-2000:]}")
        yield {"address": address, "head": head, "node": next(n for n in nodes if n != head), "env": env}
    finally:
        for proc in reversed(procs):            # the other node, then the head (it drains a node through the head)
            proc.terminate()
            try:
                proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
        for p in psutil.process_iter(["cmdline"]):
            if any(t in " ".join(p.info["cmdline"] or []) for t in temps):
                try:
                    p.kill()
                except psutil.NoSuchProcess:
                    pass
        for t in temps:
            shutil.rmtree(t, ignore_errors=True)


@pytest.mark.slow
def test_a_two_node_cluster_runs_an_episode_on_each_node_and_reports_as_the_local_run(tmp_path, local_run,
                                                                                     two_node_cluster):
    (tmp_path / "driver").mkdir()             # no node, nor the driver, runs from the project's folder
    ray_run = _cli(*EPISODES, "--output", str(tmp_path / "cluster"), "--ray", two_node_cluster["address"],
                   "--workers", "2", "--domain-base", "68", cwd=tmp_path / "driver", env=two_node_cluster["env"])
    out = ray_run.communicate(timeout=400)[0]
    assert ray_run.returncode == 0, out[-3000:]
    section = assert_same_report(local_run, tmp_path / "cluster")
    assert section["address"] == two_node_cluster["address"]
    ran_on = {e["episode"]: e["tries"][-1]["node_id"] for e in section["per_episode"]}
    assert sorted(ran_on.values()) == sorted([two_node_cluster["head"], two_node_cluster["node"]]), ran_on
    assert {n["node_id"]: n["episodes"] for n in section["nodes"]} == {n: [e] for e, n in ran_on.items()}
    assert sorted(t["domain_id"] for e in section["per_episode"] for t in e["tries"]) == [68, 69]
