"""An inverse-dynamics model (IDM): the action at step k read from how the proprio moved around k.

The control for learning from action-free video without imagining anything (`vla-train
--label-videos idm`): fitted on the action-labelled episodes, it labels the action-free ones, and
the policy then trains on all of them as if they had been demonstrations. Its input is the
proprio of steps k - past .. k + future as changes from step k (robot file units: m, joint
units), plus the proprio at k; its output the action at k in the robot file's action units.
Small on purpose: a two-layer MLP on a few numbers, fitted in seconds on a CPU.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np
import torch
from torch import nn

from ...data.episode import Episode


@dataclass
class InverseDynamicsConfig:
    past: int = 1                  # proprio steps before k in the input
    future: int = 3                # proprio steps after k in the input
    hidden_size: int = 256
    steps: int = 3000              # optimizer steps
    batch_size: int = 512
    lr: float = 1e-3
    seed: int = 0


def proprio_windows(states: np.ndarray, past: int, future: int) -> np.ndarray:
    """(T, (past + 1 + future + 1) * D) inputs: states k-past..k+future minus state k (the episode's
    ends repeated), then state k itself. states: (T, D) in the robot file's state order."""
    t = len(states)
    offsets = np.arange(-past, future + 1)
    rows = np.clip(np.arange(t)[:, None] + offsets[None, :], 0, t - 1)        # (T, W)
    deltas = states[rows] - states[:, None, :]                                 # (T, W, D)
    return np.concatenate([deltas.reshape(t, -1), states], axis=1).astype(np.float32)


class InverseDynamicsModel(nn.Module):
    """proprio window -> action at k; inputs and outputs standardized with the fitting data's statistics."""

    def __init__(self, in_dim: int, action_dim: int, cfg: InverseDynamicsConfig):
        super().__init__()
        self.cfg = cfg
        self.net = nn.Sequential(nn.Linear(in_dim, cfg.hidden_size), nn.GELU(),
                                 nn.Linear(cfg.hidden_size, cfg.hidden_size), nn.GELU(),
                                 nn.Linear(cfg.hidden_size, action_dim))
        for name, size in (("x_mean", in_dim), ("x_std", in_dim), ("y_mean", action_dim), ("y_std", action_dim)):
            self.register_buffer(name, torch.zeros(size) if "mean" in name else torch.ones(size))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net((x - self.x_mean) / self.x_std) * self.y_std + self.y_mean

    @torch.no_grad()
    def label(self, episode: Episode) -> np.ndarray:
        """(T, action_dim) actions read from an episode's proprio."""
        x = torch.as_tensor(proprio_windows(episode.states, self.cfg.past, self.cfg.future))
        return self(x).numpy().astype(np.float32)


def fit_inverse_dynamics(episodes: list[Episode], cfg: InverseDynamicsConfig | None = None) -> InverseDynamicsModel:
    """An IDM fitted on the action-labelled `episodes` (action-free ones are refused)."""
    cfg = cfg or InverseDynamicsConfig()
    if not episodes or any(ep.action_free for ep in episodes):
        raise ValueError("an inverse-dynamics model is fitted on action-labelled episodes only (got "
                         f"{sum(ep.action_free for ep in episodes)} action-free of {len(episodes)})")
    x = torch.as_tensor(np.concatenate([proprio_windows(ep.states, cfg.past, cfg.future) for ep in episodes]))
    y = torch.as_tensor(np.concatenate([ep.actions for ep in episodes]).astype(np.float32))
    torch.manual_seed(cfg.seed)
    model = InverseDynamicsModel(x.shape[1], y.shape[1], cfg)
    model.x_mean.copy_(x.mean(0)), model.x_std.copy_(x.std(0).clamp(min=1e-6))
    model.y_mean.copy_(y.mean(0)), model.y_std.copy_(y.std(0).clamp(min=1e-6))
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=1e-4)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, cfg.steps)
    gen = torch.Generator().manual_seed(cfg.seed)
    for _ in range(cfg.steps):
        idx = torch.randint(0, len(x), (min(cfg.batch_size, len(x)),), generator=gen)
        loss = (((model(x[idx]) - y[idx]) / model.y_std) ** 2).mean()     # in standardized action units
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
    return model.eval()


def label_episodes(model: InverseDynamicsModel, episodes: list[Episode]) -> list[Episode]:
    """Action-free episodes given the IDM's actions (marked extra["actions_from"] = "inverse_dynamics");
    labelled ones returned as they are."""
    out = []
    for ep in episodes:
        if ep.action_free:
            ep = replace(ep, actions=model.label(ep), action_free=False,
                         extra={**ep.extra, "actions_from": "inverse_dynamics"})
        out.append(ep)
    return out


def action_error(model: InverseDynamicsModel, episodes: list[Episode]) -> dict:
    """Mean absolute error of the IDM's actions on labelled episodes, per action dimension and overall."""
    pred = np.concatenate([model.label(ep) for ep in episodes])
    true = np.concatenate([ep.actions for ep in episodes])
    per_dim = np.abs(pred - true).mean(0)
    return {"mae": float(per_dim.mean()), "mae_per_dim": [float(v) for v in per_dim], "rows": int(len(true))}
