"""Future-state-aware conditioning (VLASH): the proprio the robot will have once the plan in flight
has run, as the model's state input in place of the measured one (no rclpy).

While a chunk is computed the robot keeps executing the plan in flight; a chunk conditioned on the
measured state answers a robot that will have moved on. Rolled forward per state entry (the robot
file's state.sources) from the in-flight actions (physical units, one row per action period):
- ee_delta:       ee.x / ee.y / ee.z + limits.ee_delta_scale_m x the sum of the first three actions;
- ee_absolute:    ee.<x|y|z|qx|qy|qz|qw> = the last action's value of that component;
- joint_position: joint.<name> = the last action named <name>;
- joint_delta:    joint.<name> + the sum of the actions named <name>.
Other entries (a gripper finger, a joint the actions do not name) keep their measured value.
"""

from __future__ import annotations

import numpy as np

EE_COMPONENTS = ("x", "y", "z", "qx", "qy", "qz", "qw")


def roll_forward(config, state: np.ndarray, in_flight: np.ndarray) -> np.ndarray:
    """`state` (S,) in the robot file's state order, advanced by `in_flight` (n, dim) physical actions."""
    state = np.array(state, dtype=np.float64)
    plan = np.asarray(in_flight, dtype=np.float64).reshape(-1, config.action.dim)
    if not len(plan):
        return state
    space, names = config.action.space, list(config.action.names)
    for i, source in enumerate(config.state.sources):
        kind, _, field = source.partition(".")
        if kind == "ee" and space == "ee_delta" and field in ("x", "y", "z"):
            state[i] += config.limits.ee_delta_scale_m * plan[:, "xyz".index(field)].sum()
        elif kind == "ee" and space == "ee_absolute" and EE_COMPONENTS.index(field) < plan.shape[1]:
            state[i] = plan[-1, EE_COMPONENTS.index(field)]
        elif kind == "joint" and field in names and space == "joint_position":
            state[i] = plan[-1, names.index(field)]
        elif kind == "joint" and field in names and space == "joint_delta":
            state[i] += plan[:, names.index(field)].sum()
    return state
