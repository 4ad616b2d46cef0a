"""evaluator: runs closed-loop episodes against a sim bridge (or scores a bag replay), records
each one to rosbag2, reports.

mode closed_loop, per episode: disarm -> reset the simulator (task, seed; returns the instruction)
-> set the instruction in perception, reset policy and executor -> arm -> wait for success or the
step limit -> disarm. Every episode's topics are recorded (as the CDR bytes that crossed DDS) into
<output_dir>/bags/<task>_s<seed>/. Protocol: tasks x seeds (episodes_per_task), seeds below
min_eval_seed (demonstration range) refused / warned / allowed (training_seeds), a step limit,
lockstep or free-running time (checked against the sim bridge's and executor's own parameter).

mode replay: a replay node plays a recorded episode; the evaluator resets perception, policy and
a dry-run executor for it, starts playback, and scores what the executor would have commanded
(/vla/executor/dry_run_command) against the commands the bag recorded (L1 per action dimension,
commands paired by stamp within half a control period).

Both modes keep, per episode, the imagination monitor's divergence series, the imagined futures
and real camera frames (subsampled), chunk latencies and a stage progress score, and write
report.json / report.md / plots / videos through evaluation.reports.write_run_report, with the
monitor figures (failure AUROC of divergence, image quality vs success) in summary.monitor.
The scoring lives in evaluation/ (episode_tracker, replay_scoring, closed_loop_report); this node
calls services, follows topics and records bags.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path

from rcl_interfaces.msg import ParameterType
from rclpy.node import Node
from rclpy.parameter_client import AsyncParameterClient
from rclpy.qos import HistoryPolicy, QoSProfile, ReliabilityPolicy
from sensor_msgs.msg import Image
from std_srvs.srv import Trigger
from vla_msgs.msg import (ActionChunk, ActionCommand, EpisodeResult, ExecutorStatus, ImaginationDivergence,
                          ImaginedFuture, PolicyStatus)
from vla_msgs.srv import Perturb

from ..core import images
from ..core.episode_log import EpisodeLog
from ..core.progress import StageThresholds
from ..core.protocol import check_training_seeds, resolve_seeds
from ..evaluation.closed_loop_report import EvaluationProtocol, episode_record, monitor_row
from ..evaluation.episode_tracker import EpisodeTracker
from ..evaluation.replay_scoring import replay_score
from ..evaluation.reports import EpisodeRecord, write_episode_video
from ..evaluation.run_record import RunRecord
from ..sim.perturbation import Perturbation, PerturbationSchedule
from .common import (LATCHED_QOS, RELIABLE_QOS, SENSOR_QOS, SERVICES, TOPICS, ask_until_answered,
                     load_robot_or_exit, run_node, to_sec)
from .diagnostics import Diagnostics
from .episode_recorder import BAG_COMPRESSION, BAG_STORAGE, RECORD_TOPICS, EpisodeRecorder
from .parameters import ROBOT, Param, declare
from .task_runner import SERVICE_TIMEOUT_S, TaskHooks, TaskRequest, TaskRunner

# Every command of a replayed episode is scored: deep enough that none is dropped while a callback runs.
COMMAND_QOS = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=1000, reliability=ReliabilityPolicy.RELIABLE)


class EvaluatorNode(Node):
    PARAMETERS = (
        ROBOT,
        Param("mode", "closed_loop", "closed_loop: episodes against the simulator; replay: score a bag replay",
              constraints="closed_loop | replay"),
        Param("tasks", ["button-press", "drawer-open", "window-open"], "simulator tasks evaluated"),
        Param("seeds", [100, 101, 102], "evaluation seeds, run for every task"),
        Param("episodes_per_task", 0, "0 = one episode per seed; N = the first N seeds, extended after the largest",
              (0, 100000)),
        Param("min_eval_seed", 100, "seeds below this are the demonstration (training) range", (0, 2 ** 31 - 1)),
        Param("training_seeds", "warn", "what to do with seeds below min_eval_seed (warn: the report says "
                                        "held_out=false)", constraints="refuse | warn | allow"),
        Param("max_steps", 300, "step limit of an episode (control steps)", (1, 2 ** 31 - 1)),
        Param("episode_timeout_s", 120.0, "wall-clock limit of an episode (s)", (0.1, 86400.0)),
        SERVICE_TIMEOUT_S,
        Param("lockstep", True, "lockstep time (true) or free-running; must match lockstep_nodes' own `lockstep` "
                                "(checked)"),
        Param("lockstep_nodes", ["sim_bridge", "executor"], "nodes whose `lockstep` parameter must equal this one's"),
        Param("output_dir", "artifacts/demo", "report, plots, videos and bags go here (relative: to the working "
                                              "directory)"),
        Param("index_dir", "", "run index folder; \"\" = <output_dir>/../runs_index"),
        Param("graph", "", "the graph's name, for the report (\"\": unnamed)"),
        Param("record", True, "record every episode to <output_dir>/bags/<task>_s<seed>/ (rosbag2)"),
        RECORD_TOPICS,
        BAG_STORAGE,
        BAG_COMPRESSION,
        Param("stage_progress", True, "score stage progress (MetaWorld's 39-D env_state, core/progress.py); "
                                      "false: 1 for success, else 0"),
        Param("approach_radius_m", 0.12, "stage progress: the hand is near the object within this distance (m)",
              (0.0, 10.0)),
        Param("approach_release_m", 0.15, "stage progress: the hand has left the object beyond this distance (m)",
              (0.0, 10.0)),
        Param("contact_displacement_m", 0.01, "stage progress: the object moved by at least this much (m)",
              (0.0, 10.0)),
        Param("early_window_s", 1.0, "early failure warning: imagination divergence over each episode's first this "
                                     "many seconds (s); 0 = the shortest episode's span", (0.0, 3600.0)),
        Param("max_video_frames", 80, "real frames kept per episode for the report video (evenly spread)",
              (0, 100000)),
        Param("video_frame_stride", 2, "keep every this many real camera frames for the video", (1, 10000)),
        Param("max_imagined_chunks", 80, "imagined futures kept per episode for the video", (0, 100000)),
        Param("replay_settle_s", 1.0, "replay: wall s to wait after the bag ends for the last commands (s)",
              (0.0, 600.0)),
        Param("perturbation", "none", "perturb every closed-loop episode of an embedded simulator once, drawn from "
                                      "its seed (sim/perturbation.py)", constraints="none | object | hand"),
        Param("perturbation_steps", [40, 120], "perturbation: the control step it comes before, uniform in "
                                               "[first, last]"),
        Param("perturbation_distance_m", [0.05, 0.15], "perturbation: horizontal displacement, uniform in "
                                                       "[low, high] (m)"),
        Param("score_frame_change", False, "score every real frame of the monitor camera against the one before "
                                           "(1 - SSIM in the model's view): the detector that imagines nothing, "
                                           "beside the imagination divergence in report.json"),
    )

    def __init__(self, **kwargs):
        super().__init__("evaluator", **kwargs)
        p = declare(self, self.PARAMETERS)
        self.robot = load_robot_or_exit(self, p.robot)
        self.output_dir = Path(p.output_dir)
        self.record = p.record
        self.graph_name = p.graph
        self.lockstep_nodes = [n for n in p.lockstep_nodes if n]
        self.max_video_frames = p.max_video_frames
        self.video_frame_stride = p.video_frame_stride
        self.max_imagined_chunks = p.max_imagined_chunks
        self.replay_settle_s = p.replay_settle_s
        self.score_frame_change = p.score_frame_change
        self.index_dir = p.index_dir or None
        try:
            thresholds = StageThresholds(p.approach_radius_m, p.approach_release_m, p.contact_displacement_m)
            self.protocol = EvaluationProtocol(
                mode=p.mode, lockstep=p.lockstep, episode_timeout_s=p.episode_timeout_s, tasks=list(p.tasks),
                seeds=resolve_seeds(p.seeds, p.episodes_per_task) if p.mode == "closed_loop" else list(p.seeds),
                max_steps=p.max_steps, min_eval_seed=p.min_eval_seed, training_seeds=p.training_seeds,
                stage_progress=p.stage_progress, stage_thresholds=thresholds,
                early_window_s=p.early_window_s or None)
            self.perturbation = PerturbationSchedule.from_parameters(p.perturbation, p.perturbation_steps,
                                                                     p.perturbation_distance_m)
        except ValueError as exc:
            self.get_logger().fatal(str(exc))
            raise SystemExit(2) from None
        cfg = self.robot.config
        monitor_camera = cfg.monitor.camera if cfg.monitor is not None and cfg.monitor.camera else None
        self.camera = next(c for c in cfg.cameras if c.name == (monitor_camera or cfg.cameras[0].name))
        self.backend = "unknown"
        self.log: EpisodeLog | None = None           # the running episode's divergence, frames, latencies
        self.episode_id = ""
        self.monitor_rows: list[dict] = []          # per episode: success, divergence, psnr, ssim
        self.commanded: list[tuple[float, list[float]]] = []   # replay: dry-run commands (stamp s, values)
        self.recorded_commands: list[tuple[float, list[float]]] = []
        self.collect_commands = False
        self.replay_state: EpisodeResult | None = None
        self.replay_changed = threading.Event()
        self.executor_dry_run: bool | None = None
        try:
            self.recorder = EpisodeRecorder(self, self.output_dir / "bags", list(p.record_topics), p.bag_storage,
                                            p.bag_compression) if self.record else None
        except ValueError as exc:
            self.get_logger().fatal(str(exc))
            raise SystemExit(2) from None
        self.exit_code = 0
        self.finished = False         # set when the report is written (or the run refused): main() returns

        # resets, arming, success and step tracking, the latched /vla/episode: the same path as a RunTask goal
        self.tasks = TaskRunner(self, self.robot.config.env_state_topic or None, p.episode_timeout_s,
                                thresholds if p.stage_progress else None, p.service_timeout_s, perturbs=True)
        self.create_subscription(PolicyStatus, TOPICS["policy_status"], self.on_policy_status, LATCHED_QOS)
        self.create_subscription(ImaginationDivergence, TOPICS["divergence"], self.on_divergence, RELIABLE_QOS)
        self.create_subscription(ImaginedFuture, TOPICS["imagined"], self.on_imagined, RELIABLE_QOS)
        self.create_subscription(ActionChunk, TOPICS["action_chunk"], self.on_chunk, RELIABLE_QOS)
        self.create_subscription(Image, self.camera.topic, self.on_image, SENSOR_QOS)
        if self.protocol.mode == "replay":
            self.create_subscription(ActionCommand, TOPICS["dry_run_command"],
                                     lambda m: self.on_command(self.commanded, m), COMMAND_QOS)
            if cfg.output.contract == "sim":
                self.create_subscription(ActionCommand, cfg.output.command_topic,
                                         lambda m: self.on_command(self.recorded_commands, m), COMMAND_QOS)
            else:
                self.get_logger().warning(f"{self.robot.path}: output.contract '{cfg.output.contract}': recorded "
                                          f"commands on {cfg.output.command_topic} are not vla_msgs/ActionCommand; "
                                          "the replay is not scored")
            self.create_subscription(EpisodeResult, TOPICS["replay_episode"], self.on_replay_episode, LATCHED_QOS)
            self.create_subscription(ExecutorStatus, TOPICS["executor_status"], self.on_executor_status,
                                     LATCHED_QOS)
            self.replay_start = self.create_client(Trigger, SERVICES["replay_start"])
        self.result_pub = self.create_publisher(EpisodeResult, TOPICS["episode_result"], RELIABLE_QOS)
        self.diagnostics = Diagnostics(self, "evaluation", self.robot.name, lambda: {
            "mode": self.protocol.mode, "episode_id": self.episode_id, "episodes_done": len(self.monitor_rows),
            "episodes_planned": len(self.protocol.tasks) * len(self.protocol.seeds)}, [])
        self.runner = threading.Thread(target=self.run, name="episodes", daemon=True)
        self.runner.start()

    # ---- topic callbacks ---------------------------------------------------------------
    def on_policy_status(self, msg: PolicyStatus) -> None:
        self.backend = msg.backend

    def on_divergence(self, msg: ImaginationDivergence) -> None:
        log = self.log
        if log is not None and msg.episode_id == self.episode_id:
            log.add_divergence(to_sec(msg.header.stamp), msg.psnr, msg.ssim, msg.divergence, msg.exceeded, msg.action)

    def on_chunk(self, msg: ActionChunk) -> None:
        log = self.log
        if log is not None and msg.episode_id == self.episode_id:
            log.latencies_ms.append(float(msg.preprocess_ms + msg.inference_ms + msg.postprocess_ms))

    def on_imagined(self, msg: ImaginedFuture) -> None:
        """Imagined frames of the monitored camera, for the report's real-vs-imagined videos."""
        log, stamp = self.log, to_sec(msg.header.stamp)
        names = list(msg.camera_names)
        if log is None or stamp < log.start_s - 1e-9 or self.camera.name not in names:
            return
        c, n = names.index(self.camera.name), len(names)
        where = f"{TOPICS['imagined']} chunk {msg.chunk_id}"
        try:
            frames = [images.decode(f.encoding, f.height, f.width, f.step, f.data, where=where)
                      for f in list(msg.frames)[c::n]]
        except images.ImageEncodingError as exc:
            self.get_logger().error(f"{exc} (not kept)", throttle_duration_sec=2.0)
            return
        log.add_imagined(stamp, frames, list(msg.frame_offsets))

    def on_image(self, msg: Image) -> None:
        log, stamp = self.log, to_sec(msg.header.stamp)
        if log is None or stamp < log.start_s - 1e-9:
            return
        decode = lambda: images.decode(msg.encoding, msg.height, msg.width, msg.step, msg.data,  # noqa: E731
                                       where=self.camera.topic)
        try:
            if self.score_frame_change:           # every frame decoded once, for both
                frame = decode()
                log.add_real_frame(stamp, lambda: frame)
                log.add_frame_change(stamp, images.to_model_input(frame, self.camera.input_size, self.camera.crop))
            else:                                 # only the frames the video keeps are decoded
                log.add_real_frame(stamp, decode)
        except images.ImageEncodingError as exc:
            self.get_logger().error(f"{exc} (not kept)", throttle_duration_sec=2.0)

    def on_command(self, into: list, msg: ActionCommand) -> None:
        if self.collect_commands:
            into.append((to_sec(msg.header.stamp), list(msg.values)))

    def on_replay_episode(self, msg: EpisodeResult) -> None:
        self.replay_state = msg
        self.replay_changed.set()

    def on_executor_status(self, msg: ExecutorStatus) -> None:
        self.executor_dry_run = bool(msg.dry_run)

    # ---- recording -----------------------------------------------------------------------
    def open_bag(self, episode_id: str) -> str:
        """Start recording an episode into <output_dir>/bags/<episode_id>; its folder ("" when not recording)."""
        return self.recorder.open(episode_id) if self.recorder is not None else ""

    def close_bag(self, last_stamp: float | None = None) -> None:
        """Close the bag, after the recorder has caught up with the graph's clock at `last_stamp` (s)."""
        if self.recorder is not None:
            if last_stamp is not None:
                self.recorder.drain(last_stamp)
            self.recorder.close()

    # ---- episodes ------------------------------------------------------------------------
    def remote_parameter(self, node_name: str, name: str, timeout_s: float | None = None):
        """A parameter of another node (bool, int, float or string); None when it does not answer.

        Waits as long as a graph service call may (`service_timeout_s`): on a loaded machine a node
        can take tens of seconds to come up, and a request sent while it starts is asked again."""
        timeout_s = self.tasks.service_timeout_s if timeout_s is None else timeout_s
        client = AsyncParameterClient(self, node_name)
        future, _ = ask_until_answered(lambda remaining: client.wait_for_services(timeout_sec=remaining),
                                       lambda: client.get_parameters([name]), timeout_s)
        if future is None or future.result() is None or not future.result().values:
            return None
        value = future.result().values[0]
        return {ParameterType.PARAMETER_BOOL: value.bool_value, ParameterType.PARAMETER_INTEGER: value.integer_value,
                ParameterType.PARAMETER_DOUBLE: value.double_value,
                ParameterType.PARAMETER_STRING: value.string_value}.get(value.type)

    def check_time_protocol(self) -> dict:
        """Lockstep vs free-running must be the same in the evaluator and the nodes that keep time."""
        seen = {}
        for node_name in self.lockstep_nodes:
            value = self.remote_parameter(node_name, "lockstep")
            seen[node_name] = value
            if value is None:
                self.get_logger().warning(f"parameter lockstep: node '{node_name}' did not answer; not checked")
            elif bool(value) != self.protocol.lockstep:
                flag = "true" if self.protocol.lockstep else "false"
                raise ValueError(f"parameter lockstep: evaluator has {self.protocol.lockstep}, node '{node_name}' runs "
                                 f"lockstep={value}; set them together, e.g. --set {node_name}.lockstep:={flag}")
        return seen

    def check_one_graph(self) -> None:
        """Refuse to evaluate when another graph shares this ROS domain and namespace: its simulator
        would take this graph's resets and commands, and both reports would be wrong. Told by the
        executors publishing the status topic (one a graph), as discovery sees them at start."""
        topic = self.resolve_topic_name(TOPICS["executor_status"])
        executors = self.get_publishers_info_by_topic(topic)
        if len(executors) > 1:
            names = ", ".join(sorted(f"{i.node_namespace.rstrip('/')}/{i.node_name}" for i in executors))
            raise ValueError(f"topic {topic}: {len(executors)} executors publish it ({names}): another graph runs in "
                             f"ROS domain {self.context.get_domain_id()}; give each graph its own "
                             "ROS_DOMAIN_ID (or --namespace)")

    def begin_log(self, episode_id: str, start: float) -> None:
        """Start keeping episode `episode_id`'s divergence, frames and latencies (from `start`, s)."""
        self.log = EpisodeLog(start, self.max_video_frames, self.video_frame_stride, self.max_imagined_chunks)
        self.episode_id = episode_id

    def end_episode(self, name: str, task: str, seed: int, instruction: str, tracker: EpisodeTracker, reason: str,
                    bag: str, wall_s: float, success: bool | None = None, steps: int | None = None,
                    extra: dict | None = None) -> EpisodeRecord:
        """Close the episode's log and build its report record (success/steps default to the tracker's)."""
        log, self.log = self.log, None
        record = episode_record(name, task, seed, instruction, tracker, log, reason, bag, wall_s,
                                self.robot.config.action.dt, success, steps, extra)
        self.monitor_rows.append(monitor_row(record.success, log))
        if record.real_frames:        # written now: a long run must not hold every episode's frames
            path = self.output_dir / "videos" / f"{record.name}.mp4"
            write_episode_video(record, path)
            record.video, record.real_frames, record.imagined_frames = str(path), [], []
        return record

    def publish_result(self, episode_id: str, record: EpisodeRecord) -> None:
        result = EpisodeResult(episode_id=episode_id, task=record.task, instruction=record.instruction,
                               seed=record.seed, success=record.success, steps=record.steps,
                               duration_s=record.extra["duration_s"], wall_time_s=record.extra["wall_time_s"],
                               reason=record.reason)
        result.header.stamp = self.get_clock().now().to_msg()
        self.result_pub.publish(result)
        self.get_logger().info(f"episode {episode_id}: {record.reason} after {record.steps} steps "
                               f"({record.extra['wall_time_s']:.1f} s wall), progress {record.progress_score:.2f}, "
                               f"{len(record.divergence)} imagined frames scored")

    def run_episode(self, task: str, seed: int) -> EpisodeRecord:
        """One closed-loop episode through the task runner, recorded into its bag and scored."""
        bag = ""

        def before_reset(episode_id: str) -> None:
            nonlocal bag
            self.log = None
            bag = self.open_bag(episode_id)   # before the reset so the episode's first state is in the bag

        perturbed = {}

        def started(episode_id: str, start: float) -> None:
            self.begin_log(episode_id, start)
            if self.perturbation is not None:        # before arming: the episode is at its first step
                perturbed["perturbation"] = self.perturb(self.perturbation.draw(seed))

        request = TaskRequest(task=task, seed=seed, arm=True, timeout_s=self.protocol.episode_timeout_s,
                              max_steps=self.protocol.max_steps, episode_id=f"{task}_s{seed}")
        outcome = self.tasks.run(request, hooks=TaskHooks(before_reset=before_reset, started=started))
        self.close_bag(outcome.tracker.last_stamp)
        record = self.end_episode(outcome.episode_id, task, seed, outcome.instruction, outcome.tracker,
                                  outcome.reason, bag, outcome.wall_time_s, extra=perturbed)
        self.publish_result(outcome.episode_id, record)
        return record

    def perturb(self, perturbation: Perturbation) -> dict:
        """Ask the simulator for `perturbation`; what the report keeps of it (at_s: s after the episode's
        first state; scheduled false, with the simulator's reason, when it refused)."""
        row = {**perturbation.as_dict(), "at_s": round((perturbation.at_step - 1) * self.robot.config.action.dt, 6)}
        try:
            self.tasks.call("sim_perturb", Perturb.Request(kind=perturbation.kind, offset_m=list(perturbation.offset_m),
                                                           at_step=perturbation.at_step), timeout_s=10.0)
            return {**row, "scheduled": True}
        except RuntimeError as exc:
            self.get_logger().error(f"parameter perturbation: {exc}; this episode runs unperturbed")
            return {**row, "scheduled": False, "error": str(exc)}

    # ---- replay ---------------------------------------------------------------------------
    def wait_replay(self, reasons: tuple[str, ...], timeout_s: float) -> EpisodeResult:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            state = self.replay_state
            if state is not None and state.reason in reasons:
                return state
            self.replay_changed.wait(0.2)
            self.replay_changed.clear()
        now = self.replay_state.reason if self.replay_state is not None else "nothing received"
        raise RuntimeError(f"{TOPICS['replay_episode']}: replay not {' or '.join(reasons)} after {timeout_s:.0f} s "
                           f"({now}); is a replay node running?")

    def run_replay(self) -> EpisodeRecord:
        """One recorded episode through the live graph, scored against the recording."""
        desc = self.wait_replay(("ready",), 60.0)
        deadline = time.monotonic() + 10.0
        while self.executor_dry_run is None and time.monotonic() < deadline:
            time.sleep(0.1)
        if self.executor_dry_run is not True:
            raise RuntimeError(f"{TOPICS['executor_status']}: executor dry_run is {self.executor_dry_run}; a replay "
                               "arms it only in dry-run (parameter executor.dry_run:=true)")
        episode_id, task, seed, instruction = desc.episode_id, desc.task, int(desc.seed), desc.instruction
        wall_start = time.monotonic()
        self.tasks.set_armed(False)
        bag = self.open_bag(f"{episode_id}_replay")
        self.tasks.reset_graph(episode_id, task, instruction, seed)
        tracker = self.tasks.begin(episode_id, to_sec(desc.header.stamp))
        self.begin_log(episode_id, to_sec(desc.header.stamp))
        self.commanded.clear()
        self.recorded_commands.clear()
        self.collect_commands = True
        self.tasks.set_armed(True)
        if not self.replay_start.wait_for_service(timeout_sec=10.0):
            raise RuntimeError(f"service {SERVICES['replay_start']} not available after 10 s")
        done = threading.Event()
        future = self.replay_start.call_async(Trigger.Request())
        future.add_done_callback(lambda _: done.set())
        done.wait(10.0)
        finished = self.wait_replay(("finished",), self.protocol.episode_timeout_s)
        time.sleep(self.replay_settle_s)             # the graph answers the last recorded states
        self.tasks.set_armed(False)
        self.collect_commands = False
        self.close_bag()
        score = replay_score(self.commanded, self.recorded_commands, list(self.robot.config.action.names),
                             self.robot.config.action.dt)
        self.get_logger().info(f"replay {episode_id}: action L1 {score['l1']:.4f} over {score['matched']} commands "
                               f"({score['commanded']} commanded, {score['recorded']} recorded)")
        record = self.end_episode(episode_id, task, seed, instruction, tracker, "recorded", bag,
                                  time.monotonic() - wall_start, success=finished.success, steps=finished.steps,
                                  extra={"replay": score, "replay_wall_s": round(finished.wall_time_s, 3)})
        self.publish_result(episode_id, record)
        return record

    # ---- the run ------------------------------------------------------------------------
    def write_report(self, episodes: list[EpisodeRecord], lockstep_seen: dict) -> None:
        replay_bag = self.remote_parameter("replay", "bag", 2.0) \
            if self.protocol.mode == "replay" and episodes else None
        run = RunRecord(self.protocol, lockstep_seen, self.backend, self.robot.name, self.graph_name,
                        self.recorder.recorded if self.recorder is not None else [], episodes,
                        self.monitor_rows, replay_bag)
        written = run.write_report(self.output_dir, self.index_dir)
        self.get_logger().info(f"report written to {written['report_json']}")

    def run(self) -> None:
        episodes = []
        lockstep_seen = {}
        try:
            if self.protocol.mode == "closed_loop":
                message = check_training_seeds(self.protocol.seeds, self.protocol.min_eval_seed,
                                               self.protocol.training_seeds)
                if message:
                    self.get_logger().warning(message)
            lockstep_seen = self.check_time_protocol()
            self.check_one_graph()
        except ValueError as exc:
            self.get_logger().error(f"evaluation refused: {exc}")
            self.exit_code = 2
            self.finished = True
            return
        try:
            if self.recorder is not None:
                self.recorder.subscribe()
            if self.protocol.mode == "replay":
                episodes.append(self.run_replay())
            else:
                for task in self.protocol.tasks:
                    for seed in self.protocol.seeds:
                        episodes.append(self.run_episode(task, seed))
        except Exception as exc:
            self.get_logger().error(f"evaluation aborted: {exc}")
            self.exit_code = 1
        try:
            self.write_report(episodes, lockstep_seen)
        except Exception as exc:
            self.get_logger().error(f"writing the report to {self.output_dir} failed: {exc!r}")
            self.exit_code = 1
        self.finished = True          # run_node stops spinning and shuts the context down


def main(args=None):
    raise SystemExit(run_node(EvaluatorNode, args, multithreaded=True))


if __name__ == "__main__":
    main()
