"""Publishers for each command contract the executor speaks (chosen by output.contract in the robot YAML).

- sim:          vla_msgs/ActionCommand, the embedded simulator's own action
- ros2_control: trajectory_msgs/JointTrajectory (one point) to a JointTrajectoryController topic, or
                with output.trajectory_action set, the same trajectory as a
                control_msgs/action/FollowJointTrajectory goal (tolerances from the robot file), the
                controller's results counted by error code (TrajectoryGoals)
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
        self.goals = TrajectoryGoals(node, cfg.output.trajectory_action, self.joint_names) \
            if cfg.output.trajectory_action is not None else None
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
            if self.goals is not None:
                self.goals.send(msg)
                return
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


ERROR_CODES = {0: "successful", -1: "invalid_goal", -2: "invalid_joints", -3: "old_header_timestamp",
               -4: "path_tolerance_violated", -5: "goal_tolerance_violated"}


class TrajectoryGoals:
    """Commands as FollowJointTrajectory goals: each goal preempts the previous one at the
    controller, as a new topic message does. Outcomes are counted (`outcomes`: no_server, rejected,
    canceled or aborted by preemption, and the result's error code); failures are logged with the
    controller's error_string."""

    def __init__(self, node, action, joint_names: list[str]):
        from control_msgs.action import FollowJointTrajectory
        from control_msgs.msg import JointTolerance
        from rclpy.action import ActionClient

        self.node, self.name, self.Goal = node, action.name, FollowJointTrajectory.Goal
        self.client = ActionClient(node, FollowJointTrajectory, action.name)

        def tolerances(value) -> list:
            values = value if isinstance(value, list) else [value] * len(joint_names)
            return [JointTolerance(name=n, position=float(v)) for n, v in zip(joint_names, values) if v != 0]
        self.path_tolerance, self.goal_tolerance = tolerances(action.path_tolerance), tolerances(action.goal_tolerance)
        ns = int(round(action.goal_time_tolerance_s * 1e9))
        self.goal_time_tolerance = Duration(sec=ns // 10**9, nanosec=ns % 10**9)
        self.outcomes: dict[str, int] = {}

    def count(self, outcome: str) -> None:
        self.outcomes[outcome] = self.outcomes.get(outcome, 0) + 1

    @property
    def failures(self) -> int:
        """Goals the controller refused or failed; not those preempted by the next command, nor
        those answered as too old (a lockstep executor re-sends a command whose state seemed lost)."""
        return sum(n for k, n in self.outcomes.items()
                   if k not in ("sent", "successful", "preempted", "old_header_timestamp"))

    def send(self, trajectory: JointTrajectory) -> None:
        where = self.node.resolve_topic_name(self.name)
        if not self.client.server_is_ready():
            self.count("no_server")
            self.node.get_logger().error(f"{where}: no FollowJointTrajectory server; command not sent",
                                         throttle_duration_sec=1.0)
            return
        goal = self.Goal(trajectory=trajectory, path_tolerance=self.path_tolerance,
                         goal_tolerance=self.goal_tolerance, goal_time_tolerance=self.goal_time_tolerance)
        self.count("sent")
        self.client.send_goal_async(goal).add_done_callback(self.on_goal_response)

    def on_goal_response(self, future) -> None:
        handle = future.result()
        if handle is None or not handle.accepted:
            self.count("rejected")
            self.node.get_logger().error(f"{self.node.resolve_topic_name(self.name)}: goal rejected by the controller",
                                         throttle_duration_sec=1.0)
            return
        handle.get_result_async().add_done_callback(self.on_result)

    def on_result(self, future) -> None:
        from action_msgs.msg import GoalStatus

        answer = future.result()
        if answer is None:
            return
        if answer.status == GoalStatus.STATUS_CANCELED:
            self.count("preempted")
            return
        outcome = ERROR_CODES.get(answer.result.error_code, f"error_code_{answer.result.error_code}")
        self.count(outcome)
        if answer.result.error_code != 0:
            self.node.get_logger().error(f"{self.node.resolve_topic_name(self.name)}: {outcome}: "
                                         f"{answer.result.error_string}", throttle_duration_sec=1.0)
