"""executor: plays action chunks into the robot's command contract through the safety gate.

lockstep=true: one control tick per new robot state (the simulator advances one step per
command, so nothing is sent while waiting for a chunk). lockstep=false: a control timer at the
embodiment's rate on the node clock (sim time with use_sim_time), holding still when starved.
Publishes ExecutionFeedback (requests, executed actions, leftover) and latched ExecutorStatus.
"""

from __future__ import annotations

import time

import numpy as np
from rclpy.clock import Clock, ClockType
from geometry_msgs.msg import PoseStamped
from rclpy.node import Node
from sensor_msgs.msg import JointState
from vla_msgs.msg import ActionChunk, ExecutionFeedback, ExecutorStatus
from vla_msgs.srv import EmergencyStop, ResetEpisode, SetArmed

from ..core.action_queue import Chunk
from ..core.executor import ChunkExecutor
from ..core.state import StateAssemblyError, assemble_state
from .command_contracts import CommandPublisher
from .common import LATCHED_QOS, RELIABLE_QOS, SERVICES, TOPICS, load_robot_or_exit, run_node, to_sec, to_stamp


class ExecutorNode(Node):
    def __init__(self, **kwargs):
        super().__init__("executor", **kwargs)
        p = self.declare_parameter
        self.robot = load_robot_or_exit(self, p("robot", "metaworld_sawyer").value)
        cfg = self.robot.config
        self.lockstep = bool(p("lockstep", True).value)
        self.feedback_every = max(1, int(p("feedback_every", 4).value))
        try:
            self.core = ChunkExecutor(self.robot, mode=p("mode", "sync").value, lockstep=self.lockstep,
                                      dry_run=bool(p("dry_run", False).value),
                                      max_state_age_s=float(p("max_state_age_s", 0.25).value))
            self.commands = CommandPublisher(self, self.robot)
        except ValueError as exc:
            self.get_logger().fatal(str(exc))
            raise SystemExit(2) from None
        if bool(p("armed_at_start", False).value):
            self.core.set_armed(True)
        self.state_sources = cfg.state.sources
        self.joint_state: JointState | None = None
        self.ee_pose = None
        self.state_stamp: float | None = None
        self.answered_stamp = float("-inf")   # newest state stamp a command was sent for (lockstep)
        self.ticks_since_feedback = 0
        self.last_sent = None
        self.commands_resent = 0
        self.request_timeout_s = float(p("request_timeout_s", 2.0).value)
        self.request_wall_time = 0.0
        self.request_retries = 0

        self.feedback_pub = self.create_publisher(ExecutionFeedback, TOPICS["feedback"], RELIABLE_QOS)
        self.status_pub = self.create_publisher(ExecutorStatus, TOPICS["executor_status"], LATCHED_QOS)
        self.create_subscription(ActionChunk, TOPICS["action_chunk"], self.on_chunk, RELIABLE_QOS)
        self.create_subscription(JointState, cfg.state.joint_states_topic, self.on_joint_state, RELIABLE_QOS)
        if cfg.state.ee_pose_topic:
            self.create_subscription(PoseStamped, cfg.state.ee_pose_topic, self.on_ee_pose, RELIABLE_QOS)
        self.create_service(ResetEpisode, SERVICES["executor_reset"], self.on_reset)
        self.create_service(SetArmed, SERVICES["set_armed"], self.on_set_armed)
        self.create_service(EmergencyStop, SERVICES["estop"], self.on_estop)
        if not self.lockstep:
            self.create_timer(cfg.action.dt, self.control_tick)
        self.create_timer(float(p("status_period_s", 0.5).value), self.publish_status)
        self.create_timer(0.5, self.retry_request, clock=Clock(clock_type=ClockType.STEADY_TIME))
        self.publish_status()
        self.get_logger().info(f"executor ready: {cfg.output.contract} -> {cfg.output.command_topic}, "
                               f"mode {self.core.mode}, lockstep={self.lockstep}, dry_run={self.core.dry_run}")

    def now(self) -> float:
        return self.get_clock().now().nanoseconds * 1e-9

    # ---- inputs -------------------------------------------------------------------------
    def on_joint_state(self, msg: JointState) -> None:
        self.joint_state = msg
        self.state_stamp = to_sec(msg.header.stamp)
        if self.lockstep:
            self.lockstep_tick()

    def on_ee_pose(self, msg: PoseStamped) -> None:
        p, q = msg.pose.position, msg.pose.orientation
        self.ee_pose = (p.x, p.y, p.z, q.x, q.y, q.z, q.w)

    def on_chunk(self, msg: ActionChunk) -> None:
        actions = np.asarray(msg.actions, dtype=np.float64)
        normalized = np.asarray(msg.actions_normalized, dtype=np.float64)
        dim = int(msg.action_dim) or 1
        if normalized.size != actions.size:
            normalized = np.zeros_like(actions)
        if list(msg.action_names) != list(self.robot.config.action.names) or msg.action_space != self.core.space:
            self.get_logger().error(f"{TOPICS['action_chunk']}: chunk {msg.chunk_id} rejected: action "
                                    f"{msg.action_space} {list(msg.action_names)} does not match the robot's "
                                    f"{self.core.space} {self.robot.config.action.names}")
            self.core.counters["chunks_rejected"] += 1
            return
        chunk = Chunk(msg.chunk_id, to_sec(msg.header.stamp), float(msg.dt) or self.core.dt,
                      actions.reshape(-1, dim) if actions.size % dim == 0 else actions,
                      normalized.reshape(-1, dim) if normalized.size % dim == 0 else normalized,
                      int(msg.start_index), msg.episode_id)
        ok, why = self.core.on_chunk(chunk, self.state_stamp if self.lockstep else self.now())
        if not ok:
            self.get_logger().warning(f"{TOPICS['action_chunk']}: chunk {msg.chunk_id} (t0 {chunk.t0:.4f}, episode "
                                   f"'{chunk.episode_id}') not executed: {why}", throttle_duration_sec=1.0)
        if ok and self.lockstep:
            self.lockstep_tick()

    def on_reset(self, request, response):
        self.core.reset(request.episode_id, self.now())
        self.last_sent = None
        response.success, response.message = True, f"executor reset for episode '{request.episode_id}'"
        return response

    def on_set_armed(self, request, response):
        response.success, response.message = self.core.set_armed(request.armed)
        if response.success and request.armed and self.lockstep:
            self.lockstep_tick()
        self.publish_status()
        return response

    def on_estop(self, request, response):
        response.success, response.message = self.core.emergency_stop(request.engage, request.clear, request.reason)
        response.estop = self.core.estop
        if request.engage:
            self.get_logger().warning(response.message)
        self.publish_status()
        return response

    # ---- control ------------------------------------------------------------------------
    def lockstep_tick(self) -> None:
        """Tick for the newest state until a command was sent for it (retried on chunk or arming).
        A re-published state that was already answered gets the same command again: the
        simulator steps only on a command stamped with its current time, so this is safe."""
        if self.state_stamp is None:
            return
        if self.state_stamp <= self.answered_stamp:
            if self.state_stamp == self.answered_stamp and self.last_sent is not None and self.core.armed:
                self.commands.publish(self.last_sent, self.answered_stamp)
                self.commands_resent += 1
            return
        if self.run_tick(self.state_stamp):
            self.answered_stamp = self.state_stamp

    def retry_request(self) -> None:
        """Ask again for a chunk that has not come (a lost request or chunk must not stall the robot)."""
        if self.core.armed and self.core.awaiting_chunk and \
                time.monotonic() - self.request_wall_time > self.request_timeout_s:
            self.request_retries += 1
            self.get_logger().warning(f"no chunk {self.request_timeout_s:.1f} s after the request; asking again "
                                   f"({self.request_retries} retries so far)")
            self.publish_feedback(self.core.request_time, True)

    def control_tick(self) -> None:
        self.run_tick(self.now())

    def run_tick(self, now: float) -> bool:
        """Run the core for time `now`; publish the command and feedback. True if a command was sent."""
        result = self.core.tick(now, self.state_stamp)
        if result.command is not None and not self.core.dry_run:
            self.commands.publish(result.command, now)
            self.last_sent = result.command
        self.ticks_since_feedback += 1
        if result.request_chunk or self.ticks_since_feedback >= self.feedback_every:
            self.publish_feedback(now, result.request_chunk)
        return result.command is not None

    def publish_feedback(self, now: float, request: bool) -> None:
        executed, leftover = self.core.take_feedback()
        msg = ExecutionFeedback(episode_id=self.core.episode_id, action_dim=self.core.dim,
                                request_chunk=request, executed_count=len(executed))
        msg.header.stamp = to_stamp(now)
        chunk = self.core.current_chunk
        msg.chunk_id = chunk.chunk_id if chunk else 0
        msg.executed_index = -1
        msg.leftover_normalized = leftover.astype(np.float32).ravel().tolist()
        msg.executed_actions = executed.astype(np.float32).ravel().tolist()
        msg.request_after = to_stamp(now)
        if request:
            self.request_wall_time = time.monotonic()
        if self.joint_state is not None:
            try:
                state = assemble_state(self.state_sources, list(self.joint_state.name),
                                       list(self.joint_state.position), self.ee_pose)
                msg.state_names, msg.state = list(self.robot.config.state.names), state.tolist()
            except StateAssemblyError:
                pass
        self.feedback_pub.publish(msg)
        self.ticks_since_feedback = 0

    def publish_status(self) -> None:
        c, gate = self.core.counters, self.core.gate.counters
        p50, p95 = self.core.latency_percentiles()
        holding = self.core.estop or not self.core.armed or self.core.awaiting_chunk
        reason = "e-stop" if self.core.estop else "disarmed" if not self.core.armed else \
            "waiting for chunk" if self.core.awaiting_chunk else ""
        msg = ExecutorStatus(mode=self.core.mode, contract=self.commands.contract, armed=self.core.armed,
                             estop=self.core.estop, dry_run=self.core.dry_run, holding=holding,
                             hold_reason=reason,
                             queue_depth=len(self.core.queue), commands_sent=c["commands_sent"],
                             chunks_received=c["chunks_received"],
                             chunks_rejected=c["chunks_rejected"] + gate.chunks_rejected,
                             actions_skipped_stale=self.core.queue.skipped_stale, starved_ticks=c["starved_ticks"],
                             clamp_count=gate.commands_clamped, stale_holds=c["stale_holds"],
                             latency_ms_p50=p50 * 1e3, latency_ms_p95=p95 * 1e3)
        msg.header.stamp = self.get_clock().now().to_msg()
        self.status_pub.publish(msg)


def main(args=None):
    run_node(ExecutorNode, args)


if __name__ == "__main__":
    main()
