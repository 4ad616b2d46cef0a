"""`vla-train --family NAME`: train a policy family's checkpoint from rosbag2 episodes.

The episodes (recorded by this graph or any writer whose topics match the robot file) are read
once; the family's trainer (models/registry.py) builds its model and data, and the shared loop
(models/components/training.py) trains, checkpoints and resumes it. CPU by default; `--device
cuda` and `--mixed-precision bf16` on a GPU.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import torch


def build_argparser(family: str | None = None) -> argparse.ArgumentParser:
    from .models.components import training
    from .models.registry import trainer

    p = argparse.ArgumentParser(prog="vla-train", description=__doc__.splitlines()[0])
    p.add_argument("--family", default="videovla", help="policy family to train (models/registry.py)")
    p.add_argument("--data", nargs="+", required=True,
                   help="evaluator output folders (report.json + bags/) or rosbag2 folders")
    p.add_argument("--robot", default="metaworld_sawyer")
    p.add_argument("--output", required=True, help="checkpoint directory to write")
    p.add_argument("--include-failed", action="store_true", help="also train on unsuccessful episodes")
    p.add_argument("--norm-mode", choices=["quantile", "mean_std", "min_max"], default="quantile")
    p.add_argument("--per-timestep-stats", action="store_true")
    training.add_arguments(p)
    if family is not None:
        trainer(family).add_arguments(p.add_argument_group(f"{family} options"))
    return p


def main(argv=None) -> int:
    from .core.embodiment import load_robot
    from .data.dataset import load_dataset
    from .models.registry import trainer

    pre = argparse.ArgumentParser(add_help=False)
    pre.add_argument("--family", default="videovla")
    family = pre.parse_known_args(argv)[0].family
    try:
        family_trainer = trainer(family)
    except KeyError as exc:
        raise SystemExit(f"vla-train: --family {family}: {exc.args[0]}") from None
    args = build_argparser(family).parse_args(argv)
    torch.manual_seed(args.seed)
    np.random.seed(args.seed)
    out = Path(args.output)
    out.mkdir(parents=True, exist_ok=True)
    started = time.time()
    robot = load_robot(args.robot)
    episodes = []
    for source in args.data:
        episodes += load_dataset(Path(source), robot, successful_only=not args.include_failed)
    if not episodes:
        raise SystemExit(f"vla-train: no usable episodes in {args.data}")
    family_trainer().run(args, episodes, robot, out)
    print(f"checkpoint written to {out} ({time.time() - started:.0f} s)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
