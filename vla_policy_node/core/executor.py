"""Action-chunk executor core (no ROS): schedule, when to ask the policy, safety gate, holds.

`tick(now, state_stamp)` is called once per control period (or, in lockstep, once per new robot
state) and returns what to send. Modes (DESIGN section 7):

- ``sync``:      execute `execute_per_chunk` actions of a chunk, then ask for the next chunk and
                 wait (lockstep) or hold still (free-running): the papers' evaluation loop. The
                 robot stood still while the policy thought, so a chunk starts when it arrives;
- ``async``:     keep executing while the next chunk is computed: ask when the scheduled
                 horizon left falls to the measured latency + margin (+ one period), or once
                 `execute_per_chunk` actions of the newest chunk have run (no plan runs open loop
                 longer than its delay requires);
- ``async_rtc``: as async, and the request carries the plan that will execute during inference
                 (model space) so the policy continues it (real-time chunking by inpainting).

Chunks are placed on a time axis (t0 + i*dt, stale actions skipped), merged where they overlap
(replace / ensemble / average) and sampled at the control rate (nearest / linear / smooth, the
last bounding acceleration). Every command, holds included, goes through the safety gate.
Times in s on the robot's clock (sim time in simulation). When that clock goes back (a
simulator's timeline reset under use_sim_time), every stamp the executor holds belongs to the old
timeline: the plan and the pending request are dropped and the robot holds until a chunk computed
on the new timeline comes; a state stamped ahead of the clock is stale like an old one.
With a simulated delay (lockstep only, core/simulated_delay.py) a chunk answering a request at t
is held back until t + d control steps; until then the simulator keeps stepping on the plan in
flight (async) or the hold (sync), and waits for the chunk once t + d has come, so a lockstep
run does not depend on how long the model really took (d = 0: the chunk runs from its own step).
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field

import numpy as np

from .action_correction import ActionCorrection, correction_features
from .action_queue import ActionQueue, Chunk, QueuedAction
from .embodiment import ExecutorConfig
from .hold import hold_command
from .latency import LatencyEstimator
from .motion_limiter import POSITION_SPACES, MotionLimiter
from .safety import ChunkRejected, SafetyGate
from .simulated_delay import SimulatedDelay

MODES = ("sync", "async", "async_rtc")
RECEIVED_KEPT = 64           # (chunk id, stamp) of the last chunks received: duplicates are refused
CLOCK_JUMP_BACK_S = 1e-6     # a tick earlier than the previous one by more than this: the clock went back
HOLD_RESYNC_STEPS = 5        # a robot farther than this many max_steps from the held command is held where it is


@dataclass
class TickResult:
    command: np.ndarray | None        # action to send (physical units), None = send nothing
    executed: QueuedAction | None     # scheduled action it came from (None when holding)
    hold_reason: str = ""             # why the robot holds ("" when executing)
    request_chunk: bool = False       # the policy should compute a new chunk
    notes: list = field(default_factory=list)   # safety gate notes for this command


def executor_settings(embodiment, overrides: dict | None = None) -> ExecutorConfig:
    """The robot YAML's executor section with non-empty overrides (node parameters) applied."""
    base = embodiment.config.executor.model_dump()
    base.update({k: v for k, v in (overrides or {}).items() if v not in (None, "")})
    try:
        return ExecutorConfig(**base)
    except ValueError as exc:
        raise ValueError(f"{embodiment.path}: executor settings {overrides}: {exc}") from None


class ChunkExecutor:
    def __init__(self, embodiment, mode: str | None = None, lockstep: bool = True, dry_run: bool = False,
                 max_state_age_s: float = 0.25, overrides: dict | None = None,
                 simulated_delay: SimulatedDelay | None = None, correction: ActionCorrection | None = None):
        if mode is not None and mode not in MODES:
            raise ValueError(f"executor mode '{mode}' unknown; use one of {MODES}")
        if simulated_delay is not None and not lockstep:
            raise ValueError("simulated_delay_steps: a simulated delay needs lockstep (free-running, the delay is "
                             "the real one)")
        cfg = embodiment.config
        self.settings = executor_settings(embodiment, dict(overrides or {}, mode=mode))
        s = self.settings
        self.space = cfg.action.space
        self.dim = cfg.action.dim
        self.dt = cfg.action.dt                            # between actions of a chunk
        if simulated_delay is not None and max(simulated_delay.steps) * self.dt >= self.settings.max_chunk_age_s:
            raise ValueError(f"simulated_delay_steps: {max(simulated_delay.steps)} steps of {self.dt * 1e3:g} ms reach "
                             f"max_chunk_age_s {self.settings.max_chunk_age_s} s: every such chunk would be stale")
        self.control_dt = 1.0 / s.control_rate_hz if s.control_rate_hz else self.dt
        if abs(self.control_dt - self.dt) > 1e-12 and self.space not in POSITION_SPACES:
            raise ValueError(f"executor control_rate_hz {s.control_rate_hz}: a {self.space} action is a step per "
                             f"action period ({cfg.action.control_rate_hz} Hz) and cannot be resampled")
        self.horizon = cfg.action.horizon
        self.execute_per_chunk = cfg.action.execute_per_chunk
        self.gripper_index = cfg.action.gripper.index if cfg.action.gripper else None
        self.mode, self.lockstep, self.dry_run = s.mode, lockstep, dry_run
        self.max_state_age_s = max_state_age_s
        self.simulated_delay = simulated_delay
        self.request_delay_steps = 0                       # simulated delay of the request in flight
        self.pending: list[tuple[float, Chunk]] = []       # (release time, chunk) held back by the delay
        self.correction = correction                       # A2C2-style per-step residual from the proprio
        self.request_proprio: np.ndarray | None = None     # proprio when the request in flight was made
        self.origin_proprio: dict[int, tuple] = {}         # chunk id -> (proprio it was computed from, horizon)
        self.gate = SafetyGate.from_embodiment(embodiment)
        self.gate.dt = self.control_dt                     # velocity / acceleration at the command rate
        self.queue = ActionQueue(self.dt, s.merge, "nearest" if s.interpolation == "nearest" else "linear",
                                 s.ensemble_decay, s.ensemble_chunks)
        self.latency = LatencyEstimator(s.latency_window, s.latency_warmup, s.latency_percentile,
                                        s.initial_latency_s)
        acc = None if s.max_acceleration is None else np.asarray(s.max_acceleration, dtype=np.float64)
        if acc is not None and self.gripper_index is not None:
            acc[self.gripper_index] = np.inf                # the gripper opens / closes at once
        self.limiter = MotionLimiter.for_space(self.space, self.control_dt, max_acceleration=acc)
        self.smooth = s.interpolation == "smooth"
        self.armed = False
        self.estop = False
        self.estop_reason = ""
        self.episode_id = ""
        self.episode_start = float("-inf")
        self.last_command: np.ndarray | None = None
        self.previous_command: np.ndarray | None = None
        self.current_chunk: Chunk | None = None
        self.received: deque = deque(maxlen=RECEIVED_KEPT)   # (chunk id, t0) this episode
        self.plan_obs_t0 = float("-inf")                  # observation time of the newest chunk scheduled
        self.awaiting_chunk = False
        self.force_request = False
        self.executed_in_chunk = 0
        self.request_time = float("-inf")
        self.last_tick = float("-inf")                     # `now` of the previous tick (s)
        self.last_starved = float("nan")
        self.executed_since_feedback: list[np.ndarray] = []
        self.counters = dict(commands_sent=0, dry_run_commands=0, chunks_received=0, chunks_rejected=0,
                             chunks_stale=0, starved_ticks=0, startup_ticks=0, stale_holds=0, requests=0, ticks=0,
                             states_rejected=0, clock_jumps_back=0, hold_resyncs=0)
        self.rejections: dict[str, int] = {}   # "chunk: <field or reason>" / "state: <field>" -> inputs not used

    def count_rejection(self, key: str) -> None:
        """Count an input not used, by reason ("chunk: dt", "state: position", ...)."""
        self.rejections[key] = self.rejections.get(key, 0) + 1

    # ---- episode and actuation control -------------------------------------------------
    def reset(self, episode_id: str, now: float, task: str = "", seed: int = 0) -> None:
        """A new episode at `now`; `task` and `seed` seed the simulated delays' draws."""
        self.queue.clear()
        self.origin_proprio.clear()
        self.pending.clear()
        if self.simulated_delay is not None:
            self.simulated_delay.start_episode(task, seed)
        self.current_chunk = None
        self.received = deque(maxlen=RECEIVED_KEPT)
        self.awaiting_chunk = False
        self.plan_obs_t0 = float("-inf")
        self.last_command = self.previous_command = None
        self.limiter.reset()
        self.episode_id = episode_id
        self.episode_start = now
        self.executed_in_chunk = 0
        self.force_request = False
        self.request_time = float("-inf")
        self.executed_since_feedback.clear()

    def set_armed(self, armed: bool) -> tuple[bool, str]:
        if armed and self.estop:
            return False, f"e-stop latched ({self.estop_reason}); clear it first"
        self.armed = armed
        if not armed:
            self.queue.clear()
            self.pending.clear()
            self.awaiting_chunk = False
        return True, "armed" if armed else "disarmed"

    def emergency_stop(self, engage: bool, clear: bool, reason: str = "") -> tuple[bool, str]:
        if engage:
            self.estop, self.estop_reason, self.armed = True, reason or "requested", False
            self.queue.clear()
            self.pending.clear()
            self.awaiting_chunk = False
            return True, f"e-stop engaged: {self.estop_reason}"
        if clear:
            self.estop, self.estop_reason = False, ""
            return True, "e-stop cleared; arm again to actuate"
        return False, "e-stop stays latched: send clear=true to release it"

    @property
    def hold_reason(self) -> str:
        """Why the robot holds still, as ExecutorStatus reports it: "e-stop", "disarmed",
        "waiting for chunk", or "" (executing)."""
        if self.estop:
            return "e-stop"
        if not self.armed:
            return "disarmed"
        return "waiting for chunk" if self.awaiting_chunk else ""

    def replan(self, now: float, drop_plan: bool = False) -> bool:
        """Ask for a new chunk at the next tick (e.g. the imagined future diverged from the real
        one). drop_plan=False keeps executing the current plan until the new chunk arrives;
        drop_plan=True holds still until then. False if disarmed."""
        if not self.armed:
            return False
        if drop_plan:
            self.queue.clear()
        self.awaiting_chunk = False
        self.force_request = True
        return True

    def on_clock_jump_back(self, now: float) -> None:
        """The clock went back to `now`: drop what is stamped on the old timeline (plan, request,
        received chunks) and keep the episode, the e-stop and the last command to hold at."""
        self.counters["clock_jumps_back"] += 1
        self.queue.clear()
        self.pending.clear()
        self.current_chunk = None
        self.received.clear()
        self.awaiting_chunk = False
        self.plan_obs_t0 = float("-inf")
        self.force_request = False
        self.request_time = float("-inf")
        self.episode_start = min(self.episode_start, now)
        self.executed_in_chunk = 0

    # ---- inputs ----------------------------------------------------------------------
    def on_chunk(self, chunk: Chunk, now: float) -> tuple[bool, str]:
        """Validate a chunk and schedule it (sync: only the first execute_per_chunk actions).
        A chunk not scheduled is counted in `rejections` by reason."""
        if chunk.episode_id != self.episode_id or chunk.t0 < self.episode_start - self.queue.tolerance:
            self.count_rejection("chunk: episode_id")
            return False, "chunk from another episode"
        if not self.armed:
            self.count_rejection("chunk: disarmed")
            return False, "disarmed"
        key = (chunk.chunk_id, round(chunk.t0, 6))
        if key in self.received:      # a chunk delivered twice would restart its actions (sync)
            self.count_rejection("chunk: duplicate")
            return False, f"duplicate of chunk {chunk.chunk_id} already received"
        try:
            chunk.actions = self.gate.check_chunk(chunk.actions, chunk.horizon, chunk.actions.shape[-1])
        except ChunkRejected as exc:
            self.counters["chunks_rejected"] += 1
            self.count_rejection("chunk: actions")
            return False, f"rejected: {exc}"
        if chunk.t0 < self.request_time - self.queue.tolerance:
            self.count_rejection("chunk: older than requested")
            return False, "chunk computed from an observation older than requested"
        if chunk.t0 <= self.plan_obs_t0 + 1e-9 and not self.awaiting_chunk:
            # a second answer to one request (it was re-sent while the first was computed): the plan
            # already holds a chunk from this observation; taking both would make the run depend on timing
            self.count_rejection("chunk: observation already answered")
            return False, "a chunk from this observation is already scheduled"
        age = now - chunk.t0
        if age < -self.settings.max_chunk_age_s:
            self.counters["chunks_rejected"] += 1
            self.count_rejection("chunk: stamp in the future")
            self.awaiting_chunk = False                     # computed on another timeline: ask again
            return False, f"stamped {-age:.3f} s in the future (> max_chunk_age_s {self.settings.max_chunk_age_s})"
        if age > self.settings.max_chunk_age_s:
            self.counters["chunks_stale"] += 1
            self.count_rejection("chunk: stale")
            self.awaiting_chunk = False                     # ask again on the next tick
            return False, f"stale: observation {age:.3f} s old > max_chunk_age_s {self.settings.max_chunk_age_s}"
        self.received.append(key)
        if self.correction is not None and self.request_proprio is not None:
            if len(self.origin_proprio) >= RECEIVED_KEPT:
                self.origin_proprio.pop(next(iter(self.origin_proprio)))
            self.origin_proprio[chunk.chunk_id] = (self.request_proprio, chunk.horizon)
        self.plan_obs_t0 = max(self.plan_obs_t0, chunk.t0)
        self.awaiting_chunk = False
        release = chunk.t0 + self.request_delay_steps * self.dt
        if self.simulated_delay is not None and release > now + self.queue.tolerance:
            self.pending.append((release, chunk))
            return True, f"held back until {release:.4f} s (simulated delay of {self.request_delay_steps} steps)"
        return self._schedule(chunk, now)

    def _schedule(self, chunk: Chunk, now: float) -> tuple[bool, str]:
        """Put an accepted chunk on the plan at `now` (its arrival, or its release under a simulated delay)."""
        self.counters["chunks_received"] += 1
        self.latency.add(now - chunk.t0)
        self.current_chunk = chunk
        limit = None
        if self.mode == "sync":
            # the seeds' loop: the robot stood still while the policy thought, so the chunk is
            # still valid as computed; it starts now rather than losing its first actions.
            # With merge=replace only the actions to execute are scheduled; with ensemble /
            # average the whole chunk is, so later chunks vote on the same times (ACT).
            limit = self.execute_per_chunk if self.queue.merge == "replace" else None
            chunk.t0 = max(chunk.t0, now)
        queued = self.queue.insert(chunk, now, limit=limit)
        self.executed_in_chunk = 0
        return True, f"queued {queued} actions"

    def _release_due(self, now: float) -> None:
        """Schedule the chunks whose simulated delay has passed."""
        due = [c for t, c in self.pending if t <= now + self.queue.tolerance]
        if due:
            self.pending = [(t, c) for t, c in self.pending if t > now + self.queue.tolerance]
            for chunk in due:
                self._schedule(chunk, now)

    def in_delay_window(self, now: float) -> bool:
        """Simulated delay: the request in flight is not due yet, or its chunk is held back. A
        lockstep simulator then keeps stepping on the plan or the hold instead of waiting."""
        if self.simulated_delay is None:
            return False
        due = self.request_time + self.request_delay_steps * self.dt - self.queue.tolerance
        return bool(self.pending) or (self.awaiting_chunk and now < due)

    # ---- control tick ------------------------------------------------------------------
    def needs_chunk(self, now: float) -> bool:
        """Whether to ask the policy now (one request in flight at a time)."""
        if self.awaiting_chunk:
            return False
        if self.force_request:
            self.force_request = False
            return True
        if self.pending:                                    # its answer is held back (simulated delay)
            return False
        remaining = self.queue.remaining_time(now)
        if self.mode == "sync":
            return self.executed_in_chunk >= self.execute_per_chunk or \
                (remaining <= self.queue.tolerance and not self.queue.has_future(now))
        lead = self.latency.estimate() + self.settings.latency_margin_s + self.control_dt
        replan = self.current_chunk is not None and self.executed_in_chunk >= self.execute_per_chunk
        return replan or remaining <= lead + 1e-9

    def tick(self, now: float, state_stamp: float | None, measured: np.ndarray | None = None,
             measured_ee: np.ndarray | None = None, proprio: np.ndarray | None = None) -> TickResult:
        """One control period at time `now`. `measured`: measured state in action coordinates
        (position spaces), `measured_ee`: hand position (m) for the workspace check, `proprio`: the
        state in the robot file's order (the per-step correction's input)."""
        self.counters["ticks"] += 1
        if now < self.last_tick - CLOCK_JUMP_BACK_S:
            self.on_clock_jump_back(now)
        self.last_tick = now
        if self.estop:
            return self._hold("e-stop", measured, measured_ee)
        if not self.armed:
            return self._hold("disarmed", measured, measured_ee)
        if state_stamp is None or abs(now - state_stamp) > self.max_state_age_s:
            self.counters["stale_holds"] += 1
            return self._hold("stale state", measured, measured_ee)
        self._release_due(now)
        request = self.needs_chunk(now)
        if request:
            self._requested(now)
            self.request_proprio = None if proprio is None else np.asarray(proprio, dtype=np.float64)
        if self.lockstep and self.simulated_delay is not None and self.awaiting_chunk and \
                not self.in_delay_window(now):
            # the requested chunk is due now: the simulator waits for it rather than running on the old
            # plan for as long as the model happens to take (which would make the run depend on the machine)
            return self._starved(now, "waiting for chunk", request, measured, measured_ee)
        if self.mode == "sync" and self.executed_in_chunk >= self.execute_per_chunk:
            return self._starved(now, "waiting for chunk", request, measured, measured_ee)
        item = self.queue.pop(now)
        if item is None:
            reason = "chunk starts later" if self.queue.has_future(now) else "waiting for chunk"
            return self._starved(now, reason, request, measured, measured_ee)
        target = item.action
        origin = self.origin_proprio.get(item.chunk_id) if self.correction is not None else None
        if origin is not None and proprio is not None:
            target = target + self.correction.residual(
                correction_features(proprio, origin[0], item.action, item.index, origin[1]))
        if self.smooth:
            target = self.limiter.step(target)
        try:
            cmd, notes = self.gate.filter(target, self._reference(measured), measured, self.previous_command,
                                          measured_ee)
        except ChunkRejected as exc:
            result = self._hold(f"unsafe command: {exc}", measured, measured_ee)
            result.request_chunk = request
            return result
        if not self.smooth:
            self.limiter.reset(cmd)
        self._sent(cmd)
        self.executed_in_chunk += 1
        self.executed_since_feedback.append(cmd)
        return TickResult(cmd, item, "", request_chunk=request, notes=notes)

    def _requested(self, now: float) -> None:
        self.awaiting_chunk = True
        self.request_time = now
        self.request_delay_steps = 0 if self.simulated_delay is None else self.simulated_delay.draw()
        self.counters["requests"] += 1

    def _starved(self, now: float, reason: str, request: bool, measured, measured_ee) -> TickResult:
        """No action for `now`: lockstep waits (the simulator stays frozen), free-running holds."""
        if now != self.last_starved:                       # lockstep re-ticks the same state
            # before the episode's first chunk every mode waits: counted apart from starvation
            self.counters["starved_ticks" if self.current_chunk is not None else "startup_ticks"] += 1
            self.last_starved = now
        if self.lockstep and not self.in_delay_window(now):
            return TickResult(None, None, reason, request_chunk=request)
        result = self._hold(reason, measured, measured_ee)
        result.request_chunk = request
        return result

    def hold_target(self, measured: np.ndarray | None) -> np.ndarray | None:
        """The command that keeps the robot still (before smoothing), core/hold.py. A position-space
        robot found more than HOLD_RESYNC_STEPS command steps (limits.max_step) away from the held
        command was moved by something else (a simulator reset, a hand, an obstacle): it is held
        where it is, not dragged back to where the executor last sent it."""
        last = self.last_command
        if last is not None and measured is not None and self.space in POSITION_SPACES:
            step = self.gate.max_step if self.gate.max_step is not None else None
            if step is not None:
                away = np.abs(np.asarray(measured, dtype=np.float64) - last)[: len(step)]
                dims = [i for i in range(len(away)) if i != self.gripper_index]
                if np.any(away[dims] > HOLD_RESYNC_STEPS * step[dims]):
                    self.counters["hold_resyncs"] += 1
                    self.limiter.reset()
                    # hold the measured state, and step the next commands from it, not from the old one
                    last = self.last_command = self.previous_command = None
        return hold_command(self.space, self.dim, self.gripper_index, last, measured)

    def _hold(self, reason: str, measured=None, measured_ee=None) -> TickResult:
        if self.lockstep and reason in ("disarmed", "e-stop"):
            return TickResult(None, None, reason)  # lockstep: the simulator stays frozen
        target = self.hold_target(measured)
        if target is None:
            return TickResult(None, None, reason)
        if self.settings.max_acceleration is not None and self.limiter.y is not None:
            if self.space in POSITION_SPACES:       # brake with bounded deceleration
                target = self.limiter.hold()
                if self.gripper_index is not None and self.last_command is not None:
                    target[self.gripper_index] = self.last_command[self.gripper_index]
            else:
                target = self.limiter.step(target)
        try:
            cmd, notes = self.gate.filter(target, self._reference(measured), measured, self.previous_command,
                                          measured_ee)
        except ChunkRejected:
            return TickResult(None, None, reason)
        self._sent(cmd)
        return TickResult(cmd, None, reason, notes=notes)

    def _reference(self, measured: np.ndarray | None) -> np.ndarray | None:
        """The command a new one is stepped from: the last one sent, else (position spaces) the
        measured state, so the first command after a reset or arming moves no faster than limits allow."""
        if self.last_command is None and self.space in POSITION_SPACES and measured is not None:
            return np.asarray(measured, dtype=np.float64)
        return self.last_command

    def _sent(self, cmd: np.ndarray) -> None:
        self.previous_command = self.last_command
        self.last_command = cmd
        self.counters["dry_run_commands" if self.dry_run else "commands_sent"] += 1

    # ---- feedback to the policy --------------------------------------------------------
    def prefix_for_request(self) -> np.ndarray:
        """Async modes: the plan (model space) from the request time over the expected delay plus
        one period: what will run while the policy thinks (in async_rtc the new chunk must continue
        it; in async a world model may imagine its outcome). Empty in sync: the robot waits."""
        if self.mode == "sync":
            return np.zeros((0, self.dim))
        horizon = self.current_chunk.horizon if self.current_chunk is not None else self.horizon
        count = min(horizon - 1, self.latency.steps(self.dt) + 1)
        plan = self.queue.planned(self.request_time, count)
        return np.array([q.action_normalized for q in plan]).reshape(-1, self.dim)

    def take_feedback(self, request: bool = False) -> tuple[np.ndarray, np.ndarray]:
        """(executed actions since the last call, planned model-space actions sent with a request)."""
        executed = np.array(self.executed_since_feedback).reshape(-1, self.dim)
        self.executed_since_feedback.clear()
        leftover = self.prefix_for_request() if request else np.zeros((0, self.dim))
        return executed, leftover

    def latency_percentiles(self) -> tuple[float, float]:
        """Measured chunk delay p50 / p95 over the window (s); 0 before any measurement."""
        if not len(self.latency):
            return 0.0, 0.0
        return self.latency.estimate(50.0), self.latency.estimate(95.0)
