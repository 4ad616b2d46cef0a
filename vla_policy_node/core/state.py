"""Proprio state vector in the embodiment's order, from joint states and an end-effector pose."""

from __future__ import annotations

import numpy as np

_EE_INDEX = {"x": 0, "y": 1, "z": 2, "qx": 3, "qy": 4, "qz": 5, "qw": 6}
FLOAT32_MAX = float(np.finfo(np.float32).max)   # state travels as float32[] (Observation, ExecutionFeedback)


class StateAssemblyError(ValueError):
    """A state entry whose source is missing from the measured data."""


def assemble_state(sources: list[str], joint_names, joint_positions, ee_pose=None) -> np.ndarray:
    """`sources` entries 'joint.<name>' or 'ee.<x|y|z|qx|qy|qz|qw>'; ee_pose = (x, y, z, qx, qy, qz, qw)."""
    index = {n: i for i, n in enumerate(joint_names)}
    out = np.empty(len(sources))
    for k, src in enumerate(sources):
        kind, _, field = src.partition(".")
        if kind == "joint":
            if field not in index:
                raise StateAssemblyError(f"state source '{src}': joint '{field}' not in joint_states "
                                         f"({', '.join(joint_names)})")
            out[k] = joint_positions[index[field]]
        else:
            if ee_pose is None:
                raise StateAssemblyError(f"state source '{src}': no end-effector pose received")
            out[k] = ee_pose[_EE_INDEX[field]]
    return out


def state_joints(sources: list[str]) -> list[str]:
    """The joint names the 'joint.<name>' entries of `sources` read."""
    return [src.partition(".")[2] for src in sources if src.startswith("joint.")]


def values_problem(field: str, values) -> str:
    """Why a vector of measured values cannot be used ("" if it can): non-finite entries or entries
    beyond the float32 range they are published in."""
    v = np.asarray(values, dtype=np.float64).ravel()
    bad = np.flatnonzero(~(np.abs(v) <= FLOAT32_MAX))
    if len(bad):
        return f"field '{field}': non-finite or out-of-range value at index {', '.join(map(str, bad[:8]))}"
    return ""


def joint_state_problem(names, positions, required=()) -> str:
    """Why a sensor_msgs/JointState cannot be used ("" if it can): field lengths, duplicated names,
    `required` joints missing, non-finite (or beyond float32) positions."""
    names, positions = list(names), np.asarray(positions, dtype=np.float64)
    if len(positions) != len(names):
        return f"{len(names)} names but {len(positions)} positions"
    seen = set()
    for n in names:
        if n in seen:
            return f"field 'name': joint '{n}' appears twice"
        seen.add(n)
    missing = [n for n in required if n not in seen]
    if missing:
        return f"field 'name': joint(s) {', '.join(missing)} missing"
    bad = [n for n, v in zip(names, positions) if not np.isfinite(v)]
    if bad:
        return f"field 'position': non-finite value for {', '.join(bad)}"
    huge = [n for n, v in zip(names, positions) if abs(v) > FLOAT32_MAX]
    if huge:
        return f"field 'position': value beyond the float32 range for {', '.join(huge)}"
    return ""


def problem_field(problem: str) -> str:
    """The JointState field a joint_state_problem() answer is about: 'name' or 'position'."""
    return "name" if problem.startswith("field 'name'") else "position"
