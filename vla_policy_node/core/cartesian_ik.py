"""Cartesian pose commands solved to joint position commands (the `cartesian` contract with output.ik).

A command is an ee_absolute action: x y z (m) and, unless position_only, qx qy qz qw of the
kinematics tip link in the base link's frame. Each one is solved by IK warm-started from the
measured joints (the last solution before any joint state arrived). A pose that does not solve,
or whose solution is more than `max_joint_step` (rad) from the measured joints, is not sent:
the robot holds its measured position instead, and the reason is returned.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np

from .embodiment import urdf_file
from .kinematics import IKResult, KinematicChain


@dataclass
class IKCounters:
    solves: int = 0
    failures: int = 0                 # IK did not converge
    refused: int = 0                  # converged, but too far from the measured joints
    iterations: int = 0               # summed over solves
    times_ms: list = field(default_factory=list)   # solve times of the last 1000 solves

    def as_dict(self) -> dict:
        """Counts, mean iterations per solve and the median solve time (ms); None where nothing was solved."""
        times = list(self.times_ms)
        return {"solves": self.solves, "failures": self.failures, "refused": self.refused,
                "mean_iterations": self.iterations / self.solves if self.solves else None,
                "p50_ms": float(np.percentile(times, 50)) if times else None}


class PoseCommandSolver:
    def __init__(self, chain: KinematicChain, position_only: bool = False, max_iterations: int = 100,
                 tolerance_m: float = 1e-4, tolerance_rad: float = 1e-3, max_joint_step: float | None = None):
        self.chain = chain
        self.position_only = position_only
        self.max_iterations, self.tolerance_m, self.tolerance_rad = max_iterations, tolerance_m, tolerance_rad
        self.max_joint_step = max_joint_step
        self.last: np.ndarray | None = None
        self.counters = IKCounters()

    @classmethod
    def from_embodiment(cls, embodiment) -> PoseCommandSolver:
        """From kinematics, output.joint_names, output.ik and the joint position limits of a robot file."""
        cfg = embodiment.config
        kin, ik, joints = cfg.kinematics, cfg.output.ik, list(cfg.output.joint_names)
        lower = upper = None
        lim = cfg.limits
        if lim.joint_position_min and set(joints) <= set(lim.joint_names):
            index = {n: i for i, n in enumerate(lim.joint_names)}
            lower = [lim.joint_position_min[index[n]] for n in joints]
            upper = [lim.joint_position_max[index[n]] for n in joints]
        chain = KinematicChain(urdf_file(kin.urdf), kin.base_link, kin.tip_link, joints,
                               lower, upper)
        return cls(chain, ik.position_only, ik.max_iterations, ik.tolerance_m, ik.tolerance_rad, ik.max_joint_step)

    @property
    def joint_names(self) -> list[str]:
        return self.chain.joint_names

    def solve(self, command, measured: np.ndarray | None) -> tuple[np.ndarray | None, IKResult | None, str]:
        """(joint positions to send, the IK result, "" or why the robot holds instead).
        Holding sends the measured joints (None when nothing was measured yet)."""
        c = np.asarray(command, dtype=np.float64)
        seed = measured if measured is not None else self.last
        t = time.perf_counter()
        result = self.chain.ik(c[:3], None if self.position_only else c[3:7], seed, self.max_iterations,
                               self.tolerance_m, self.tolerance_rad)
        self.counters.times_ms.append((time.perf_counter() - t) * 1e3)
        del self.counters.times_ms[:-1000]
        self.counters.solves += 1
        self.counters.iterations += result.iterations
        hold = None if measured is None else np.asarray(measured, dtype=np.float64)
        if not result.success:
            self.counters.failures += 1
            return hold, result, result.message
        if self.max_joint_step is not None and measured is not None:
            jump = float(np.max(np.abs(result.q - measured)))
            if jump > self.max_joint_step:
                self.counters.refused += 1
                return hold, result, (f"IK solution {jump:.3f} rad from the measured joints exceeds "
                                      f"output.ik.max_joint_step {self.max_joint_step}")
        self.last = result.q
        return result.q, result, ""
