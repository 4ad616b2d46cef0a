"""Publishers for each command contract the executor speaks (chosen by output.contract in the robot YAML).

- sim:          vla_msgs/ActionCommand, the embedded simulator's own action
- ros2_control: trajectory_msgs/JointTrajectory (one point) to a JointTrajectoryController topic
- isaac:        sensor_msgs/JointState on a joint_command topic (Isaac Sim's ROS 2 bridge)
- cartesian:    geometry_msgs/PoseStamped end-effector targets (ee_absolute: x y z qx qy qz qw)
"""

from __future__ import annotations

import numpy as np
from builtin_interfaces.msg import Duration
from geometry_msgs.msg import PoseStamped
from sensor_msgs.msg import JointState
from trajectory_msgs.msg import JointTrajectory, JointTrajectoryPoint
from vla_msgs.msg import ActionCommand

from .common import RELIABLE_QOS, to_stamp


class CommandPublisher:
    def __init__(self, node, embodiment):
        cfg = embodiment.config
        self.contract = cfg.output.contract
        self.topic = cfg.output.command_topic
        self.space = cfg.action.space
        self.names = list(cfg.action.names)
        self.joint_names = list(cfg.output.joint_names) or self.names
        self.frame_id = cfg.output.frame_id
        self.dt = cfg.action.dt
        msg_type = {"sim": ActionCommand, "ros2_control": JointTrajectory, "isaac": JointState,
                    "cartesian": PoseStamped}[self.contract]
        if self.contract == "cartesian" and (self.space != "ee_absolute" or len(self.names) < 7):
            raise ValueError(f"{embodiment.path}: output.contract 'cartesian' needs action.space 'ee_absolute' "
                             "with x y z qx qy qz qw first")
        self.pub = node.create_publisher(msg_type, self.topic, RELIABLE_QOS)

    def publish(self, command: np.ndarray, stamp_s: float) -> None:
        stamp = to_stamp(stamp_s)
        values = [float(v) for v in command]
        if self.contract == "sim":
            msg = ActionCommand(action_space=self.space, names=self.names, values=values)
            msg.header.stamp = stamp
        elif self.contract == "ros2_control":
            msg = JointTrajectory(joint_names=self.joint_names)
            msg.header.stamp = stamp
            nanosec = int(self.dt * 1e9)
            msg.points = [JointTrajectoryPoint(positions=values[: len(self.joint_names)],
                                               time_from_start=Duration(sec=nanosec // 10**9,
                                                                        nanosec=nanosec % 10**9))]
        elif self.contract == "isaac":
            msg = JointState(name=self.joint_names, position=values[: len(self.joint_names)])
            msg.header.stamp = stamp
        else:
            msg = PoseStamped()
            msg.header.stamp, msg.header.frame_id = stamp, self.frame_id
            p, q = msg.pose.position, msg.pose.orientation
            p.x, p.y, p.z, q.x, q.y, q.z, q.w = values[:7]
        self.pub.publish(msg)
