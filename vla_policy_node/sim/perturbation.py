"""Perturbations of a running episode: the world doing something the plan did not expect.

Two kinds, as a person beside the robot would cause them:
- `object`: the task object displaced (slid on the table, m, world frame); fixed-base objects (a
  button box, a drawer, a door, a window) move whole with their goal, a loose one (the plate's puck)
  moves alone.
- `hand`: the end effector pushed (the mocap target MetaWorld's hand follows, clipped to its workspace).

`sample_perturbation` draws one from an episode's seed, so the same (task, seed) is perturbed the same
way in every run, whatever the policy. The simulators apply them (`MetaWorldSim.perturb`,
`PandaReachSim.perturb`); the sim bridge serves them (`vla/sim/perturb`) at a given step.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

KINDS = ("object", "hand")


@dataclass(frozen=True)
class Perturbation:
    kind: str                        # one of KINDS
    offset_m: tuple                  # (x, y, z), m, world frame
    at_step: int                     # applied before this control step of the episode (1 = the first)

    def __post_init__(self):
        if self.kind not in KINDS:
            raise ValueError(f"perturbation kind '{self.kind}' unknown; kinds: {', '.join(KINDS)}")
        offset = np.asarray(self.offset_m, dtype=np.float64)
        if offset.shape != (3,) or not np.all(np.isfinite(offset)):
            raise ValueError(f"perturbation offset_m must be 3 finite values (m), got {self.offset_m}")
        if self.at_step < 0:
            raise ValueError(f"perturbation at_step must be >= 0, got {self.at_step}")

    def as_dict(self) -> dict:
        return {"kind": self.kind, "offset_m": [round(float(v), 6) for v in self.offset_m], "at_step": self.at_step,
                "distance_m": round(float(np.linalg.norm(self.offset_m)), 6)}


def sample_perturbation(seed: int, kind: str, steps: tuple[int, int] = (40, 120),
                        distance_m: tuple[float, float] = (0.05, 0.15)) -> Perturbation:
    """A horizontal displacement of `distance_m` (uniform, m) in a uniform direction, at a step uniform
    in `steps` (inclusive), all drawn from `seed` (the episode's) alone."""
    if steps[0] < 1 or steps[1] < steps[0]:
        raise ValueError(f"perturbation steps must be 1 <= first <= last, got {list(steps)}")
    if not 0 <= distance_m[0] <= distance_m[1]:
        raise ValueError(f"perturbation distance_m must be 0 <= low <= high, got {list(distance_m)}")
    rng = np.random.default_rng([int(seed), 0x9E27])          # its own stream: not the scene's draws
    angle = rng.uniform(0.0, 2.0 * np.pi)
    distance = rng.uniform(*distance_m)
    step = int(rng.integers(steps[0], steps[1] + 1))
    return Perturbation(kind, (float(distance * np.cos(angle)), float(distance * np.sin(angle)), 0.0), step)


@dataclass(frozen=True)
class PerturbationSchedule:
    """How a run perturbs its episodes: one perturbation of `kind` per episode, drawn from its seed."""
    kind: str
    steps: tuple
    distance_m: tuple

    @classmethod
    def from_parameters(cls, kind: str, steps, distance_m) -> "PerturbationSchedule | None":
        """None for kind "none"; a named error for anything that cannot be drawn from."""
        if kind == "none":
            return None
        if kind not in KINDS:
            raise ValueError(f"parameter perturbation: '{kind}' unknown; one of none, {', '.join(KINDS)}")
        if len(steps) != 2 or len(distance_m) != 2:
            raise ValueError(f"parameters perturbation_steps {list(steps)} and perturbation_distance_m "
                             f"{list(distance_m)} must be two values each")
        schedule = cls(kind, (int(steps[0]), int(steps[1])), (float(distance_m[0]), float(distance_m[1])))
        try:
            schedule.draw(0)                          # the ranges' own errors, now rather than mid-run
        except ValueError as exc:
            raise ValueError(f"parameters perturbation_steps / perturbation_distance_m: {exc}") from None
        return schedule

    def draw(self, seed: int) -> Perturbation:
        return sample_perturbation(seed, self.kind, self.steps, self.distance_m)
