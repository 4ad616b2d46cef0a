"""Executor core: time-indexed queue, sync re-planning, safety gate, holds, e-stop latch, dry-run,
reaction to the imagination monitor, statistics."""

import numpy as np
import pytest

from vla_policy_node.core.action_queue import ActionQueue, Chunk
from vla_policy_node.core.embodiment import load_robot
from vla_policy_node.core.executor import ChunkExecutor
from vla_policy_node.core.executor_stats import ExecutorStats
from vla_policy_node.core.hold import hold_command
from vla_policy_node.core.monitor_reaction import MonitorReaction
from vla_policy_node.core.safety import ChunkRejected, SafetyGate

DT = 0.0125


def chunk(t0, values, chunk_id=1, episode="ep", start_index=0):
    a = np.asarray(values, dtype=float)
    return Chunk(chunk_id, t0, DT, a, a / 2.0, start_index, episode)


def ramp(h=8, dim=4, scale=0.1):
    return np.outer(np.arange(1, h + 1), np.ones(dim)) * scale


def test_queue_applies_actions_at_capture_time_plus_index():
    q = ActionQueue(DT)
    assert q.insert(chunk(1.0, ramp()), now=1.0) == 8
    first = q.pop(1.0)
    assert first.index == 0 and first.time == 1.0
    assert q.pop(1.0 + DT).index == 1
    assert q.pop(1.0 + 5 * DT).index == 5       # two actions expired in between
    assert q.expired == 3                       # indices 2, 3, 4 passed unexecuted


def test_queue_skips_actions_already_in_the_past():
    q = ActionQueue(DT)
    queued = q.insert(chunk(1.0, ramp()), now=1.0 + 3 * DT)   # arrived 3 steps late
    assert queued == 5 and q.skipped_stale == 3
    assert q.pop(1.0 + 3 * DT).index == 3


def test_queue_replaces_overlapping_actions():
    q = ActionQueue(DT)
    q.insert(chunk(1.0, ramp(), chunk_id=1), now=1.0)
    q.insert(chunk(1.0 + 2 * DT, -ramp(), chunk_id=2), now=1.0)
    items = [q.pop(1.0 + i * DT) for i in range(10)]
    assert [it.chunk_id for it in items] == [1, 1] + [2] * 8


@pytest.fixture
def sawyer():
    return load_robot("metaworld_sawyer")


def test_sync_mode_executes_k_then_requests(sawyer):
    ex = ChunkExecutor(sawyer, mode="sync", lockstep=True)
    ex.reset("ep", 0.0)
    ex.set_armed(True)
    first = ex.tick(1.0, 1.0)
    assert first.command is None and first.request_chunk        # nothing queued: ask, wait
    assert not ex.tick(1.0, 1.0).request_chunk                 # asked once only
    ok, _ = ex.on_chunk(chunk(1.0, ramp(scale=0.05)), 1.0)
    assert ok
    k = sawyer.config.action.execute_per_chunk
    sent = [ex.tick(1.0 + i * DT, 1.0 + i * DT) for i in range(k + 1)]
    assert [r.command is not None for r in sent] == [True] * k + [False]
    assert sent[k].request_chunk                                # execute_per_chunk, then re-plan
    np.testing.assert_allclose(sent[1].command, [0.1] * 4)


def test_gate_rejects_nan_and_wrong_shape(sawyer):
    ex = ChunkExecutor(sawyer)
    ex.reset("ep", 0.0)
    ex.set_armed(True)
    bad = ramp()
    bad[2, 1] = np.nan
    ok, why = ex.on_chunk(chunk(0.0, bad), 0.0)
    assert not ok and "non-finite" in why
    ok, why = ex.on_chunk(chunk(0.0, np.zeros((8, 3))), 0.0)
    assert not ok and "action_dim 3" in why
    assert ex.counters["chunks_rejected"] == 2 and len(ex.queue) == 0


def test_gate_clamps_limits_and_max_step():
    gate = SafetyGate(["a", "b"], [-1, -1], [1, 1], max_step=[0.5, 0.5])
    out, notes = gate.filter(np.array([3.0, 0.2]), previous=np.array([0.0, 0.0]))
    np.testing.assert_allclose(out, [0.5, 0.2])
    assert notes == ["limit:a", "max_step:a"] and gate.counters.commands_clamped == 1
    with pytest.raises(ChunkRejected):
        gate.filter(np.array([np.inf, 0.0]), None)


def test_chunk_from_other_episode_ignored(sawyer):
    ex = ChunkExecutor(sawyer)
    ex.reset("ep2", 5.0)
    ex.set_armed(True)
    assert ex.on_chunk(chunk(4.0, ramp(), episode="ep1"), 5.0) == (False, "chunk from another episode")


def test_estop_latches_until_cleared(sawyer):
    ex = ChunkExecutor(sawyer, lockstep=False)
    ex.reset("ep", 0.0)
    ex.set_armed(True)
    ex.emergency_stop(True, False, "operator")
    assert ex.tick(0.0, 0.0).hold_reason == "e-stop"
    assert ex.set_armed(True)[0] is False                      # cannot re-arm while latched
    assert ex.emergency_stop(False, False)[0] is False         # release needs clear=true
    assert ex.estop
    assert ex.emergency_stop(False, True)[0] and not ex.estop and not ex.armed
    assert ex.set_armed(True)[0]


def test_free_running_holds_still_when_starved_or_stale(sawyer):
    ex = ChunkExecutor(sawyer, mode="sync", lockstep=False, max_state_age_s=0.1)
    ex.reset("ep", 0.0)
    ex.set_armed(True)
    ex.on_chunk(chunk(0.0, np.tile([0.5, 0.5, 0.5, 1.0], (8, 1))), 0.0)
    assert ex.tick(0.0, 0.0).command[3] == 1.0
    stale = ex.tick(DT, state_stamp=-1.0)                      # measured state 1 s old
    assert stale.hold_reason == "stale state"
    np.testing.assert_allclose(stale.command, [0, 0, 0, 1.0])  # xyz still, grasp kept
    for i in range(2, 6):
        ex.tick(i * DT, i * DT)
    starved = ex.tick(6 * DT, 6 * DT)
    assert starved.hold_reason == "waiting for chunk" and ex.counters["starved_ticks"] >= 1
    np.testing.assert_allclose(starved.command[:3], 0.0)


def test_dry_run_counts_nothing_sent(sawyer):
    ex = ChunkExecutor(sawyer, dry_run=True)
    ex.reset("ep", 0.0)
    ex.set_armed(True)
    ex.on_chunk(chunk(0.0, ramp(scale=0.01)), 0.0)
    assert ex.tick(0.0, 0.0).command is not None
    assert ex.counters["commands_sent"] == 0


def test_chunk_stamped_at_episode_start_accepted_despite_float_rounding(sawyer):
    """The node clock (ns * 1e-9) and a message stamp (sec + nanosec * 1e-9) round differently."""
    ex = ChunkExecutor(sawyer)
    start_from_clock = 7037500000 * 1e-9
    t0_from_stamp = 7 + 37500000 * 1e-9
    assert t0_from_stamp < start_from_clock
    ex.reset("ep", start_from_clock)
    ex.set_armed(True)
    assert ex.on_chunk(chunk(t0_from_stamp, ramp(), episode="ep"), t0_from_stamp)[0]


# ---- holding still (core/hold.py), shared by the executor and the sim bridge --------------------

def test_delta_space_holds_with_a_zero_step_and_keeps_the_gripper():
    np.testing.assert_array_equal(hold_command("ee_delta", 4, 3, np.array([0.3, -0.2, 0.1, 0.8])), [0, 0, 0, 0.8])
    np.testing.assert_array_equal(hold_command("ee_delta", 4, 3, None), np.zeros(4))          # no grip yet
    np.testing.assert_array_equal(hold_command("joint_delta", 2, None, np.array([0.3, 0.8])), np.zeros(2))


def test_position_space_holds_the_last_command_else_the_measured_state():
    last = np.array([0.1, 0.2])
    held = hold_command("joint_position", 2, None, last, measured=np.array([9.0, 9.0]))
    np.testing.assert_array_equal(held, last)
    held[0] = 5.0
    assert last[0] == 0.1                                       # a copy: the last command is not changed
    np.testing.assert_array_equal(hold_command("ee_absolute", 2, None, None, np.array([0.4, 0.5])), [0.4, 0.5])
    assert hold_command("joint_position", 2, None, None) is None


def test_executor_holds_through_the_shared_hold():
    panda = ChunkExecutor(load_robot("panda_ros2_control"), lockstep=False)
    measured = np.linspace(-0.5, 0.5, panda.dim)
    np.testing.assert_array_equal(panda.hold_target(measured), measured)      # nothing sent yet
    panda.last_command = measured + 0.1
    np.testing.assert_array_equal(panda.hold_target(measured), measured + 0.1)


def test_hold_reason_as_the_status_reports_it(sawyer):
    ex = ChunkExecutor(sawyer, lockstep=True)
    ex.reset("ep", 0.0)
    assert ex.hold_reason == "disarmed"
    ex.set_armed(True)
    assert ex.hold_reason == ""
    ex.tick(0.0, 0.0)                                           # nothing queued: asks for a chunk
    assert ex.hold_reason == "waiting for chunk"
    ex.emergency_stop(True, False, "operator")
    assert ex.hold_reason == "e-stop"


# ---- reaction to the imagination monitor (core/monitor_reaction.py) -----------------------------

@pytest.fixture
def executing(sawyer):
    ex = ChunkExecutor(sawyer, lockstep=False)
    ex.reset("ep", 0.0)
    ex.set_armed(True)
    assert ex.on_chunk(chunk(0.0, ramp(scale=0.01)), 0.0)[0]
    return ex


def test_three_exceeded_frames_in_a_row_replan_once(executing):
    reaction = MonitorReaction(executing, consecutive=3)
    assert [reaction.on_verdict("ep", True, "replan", 0.0) for _ in range(3)] == ["", "", "applied"]
    assert reaction.counts == {"replan": 1, "hold": 0}
    assert executing.force_request and len(executing.queue) == 8           # replan keeps the plan
    assert reaction.on_verdict("ep", True, "replan", 0.0) == ""            # the count starts again


def test_a_frame_within_the_threshold_resets_the_count(executing):
    reaction = MonitorReaction(executing, consecutive=3)
    verdicts = [True, True, False, True, True]
    assert [reaction.on_verdict("ep", v, "hold", 0.0) for v in verdicts] == [""] * 5
    assert len(executing.queue) == 8
    assert reaction.on_verdict("ep", True, "hold", 0.0) == "applied"
    assert reaction.counts == {"replan": 0, "hold": 1} and len(executing.queue) == 0   # hold drops the plan


def test_other_episodes_and_action_none_never_react(executing):
    reaction = MonitorReaction(executing, consecutive=1)
    assert reaction.on_verdict("older-episode", True, "hold", 0.0) == ""
    assert reaction.on_verdict("ep", True, "none", 0.0) == ""
    assert reaction.counts == {"replan": 0, "hold": 0} and len(executing.queue) == 8


def test_dry_run_and_disarmed_executors_do_not_act(sawyer):
    dry = ChunkExecutor(sawyer, lockstep=False, dry_run=True)
    dry.reset("ep", 0.0)
    dry.set_armed(True)
    dry.on_chunk(chunk(0.0, ramp(scale=0.01)), 0.0)
    reaction = MonitorReaction(dry, consecutive=2)
    assert [reaction.on_verdict("ep", True, "hold", 0.0) for _ in range(2)] == ["", "dry_run"]
    assert len(dry.queue) == 8 and not dry.force_request and reaction.counts["hold"] == 0
    disarmed = ChunkExecutor(sawyer, lockstep=False)
    disarmed.reset("ep", 0.0)
    assert MonitorReaction(disarmed, consecutive=1).on_verdict("ep", True, "replan", 0.0) == ""
    with pytest.raises(ValueError, match="monitor_consecutive must be >= 1, got 0"):
        MonitorReaction(dry, consecutive=0)


# ---- statistics for the stats_file (core/executor_stats.py) -------------------------------------

def test_stats_log_commands_and_loop_timing(executing):
    stats = ExecutorStats()
    result = executing.tick(0.0, 0.0)
    stats.on_command(0.0, result.command, result.executed, result.hold_reason)
    stats.on_command(DT, np.array([0.0, 0.0, 0.0, 0.25]), None, "waiting for chunk", tick=7)
    for k in range(5):
        stats.on_tick(k * DT + (0.001 if k == 2 else 0.0))               # one tick 1 ms late
    stats.on_lateness(0.002)
    out = stats.summary(executing, {"replan": 1, "hold": 0}, 2, 3, None, 0)
    assert out["commands"][0][2:] == (1, 0, 1, "", -1)                      # chunk 1, index 0, one source
    assert out["commands"][1] == (round(DT, 6), [0.0, 0.0, 0.0, 0.25], -1, -1, 0, "waiting for chunk", 7)
    assert out["loop_jitter_ms"]["ticks"] == 5 and out["loop_jitter_ms"]["p99"] == pytest.approx(1.0, abs=0.05)
    assert out["deadline_lateness_ms"]["p50"] == pytest.approx(2.0)
    assert (out["lockstep"], out["control_dt"], out["counters"]["commands_sent"]) == (False, DT, 1)
    assert (out["monitor_reactions"], out["commands_resent"], out["request_retries"]) == ({"replan": 1, "hold": 0},
                                                                                         2, 3)


def test_duplicated_chunk_refused_not_restarted(sawyer):
    """A chunk delivered twice (a DDS resend, a replaying bridge) must not restart its actions."""
    ex = ChunkExecutor(sawyer)
    ex.reset("ep", 0.0)
    ex.set_armed(True)
    assert ex.on_chunk(chunk(0.0, ramp(), chunk_id=7), 0.0)[0]
    assert ex.on_chunk(chunk(0.0, ramp(), chunk_id=7), 0.1) == (False, "duplicate of chunk 7 already received")
    assert ex.rejections == {"chunk: duplicate": 1}
    assert ex.on_chunk(chunk(0.1, ramp(), chunk_id=7), 0.1)[0]     # same id, new observation: a restarted policy
    ex.reset("ep2", 1.0)
    assert ex.on_chunk(chunk(1.0, ramp(), chunk_id=7, episode="ep2"), 1.0)[0]


def test_a_second_answer_to_one_request_is_refused(sawyer):
    """A request re-sent while the first was computed gets two chunks from the same observation:
    only the first is scheduled, so a lockstep run does not depend on when the second arrives."""
    ex = ChunkExecutor(sawyer, mode="sync", lockstep=True)
    ex.reset("ep", 0.0)
    ex.set_armed(True)
    assert ex.tick(0.0, 0.0).request_chunk
    assert ex.on_chunk(chunk(0.0, ramp(), chunk_id=1), 0.0)[0]
    ex.tick(0.0, 0.0)
    assert ex.on_chunk(chunk(0.0, ramp(scale=0.2), chunk_id=2), DT) == \
        (False, "a chunk from this observation is already scheduled")
    assert ex.rejections == {"chunk: observation already answered": 1}
    assert ex.on_chunk(chunk(DT, ramp(), chunk_id=3), DT)[0]       # a newer observation is a new plan


def test_clock_going_back_drops_the_old_timeline_and_asks_again(sawyer):
    """A simulator's timeline reset: the plan and request stamped on the old timeline are dropped,
    the robot holds, a chunk of the new timeline is taken; states stamped ahead of the clock are stale."""
    ex = ChunkExecutor(sawyer, lockstep=False, max_state_age_s=0.1)
    ex.reset("ep", 10.0)
    ex.set_armed(True)
    assert ex.on_chunk(chunk(10.0, ramp(scale=0.01)), 10.0)[0]
    assert ex.tick(10.0, 10.0).command is not None
    assert ex.tick(10.0 + DT, 10.0 + DT).executed is not None
    ahead = ex.tick(5.0, state_stamp=10.0 + DT)            # clock back 5 s, the state still on the old one
    assert ahead.hold_reason == "stale state" and ex.counters["clock_jumps_back"] == 1
    assert len(ex.queue) == 0 and ex.current_chunk is None
    back = ex.tick(5.0 + DT, 5.0 + DT)                      # a state on the new timeline
    assert back.hold_reason == "waiting for chunk" and back.request_chunk
    future, why = ex.on_chunk(chunk(10.0, ramp(scale=0.01), chunk_id=2), 5.0 + DT)
    assert not future and "future" in why and not ex.awaiting_chunk     # asked again, not waited on
    assert ex.tick(5.0 + 2 * DT, 5.0 + 2 * DT).request_chunk
    assert ex.on_chunk(chunk(5.0 + 2 * DT, ramp(scale=0.01), chunk_id=3), 5.0 + 2 * DT)[0]
    assert ex.tick(5.0 + 3 * DT, 5.0 + 3 * DT).executed is not None
    assert ex.counters["clock_jumps_back"] == 1
