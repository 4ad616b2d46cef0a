"""Simulated inference delay for lockstep runs (DESIGN section 8d; the RTC benchmark's protocol).

A chunk computed from the observation at control step t is released to the executor at step
t + d, while the simulator keeps stepping on what the executor plays meanwhile (async modes: the
plan in flight; sync: the hold). The delay d (control steps) is fixed (one value) or drawn per
request from a list, by a generator seeded with (seed, task, episode seed): an episode's delays
are the same on every run, whatever the machine's speed. A robot's measured latency can be
rehearsed this way before a free-running or physical run.
"""

from __future__ import annotations

import zlib
from collections.abc import Sequence

import numpy as np


class SimulatedDelay:
    def __init__(self, steps: Sequence[int], seed: int = 0):
        values = [int(s) for s in steps]
        if not values or any(v < 0 for v in values) or any(v != s for v, s in zip(values, steps)):
            raise ValueError(f"simulated_delay_steps: {list(steps)}: give one or more whole numbers of control "
                             "steps >= 0")
        self.steps, self.seed = values, int(seed)
        self.rng = np.random.default_rng(self.seed)

    @property
    def fixed(self) -> bool:
        return len(set(self.steps)) == 1

    def start_episode(self, task: str = "", seed: int = 0) -> None:
        """Restart the draws for an episode (task name and episode seed)."""
        self.rng = np.random.default_rng([self.seed, zlib.crc32(task.encode()), int(seed)])

    def draw(self) -> int:
        """The delay (control steps) of the next request."""
        return self.steps[0] if self.fixed else int(self.rng.choice(self.steps))

    def describe(self) -> str:
        return f"d={self.steps[0]}" if self.fixed else f"d drawn from {self.steps} (seed {self.seed})"
