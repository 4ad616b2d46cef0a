"""`vla-eval`: evaluation from the command line.

    vla-eval offline --bag <dir>... --checkpoint <dir> --robot <name> [--topic-map FILE.yaml]
                     [--stride N] [--steps K] [--batch B] [--output DIR] [--max-episodes N]
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
    return parser


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
    return 2


if __name__ == "__main__":
    sys.exit(main())
