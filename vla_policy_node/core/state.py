"""Proprio state vector in the embodiment's order, from joint states and an end-effector pose."""

from __future__ import annotations

import numpy as np

_EE_INDEX = {"x": 0, "y": 1, "z": 2, "qx": 3, "qy": 4, "qz": 5, "qw": 6}


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


def joint_state_problem(names, positions) -> str:
    """Why a sensor_msgs/JointState cannot be used ("" if it can): field lengths, duplicated names,
    non-finite positions."""
    names, positions = list(names), np.asarray(positions, dtype=np.float64)
    if len(positions) != len(names):
        return f"{len(names)} names but {len(positions)} positions"
    seen = set()
    for n in names:
        if n in seen:
            return f"field 'name': joint '{n}' appears twice"
        seen.add(n)
    bad = [n for n, v in zip(names, positions) if not np.isfinite(v)]
    if bad:
        return f"field 'position': non-finite value for {', '.join(bad)}"
    return ""
