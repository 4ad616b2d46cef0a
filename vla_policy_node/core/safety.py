"""Safety gate: every chunk and every command passes here before it can reach the robot.

Chunks: finite values and shape, else rejected whole. Commands, in order:
  1. finite and of the action's dimension, else refused (the executor holds instead);
  2. action limits from the robot YAML (joint limits for joint spaces, cross-checked with the URDF);
  3. workspace box for the hand: ee_absolute targets are clamped into it; ee_delta steps are
     shortened so measured hand position + step stays inside (needs limits.ee_delta_scale_m);
     joint_position commands are checked after step 6 by forward kinematics of the robot file's
     chain (the tip link's position in its base link frame) and scaled back along the step from the
     previous command to the box's boundary (from outside the box, only moves that do not go further
     out pass; otherwise the previous command is held). The box comes first: stopping at its wall
     may brake harder than the acceleration limit (counted as 'workspace');
  4. position spaces: maximum deviation from the *measured* state (limits.max_deviation);
  5. maximum change from the previous command (limits.max_step; for delta spaces this bounds
     the acceleration);
  6. position spaces: velocity and acceleration limits (limits.joint_velocity_max /
     joint_acceleration_max mapped to the action's joints), finite differences at the control dt.
Every change is counted by reason, and the output is checked once more against the action
limits (`outside_limits` must stay 0: the proof that nothing unsafe left the gate).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from .motion_limiter import POSITION_SPACES


class ChunkRejected(ValueError):
    """A chunk or command that must not be executed; the message says why."""


@dataclass
class SafetyCounters:
    chunks_rejected: int = 0
    commands_checked: int = 0
    commands_clamped: int = 0
    nonfinite_commands: int = 0
    outside_limits: int = 0           # commands that left the gate outside limits (must be 0)
    reasons: dict = field(default_factory=dict)

    def count(self, reason: str) -> None:
        self.reasons[reason] = self.reasons.get(reason, 0) + 1

    def as_dict(self) -> dict:
        return dict(chunks_rejected=self.chunks_rejected, commands_checked=self.commands_checked,
                    commands_clamped=self.commands_clamped, nonfinite_commands=self.nonfinite_commands,
                    outside_limits=self.outside_limits, reasons=dict(self.reasons))


class SafetyGate:
    def __init__(self, action_names: list[str], action_min, action_max, max_step=None, space: str = "",
                 dt: float = 0.0, max_deviation=None, max_velocity=None, max_acceleration=None,
                 workspace=None, ee_delta_scale_m: float | None = None, tip_position=None):
        self.names = list(action_names)
        self.space, self.dt = space, dt
        self.lo = np.asarray(action_min, dtype=np.float64)
        self.hi = np.asarray(action_max, dtype=np.float64)
        arr = (lambda v: None if v is None else np.asarray(v, dtype=np.float64))
        self.max_step, self.max_deviation = arr(max_step), arr(max_deviation)
        self.max_velocity, self.max_acceleration = arr(max_velocity), arr(max_acceleration)
        self.workspace = None if workspace is None else (arr(workspace[0]), arr(workspace[1]))
        self.ee_delta_scale_m = ee_delta_scale_m
        self.tip_position = tip_position         # joint vector (action order) -> tip xyz (m), for the workspace
        self.counters = SafetyCounters()

    @classmethod
    def from_embodiment(cls, emb) -> "SafetyGate":
        """The gate of a robot file (its loader has refused non-finite limits)."""
        cfg = emb.config
        lim, action = cfg.limits, cfg.action
        vel = acc = None
        if action.space in ("joint_position",) and lim.joint_names:
            index = {n: i for i, n in enumerate(lim.joint_names)}

            def per_action(values):
                if not values:
                    return None
                return [values[index[n]] if n in index else np.inf for n in action.names]
            vel, acc = per_action(lim.joint_velocity_max), per_action(lim.joint_acceleration_max)
        ws = (lim.workspace.min, lim.workspace.max) if lim.workspace else None
        tip = None
        if ws is not None and action.space == "joint_position":      # validation guarantees cfg.kinematics
            from .embodiment import urdf_file
            from .kinematics import KinematicChain
            kin = cfg.kinematics
            chain = KinematicChain(urdf_file(kin.urdf), kin.base_link, kin.tip_link, list(action.names))
            tip = (lambda q: chain.fk(q)[0])
        return cls(action.names, lim.action_min, lim.action_max, lim.max_step, space=action.space,
                   dt=action.dt, max_deviation=lim.max_deviation, max_velocity=vel, max_acceleration=acc,
                   workspace=ws, ee_delta_scale_m=lim.ee_delta_scale_m, tip_position=tip)

    @property
    def dim(self) -> int:
        return len(self.names)

    def check_chunk(self, actions: np.ndarray, horizon: int, dim: int) -> np.ndarray:
        """Validate a flat or 2-D chunk; returns it as (horizon, dim) or raises ChunkRejected."""
        arr = np.asarray(actions, dtype=np.float64)
        reason = None
        if dim != self.dim:
            reason = f"action_dim {dim} does not match the embodiment's {self.dim} ({', '.join(self.names)})"
        elif arr.size != horizon * dim or horizon == 0:
            reason = f"{arr.size} values cannot form horizon {horizon} x dim {dim}"
        elif not np.all(np.isfinite(arr)):
            reason = "non-finite values"
        if reason is not None:
            self.counters.chunks_rejected += 1
            self.counters.count("chunk:" + reason.split(" (")[0])
            raise ChunkRejected(reason)
        return arr.reshape(horizon, dim)

    def _clip(self, out: np.ndarray, lo, hi, reason: str, notes: list) -> np.ndarray:
        clipped = np.clip(out, lo, hi)
        changed = np.nonzero(np.abs(clipped - out) > 1e-12)[0]
        if len(changed):
            notes.append(f"{reason}:" + ",".join(self.names[i] for i in changed))
        return clipped

    def _outside(self, q: np.ndarray) -> float:
        """Distance (m) of the tip from the workspace box for joint vector q (0 inside)."""
        p = np.asarray(self.tip_position(q), dtype=np.float64)
        return float(np.linalg.norm(p - np.clip(p, *self.workspace)))

    def _keep_tip_inside(self, q: np.ndarray, reference: np.ndarray | None, notes: list) -> np.ndarray:
        """q, or the largest part of the step reference -> q whose tip stays in the box (bisection to
        1/4096 of the step); from outside the box, q when it does not move the tip further out, else
        the reference. Without a reference a command outside the box is refused."""
        if self._outside(q) <= 1e-9:
            return q
        if reference is None:
            self.counters.count("workspace")
            raise ChunkRejected("command's tip outside limits.workspace and no previous command or measured state")
        ref = np.asarray(reference, dtype=np.float64)
        notes.append("workspace:tip")
        d_ref = self._outside(ref)
        if d_ref > 1e-9:
            return q if self._outside(q) <= d_ref else ref.copy()
        inside, outside = 0.0, 1.0
        for _ in range(12):
            mid = (inside + outside) / 2
            if self._outside(ref + mid * (q - ref)) <= 1e-9:
                inside = mid
            else:
                outside = mid
        return ref + inside * (q - ref)

    def filter(self, action: np.ndarray, previous: np.ndarray | None, measured: np.ndarray | None = None,
               previous2: np.ndarray | None = None, measured_ee: np.ndarray | None = None,
               ) -> tuple[np.ndarray, list[str]]:
        """One command through the gate. `previous`/`previous2`: the last two commands sent;
        `measured`: the measured state in action coordinates (position spaces); `measured_ee`:
        the measured hand position (m, robot base frame) for the workspace check.
        Returns the safe command and what changed; raises ChunkRejected for an invalid one."""
        a = np.asarray(action, dtype=np.float64)
        self.counters.commands_checked += 1
        if a.shape != (self.dim,) or not np.all(np.isfinite(a)):
            self.counters.nonfinite_commands += 1
            self.counters.count("command:invalid")
            raise ChunkRejected(f"command of shape {a.shape} with non-finite or missing values")
        notes: list[str] = []
        out = self._clip(a, self.lo, self.hi, "limit", notes)
        position = self.space in POSITION_SPACES
        if self.workspace is not None:
            lo, hi = self.workspace
            if self.space == "ee_absolute":
                out[:3] = self._clip(out[:3], lo, hi, "workspace", notes)
            elif self.space == "ee_delta" and measured_ee is not None and self.ee_delta_scale_m:
                s = self.ee_delta_scale_m
                ee = np.asarray(measured_ee, dtype=np.float64)[:3]
                out[:3] = self._clip(out[:3], np.minimum((lo - ee) / s, 0.0), np.maximum((hi - ee) / s, 0.0),
                                     "workspace", notes)
        if position and self.max_deviation is not None and measured is not None:
            m = np.asarray(measured, dtype=np.float64)
            out = self._clip(out, m - self.max_deviation, m + self.max_deviation, "deviation", notes)
        if self.max_step is not None and previous is not None:
            out = self._clip(out, previous - self.max_step, previous + self.max_step, "max_step", notes)
        if position and previous is not None and self.dt > 0:
            if self.max_velocity is not None:
                dv = self.max_velocity * self.dt
                out = self._clip(out, previous - dv, previous + dv, "velocity", notes)
            if self.max_acceleration is not None and previous2 is not None:
                da = self.max_acceleration * self.dt ** 2
                centre = 2 * previous - previous2
                out = self._clip(out, centre - da, centre + da, "acceleration", notes)
            out = np.clip(out, self.lo, self.hi)   # the acceleration bound must never undo the limits
        if self.tip_position is not None:
            out = self._keep_tip_inside(out, previous if previous is not None else measured, notes)
        if notes:
            self.counters.commands_clamped += 1
            for n in notes:
                self.counters.count(n.split(":")[0])
        if not np.all(np.isfinite(out)):            # e.g. a non-finite measured state: never sent
            self.counters.nonfinite_commands += 1
            self.counters.count("command:nonfinite_result")
            raise ChunkRejected("command not finite after the gate (non-finite measured state or previous command)")
        if np.any(out < self.lo - 1e-9) or np.any(out > self.hi + 1e-9):
            self.counters.outside_limits += 1
        return out, notes
