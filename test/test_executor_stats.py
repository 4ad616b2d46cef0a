"""The executor's stats file (core/executor_stats.py): the command log stays out of memory however
long the run, and the benchmarks that read it from the stats file (bench/faults.py, bench/soak.py)
get every command, in order, as they did when the log was held in memory."""

import json
import tracemalloc
from types import SimpleNamespace

import pytest

from vla_policy_node.bench.faults import command_figures, episode_commands
from vla_policy_node.bench.soak import commands_outside_limits
from vla_policy_node.core import executor_stats
from vla_policy_node.core.embodiment import load_robot
from vla_policy_node.core.executor import ChunkExecutor
from vla_policy_node.core.executor_stats import ExecutorStats

DT = 0.02
REST = [-0.8, 0.0, -2.3, 0.0, 1.6, 0.8]                  # panda_isaac joints 2-7, inside their limits


@pytest.fixture(scope="module")
def panda():
    return load_robot("panda_isaac")


def episode(t0: float, n: int, first_tick: int = 0):
    """on_command arguments of n commands from t0: a chunk executed at 0.001 rad per period,
    starved for the middle third of them (holds), then the next chunk."""
    q = 0.0
    for k in range(n):
        starved = n // 3 <= k < 2 * n // 3
        q = q if starved else q + 0.001
        yield (t0 + (k + 1) * DT, [q] + REST,
               None if starved else SimpleNamespace(chunk_id=1 + int(k >= n // 3), index=k % 50, sources=(1,)),
               "waiting for chunk" if starved else "", first_tick + k)


def log_episode(stats: ExecutorStats, t0: float, n: int, first_tick: int = 0) -> list[tuple]:
    """Logs `episode(...)`; returns the rows the log should hold, as the in-memory log held them."""
    rows = []
    for stamp, command, executed, reason, tick in episode(t0, n, first_tick):
        stats.on_command(stamp, command, executed, reason, tick=tick)
        rows.append((round(stamp, 6), [round(v, 6) for v in command], -1 if executed is None else executed.chunk_id,
                     -1 if executed is None else executed.index, 0 if executed is None else 1, reason, tick))
    return rows


def test_command_log_memory_stays_bounded():
    stats = ExecutorStats()
    log_episode(stats, 0.0, 2_000)                          # the log's file and buffers exist
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        for stamp, command, executed, reason, tick in episode(100.0, 40_000, first_tick=2_000):
            stats.on_command(stamp, command, executed, reason, tick=tick)
        grown = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    # held in a list, 40 000 commands took ~15 MiB (~0.38 KiB each); streamed, the buffer only
    assert grown < 64 * 1024, f"{grown / 1024:.0f} KiB kept for 40 000 commands"
    assert stats.commands.count == 42_000


def test_the_first_commands_are_kept_up_to_the_bound(monkeypatch, panda):
    monkeypatch.setattr(executor_stats, "MAX_COMMANDS", 100)
    stats = ExecutorStats()
    rows = log_episode(stats, 0.0, 150)
    out = stats.summary(ChunkExecutor(panda, lockstep=False), {}, 0, 0, None, 0)
    assert out["commands"] == rows[:100] and out["commands_dropped"] == 50


def test_benchmarks_read_every_command_back_from_the_stats_file(tmp_path, panda):
    stats, core = ExecutorStats(), ChunkExecutor(panda, lockstep=False)
    stats.on_reset(0.0, "reach_s100")
    first = log_episode(stats, 0.0, 300)
    stats.on_reset(6.0, "reach_s101")
    second = log_episode(stats, 6.0, 300, first_tick=300)
    summary = stats.summary(core, {}, 0, 0, None, 0)
    assert summary["commands"] == first + second            # in order, the tuples the node's log held
    stats.on_command(12.1, [5.0] + REST, None, "waiting for chunk")   # the log goes on after a summary
    path = tmp_path / "executor_stats.json"
    path.write_text(json.dumps(stats.summary(core, {}, 0, 0, None, 0)))     # as the node writes it at exit
    read = json.loads(path.read_text())
    assert len(read["commands"]) == 601 and read["commands_dropped"] == 0
    assert read["resets"] == [[0.0, "reach_s100"], [6.0, "reach_s101"]]
    # bench/soak.py: every command against the robot's bounds (joint 1's upper limit is below 5 rad)
    assert commands_outside_limits(read, panda.config.limits) == 1
    # bench/faults.py: the episode the fault hit, and its figures, as from the commands themselves
    fault = 6.0 + 90 * DT
    commands = episode_commands(read["commands"], read["resets"], fault)[:-1]
    assert [tuple(c) for c in commands] == second
    assert command_figures(commands, fault, panda.config.limits, DT) == \
        command_figures(second, fault, panda.config.limits, DT)
    figures = command_figures(commands, fault, panda.config.limits, DT)
    assert figures["commands_outside_limits"] == 0 and figures["hold_reason"] == "waiting for chunk"
    assert figures["hold_after_ticks"] == 1 and figures["time_to_recover_s"] == pytest.approx(111 * DT)
