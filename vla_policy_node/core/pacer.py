"""The pace a free-running simulation keeps (no rclpy).

The simulation steps on a timer at its step / the requested real-time factor. When a step costs
more than that period the loop cannot keep the pace; the timer then fires as soon as the previous
step is done and realigns to its period after a stall rather than firing the missed steps in a
burst (rcl's timer semantics), so the simulation runs evenly slower; sim time itself never skips,
it advances one step per step. This meter measures the factor reached over the recent steps.
"""

from __future__ import annotations

import time
from collections import deque
from typing import Callable


class PaceMeter:
    def __init__(self, requested: float, sim_step_s: float, window: int = 200,
                 clock: Callable[[], float] = time.monotonic):
        if not requested > 0:
            raise ValueError(f"real_time_factor {requested} must be > 0")
        self.requested, self.sim_step_s, self.clock = float(requested), float(sim_step_s), clock
        self.step_times: deque[float] = deque(maxlen=window)     # wall s at each step

    def on_step(self) -> None:
        self.step_times.append(self.clock())

    @property
    def full(self) -> bool:
        """The window holds as many steps as it can (a figure over the whole window)."""
        return len(self.step_times) == self.step_times.maxlen

    def reached(self) -> float | None:
        """Sim seconds per wall second over the recent steps (None before two steps)."""
        if len(self.step_times) < 2:
            return None
        span = self.step_times[-1] - self.step_times[0]
        return (len(self.step_times) - 1) * self.sim_step_s / span if span > 0 else None

    def deficit(self) -> float | None:
        """Share of the requested factor not reached (0 when on pace)."""
        reached = self.reached()
        return None if reached is None else max(0.0, 1.0 - reached / self.requested)
