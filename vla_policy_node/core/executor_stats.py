"""What the executor did, for benchmarks: command log, control-loop timing and counters (no rclpy).

The executor node writes `summary()` as JSON to its `stats_file` at exit. Command stamps are in s
on the robot's clock; loop period jitter and deadline lateness are wall-clock figures in ms.
Memory is bounded: the last MAX_TICKS tick times and the first MAX_LATENESS lateness samples are
kept; the command log (the first MAX_COMMANDS commands, every one of them for the benchmarks that
read it) goes to a temporary file as it is written, one JSON line per command, and is read back
once, by `summary()`.
"""

from __future__ import annotations

import json
import tempfile
import threading

import numpy as np

from .action_queue import QueuedAction
from .executor import ChunkExecutor

MAX_TICKS = 200_000
MAX_LATENESS = 200_000
MAX_COMMANDS = 500_000
MAX_ROUND_TRIPS = 100_000
JITTER_WINDOW = 100_000          # tick periods the jitter percentiles are taken over


class CommandLog:
    """Commands as JSON lines in a buffered, unnamed temporary file (opened at the first command,
    gone when closed or at exit): memory holds the file's buffer only. The first MAX_COMMANDS are kept."""

    def __init__(self):
        self._file = None
        self._lock = threading.Lock()       # the control loop appends, summary() reads
        self.count = 0
        self.dropped = 0

    def append(self, row: tuple) -> None:
        with self._lock:
            if self.count >= MAX_COMMANDS:
                self.dropped += 1
                return
            if self._file is None:
                self._file = tempfile.TemporaryFile(prefix="executor_commands_", suffix=".jsonl")
            self._file.write(json.dumps(row, separators=(",", ":")).encode() + b"\n")
            self.count += 1

    def read(self) -> list[tuple]:
        """Every command kept, in order, as the tuples appended (lists inside stay lists)."""
        with self._lock:
            if self._file is None:
                return []
            self._file.flush()
            self._file.seek(0)
            rows = [tuple(json.loads(line)) for line in self._file]
            self._file.seek(0, 2)            # later commands go on at the end
            return rows


class ExecutorStats:
    def __init__(self):
        self.tick_wall_times: list[float] = []     # wall-clock loop: perf_counter at each tick, s
        self.lateness_s: list[float] = []          # wall-clock loop: wake-up time - deadline, s
        self.commands = CommandLog()               # (stamp s, command, chunk id, index, merged chunks, hold reason,
        #                                            control tick number)
        self.resets: list[tuple] = []              # (stamp s, episode id): commands before and after are apart
        self.round_trips_ms: list[float] = []      # wall ms from a chunk request sent to its chunk received

    def on_tick(self, wall_s: float) -> None:
        self.tick_wall_times.append(wall_s)
        if len(self.tick_wall_times) > MAX_TICKS:
            del self.tick_wall_times[:MAX_TICKS // 2]

    def on_lateness(self, late_s: float) -> None:
        if len(self.lateness_s) < MAX_LATENESS:
            self.lateness_s.append(late_s)

    def on_round_trip(self, wall_ms: float) -> None:
        """A requested chunk arrived `wall_ms` after its request was sent (the policy's whole cost:
        transport both ways, waiting, decoding, inference, publishing)."""
        if len(self.round_trips_ms) < MAX_ROUND_TRIPS:
            self.round_trips_ms.append(round(float(wall_ms), 3))

    def on_reset(self, stamp_s: float, episode_id: str) -> None:
        self.resets.append((round(stamp_s, 6), episode_id))

    def on_command(self, stamp_s: float, command: np.ndarray, executed: QueuedAction | None,
                   hold_reason: str, tick: int = -1) -> None:
        """A command sent (or published in dry run) at `stamp_s` by control tick number `tick`;
        `executed` None when it holds. Ticks tell a tick that sent nothing from a late tick."""
        self.commands.append((round(stamp_s, 6), [round(float(v), 6) for v in command],
                              -1 if executed is None else int(executed.chunk_id),
                              -1 if executed is None else int(executed.index),
                              0 if executed is None else len(executed.sources), hold_reason, int(tick)))

    def summary(self, core: ChunkExecutor, monitor_reactions: dict, commands_resent: int, request_retries: int,
                ik: dict | None, control_thread_priority: int) -> dict:
        """Settings, counters, chunk latency, loop jitter and lateness and the command log of `core`;
        the remaining figures come from the node (ik: IK counters of a Cartesian contract, or None)."""
        ticks = self.tick_wall_times[-JITTER_WINDOW:]
        periods = np.diff(np.asarray(ticks)) if len(self.tick_wall_times) > 2 else []
        jitter = np.abs(np.asarray(periods) - core.control_dt) * 1e3 if len(periods) else np.zeros(0)
        p50, p95 = core.latency_percentiles()
        late = np.asarray(self.lateness_s) * 1e3
        return {"mode": core.mode, "merge": core.settings.merge, "interpolation": core.settings.interpolation,
                "rejections": dict(core.rejections),
                "lockstep": core.lockstep, "control_dt": core.control_dt, "counters": dict(core.counters),
                "gate": core.gate.counters.as_dict(),
                "queue": {"skipped_stale": core.queue.skipped_stale, "expired": core.queue.expired},
                "latency_s": {"p50": p50, "p95": p95, "samples": len(core.latency)},
                "monitor_reactions": dict(monitor_reactions), "commands_resent": commands_resent,
                "request_retries": request_retries, "ik": ik, "control_thread_priority": control_thread_priority,
                "loop_jitter_ms": {"p50": float(np.percentile(jitter, 50)) if len(jitter) else None,
                                   "p99": float(np.percentile(jitter, 99)) if len(jitter) else None,
                                   "ticks": int(len(jitter) + 1)},
                "deadline_lateness_ms": {"p50": float(np.percentile(late, 50)) if len(late) else None,
                                         "p99": float(np.percentile(late, 99)) if len(late) else None},
                "chunk_round_trip_ms": list(self.round_trips_ms),
                "commands": self.commands.read(), "commands_dropped": self.commands.dropped, "resets": self.resets}
