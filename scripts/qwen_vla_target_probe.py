"""Does a Qwen-VLA checkpoint's backbone see where the Panda's target is?

The Panda reach policy fails if its backbone's picture of the scene does not hold the target's place,
or if it holds it and the action expert does not use it. This probe tells the two apart: the
checkpoint's backbone, frozen, reads the scene view exactly as the policy does (the robot file's crop,
224 px, resized to the checkpoint's image size, the Panda's embodiment prompt) and a ridge regression
from its image-token states plus the joint positions to the target (m, base frame) is fitted on the
start frames of 200 training targets (seeds 1000-1199, the stage's demonstrations, 8 start poses each)
and scored on 200 unseen seeds 300-499, as `panda_localization_probe.py` scores its CNN; beside it a
two-layer MLP on the same features (a place held non-linearly). The same probes on the raw pixels
(the image-size frame) and on the joint positions alone are the floors.

    python scripts/qwen_vla_target_probe.py checkpoints/qwen_vla_sawyer_panda artifacts/train/qwen_vla_panda_reach
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import torch
from sklearn.linear_model import RidgeCV

sys.path.insert(0, str(Path(__file__).resolve().parent))
from panda_localization_probe import TEST_SEEDS, render_targets  # noqa: E402

from vla_policy_node.bench.leaderboard import wilson_interval  # noqa: E402
from vla_policy_node.core.embodiment import load_robot  # noqa: E402
from vla_policy_node.models.components.vae import resize_frames  # noqa: E402
from vla_policy_node.models.qwen_vla.policy_qwen_vla import QwenVLAPipeline  # noqa: E402
from vla_policy_node.sim.panda_reach_sim import SUCCESS_RADIUS  # noqa: E402

TRAIN_SEEDS = range(1000, 1200)
ROBOT = "panda_ros2_control"


@torch.no_grad()
def image_token_states(pipeline: QwenVLAPipeline, frames: np.ndarray, batch: int = 64) -> np.ndarray:
    """(N, tokens x hidden): the backbone's last hidden states at the scene view's image tokens."""
    cfg = pipeline.config
    prompt = load_robot(ROBOT).config.render_prompt("reach the red target",
                                                    chunk_size=cfg.embodiments[ROBOT]["horizon"])
    out = []
    for i in range(0, len(frames), batch):
        views = resize_frames(frames[i: i + batch], cfg.image_size)[:, None]      # (B, 1, S, S, 3)
        hidden, _ = pipeline.condition(views, [prompt] * len(views), ("scene",))
        ids = pipeline.tokenizer.batch([prompt] * len(views), [("scene",)] * len(views), pipeline.device)["input_ids"]
        picked = hidden[ids == cfg.image_token_id].reshape(len(views), -1)
        out.append(picked.float().cpu().numpy())
    return np.concatenate(out)


def mlp_estimate(train: np.ndarray, target: np.ndarray, test: np.ndarray, steps: int = 3000) -> np.ndarray:
    """A two-layer MLP (256 wide, AdamW, cosine) from standardized features to the target (m)."""
    torch.manual_seed(0)
    x, y, t = (torch.from_numpy(np.asarray(a, np.float32)) for a in (train, target, test))
    centre, spread = y.mean(0), y.std(0)
    model = torch.nn.Sequential(torch.nn.Linear(x.shape[1], 256), torch.nn.ReLU(), torch.nn.Dropout(0.1),
                                torch.nn.Linear(256, 256), torch.nn.ReLU(), torch.nn.Linear(256, 3))
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=1e-2)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, steps)
    gen = torch.Generator().manual_seed(0)
    for _ in range(steps):
        idx = torch.randint(0, len(x), (64,), generator=gen)
        loss = torch.nn.functional.mse_loss(model(x[idx]), (y[idx] - centre) / spread)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        schedule.step()
    model.eval()
    with torch.no_grad():
        return (model(t) * spread + centre).numpy()


def score(features: tuple[np.ndarray, np.ndarray], targets: tuple[np.ndarray, np.ndarray]) -> dict:
    """Ridge (penalty chosen by cross-validation on the training set) and the MLP, fitted on the training
    set and scored on the test set: median error (cm) and the share within the 2 cm success radius."""
    train, test = features
    mean, std = train.mean(0), train.std(0) + 1e-6
    train, test = (train - mean) / std, (test - mean) / std
    ridge = RidgeCV(alphas=np.logspace(-6, 4, 21)).fit(train, targets[0])
    row = {"ridge_alpha": float(ridge.alpha_)}
    for name, estimate in (("ridge", ridge.predict(test)), ("mlp", mlp_estimate(train, targets[0], test))):
        error = np.linalg.norm(estimate - targets[1], axis=1)
        within = int((error < SUCCESS_RADIUS).sum())
        row[name] = {"median_error_cm": float(np.median(error) * 100), "within_2cm": within, "tested": len(error),
                     "ci95": list(wilson_interval(within, len(error)))}
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("checkpoints", nargs="+")
    parser.add_argument("--poses", type=int, default=8)
    parser.add_argument("--output", default="artifacts/bench/qwen_vla_target_probe.json")
    args = parser.parse_args()
    torch.set_num_threads(2)
    train, test = render_targets(TRAIN_SEEDS, args.poses, 224), render_targets(TEST_SEEDS, 1, 224)
    targets = (train["target"], test["target"])
    size = QwenVLAPipeline.from_pretrained(args.checkpoints[0]).config.image_size
    pixels = tuple(resize_frames(d["scene"], size).reshape(len(d["scene"]), -1).float().numpy() for d in (train, test))
    rows = [{"features": "joint positions only", **score((train["joints"], test["joints"]), targets)},
            {"features": f"raw pixels ({size} px) + joints",
             **score(tuple(np.hstack([p, d["joints"]]) for p, d in zip(pixels, (train, test))), targets)}]
    for checkpoint in args.checkpoints:
        pipeline = QwenVLAPipeline.from_pretrained(checkpoint)
        states = tuple(np.hstack([image_token_states(pipeline, d["scene"]), d["joints"]]) for d in (train, test))
        rows.append({"features": f"{checkpoint} image tokens + joints", **score(states, targets)})
    for row in rows:
        print(json.dumps(row), flush=True)
    Path(args.output).parent.mkdir(parents=True, exist_ok=True)
    Path(args.output).write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
