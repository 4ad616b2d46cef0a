"""Joint position commands as a position-controlled arm reads them (JointTrajectory / JointState contents).

A command names any subset of the arm's joints, in any order; the others keep their target. A
trajectory's points are reached at `start + time_from_start` (s); between the current target
(at `start`) and the first point, and between points, the target moves linearly, as a
JointTrajectoryController interpolates; after the last point it stays there.
"""

from __future__ import annotations

import numpy as np


class JointCommandError(ValueError):
    """A joint command the arm cannot use; the message says why."""


def joint_vector(names, values, joint_names: list[str], current: np.ndarray) -> np.ndarray:
    """`current` (in `joint_names` order) with the joints named in `names` set to `values` (rad)."""
    names, values = list(names), np.asarray(values, dtype=np.float64)
    if len(names) != len(values):
        raise JointCommandError(f"{len(names)} joint names but {len(values)} positions")
    if not np.all(np.isfinite(values)):
        raise JointCommandError(f"non-finite positions {values.tolist()}")
    index = {n: i for i, n in enumerate(joint_names)}
    unknown = [n for n in names if n not in index]
    if unknown:
        raise JointCommandError(f"unknown joints {unknown} (the arm has {', '.join(joint_names)})")
    if len(set(names)) != len(names):
        raise JointCommandError(f"joint names repeated in {names}")
    out = np.array(current, dtype=np.float64)
    out[[index[n] for n in names]] = values
    return out


def check_times(times_s) -> np.ndarray:
    """Points' time_from_start (s) as an array; they must increase from >= 0."""
    times = np.asarray(times_s, dtype=np.float64)
    if np.any(np.diff(times) <= 0) or (len(times) and times[0] < 0):
        raise JointCommandError(f"time_from_start must increase from >= 0, got {times.tolist()}")
    return times


def sample_trajectory(current: np.ndarray, start_s: float, times_s, points, t: float) -> np.ndarray:
    """Target at time `t` (s) of a trajectory starting at `start_s` from `current`, reaching `points[k]`
    (full joint vectors) at `start_s + times_s[k]` (increasing, s)."""
    times = check_times(times_s)
    points = np.asarray(points, dtype=np.float64)
    if len(times) == 0:
        return np.asarray(current, dtype=np.float64).copy()
    knots_t = np.concatenate([[0.0], times]) if times[0] > 0 else times
    knots_q = np.vstack([current, points]) if times[0] > 0 else points
    tau = t - start_s
    if tau <= knots_t[0]:
        return knots_q[0].copy()
    if tau >= knots_t[-1]:
        return knots_q[-1].copy()
    k = int(np.searchsorted(knots_t, tau, side="right")) - 1
    w = (tau - knots_t[k]) / (knots_t[k + 1] - knots_t[k])
    return knots_q[k] + w * (knots_q[k + 1] - knots_q[k])
