"""What the executor did, for benchmarks: command log, control-loop timing and counters (no rclpy).

The executor node writes `summary()` as JSON to its `stats_file` at exit. Command stamps are in s
on the robot's clock; loop period jitter and deadline lateness are wall-clock figures in ms.
Memory is bounded: the last MAX_TICKS tick times, the first MAX_LATENESS lateness samples and
the first MAX_COMMANDS commands are kept.
"""

from __future__ import annotations

import numpy as np

from .action_queue import QueuedAction
from .executor import ChunkExecutor

MAX_TICKS = 200_000
MAX_LATENESS = 200_000
MAX_COMMANDS = 500_000
JITTER_WINDOW = 100_000          # tick periods the jitter percentiles are taken over


class ExecutorStats:
    def __init__(self):
        self.tick_wall_times: list[float] = []     # wall-clock loop: perf_counter at each tick, s
        self.lateness_s: list[float] = []          # wall-clock loop: wake-up time - deadline, s
        self.commands: list[tuple] = []            # (stamp s, command, chunk id, index, merged chunks, hold reason,
        #                                            control tick number)
        self.resets: list[tuple] = []              # (stamp s, episode id): commands before and after are apart

    def on_tick(self, wall_s: float) -> None:
        self.tick_wall_times.append(wall_s)
        if len(self.tick_wall_times) > MAX_TICKS:
            del self.tick_wall_times[:MAX_TICKS // 2]

    def on_lateness(self, late_s: float) -> None:
        if len(self.lateness_s) < MAX_LATENESS:
            self.lateness_s.append(late_s)

    def on_reset(self, stamp_s: float, episode_id: str) -> None:
        self.resets.append((round(stamp_s, 6), episode_id))

    def on_command(self, stamp_s: float, command: np.ndarray, executed: QueuedAction | None,
                   hold_reason: str, tick: int = -1) -> None:
        """A command sent (or published in dry run) at `stamp_s` by control tick number `tick`;
        `executed` None when it holds. Ticks tell a tick that sent nothing from a late tick."""
        if len(self.commands) < MAX_COMMANDS:
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
                "commands": self.commands, "resets": self.resets}
