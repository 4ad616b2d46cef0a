"""task_runner: one entry point that runs a task on any graph (the vla_msgs/action/RunTask action).

A task is one episode: disarm -> (embedded simulators: reset the simulator to a task and seed,
which gives the instruction) -> set the instruction in perception, reset policy and executor with
one episode id -> latch it on /vla/episode -> arm when asked -> follow the episode until success,
the step limit, the timeout, a cancel or a new task (preemption) -> disarm (the arm holds).

`TaskRunner` is that episode driving, used by this node's action server and by the evaluator (which
adds recording and scoring around it); `TaskRunnerNode` serves `/vla/run_task`.
"""

from __future__ import annotations

import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from rclpy.action import ActionServer, CancelResponse, GoalResponse
from rclpy.callback_groups import ReentrantCallbackGroup
from rclpy.node import Node
from std_msgs.msg import Bool
from vla_msgs.action import RunTask
from vla_msgs.msg import ActionChunk, EpisodeAnnouncement, ExecutionFeedback, ExecutorStatus, StateVector
from vla_msgs.srv import Perturb, ResetEpisode, SetArmed, SetInstruction

from ..core.health import WARN, Flag
from ..core.progress import StageThresholds, StageTracker
from ..core.task_progress import TaskLimits, TaskProgress, end_reason
from ..evaluation.episode_tracker import EpisodeTracker
from .managed import ManagedNode
from .common import LATCHED_QOS, RELIABLE_QOS, SERVICES, TOPICS, ask_until_answered, run_node, to_sec
from .diagnostics import Diagnostics
from .episode_recorder import BAG_COMPRESSION, BAG_STORAGE, RECORD_TOPICS, EpisodeRecorder
from .parameters import Param

ACTION_NAME = "vla/run_task"          # relative: under the graph's namespace
SERVICE_TIMEOUT_S = Param("service_timeout_s", 60.0, "wall-clock limit of one graph service call (resets, arming), "
                                                     "retries included (s)", (0.1, 3600.0))


@dataclass
class TaskRequest:
    """One task. `task` (with `seed`) resets an embedded simulator; without it the instruction is required."""
    instruction: str = ""
    task: str = ""
    seed: int = 0
    arm: bool = False
    timeout_s: float = 0.0       # 0 = the runner's default
    max_steps: int = 0           # 0 = no step limit
    episode_id: str = ""         # "" = a new one

    def check(self) -> None:
        if not self.task and not self.instruction.strip():
            raise ValueError("goal: give an instruction (or, on an embedded simulator, a task)")
        if self.timeout_s < 0:
            raise ValueError(f"goal.timeout_s must be >= 0 s, got {self.timeout_s}")


@dataclass
class TaskOutcome:
    episode_id: str
    task: str
    seed: int
    instruction: str
    reason: str
    steps: int
    duration_s: float            # graph-clock seconds from the reset to the last state seen
    wall_time_s: float
    tracker: EpisodeTracker
    progress: TaskProgress
    simulated: bool              # the simulator was reset for this task

    @property
    def success_known(self) -> bool:
        return self.tracker.success_reported

    @property
    def success(self) -> bool:
        return self.tracker.success


@dataclass
class TaskHooks:
    """What an owner adds around the episode (the evaluator: its bag and its log)."""
    before_reset: Callable[[str], None] = lambda episode_id: None
    started: Callable[[str, float], None] = lambda episode_id, start_s: None
    ended: Callable[[TaskOutcome], None] = lambda outcome: None
    extra: dict = field(default_factory=dict)


class TaskRunner:
    """Drives episodes on the graph for `node`: its service clients, the topics that tell how the
    episode goes, and the latched /vla/episode announcement. `run` blocks; call it from a thread
    of a multi-threaded executor (or any thread other than the one spinning the node)."""

    def __init__(self, node: Node, env_state_topic: str | None = None, default_timeout_s: float = 120.0,
                 stage_thresholds: StageThresholds | None = None, service_timeout_s: float = 60.0,
                 perturbs: bool = False):
        if service_timeout_s <= 0:
            raise ValueError(f"parameter service_timeout_s: {service_timeout_s} must be > 0 (s)")
        self.node = node
        self.default_timeout_s = default_timeout_s
        self.stage_thresholds = stage_thresholds
        self.service_timeout_s = service_timeout_s
        self.tracker: EpisodeTracker | None = None
        self.progress: TaskProgress | None = None
        self.clients = {
            "sim_reset": node.create_client(ResetEpisode, SERVICES["sim_reset"]),
            "policy_reset": node.create_client(ResetEpisode, SERVICES["policy_reset"]),
            "executor_reset": node.create_client(ResetEpisode, SERVICES["executor_reset"]),
            "set_instruction": node.create_client(SetInstruction, SERVICES["set_instruction"]),
            "set_armed": node.create_client(SetArmed, SERVICES["set_armed"]),
        }
        if perturbs:                  # the evaluator's: disturbing the world is not a task runner's business
            self.clients["sim_perturb"] = node.create_client(Perturb, SERVICES["sim_perturb"])
        node.create_subscription(StateVector, env_state_topic or TOPICS["env_state"], self.on_env_state, RELIABLE_QOS)
        node.create_subscription(Bool, TOPICS["success"], self.on_success, RELIABLE_QOS)
        node.create_subscription(ActionChunk, TOPICS["action_chunk"], self.on_chunk, RELIABLE_QOS)
        node.create_subscription(ExecutionFeedback, TOPICS["feedback"], self.on_feedback, RELIABLE_QOS)
        node.create_subscription(ExecutorStatus, TOPICS["executor_status"], self.on_executor_status, LATCHED_QOS)
        self.episode_pub = node.create_publisher(EpisodeAnnouncement, TOPICS["episode"], LATCHED_QOS)

    # ---- topics ----------------------------------------------------------------------------
    def now_s(self) -> float:
        return self.node.get_clock().now().nanoseconds * 1e-9

    def on_env_state(self, msg: StateVector) -> None:
        tracker = self.tracker
        if tracker is not None:
            tracker.on_env_state(to_sec(msg.header.stamp), int(msg.step), list(msg.values), self.now_s(),
                                 success=int(msg.success))

    def on_success(self, msg: Bool) -> None:
        tracker = self.tracker
        if tracker is not None:
            tracker.on_success(msg.data)

    def on_chunk(self, msg: ActionChunk) -> None:
        progress = self.progress
        if progress is not None:
            progress.on_chunk(msg.episode_id, msg.preprocess_ms + msg.inference_ms + msg.postprocess_ms)

    def on_feedback(self, msg: ExecutionFeedback) -> None:
        progress = self.progress
        if progress is not None:
            progress.on_feedback(msg.episode_id, msg.executed_count)

    def on_executor_status(self, msg: ExecutorStatus) -> None:
        progress = self.progress
        if progress is not None:
            progress.on_executor_status(msg.holding, msg.hold_reason)

    # ---- services --------------------------------------------------------------------------
    def call(self, name: str, request, timeout_s: float | None = None, first_attempt_s: float = 5.0):
        """Call a graph service and wait for its answer. A request can be lost when the server was
        just killed and is being respawned (discovery still lists the dead one for its lease), so
        an unanswered request is sent again, waiting 5, 10, 20 ... s, within `timeout_s` in all.
        The graph's services are idempotent (resets with one episode id, arming)."""
        client = self.clients[name]
        where = self.node.resolve_service_name(client.srv_name)
        timeout_s = self.service_timeout_s if timeout_s is None else timeout_s

        def unanswered(future, waited_s: float) -> None:
            client.remove_pending_request(future)
            self.node.get_logger().warning(f"service {where}: no answer within {waited_s:.0f} s; "
                                           "asking again (its server may have been restarted)")

        future, attempts = ask_until_answered(lambda remaining: client.wait_for_service(timeout_sec=remaining),
                                              lambda: client.call_async(request), timeout_s, first_attempt_s,
                                              unanswered)
        if future is None:
            raise RuntimeError(f"service {where} did not answer within {timeout_s:.0f} s ({attempts} requests sent)")
        response = future.result()
        if hasattr(response, "success") and not response.success:
            raise RuntimeError(f"service {where} refused: {response.message}")
        return response

    def set_armed(self, armed: bool) -> None:
        self.call("set_armed", SetArmed.Request(armed=armed))

    def reset_graph(self, episode_id: str, task: str, instruction: str, seed: int) -> None:
        """Perception, policy and executor start episode `episode_id` with `instruction`."""
        self.call("set_instruction", SetInstruction.Request(instruction=instruction, episode_id=episode_id))
        self.call("policy_reset", ResetEpisode.Request(task=task, instruction=instruction, seed=seed,
                                                      episode_id=episode_id))
        self.call("executor_reset", ResetEpisode.Request(task=task, instruction=instruction, seed=seed,
                                                        episode_id=episode_id))

    def begin(self, episode_id: str, start_s: float) -> EpisodeTracker:
        """Start following episode `episode_id` whose first state is at `start_s` (graph clock, s)."""
        stages = StageTracker(self.stage_thresholds) if self.stage_thresholds is not None else None
        self.progress = TaskProgress(episode_id)
        self.tracker = EpisodeTracker(start_s, stages)
        return self.tracker

    def announce(self, episode_id: str, task: str, instruction: str, seed: int, active: bool) -> None:
        """Latch the running episode on /vla/episode: a node restarted during it rejoins it."""
        msg = EpisodeAnnouncement(episode_id=episode_id, task=task, instruction=instruction, seed=seed, active=active)
        msg.header.stamp = self.node.get_clock().now().to_msg()
        self.episode_pub.publish(msg)

    # ---- one task --------------------------------------------------------------------------
    def run(self, request: TaskRequest, stop: Callable[[], str | None] = lambda: None,
            feedback: Callable[[str, TaskProgress], None] | None = None, hooks: TaskHooks | None = None,
            feedback_period_s: float = 0.5) -> TaskOutcome:
        """Run one task to its end. `stop()` returns "canceled" or "preempted" when the owner
        ends it early; `feedback(phase, progress)` is called about every `feedback_period_s`.
        Raises RuntimeError (with the service or topic that failed) after disarming when it can."""
        request.check()
        hooks = hooks or TaskHooks()
        limits = TaskLimits(request.timeout_s or self.default_timeout_s, request.max_steps)
        episode_id = request.episode_id or new_episode_id(request.task)
        wall_start = time.monotonic()
        report = feedback or (lambda phase, progress: None)
        self.set_armed(False)
        self.tracker = self.progress = None
        hooks.before_reset(episode_id)
        instruction, simulated = request.instruction, bool(request.task)
        if simulated:
            if not self.clients["sim_reset"].wait_for_service(timeout_sec=5.0):
                where = self.node.resolve_service_name(SERVICES["sim_reset"])
                raise RuntimeError(f"goal.task '{request.task}': no simulator answers {where}; "
                                   "a task and seed apply to embedded simulators only (give an instruction)")
            reset = self.call("sim_reset", ResetEpisode.Request(task=request.task, seed=request.seed,
                                                                instruction=request.instruction,
                                                                episode_id=episode_id,
                                                                max_steps=limits.max_steps))
            instruction, start = reset.instruction or instruction, to_sec(reset.stamp)
        else:
            start = self.now_s()
        report("resetting", TaskProgress(episode_id))
        self.reset_graph(episode_id, request.task, instruction, request.seed)
        tracker = self.begin(episode_id, start)
        progress = self.progress
        hooks.started(episode_id, start)
        self.announce(episode_id, request.task, instruction, request.seed, active=True)
        reason = None
        try:
            if request.arm:
                self.set_armed(True)
            phase = "armed" if request.arm else "running (disarmed)"
            last_report = 0.0
            while True:
                steps = tracker.steps if simulated else progress.executed_steps
                reason = end_reason(limits, time.monotonic() - wall_start, steps, tracker.success,
                                    canceled=stop() == "canceled", preempted=stop() == "preempted")
                if reason is not None:
                    break
                if time.monotonic() - last_report >= feedback_period_s:
                    report(phase, progress)
                    last_report = time.monotonic()
                tracker.changed.wait(min(0.1, feedback_period_s))
                tracker.changed.clear()
        finally:
            report("stopping", progress)
            try:
                self.set_armed(False)
            finally:
                self.announce(episode_id, request.task, instruction, request.seed, active=False)
        outcome = TaskOutcome(episode_id=episode_id, task=request.task, seed=request.seed, instruction=instruction,
                              reason=reason, steps=tracker.steps if simulated else progress.executed_steps,
                              duration_s=(tracker.last_stamp if simulated else self.now_s()) - start,
                              wall_time_s=time.monotonic() - wall_start, tracker=tracker, progress=progress,
                              simulated=simulated)
        hooks.ended(outcome)
        return outcome


def new_episode_id(task: str) -> str:
    """A readable, unique episode id: <task or 'task'>_<8 hex>."""
    return f"{task or 'task'}_{uuid.uuid4().hex[:8]}"


class TaskRunnerNode(ManagedNode):
    """Serves the RunTask action on /vla/run_task: one task at a time; a new goal preempts the running one."""

    PARAMETERS = (
        Param("robot", "", "the robot's name in /diagnostics (hardware id); \"\" = 'graph'"),
        Param("env_state_topic", "", "simulators: their privileged state (vla_msgs/StateVector: steps, success); "
                                     "\"\" = vla/sim/env_state"),
        Param("default_timeout_s", 300.0, "wall-clock limit of a goal that gives none (s)", (0.1, 86400.0)),
        SERVICE_TIMEOUT_S,
        Param("feedback_period_s", 0.5, "RunTask feedback every this many wall seconds (s)", (0.01, 60.0)),
        Param("record_dir", "", "when set, each task is recorded to <record_dir>/<episode id>/ (rosbag2); "
                                "\"\" = no recording"),
        RECORD_TOPICS,
        BAG_STORAGE,
        BAG_COMPRESSION,
    )

    def __init__(self, **kwargs):
        super().__init__("task_runner", **kwargs)

    def setup(self) -> None:
        """configure: the robot file, the topics and services, everything the node keeps."""
        p = self.params
        self.runner = TaskRunner(self, p.env_state_topic or None, p.default_timeout_s,
                                 service_timeout_s=p.service_timeout_s)
        self.feedback_period_s = p.feedback_period_s
        try:
            self.recorder = EpisodeRecorder(self, Path(p.record_dir), list(p.record_topics), p.bag_storage,
                                            p.bag_compression) if p.record_dir else None
        except ValueError as exc:              # configure fails, naming the parameter
            self.get_logger().fatal(str(exc))
            raise SystemExit(2) from None
        self.recorder_ready = False
        self.lock = threading.Lock()             # one task drives the graph at a time
        self.latest_goal = None                  # id of the newest accepted goal; older ones are preempted
        self.closing = False
        self.last_result = ""                    # reason the last task ended with
        self.tasks_run = 0
        self.diagnostics = Diagnostics(self, "tasks", p.robot or "graph", self.health_figures, [
            Flag("last_failed", WARN, "the last task ended with an error")])
        group = ReentrantCallbackGroup()
        self.server = ActionServer(self, RunTask, ACTION_NAME, execute_callback=self.execute,
                                   goal_callback=self.on_goal, cancel_callback=lambda _: CancelResponse.ACCEPT,
                                   handle_accepted_callback=self.on_accepted, callback_group=group)
        self.get_logger().info(f"ready: send a vla_msgs/action/RunTask goal to {ACTION_NAME} (or: vla-task)")

    def recording_hooks(self) -> TaskHooks | None:
        """With record_dir set, each task's topics go to <record_dir>/<episode id>/ (rosbag2)."""
        recorder = self.recorder
        if recorder is None:
            return None
        if not self.recorder_ready:
            recorder.subscribe()
            self.recorder_ready = True

        def ended(outcome: TaskOutcome) -> None:
            recorder.drain(outcome.tracker.last_stamp if outcome.simulated else self.runner.now_s())
            recorder.close()
            self.get_logger().info(f"task {outcome.episode_id} recorded in {recorder.folder / outcome.episode_id}")
        return TaskHooks(before_reset=recorder.open, ended=ended)

    def teardown(self) -> None:
        """cleanup or shutdown: the running task ends as canceled (its runner disarms if the graph
        still answers); the action server goes with the node's other entities."""
        self.closing = True
        if self.lock.acquire(timeout=2.0):
            self.lock.release()

    def deactivated(self) -> None:
        """A running task is canceled (the arm holds); new goals are refused until active again."""
        self.closing = True

    def activated(self) -> None:
        self.closing = False

    def health_figures(self) -> dict:
        progress = self.runner.progress
        return {"running": self.lock.locked(), "tasks_run": self.tasks_run, "last_result": self.last_result,
                "last_failed": self.last_result.startswith("error"),
                "episode_id": progress.episode_id if progress is not None else "",
                "chunks": progress.chunks if progress is not None else 0,
                "executed_steps": progress.executed_steps if progress is not None else 0}

    def on_goal(self, goal: RunTask.Goal) -> GoalResponse:
        if not self.active:
            self.get_logger().error(f"{ACTION_NAME}: goal refused: the task runner is not active (lifecycle)")
            return GoalResponse.REJECT
        request = goal_to_request(goal)
        try:
            request.check()
        except ValueError as exc:
            self.get_logger().error(f"{ACTION_NAME}: goal refused: {exc}")
            return GoalResponse.REJECT
        return GoalResponse.ACCEPT

    def on_accepted(self, goal_handle) -> None:
        if self.lock.locked():
            self.get_logger().info(f"{ACTION_NAME}: a new task preempts the running one")
        self.latest_goal = bytes(goal_handle.goal_id.uuid)
        goal_handle.execute()

    def execute(self, goal_handle) -> RunTask.Result:
        request = goal_to_request(goal_handle.request)
        goal_id = bytes(goal_handle.goal_id.uuid)
        with self.lock:
            def stop() -> str | None:
                if self.closing:
                    return "canceled"
                if self.latest_goal != goal_id:
                    return "preempted"
                return "canceled" if goal_handle.is_cancel_requested else None

            def feedback(phase: str, progress: TaskProgress) -> None:
                goal_handle.publish_feedback(RunTask.Feedback(
                    phase=phase, episode_id=progress.episode_id, chunks=progress.chunks,
                    executed_steps=progress.executed_steps, last_latency_ms=progress.last_latency_ms,
                    holding=progress.holding, hold_reason=progress.hold_reason))

            self.tasks_run += 1
            try:
                outcome = self.runner.run(request, stop, feedback, hooks=self.recording_hooks(),
                                          feedback_period_s=self.feedback_period_s)
            except Exception as exc:    # a service that refused or did not answer: named, the goal aborts
                self.get_logger().error(f"task failed: {exc}")
                self.last_result = f"error: {exc}"
                goal_handle.abort()
                return RunTask.Result(reason=f"error: {exc}", episode_id=request.episode_id)
            finally:
                if self.recorder is not None:
                    self.recorder.close()
        self.last_result = outcome.reason
        result = RunTask.Result(success=outcome.success, success_known=outcome.success_known, reason=outcome.reason,
                                episode_id=outcome.episode_id, steps=outcome.steps, duration_s=outcome.duration_s,
                                wall_time_s=outcome.wall_time_s)
        self.get_logger().info(f"task {outcome.episode_id} ('{outcome.instruction}'): {outcome.reason} after "
                               f"{outcome.steps} steps, {outcome.progress.chunks} chunks "
                               f"({outcome.wall_time_s:.1f} s wall)")
        if outcome.reason == "canceled":
            goal_handle.canceled()
        elif outcome.reason == "preempted":
            goal_handle.abort()
        else:
            goal_handle.succeed()
        return result


def goal_to_request(goal: RunTask.Goal) -> TaskRequest:
    return TaskRequest(instruction=goal.instruction, task=goal.task, seed=int(goal.seed), arm=bool(goal.arm),
                       timeout_s=float(goal.timeout_s), max_steps=int(goal.max_steps), episode_id=goal.episode_id)


def main(args=None):
    raise SystemExit(run_node(TaskRunnerNode, args, multithreaded=True))


if __name__ == "__main__":
    main()
