"""The command that keeps a robot still, per action space (no rclpy).

Displacement spaces (joint_delta, ee_delta, base_velocity: a command is a step per control
period) hold with a zero step, the gripper kept where the last command put it (an open grasp
stays open, a held object stays held). Position spaces (joint_position, ee_absolute) hold the
last command, or the measured state before any command was sent. Units follow the action space.
"""

from __future__ import annotations

import numpy as np

from .motion_limiter import POSITION_SPACES


def hold_command(space: str, dim: int, gripper_index: int | None, last_command: np.ndarray | None,
                 measured: np.ndarray | None = None) -> np.ndarray | None:
    """The `dim`-D command that keeps the robot still; None for a position space with neither a
    last command nor a measured state (nothing is known to hold)."""
    if space not in POSITION_SPACES:
        cmd = np.zeros(dim)
        if gripper_index is not None and last_command is not None:
            cmd[gripper_index] = last_command[gripper_index]
        return cmd
    if last_command is not None:
        return np.array(last_command, dtype=np.float64)
    return None if measured is None else np.asarray(measured, dtype=np.float64)
