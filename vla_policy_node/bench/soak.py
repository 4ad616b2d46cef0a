"""Soak: the free-running `sim_demo` graph with the learned policy for a long stretch of sim time,
faults injected at random times, and what would show a leak or a drift measured throughout.

The graph runs as the user runs it (every node its own process, the imagination monitor on),
free-running, episode after episode on held-out seeds from 100 up (the evaluator's protocol is
task-major, so a 30-minute run stays on its first task, button-press). A ROS node beside
the graph (its own rclpy context) follows the sim clock, the policy's chunks and the episode
results; it injects one fault every `fault_every_s` (uniform in [0.5, 1.5] x, sim time, seeded):
a process killed (respawned by the runner), the simulator stopped 1.5 s, a chunk duplicated or
of an old episode, 30% of observations dropped for 10 s (a relay between perception and policy),
a disarm of 1 s. Every `SAMPLE_PERIOD_S` it samples each node process's resident memory, threads
and open file descriptors (psutil).

Figures (written beside the fault cases in artifacts/bench/faults.json and faults.md): per process
instance the growth of memory, threads and descriptors from its warm-up to its end; the chunk
inference time and observation age p50/p95 per 5-minute window of sim time; episodes and
successes; commands outside the action limits; tracebacks in the node logs.
"""

from __future__ import annotations

import json
import re
import signal
import threading
import time
from pathlib import Path

import numpy as np
import psutil

from ..core.embodiment import load_robot
from .faults import FaultContext, Relay, RelaySpec, SideNode, write_reports

GRAPH = "sim_demo"
ROBOT = "metaworld_sawyer"
SAMPLE_PERIOD_S = 5.0           # wall s between resource samples
WARMUP_S = 120.0                # wall s after a process starts before its figures count (model load, caches)
WINDOW_S = 300.0                # sim s per latency window
RSS_GROWTH_MAX_MB = 64.0        # the bound a process instance may grow after its warm-up
THREADS_GROWTH_MAX = 2
FDS_GROWTH_MAX = 4
LATENCY_DRIFT_MAX = 1.5         # largest / smallest window p50 of the inference time
FAULT_KINDS = ("kill_policy", "kill_perception", "kill_imagination_monitor", "freeze_sim", "chunk_duplicated",
               "chunk_old_episode", "observations_dropped", "disarm")
OLD_EPISODE = "soak_old_episode"
OBSERVATION_RELAY = RelaySpec("perception", "/vla/observation", "vla_msgs.msg.Observation", "sensor")


class SoakObserver(SideNode):
    """Sim clock, chunks and episode results of the graph; publishes chunks and calls set_armed."""

    def __init__(self, domain_id: int):
        from rosgraph_msgs.msg import Clock
        from vla_msgs.msg import ActionChunk, EpisodeResult
        from vla_msgs.srv import SetArmed

        from ..nodes.common import RELIABLE_QOS, SERVICES, TOPICS, to_sec

        self.to_sec = to_sec
        super().__init__("soak_observer", domain_id)
        self.sim_time = float("nan")
        self.chunks = []                          # (sim s, inference ms, observation age ms)
        self.latest_chunk = None
        self.seen: set = set()
        self.episodes = []                        # (episode id, task, success, reason, steps)
        self.lock = threading.Lock()
        self.node.create_subscription(Clock, "/clock", self._on_clock, RELIABLE_QOS)
        self.node.create_subscription(ActionChunk, TOPICS["action_chunk"], self._on_chunk, RELIABLE_QOS)
        self.node.create_subscription(EpisodeResult, TOPICS["episode_result"], self._on_result, RELIABLE_QOS)
        self.chunk_pub = self.node.create_publisher(ActionChunk, TOPICS["action_chunk"], RELIABLE_QOS)
        self.arm_client = self.node.create_client(SetArmed, SERVICES["set_armed"])
        self.SetArmed = SetArmed
        self.relays = {"observation": Relay(self.node, OBSERVATION_RELAY)}
        self.start()

    def _on_clock(self, msg) -> None:
        self.sim_time = self.to_sec(msg.clock)

    def _on_chunk(self, msg) -> None:
        key = (msg.chunk_id, msg.header.stamp.sec, msg.header.stamp.nanosec)
        with self.lock:
            if key not in self.seen and msg.episode_id != OLD_EPISODE:    # not one the soak published
                self.seen.add(key)
                self.chunks.append((self.sim_time, float(msg.inference_ms), float(msg.obs_age_ms)))
            self.latest_chunk = msg

    def _on_result(self, msg) -> None:
        with self.lock:
            self.episodes.append((msg.episode_id, msg.task, bool(msg.success), msg.reason, int(msg.steps)))

    def set_armed(self, armed: bool) -> str:
        if not self.arm_client.wait_for_service(timeout_sec=5.0):
            return "set_armed not available"
        done = threading.Event()
        future = self.arm_client.call_async(self.SetArmed.Request(armed=armed))
        future.add_done_callback(lambda _: done.set())
        return future.result().message if done.wait(5.0) else "set_armed did not answer"


def inject(kind: str, ctx: FaultContext, observer: SoakObserver) -> str:
    """One fault of `kind`; a short note of what was done."""
    if kind.startswith("kill_"):
        node = kind.removeprefix("kill_")
        ctx.kill(node)
        return f"{node} pid {ctx.notes['killed_pid']} killed"
    if kind == "freeze_sim":
        ctx.freeze("sim_bridge", 1.5)
        return "sim_bridge stopped 1.5 s"
    if kind in ("chunk_duplicated", "chunk_old_episode"):
        chunk = observer.latest_chunk
        if chunk is None:
            return "no chunk seen yet: nothing published"
        if kind == "chunk_old_episode":
            chunk.episode_id = OLD_EPISODE
        observer.chunk_pub.publish(chunk)
        return f"chunk {chunk.chunk_id} published again" + (" as another episode's" if kind == "chunk_old_episode" else "")
    if kind == "observations_dropped":
        relay = observer.relays["observation"]
        relay.drop_fraction = 0.3
        time.sleep(10.0)
        relay.drop_fraction = 0.0
        return "30% of observations dropped for 10 s"
    if kind == "disarm":
        first = observer.set_armed(False)
        time.sleep(1.0)
        return f"{first}; 1 s later: {observer.set_armed(True)}"
    raise ValueError(f"fault kind '{kind}' unknown ({', '.join(FAULT_KINDS)})")


def sample_processes(processes: dict, samples: dict, sim_time: float) -> None:
    """Memory (MiB), threads and open descriptors of every live node process, keyed by node and pid."""
    for name, popen in list(processes.items()):
        try:
            p = psutil.Process(popen.pid)
            with p.oneshot():
                row = (time.monotonic(), sim_time, p.memory_info().rss / 2**20, p.num_threads(), p.num_fds())
        except psutil.Error:
            continue
        samples.setdefault((name, popen.pid), []).append(row)


def resource_figures(samples: dict) -> list[dict]:
    """Per process instance: its figures from the end of its warm-up to its last sample."""
    rows = []
    for (name, pid), series in samples.items():
        start = series[0][0]
        settled = [s for s in series if s[0] - start >= WARMUP_S]
        row = {"node": name, "pid": pid, "samples": len(series), "lived_s": round(series[-1][0] - start, 1)}
        if len(settled) >= 2:
            first, last = settled[0], settled[-1]
            rss = [s[2] for s in settled]
            row.update(rss_mb_start=round(first[2], 1), rss_mb_end=round(last[2], 1), rss_mb_max=round(max(rss), 1),
                       rss_growth_mb=round(last[2] - first[2], 1), threads_start=first[3], threads_end=last[3],
                       fds_start=first[4], fds_end=last[4], measured_s=round(last[0] - first[0], 1))
        rows.append(row)
    return rows


def latency_windows(chunks: list, sim_start: float) -> list[dict]:
    """Chunk inference time and observation age percentiles per WINDOW_S of sim time."""
    if not chunks:
        return []
    arr = np.asarray([c for c in chunks if np.isfinite(c[0])], dtype=np.float64)
    index = np.floor((arr[:, 0] - sim_start) / WINDOW_S).astype(int)
    rows = []
    for w in sorted(set(index.tolist())):
        part = arr[index == w]
        if len(part) < 20:            # a window cut short at the end says little
            continue
        rows.append({"window": f"{w * WINDOW_S / 60:.0f}-{(w + 1) * WINDOW_S / 60:.0f} min", "chunks": len(part),
                     "inference_ms_p50": round(float(np.percentile(part[:, 1], 50)), 1),
                     "inference_ms_p95": round(float(np.percentile(part[:, 1], 95)), 1),
                     "obs_age_ms_p50": round(float(np.percentile(part[:, 2], 50)), 1),
                     "obs_age_ms_p95": round(float(np.percentile(part[:, 2], 95)), 1)})
    return rows


def commands_outside_limits(stats: dict, limits) -> int:
    """Commands in the executor's log outside the robot's action bounds."""
    q = np.asarray([c[1] for c in stats.get("commands", [])], dtype=np.float64)
    if not len(q):
        return 0
    lo, hi = np.asarray(limits.action_min), np.asarray(limits.action_max)
    return int(((q < lo - 1e-6) | (q > hi + 1e-6)).any(axis=1).sum())


def count_tracebacks(log_dir: Path) -> dict:
    found = {}
    for log in sorted(log_dir.glob("*.log")):
        n = len(re.findall(r"^Traceback \(most recent call last\)", log.read_text(errors="replace"), re.M))
        if n:
            found[log.stem] = n
    return found


def check_soak(figures: dict) -> list[str]:
    """The soak's targets; each failure named."""
    problems = []
    if figures.get("error"):
        problems.append(f"graph: {figures['error']}")
    if figures["sim_minutes"] < 0.95 * figures["sim_minutes_target"]:
        problems.append(f"ran {figures['sim_minutes']} of {figures['sim_minutes_target']} sim minutes")
    if figures["commands_outside_limits"]:
        problems.append(f"{figures['commands_outside_limits']} commands outside limits")
    if figures["tracebacks"]:
        problems.append(f"tracebacks in the logs: {figures['tracebacks']}")
    for r in figures["processes"]:
        if "rss_growth_mb" not in r or r["measured_s"] < 600:
            continue                   # lived too short after warm-up to speak of growth
        where = f"{r['node']} (pid {r['pid']})"
        if r["rss_growth_mb"] > RSS_GROWTH_MAX_MB:
            problems.append(f"{where}: memory grew {r['rss_growth_mb']} MiB > {RSS_GROWTH_MAX_MB}")
        if r["threads_end"] - r["threads_start"] > THREADS_GROWTH_MAX:
            problems.append(f"{where}: threads {r['threads_start']} -> {r['threads_end']}")
        if r["fds_end"] - r["fds_start"] > FDS_GROWTH_MAX:
            problems.append(f"{where}: file descriptors {r['fds_start']} -> {r['fds_end']}")
    p50s = [w["inference_ms_p50"] for w in figures["latency_windows"]]
    if len(p50s) >= 2 and max(p50s) > LATENCY_DRIFT_MAX * min(p50s):
        problems.append(f"inference p50 drifted {min(p50s)} -> {max(p50s)} ms across windows")
    return problems


def run_soak(out: Path, sim_minutes: float, fault_every_s: float, checkpoint: str, seed: int = 0,
             domain_id: int = 89) -> dict:
    from ..graph_runner import run_graph

    out.mkdir(parents=True, exist_ok=True)
    robot = load_robot(ROBOT)
    stats_file = out / "executor_stats.json"
    stats_file.unlink(missing_ok=True)
    target_s = sim_minutes * 60.0
    overrides = {"sim_bridge": {"lockstep": "false"},
                 "executor": {"lockstep": "false", "stats_file": str(stats_file)},
                 "policy": {"backend": "videovla", "checkpoint": checkpoint},
                 "evaluator": {"lockstep": "false", "seeds": "[100]", "episodes_per_task": "1000",
                               "output_dir": str(out), "record": "false"}}
    env = {"ROS_DOMAIN_ID": str(domain_id), "ROS_AUTOMATIC_DISCOVERY_RANGE": "LOCALHOST"}
    processes: dict = {}
    result: dict = {}
    stop = threading.Event()
    graph = threading.Thread(target=lambda: result.update(run_graph(
        GRAPH, overrides, out / "logs", timeout_s=target_s * 5 + 600, env=env, processes=processes,
        remaps={OBSERVATION_RELAY.node: {OBSERVATION_RELAY.topic: OBSERVATION_RELAY.topic_in}}, stop=stop)))
    observer = SoakObserver(domain_id)
    ctx = FaultContext(processes, observer)
    rng = np.random.default_rng(seed)
    samples: dict = {}
    faults = []
    wall_start = time.monotonic()
    interrupted = threading.Event()             # Ctrl-C / SIGTERM: stop the graph and report what ran
    previous = {sig: signal.signal(sig, lambda *_: interrupted.set()) for sig in (signal.SIGINT, signal.SIGTERM)}
    sim_start = float("nan")
    graph.start()
    try:
        while not np.isfinite(observer.sim_time) and graph.is_alive() and not interrupted.is_set():
            time.sleep(0.2)
        sim_start = observer.sim_time
        next_fault = sim_start + fault_every_s * rng.uniform(0.5, 1.5)
        next_sample = 0.0
        while not interrupted.is_set() and graph.is_alive() and observer.sim_time - sim_start < target_s:
            if time.monotonic() >= next_sample:
                sample_processes(processes, samples, observer.sim_time)
                next_sample = time.monotonic() + SAMPLE_PERIOD_S
            if observer.sim_time >= next_fault:
                kind = str(rng.choice(FAULT_KINDS))
                at = observer.sim_time
                try:
                    note = inject(kind, ctx, observer)
                except Exception as exc:  # noqa: BLE001 - a failed injection is a finding of the soak
                    note = f"injection failed: {exc}"
                faults.append({"sim_s": round(at - sim_start, 1), "kind": kind, "note": note})
                print(f"soak: {(at - sim_start) / 60:.1f} sim min: {kind}: {note}", flush=True)
                next_fault = observer.sim_time + fault_every_s * rng.uniform(0.5, 1.5)
            time.sleep(0.2)
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        sim_end = observer.sim_time
        stop.set()
        graph.join()
        observer.close()
    stats = json.loads(stats_file.read_text()) if stats_file.is_file() else {}
    episodes = observer.episodes
    figures = {
        "graph": GRAPH, "robot": ROBOT, "backend": "videovla", "checkpoint": checkpoint, "seed": seed,
        "sim_minutes_target": sim_minutes, "sim_minutes": round((sim_end - sim_start) / 60.0, 2),
        "wall_minutes": round((time.monotonic() - wall_start) / 60.0, 2),
        "real_time_factor": round((sim_end - sim_start) / max(time.monotonic() - wall_start, 1e-9), 3),
        "error": result.get("error"),
        "restarts": {n: p["restarts"] for n, p in result.get("processes", {}).items() if p["restarts"]},
        "faults": faults,
        "episodes": len(episodes), "successes": sum(e[2] for e in episodes),
        "episode_reasons": {r: sum(1 for e in episodes if e[3] == r) for r in sorted({e[3] for e in episodes})},
        "chunks": len(observer.chunks),
        "latency_windows": latency_windows(observer.chunks, sim_start),
        "processes": resource_figures(samples),
        "commands_outside_limits": commands_outside_limits(stats, robot.config.limits) if stats else None,
        "executor": {k: stats.get(k) for k in ("counters", "gate", "rejections")} if stats else None,
        "tracebacks": count_tracebacks(out / "logs"),
        "bounds": {"rss_growth_mb": RSS_GROWTH_MAX_MB, "threads_growth": THREADS_GROWTH_MAX,
                   "fds_growth": FDS_GROWTH_MAX, "latency_p50_drift": LATENCY_DRIFT_MAX, "warmup_s": WARMUP_S},
    }
    figures["problems"] = check_soak(figures)
    return figures


def build_argparser(p) -> None:
    p.add_argument("--sim-minutes", type=float, default=30.0, help="sim time to run (default 30)")
    p.add_argument("--fault-every", type=float, default=90.0, help="mean sim seconds between faults")
    p.add_argument("--checkpoint", default="checkpoints/videovla_metaworld")
    p.add_argument("--seed", type=int, default=0, help="seed of the fault times and kinds")
    p.add_argument("--out", type=Path, default=Path("artifacts/bench"))


def run(args) -> int:
    figures = run_soak(args.out / "soak", args.sim_minutes, args.fault_every, args.checkpoint, args.seed)
    existing = args.out / "faults.json"
    cases = json.loads(existing.read_text()).get("cases", []) if existing.is_file() else []
    write_reports(cases, args.out, soak=figures)
    print(f"soak: {'targets met' if not figures['problems'] else figures['problems']}; "
          f"wrote {args.out / 'faults.json'} and {args.out / 'faults.md'}")
    return 0 if not figures["problems"] else 1
