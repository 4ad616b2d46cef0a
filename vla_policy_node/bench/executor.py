"""`vla-bench executor`: executor figures written to artifacts/bench/executor.json.

1. Execution modes, closed loop through the full graph on the embedded MetaWorld simulation
   running *free* (sim time advancing on its own at a fixed real-time factor, so the robot really
   waits while the policy thinks), same tasks and seeds for every mode, the learned policy:
   success rate, task completion time (sim s), starved control ticks, chunk-boundary smoothness
   (max jerk at boundaries / max jerk inside chunks; `async` with merge=replace is the naive
   replacement baseline), measured inference delay, safety-gate counters.
2. Control-loop period jitter of the executor's wall-clock loop at 100 Hz (Panda, joint
   positions, dry run) while the learned policy runs inference in its own process and chunks
   and joint states cross DDS; in the same run, the command rate and period as ratios to the
   nominal rate: as sent (the commands' stamps) and as received by a subscriber over DDS.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

MODES = {
    "sync": {"mode": "sync", "merge": "replace"},
    "async_replace": {"mode": "async", "merge": "replace"},
    "async_ensemble": {"mode": "async", "merge": "ensemble"},
    "async_rtc": {"mode": "async_rtc", "merge": "replace"},
}


def run_mode(name: str, settings: dict, args, out_dir: Path) -> dict:
    from ..core.embodiment import load_robot
    from ..core.smoothness import boundary_jerk
    from ..graph_runner import run_graph

    robot = load_robot("metaworld_sawyer")
    stats_file = out_dir / "executor_stats.json"
    executor_settings = {k: v for k, v in settings.items() if k != "policy"}     # "policy": node parameters
    overrides = {
        "sim_bridge": {"lockstep": "false", "real_time_factor": str(args.real_time_factor)},
        "policy": {"backend": args.backend, "checkpoint": args.checkpoint, "decode_imagined": "false",
                   **settings.get("policy", {})},
        "executor": {"lockstep": "false", "stats_file": str(stats_file), **executor_settings},
        "evaluator": {"lockstep": "false", "tasks": "[" + ",".join(args.tasks) + "]",
                      "seeds": "[" + ",".join(map(str, args.seeds)) + "]", "output_dir": str(out_dir),
                      "record": "false", "max_steps": str(args.max_steps),
                      "episode_timeout_s": str(args.episode_timeout_s)},
    }
    result = run_graph("sim_demo", overrides, out_dir / "logs", timeout_s=3600)
    if result["error"]:
        return {"error": result["error"]}
    report = json.loads((out_dir / "report.json").read_text())
    stats = json.loads(stats_file.read_text())
    commands = stats.pop("commands")
    cmds = np.array([c[1] for c in commands]) if commands else np.zeros((0, robot.config.action.dim))
    ids = np.array([c[2] for c in commands])
    times = np.array([c[0] for c in commands])
    # split the log into episodes (sim time restarts at each reset) and score boundaries per episode
    cuts = [0] + [i + 1 for i in np.nonzero(np.diff(times) < 0)[0]] + [len(times)]
    worst = {"max_boundary": 0.0, "max_inside": 0.0}
    ratios = []
    for a, b in zip(cuts[:-1], cuts[1:]):
        j = boundary_jerk(cmds[a:b], ids[a:b], robot.config.action.dt, robot.config.action.space, dims=[0, 1, 2])
        if j["boundaries"]:
            worst["max_boundary"] = max(worst["max_boundary"], j["max_boundary"])
            worst["max_inside"] = max(worst["max_inside"], j["max_inside"] if np.isfinite(j["max_inside"]) else 0)
            if np.isfinite(j["ratio"]):
                ratios.append(j["ratio"])
    episodes = report["episodes"]
    return {
        "settings": settings,
        "success_rate": report["summary"]["success_rate"],
        "episodes": [{"task": e["task"], "seed": e["seed"], "success": e["success"], "steps": e["steps"],
                      "progress_score": e.get("progress_score"), "completion_time_s": e["duration_s"],
                      "wall_time_s": e["wall_time_s"]} for e in episodes],
        "mean_completion_time_s": float(np.mean([e["duration_s"] for e in episodes])),
        "starved_ticks": stats["counters"]["starved_ticks"],
        "startup_ticks": stats["counters"]["startup_ticks"],
        "ticks": stats["counters"]["ticks"],
        "chunks": stats["counters"]["chunks_received"],
        "actions_skipped_stale": stats["queue"]["skipped_stale"],
        "latency_s": stats["latency_s"],
        "boundary_jerk": {"max_at_boundaries": worst["max_boundary"], "max_inside_chunks": worst["max_inside"],
                          "ratio_of_maxima": worst["max_boundary"] / worst["max_inside"]
                          if worst["max_inside"] > 0 else None,
                          "median_episode_ratio": float(np.median(ratios)) if ratios else None},
        "gate": stats["gate"],
        "wall_time_s": result["wall_time_s"],
    }


def paired_completion_ratio(results: dict, mode: str, base: str = "sync") -> float | None:
    """Mean completion time of `mode` / `base` over episodes both finished successfully."""
    a = {(e["task"], e["seed"]): e for e in results[mode].get("episodes", []) if e["success"]}
    b = {(e["task"], e["seed"]): e for e in results[base].get("episodes", []) if e["success"]}
    both = sorted(set(a) & set(b))
    if not both:
        return None
    return float(np.mean([a[k]["completion_time_s"] for k in both]) / np.mean([b[k]["completion_time_s"] for k in both]))


# ---- control-loop jitter and command rate ---------------------------------------------------
def command_rate(sent_s, received: list[tuple[float, float]], nominal_hz: float) -> dict:
    """Command rate and period of a wall-clock loop as ratios to its nominal rate.

    sent_s: stamps of the commands the executor sent (s); received: (stamp s, arrival s) of those a
    subscriber got over DDS. Rates are per second of their own span / the nominal rate; periods are
    stamp differences / the nominal period; `lost` counts sent commands stamped within the received
    span that never arrived (a subscriber more than its QoS depth behind loses the oldest)."""
    sent = np.sort(np.asarray(sent_s, dtype=np.float64))
    stamps = np.asarray([r[0] for r in received], dtype=np.float64)
    arrivals = np.sort(np.asarray([r[1] for r in received], dtype=np.float64))

    def ratio(times: np.ndarray) -> float | None:
        span = times[-1] - times[0] if len(times) > 1 else 0.0
        return float((len(times) - 1) / span / nominal_hz) if span > 0 else None

    periods = np.diff(sent) * nominal_hz
    in_span = int(np.count_nonzero((sent >= stamps.min()) & (sent <= stamps.max()))) if len(stamps) else 0
    return {"nominal_hz": nominal_hz, "sent": int(len(sent)), "received": int(len(received)),
            "lost": max(in_span - len(stamps), 0),
            "sent_rate_vs_nominal": ratio(sent), "received_rate_vs_nominal": ratio(arrivals),
            "period_vs_nominal": None if not len(periods) else
            {"p50": float(np.percentile(periods, 50)), "p95": float(np.percentile(periods, 95)),
             "max": float(periods.max())}}


LOAD_SCRIPT = """
import sys, time
from vla_policy_node.core.embodiment import load_robot
from vla_policy_node.models.backend import PolicyInput
from vla_policy_node.models.registry import make_backend
import numpy as np
robot = load_robot('metaworld_sawyer')
policy = make_backend('videovla', robot, checkpoint=sys.argv[1])
policy.reset('press the button', seed=0)
frame = np.zeros((128, 128, 3), np.uint8)
print('load ready', flush=True)
end = time.monotonic() + float(sys.argv[2])
n = 0
while time.monotonic() < end:
    policy.predict(PolicyInput(0.0, 'press the button', {'corner': frame}, np.zeros(4)))
    n += 1
print('inferences', n, flush=True)
"""


def control_jitter(args, out_dir: Path) -> dict:
    """Executor at 100 Hz on the wall clock (dry run), fed over DDS, policy inference in parallel."""
    import rclpy
    from rclpy.node import Node
    from sensor_msgs.msg import JointState
    from vla_msgs.msg import ActionChunk, ActionCommand, ExecutionFeedback
    from vla_msgs.srv import ResetEpisode

    from ..core.embodiment import load_robot
    from ..graph_runner import find_executable
    from ..nodes.common import RELIABLE_QOS, SERVICES, TOPICS, to_sec, to_stamp

    robot = load_robot("panda_ros2_control")
    cfg = robot.config
    out_dir.mkdir(parents=True, exist_ok=True)
    stats_file = out_dir / "executor_stats.json"
    env = dict(os.environ, ROS_AUTOMATIC_DISCOVERY_RANGE="LOCALHOST", PYTHONUNBUFFERED="1")
    cmd = [find_executable("vla_executor"), "--ros-args", "-p", "robot:=panda_ros2_control",
           "-p", "lockstep:=false", "-p", "dry_run:=true", "-p", "armed_at_start:=true",
           "-p", "mode:=async", "-p", f"control_rate_hz:={args.jitter_rate_hz}", "-p", "interpolation:=linear",
           "-p", f"stats_file:={stats_file}", "-p", "max_state_age_s:=0.5",
           "-p", f"control_thread_priority:={args.jitter_priority}"]
    executor = subprocess.Popen(cmd, env=env, stdout=open(out_dir / "executor.log", "w"), stderr=subprocess.STDOUT)
    load = subprocess.Popen([sys.executable, "-c", LOAD_SCRIPT, args.checkpoint, str(args.jitter_seconds + 15)],
                            env=env, stdout=open(out_dir / "policy_load.log", "w"), stderr=subprocess.STDOUT)
    rclpy.init()
    node = Node("jitter_feeder")
    q0 = np.array([0.0, -0.3, 0.0, -2.2, 0.0, 2.0, 0.8])
    state = {"q": q0.copy(), "chunks": 0, "start": None, "reset": False}
    received: list[tuple[float, float]] = []     # dry-run commands after the reset: (stamp, arrival), s
    joint_pub = node.create_publisher(JointState, cfg.state.joint_states_topic, RELIABLE_QOS)
    chunk_pub = node.create_publisher(ActionChunk, TOPICS["action_chunk"], RELIABLE_QOS)

    def on_feedback(msg):
        if not msg.request_chunk or msg.episode_id != "jitter":    # requests before the reset
            return
        t0 = to_sec(msg.request_after)
        h, dt = cfg.action.horizon, cfg.action.dt
        if state["start"] is None:
            state["start"] = t0
        tt = t0 - state["start"] + np.arange(h) * dt
        actions = q0 + 0.2 * np.sin(0.5 * tt)[:, None] * np.ones(7)     # slow joint-space sweep from q0
        chunk = ActionChunk(chunk_id=state["chunks"] + 1, episode_id="jitter", action_space=cfg.action.space,
                            action_names=list(cfg.action.names), horizon=h, action_dim=7, dt=float(dt))
        chunk.header.stamp = to_stamp(t0)
        chunk.actions = actions.astype(np.float32).ravel().tolist()
        chunk.actions_normalized = chunk.actions
        state["chunks"] += 1
        chunk_pub.publish(chunk)

    node.create_subscription(ExecutionFeedback, TOPICS["feedback"], on_feedback, RELIABLE_QOS)

    def on_command(msg):
        if state["reset"]:
            received.append((round(to_sec(msg.header.stamp), 6), time.monotonic()))   # as the stats log rounds

    node.create_subscription(ActionCommand, TOPICS["dry_run_command"], on_command, RELIABLE_QOS)

    def publish_joints():
        msg = JointState(name=list(cfg.action.names), position=state["q"].tolist())
        msg.header.stamp = node.get_clock().now().to_msg()
        joint_pub.publish(msg)

    node.create_timer(0.01, publish_joints)
    client = node.create_client(ResetEpisode, SERVICES["executor_reset"])
    try:
        deadline = time.monotonic() + 30
        while not client.wait_for_service(timeout_sec=0.5):
            if time.monotonic() > deadline:
                return {"error": "executor reset service did not appear"}
        while "load ready" not in (out_dir / "policy_load.log").read_text():
            rclpy.spin_once(node, timeout_sec=0.1)
            if time.monotonic() > deadline + 60:
                return {"error": "policy load process did not start"}
        future = client.call_async(ResetEpisode.Request(episode_id="jitter"))
        rclpy.spin_until_future_complete(node, future, timeout_sec=5)
        state["reset"] = True
        end = time.monotonic() + args.jitter_seconds
        while time.monotonic() < end:
            rclpy.spin_once(node, timeout_sec=0.05)
    finally:
        executor.send_signal(2)
        try:
            executor.wait(timeout=10)
        except subprocess.TimeoutExpired:
            executor.kill()
        load.terminate()
        load.wait(timeout=10)
        node.destroy_node()
        rclpy.shutdown()
    stats = json.loads(stats_file.read_text())
    reset_at = next((t for t, episode in stats["resets"] if episode == "jitter"), float("inf"))
    sent = [c[0] for c in stats.pop("commands") if c[0] >= reset_at]
    return {"rate_hz": args.jitter_rate_hz, "seconds": args.jitter_seconds,
            "period_jitter_ms": stats["loop_jitter_ms"], "deadline_lateness_ms": stats["deadline_lateness_ms"],
            "command_rate": command_rate(sent, received, args.jitter_rate_hz),
            "control_thread_priority": stats["control_thread_priority"], "chunks_fed": state["chunks"],
            "dry_run_commands": stats["counters"]["dry_run_commands"], "gate": stats["gate"],
            "policy_inferences_in_parallel": (out_dir / "policy_load.log").read_text().strip().splitlines()[-1]}


def build_argparser(p: argparse.ArgumentParser | None = None) -> argparse.ArgumentParser:
    p = p or argparse.ArgumentParser(prog="vla-bench executor", description=__doc__.splitlines()[0])
    p.add_argument("--checkpoint", default="checkpoints/videovla_metaworld")
    p.add_argument("--backend", default="videovla")
    p.add_argument("--out", default="artifacts/bench/executor.json")
    p.add_argument("--modes", default=",".join(MODES))
    p.add_argument("--tasks", default="button-press,plate-slide",
                   help="the two short default tasks: a free-running sync episode costs minutes of wall time here")
    p.add_argument("--seeds", default="100")
    p.add_argument("--max-steps", type=int, default=400)
    p.add_argument("--episode-timeout-s", type=float, default=300.0)
    p.add_argument("--real-time-factor", type=float, default=0.06,
                   help="free-running sim speed; low enough that the sim keeps its rate on 2 cores")
    p.add_argument("--jitter-rate-hz", type=float, default=100.0)
    p.add_argument("--jitter-seconds", type=float, default=20.0)
    p.add_argument("--jitter-priority", type=int, default=50,
                   help="SCHED_FIFO priority of the executor's loop thread (0 = normal scheduling)")
    p.add_argument("--skip-modes", action="store_true")
    return p


def run(args) -> int:
    from ..models.checkpoint import resolve_checkpoint

    args.tasks = args.tasks.split(",")
    args.seeds = [int(s) for s in args.seeds.split(",")]
    args.checkpoint = str(resolve_checkpoint(args.checkpoint))
    os.environ.setdefault("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")
    out_path = Path(args.out)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    runs = out_path.parent / "executor_runs"
    results = {"protocol": {"tasks": args.tasks, "seeds": args.seeds, "max_steps": args.max_steps,
                            "real_time_factor": args.real_time_factor, "backend": args.backend,
                            "checkpoint": args.checkpoint, "time": "free-running sim time"},
               "modes": {}}
    results["control_jitter"] = control_jitter(args, runs / "jitter")
    print("jitter", json.dumps(results["control_jitter"]))
    out_path.write_text(json.dumps(results, indent=2))
    if not args.skip_modes:
        for name in args.modes.split(","):
            results["modes"][name] = run_mode(name, MODES[name], args, runs / name)
            print(name, json.dumps({k: v for k, v in results["modes"][name].items() if k != "episodes"}))
            out_path.write_text(json.dumps(results, indent=2))
        modes = results["modes"]
        summary = {}
        for name in modes:
            if "error" in modes[name] or "error" in modes.get("sync", {"error": 1}):
                continue
            summary[name] = {"success_rate": modes[name]["success_rate"],
                             "completion_time_vs_sync": paired_completion_ratio(modes, name),
                             "starved_ticks": modes[name]["starved_ticks"],
                             "boundary_jerk_ratio": modes[name]["boundary_jerk"]["ratio_of_maxima"],
                             "commands_outside_limits": modes[name]["gate"]["outside_limits"]}
        if "async_rtc" in modes and "async_replace" in modes and "error" not in modes["async_rtc"] \
                and "error" not in modes["async_replace"]:
            rtc = modes["async_rtc"]["boundary_jerk"]["max_at_boundaries"]
            naive = modes["async_replace"]["boundary_jerk"]["max_at_boundaries"]
            summary["rtc_boundary_jerk_vs_naive"] = rtc / naive if naive else None
        results["summary"] = summary
    out_path.write_text(json.dumps(results, indent=2))
    print(f"bench: wrote {out_path}")
    return 0

