"""`vla-graph NAME`: start a graph description as one process per node, without a ROS install.

Each node runs as its own OS process (its console entry point) with --ros-args parameters,
exactly what `ros2 launch` starts from the same description. The runner waits for the node that
ends the graph (the evaluator), stops the others, and reports each process's peak memory: the
largest resident set size sampled every `SAMPLE_PERIOD_S` (psutil reads the current RSS of another
process, not its kernel high-water mark, so a spike shorter than one period can be missed).
"""

from __future__ import annotations

import argparse
import ctypes
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil

from .graph import GraphConfigError, load_graph, node_parameter

SAMPLE_PERIOD_S = 0.5        # how often the runner checks the nodes and samples their memory
MAX_RESTARTS = 3             # a respawned node exiting more often than this within RESTART_WINDOW_S
RESTART_WINDOW_S = 60.0      # fails the graph (a crash loop); occasional exits are always restarted
CLOCK_REMAP = {"/clock": "clock"}   # relative: /clock at the root, /<namespace>/clock in a namespace
CONFIG_ERROR_EXIT = 2        # a node refusing its configuration: restarting it cannot help
PR_SET_PDEATHSIG = 1         # prctl(2): the signal a process gets when its parent dies


def rss_mb(process: psutil.Process) -> float | None:
    """Current resident set size of a process, MiB (None once it has exited)."""
    try:
        return process.memory_info().rss / 2**20
    except psutil.Error:
        return None


def find_executable(name: str) -> str:
    """A node executable: on PATH or in the Python prefix (pip), or in lib/vla_policy_node (colcon)."""
    for candidate in (shutil.which(name), Path(sys.prefix) / "bin" / name,
                      Path(sys.prefix) / "lib" / "vla_policy_node" / name):
        if candidate and Path(candidate).is_file():
            return str(candidate)
    raise FileNotFoundError(f"node executable '{name}' not found (is the package installed?)")


def node_command(spec, overrides: dict, remaps: dict | None = None, namespace: str = "") -> list[str]:
    """The node's command line; `remaps` (topic -> topic) on top of the graph's own. In a
    `namespace`, /clock is the namespace's own (a simulator per namespace keeps its own time)."""
    exe = find_executable(spec.executable)
    cmd = [exe, "--ros-args", "-r", f"__node:={spec.name}"]
    if namespace:
        cmd += ["-r", f"__ns:=/{namespace.strip('/')}"]
    for source, target in {**CLOCK_REMAP, **spec.remap, **(remaps or {})}.items():
        cmd += ["-r", f"{source}:={target}"]
    for f in spec.parameter_files:
        cmd += ["--params-file", str(f)]
    params = {**spec.parameters, "use_sim_time": spec.use_sim_time, **overrides.get(spec.name, {})}
    for key, value in params.items():
        cmd += ["-p", f"{key}:={_ros_value(value)}"]
    return cmd


def _ros_value(value) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (list, tuple)):
        return "[" + ",".join(_ros_value(v) for v in value) + "]"
    if value == "":
        return "''"          # an empty string must stay a (YAML) string, also inside a list
    return str(value)


def parse_overrides(items: list[str]) -> dict:
    """['evaluator.seeds:=[1,2]'] -> {'evaluator': {'seeds': '[1,2]'}} (values parsed by ROS)."""
    out: dict = {}
    for item in items:
        key, sep, value = item.partition(":=")
        node, dot, param = key.partition(".")
        if not sep or not dot:
            raise SystemExit(f"--set {item!r}: expected NODE.PARAM:=VALUE")
        out.setdefault(node, {})[param] = value
    return out


def _node_preexec() -> None:
    """In a node process before it starts. SIGINT and SIGTERM act again: a runner started with them
    ignored or blocked (a background job of a script; a Ray worker blocks them) would otherwise pass
    that on, and each node would miss the runner's SIGINT and be killed only after the stop timeout.
    And the node gets SIGTERM when the runner dies (Linux PR_SET_PDEATHSIG): a killed runner (a lost
    Ray worker) leaves no graph behind on its ROS domain."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT, signal.SIGTERM})
    if sys.platform.startswith("linux"):
        ctypes.CDLL(None).prctl(PR_SET_PDEATHSIG, int(signal.SIGTERM))


def run_graph(name: str, overrides: dict, log_dir: Path, robot: str | None = None,
              timeout_s: float | None = None, env: dict | None = None, processes: dict | None = None,
              remaps: dict | None = None, stop=None, namespace: str = "") -> dict:
    """Run a graph to its end; `env`: variables for the node processes on top of os.environ (e.g.
    ROS_DOMAIN_ID, so that graphs run side by side without seeing each other). `processes`, when
    given, is kept filled with the live node name -> subprocess.Popen (respawns included) for a
    caller that injects faults. Nodes marked `respawn` are restarted after their delay when they
    exit (killed, crashed), at most MAX_RESTARTS times within RESTART_WINDOW_S, but not when they
    refused their configuration (exit code 2); any other node exiting early fails the graph. Setting
    `stop` (a threading.Event) ends the graph as its ending node would. `remaps`: node name
    -> {topic: topic} on top of the graph's `remap` entries (e.g. to put a relay between nodes).
    `namespace`: every node under it (its topics, services, the task action and /clock)."""
    graph = load_graph(name, robot)
    log_dir.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, **(env or {})}
    env.setdefault("MUJOCO_GL", "egl")
    env.setdefault("PYOPENGL_PLATFORM", env["MUJOCO_GL"])
    env.setdefault("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")
    env.setdefault("PYTHONUNBUFFERED", "1")
    procs = processes if processes is not None else {}
    logs, peaks, sampled, restarts, exited_at = {}, {}, {}, {}, {}
    restart_times: dict = {}          # node -> wall times of its restarts (monotonic s)

    def may_restart(n: str) -> bool:
        recent = [t for t in restart_times.get(n, []) if time.monotonic() - t < RESTART_WINDOW_S]
        return specs[n].respawn and len(recent) < MAX_RESTARTS and procs[n].returncode != CONFIG_ERROR_EXIT
    specs = {spec.name: spec for spec in graph.nodes}
    started = time.monotonic()

    def start(spec) -> None:
        out = None if spec.exit_ends_graph else logs[spec.name]
        procs[spec.name] = subprocess.Popen(node_command(spec, overrides, (remaps or {}).get(spec.name), namespace),
                                            env={**env, **spec.env}, stdout=out,
                                            stderr=subprocess.STDOUT if out else None,
                                            preexec_fn=_node_preexec)
        sampled[spec.name] = psutil.Process(procs[spec.name].pid)

    try:
        for spec in graph.nodes:
            logs[spec.name] = open(log_dir / f"{spec.name}.log", "w")
            start(spec)
        enders = [s.name for s in graph.nodes if s.exit_ends_graph]
        failed = None
        while True:
            for n, process in sampled.items():
                rss = rss_mb(process)
                if rss is not None:
                    peaks[n] = max(peaks.get(n, 0.0), rss)
            done = [n for n in enders if procs[n].poll() is not None]
            crashed = [n for n, p in procs.items() if n not in enders and p.poll() is not None]
            for n in [n for n in crashed if may_restart(n)]:
                crashed.remove(n)
                exited_at.setdefault(n, time.monotonic())
                if time.monotonic() - exited_at[n] >= specs[n].respawn_delay_s:
                    logs[n].write(f"[graph runner] {n} exited with code {procs[n].returncode}; respawning\n")
                    logs[n].flush()
                    restarts[n] = restarts.get(n, 0) + 1
                    restart_times.setdefault(n, []).append(time.monotonic())
                    del exited_at[n]
                    start(specs[n])
            if crashed:
                again = f" after {restarts[crashed[0]]} restarts" if crashed[0] in restarts else ""
                failed = f"node {crashed[0]} exited early with code {procs[crashed[0]].returncode}{again} " \
                         f"(see {log_dir / (crashed[0] + '.log')})"
                break
            if (done and len(done) == len(enders)) or (stop is not None and stop.is_set()):
                break
            if timeout_s and time.monotonic() - started > timeout_s:
                failed = f"graph did not finish within {timeout_s:.0f} s"
                break
            time.sleep(0.1 if exited_at else SAMPLE_PERIOD_S)
    finally:
        for proc in procs.values():
            if proc.poll() is None:
                proc.send_signal(signal.SIGINT)
        for proc in procs.values():
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        for log in logs.values():
            log.close()
    codes = {n: p.returncode for n, p in procs.items()}
    ender_failed = [n for n in enders if codes[n] != 0]
    if failed is None and ender_failed and not (stop is not None and stop.is_set()):
        failed = f"node {ender_failed[0]} exited with code {codes[ender_failed[0]]}"
    return {"graph": graph.name, "robot": graph.robot, "wall_time_s": round(time.monotonic() - started, 2),
            "processes": {n: {"pid": procs[n].pid, "exit_code": codes[n], "restarts": restarts.get(n, 0),
                              "peak_rss_mb": round(peaks.get(n, 0.0), 1)} for n in procs},
            "error": failed}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("graph", help="graph name in config/graphs/ or a path to a graph YAML")
    parser.add_argument("--robot", help="embodiment name overriding the graph's robot")
    parser.add_argument("--set", action="append", default=[], metavar="NODE.PARAM:=VALUE",
                        help="override one node parameter (repeatable)")
    parser.add_argument("--output-dir", default=None, help="evaluator output folder (default artifacts/<graph>)")
    parser.add_argument("--timeout", type=float, default=None, help="stop the graph after this many seconds")
    parser.add_argument("--namespace", default="", help="run every node under this namespace (robots side by side)")
    args = parser.parse_args(argv)
    overrides = parse_overrides(args.set)
    try:
        graph = load_graph(args.graph, args.robot)
    except GraphConfigError as exc:
        print(f"vla-graph: {exc}", file=sys.stderr)
        return 2
    enders = [s for s in graph.nodes if s.exit_ends_graph]
    out_dir = Path(args.output_dir or (node_parameter(enders[0], "output_dir", "") if enders else "")
                   or f"artifacts/{graph.name}")
    if args.output_dir:
        for spec in enders:
            overrides.setdefault(spec.name, {})["output_dir"] = args.output_dir
    result = run_graph(args.graph, overrides, out_dir / "logs", args.robot, args.timeout, namespace=args.namespace)
    (out_dir / "processes.json").write_text(json.dumps(result, indent=2))
    for name, info in result["processes"].items():
        print(f"  {name:<11} pid {info['pid']:<7} exit {info['exit_code']!s:<4} peak RSS {info['peak_rss_mb']:.0f} MiB")
    if result["error"]:
        print(f"vla-graph: {result['error']}", file=sys.stderr)
        return 1
    report_path = out_dir / "report.json"
    if report_path.is_file():
        summary = json.loads(report_path.read_text())["summary"]
        label = graph.name.removeprefix("sim_")
        print(f"{label}: success_rate={summary['success_rate']:.2f} episodes={summary['episodes']} "
              f"report={report_path}")
        if summary.get("replay_commands_matched") is not None:
            print(f"{label}: action_l1={summary['replay_action_l1']} over {summary['replay_commands_matched']} "
                  f"commands (coverage {summary['replay_coverage']})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
