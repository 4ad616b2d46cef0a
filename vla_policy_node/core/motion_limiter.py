"""Acceleration-bounded smoothing of a command stream at the control rate.

Two kinds of commands:
- ``position`` (joint_position, ee_absolute): the output tracks the target with velocity
  <= max_velocity and acceleration <= max_acceleration, braking early enough not to overshoot
  (time-optimal bang-bang profile per dimension);
- ``velocity`` (joint_delta, ee_delta, base_velocity: the command is a displacement per
  control period): the output's change per period is bounded, i.e. acceleration is bounded.

Holding still is a target too: a held position (brake with bounded deceleration, no stop at
infinite deceleration) or zero velocity. Dimensions without a bound pass through unchanged
(e.g. the gripper). Units follow the action space; dt in s.
"""

from __future__ import annotations

import numpy as np

POSITION_SPACES = ("joint_position", "ee_absolute")


class MotionLimiter:
    def __init__(self, dt: float, kind: str, max_velocity=None, max_acceleration=None):
        if kind not in ("position", "velocity"):
            raise ValueError(f"motion limiter kind '{kind}' unknown (position | velocity)")
        self.dt, self.kind = dt, kind
        self.vmax = None if max_velocity is None else np.asarray(max_velocity, dtype=np.float64)
        self.amax = None if max_acceleration is None else np.asarray(max_acceleration, dtype=np.float64)
        self.y: np.ndarray | None = None      # last output
        self.v: np.ndarray | None = None      # its rate of change (position kind), units/s

    @classmethod
    def for_space(cls, space: str, dt: float, max_velocity=None, max_acceleration=None) -> "MotionLimiter":
        return cls(dt, "position" if space in POSITION_SPACES else "velocity", max_velocity, max_acceleration)

    def reset(self, y=None) -> None:
        """Start from output `y` at rest (None: the first target is passed through)."""
        self.y = None if y is None else np.asarray(y, dtype=np.float64).copy()
        self.v = None if y is None else np.zeros_like(self.y)

    def step(self, target) -> np.ndarray:
        target = np.asarray(target, dtype=np.float64)
        if self.y is None:
            self.y, self.v = target.copy(), np.zeros_like(target)
            return self.y.copy()
        dt = self.dt
        if self.kind == "velocity":
            out = target.copy()
            if self.amax is not None:
                bound = np.where(np.isfinite(self.amax), self.amax * dt, np.inf)
                out = self.y + np.clip(target - self.y, -bound, bound)
            self.y = out
            return out.copy()
        error = target - self.y
        v_des = error / dt
        if self.amax is not None:
            # brake in time, in discrete steps: from v = a*dt*(n + f) the velocities v, v - a*dt, ...
            # cover a*dt^2*((n + 1)*f + n(n + 1)/2) before stopping; pick the largest such v <= |e|
            a = np.where(np.isfinite(self.amax), self.amax, 1e300)
            e_units = np.abs(error) / (a * dt * dt)
            n = np.floor((np.sqrt(1.0 + 8.0 * e_units) - 1.0) / 2.0)
            f = np.clip((e_units - n * (n + 1) / 2.0) / (n + 1), 0.0, 1.0)
            brake = a * dt * (n + f)
            v_des = np.sign(error) * np.minimum(np.abs(v_des), brake)
        if self.vmax is not None:
            v_des = np.clip(v_des, -self.vmax, self.vmax)
        v = v_des
        if self.amax is not None:
            bound = np.where(np.isfinite(self.amax), self.amax * dt, np.inf)
            v = self.v + np.clip(v_des - self.v, -bound, bound)
        step = v * dt
        # never step past the target on a dimension that is already there
        step = np.where(np.abs(step) > np.abs(error), error, step)
        self.y = self.y + step
        self.v = step / dt
        return self.y.copy()

    def hold(self) -> np.ndarray | None:
        """One step towards standing still: brake a moving position, decay a velocity to 0."""
        if self.y is None:
            return None
        if self.kind == "velocity":
            return self.step(np.zeros_like(self.y))
        if self.amax is None:
            self.v = np.zeros_like(self.y)
            return self.y.copy()
        # target = where the robot stops when braking at max deceleration from the current velocity
        stop = self.y + np.sign(self.v) * self.v ** 2 / (2.0 * np.where(self.amax > 0, self.amax, np.inf))
        return self.step(stop)
