"""Measured inference delay of the policy, as the executor sees it.

The delay of one chunk is what it really cost the robot: arrival time minus the capture time
t0 of the observation it was computed from (s), i.e. how much of the chunk was already in the
past when it could start. Estimates are a percentile over a sliding window of recent chunks with
the first `warmup` chunks excluded (model warm-up, caches, JIT), never a running maximum: one
slow outlier must not make the executor request chunks early forever.
"""

from __future__ import annotations

from collections import deque

import numpy as np


class LatencyEstimator:
    def __init__(self, window: int = 50, warmup: int = 3, percentile: float = 95.0, default_s: float = 0.2):
        if not 0.0 < percentile <= 100.0:
            raise ValueError(f"latency percentile {percentile} must be in (0, 100]")
        self.window, self.warmup, self.percentile, self.default_s = window, warmup, percentile, default_s
        self._recent: deque[float] = deque(maxlen=window)
        self.seen = 0                 # chunks observed, warm-up included

    def add(self, delay_s: float) -> None:
        self.seen += 1
        if self.seen > self.warmup:
            self._recent.append(max(0.0, float(delay_s)))

    def reset(self) -> None:
        """Forget the window (e.g. another checkpoint was loaded); warm-up applies again."""
        self._recent.clear()
        self.seen = 0

    def __len__(self) -> int:
        return len(self._recent)

    def estimate(self, percentile: float | None = None) -> float:
        """Delay (s) at the percentile over the window; `default_s` until a measurement exists."""
        if not self._recent:
            return self.default_s
        return float(np.percentile(np.fromiter(self._recent, float), percentile or self.percentile))

    def steps(self, dt: float, percentile: float | None = None) -> int:
        """The delay in control periods, rounded up: actions of a new chunk that will be stale."""
        return int(np.ceil(self.estimate(percentile) / dt - 1e-9))
