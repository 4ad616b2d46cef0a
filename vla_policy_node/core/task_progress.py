"""What a running task has done so far and whether it is over (no rclpy).

Fed by the task runner from the graph's topics: action chunks and execution feedback of the
task's episode id (others are ignored: a chunk of the previous episode still in flight must not
count), the executor's status, and the simulator's success/step tracker when there is one.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass

END_REASONS = ("success", "step_limit", "timeout", "canceled", "preempted")


@dataclass(frozen=True)
class TaskLimits:
    """timeout_s: wall-clock seconds (> 0); max_steps: executed control steps, 0 = no limit."""
    timeout_s: float
    max_steps: int = 0

    def __post_init__(self):
        if not self.timeout_s > 0:
            raise ValueError(f"timeout_s must be > 0 s, got {self.timeout_s}")
        if self.max_steps < 0:
            raise ValueError(f"max_steps must be >= 0, got {self.max_steps}")


class TaskProgress:
    """Chunks, executed steps, last latency and hold state of one episode."""

    def __init__(self, episode_id: str):
        self.episode_id = episode_id
        self.chunks = 0
        self.executed_steps = 0
        self.last_latency_ms = 0.0
        self.holding = True
        self.hold_reason = ""
        self.changed = threading.Event()

    def on_chunk(self, episode_id: str, latency_ms: float) -> None:
        if episode_id == self.episode_id:
            self.chunks += 1
            self.last_latency_ms = float(latency_ms)
            self.changed.set()

    def on_feedback(self, episode_id: str, executed_count: int) -> None:
        if episode_id == self.episode_id:
            self.executed_steps += int(executed_count)
            self.changed.set()

    def on_executor_status(self, holding: bool, hold_reason: str) -> None:
        self.holding, self.hold_reason = bool(holding), hold_reason


def end_reason(limits: TaskLimits, wall_elapsed_s: float, steps: int, success: bool,
               canceled: bool = False, preempted: bool = False) -> str | None:
    """Why the task ends now, or None while it goes on. A success seen in the same instant as a
    limit counts as success; an operator's cancel or a new task wins over both."""
    if preempted:
        return "preempted"
    if canceled:
        return "canceled"
    if success:
        return "success"
    if limits.max_steps and steps >= limits.max_steps:
        return "step_limit"
    if wall_elapsed_s >= limits.timeout_s:
        return "timeout"
    return None
