"""Action-chunk executor core (no ROS): queue, request policy, safety gate, arm / e-stop / dry-run.

`tick(now, state)` is called once per control period (or, in lockstep, once per new robot
state) and returns what to send. In `sync` mode it executes `execute_per_chunk` actions of a
chunk, then asks for the next chunk and waits (lockstep) or holds (free-running).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from .action_queue import ActionQueue, Chunk, QueuedAction
from .safety import ChunkRejected, SafetyGate


@dataclass
class TickResult:
    command: np.ndarray | None        # action to send (physical units), None = send nothing
    executed: QueuedAction | None     # queued action it came from (None when holding)
    hold_reason: str = ""             # why the robot holds ("" when executing)
    request_chunk: bool = False       # the policy should compute a new chunk
    notes: list = field(default_factory=list)   # safety gate notes for this command


def hold_command(space: str, last_command: np.ndarray | None, dim: int, gripper_index: int | None,
                 measured_position: np.ndarray | None = None) -> np.ndarray | None:
    """The command that keeps the robot still in a given action space."""
    if space in ("ee_delta", "joint_delta", "base_velocity"):
        cmd = np.zeros(dim)
        if gripper_index is not None and last_command is not None:
            cmd[gripper_index] = last_command[gripper_index]  # keep the grasp while holding
        return cmd
    if measured_position is not None:
        return np.asarray(measured_position, dtype=np.float64)
    return None if last_command is None else np.asarray(last_command, dtype=np.float64)


class ChunkExecutor:
    def __init__(self, embodiment, mode: str = "sync", lockstep: bool = True, dry_run: bool = False,
                 max_state_age_s: float = 0.25):
        if mode != "sync":
            raise ValueError(f"executor mode '{mode}' not supported by this executor (use 'sync')")
        cfg = embodiment.config
        self.space = cfg.action.space
        self.dim = cfg.action.dim
        self.dt = cfg.action.dt
        self.execute_per_chunk = cfg.action.execute_per_chunk
        self.gripper_index = cfg.action.gripper.index if cfg.action.gripper else None
        self.mode, self.lockstep, self.dry_run = mode, lockstep, dry_run
        self.max_state_age_s = max_state_age_s
        self.gate = SafetyGate.from_embodiment(embodiment)
        self.queue = ActionQueue(self.dt)
        self.armed = False
        self.estop = False
        self.estop_reason = ""
        self.episode_id = ""
        self.episode_start = float("-inf")
        self.last_command: np.ndarray | None = None
        self.current_chunk: Chunk | None = None
        self.awaiting_chunk = False
        self.request_time = float("-inf")
        self.executed_since_feedback: list[np.ndarray] = []
        self.counters = dict(commands_sent=0, chunks_received=0, chunks_rejected=0, starved_ticks=0,
                             stale_holds=0)
        self.latencies: list[float] = []   # s from observation capture to chunk arrival

    # ---- episode and actuation control -------------------------------------------------
    def reset(self, episode_id: str, now: float) -> None:
        self.queue.clear()
        self.current_chunk = None
        self.awaiting_chunk = False
        self.last_command = None
        self.episode_id = episode_id
        self.episode_start = now
        self.executed_since_feedback.clear()

    def set_armed(self, armed: bool) -> tuple[bool, str]:
        if armed and self.estop:
            return False, f"e-stop latched ({self.estop_reason}); clear it first"
        self.armed = armed
        if not armed:
            self.queue.clear()
            self.awaiting_chunk = False
        return True, "armed" if armed else "disarmed"

    def emergency_stop(self, engage: bool, clear: bool, reason: str = "") -> tuple[bool, str]:
        if engage:
            self.estop, self.estop_reason, self.armed = True, reason or "requested", False
            self.queue.clear()
            self.awaiting_chunk = False
            return True, f"e-stop engaged: {self.estop_reason}"
        if clear:
            self.estop, self.estop_reason = False, ""
            return True, "e-stop cleared; arm again to actuate"
        return False, "e-stop stays latched: send clear=true to release it"

    # ---- inputs ----------------------------------------------------------------------
    def on_chunk(self, chunk: Chunk, now: float) -> tuple[bool, str]:
        """Accept a chunk into the queue (sync: only the first execute_per_chunk actions)."""
        if chunk.episode_id != self.episode_id or chunk.t0 < self.episode_start - self.queue.tolerance:
            return False, "chunk from another episode"
        if not self.armed:
            return False, "disarmed"
        try:
            chunk.actions = self.gate.check_chunk(chunk.actions, chunk.horizon, chunk.actions.shape[-1])
        except ChunkRejected as exc:
            self.counters["chunks_rejected"] += 1
            return False, f"rejected: {exc}"
        if chunk.t0 < self.request_time - self.queue.tolerance:
            return False, "chunk computed from an observation older than requested"
        self.counters["chunks_received"] += 1
        self.latencies.append(max(0.0, now - chunk.t0))
        self.current_chunk = chunk
        queued = self.queue.insert(chunk, now, limit=self.execute_per_chunk)
        self.awaiting_chunk = False
        return True, f"queued {queued} actions"

    # ---- control tick ------------------------------------------------------------------
    def tick(self, now: float, state_stamp: float | None) -> TickResult:
        if self.estop:
            return self._hold("e-stop")
        if not self.armed:
            return self._hold("disarmed")
        if state_stamp is None or now - state_stamp > self.max_state_age_s:
            self.counters["stale_holds"] += 1
            return self._hold("stale state")
        item = self.queue.pop(now)
        if item is None:
            if len(self.queue):  # the queued chunk starts later than `now`: wait for its time
                return self._starved("chunk starts later", request=False)
            request = not self.awaiting_chunk
            if request:
                self.awaiting_chunk = True
                self.request_time = now
            return self._starved("waiting for chunk", request)
        try:
            cmd, notes = self.gate.filter(item.action, self.last_command)
        except ChunkRejected as exc:
            return self._hold(f"unsafe command: {exc}")
        self._sent(cmd)
        self.executed_since_feedback.append(cmd)
        return TickResult(cmd, item, "", notes=notes)

    def _starved(self, reason: str, request: bool) -> TickResult:
        """No action for `now`: lockstep waits (the simulator stays frozen), free-running holds."""
        if self.lockstep:
            return TickResult(None, None, reason, request_chunk=request)
        self.counters["starved_ticks"] += 1
        result = self._hold(reason)
        result.request_chunk = request
        return result

    def _hold(self, reason: str) -> TickResult:
        if self.lockstep and reason in ("disarmed", "e-stop"):
            return TickResult(None, None, reason)  # lockstep: the simulator stays frozen
        cmd = hold_command(self.space, self.last_command, self.dim, self.gripper_index)
        if cmd is not None:
            self._sent(cmd)
        return TickResult(cmd, None, reason)

    def _sent(self, cmd: np.ndarray) -> None:
        self.last_command = cmd
        if not self.dry_run:
            self.counters["commands_sent"] += 1

    def take_feedback(self) -> tuple[np.ndarray, np.ndarray]:
        """(executed actions since last call, leftover normalized actions of the current chunk)."""
        executed = np.array(self.executed_since_feedback).reshape(-1, self.dim)
        self.executed_since_feedback.clear()
        if self.current_chunk is None:
            return executed, np.zeros((0, self.dim))
        left = self.queue.leftover(self.current_chunk.chunk_id)
        return executed, np.array([q.action_normalized for q in left]).reshape(-1, self.dim)

    def latency_percentiles(self, window: int = 50) -> tuple[float, float]:
        recent = self.latencies[-window:]
        if not recent:
            return 0.0, 0.0
        return float(np.percentile(recent, 50)), float(np.percentile(recent, 95))
