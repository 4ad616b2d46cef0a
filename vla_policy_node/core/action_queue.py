"""Time-indexed action schedule: a chunk from an observation captured at t0 applies at t0 + i*dt.

Actions whose time has already passed when their chunk arrives are skipped and counted
(latency compensation by the delay that really happened, not a guess). Where chunks overlap
in time they are merged:

- ``replace``:  the newest chunk wins from its first valid action on (older ones are cut there);
- ``ensemble``: temporal ensembling (ACT): every chunk covering a time votes with weight
  exp(-decay * rank), rank 0 = the oldest prediction for that time; with `ensemble_chunks` = N
  only the newest N chunks covering it vote (a long chunk re-planned often would otherwise let
  predictions made far back outvote the fresh ones);
- ``average``:  a linear cross-fade from the older to the newer chunk across their overlap.

The schedule is sampled at arbitrary control times: ``nearest`` takes the action of the grid
time closest to `now`; ``linear`` interpolates between the two surrounding actions, so a
controller can run faster than the policy's action rate. Times in s; actions in physical
units, with their model-space (normalized) twins merged the same way (normalization is affine).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

MERGE_STRATEGIES = ("replace", "ensemble", "average")
SAMPLING = ("nearest", "linear")


@dataclass
class Chunk:
    chunk_id: int
    t0: float                         # capture time of the source observation, s
    dt: float                         # s between actions
    actions: np.ndarray               # (horizon, dim), physical units
    actions_normalized: np.ndarray    # (horizon, dim), model space
    start_index: int = 0
    episode_id: str = ""
    prefix_length: int = 0            # leading actions conditioned on the executor's plan (RTC)

    @property
    def horizon(self) -> int:
        return int(self.actions.shape[0])

    def time(self, index: float) -> float:
        return self.t0 + index * self.dt


@dataclass
class QueuedAction:
    time: float                       # control time the action is for, s
    chunk_id: int                     # newest chunk that contributed
    index: int                        # index of the nearest action within that chunk
    action: np.ndarray
    action_normalized: np.ndarray
    sources: list = field(default_factory=list)   # ids of all chunks merged into this action


@dataclass
class _Entry:
    chunk: Chunk
    first: int                        # first index still valid (not stale, not replaced before)
    end: int                          # one past the last index to execute
    next: int                         # first index not yet reached by a control tick

    def start_time(self) -> float:
        return self.chunk.time(self.first)

    def end_time(self) -> float:
        """Time of the last action to execute."""
        return self.chunk.time(self.end - 1)


class ActionQueue:
    """Overlapping chunks on one time axis, merged and sampled at control ticks."""

    def __init__(self, dt: float, merge: str = "replace", sampling: str = "nearest", ensemble_decay: float = 0.5,
                 ensemble_chunks: int = 0):
        if merge not in MERGE_STRATEGIES:
            raise ValueError(f"merge strategy '{merge}' unknown; use one of {MERGE_STRATEGIES}")
        if sampling not in SAMPLING:
            raise ValueError(f"sampling '{sampling}' unknown; use one of {SAMPLING}")
        self.dt, self.merge, self.sampling, self.ensemble_decay = dt, merge, sampling, ensemble_decay
        self.ensemble_chunks = int(ensemble_chunks)      # 0 = every covering chunk votes
        self.tolerance = dt / 2.0
        self._entries: list[_Entry] = []
        self.skipped_stale = 0        # actions already in the past when their chunk arrived
        self.expired = 0              # actions whose time passed between two control ticks

    def clear(self) -> None:
        self._entries.clear()

    def __len__(self) -> int:
        """Actions still ahead on the schedule (at the newest chunk's rate)."""
        return max((e.end - max(e.next, e.first) for e in self._entries), default=0)

    # ---- filling ---------------------------------------------------------------------------
    def insert(self, chunk: Chunk, now: float, limit: int | None = None) -> int:
        """Schedule the chunk's actions from `start_index` (at most `limit` of them) that are not
        in the past at `now`. Returns how many were scheduled."""
        end = chunk.horizon if limit is None else min(chunk.horizon, chunk.start_index + limit)
        first = chunk.start_index
        while first < end and chunk.time(first) < now - self.tolerance:
            first += 1
        self.skipped_stale += first - chunk.start_index
        if first >= end:
            return 0
        entry = _Entry(chunk, first, end, first)
        if self.merge == "replace":
            start = entry.start_time()
            for e in self._entries:   # cut older chunks where the new one takes over
                while e.end > e.first and e.end_time() >= start - self.tolerance:
                    e.end -= 1
            self._entries = [e for e in self._entries if e.end > e.first]
        self._entries.append(entry)
        return end - first

    # ---- reading ---------------------------------------------------------------------------
    def _covering(self, t: float) -> list[_Entry]:
        entries = [e for e in self._entries if e.start_time() - self.tolerance <= t <= e.end_time() + self.tolerance]
        if self.merge == "ensemble" and self.ensemble_chunks:
            return entries[-self.ensemble_chunks:]
        return entries

    def _sample(self, e: _Entry, t: float) -> tuple[np.ndarray, np.ndarray, int]:
        c = e.chunk
        u = min(max((t - c.t0) / c.dt, e.first), e.end - 1)
        nearest = int(min(max(round(u), e.first), e.end - 1))
        if self.sampling == "nearest" or e.end - e.first == 1:
            return c.actions[nearest], c.actions_normalized[nearest], nearest
        i0 = min(int(math.floor(u)), e.end - 2)
        w = u - i0
        a = (1 - w) * c.actions[i0] + w * c.actions[i0 + 1]
        n = (1 - w) * c.actions_normalized[i0] + w * c.actions_normalized[i0 + 1]
        return a, n, nearest

    def _weights(self, entries: list[_Entry], t: float) -> np.ndarray:
        if self.merge == "ensemble":
            return np.exp(-self.ensemble_decay * np.arange(len(entries)))
        if self.merge == "average":     # pairwise cross-fade, oldest to newest
            w = np.zeros(len(entries))
            w[0] = 1.0
            for j in range(1, len(entries)):
                lo, hi = entries[j].start_time(), entries[j - 1].end_time()
                alpha = 1.0 if hi <= lo else float(np.clip((t - lo + self.dt) / (hi - lo + 2 * self.dt), 0, 1))
                w[:j] *= 1.0 - alpha
                w[j] = alpha
            return w
        w = np.zeros(len(entries))
        w[-1] = 1.0
        return w

    def peek(self, t: float) -> QueuedAction | None:
        """The merged action for time `t` without consuming anything."""
        entries = self._covering(t)
        if not entries:
            return None
        samples = [self._sample(e, t) for e in entries]
        w = self._weights(entries, t)
        w = w / w.sum()
        action = sum(wi * s[0] for wi, s in zip(w, samples))
        normalized = sum(wi * s[1] for wi, s in zip(w, samples))
        newest = entries[-1]
        return QueuedAction(t, newest.chunk.chunk_id, samples[-1][2], np.asarray(action, dtype=np.float64),
                            np.asarray(normalized, dtype=np.float64), [e.chunk.chunk_id for e in entries])

    def pop(self, now: float) -> QueuedAction | None:
        """The action for control time `now`; everything up to `now` counts as reached.
        None if no chunk covers `now` (dropped chunks that ended before it)."""
        item = self.peek(now)
        for e in self._entries:
            reached = int(math.floor((now - e.chunk.t0) / e.chunk.dt + 0.5)) + 1   # indices <= now
            if item is not None and e.chunk.chunk_id == item.chunk_id:
                self.expired += max(0, min(reached - 1, e.end) - max(e.next, e.first))
            e.next = max(e.next, reached)
        self._entries = [e for e in self._entries if e.end_time() >= now + self.tolerance]
        return item

    def has_future(self, now: float) -> bool:
        """A scheduled chunk starts after `now` (wait for its time rather than re-plan)."""
        return any(e.start_time() > now + self.tolerance for e in self._entries)

    def remaining_time(self, now: float) -> float:
        """Seconds of scheduled actions from `now` on (0 when nothing is ahead)."""
        if not self._entries:
            return 0.0
        return max(0.0, max(e.end_time() for e in self._entries) + self.dt - now)

    def planned(self, start: float, count: int | None = None) -> list[QueuedAction]:
        """The merged plan at times start, start+dt, ... (up to `count` actions or the end of the
        schedule): what will execute from `start` if nothing changes. Used as the RTC prefix."""
        out = []
        t = start
        while count is None or len(out) < count:
            item = self.peek(t)
            if item is None:
                break
            out.append(item)
            t += self.dt
        return out

    def leftover(self, chunk_id: int, start: float) -> list[QueuedAction]:
        """Planned actions from `start` that still come from one chunk, in time order."""
        return [q for q in self.planned(start) if q.chunk_id == chunk_id]
