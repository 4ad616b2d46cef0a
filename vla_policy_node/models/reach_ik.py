"""`reach_ik` backend: a scripted reaching policy for joint-space or Cartesian arms (privileged target).

Reads the target position (m, robot base frame) from env_state[:3], as the oracle reads MetaWorld's
state, and moves the tip link along a straight line to it with a trapezoidal speed profile
(`SPEED_M_S`, `ACCEL_M_S2`), holding the orientation the episode started with:
- ee_absolute robots: the chunk is the poses themselves (x y z qx qy qz qw);
- joint_position robots: each pose is solved by IK (robot file `kinematics`), warm-started from
  the previous solution, and the joint stream is kept within the robot file's joint velocity,
  acceleration and max_step limits (times `LIMIT_MARGIN`), so the executor's gate never has to clamp.
A chunk continues the commands that really executed (ExecutionFeedback, via `update`), so
consecutive chunks join without a jump; it restarts from the measured state when that is far off.
"""

from __future__ import annotations

import time

import numpy as np
from scipy.spatial.transform import Rotation

from ..core.embodiment import urdf_file
from ..core.kinematics import KinematicChain
from ..core.normalization import Normalizer
from .backend import PolicyBackend, PolicyInput, PolicyOutput

SPEED_M_S = 0.25          # cruise speed of the tip, m/s
ACCEL_M_S2 = 0.6          # tip acceleration and braking, m/s^2
LIMIT_MARGIN = 0.9        # fraction of the robot file's joint limits the plan may use
RESYNC_RAD = 0.1          # joint robots: restart from the measured joints when the last command is farther
RESYNC_M = 0.03           # Cartesian robots: the same for the tip position, m
EE_FIELDS = ("x", "y", "z", "qx", "qy", "qz", "qw")


def line_waypoints(start, velocity, target, horizon: int, dt: float, speed: float, accel: float) -> np.ndarray:
    """(horizon, 3) points from `start` (m) towards `target` on a straight line, one per `dt` (s):
    the speed along the line starts at `velocity` (m/s, projected on the line), changes by at most
    `accel` (m/s^2), stays <= `speed` (m/s) and brakes to stop at the target."""
    start, target = np.asarray(start, dtype=np.float64), np.asarray(target, dtype=np.float64)
    distance = float(np.linalg.norm(target - start))
    if distance < 1e-9:
        return np.repeat(start[None], horizon, axis=0)
    direction = (target - start) / distance
    v = float(np.clip(np.dot(velocity, direction), 0.0, speed))
    travelled, out = 0.0, np.empty((horizon, 3))
    for k in range(horizon):
        remaining = distance - travelled
        v = min(speed, v + accel * dt, np.sqrt(2.0 * accel * remaining))
        step = min(v * dt, remaining)
        travelled += step
        v = step / dt
        out[k] = start + direction * travelled
    return out


def bounded_joint_step(q, v, goal, v_max, a_max, dt: float) -> tuple[np.ndarray, np.ndarray]:
    """Next joint command towards `goal` with |velocity| <= v_max and |acceleration| <= a_max
    (per joint, rad/s and rad/s^2) from command `q` moving at `v`; returns (command, velocity)."""
    v_new = np.clip((goal - q) / dt, v - a_max * dt, v + a_max * dt)
    v_new = np.clip(v_new, -v_max, v_max)
    return q + v_new * dt, v_new


class ReachIKBackend(PolicyBackend):
    name = "reach_ik"
    uses_privileged_state = True

    def __init__(self, embodiment, **options):
        super().__init__(embodiment, **options)
        cfg = embodiment.config
        self.space, self.dt, self.horizon = cfg.action.space, cfg.action.dt, cfg.action.horizon
        self.normalizer = Normalizer(cfg.normalization.mode, embodiment.action_stats)
        sources = list(cfg.state.sources)
        if self.space == "joint_position":
            self._init_joint(embodiment, sources)
        elif self.space == "ee_absolute":
            missing = [f"ee.{f}" for f in EE_FIELDS if f"ee.{f}" not in sources]
            if missing or cfg.action.dim != 7:
                raise ValueError(f"reach_ik backend: {embodiment.path}: an ee_absolute robot needs 7 actions "
                                 f"(x y z qx qy qz qw) and state.sources {missing} (the measured tip pose)")
            self.state_index = [sources.index(f"ee.{f}") for f in EE_FIELDS]
            step = np.asarray(cfg.limits.max_step[:3]) if cfg.limits.max_step else np.full(3, np.inf)
            self.speed = min(SPEED_M_S, LIMIT_MARGIN * float(np.min(step)) / self.dt)
        else:
            raise ValueError(f"reach_ik backend: {embodiment.path}: action.space '{self.space}' not supported "
                             "(joint_position or ee_absolute)")
        self.executed: list[np.ndarray] = []
        self.orientation: np.ndarray | None = None
        self.ik_failures = 0

    def _init_joint(self, embodiment, sources: list[str]) -> None:
        cfg = embodiment.config
        names, lim, kin = list(cfg.action.names), cfg.limits, cfg.kinematics
        if kin is None:
            raise ValueError(f"reach_ik backend: {embodiment.path}: kinematics (urdf, base_link, tip_link) is "
                             "required for a joint_position robot")
        missing = [f"joint.{n}" for n in names if f"joint.{n}" not in sources]
        if missing:
            raise ValueError(f"reach_ik backend: {embodiment.path}: state.sources lacks {missing}")
        self.state_index = [sources.index(f"joint.{n}") for n in names]
        index = {n: i for i, n in enumerate(lim.joint_names)}

        def per_joint(values, default):
            return np.array([values[index[n]] if values and n in index else default for n in names])
        self.chain = KinematicChain(urdf_file(kin.urdf), kin.base_link, kin.tip_link, names,
                                    per_joint(lim.joint_position_min, -np.inf), per_joint(lim.joint_position_max, np.inf))
        step = np.asarray(lim.max_step) / self.dt if lim.max_step else np.full(len(names), np.inf)
        self.v_max = LIMIT_MARGIN * np.minimum(per_joint(lim.joint_velocity_max, np.inf), step)
        self.a_max = LIMIT_MARGIN * per_joint(lim.joint_acceleration_max, np.inf)
        self.speed = SPEED_M_S

    def reset(self, instruction: str, seed: int | None = None, task: str = "") -> None:
        if task and task != "reach":
            raise KeyError(f"reach_ik backend only reaches targets; task '{task}' unknown")
        self.executed.clear()
        self.orientation = None

    def update(self, executed_actions: np.ndarray, obs: PolicyInput | None = None) -> None:
        self.executed.extend(np.asarray(executed_actions, dtype=np.float64).reshape(-1, len(self.state_index)))
        del self.executed[:-2]

    def _reference(self, measured: np.ndarray, tolerance: float, position_dims: slice) -> tuple[np.ndarray, np.ndarray]:
        """(last command, the one before it) to continue from, or the measured state twice."""
        if self.executed and np.max(np.abs(self.executed[-1][position_dims] - measured[position_dims])) <= tolerance:
            return self.executed[-1], self.executed[-2] if len(self.executed) > 1 else self.executed[-1]
        return measured, measured

    def predict(self, obs: PolicyInput, prefix: np.ndarray | None = None) -> PolicyOutput:
        if obs.env_state is None or len(obs.env_state) < 3:
            raise ValueError("reach_ik backend needs the target position (x y z) as env_state; got "
                             f"{0 if obs.env_state is None else len(obs.env_state)} values")
        t = time.perf_counter()
        target = np.asarray(obs.env_state[:3], dtype=np.float64)
        measured = np.asarray(obs.state, dtype=np.float64)[self.state_index]
        actions = self._joint_chunk(measured, target) if self.space == "joint_position" else \
            self._pose_chunk(measured, target)
        timings = {"inference_ms": (time.perf_counter() - t) * 1e3}
        return PolicyOutput(self.normalizer.normalize(actions), actions, None, timings)

    def _pose_chunk(self, measured: np.ndarray, target: np.ndarray) -> np.ndarray:
        if self.orientation is None:
            self.orientation = Rotation.from_quat(measured[3:7]).as_quat(canonical=True)   # x, y, z, w
        ref, prev = self._reference(measured, RESYNC_M, slice(0, 3))
        points = line_waypoints(ref[:3], (ref[:3] - prev[:3]) / self.dt, target, self.horizon, self.dt,
                                self.speed, ACCEL_M_S2)
        return np.hstack([points, np.repeat(self.orientation[None], self.horizon, axis=0)])

    def _joint_chunk(self, measured: np.ndarray, target: np.ndarray) -> np.ndarray:
        if self.orientation is None:
            self.orientation = self.chain.fk(measured)[1]
        q, prev = self._reference(measured, RESYNC_RAD, slice(None))
        p, p_prev = self.chain.fk(q)[0], self.chain.fk(prev)[0]
        points = line_waypoints(p, (p - p_prev) / self.dt, target, self.horizon, self.dt, self.speed, ACCEL_M_S2)
        v = (q - prev) / self.dt
        goal = q
        actions = np.empty((self.horizon, len(q)))
        for k, point in enumerate(points):
            result = self.chain.ik(point, self.orientation, goal)
            if result.success:
                goal = result.q
            else:
                self.ik_failures += 1      # keep heading for the last solvable point
            q, v = bounded_joint_step(q, v, goal, self.v_max, self.a_max, self.dt)
            actions[k] = q
        return actions


Policy = ReachIKBackend
