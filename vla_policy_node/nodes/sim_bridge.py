"""sim_bridge: an embedded MuJoCo simulation served as a ROS robot.

`sim` chooses the simulation: `metaworld` (the Sawyer in the MetaWorld scenes, commanded with
its own contract: vla_msgs/ActionCommand) or `panda_reach` (a joint-position Panda arm,
sim/panda_reach_sim.py, commanded with the robot file's joint contract on output.command_topic:
`ros2_control` trajectory_msgs/JointTrajectory, `isaac` sensor_msgs/JointState, or `cartesian`
with output.ik, whose IK output is one of those two). Publishes /clock (sim time), camera images
(stamped at render time), /joint_states, the hand pose, the privileged env_state and success,
and serves a reset service.

lockstep=true: the simulation advances one step per command (reproducible evaluation); while no
command comes, the current state is re-published every `republish_period_s` of wall time so late
joiners and lost best-effort frames never stall the loop.
lockstep=false: free-running at `real_time_factor` x real time, holding still when commands stop
(panda_reach: follows the latest trajectory and holds its last point). A simulation that cannot
keep the requested pace runs evenly slower (the step timer fires as soon as the last step is done
and never fires missed steps in a burst), says so in a warning and reports the factor it reaches
on /diagnostics (core/pacer.py; WARN when more than 10% short).
`clock_offset_s` may be changed while running (`ros2 param set /sim_bridge clock_offset_s -5.0`):
the published sim time jumps by the change, as a simulator's does when its timeline is reset
(Gazebo's world reset, Isaac Sim's stop/play) while the world stays; commands in flight are dropped.
Every other parameter is read at start (read-only).
"""

from __future__ import annotations

import time

import numpy as np
from geometry_msgs.msg import PoseStamped
from rcl_interfaces.msg import SetParametersResult
from rclpy.node import Node
from rosgraph_msgs.msg import Clock
from sensor_msgs.msg import Image, JointState
from std_msgs.msg import Bool
from trajectory_msgs.msg import JointTrajectory
from vla_msgs.msg import ActionCommand, StateVector
from vla_msgs.srv import Perturb, ResetEpisode

from ..core.health import Above
from ..core.hold import hold_command
from ..core.joint_trajectory import JointCommandError, check_times, joint_vector, sample_trajectory
from ..core.motion_limiter import POSITION_SPACES
from ..core.pacer import PaceMeter
from ..sim import panda_reach_sim
from ..sim.metaworld_sim import MetaWorldSim, default_instruction
from ..sim.perturbation import Perturbation
from .diagnostics import Diagnostics
from .common import (RELIABLE_QOS, SENSOR_QOS, SERVICES, TOPICS, image_msg, load_robot_or_exit, run_node, to_sec,
                     to_stamp)
from .parameters import ROBOT, Param, declare


class SimBridgeNode(Node):
    PARAMETERS = (
        ROBOT,
        Param("sim", "metaworld", "the embedded simulation", constraints="metaworld | panda_reach"),
        Param("task", "", "the task the simulation starts with (a reset names the next); \"\" = button-press "
                          "(metaworld), reach (panda_reach)"),
        Param("seed", 0, "seed of the first task's initial state", (0, 2 ** 31 - 1)),
        Param("lockstep", True, "advance one step per command (reproducible evaluation); false: free-running at "
                                "real_time_factor"),
        Param("real_time_factor", 1.0, "free-running: sim seconds per wall second", (0.001, 100.0)),
        Param("republish_period_s", 0.2, "lockstep: the state is re-published when idle this long (late joiners, "
                                         "lost frames; wall s)", (0.01, 60.0)),
        Param("command_timeout_s", 0.1, "free-running: hold still when the newest command is older than this (sim s)",
              (0.001, 60.0)),
        Param("camera_period_steps", 1, "a camera frame every this many simulation steps", (1, 1000)),
        Param("mujoco_cameras", ["corner2"], "one MuJoCo camera per camera of the robot file, same order "
                                             "(\"\": that camera is not simulated)"),
        Param("image_width", 128, "rendered frame width (pixels)", (16, 4096)),
        Param("image_height", 128, "rendered frame height (pixels)", (16, 4096)),
        Param("flip_vertical", True, "metaworld: flip frames vertically (MetaWorld's corner cameras render upside "
                                     "down)"),
        Param("max_steps", 500, "steps before an episode is truncated", (1, 2 ** 31 - 1)),
        Param("clock_offset_s", 0.0, "sim time at start (s, >= 0); changed while running, the published sim time "
                                     "jumps by the change (a timeline reset: commands in flight are dropped)",
              live=True, constraints="at start >= 0; a change may not take sim time below zero"),
    )

    def __init__(self, **kwargs):
        super().__init__("sim_bridge", **kwargs)
        p = declare(self, self.PARAMETERS)
        self.robot = load_robot_or_exit(self, p.robot)
        self.sim_name = p.sim
        if self.sim_name not in ("metaworld", "panda_reach"):
            raise SystemExit(f"parameter sim: '{self.sim_name}' unknown (metaworld | panda_reach)")
        self.lockstep = p.lockstep
        self.real_time_factor = p.real_time_factor
        self.republish_period_s = p.republish_period_s
        self.command_timeout_s = p.command_timeout_s
        self.camera_period_steps = p.camera_period_steps
        mujoco_cameras = list(p.mujoco_cameras)
        cams = self.robot.config.cameras
        if len(mujoco_cameras) != len(cams):
            raise SystemExit(f"parameter mujoco_cameras: {len(mujoco_cameras)} names for {len(cams)} cameras "
                             f"of {self.robot.path}")
        self.cameras = [(c, m) for c, m in zip(cams, mujoco_cameras) if m]   # "": camera not simulated
        width, height, max_steps = p.image_width, p.image_height, p.max_steps
        self.max_steps = max_steps
        self.action = self.robot.config.action
        if self.sim_name == "metaworld":
            if self.action.space in POSITION_SPACES:
                raise SystemExit(f"{self.robot.path}: action.space '{self.action.space}': the metaworld simulation "
                                 "takes a displacement per step (ee_delta), not positions")
            self.sim = MetaWorldSim(mujoco_cameras, width=width, height=height,
                                    flip_vertical=p.flip_vertical, max_steps=max_steps)
            self.instruction_for = default_instruction
        else:
            try:
                self.sim = panda_reach_sim.PandaReachSim([m for _, m in self.cameras], width=width, height=height,
                                                         control_dt=self.robot.config.action.dt, max_steps=max_steps)
            except ValueError as exc:
                raise SystemExit(f"parameter mujoco_cameras: {exc}") from None
            self.instruction_for = panda_reach_sim.default_instruction
        self.action_names = self.action.names
        self.gripper_index = self.action.gripper.index if self.action.gripper else None
        self.joint_command_type = self.joint_contract() if self.sim_name == "panda_reach" else None
        self.latest_trajectory = None     # free-running joint contracts: (targets then, start s, times s, points)

        self.clock_pub = self.create_publisher(Clock, "/clock", RELIABLE_QOS)
        self.image_pubs = {c.name: self.create_publisher(Image, c.topic, SENSOR_QOS) for c, _ in self.cameras}
        self.joint_pub = self.create_publisher(JointState, self.robot.config.state.joint_states_topic, RELIABLE_QOS)
        ee_topic = self.robot.config.state.ee_pose_topic or "vla/sim/ee_pose"
        self.ee_pub = self.create_publisher(PoseStamped, ee_topic, RELIABLE_QOS)
        self.env_pub = self.create_publisher(StateVector, self.robot.config.env_state_topic or TOPICS["env_state"],
                                             RELIABLE_QOS)
        self.success_pub = self.create_publisher(Bool, TOPICS["success"], RELIABLE_QOS)
        command_topic = self.robot.config.output.command_topic
        if self.joint_command_type is None:
            self.create_subscription(ActionCommand, command_topic, self.on_command, RELIABLE_QOS)
        else:
            self.create_subscription(self.joint_command_type, command_topic, self.on_joint_command, RELIABLE_QOS)
        self.create_service(ResetEpisode, SERVICES["sim_reset"], self.on_reset)
        self.create_service(Perturb, SERVICES["sim_perturb"], self.on_perturb)
        self.pending_perturbation: Perturbation | None = None     # of the current episode, until its step
        action = self.robot.config.output.trajectory_action
        if action is not None and self.joint_command_type is JointTrajectory:
            from control_msgs.action import FollowJointTrajectory
            from rclpy.action import ActionServer
            self.trajectory_server = ActionServer(self, FollowJointTrajectory, action.name, self.on_trajectory_goal)

        self.clock_offset_s = p.clock_offset_s
        if self.clock_offset_s < 0:
            raise SystemExit(f"parameter clock_offset_s: {self.clock_offset_s} s; sim time starts at it, so >= 0")
        self.sim_time = self.clock_offset_s
        self.reset_stamp = self.sim_time     # free-running: commands stamped before it are the old scene's
        self.add_on_set_parameters_callback(self.on_parameters)
        self.frames = {}
        self.last_publish_wall = 0.0
        self.latest_command = None
        self.latest_command_time = -np.inf
        self.commands_rejected = 0
        self.commands_stale = 0
        self.perturbations_applied = 0
        self.sim.reset(p.task or ("reach" if self.sim_name == "panda_reach" else "button-press"), p.seed)
        self.publish_state(render=True)
        self.pace = None if self.lockstep else PaceMeter(self.real_time_factor, self.sim.dt)
        self.pace_warned = 0.0
        if self.lockstep:
            self.create_timer(self.republish_period_s, self.republish_if_idle)
        else:
            self.create_timer(self.sim.dt / self.real_time_factor, self.free_run_step)
        self.steps_window = (time.monotonic(), self.sim_time)     # (wall s, sim s) at the last diagnostics
        self.diagnostics = Diagnostics(self, "simulation", self.robot.name, self.health_figures,
                                       [Above("commands_rejected", 0, None), Above("pace_deficit", 0.1, None)])
        contract = "ActionCommand" if self.joint_command_type is None else self.joint_command_type.__name__
        self.get_logger().info(f"sim_bridge ready: {self.sim_name} task {self.sim.task}, lockstep={self.lockstep}, "
                               f"dt={self.sim.dt * 1e3:.1f} ms, cameras {[m for _, m in self.cameras]}, "
                               f"commands {contract} on {command_topic}")

    def joint_contract(self):
        """Message type of the robot's joint command contract (panda_reach takes joint positions only)."""
        out = self.robot.config.output
        if out.contract == "ros2_control" or (out.ik is not None and out.ik.joint_command == "joint_trajectory"):
            return JointTrajectory
        if out.contract == "isaac" or (out.ik is not None and out.ik.joint_command == "joint_state"):
            return JointState
        raise SystemExit(f"{self.robot.path}: output.contract '{out.contract}' cannot drive the panda_reach "
                         "simulation, which takes joint positions: use ros2_control, isaac, or cartesian "
                         "with output.joint_names and output.ik")

    def on_parameters(self, params) -> SetParametersResult:
        """`clock_offset_s` changed at run time: the sim clock jumps by the change. Nothing else
        changes while running (read-only parameters are refused by rclpy before this is called)."""
        fixed = [param.name for param in params if param.name != "clock_offset_s"]
        if fixed:
            return SetParametersResult(successful=False, reason=f"{', '.join(fixed)}: not changeable while the "
                                                                f"simulation runs")
        for param in params:
            jump = float(param.value) - self.clock_offset_s
            if self.sim_time + jump < 0:
                return SetParametersResult(successful=False, reason=f"clock_offset_s: a jump of {jump:+.3f} s "
                                           f"would take sim time {self.sim_time:.3f} s below zero")
            self.clock_offset_s = float(param.value)
            self.sim_time += jump
            self.reset_stamp = self.sim_time         # the new timeline starts here
            self.latest_command = self.latest_trajectory = None      # stamped on the old timeline
            self.latest_command_time = -np.inf
            self.get_logger().warning(f"clock_offset_s: sim time jumped {jump:+.3f} s to {self.sim_time:.3f} s")
        return SetParametersResult(successful=True)

    # ---- publishing ---------------------------------------------------------------------
    def publish_state(self, render: bool, images: bool = True) -> None:
        """Publish everything for the current sim time; `images`: also (re-)publish the camera frames
        (stamped when rendered), False on a step whose frame was not rendered (camera_period_steps)."""
        stamp = to_stamp(self.sim_time)
        self.clock_pub.publish(Clock(clock=stamp))
        if render or not self.frames:
            rendered = self.sim.render()
            self.frames = {c.name: rendered[m] for c, m in self.cameras}
            self.frame_stamp = stamp
        for cam, _ in self.cameras if images else ():
            self.image_pubs[cam.name].publish(image_msg(_encode(self.frames[cam.name], cam.encoding),
                                                        self.frame_stamp, f"camera_{cam.name}", cam.encoding))
        names, pos, vel = self.sim.joint_state()
        js = JointState(name=names, position=pos.tolist(), velocity=vel.tolist())
        js.header.stamp = stamp
        self.joint_pub.publish(js)
        xyz, quat = self.sim.ee_pose()
        pose = PoseStamped()
        pose.header.stamp, pose.header.frame_id = stamp, getattr(self.sim, "frame_id", "world")
        pose.pose.position.x, pose.pose.position.y, pose.pose.position.z = map(float, xyz)
        (pose.pose.orientation.x, pose.pose.orientation.y,
         pose.pose.orientation.z, pose.pose.orientation.w) = map(float, quat)
        self.ee_pub.publish(pose)
        env = StateVector(values=self.sim.env_state.astype(np.float32).tolist(), step=self.sim.step_index,
                          success=int(bool(self.sim.success)))
        env.header.stamp = stamp
        self.env_pub.publish(env)
        self.success_pub.publish(Bool(data=self.sim.success))
        self.last_publish_wall = time.monotonic()

    def advance(self, action) -> None:
        pending = self.pending_perturbation
        if pending is not None and self.sim.step_index + 1 >= pending.at_step:
            self.apply_perturbation(pending)
        self.sim.step(action)
        self.sim_time += self.sim.dt
        render = self.sim.step_index % self.camera_period_steps == 0
        self.publish_state(render=render, images=render)

    # ---- inputs -------------------------------------------------------------------------
    def parse_command(self, msg: ActionCommand):
        if list(msg.names) and list(msg.names) != list(self.action_names):
            return None, f"names {list(msg.names)} differ from {self.action_names}"
        values = np.asarray(msg.values, dtype=np.float64)
        if values.shape != (len(self.action_names),) or not np.all(np.isfinite(values)):
            return None, f"values {values.tolist()} are not {len(self.action_names)} finite numbers"
        return values, ""

    def on_command(self, msg: ActionCommand) -> None:
        values, reason = self.parse_command(msg)
        if values is None:
            self.commands_rejected += 1
            self.get_logger().error(f"{self.robot.config.output.command_topic}: command rejected: {reason}",
                                    throttle_duration_sec=1.0)
            return
        if self.lockstep:
            # Step only for a command that answers the current state; one stamped for an older
            # state (in flight across a reset, or re-sent) must not move the scene.
            if abs(to_sec(msg.header.stamp) - self.sim_time) > 1e-6:
                self.commands_stale += 1
                return
            self.advance(values)
        elif to_sec(msg.header.stamp) < self.reset_stamp - 1e-9:    # sent for the scene before the last reset
            self.commands_stale += 1
        else:
            self.latest_command, self.latest_command_time = values, to_sec(msg.header.stamp)

    def health_figures(self) -> dict:
        """What /diagnostics reports: sim time, real-time factor, step, commands refused or stale."""
        now, (then, sim_then) = time.monotonic(), self.steps_window
        self.steps_window = (now, self.sim_time)
        figures = {"sim": self.sim_name, "task": self.sim.task, "lockstep": self.lockstep, "sim_time_s": self.sim_time,
                   "real_time_factor": (self.sim_time - sim_then) / max(now - then, 1e-6), "step": self.sim.step_index,
                   "success": bool(self.sim.success), "commands_rejected": self.commands_rejected,
                   "commands_stale": self.commands_stale, "perturbations_applied": self.perturbations_applied}
        if self.pace is not None:        # free-running: the pace asked for and the one kept
            figures.update(real_time_factor_requested=self.real_time_factor,
                           real_time_factor_reached=self.pace.reached(), pace_deficit=self.pace.deficit())
        return figures

    def on_trajectory_goal(self, goal_handle):
        """A FollowJointTrajectory goal (robot files with output.trajectory_action), taken as a
        trajectory message is. The embedded controller answers when it has taken the trajectory
        (INVALID_JOINTS / INVALID_GOAL / OLD_HEADER_TIMESTAMP when it cannot), not when the
        motion ends as a JointTrajectoryController does."""
        from control_msgs.action import FollowJointTrajectory

        Result = FollowJointTrajectory.Result
        problem = self.on_joint_command(goal_handle.request.trajectory)
        if problem is None:
            goal_handle.succeed()
            return Result(error_code=Result.SUCCESSFUL)
        goal_handle.abort()
        code = {"joints": Result.INVALID_JOINTS, "stale": Result.OLD_HEADER_TIMESTAMP}.get(problem[0],
                                                                                         Result.INVALID_GOAL)
        return Result(error_code=code, error_string=problem[1])

    def on_joint_command(self, msg) -> tuple[str, str] | None:
        """JointTrajectory or JointState joint positions for the panda_reach arm; (kind, why) when
        the command is not taken."""
        topic = self.robot.config.output.command_topic
        stamp = to_sec(msg.header.stamp)
        try:
            current = self.sim.joint_targets
            if isinstance(msg, JointTrajectory):
                if not msg.points:
                    raise JointCommandError("trajectory without points")
                points = [joint_vector(msg.joint_names, pt.positions, self.sim.action_names, current)
                          for pt in msg.points]
                times = check_times([to_sec(pt.time_from_start) for pt in msg.points])
            else:
                points, times = [joint_vector(msg.name, msg.position, self.sim.action_names, current)], [0.0]
        except JointCommandError as exc:
            self.commands_rejected += 1
            self.get_logger().error(f"{topic}: command rejected: {exc}", throttle_duration_sec=1.0)
            return ("joints" if "joint" in str(exc) else "goal", str(exc))
        if self.lockstep:
            if abs(stamp - self.sim_time) > 1e-6:   # answers an older state: must not move the arm
                self.commands_stale += 1
                return "stale", f"stamp {stamp:.4f} s answers an older state (sim time {self.sim_time:.4f} s)"
            self.advance(sample_trajectory(current, stamp, times, points, self.sim_time + self.sim.dt))
        elif stamp and stamp < self.reset_stamp - 1e-9:      # sent for the arm before the last reset
            self.commands_stale += 1
            return "stale", f"stamp {stamp:.4f} s is before the last reset ({self.reset_stamp:.4f} s)"
        else:  # a zero stamp means "start now", as for a JointTrajectoryController
            self.latest_trajectory = (current, stamp or self.sim_time, times, points)
            self.latest_command_time = stamp or self.sim_time
        return None

    def on_perturb(self, request, response):
        """Take a perturbation of the current episode: applied before step `at_step` (0: the next)."""
        try:
            perturbation = Perturbation(request.kind, tuple(request.offset_m),
                                        int(request.at_step) or self.sim.step_index + 1)
            kinds = self.sim.perturbation_kinds()
            if request.kind not in kinds:
                raise ValueError(f"kind '{request.kind}' not available for the {self.sim_name} task "
                                 f"'{self.sim.task}' (available: {', '.join(kinds) or 'none'})")
            if perturbation.at_step <= self.sim.step_index:
                raise ValueError(f"at_step {perturbation.at_step} has passed (the episode is at step "
                                 f"{self.sim.step_index})")
        except ValueError as exc:
            response.success, response.message = False, f"{SERVICES['sim_perturb']}: {exc}"
            return response
        self.pending_perturbation = perturbation
        response.success = True
        response.message = f"{perturbation.kind} perturbation scheduled before step {perturbation.at_step}"
        return response

    def apply_perturbation(self, perturbation: Perturbation) -> None:
        self.pending_perturbation = None
        applied = self.sim.perturb(perturbation.kind, perturbation.offset_m)
        self.perturbations_applied += 1
        self.get_logger().info(f"perturbation: {perturbation.kind} moved {np.round(applied, 3).tolist()} m before "
                               f"step {self.sim.step_index + 1} (t {self.sim_time:.4f} s)")

    def on_reset(self, request, response):
        task = request.task or self.sim.task
        # the episode ends where its step limit says, here where steps happen: a free-running or
        # async graph would otherwise step on while the task runner disarms
        self.sim.max_steps = min(request.max_steps or self.max_steps, self.max_steps)
        try:
            self.sim.reset(task, request.seed)
        except ValueError as exc:
            response.success, response.message = False, str(exc)
            return response
        self.sim_time += self.sim.dt  # keep sim time monotonic across episodes
        self.reset_stamp = self.sim_time
        self.latest_command = self.latest_trajectory = None
        self.pending_perturbation = None             # a perturbation belongs to the episode it was asked in
        self.publish_state(render=True)
        response.success = True
        response.instruction = request.instruction or self.instruction_for(task)
        response.stamp = to_stamp(self.sim_time)
        response.message = f"reset {self.sim.task} seed {request.seed}"
        return response

    # ---- timers -------------------------------------------------------------------------
    def republish_if_idle(self) -> None:
        if time.monotonic() - self.last_publish_wall >= self.republish_period_s:
            self.publish_state(render=False)

    def warn_if_behind(self) -> None:
        """Say so (every 10 s of wall time at most) when the requested pace is out of reach."""
        deficit, now = self.pace.deficit(), time.monotonic()
        if deficit is None or deficit <= 0.1 or not self.pace.full or now - self.pace_warned < 10.0:
            return
        self.pace_warned = now
        self.get_logger().warning(
            f"real_time_factor {self.real_time_factor:g} out of reach: {self.pace.reached():.2f} reached over the "
            f"last {len(self.pace.step_times)} steps (a step, its rendering and publishing included, takes longer "
            f"than its {self.sim.dt / self.real_time_factor * 1e3:.1f} ms of wall time); running evenly slower")

    def free_run_step(self) -> None:
        self.pace.on_step()
        self.warn_if_behind()
        if self.joint_command_type is not None:    # position control: follow the trajectory, else hold
            action = self.sim.joint_targets
            if self.latest_trajectory is not None:
                action = sample_trajectory(*self.latest_trajectory, self.sim_time + self.sim.dt)
            self.advance(action)
            return
        # in sim time: at a low real-time factor a wall-clock timeout would call every command stale
        fresh = (self.latest_command is not None
                 and self.sim_time - self.latest_command_time <= self.command_timeout_s + 1e-9)
        if fresh:
            action = self.latest_command
        else:  # commands stopped: hold still as the executor would (a zero step, the last grip kept)
            action = hold_command(self.action.space, self.action.dim, self.gripper_index, self.latest_command)
        self.advance(action)

    def close(self) -> None:
        self.sim.close()


def _encode(frame: np.ndarray, encoding: str) -> np.ndarray:
    """An RGB frame in a camera's encoding (rgb8, bgr8 or mono8)."""
    if encoding == "bgr8":
        return frame[:, :, ::-1]
    if encoding == "mono8":
        return frame.mean(axis=2).astype(np.uint8)
    return frame


def main(args=None):
    run_node(SimBridgeNode, args)


if __name__ == "__main__":
    main()
