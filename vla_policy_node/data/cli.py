"""vla-data: recorded episodes in other formats.

  vla-data export-lerobot BAGS... --robot NAME --out DIR   rosbag2 episodes -> a LeRobotDataset
"""

from __future__ import annotations

import argparse
import sys


def build_argparser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="vla-data", description=__doc__.splitlines()[0])
    commands = p.add_subparsers(dest="command", required=True)
    export = commands.add_parser("export-lerobot", help="write recorded episodes as a LeRobotDataset")
    export.add_argument("sources", nargs="+", metavar="BAGS",
                        help="evaluator output folders (report.json + bags/) or rosbag2 episode folders")
    export.add_argument("--robot", default="metaworld_sawyer", help="robot file: names, cameras, feature keys")
    export.add_argument("--out", required=True, help="new dataset folder (must not exist)")
    export.add_argument("--repo-id", default="", help="the dataset's Hugging Face id (default local/<robot>)")
    export.add_argument("--include-failed", action="store_true", help="also export unsuccessful episodes")
    export.add_argument("--images", action="store_true",
                        help="store frames as lossless PNG images instead of AV1 videos (larger, exact)")
    return p


def main(argv=None) -> int:
    from ..core.embodiment import load_robot
    from .dataset import DatasetError, load_dataset
    from .lerobot_format import export_lerobot

    args = build_argparser().parse_args(argv)
    robot = load_robot(args.robot)
    try:
        episodes = []
        for source in args.sources:
            episodes += load_dataset(source, robot, successful_only=not args.include_failed)
        dataset = export_lerobot(episodes, robot, args.out, args.repo_id, use_videos=not args.images)
    except DatasetError as exc:
        print(f"vla-data export-lerobot: {exc}", file=sys.stderr)
        return 2
    print(f"{args.out}: {dataset.meta.total_episodes} episodes, {dataset.meta.total_frames} frames at "
          f"{dataset.fps} fps ({', '.join(dataset.meta.camera_keys)})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
