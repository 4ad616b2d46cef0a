"""Bag replay planning (no rclpy): which recorded topics play under which names, and when.

Bag time is the time a message was recorded (the recorder's clock: sim time for the evaluator's
bags). Playback maps bag time to wall time at `rate` bag seconds per wall second, from the
moment playback starts; /clock follows bag time. Paced playback (StepGate) also holds each
recorded robot state until the graph answered the previous one, so slow policies miss nothing.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class ReplayTopic:
    source: str        # topic name in the bag
    target: str        # topic name it is published on
    msgtype: str       # 'pkg/msg/Name'
    count: int         # messages in the bag


def parse_remaps(items: list[str], where: str = "parameter remap") -> dict[str, str]:
    """['/a:=/b', ...] -> {'/a': '/b'}; errors name the entry."""
    out = {}
    for i, item in enumerate(i for i in items if i):
        src, sep, dst = item.partition(":=")
        if not sep or not src.startswith("/") or not dst.startswith("/"):
            raise ValueError(f"{where}[{i}]: '{item}' is not '/from:=/to'")
        out[src] = dst
    return out


def plan_topics(connections: list[tuple[str, str, int]], only: list[str], exclude: list[str],
                remap: dict[str, str]) -> list[ReplayTopic]:
    """Topics to play from (topic, msgtype, count) of a bag: `only` (empty = all) minus `exclude`,
    renamed by `remap`. Two bag topics renamed onto one name is an error."""
    known = {t for t, _, _ in connections}
    for name in [*only, *remap]:
        if name and name not in known:
            raise ValueError(f"topic '{name}' is not in the bag (it has {sorted(known)})")
    plan, targets = [], {}
    for topic, msgtype, count in sorted(connections):
        if (only and topic not in only) or topic in exclude:
            continue
        target = remap.get(topic, topic)
        if target in targets and targets[target] != topic:
            raise ValueError(f"topics '{targets[target]}' and '{topic}' would both play on '{target}'")
        targets[target] = topic
        plan.append(ReplayTopic(topic, target, msgtype, count))
    return plan


class Pacer:
    """Bag time <-> wall time at `rate` bag seconds per wall second, anchored when playback starts."""

    def __init__(self, rate: float, bag_start_s: float, wall_start_s: float):
        if not rate > 0:
            raise ValueError(f"replay rate must be > 0, got {rate}")
        self.rate, self.bag_start_s, self.wall_start_s = float(rate), float(bag_start_s), float(wall_start_s)

    def wall_at(self, bag_s: float) -> float:
        return self.wall_start_s + (bag_s - self.bag_start_s) / self.rate

    def bag_at(self, wall_s: float) -> float:
        return self.bag_start_s + (wall_s - self.wall_start_s) * self.rate


class StepGate:
    """Paced replay: the next recorded robot state is held back until the graph has answered the
    previous one (a command stamped with its time), as the simulator waits in lockstep. Times in
    s on the recording's clock; `tolerance_s` absorbs float rounding of stamps."""

    def __init__(self, timeout_s: float, tolerance_s: float = 1e-6):
        self.timeout_s, self.tolerance_s = float(timeout_s), float(tolerance_s)
        self.pending: float | None = None         # stamp of the last state published
        self.answered = float("-inf")             # newest stamp a command answered
        self.states = self.timeouts = 0

    def state_published(self, stamp_s: float) -> None:
        self.pending = float(stamp_s)
        self.states += 1

    def answer(self, stamp_s: float) -> None:
        self.answered = max(self.answered, float(stamp_s))

    @property
    def waiting(self) -> bool:
        """Whether the next state must wait: the last one published has no answer yet."""
        return self.pending is not None and self.answered < self.pending - self.tolerance_s

    def timed_out(self) -> None:
        """Give up on the pending state (counted): the graph did not answer within timeout_s."""
        self.timeouts += 1
        self.pending = None


_EPISODE_NAME = re.compile(r"^(?P<task>.+)_s(?P<seed>\d+)$")


def task_and_seed(bag_name: str) -> tuple[str, int | None]:
    """The evaluator names episode bags '<task>_s<seed>'; other names give (name, None)."""
    m = _EPISODE_NAME.match(bag_name)
    return (m["task"], int(m["seed"])) if m else (bag_name, None)


def match_commands(commanded: list[tuple[float, list[float]]], recorded: list[tuple[float, list[float]]],
                   tolerance_s: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Pair each commanded action (stamp s, values) with the recorded command nearest in stamp
    (within tolerance_s; a recorded command pairs at most once; the latest of several commands for
    one stamp wins, as a robot would have executed it). Returns (times, commanded, recorded):
    (N,), (N, D), (N, D), in stamp order."""
    latest_cmd = {round(t, 6): v for t, v in sorted(commanded, key=lambda x: x[0])}
    latest_rec = {round(t, 6): v for t, v in sorted(recorded, key=lambda x: x[0])}
    rec_times = np.array(sorted(latest_rec), dtype=np.float64)
    used = set()
    times, pred, target = [], [], []
    for t in sorted(latest_cmd):
        if rec_times.size == 0:
            break
        k = int(np.argmin(np.abs(rec_times - t)))
        if abs(rec_times[k] - t) > tolerance_s or k in used:
            continue
        used.add(k)
        times.append(t)
        pred.append(latest_cmd[t])
        target.append(latest_rec[float(rec_times[k])])
    dim = len(pred[0]) if pred else 0
    return (np.asarray(times, dtype=np.float64), np.asarray(pred, dtype=np.float64).reshape(len(pred), dim),
            np.asarray(target, dtype=np.float64).reshape(len(target), dim))
