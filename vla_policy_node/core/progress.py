"""Stage progress of a MetaWorld episode and its progress score (LingBot-VA style), no rclpy.

Stages, from the privileged simulator state (MetaWorld's 39-D observation: hand xyz at [0:3], the
manipulated object's xyz at [4:7]) and the success flag:
  approach  the hand comes within `approach_radius_m` of the object's reported position
  contact   the object has moved at least `contact_displacement_m` from where it was at reset
            (the robot acted on it: the button went in, the drawer/door/window/plate moved)
  complete  the simulator's success flag
A stage counts as reached when it or a later one is reached. A stage is lost when its condition
stops holding before the next stage is reached (approach: the hand goes back beyond
`approach_release_m`; contact: the object returns to within half the displacement; complete:
the success flag drops); reaching it again is a retry. Score per stage: 1 reached on the first
try, 0.5 reached after a retry, 0 not reached; the episode's score is the mean over stages. With
the default protocol (the episode ends at the first success) `complete` cannot be retried.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

STAGES = ("approach", "contact", "complete")


@dataclass(frozen=True)
class StageThresholds:
    approach_radius_m: float = 0.12      # hand-object distance that counts as approached
    approach_release_m: float = 0.15     # ... and as having backed off again (hysteresis)
    contact_displacement_m: float = 0.01  # object travel from its reset position that counts as contact

    def __post_init__(self):
        if not 0 < self.approach_radius_m < self.approach_release_m:
            raise ValueError(f"stage thresholds: need 0 < approach_radius_m ({self.approach_radius_m}) < "
                             f"approach_release_m ({self.approach_release_m})")
        if not self.contact_displacement_m > 0:
            raise ValueError(f"stage thresholds: contact_displacement_m must be > 0, got {self.contact_displacement_m}")


class StageTracker:
    """Feed every simulator state of one episode in time order; read `score` and `attempts`."""

    def __init__(self, thresholds: StageThresholds = StageThresholds()):
        self.t = thresholds
        self.object_start: np.ndarray | None = None
        self.attempts = {s: 0 for s in STAGES}     # times each stage was (re)reached
        self.holding = {s: False for s in STAGES}  # the stage's condition holds right now

    def update(self, env_state, success: bool) -> None:
        """env_state: MetaWorld 39-D state (m); success: the simulator's flag at the same step."""
        s = np.asarray(env_state, dtype=np.float64)
        if s.size < 7:
            raise ValueError(f"env_state has {s.size} values; stage progress needs MetaWorld's hand [0:3] "
                             "and object [4:7] positions")
        if self.object_start is None:
            self.object_start = s[4:7].copy()
        distance = float(np.linalg.norm(s[0:3] - s[4:7]))
        moved = float(np.linalg.norm(s[4:7] - self.object_start))
        th = self.t
        now = {"approach": distance <= th.approach_radius_m if not self.holding["approach"]
               else distance <= th.approach_release_m,
               "contact": moved >= th.contact_displacement_m if not self.holding["contact"]
               else moved >= 0.5 * th.contact_displacement_m,
               "complete": bool(success)}
        for i, stage in enumerate(STAGES):
            later_reached = any(self.attempts[s] for s in STAGES[i + 1:])
            if now[stage] and not self.holding[stage]:
                self.attempts[stage] += 1
                self.holding[stage] = True
            elif not now[stage] and self.holding[stage] and not later_reached:
                self.holding[stage] = False           # lost before the next stage: the next reach is a retry
            if now[stage]:
                for earlier in STAGES[:i]:            # a later stage implies the earlier ones happened
                    if not self.attempts[earlier]:
                        self.attempts[earlier] = 1
                        self.holding[earlier] = True

    @property
    def score(self) -> float:
        """Mean over stages of 1 (first try), 0.5 (after a retry) or 0 (not reached)."""
        per = [0.0 if n == 0 else 1.0 if n == 1 else 0.5 for n in self.attempts.values()]
        return float(np.mean(per))

    def summary(self) -> dict:
        return {"stages": {s: {"reached": bool(self.attempts[s]), "retries": max(0, self.attempts[s] - 1)}
                           for s in STAGES}, "progress_score": self.score}
