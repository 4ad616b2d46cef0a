"""Publishers for each command contract the executor speaks (chosen by output.contract in the robot YAML).

- sim:          vla_msgs/ActionCommand, the embedded simulator's own action
- ros2_control: trajectory_msgs/JointTrajectory (one point) to a JointTrajectoryController topic
- isaac:        sensor_msgs/JointState on a joint_command topic (Isaac Sim's ROS 2 bridge)
- cartesian:    geometry_msgs/PoseStamped end-effector targets (ee_absolute: x y z qx qy qz qw); for a
                robot commanded in joints (output.joint_names and output.ik set), each pose is solved
                by IK (core/cartesian_ik.py, warm-started from the measured joint_states) and sent as
                output.ik.joint_command (JointTrajectory or JointState) instead; the pose targets then
                go to output.ik.pose_topic, if set, for monitoring.
"""

from __future__ import annotations

import numpy as np
from builtin_interfaces.msg import Duration
from geometry_msgs.msg import PoseStamped
from sensor_msgs.msg import JointState
from trajectory_msgs.msg import JointTrajectory, JointTrajectoryPoint
from vla_msgs.msg import ActionCommand

from ..core.cartesian_ik import PoseCommandSolver
from ..core.kinematics import KinematicsError
from .common import RELIABLE_QOS, to_stamp

JOINT_COMMANDS = {"joint_trajectory": JointTrajectory, "joint_state": JointState}


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
        self.node = node
        msg_type = {"sim": ActionCommand, "ros2_control": JointTrajectory, "isaac": JointState,
                    "cartesian": PoseStamped}[self.contract]
        if self.contract == "cartesian" and (self.space != "ee_absolute" or len(self.names) < 3):
            raise ValueError(f"{embodiment.path}: output.contract 'cartesian' needs action.space 'ee_absolute' "
                             "with x y z (qx qy qz qw) first")
        self.ik = None
        if self.contract == "cartesian" and cfg.output.ik is not None:
            try:
                self.ik = PoseCommandSolver.from_embodiment(embodiment)
            except KinematicsError as exc:
                raise ValueError(f"{embodiment.path}: kinematics: {exc}") from None
            msg_type = JOINT_COMMANDS[cfg.output.ik.joint_command]
            self.measured = None
            self.pose_pub = node.create_publisher(PoseStamped, cfg.output.ik.pose_topic, RELIABLE_QOS) \
                if cfg.output.ik.pose_topic else None
            node.create_subscription(JointState, cfg.state.joint_states_topic, self.on_joint_state, RELIABLE_QOS)
        self.pub = node.create_publisher(msg_type, self.topic, RELIABLE_QOS)

    def on_joint_state(self, msg: JointState) -> None:
        """Measured joints in IK order (the warm start); joint_states missing a chain joint are ignored."""
        index = {n: i for i, n in enumerate(msg.name)}
        if all(n in index for n in self.ik.joint_names) and len(msg.position) == len(msg.name):
            self.measured = np.array([msg.position[index[n]] for n in self.ik.joint_names])

    def publish(self, command: np.ndarray, stamp_s: float) -> None:
        stamp = to_stamp(stamp_s)
        values = [float(v) for v in command]
        if self.contract == "sim":
            msg = ActionCommand(action_space=self.space, names=self.names, values=values)
            msg.header.stamp = stamp
        elif self.contract == "ros2_control":
            msg = self.joint_trajectory(values, stamp)
        elif self.contract == "isaac":
            msg = self.joint_state(values, stamp)
        elif self.ik is not None:
            msg = self.solve(values, stamp)
            if msg is None:
                return
        else:
            msg = self.pose(values, stamp)
        self.pub.publish(msg)

    def joint_trajectory(self, positions, stamp) -> JointTrajectory:
        """One point, to be reached one action period after `stamp`."""
        msg = JointTrajectory(joint_names=self.joint_names)
        msg.header.stamp = stamp
        nanosec = int(self.dt * 1e9)
        msg.points = [JointTrajectoryPoint(positions=[float(v) for v in positions[: len(self.joint_names)]],
                                           time_from_start=Duration(sec=nanosec // 10**9, nanosec=nanosec % 10**9))]
        return msg

    def joint_state(self, positions, stamp) -> JointState:
        msg = JointState(name=self.joint_names, position=[float(v) for v in positions[: len(self.joint_names)]])
        msg.header.stamp = stamp
        return msg

    def pose(self, values, stamp) -> PoseStamped:
        """x y z and, when given, qx qy qz qw (identity otherwise: a position-only target)."""
        msg = PoseStamped()
        msg.header.stamp, msg.header.frame_id = stamp, self.frame_id
        p, q = msg.pose.position, msg.pose.orientation
        p.x, p.y, p.z = values[:3]
        if len(values) >= 7:
            q.x, q.y, q.z, q.w = values[3:7]
        else:
            q.w = 1.0
        return msg

    def solve(self, values, stamp):
        """The joint command for a pose target (or the measured joints, held, when it has none)."""
        if self.pose_pub is not None:
            self.pose_pub.publish(self.pose(values, stamp))
        positions, _, why = self.ik.solve(values, self.measured)
        if why:
            self.node.get_logger().error(f"{self.topic}: pose target {[round(v, 4) for v in values[:7]]} not sent "
                                         f"({why}); holding the measured joints", throttle_duration_sec=1.0)
        if positions is None:
            return None
        build = self.joint_trajectory if self.pub.msg_type is JointTrajectory else self.joint_state
        return build(positions, stamp)
