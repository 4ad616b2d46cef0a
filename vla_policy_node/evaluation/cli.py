"""`vla-eval`: evaluation from the command line.

    vla-eval offline --bag <dir>... --checkpoint <dir> --robot <name> [--topic-map FILE.yaml]
                     [--stride N] [--steps K] [--batch B] [--output DIR] [--max-episodes N]
    vla-eval closed-loop [--graph sim_demo] [--backend B --checkpoint DIR] --tasks T,... --seeds S,...
                     [--set NODE.PARAM:=VALUE ...] [--output DIR] [--ray [ADDRESS] --workers N ...]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path


def build_argparser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="vla-eval", description="Evaluate policies on recorded episodes.")
    commands = parser.add_subparsers(dest="command", required=True)
    off = commands.add_parser("offline", help="open-loop evaluation of a checkpoint on rosbag2 recordings",
                              description="Runs the policy open loop on recorded observations and scores "
                                          "predicted chunks against recorded actions and imagined frames "
                                          "against recorded frames.")
    off.add_argument("--bag", nargs="+", action="extend", required=True, type=Path,
                     help="bag folder(s), folders of bags, or evaluator outputs (with bags/); sqlite3 or mcap")
    off.add_argument("--checkpoint", required=True, help="checkpoint directory")
    off.add_argument("--robot", required=True, help="robot file name (config/robots/<name>.yaml) or path")
    off.add_argument("--topic-map", type=Path, help="YAML {robot file's topic: bag's topic} for other writers' bags")
    off.add_argument("--instruction", default="",
                     help="instruction for bags that record none (bags of other writers have no /vla/observation)")
    off.add_argument("--stride", type=int, help="steps between evaluated observations (default: action.horizon)")
    off.add_argument("--steps", type=int, help="denoising steps (default: the checkpoint's; fewer is faster)")
    off.add_argument("--batch", type=int, default=32, help="observations per model call (default 32)")
    off.add_argument("--output", type=Path, help="report folder (default artifacts/eval/offline_<checkpoint>_<time>)")
    off.add_argument("--max-episodes", type=int, help="evaluate at most this many episodes")
    off.add_argument("--actions-only", action="store_true",
                     help="score action chunks only: imagined frames are not decoded (about twice as fast)")
    off.add_argument("--videos", type=int, default=4, help="episodes with a real-vs-imagined video (default 4)")
    off.add_argument("--index-dir", type=Path, help="run index folder (default: <output>/../runs_index)")
    off.add_argument("--seed", type=int, default=0)
    off.add_argument("--device", default="cpu")
    off.add_argument("--threads", type=int, help="torch CPU threads (default: cores left idle by other work)")
    closed = commands.add_parser(
        "closed-loop", help="tasks x seeds through the full graph, on this machine or on a Ray cluster",
        description="Runs the graph's evaluator on tasks x seeds and writes one report. With --ray every "
                    "episode is a Ray task running its own graph (own ROS_DOMAIN_ID); results, bags and "
                    "videos are merged into the report a local run of the same episodes writes.")
    closed.add_argument("--graph", default="sim_demo", help="graph name in config/graphs/ or a path (default sim_demo)")
    closed.add_argument("--robot", help="embodiment name overriding the graph's robot")
    closed.add_argument("--backend", help="policy backend (policy.backend)")
    closed.add_argument("--checkpoint", help="checkpoint directory (policy.checkpoint)")
    closed.add_argument("--tasks", required=True, type=_names, help="comma-separated task names")
    closed.add_argument("--seeds", required=True, type=_seeds, help="comma-separated seeds or ranges: 100-105,110")
    closed.add_argument("--max-steps", type=int, help="step limit of an episode (evaluator.max_steps)")
    time_mode = closed.add_mutually_exclusive_group()
    time_mode.add_argument("--lockstep", dest="lockstep", action="store_true", default=None,
                           help="the simulator steps once per command (reproducible); default: the graph's")
    time_mode.add_argument("--free-running", dest="lockstep", action="store_false")
    closed.add_argument("--set", action="append", default=[], metavar="NODE.PARAM:=VALUE",
                        help="override one node parameter (repeatable)")
    closed.add_argument("--output", type=Path, help="report folder (default artifacts/eval/closed_loop_<time>)")
    closed.add_argument("--timeout", type=float, default=4 * 3600.0, help="limit of one graph run (s)")
    closed.add_argument("--ray", nargs="?", const="local", metavar="ADDRESS",
                        help="run on Ray: without ADDRESS a local instance, else the cluster at ADDRESS "
                             "(auto, ray://head:10001, ...)")
    closed.add_argument("--workers", type=int, default=2, help="graphs running at once on Ray (default 2)")
    closed.add_argument("--cpus-per-graph", type=float, default=1.0, help="Ray CPUs each graph holds (default 1)")
    closed.add_argument("--gpus-per-graph", type=float, default=0.0,
                        help="Ray GPUs each graph holds; > 0 puts the policy on cuda unless policy.device is set")
    closed.add_argument("--retries", type=int, default=2, help="more attempts of a failed or lost episode (default 2)")
    closed.add_argument("--domain-base", type=int, default=None,
                        help="first ROS_DOMAIN_ID of the concurrent graphs (default 80)")
    closed.add_argument("--quiet", action="store_true", help="no progress bar")
    return parser


def _names(text: str) -> list[str]:
    names = [t.strip() for t in text.split(",") if t.strip()]
    if not names:
        raise argparse.ArgumentTypeError("no name given")
    return names


def _seeds(text: str) -> list[int]:
    seeds: list[int] = []
    try:
        for part in _names(text):
            first, _, last = part.partition("-")
            seeds += list(range(int(first), int(last) + 1)) if last else [int(first)]
    except ValueError:
        raise argparse.ArgumentTypeError(f"'{text}': seeds are integers or ranges like 100-105") from None
    return seeds


def run_closed_loop_command(args) -> int:
    from ..graph import GraphConfigError, load_graph
    from ..graph_runner import parse_overrides
    from .distributed import DEFAULT_DOMAIN_BASE, ClosedLoopJob, RayOptions, run_local, run_on_ray, set_run_parameters

    try:
        load_graph(args.graph, args.robot)
        overrides = parse_overrides(args.set)
    except (GraphConfigError, ValueError) as exc:
        print(f"vla-eval: {exc}", file=sys.stderr)
        return 2
    set_run_parameters(overrides, args.backend, args.checkpoint, args.lockstep, args.max_steps, args.gpus_per_graph)
    job = ClosedLoopJob(args.graph, args.tasks, args.seeds, args.robot, overrides, args.timeout)
    output = args.output or Path("artifacts/eval") / f"closed_loop_{time.strftime('%Y%m%d_%H%M%S')}"
    if args.ray:
        try:
            options = RayOptions(None if args.ray == "local" else args.ray, args.workers, args.cpus_per_graph,
                                 args.gpus_per_graph, args.retries,
                                 DEFAULT_DOMAIN_BASE if args.domain_base is None else args.domain_base)
        except ValueError as exc:
            print(f"vla-eval: {exc}", file=sys.stderr)
            return 2
        result = run_on_ray(job, output, options, progress=not args.quiet)
        section = result["distributed"]
        print(f"ray: {section['completed']}/{section['episodes']} episodes on {section['workers']} workers in "
              f"{section['wall_time_s']:.0f} s (overhead per episode {section['overhead_per_episode_s']['mean']} s)"
              + (f", retried {section['retried']}" if section["retried"] else "")
              + (f", FAILED {section['failed']}" if section["failed"] else ""))
        failed = bool(section["failed"]) or result["report"] is None
    else:
        result = run_local(job, output)
        if result["error"]:
            print(f"vla-eval: {result['error']}", file=sys.stderr)
        failed = bool(result["error"])
    report = output / "report.json"
    if report.is_file():
        import json
        summary = json.loads(report.read_text())["summary"]
        print(f"closed-loop: success_rate={summary['success_rate']:.2f} episodes={summary['episodes']} report={report}")
    return 1 if failed else 0


def run_offline_command(args) -> int:
    from .offline import OfflineEvalConfig, OfflineEvalError, load_topic_map, run_offline

    stamp = time.strftime("%Y%m%d_%H%M%S")
    output = args.output or Path("artifacts/eval") / f"offline_{Path(args.checkpoint).name}_{stamp}"
    try:
        config = OfflineEvalConfig(bags=args.bag, checkpoint=args.checkpoint, robot=args.robot, output=output,
                                   topic_map=load_topic_map(args.topic_map) if args.topic_map else None,
                                   instruction=args.instruction,
                                   stride=args.stride, steps=args.steps, batch=args.batch,
                                   max_episodes=args.max_episodes, videos=args.videos,
                                   actions_only=args.actions_only, seed=args.seed,
                                   device=args.device, threads=args.threads, index_dir=args.index_dir)
        result = run_offline(config)
    except (OfflineEvalError, ValueError, FileNotFoundError) as exc:
        print(f"vla-eval: error: {exc}", file=sys.stderr)
        return 2
    for entry in result["skipped"]:
        print(f"vla-eval: skipped {entry['bag']}: {entry['reason']}", file=sys.stderr)
    if not result["paths"]:
        print("vla-eval: error: no episode could be evaluated", file=sys.stderr)
        return 1
    off = result["summary"]["offline"]
    speed, frames = off["speed"], off["frames"]
    gripper = off["gripper_accuracy"]
    figures = [f"episodes={speed['episodes']}", f"skipped={len(result['skipped'])}",
               f"action_l1={off['actions']['l1']:.4f}", f"gripper_acc={'-' if gripper is None else f'{gripper:.3f}'}"]
    if frames:
        last = max(frames)
        figures += [f"psnr@{last}={frames[last]['psnr']:.2f}dB", f"ssim@{last}={frames[last]['ssim']:.4f}"]
    figures += [f"real_time_factor={speed['real_time_factor']:.2f} ({speed['bag_duration_s']:.1f} s of recording "
                f"in {speed['wall_time_s']:.1f} s)", f"report={result['paths']['report_json']}"]
    print("offline: " + " ".join(figures))
    return 0


def main(argv=None) -> int:
    args = build_argparser().parse_args(argv)
    if args.command == "offline":
        return run_offline_command(args)
    if args.command == "closed-loop":
        return run_closed_loop_command(args)
    return 2


if __name__ == "__main__":
    sys.exit(main())
