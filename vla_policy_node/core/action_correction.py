"""A2C2-style per-step correction of a chunk's actions from the newest proprio (no rclpy, numpy).

A chunk computed from the observation at step t runs open loop for up to its horizon; by step
t + k the robot may not be where the chunk assumed it would be. A small residual network, run at
every control tick in the executor, adds to the scheduled action a correction computed from the
proprio now, the proprio the chunk was computed from, the scheduled action and k / horizon. It is
trained on the demonstrations with the base policy frozen (models/correction/training_correction.py).
Unlike the paper's head, it reads the newest proprio, not the newest image: the executor has the
measured state at every tick (a deterministic input in lockstep), not the camera. A few
microseconds per tick; no torch in the executor. The gripper's action is never corrected.

File: safetensors with the layers (w0, b0, w1, b1, w2, b2) and the input mean / std and output
scale (physical action units), and metadata: action and state names, horizon, gripper index.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

LAYERS = ("w0", "b0", "w1", "b1", "w2", "b2")


def correction_features(state_now: np.ndarray, state_origin: np.ndarray, action: np.ndarray, index: int,
                        horizon: int) -> np.ndarray:
    """(2 S + A + 1,): proprio change since the chunk's observation, proprio now, scheduled action
    (physical units) and the action's place in its chunk (index / horizon)."""
    now = np.asarray(state_now, dtype=np.float64)
    return np.concatenate([now - np.asarray(state_origin, dtype=np.float64), now,
                           np.asarray(action, dtype=np.float64), [index / max(horizon, 1)]])


@dataclass
class ActionCorrection:
    weights: dict                    # LAYERS -> arrays; in_mean, in_std (F,), out_scale (A,)
    action_names: list
    state_names: list
    gripper_index: int | None

    @classmethod
    def load(cls, path: str | Path, embodiment=None) -> "ActionCorrection":
        """The head at `path`; with `embodiment`, a ValueError naming the file unless its action and
        state names are the robot file's."""
        from safetensors import SafetensorError, safe_open
        from safetensors.numpy import load_file

        path = Path(path)
        try:
            weights = load_file(str(path))
            with safe_open(str(path), "np") as f:
                meta = json.loads(f.metadata()["correction"])
        except (OSError, KeyError, ValueError, TypeError, SafetensorError) as exc:
            raise ValueError(f"{path}: not an action-correction head: {exc}") from None
        missing = [k for k in (*LAYERS, "in_mean", "in_std", "out_scale") if k not in weights]
        if missing:
            raise ValueError(f"{path}: action-correction head lacks {missing}")
        head = cls(weights, list(meta["action_names"]), list(meta["state_names"]), meta.get("gripper_index"))
        if embodiment is not None:
            cfg = embodiment.config
            if head.action_names != list(cfg.action.names) or head.state_names != list(cfg.state.names):
                raise ValueError(f"{path}: trained for actions {head.action_names} and state {head.state_names}; "
                                 f"{embodiment.path} has {list(cfg.action.names)} and {list(cfg.state.names)}")
        return head

    def residual(self, features: np.ndarray) -> np.ndarray:
        """The correction (physical action units) to add to the scheduled action."""
        w = self.weights
        x = (np.asarray(features, dtype=np.float64) - w["in_mean"]) / w["in_std"]
        h = np.maximum(x @ w["w0"] + w["b0"], 0.0)
        h = np.maximum(h @ w["w1"] + w["b1"], 0.0)
        out = (h @ w["w2"] + w["b2"]) * w["out_scale"]
        if self.gripper_index is not None:
            out[self.gripper_index] = 0.0
        return out
