"""executor: plays action chunks into the robot's command contract through the safety gate.

lockstep=true: one control tick per new robot state (the simulator advances one step per
command, so nothing is sent while waiting for a chunk). lockstep=false: a control loop at the
executor's control rate, holding still when starved: on the node clock through a ROS timer when
use_sim_time is set, otherwise on a dedicated thread with absolute wall-clock deadlines (no
drift, low jitter). Publishes ExecutionFeedback (requests, executed actions, RTC prefix) and a
latched ExecutorStatus; with dry_run the would-be commands go to /vla/executor/dry_run_command
only. Reacts to the imagination monitor (replan: ask for a new chunk now; hold: drop the plan).
Chunks and robot states that cannot be used are dropped, logged with the topic and field, and
counted by reason in the core's `rejections`.
With `stats_file` set, writes its counters, latency, loop jitter and command log as JSON at exit.
Parameters (PARAMETERS, `ros2 param describe /executor <name>`) are read at configure, except the
live ones, applied while running: `dry_run`, `max_state_age_s` and `latency_margin_s`.
"""

from __future__ import annotations

import json
import math
import os
import sys
import threading
import time
from pathlib import Path

import numpy as np
from rclpy.clock import Clock, ClockType
from geometry_msgs.msg import PoseStamped
from rcl_interfaces.msg import SetParametersResult
from sensor_msgs.msg import JointState
from vla_msgs.msg import ActionChunk, ActionCommand, ExecutionFeedback, ExecutorStatus, ImaginationDivergence
from vla_msgs.srv import EmergencyStop, ResetEpisode, SetArmed

from ..core.action_correction import ActionCorrection
from ..core.action_queue import Chunk
from ..core.embodiment import EmbodimentConfigError, load_robot, project_path
from ..core.executor import ChunkExecutor
from ..core.executor_stats import ExecutorStats
from ..core.simulated_delay import SimulatedDelay
from ..core.monitor_reaction import MonitorReaction
from ..core.motion_limiter import POSITION_SPACES
from ..core.state import (StateAssemblyError, assemble_state, joint_state_problem, problem_field, state_joints,
                          values_problem)
from ..core.health import ERROR, WARN, Above, AboveShare, Flag
from .command_contracts import CommandPublisher
from .diagnostics import Diagnostics
from .managed import ManagedNode
from .parameters import ROBOT, Param, live_names
from .common import LATCHED_QOS, RELIABLE_QOS, SERVICES, TOPICS, load_robot_or_exit, run_node, to_sec, to_stamp


class ExecutorNode(ManagedNode):
    PARAMETERS = (
        ROBOT,
        Param("lockstep", True, "one control tick per new robot state (a lockstep simulator); false: a control loop "
                                "at the control rate"),
        Param("dry_run", False, "compute and report, command nothing: would-be commands go to "
                                "/vla/executor/dry_run_command only; leaving dry-run is refused while armed",
              live=True),
        Param("armed_at_start", False, "arm at configure (otherwise /vla/executor/set_armed arms)"),
        Param("max_state_age_s", 0.25, "hold still when the measured robot state is older than this (s)",
              (0.001, 60.0), live=True),
        Param("feedback_every", 4, "ExecutionFeedback every this many control ticks (requests go at once)",
              (1, 100000)),
        Param("request_timeout_s", 2.0, "ask again for a chunk that has not come this long after the request "
                                        "(wall s)", (0.1, 3600.0)),
        Param("monitor_consecutive", 3, "imagination monitor: exceeded frames in a row before re-planning / holding",
              (1, 100000)),
        Param("simulated_delay_steps", [0], "lockstep rehearsal of an inference delay: a chunk requested at control "
                                            "step t runs from step t + d; one value: d fixed, several: d drawn per "
                                            "request; [0] = none (control steps, >= 0)"),
        Param("simulated_delay_seed", 0, "seed of the simulated delays' draws (with the task and episode seed)",
              (0, 2 ** 31 - 1)),
        Param("correction", "", "per-step action correction head to load (core/action_correction.py; relative: to "
                                "the project); \"\" = none"),
        Param("status_period_s", 0.5, "ExecutorStatus every this many seconds (node clock, s)", (0.01, 60.0)),
        Param("control_thread_priority", 0, "free-running on the wall clock: SCHED_FIFO priority of the control "
                                            "loop (0 = normal scheduling)", (0, 99)),
        Param("gil_switch_interval_s", 0.0005, "free-running on the wall clock: Python's thread switch interval, so "
                                               "the control loop gets the interpreter when its deadline comes (s)",
              (1e-6, 0.1)),
        Param("stats_file", "", "write counters, latency, loop jitter and the command log here as JSON at exit; "
                                "\"\" = none"),
    )

    def __init__(self, **kwargs):
        super().__init__("executor", **kwargs)
        self.live = live_names(self.parameter_rows.values())
        self.add_on_set_parameters_callback(self.on_parameters)

    def more_parameters(self) -> tuple[Param, ...]:
        """The robot file's executor section, each key a parameter with the file's value as its
        default (a robot file that does not load fails configure, named)."""
        try:
            cfg = load_robot(self.params.robot).config
        except (EmbodimentConfigError, FileNotFoundError):
            return ()
        e = cfg.executor
        return (
            Param("mode", e.mode, "how chunks are executed; default and \"\": the robot file's executor.mode",
                  constraints="sync | async | async_rtc"),
            Param("merge", e.merge, "where chunks overlap; default and \"\": the robot file's executor.merge",
                  constraints="replace | ensemble | average"),
            Param("interpolation", e.interpolation, "sampling at the control rate; default and \"\": the robot "
                                                    "file's executor.interpolation",
                  constraints="nearest | linear | smooth"),
            Param("control_rate_hz", float(e.control_rate_hz or cfg.action.control_rate_hz),
                  "controller rate (Hz; position action spaces may run faster than the policy); default: the robot "
                  "file's executor.control_rate_hz, else its action rate", (0.1, 10000.0)),
            Param("latency_margin_s", float(e.latency_margin_s),
                  "async: ask for the next chunk when the plan left falls to the measured delay + this margin + one "
                  "period (s); default: the robot file's executor.latency_margin_s", (0.0, 10.0), live=True),
            Param("ensemble_decay", float(e.ensemble_decay), "temporal ensembling: weight exp(-decay x rank); "
                                                             "default: the robot file's executor.ensemble_decay",
                  (0.0, 100.0)),
            Param("ensemble_chunks", int(e.ensemble_chunks), "temporal ensembling: only the newest N chunks vote "
                                                             "(0 = all); default: the robot file's "
                                                             "executor.ensemble_chunks", (0, 10000)),
        )

    def setup(self) -> None:
        """configure: the robot file, the topics and services, everything the node keeps."""
        p = self.params
        self.robot = load_robot_or_exit(self, p.robot)
        cfg = self.robot.config
        self.lockstep = p.lockstep
        self.feedback_every = p.feedback_every
        # the robot YAML's executor section, as the parameters override it ("" keeps the file's choice)
        overrides = {"merge": p.merge, "interpolation": p.interpolation, "control_rate_hz": p.control_rate_hz,
                     "latency_margin_s": p.latency_margin_s, "ensemble_decay": p.ensemble_decay,
                     "ensemble_chunks": p.ensemble_chunks}
        overrides = {k: v for k, v in overrides.items() if v != ""}
        # lockstep rehearsal of an inference delay: chunks released d control steps after their observation
        delay_steps = list(p.simulated_delay_steps)
        self.lock = threading.RLock()
        self.stats_file = p.stats_file
        self.activity = ExecutorStats()
        try:
            if any(delay_steps) and not self.lockstep:
                raise ValueError(f"parameter simulated_delay_steps {delay_steps}: a simulated delay needs "
                                 "lockstep=true (free-running, the delay is the real one)")
            # lockstep: a chunk runs from its observation's step + d, however long the model took (d = 0 default)
            delay = SimulatedDelay(delay_steps, p.simulated_delay_seed) if self.lockstep else None
            head = p.correction          # A2C2-style per-step correction head ("" = none)
            correction = ActionCorrection.load(project_path(head), self.robot) if head else None
            self.core = ChunkExecutor(self.robot, mode=p.mode or None, lockstep=self.lockstep, dry_run=p.dry_run,
                                      max_state_age_s=p.max_state_age_s, overrides=overrides,
                                      simulated_delay=delay, correction=correction)
            self.commands = CommandPublisher(self, self.robot)
        except ValueError as exc:
            self.get_logger().fatal(str(exc))
            raise SystemExit(2) from None
        if p.armed_at_start:
            self.core.set_armed(True)
        self.state_sources = cfg.state.sources
        # a joint state is a measurement only with every joint the state (and joint position commands) read
        self.required_joints = list(dict.fromkeys(
            state_joints(cfg.state.sources) + (list(cfg.action.names) if cfg.action.space == "joint_position" else [])))
        self.joint_state: JointState | None = None
        self.ee_pose = None
        self.state_stamp: float | None = None
        self.answered_stamp = float("-inf")   # newest state stamp a command was sent for (lockstep)
        self.ticks_since_feedback = 0
        self.last_sent = None
        self.commands_resent = 0
        self.request_timeout_s = p.request_timeout_s
        self.request_wall_time = 0.0
        self.request_retries = 0

        self.feedback_pub = self.create_publisher(ExecutionFeedback, TOPICS["feedback"], RELIABLE_QOS)
        self.dry_run_pub = self.create_publisher(ActionCommand, TOPICS["dry_run_command"], RELIABLE_QOS)
        self.create_subscription(ImaginationDivergence, TOPICS["divergence"], self.on_divergence, RELIABLE_QOS)
        self.monitor_reaction = MonitorReaction(self.core, p.monitor_consecutive)
        self.status_pub = self.create_publisher(ExecutorStatus, TOPICS["executor_status"], LATCHED_QOS)
        self.create_subscription(ActionChunk, TOPICS["action_chunk"], self.on_chunk, RELIABLE_QOS)
        self.create_subscription(JointState, cfg.state.joint_states_topic, self.on_joint_state, RELIABLE_QOS)
        if cfg.state.ee_pose_topic:
            self.create_subscription(PoseStamped, cfg.state.ee_pose_topic, self.on_ee_pose, RELIABLE_QOS)
        self.create_service(ResetEpisode, SERVICES["executor_reset"], self.on_reset)
        self.create_service(SetArmed, SERVICES["set_armed"], self.on_set_armed)
        self.create_service(EmergencyStop, SERVICES["estop"], self.on_estop)
        self.control_thread = None
        self.thread_priority = 0
        self.running = True
        if not self.lockstep:
            use_sim_time = bool(self.get_parameter("use_sim_time").value)
            if use_sim_time:
                self.create_timer(self.core.control_dt, self.control_tick)
            else:
                # the loop thread needs the GIL promptly when its deadline comes
                sys.setswitchinterval(p.gil_switch_interval_s)
                self.thread_priority = p.control_thread_priority
                if self.thread_priority > 1:
                    # the spinning thread shares the GIL with the loop: keep it from being preempted
                    # by other processes while it holds it (one level below the loop)
                    try:
                        os.sched_setscheduler(0, os.SCHED_FIFO, os.sched_param(self.thread_priority - 1))
                    except (PermissionError, OSError):
                        pass
                self.control_thread = threading.Thread(target=self.control_loop, name="control", daemon=True)
                self.control_thread.start()
        self.rate_window = (time.monotonic(), 0)        # (wall s, commands) at the last diagnostics
        self.diagnostics = Diagnostics(self, "execution", cfg.name, self.health_figures, [
            Flag("estop", ERROR, "emergency stop latched"),
            Above("outside_limits", None, 0, when=lambda f: True),
            self.state_age_check(),
            AboveShare("latency_ms_p95", "chunk_ms", 0.5, 1.0, " ms"),      # the delay against the chunk's span
            Flag("armed_holding", WARN, "armed but holding"),
            Above("controller_failures", 0, None)])
        self.create_timer(p.status_period_s, self.publish_status)
        self.create_timer(0.5, self.retry_request, clock=Clock(clock_type=ClockType.STEADY_TIME))
        self.publish_status()
        self.get_logger().info(f"executor ready: {cfg.output.contract} -> {cfg.output.command_topic}, "
                               f"mode {self.core.mode}, merge {self.core.settings.merge}, interpolation "
                               f"{self.core.settings.interpolation}, lockstep={self.lockstep}, "
                               f"dry_run={self.core.dry_run}"
                               + (f", simulated delay {self.core.simulated_delay.describe()}"
                                  if self.core.simulated_delay else ""))

    def now(self) -> float:
        return self.get_clock().now().nanoseconds * 1e-9

    # ---- inputs -------------------------------------------------------------------------
    def reject_state(self, topic: str, field: str, problem: str) -> None:
        """A robot state message that is not a measurement: the state goes stale and the robot holds."""
        self.core.counters["states_rejected"] += 1
        self.core.count_rejection(f"state: {field}")
        self.get_logger().error(f"{topic}: {problem} (ignored)", throttle_duration_sec=1.0)

    def on_joint_state(self, msg: JointState) -> None:
        problem = joint_state_problem(msg.name, msg.position, self.required_joints)
        if problem:
            self.reject_state(self.robot.config.state.joint_states_topic, problem_field(problem), problem)
            return
        self.joint_state = msg
        self.state_stamp = to_sec(msg.header.stamp)
        if self.lockstep:
            self.lockstep_tick()

    def on_ee_pose(self, msg: PoseStamped) -> None:
        p, q = msg.pose.position, msg.pose.orientation
        pose = (p.x, p.y, p.z, q.x, q.y, q.z, q.w)
        problem = values_problem("pose", pose)
        if problem:
            self.reject_state(self.robot.config.state.ee_pose_topic, "pose", problem)
            return
        self.ee_pose = pose

    def chunk_problem(self, msg: ActionChunk, actions: np.ndarray, normalized: np.ndarray) -> tuple[str, str]:
        """(field, why) for a chunk message that does not fit the robot, ("", "") if it does. Values
        are checked by the safety gate (core), the message layout here."""
        action = self.robot.config.action
        if msg.action_space != self.core.space:
            return "action_space", f"'{msg.action_space}', the robot executes '{self.core.space}'"
        if list(msg.action_names) != list(action.names):
            return "action_names", f"{list(msg.action_names)}, the robot's are {list(action.names)}"
        if msg.action_dim != self.core.dim:
            return "action_dim", f"{msg.action_dim}, the robot has {self.core.dim} ({', '.join(action.names)})"
        if msg.horizon == 0 or actions.size != msg.horizon * msg.action_dim:
            return "horizon", f"{actions.size} values in 'actions' do not form horizon {msg.horizon} x {msg.action_dim}"
        if not (math.isfinite(msg.dt) and msg.dt > 0):
            return "dt", f"{msg.dt} s between actions (must be finite and > 0)"
        if normalized.size not in (0, actions.size) or not np.all(np.isfinite(normalized)):
            return "actions_normalized", f"{normalized.size} values (expected {actions.size}, finite, or none)"
        return "", ""

    def on_chunk(self, msg: ActionChunk) -> None:
        actions = np.asarray(msg.actions, dtype=np.float64)
        normalized = np.asarray(msg.actions_normalized, dtype=np.float64)
        field, why = self.chunk_problem(msg, actions, normalized)
        now = self.state_stamp if self.lockstep else self.now()
        if not field and now is None:
            field, why = "header.stamp", "no robot state received yet (lockstep ticks on states)"
        if field:
            self.get_logger().error(f"{TOPICS['action_chunk']}: chunk {msg.chunk_id} rejected: field '{field}': "
                                    f"{why}", throttle_duration_sec=1.0)
            self.core.counters["chunks_rejected"] += 1
            self.core.count_rejection(f"chunk: {field}")
            return
        dim = self.core.dim
        normalized = normalized if normalized.size else np.zeros_like(actions)
        chunk = Chunk(msg.chunk_id, to_sec(msg.header.stamp), float(msg.dt), actions.reshape(-1, dim),
                      normalized.reshape(-1, dim), int(msg.start_index), msg.episode_id, int(msg.prefix_length))
        with self.lock:
            answers_request = self.core.awaiting_chunk
            ok, why = self.core.on_chunk(chunk, now)
        if ok and answers_request:
            self.activity.on_round_trip((time.monotonic() - self.request_wall_time) * 1e3)
        if not ok:
            self.get_logger().warning(f"{TOPICS['action_chunk']}: chunk {msg.chunk_id} (t0 {chunk.t0:.4f}, episode "
                                   f"'{chunk.episode_id}') not executed: {why}", throttle_duration_sec=1.0)
        if ok and self.lockstep:
            self.lockstep_tick()

    def on_divergence(self, msg: ImaginationDivergence) -> None:
        """The imagination monitor's verdict on one imagined frame (core/monitor_reaction.py)."""
        with self.lock:
            outcome = self.monitor_reaction.on_verdict(msg.episode_id, msg.exceeded, msg.action, self.now())
        if outcome == "dry_run":
            self.get_logger().info(f"{TOPICS['divergence']}: would {msg.action} (dry run)", throttle_duration_sec=1.0)
        elif outcome == "applied":
            self.get_logger().warning(f"{TOPICS['divergence']}: divergence {msg.divergence:.3f} > "
                                      f"{msg.threshold:.3f} on chunk {msg.chunk_id}: {msg.action}",
                                      throttle_duration_sec=1.0)

    def on_reset(self, request, response):
        with self.lock:
            self.core.reset(request.episode_id, self.now(), request.task, int(request.seed))
            self.activity.on_reset(self.now(), request.episode_id)
        self.last_sent = None
        response.success, response.message = True, f"executor reset for episode '{request.episode_id}'"
        return response

    def on_set_armed(self, request, response):
        if request.armed and not self.active:
            response.success = False
            response.message = "executor is inactive (lifecycle): activate it before arming"
            self.get_logger().warning(response.message)
            return response
        response.success, response.message = self.core.set_armed(request.armed)
        if response.success and request.armed and not self.lockstep:
            age = None if self.state_stamp is None else self.now() - self.state_stamp
            if age is None or abs(age) > self.core.max_state_age_s:
                # armed, but nothing moves until a fresh state comes: say so to whoever armed
                seen = "no robot state received" if age is None else f"robot state {age:.3f} s old"
                response.message += (f"; holding still: {seen} on {self.robot.config.state.joint_states_topic} "
                                      f"(max_state_age_s {self.core.max_state_age_s})")
                self.get_logger().warning(response.message)
        if response.success and request.armed and self.lockstep:
            self.lockstep_tick()
        self.publish_status()
        return response

    def on_parameters(self, params) -> SetParametersResult:
        """The live parameters, applied while running: `dry_run` (`ros2 param set /executor dry_run
        false` once the operator has watched the would-be commands; leaving dry-run is refused while
        armed), `max_state_age_s` (the stale-state hold and its /diagnostics level) and
        `latency_margin_s` (the next request's lead). Any other change is refused (rclpy refuses the
        read-only ones before this is called); unconfigured, the values wait for configure."""
        fixed = [param.name for param in params if param.name not in self.live]
        if fixed:
            return SetParametersResult(successful=False, reason=f"{', '.join(fixed)}: not changeable while the "
                                                                "executor runs (read at configure)")
        if not self.configured:
            return SetParametersResult(successful=True)
        values = {param.name: param.value for param in params}
        with self.lock:
            if values.get("dry_run") is False and self.core.dry_run and self.core.armed:
                return SetParametersResult(successful=False,
                                           reason="dry_run: disarm first (/vla/executor/set_armed armed: false)")
            if "max_state_age_s" in values:
                self.core.max_state_age_s = values["max_state_age_s"]
                self.diagnostics.checks = [self.state_age_check() if getattr(c, "key", "") == "state_age_ms" else c
                                           for c in self.diagnostics.checks]
            if "latency_margin_s" in values:
                self.core.settings = self.core.settings.model_copy(
                    update={"latency_margin_s": values["latency_margin_s"]})
            if "dry_run" in values:
                self.core.dry_run = values["dry_run"]
        for name, value in values.items():
            target = TOPICS["dry_run_command"] if value else self.robot.config.output.command_topic
            self.get_logger().warning(f"{name}={value}" + (f": commands go to {target}" if name == "dry_run" else ""))
        self.publish_status()
        return SetParametersResult(successful=True)

    def state_age_check(self) -> Above:
        """/diagnostics: robot state older than max_state_age_s while armed is an ERROR, half of it a WARN."""
        limit_ms = 1e3 * self.core.max_state_age_s
        return Above("state_age_ms", 0.5 * limit_ms, limit_ms, " ms", when=lambda f: f["armed"])

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
        if self.state_stamp < self.answered_stamp - 1e-9:     # the clock went back: a new timeline
            self.answered_stamp = float("-inf")
        if self.state_stamp <= self.answered_stamp:
            if self.state_stamp == self.answered_stamp and self.last_sent is not None and self.core.armed:
                self.send(self.last_sent, self.answered_stamp)
                self.commands_resent += 1
            return
        if self.run_tick(self.state_stamp):
            self.answered_stamp = self.state_stamp

    def send(self, command: np.ndarray, stamp: float) -> None:
        """A gated command to the robot's contract, or in dry-run to /vla/executor/dry_run_command only."""
        if self.core.dry_run:
            cmd = ActionCommand(action_space=self.core.space, names=list(self.robot.config.action.names),
                                values=[float(v) for v in command])
            cmd.header.stamp = to_stamp(stamp)
            self.dry_run_pub.publish(cmd)
        else:
            self.commands.publish(command, stamp)

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

    def control_loop(self) -> None:
        """Wall-clock control loop: absolute deadlines, so one late tick does not shift the rest."""
        if self.thread_priority > 0:      # SCHED_FIFO for this thread, where the system allows it
            try:
                os.sched_setscheduler(0, os.SCHED_FIFO, os.sched_param(self.thread_priority))
                self.get_logger().info(f"control loop at SCHED_FIFO priority {self.thread_priority}")
            except (PermissionError, OSError) as exc:
                self.get_logger().warning(f"parameter control_thread_priority={self.thread_priority}: "
                                          f"not applied ({exc}); running at normal priority")
                self.thread_priority = 0
        period = self.core.control_dt
        deadline = time.monotonic()
        while self.running:
            deadline += period
            delay = deadline - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            elif delay < -period:           # overran by more than a period: skip, do not burst
                deadline = time.monotonic()
            self.activity.on_lateness(time.monotonic() - deadline)
            try:
                self.run_tick(self.now())
            except Exception as exc:  # noqa: BLE001  (a failing tick must not end the loop silently)
                if not self.running:
                    return
                self.get_logger().error(f"control tick failed: {exc}", throttle_duration_sec=1.0)

    def measured(self) -> tuple[np.ndarray | None, np.ndarray | None]:
        """(measured state in action coordinates for position spaces, hand xyz) or None each."""
        ee = None if self.ee_pose is None else np.asarray(self.ee_pose[:3])
        js, space = self.joint_state, self.core.space
        if space == "joint_position" and js is not None:
            index = {n: i for i, n in enumerate(js.name)}
            names = self.robot.config.action.names
            if all(n in index for n in names):
                return np.array([js.position[index[n]] for n in names]), ee
        if space == "ee_absolute" and self.ee_pose is not None:
            return np.asarray(self.ee_pose[: self.core.dim], dtype=np.float64), ee
        return None, ee

    def proprio(self) -> np.ndarray | None:
        """The measured state in the robot file's order (None until it can be assembled)."""
        if self.joint_state is None:
            return None
        try:
            return assemble_state(self.state_sources, list(self.joint_state.name), list(self.joint_state.position),
                                  self.ee_pose)
        except StateAssemblyError:
            return None

    def run_tick(self, now: float) -> bool:
        """Run the core for time `now`; publish the command and feedback. True if a command was sent."""
        if self.control_thread is not None:      # loop jitter is a wall-clock figure
            self.activity.on_tick(time.perf_counter())
        measured, measured_ee = self.measured() if self.core.space in POSITION_SPACES or \
            self.core.gate.workspace is not None else (None, None)
        proprio = self.proprio() if self.core.correction is not None else None
        with self.lock:
            result = self.core.tick(now, self.state_stamp, measured, measured_ee, proprio)
        if result.command is not None:
            self.send(result.command, now)
            self.last_sent = result.command
            if self.stats_file:           # the command log is for the stats file only (it grows)
                self.activity.on_command(now, result.command, result.executed, result.hold_reason,
                                         self.core.counters["ticks"])
        self.ticks_since_feedback += 1
        if result.request_chunk or self.ticks_since_feedback >= self.feedback_every:
            self.publish_feedback(now, result.request_chunk)
        return result.command is not None

    def publish_feedback(self, now: float, request: bool) -> None:
        with self.lock:
            executed, leftover = self.core.take_feedback(request)
        msg = ExecutionFeedback(episode_id=self.core.episode_id, action_dim=self.core.dim,
                                request_chunk=request, executed_count=len(executed))
        msg.header.stamp = to_stamp(now)
        chunk = self.core.current_chunk
        msg.chunk_id = chunk.chunk_id if chunk else 0
        msg.executed_index = -1
        msg.leftover_normalized = leftover.astype(np.float32).ravel().tolist()
        msg.prefix_fixed = self.core.mode == "async_rtc"
        msg.executed_actions = executed.astype(np.float32).ravel().tolist()
        msg.request_after = to_stamp(self.core.request_time if request else now)
        if request:
            self.request_wall_time = time.monotonic()
        state = self.proprio()
        if state is not None:
            msg.state_names, msg.state = list(self.robot.config.state.names), state.tolist()
        self.feedback_pub.publish(msg)
        self.ticks_since_feedback = 0

    def stats(self) -> dict:
        """Counters, latency, control-loop period jitter and the command log (core/executor_stats.py)."""
        ik = self.commands.ik
        summary = self.activity.summary(self.core, self.monitor_reaction.counts, self.commands_resent,
                                        self.request_retries, None if ik is None else ik.counters.as_dict(),
                                        self.thread_priority)
        if self.commands.goals is not None:      # FollowJointTrajectory goals: the controller's outcomes
            summary["controller"] = dict(self.commands.goals.outcomes)
        return summary

    def deactivated(self) -> None:
        """deactivate: disarm, the arm holds (commanding the hold as a disarmed executor does)."""
        with self.lock:
            self.core.set_armed(False)
        self.publish_status()

    def teardown(self) -> None:
        self.running = False
        if self.control_thread is not None and self.control_thread is not threading.current_thread():
            self.control_thread.join(timeout=2.0)
        if self.stats_file:
            self.write_stats(Path(self.stats_file))

    def write_stats(self, path: Path) -> None:
        """The stats as JSON at `path`, whole or not at all (written beside it, then renamed); a value
        JSON cannot hold is written as its text, and a failure is logged, never raised at exit."""
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            partial = path.with_name(path.name + ".partial")
            partial.write_text(json.dumps(self.stats(), default=lambda v: v.item() if hasattr(v, "item") else str(v)))
            partial.replace(path)
        except Exception as exc:  # noqa: BLE001 - at exit: say what was lost, let the node close
            self.get_logger().error(f"stats_file {path}: not written: {type(exc).__name__}: {exc}")

    def chunk_ms(self) -> float:
        """Span of the chunk being executed (ms; the robot file's horizon before the first)."""
        chunk = self.core.current_chunk
        horizon = chunk.horizon if chunk is not None else self.robot.config.action.horizon
        return horizon * self.core.dt * 1e3

    def health_figures(self) -> dict:
        """What /diagnostics reports: state, rates, counters by reason, latency, gate (units in the keys)."""
        with self.lock:
            c, gate = dict(self.core.counters), self.core.gate.counters
            sent = c["commands_sent"] + c["dry_run_commands"]
            now_wall = time.monotonic()
            then, before = self.rate_window
            self.rate_window = (now_wall, sent)
            p50, p95 = self.core.latency_percentiles()
            age = None if self.state_stamp is None else self.now() - self.state_stamp
            reason = self.core.hold_reason
            return {"armed": self.core.armed, "estop": self.core.estop, "dry_run": self.core.dry_run,
                    "holding": bool(reason), "hold_reason": reason, "armed_holding": self.core.armed and bool(reason),
                    "mode": self.core.mode, "contract": self.commands.contract,
                    "command_rate_hz": (sent - before) / max(now_wall - then, 1e-6),
                    "queue_depth": len(self.core.queue), "latency_ms_p50": p50 * 1e3, "latency_ms_p95": p95 * 1e3,
                    "chunk_ms": self.chunk_ms(),
                    "state_age_ms": None if age is None else age * 1e3,
                    "counters": {k: v for k, v in c.items()},
                    "gate": {"commands_clamped": gate.commands_clamped, "outside_limits": gate.outside_limits,
                             "rejected_by_reason": dict(gate.reasons)},
                    "outside_limits": gate.outside_limits,
                    **({"controller": dict(self.commands.goals.outcomes),
                        "controller_failures": self.commands.goals.failures} if self.commands.goals else {})}

    def publish_status(self) -> None:
        c, gate = self.core.counters, self.core.gate.counters
        p50, p95 = self.core.latency_percentiles()
        reason = self.core.hold_reason
        msg = ExecutorStatus(mode=self.core.mode, contract=self.commands.contract, armed=self.core.armed,
                             estop=self.core.estop, dry_run=self.core.dry_run, holding=bool(reason),
                             hold_reason=reason,
                             queue_depth=len(self.core.queue), commands_sent=c["commands_sent"],
                             chunks_received=c["chunks_received"],
                             chunks_rejected=c["chunks_rejected"] + c["chunks_stale"],
                             actions_skipped_stale=self.core.queue.skipped_stale, starved_ticks=c["starved_ticks"],
                             clamp_count=gate.commands_clamped, stale_holds=c["stale_holds"],
                             latency_ms_p50=p50 * 1e3, latency_ms_p95=p95 * 1e3)
        msg.header.stamp = self.get_clock().now().to_msg()
        self.status_pub.publish(msg)


def main(args=None):
    run_node(ExecutorNode, args)


if __name__ == "__main__":
    main()
