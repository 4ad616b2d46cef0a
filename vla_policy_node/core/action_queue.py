"""Time-indexed action queue: a chunk from an observation captured at t0 applies at t0 + i*dt.

Actions whose time has already passed when their chunk arrives are skipped and counted
(latency compensation by the delay that really happened, not a guess). Times in s.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass

import numpy as np


@dataclass
class Chunk:
    chunk_id: int
    t0: float                         # capture time of the source observation, s
    dt: float                         # s between actions
    actions: np.ndarray               # (horizon, dim), physical units
    actions_normalized: np.ndarray    # (horizon, dim), model space
    start_index: int = 0
    episode_id: str = ""

    @property
    def horizon(self) -> int:
        return int(self.actions.shape[0])


@dataclass
class QueuedAction:
    time: float
    chunk_id: int
    index: int                        # index within its chunk
    action: np.ndarray
    action_normalized: np.ndarray


class ActionQueue:
    """Queue of future actions ordered by the time they apply to; merge = replace."""

    def __init__(self, dt: float):
        self.dt = dt
        self.tolerance = dt / 2.0
        self._queue: deque[QueuedAction] = deque()
        self.skipped_stale = 0        # actions already in the past when their chunk arrived
        self.expired = 0              # queued actions whose time passed without being executed

    def clear(self) -> None:
        self._queue.clear()

    def __len__(self) -> int:
        return len(self._queue)

    def insert(self, chunk: Chunk, now: float, limit: int | None = None) -> int:
        """Queue the chunk's actions from `start_index` (at most `limit` of them) that are not in
        the past; queued actions at or after the first new one are replaced. Returns how many
        were queued."""
        items = []
        end = chunk.horizon if limit is None else min(chunk.horizon, chunk.start_index + limit)
        for i in range(chunk.start_index, end):
            t = chunk.t0 + i * chunk.dt
            if t < now - self.tolerance:
                self.skipped_stale += 1
                continue
            items.append(QueuedAction(t, chunk.chunk_id, i, chunk.actions[i], chunk.actions_normalized[i]))
        if not items:
            return 0
        first = items[0].time
        while self._queue and self._queue[-1].time >= first - self.tolerance:
            self._queue.pop()
        self._queue.extend(items)
        return len(items)

    def pop(self, now: float) -> QueuedAction | None:
        """The action for time `now` (within dt/2), dropping expired ones; None if there is none."""
        while self._queue and self._queue[0].time < now - self.tolerance:
            self._queue.popleft()
            self.expired += 1
        if self._queue and self._queue[0].time <= now + self.tolerance:
            return self._queue.popleft()
        return None

    def leftover(self, chunk_id: int) -> list[QueuedAction]:
        """Queued actions still to execute from one chunk, in time order."""
        return [q for q in self._queue if q.chunk_id == chunk_id]

    def remaining_time(self, now: float) -> float:
        """Seconds of queued actions ahead of `now`."""
        if not self._queue:
            return 0.0
        return max(0.0, self._queue[-1].time + self.dt - now)
