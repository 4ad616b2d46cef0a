"""`vla-train --family NAME`: train a policy family's checkpoint from rosbag2 episodes.

The episodes (recorded by this graph or any writer whose topics match the robot file) are read
once; the family's trainer (models/registry.py) builds its model and data, and the shared loop
(models/components/training.py) trains, checkpoints and resumes it. CPU by default; `--device
cuda` and `--mixed-precision bf16` on a GPU. Data-parallel on several processes when started by
`accelerate launch` or `torchrun` (one per GPU with `--device cuda`, gloo on CPU); `--batch-size` is
the global batch per optimizer step.
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
                   help="evaluator output folders (report.json + bags/), rosbag2 folders or LeRobotDatasets "
                        "(lerobot:DIR)")
    p.add_argument("--data-seeds", default="",
                   help="keep only these seeds of --data, e.g. 0-4 or 0,1,2 (\"\" = all): the K demonstrations "
                        "of a K-shot run")
    p.add_argument("--videos", nargs="+", default=[],
                   help="action-free sources (evaluator output folders or bag folders): only their cameras, "
                        "proprio, instruction and success are read, never an action or command topic")
    p.add_argument("--label-videos", choices=["none", "idm"], default="none",
                   help="idm: an inverse-dynamics model fitted on --data's episodes labels the --videos' actions "
                        "and the policy trains on them as demonstrations (the control that uses the videos "
                        "without imagining); none: a family with a video objective (videovla) learns from them, "
                        "the others refuse them")
    p.add_argument("--idm-steps", type=int, default=3000, help="optimizer steps of the inverse-dynamics model")
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
    from accelerate import PartialState

    from .core.embodiment import load_robot
    from .data.dataset import load_dataset
    from .models.checkpoint import CheckpointError
    from .models.components.training import micro_batch_size
    from .models.registry import trainer

    pre = argparse.ArgumentParser(add_help=False)
    pre.add_argument("--family", default="videovla")
    family = pre.parse_known_args(argv)[0].family
    try:
        family_trainer = trainer(family)
    except KeyError as exc:
        raise SystemExit(f"vla-train: --family {family}: {exc.args[0]}") from None
    args = build_argparser(family).parse_args(argv)
    # one process, or one of several started by a launcher: the process group exists before any work
    state = PartialState(cpu=args.device == "cpu")
    if state.num_processes > 1 and args.device != "cpu":
        if args.device != "cuda":
            raise SystemExit(f"vla-train: --device {args.device}: under a launcher each process takes its own GPU; "
                             "pass --device cuda")
        args.device = str(state.device)
    if not state.is_main_process:
        from transformers.utils import logging as transformers_logging
        transformers_logging.disable_progress_bar()       # the text encoder's loading bar: once, not per process
    try:
        micro_batch_size(args.batch_size, state.num_processes, args.gradient_accumulation_steps)
    except ValueError as exc:
        raise SystemExit(f"vla-train: {exc}") from None
    torch.manual_seed(args.seed)
    np.random.seed(args.seed)
    out = Path(args.output)
    out.mkdir(parents=True, exist_ok=True)
    started = time.time()
    robot = load_robot(args.robot)
    try:
        seeds = parse_seeds(args.data_seeds)
    except ValueError as exc:
        raise SystemExit(f"vla-train: --data-seeds: {exc}") from None
    episodes = []
    for source in args.data:
        episodes += load_dataset(source, robot, successful_only=not args.include_failed, seeds=seeds)
    if not episodes:
        raise SystemExit(f"vla-train: no usable episodes in {args.data}"
                         + (f" with seeds {args.data_seeds}" if seeds is not None else ""))
    videos = []
    for source in args.videos:
        videos += load_dataset(source, robot, successful_only=not args.include_failed, action_free=True)
    if args.videos and not videos:
        raise SystemExit(f"vla-train: no usable episodes in --videos {args.videos}")
    if args.label_videos == "idm":
        if not videos:
            raise SystemExit("vla-train: --label-videos idm needs --videos")
        videos, args.inverse_dynamics = idm_labelled(episodes, videos, args.seed, args.idm_steps)
        print(f"inverse dynamics: {len(videos)} videos labelled; mean absolute action error on the demonstrations "
              f"it was fitted on {args.inverse_dynamics['fit_error']['mae']:.3f}")
    elif videos and not getattr(family_trainer, "learns_from_videos", False):
        raise SystemExit(f"vla-train: --family {family} cannot learn from action-free --videos (it has no "
                         "video objective; videovla has); label them with --label-videos idm")
    episodes += videos
    try:
        family_trainer().run(args, episodes, robot, out)
    except CheckpointError as exc:                   # --vae or --init-from is not what this run can use
        raise SystemExit(f"vla-train: {exc}") from None
    state.print(f"checkpoint written to {out} ({time.time() - started:.0f} s)")
    return 0


def parse_seeds(text: str) -> set[int] | None:
    """'0-4' or '0,1,5-7' -> a set of seeds; '' -> None (every seed)."""
    if not text.strip():
        return None
    seeds: set[int] = set()
    for part in text.split(","):
        lo, _, hi = part.strip().partition("-")
        if not lo.isdigit() or (hi and not hi.isdigit()):
            raise ValueError(f"'{part.strip()}' is not a seed or a range like 0-4")
        seeds.update(range(int(lo), int(hi or lo) + 1))
    return seeds


def idm_labelled(demonstrations: list, videos: list, seed: int, steps: int) -> tuple[list, dict]:
    """The action-free `videos` labelled by an inverse-dynamics model fitted on `demonstrations`, and
    what the training record keeps of it (its settings and its error on the demonstrations)."""
    import dataclasses

    from .models.components.inverse_dynamics import (InverseDynamicsConfig, action_error, fit_inverse_dynamics,
                                                     label_episodes)

    cfg = InverseDynamicsConfig(steps=steps, seed=seed)
    model = fit_inverse_dynamics(demonstrations, cfg)
    return label_episodes(model, videos), {"config": dataclasses.asdict(cfg),
                                           "fit_error": action_error(model, demonstrations)}


if __name__ == "__main__":
    raise SystemExit(main())
