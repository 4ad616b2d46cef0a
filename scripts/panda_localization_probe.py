"""How well the embedded Panda's reach target can be located from pixels when N targets are seen in training.

The Panda reach benchmark allows 20 demonstrations; each has one target, so a policy learns where
targets are from 20 of them. This probe separates that perception question from control: a small
CNN with a spatial-softmax (keypoint) head, the usual data-efficient visuomotor encoder, regresses
the target position (m, base frame) from the frames at the start of an episode plus the joint
positions, each camera cropped as the robot file `panda_ros2_control` says and resized to `--size`.
It is trained on N targets (seeds 0-19 are the demonstrations' targets; larger N draws seeds from
1000 on, never evaluated), `--poses` start poses per target (the sim's start noise; fewer when
N x poses would pass `--max-images`), and scored on unseen seeds 300-499: median error and the
share within the 2 cm success radius (Wilson 95%). A policy that aims at its estimate cannot beat
that share by much; visual feedback near the target could, which this probe does not measure.

    python scripts/panda_localization_probe.py --targets 20 200 2000 --views scene scene,wrist
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np
import torch
from torch import nn

from vla_policy_node.bench.leaderboard import wilson_interval
from vla_policy_node.core.embodiment import load_robot
from vla_policy_node.core.images import to_model_input
from vla_policy_node.sim.panda_reach_sim import READY_POSE, START_NOISE_RAD, SUCCESS_RADIUS, TARGET_BOX, PandaReachSim

TEST_SEEDS = range(300, 500)
DEMONSTRATION_SEEDS = range(0, 20)


def render_targets(seeds, poses: int, size: int) -> dict[str, np.ndarray]:
    """For each seed: its target and `poses` start poses, frames of both cameras at `size` px."""
    import mujoco      # after the sim module has chosen the headless GL backend

    crops = {c.name: c.crop for c in load_robot("panda_ros2_control").cameras}
    sim = PandaReachSim(["scene", "wrist"], width=320, height=240)
    frames = {"scene": [], "wrist": []}
    joints, targets = [], []
    try:
        for seed in seeds:
            sim.reset("reach", seed)
            rng = np.random.default_rng([seed, 7])
            for _ in range(poses):
                q = np.clip(READY_POSE + rng.uniform(-START_NOISE_RAD, START_NOISE_RAD, 7), sim.lower, sim.upper)
                sim.data.qpos[sim.qadr] = q
                mujoco.mj_forward(sim.model, sim.data)
                views = sim.render()
                for camera in frames:
                    frames[camera].append(to_model_input(views[camera], (size, size), crops[camera]))
                joints.append(q)
                targets.append(sim.target.copy())
    finally:
        sim.close()
    return {"scene": np.stack(frames["scene"]), "wrist": np.stack(frames["wrist"]),
            "joints": np.asarray(joints, np.float32), "target": np.asarray(targets, np.float32)}


class SpatialSoftmax(nn.Module):
    """Feature maps (B, K, H, W) -> expected image coordinates of each map's softmax, (B, 2K) in [-1, 1]."""

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        b, k, h, w = features.shape
        weights = torch.softmax(features.flatten(2), dim=-1).view(b, k, h, w)
        ys = torch.linspace(-1, 1, h, device=features.device)
        xs = torch.linspace(-1, 1, w, device=features.device)
        return torch.cat([(weights.sum(2) * xs).sum(-1), (weights.sum(3) * ys).sum(-1)], dim=1)


class KeypointRegressor(nn.Module):
    """One conv trunk per camera -> keypoints -> MLP with the joint positions -> target xyz (box-normalized)."""

    def __init__(self, views: list[str], keypoints: int = 32):
        super().__init__()
        self.views = views
        self.trunks = nn.ModuleDict({v: nn.Sequential(
            nn.Conv2d(3, 16, 5, stride=2, padding=2), nn.ReLU(),
            nn.Conv2d(16, 32, 3, stride=2, padding=1), nn.ReLU(),
            nn.Conv2d(32, keypoints, 3, padding=1), SpatialSoftmax()) for v in views})
        self.head = nn.Sequential(nn.Linear(2 * keypoints * len(views) + 7, 256), nn.ReLU(),
                                  nn.Linear(256, 256), nn.ReLU(), nn.Linear(256, 3))

    def forward(self, images: dict[str, torch.Tensor], joints: torch.Tensor) -> torch.Tensor:
        keypoints = [self.trunks[v](images[v].permute(0, 3, 1, 2).float() / 255.0) for v in self.views]
        return self.head(torch.cat([*keypoints, joints], dim=1))


def train_and_score(train: dict, test: dict, views: list[str], steps: int, batch: int, seed: int = 0) -> dict:
    torch.manual_seed(seed)
    lo, hi = (torch.tensor(b, dtype=torch.float32) for b in TARGET_BOX)
    to_unit = lambda xyz: 2 * (xyz - lo) / (hi - lo) - 1          # noqa: E731
    from_unit = lambda u: lo + (u + 1) * (hi - lo) / 2             # noqa: E731
    model = KeypointRegressor(views)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=1e-4)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, steps)
    data = {k: torch.from_numpy(v) for k, v in train.items()}
    rng = np.random.default_rng(seed)
    start = time.time()
    for _ in range(steps):
        idx = torch.from_numpy(rng.integers(0, len(data["target"]), batch))
        prediction = model({v: data[v][idx] for v in views}, data["joints"][idx])
        loss = nn.functional.smooth_l1_loss(prediction, to_unit(data["target"][idx]), beta=0.05)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        schedule.step()
    model.eval()
    with torch.no_grad():
        estimate = from_unit(model({v: torch.from_numpy(test[v]) for v in views}, torch.from_numpy(test["joints"])))
    error = np.linalg.norm(estimate.numpy() - test["target"], axis=1)
    within = int((error < SUCCESS_RADIUS).sum())
    low, high = wilson_interval(within, len(error))
    return {"median_error_cm": float(np.median(error) * 100), "p90_error_cm": float(np.percentile(error, 90) * 100),
            "within_2cm": within, "tested": len(error), "share_within_2cm": within / len(error),
            "ci95": [low, high], "train_minutes": (time.time() - start) / 60}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--targets", type=int, nargs="+", default=[20, 200, 2000])
    parser.add_argument("--views", nargs="+", default=["scene", "scene,wrist"])
    parser.add_argument("--poses", type=int, default=8)
    parser.add_argument("--max-images", type=int, default=4000)
    parser.add_argument("--size", type=int, default=112)
    parser.add_argument("--steps", type=int, default=3000)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--output", default="artifacts/bench/panda_localization_probe.json")
    args = parser.parse_args()
    torch.set_num_threads(2)
    test = render_targets(TEST_SEEDS, 1, args.size)
    rows = []
    for n in args.targets:
        seeds = DEMONSTRATION_SEEDS if n == 20 else range(1000, 1000 + n)
        poses = max(1, min(args.poses, args.max_images // n))     # memory: at most max_images frames a view
        train = render_targets(seeds, poses, args.size)
        for views in args.views:
            row = {"targets": n, "views": views, "size": args.size, "poses": poses, "steps": args.steps,
                   **train_and_score(train, test, views.split(","), args.steps, args.batch)}
            rows.append(row)
            print(json.dumps(row), flush=True)
    with open(args.output, "w") as f:
        json.dump(rows, f, indent=1)


if __name__ == "__main__":
    main()
