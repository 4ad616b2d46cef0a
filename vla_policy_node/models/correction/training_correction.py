"""`vla-train-correction`: the A2C2-style per-step correction head of a base policy (core/action_correction.py).

The base policy (any backend, frozen) predicts a chunk from every `--stride`-th observation of the
demonstrations; for each of the chunk's steps k that the episode reaches, a sample pairs the
features the executor will have at step t + k (the proprio then and at t, the chunk's action k,
k / horizon) with the residual the demonstration asks for (its action at t + k minus the chunk's;
the gripper's left at 0). A three-layer MLP regresses it (torch here; numpy in the executor).
Written as one safetensors file the executor loads with `correction:=<file>`.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch


def build_argparser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="vla-train-correction", description=__doc__.splitlines()[0])
    p.add_argument("--base", required=True, help="checkpoint of the base policy (its chunks are corrected)")
    p.add_argument("--data", nargs="+", required=True, help="demonstrations: evaluator output folders or bags")
    p.add_argument("--robot", default="metaworld_sawyer")
    p.add_argument("--output", required=True, help="the head's file (.safetensors)")
    p.add_argument("--stride", type=int, default=2, help="a base chunk every STRIDE observations")
    p.add_argument("--batch", type=int, default=32, help="observations per base-policy call")
    p.add_argument("--hidden", type=int, default=128)
    p.add_argument("--steps", type=int, default=4000)
    p.add_argument("--batch-size", type=int, default=512)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--seed", type=int, default=0)
    return p


def base_samples(backend, episodes: list, stride: int, batch: int, camera: str) -> tuple[np.ndarray, np.ndarray]:
    """(features (N, F), residual targets (N, A)) from the base policy's chunks on the episodes."""
    from ...core.action_correction import correction_features
    from ..backend import PolicyInput

    features, targets = [], []
    for ep in episodes:
        backend.reset(ep.instruction, seed=ep.seed)
        starts = list(range(0, len(ep.actions), stride))
        for i in range(0, len(starts), batch):
            ts = starts[i:i + batch]
            outs = backend.predict_batch([PolicyInput(float(ep.stamps[t]), ep.instruction,
                                                      {camera: ep.frames[camera][t]}, ep.states[t].astype(np.float64))
                                          for t in ts])
            for t, out in zip(ts, outs):
                horizon = len(out.actions)
                for k in range(min(horizon, len(ep.actions) - t)):
                    features.append(correction_features(ep.states[t + k], ep.states[t], out.actions[k], k, horizon))
                    targets.append(ep.actions[t + k] - out.actions[k])
    return np.asarray(features, np.float32), np.asarray(targets, np.float32)


def fit(features: np.ndarray, targets: np.ndarray, gripper_index: int | None, hidden: int, steps: int,
        batch_size: int, lr: float, seed: int) -> tuple[dict, list[float]]:
    """The MLP's weights (numpy, with input / output scaling) and its loss every 100 steps."""
    if gripper_index is not None:
        targets = targets.copy()
        targets[:, gripper_index] = 0.0
    in_mean, in_std = features.mean(0), features.std(0) + 1e-6
    out_scale = targets.std(0) + 1e-6
    x = torch.from_numpy((features - in_mean) / in_std)
    y = torch.from_numpy(targets / out_scale)
    torch.manual_seed(seed)
    net = torch.nn.Sequential(torch.nn.Linear(x.shape[1], hidden), torch.nn.ReLU(), torch.nn.Linear(hidden, hidden),
                              torch.nn.ReLU(), torch.nn.Linear(hidden, y.shape[1]))
    opt = torch.optim.AdamW(net.parameters(), lr=lr, weight_decay=1e-4)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, steps)
    gen = torch.Generator().manual_seed(seed)
    losses = []
    for step in range(steps):
        idx = torch.randint(0, len(x), (batch_size,), generator=gen)
        loss = torch.nn.functional.mse_loss(net(x[idx]), y[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
        if step % 100 == 0:
            losses.append(float(loss.detach()))
    layers = [m for m in net if isinstance(m, torch.nn.Linear)]
    weights = {}
    for i, layer in enumerate(layers):
        weights[f"w{i}"] = layer.weight.detach().numpy().T.copy()
        weights[f"b{i}"] = layer.bias.detach().numpy().copy()
    weights.update(in_mean=in_mean, in_std=in_std, out_scale=out_scale)
    return {k: np.ascontiguousarray(v, dtype=np.float32) for k, v in weights.items()}, losses


def main(argv=None) -> int:
    from safetensors.numpy import save_file

    from ...core.embodiment import load_robot
    from ...data.dataset import load_dataset
    from ..registry import make_backend

    args = build_argparser().parse_args(argv)
    started = time.time()
    robot = load_robot(args.robot)
    episodes = [e for d in args.data for e in load_dataset(d, robot)]
    if not episodes:
        raise SystemExit(f"vla-train-correction: no usable episodes in {args.data}")
    backend = make_backend("auto", robot, checkpoint=args.base)
    camera = getattr(backend.config, "camera", robot.config.cameras[0].name)
    features, targets = base_samples(backend, episodes, args.stride, args.batch, camera)
    backend.close()
    sampled = time.time()
    gripper = robot.config.action.gripper.index if robot.config.action.gripper else None
    weights, losses = fit(features, targets, gripper, args.hidden, args.steps, args.batch_size, args.lr, args.seed)
    out = Path(args.output)
    out.parent.mkdir(parents=True, exist_ok=True)
    meta = {"action_names": list(robot.config.action.names), "state_names": list(robot.config.state.names),
            "gripper_index": gripper, "base": str(args.base), "episodes": len(episodes), "samples": int(len(targets)),
            "stride": args.stride, "steps": args.steps, "loss_history": losses,
            "residual_rms_before": float(np.sqrt((targets ** 2).mean())),
            "base_prediction_s": round(sampled - started, 1), "wall_time_s": round(time.time() - started, 1)}
    save_file(weights, str(out), metadata={"correction": json.dumps(meta)})
    print(f"correction head written to {out}: {len(targets)} samples from {len(episodes)} episodes, loss "
          f"{losses[0]:.3f} -> {losses[-1]:.3f} (targets scaled to unit variance), {meta['wall_time_s']:.0f} s")
    return 0
