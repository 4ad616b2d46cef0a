"""Action and state normalization between physical units and model space.

Modes (per dimension, optionally per timestep of a chunk):
- quantile: 2 (x - q01) / (q99 - q01) - 1, clipped to [-1, 1] (Qwen-VLA, LingBot-VA, openpi)
- mean_std: (x - mean) / std
- min_max:  2 (x - min) / (max - min) - 1
Missing statistics never pass through silently: the constructor raises.
"""

from __future__ import annotations

import numpy as np

from .embodiment import REQUIRED_STATS

_EPS = 1e-8


class Normalizer:
    """Maps arrays of shape (..., dim) or (horizon, dim) with per-timestep stats."""

    def __init__(self, mode: str, stats: dict, clip: bool = True):
        if mode not in REQUIRED_STATS:
            raise ValueError(f"normalization mode '{mode}' unknown; use one of {sorted(REQUIRED_STATS)}")
        lo_key, hi_key = REQUIRED_STATS[mode]
        missing = [k for k in (lo_key, hi_key) if k not in stats or stats[k] is None]
        if missing:
            raise ValueError(f"normalization statistics missing {missing} for mode '{mode}'")
        self.mode = mode
        self.clip = clip and mode != "mean_std"
        a = np.asarray(stats[lo_key], dtype=np.float64)
        b = np.asarray(stats[hi_key], dtype=np.float64)
        if a.shape != b.shape:
            raise ValueError(f"normalization statistics {lo_key} {a.shape} and {hi_key} {b.shape} differ in shape")
        if mode == "mean_std":
            self.offset, self.scale = a, np.maximum(b, _EPS)
        else:
            self.offset, self.scale = (a + b) / 2.0, np.maximum((b - a) / 2.0, _EPS)
        self.dim = a.shape[-1]

    def _params(self, x: np.ndarray):
        if x.shape[-1] != self.dim:
            raise ValueError(f"expected last dimension {self.dim}, got array of shape {x.shape}")
        if self.offset.ndim == 2:  # per-timestep statistics: rows of x are chunk timesteps
            n = x.shape[-2]
            if n > self.offset.shape[0]:
                raise ValueError(f"per-timestep statistics cover {self.offset.shape[0]} steps, got {n}")
            return self.offset[:n], self.scale[:n]
        return self.offset, self.scale

    def normalize(self, x) -> np.ndarray:
        x = np.asarray(x, dtype=np.float64)
        offset, scale = self._params(x)
        y = (x - offset) / scale
        return np.clip(y, -1.0, 1.0) if self.clip else y

    def unnormalize(self, y) -> np.ndarray:
        y = np.asarray(y, dtype=np.float64)
        offset, scale = self._params(y)
        return y * scale + offset
