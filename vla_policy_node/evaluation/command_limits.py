"""Joint commands recorded in a bag checked against the robot file's URDF joint limits (rad)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..data.bags import read_bag

# the joint positions each joint command type carries, one list per commanded configuration
COMMAND_POSITIONS = {"trajectory_msgs/msg/JointTrajectory": lambda m: [p.positions for p in m.points],
                     "sensor_msgs/msg/JointState": lambda m: [m.position]}


def commands_outside_limits(bag: Path, robot) -> tuple[int, int]:
    """(commanded configurations, those with a joint position outside the robot file's
    `limits.joint_position_min/max`) on the robot's command topic in `bag`."""
    limits = robot.config.limits
    lo, hi = np.asarray(limits.joint_position_min), np.asarray(limits.joint_position_max)
    topic = robot.config.output.command_topic
    topic = topic if topic.startswith("/") else "/" + topic
    total = outside = 0
    for _, msgtype, _, msg in read_bag(bag, topics=[topic]):
        if msgtype not in COMMAND_POSITIONS:
            raise ValueError(f"{bag}: {topic} carries {msgtype}, not a joint command "
                             f"({', '.join(COMMAND_POSITIONS)})")
        for positions in COMMAND_POSITIONS[msgtype](msg):
            q = np.asarray(positions, dtype=float)
            total += 1
            outside += int(np.any(q < lo - 1e-9) or np.any(q > hi + 1e-9))
    return total, outside
