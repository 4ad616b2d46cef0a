"""Time alignment of camera frames, joint states and other streams into one observation.

The robot state (joint states) is the anchor: each state message is a candidate observation
time t. It is emitted once every other required stream has a sample within `tolerance_s` of t.
Candidates that are overtaken by a newer complete one are dropped as unsynchronized, and
candidates older than `max_age_s` (on the caller's clock) are dropped as stale. A state that is
fresh on the caller's clock but older than the last emitted observation by more than `max_age_s`
means the clock went back (a simulator's timeline reset): the buffers start over. Times in s.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field


@dataclass
class AssembledSample:
    stamp: float                      # anchor (state) capture time, s
    anchor: object                    # the anchor payload (e.g. a JointState message)
    streams: dict                     # stream name -> payload
    stream_stamps: dict               # stream name -> capture time, s


@dataclass
class SyncCounters:
    emitted: int = 0
    dropped_unsynchronized: int = 0
    dropped_stale: int = 0
    late_samples: int = 0             # stream samples older than the newest emitted observation
    clock_jumps_back: int = 0         # new timelines started (the buffers were cleared)


@dataclass
class TimeSynchronizer:
    streams: list[str]                # required streams besides the anchor
    tolerance_s: float
    max_age_s: float
    buffer: int = 16
    counters: SyncCounters = field(default_factory=SyncCounters)

    def __post_init__(self):
        self._buffers = {name: deque(maxlen=self.buffer) for name in self.streams}
        self._pending: deque = deque(maxlen=self.buffer)
        self._last_emitted = float("-inf")

    def reset(self):
        for b in self._buffers.values():
            b.clear()
        self._pending.clear()
        self._last_emitted = float("-inf")

    def add_anchor(self, stamp: float, payload, now: float | None = None) -> None:
        """A state sample; one with the stamp of the last emitted observation (a re-publication
        by the robot) is assembled again, an older one is late, unless it is fresh at `now` (the
        caller's clock, s) while far older than the last emitted one: then the clock went back."""
        if now is not None and stamp < self._last_emitted - self.max_age_s and abs(now - stamp) <= self.max_age_s:
            self.counters.clock_jumps_back += 1
            self.reset()
        if stamp < self._last_emitted:
            self.counters.late_samples += 1
            return
        self._pending.append((stamp, payload))

    def add(self, stream: str, stamp: float, payload) -> None:
        if stream not in self._buffers:
            raise KeyError(f"unknown stream '{stream}' (known: {', '.join(self._buffers)})")
        if stamp < self._last_emitted - self.tolerance_s:
            self.counters.late_samples += 1
        self._buffers[stream].append((stamp, payload))

    def _match(self, stream: str, t: float):
        best = None
        for stamp, payload in self._buffers[stream]:
            err = abs(stamp - t)
            if err <= self.tolerance_s and (best is None or err < best[0]):
                best = (err, stamp, payload)
        return best

    def poll(self, now: float) -> AssembledSample | None:
        """The newest complete observation not yet emitted, or None; updates the counters."""
        while self._pending and now - self._pending[0][0] > self.max_age_s:
            self._pending.popleft()
            self.counters.dropped_stale += 1
        for idx in range(len(self._pending) - 1, -1, -1):
            t, anchor = self._pending[idx]
            matches = {s: self._match(s, t) for s in self.streams}
            if all(m is not None for m in matches.values()):
                self.counters.dropped_unsynchronized += idx
                for _ in range(idx + 1):
                    self._pending.popleft()
                self._last_emitted = t
                self.counters.emitted += 1
                return AssembledSample(t, anchor, {s: m[2] for s, m in matches.items()},
                                       {s: m[1] for s, m in matches.items()})
        return None
