"""Safety gate: every chunk and every command passes here before it can reach the robot.

Checks whole chunks (finite, shape) and clamps each command to the action limits and the
maximum step from the previous command. Counts what it rejected or changed, never silently.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


class ChunkRejected(ValueError):
    """A chunk that must not be executed; the message says why."""


@dataclass
class SafetyCounters:
    chunks_rejected: int = 0
    commands_clamped: int = 0
    nonfinite_commands: int = 0
    reasons: dict = field(default_factory=dict)

    def count(self, reason: str) -> None:
        self.reasons[reason] = self.reasons.get(reason, 0) + 1


class SafetyGate:
    def __init__(self, action_names: list[str], action_min, action_max, max_step=None):
        self.names = list(action_names)
        self.lo = np.asarray(action_min, dtype=np.float64)
        self.hi = np.asarray(action_max, dtype=np.float64)
        self.max_step = None if max_step is None else np.asarray(max_step, dtype=np.float64)
        self.counters = SafetyCounters()

    @classmethod
    def from_embodiment(cls, emb) -> "SafetyGate":
        lim = emb.config.limits
        return cls(emb.config.action.names, lim.action_min, lim.action_max, lim.max_step)

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

    def filter(self, action: np.ndarray, previous: np.ndarray | None) -> tuple[np.ndarray, list[str]]:
        """Clamp one command to the limits and the max step from `previous`; returns it and what changed."""
        a = np.asarray(action, dtype=np.float64)
        if a.shape != (self.dim,) or not np.all(np.isfinite(a)):
            self.counters.nonfinite_commands += 1
            self.counters.count("command:invalid")
            raise ChunkRejected(f"command of shape {a.shape} with non-finite or missing values")
        notes = []
        out = np.clip(a, self.lo, self.hi)
        if np.any(out != a):
            idx = np.nonzero(out != a)[0]
            notes.append("limit:" + ",".join(self.names[i] for i in idx))
        if self.max_step is not None and previous is not None:
            stepped = np.clip(out, previous - self.max_step, previous + self.max_step)
            if np.any(stepped != out):
                idx = np.nonzero(stepped != out)[0]
                notes.append("max_step:" + ",".join(self.names[i] for i in idx))
            out = stepped
        if notes:
            self.counters.commands_clamped += 1
            for n in notes:
                self.counters.count(n.split(":")[0])
        return out, notes
