"""policy: the model-core process. Loads a backend by name and answers chunk requests.

The executor asks for a chunk through ExecutionFeedback (request_chunk, request_after); the
policy answers with an ActionChunk computed from the first observation of the current episode
captured at or after `request_after` (the newest one when it is idle; under a simulated delay
the simulator steps on while the request crosses, and this keeps the chunk the one computed from
the state at the request, whatever the timing). Inference runs on a worker thread so subscriptions keep
flowing while the model thinks. The chunk is stamped with the observation's capture time.
Executed actions reported in the feedback reach the backend (`update`, with the newest real
observation) on the same worker thread, before its next prediction. Observations and feedback
this policy cannot use (another embodiment or episode, images that do not decode to the model
input, non-finite state, inconsistent action counts) are dropped, logged with the topic and field
and counted by reason in `rejections`, as are failed inferences. Parameters: `robot`,
`backend` (a registry name, or `auto` to read it from `checkpoint`) and the options the chosen
backend declares (models/backend.py), each a parameter of the same name, declared when the node is
constructed; all are read at configure (read-only).
"""

from __future__ import annotations

import os
import threading
import time
from collections import deque

import numpy as np
import psutil
from vla_msgs.msg import ActionChunk, EpisodeAnnouncement, ExecutionFeedback, ImaginedFuture, Observation, PolicyStatus
from vla_msgs.srv import ResetEpisode

from ..core import images
from ..core.health import Above
from ..core.rtc_prefix import align_prefix
from ..models.backend import PolicyInput
from ..models.inference_threads import prepare_process, use_this_thread
from ..models.registry import backend_class, make_backend
from .diagnostics import Diagnostics
from .managed import ManagedNode
from .parameters import ROBOT, Param
from .common import (LATCHED_QOS, RELIABLE_QOS, SENSOR_QOS, SERVICES, TOPICS, image_msg, load_robot_or_exit,
                     run_node, to_sec)

GRAPH_RESERVED_CPUS = 1    # torch_threads 0: CPUs left to the simulator and other nodes (models/inference_threads.py)
OBSERVATIONS_KEPT = 64     # observations kept for a request (0.8 s at 80 Hz): a request finds the one it asked for


def observation_to_input(obs: Observation, instruction: str, with_env_state: bool) -> PolicyInput:
    frames = {name: images.decode(img.encoding, img.height, img.width, img.step, img.data, where=f"camera {name}")
              for name, img in zip(obs.camera_names, obs.images)}
    env_state = np.asarray(obs.env_state, dtype=np.float64) if with_env_state and len(obs.env_state) else None
    return PolicyInput(to_sec(obs.header.stamp), instruction, frames, np.asarray(obs.state, dtype=np.float64),
                       env_state)


class PolicyNode(ManagedNode):
    PARAMETERS = (
        ROBOT,
        Param("backend", "oracle", "policy backend: a name in models/registry.py (oracle, reach_ik, videovla, bc, "
                                   "vita, lingbot_va, qwen_vla, remote, or an entry point's), or auto: the family "
                                   "named in the checkpoint's config.json; its options are parameters too"),
        Param("checkpoint", "", "checkpoint directory of a learned backend (relative: to the working directory or "
                                "the package); \"\" for scripted backends"),
        Param("torch_threads", 0, "intra-op CPU threads of the inference thread; 0 = one per CPU the process may "
                                  "use, less one left to the rest of the graph (at least one)", (0, 4096)),
    )

    def __init__(self, **kwargs):
        super().__init__("policy", **kwargs)

    def more_parameters(self) -> tuple[Param, ...]:
        """The options the chosen backend declares (models/backend.py), each a parameter of its name."""
        self.backend_type, self.backend_problem = None, ""
        try:
            self.backend_type = backend_class(self.params.backend, self.params.checkpoint)
        except (KeyError, ValueError, OSError, ImportError) as exc:    # configure fails with the reason
            self.backend_problem = str(exc)
            return ()
        return tuple(Param(key, spec.default, f"{self.backend_type.name} backend: {spec.help}")
                     for key, spec in self.backend_type.options.items() if key != "checkpoint")

    def setup(self) -> None:
        """configure: the robot file, the topics and services, everything the node keeps."""
        self.robot = load_robot_or_exit(self, self.params.robot)
        self.backend_name = self.params.backend
        self.torch_threads = self.params.torch_threads      # intra-op threads of the inference thread
        try:
            self.backend = self.backend_from_parameters()
            self.backend_name = self.backend.name
        except (KeyError, ValueError, FileNotFoundError, OSError, RuntimeError) as exc:
            self.get_logger().fatal(f"parameter backend='{self.backend_name}': {exc}")     # e.g. a CUDA error
            raise SystemExit(2) from None
        cfg = self.robot.config
        self.action = cfg.action
        self.lock = threading.Condition()
        self.observations: deque[Observation] = deque(maxlen=OBSERVATIONS_KEPT)   # this episode's, oldest first
        self.request_after: float | None = None
        # the executor's plan during inference: (time of row 0, (k, dim) model space, keep it fixed)
        self.prefix: tuple[float, np.ndarray, bool] | None = None
        self.executed: list[tuple[float, np.ndarray]] = []   # (feedback stamp s, actions) not yet given
        self.backend_lock = threading.Lock()    # reset / update / predict never overlap
        self.episode_id = ""
        self.instruction = ""
        self.chunk_id = 0
        self.inference_ms: deque[float] = deque(maxlen=100)      # the last chunks' inference times
        self.rejections: dict[str, int] = {}    # "<topic>: <field>" (or "inference failed") -> count
        self.running = True

        self.chunk_pub = self.create_publisher(ActionChunk, TOPICS["action_chunk"], RELIABLE_QOS)
        self.imagined_pub = self.create_publisher(ImaginedFuture, TOPICS["imagined"], RELIABLE_QOS)
        self.status_pub = self.create_publisher(PolicyStatus, TOPICS["policy_status"], LATCHED_QOS)
        self.create_subscription(Observation, TOPICS["observation"], self.on_observation, SENSOR_QOS)
        self.create_subscription(ExecutionFeedback, TOPICS["feedback"], self.on_feedback, RELIABLE_QOS)
        self.create_service(ResetEpisode, SERVICES["policy_reset"], self.on_reset)
        self.create_subscription(EpisodeAnnouncement, TOPICS["episode"], self.on_episode, LATCHED_QOS)
        self.create_timer(1.0, self.publish_status)
        chunk_ms = self.backend.chunk_length * cfg.action.dt * 1e3       # the checkpoint's chunk, in time
        self.chunks_window = (time.monotonic(), 0)      # (wall s, chunks) at the last diagnostics
        self.diagnostics = Diagnostics(self, "model", cfg.name, self.health_figures, [
            Above("inference_ms_p95", 0.5 * chunk_ms, chunk_ms, " ms")])
        self.worker = threading.Thread(target=self.serve, name="inference", daemon=True)
        self.worker.start()
        self.publish_status()
        self.get_logger().info(f"policy ready: backend {self.backend_name} for {cfg.name}")

    def backend_from_parameters(self):
        """The backend named by `backend`, built from the parameters it declares as options."""
        if self.backend_type is None:
            raise ValueError(self.backend_problem)
        options = {key: getattr(self.params, key) for key in self.backend_type.options}
        self.backend_options = options
        return make_backend(self.backend_type.name, self.robot, **options)

    # ---- inputs -------------------------------------------------------------------------
    def reject(self, key: str, why: str, routine: bool = False) -> None:
        """Count an input (or request) dropped, by "<topic>: <field>"; routine drops (another episode's
        messages around a reset) are logged at debug level only."""
        self.rejections[key] = self.rejections.get(key, 0) + 1
        log = self.get_logger()
        (log.debug if routine else log.error)(f"{key}: {why} (dropped; {self.rejections[key]} so far)",
                                              throttle_duration_sec=2.0)

    def observation_problem(self, msg: Observation) -> tuple[str, str]:
        """(field, why) for an observation this policy cannot use, ("", "") if it can."""
        cfg = self.robot.config
        if msg.embodiment != self.robot.name:
            return "embodiment", f"'{msg.embodiment}', this policy serves '{self.robot.name}'"
        if msg.episode_id != self.episode_id:
            return "episode_id", f"'{msg.episode_id}', the episode is '{self.episode_id}'"
        cameras = {c.name: c for c in cfg.cameras}
        names = list(msg.camera_names)
        required = [c.name for c in cfg.cameras if c.required]
        if len(names) != len(msg.images) or len(set(names)) != len(names) or \
                any(n not in names for n in required) or any(n not in cameras for n in names):
            return "camera_names", (f"{names} for {len(msg.images)} images; the robot file's cameras are "
                                    f"{list(cameras)} (required: {required})")
        for name, img in zip(names, msg.images):
            try:
                frame = images.decode(img.encoding, img.height, img.width, img.step, img.data, where=f"camera {name}")
            except images.ImageEncodingError as exc:
                return "images", str(exc)
            size = tuple(cameras[name].input_size)
            if frame.shape[:2] != size:
                return "images", f"camera {name}: {img.height}x{img.width}, the model input is {size[0]}x{size[1]}"
        state_names = cfg.state.names
        if len(msg.state) != len(state_names) or not np.all(np.isfinite(msg.state)):
            return "state", f"{len(msg.state)} values, expected {len(state_names)} finite ({', '.join(state_names)})"
        if self.backend.uses_privileged_state and (not len(msg.env_state) or not np.all(np.isfinite(msg.env_state))):
            return "env_state", f"{len(msg.env_state)} values; backend {self.backend_name} needs it, finite"
        return "", ""

    def on_observation(self, msg: Observation) -> None:
        if not self.active:                # inactive (lifecycle): no chunks
            return
        field, why = self.observation_problem(msg)
        if field:
            self.reject(f"{self.resolve_topic_name(TOPICS['observation'])}: {field}", why, routine=field == "episode_id")
            return
        with self.lock:
            self.observations.append(msg)
            self.lock.notify()

    def feedback_problem(self, msg: ExecutionFeedback) -> tuple[str, str]:
        """(field, why) for feedback whose action counts or values do not add up, ("", "") if they do."""
        dim = self.action.dim
        if msg.action_dim not in (0, dim):
            return "action_dim", f"{msg.action_dim}, the robot has {dim}"
        executed = np.asarray(msg.executed_actions, dtype=np.float64)
        if executed.size != msg.executed_count * dim or not np.all(np.isfinite(executed)):
            return "executed_actions", (f"{executed.size} values for executed_count {msg.executed_count} x {dim} "
                                        "(must match, finite)")
        left = np.asarray(msg.leftover_normalized, dtype=np.float64)
        if left.size % dim or not np.all(np.isfinite(left)):
            return "leftover_normalized", f"{left.size} values, not rows of {dim} finite values"
        return "", ""

    def on_feedback(self, msg: ExecutionFeedback) -> None:
        if msg.episode_id != self.episode_id:
            self.reject(f"{self.resolve_topic_name(TOPICS['feedback'])}: episode_id",
                        f"'{msg.episode_id}', the episode is '{self.episode_id}'", routine=True)
            return
        field, why = self.feedback_problem(msg)
        if field:
            self.reject(f"{self.resolve_topic_name(TOPICS['feedback'])}: {field}", why)
            return
        dim = self.action.dim
        if msg.executed_count:
            executed = np.asarray(msg.executed_actions, dtype=np.float64).reshape(msg.executed_count, dim)
            with self.lock:
                stamp = to_sec(msg.header.stamp)
                if self.executed and stamp < self.executed[-1][0]:     # the clock went back: a new timeline
                    self.executed.clear()
                self.executed.append((stamp, executed))
        if msg.request_chunk:
            with self.lock:
                self.request_after = to_sec(msg.request_after)
                # real-time chunking: the executor's plan from request_after on, model space
                left = np.asarray(msg.leftover_normalized, dtype=np.float64)
                self.prefix = (self.request_after, left.reshape(-1, dim), msg.prefix_fixed) if left.size else None
                self.lock.notify()

    def on_reset(self, request, response):
        try:
            with self.backend_lock, self.lock:      # waits for an inference in flight to finish
                self.backend.reset(request.instruction, seed=int(request.seed), task=request.task)
                self.episode_id, self.instruction = request.episode_id, request.instruction
                self.request_after, self.prefix = None, None
                self.observations.clear()
                self.executed.clear()
        except (KeyError, ValueError) as exc:
            response.success, response.message = False, str(exc)
            return response
        response.success, response.message = True, f"{self.backend_name} reset for '{request.instruction}'"
        response.instruction = request.instruction
        return response

    def on_episode(self, msg: EpisodeAnnouncement) -> None:
        """A policy (re)started while an episode runs rejoins it: the reset the episode began with."""
        if not msg.active or msg.episode_id == self.episode_id:
            return
        request = ResetEpisode.Request(task=msg.task, instruction=msg.instruction, seed=msg.seed,
                                       episode_id=msg.episode_id)
        response = self.on_reset(request, ResetEpisode.Response())
        if response.success:
            self.get_logger().warning(f"{TOPICS['episode']}: rejoined running episode '{msg.episode_id}'")
        else:
            self.get_logger().error(f"{TOPICS['episode']}: cannot rejoin episode '{msg.episode_id}': "
                                    f"{response.message}")

    # ---- inference worker --------------------------------------------------------------
    def _ready_observation(self) -> Observation | None:
        """The first observation of this episode captured at or after the pending request."""
        if self.request_after is None:
            return None
        return next((o for o in self.observations if o.episode_id == self.episode_id
                     and to_sec(o.header.stamp) >= self.request_after - 1e-6), None)

    def serve(self) -> None:
        """The inference thread: every prediction (and update) runs here, with its own torch threads."""
        threads = use_this_thread(self.torch_threads, reserve=GRAPH_RESERVED_CPUS)
        if threads is not None:
            self.get_logger().info(f"inference thread: {threads} torch threads, MKL threads "
                                   f"{os.environ.get('MKL_NUM_THREADS', 'default')}")
        while self.running:
            with self.lock:
                while self.running and self._ready_observation() is None:
                    self.lock.wait(timeout=0.5)
            if self.running:
                self.serve_request()

    def serve_request(self) -> bool:
        """Answer the pending chunk request if its observation is there (False if not). A failed
        inference is logged and counted, never raised: it must not kill the model process."""
        with self.lock:
            obs = self._ready_observation()
            if obs is None:
                return False
            self.request_after = None
            prefix, self.prefix = self.prefix, None
            stamp = to_sec(obs.header.stamp) + 1e-9      # actions executed up to the observation only
            executed = [a for t, a in self.executed if t <= stamp]
            self.executed = [(t, a) for t, a in self.executed if t > stamp]
            instruction, episode_id = self.instruction, self.episode_id
        try:
            aligned = None if prefix is None else \
                align_prefix(prefix[0], prefix[1], to_sec(obs.header.stamp), self.action.dt)
            fixed = aligned if prefix is not None and prefix[2] else None
            self.answer(obs, instruction, episode_id, fixed, executed, in_flight=aligned)
        except Exception as exc:  # noqa: BLE001
            self.reject("inference failed", f"observation {obs.seq}: {exc}")
        return True

    def answer(self, obs: Observation, instruction: str, episode_id: str, prefix: np.ndarray | None = None,
               executed: list[np.ndarray] = (), in_flight: np.ndarray | None = None) -> None:
        """Give the backend what executed since its last chunk and the observation after it, then
        predict a chunk for that observation and publish it (and its imagined frames)."""
        t_start = time.perf_counter()
        inputs = observation_to_input(obs, instruction, self.backend.uses_privileged_state)
        inputs.in_flight = in_flight
        with self.backend_lock:
            if episode_id != self.episode_id:          # reset while this request waited: not this episode's
                return
            if len(executed):
                self.backend.update(np.concatenate(executed), inputs)
            t_pre = time.perf_counter()
            out = self.backend.predict(inputs, prefix=prefix)
        t_inf = time.perf_counter()
        horizon, dim = out.actions.shape
        msg = ActionChunk()
        msg.header.stamp = obs.header.stamp
        msg.header.frame_id = obs.header.frame_id
        self.chunk_id += 1
        msg.chunk_id, msg.obs_seq, msg.episode_id = self.chunk_id, obs.seq, episode_id
        msg.action_space, msg.action_names = self.action.space, list(self.action.names)
        msg.horizon, msg.action_dim, msg.dt = horizon, dim, float(self.action.dt)
        msg.actions = out.actions.astype(np.float32).ravel().tolist()
        msg.actions_normalized = out.actions_normalized.astype(np.float32).ravel().tolist()
        msg.backend = self.backend_name
        msg.prefix_length = 0 if prefix is None or not self.backend.supports_prefix else min(len(prefix), horizon)
        timings = out.timings_ms
        msg.preprocess_ms = (t_pre - t_start) * 1e3 + timings.get("preprocess_ms", 0.0)
        msg.inference_ms = timings.get("inference_ms", (t_inf - t_pre) * 1e3)
        msg.postprocess_ms = (time.perf_counter() - t_inf) * 1e3 + timings.get("postprocess_ms", 0.0)
        now = self.get_clock().now().nanoseconds * 1e-9
        msg.obs_age_ms = max(0.0, now - to_sec(obs.header.stamp)) * 1e3
        self.chunk_pub.publish(msg)
        self.inference_ms.append(msg.inference_ms)
        if out.imagined_frames:
            self.publish_imagined(msg, out.imagined_frames)

    def publish_imagined(self, chunk: ActionChunk, frames: dict) -> None:
        """Imagined future frames, published after the chunk (off the critical path)."""
        offsets = self.backend.future_offsets
        imagined = ImaginedFuture(chunk_id=chunk.chunk_id, camera_names=list(frames))
        imagined.header = chunk.header
        n = min(len(f) for f in frames.values())
        for k in range(n):
            for name, f in frames.items():
                imagined.frames.append(image_msg(f[k], chunk.header.stamp, f"camera_{name}", "rgb8"))
        imagined.frame_offsets = [float(o) * chunk.dt for o in offsets[:n]]
        self.imagined_pub.publish(imagined)

    def health_figures(self) -> dict:
        """What /diagnostics reports: backend, device, chunk rate, inference time, drops by reason, memory."""
        recent = list(self.inference_ms)
        now, (then, before) = time.monotonic(), self.chunks_window
        self.chunks_window = (now, self.chunk_id)
        figures = {"backend": self.backend_name, "device": self.backend_options.get("device", "cpu"),
                   "episode_id": self.episode_id, "chunks_published": self.chunk_id,
                   "chunk_rate_hz": (self.chunk_id - before) / max(now - then, 1e-6),
                   "requests_pending": int(self.request_after is not None),
                   "inference_ms_p50": float(np.percentile(recent, 50)) if recent else None,
                   "inference_ms_p95": float(np.percentile(recent, 95)) if recent else None,
                   "dropped_by_reason": dict(self.rejections),
                   "process_rss_mb": psutil.Process().memory_info().rss / 2 ** 20}
        device = str(figures["device"])
        if device.startswith("cuda"):
            import torch
            figures["cuda_allocated_mb"] = torch.cuda.memory_allocated(device) / 2 ** 20
            figures["cuda_peak_mb"] = torch.cuda.max_memory_allocated(device) / 2 ** 20
        return figures

    def publish_status(self) -> None:
        recent = list(self.inference_ms)
        status = PolicyStatus(backend=self.backend_name, embodiment=self.robot.name, ready=self.active,
                              chunks_published=self.chunk_id,
                              requests_pending=int(self.request_after is not None))
        if recent:
            status.inference_ms_p50 = float(np.percentile(recent, 50))
            status.inference_ms_p95 = float(np.percentile(recent, 95))
            status.inference_ms_last = float(recent[-1])
        status.header.stamp = self.get_clock().now().to_msg()
        self.status_pub.publish(status)

    def teardown(self) -> None:
        """cleanup / exit: stop the inference worker, then free the model."""
        self.stop_worker()
        self.backend.close()               # configure loads it again
        self.backend = None

    def stop_worker(self) -> None:
        """Stop the inference worker and wait for it, so no thread is inside torch or rclpy at exit."""
        self.running = False
        with self.lock:
            self.lock.notify_all()
        if self.worker.is_alive() and self.worker is not threading.current_thread():
            self.worker.join(timeout=10.0)


def main(args=None):
    prepare_process()
    run_node(PolicyNode, args)


if __name__ == "__main__":
    main()
