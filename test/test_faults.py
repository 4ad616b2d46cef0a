"""Fault injection through the real graph (vla_policy_node/bench/faults.py): each case one reach
episode of the arm_isaac graph, every node its own process, free-running, one fault injected
while the arm moves; the executor's command log must show no command outside the limits, a hold
within one control period of starvation, braking within the acceleration limits, and the episode
recovering by itself (a killed node is respawned and rejoins from /vla/episode; a stopped one is
found again by discovery; a clock that jumps starts a new timeline).

`make test` runs the policy-killed case; `make test-faults` runs them all and writes
artifacts/bench/faults.json and faults.md.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from vla_policy_node.bench.faults import (CASES, check_targets, command_figures, episode_commands, run_case,
                                          write_reports)
from vla_policy_node.core.embodiment import load_robot

FIRST_DOMAIN = 80
BY_NAME = {case.name: case for case in CASES}
FAST = {"policy_killed"}


@pytest.fixture(scope="module")
def suite(tmp_path_factory):
    """Runs each case at most once; writes the reports when the whole set ran."""
    out = tmp_path_factory.mktemp("faults")
    rows: dict = {}

    def run(name: str) -> dict:
        if name not in rows:
            case = BY_NAME[name]
            figures = run_case(case, out / name, FIRST_DOMAIN + list(BY_NAME).index(name))
            figures["problems"] = check_targets(case, figures)
            rows[name] = figures
        return rows[name]

    yield run
    if set(rows) == set(BY_NAME):
        write_reports([rows[n] for n in BY_NAME], Path("artifacts/bench"))


def case_params():
    return [pytest.param(name, marks=[pytest.mark.faults] + ([] if name in FAST else [pytest.mark.slow]), id=name)
            for name in BY_NAME]


@pytest.mark.parametrize("name", case_params())
def test_fault_case_meets_targets(suite, name):
    figures = suite(name)
    assert figures["injected"], figures.get("error")
    assert figures["problems"] == [], figures
    assert figures["commands_outside_limits"] == 0
    expected_hold = {"policy_killed": "waiting for chunk", "perception_killed": "waiting for chunk",
                     "estop_in_motion": "e-stop", "disarm_in_motion": "disarmed"}
    if name in expected_hold:
        assert figures["hold_reason"] == expected_hold[name]
        assert figures["hold_after_ticks"] == 1          # the very next control tick held
    if name.endswith("_killed"):
        node = name.removesuffix("_killed")
        assert figures["restarts"] == {node: 1}
        assert figures["time_to_recover_s"] is not None and figures["success"]
    if name == "estop_in_motion":
        assert not figures["success"] and figures["reason"] == "step_limit"
        assert figures["time_to_recover_s"] is None           # latched: nothing moves until cleared
    if name == "chunk_duplicated":
        assert figures["rejections"].get("chunk: duplicate", 0) == 1
    if name == "chunk_old_episode":
        assert figures["rejections"].get("chunk: episode_id", 0) >= 1
    if name == "policy_killed_between_episodes":     # the next episode's reset is asked again, not lost
        assert figures["restarts"] == {"policy": 1} and figures["success"]
    if name == "policy_discovery_lost":      # DDS really dropped the policy, then matched it again
        notes = figures["notes"]
        assert notes["chunk_publishers_min_while_stopped"] < notes["chunk_publishers_before"], notes
        assert notes["chunk_publishers_after"] == notes["chunk_publishers_before"], notes
        assert figures["hold_reasons"].get("waiting for chunk", 0) > 0 and figures["success"]
    if name == "observations_dropped":
        notes = figures["notes"]
        relay = notes["relay_observation"]
        after = relay["passed"] - notes["observations_passed_before"] + relay["dropped"]
        assert after > 50 and 0.2 < relay["dropped"] / after < 0.4, notes      # 30% of those after the fault
    if name == "clock_back":                 # the old timeline's plan dropped once, then recovered
        assert figures["clock_jumps_back"] == 1
        assert figures["time_to_recover_s"] is not None and figures["time_to_recover_s"] < 2.0
    if name == "clock_forward":              # the plan is stale on the new timeline: replaced at once
        assert figures["clock_jumps_back"] == 0
        assert figures["time_to_recover_s"] is not None and figures["time_to_recover_s"] < 2.0
    if name == "arm_while_stale":            # armed, told why it holds, and held on the stale state
        assert "holding still: robot state" in figures["notes"]["arm"]
        assert figures["hold_reasons"].get("stale state", 0) > 0
    if name == "target_moved":               # the world changed, not the graph: the policy follows it
        assert figures["notes"]["perturb"].startswith("object perturbation scheduled"), figures["notes"]
        applied = (Path(figures["logs"]) / "sim_bridge.log").read_text()
        assert "perturbation: object moved [0.0, 0.1, 0.0] m" in applied      # the world really changed
        assert figures["success"] and not figures["restarts"]
    if name in ("chunk_reordered", "chunk_delayed"):     # judged by their stamps
        # the injected chunk is refused; on a loaded machine a chunk that really came late may be too
        refused = figures["rejections"].get("chunk: older than requested", 0) + \
            figures["rejections"].get("chunk: stale", 0)
        assert 1 <= refused <= 2, figures["rejections"]


# ---- the figures themselves, on a hand-made command log -------------------------------------------

def test_command_figures_measure_hold_braking_and_recovery():
    limits = load_robot("panda_isaac").config.limits
    dt = 0.02
    rest = [-0.8, 0.0, -2.3, 0.0, 1.6, 0.8]               # joints 2-7 at a pose inside their limits
    log = []
    q = 0.0
    for i in range(10):                                   # executing chunk 1 at 0.01 rad per period
        q += 0.01
        log.append((round(0.02 * (i + 1), 6), [q] + rest, 1, i, 1, ""))
    log[-1] = (log[-1][0], [q - 0.002] + rest, 1, 9, 1, "")    # a corner that stays within limits
    for i in range(10, 20):                               # starved: holds at the last command
        log.append((round(0.02 * (i + 1), 6), [q - 0.002] + rest, -1, -1, 0, "waiting for chunk"))
    log.append((0.42, [q - 0.002 + 0.01] + rest, 2, 0, 1, ""))
    figures = command_figures(log, fault_stamp=0.1, limits=limits, dt=dt)
    assert figures["commands_outside_limits"] == 0
    assert figures["time_to_hold_periods"] == 1.0 and figures["hold_reason"] == "waiting for chunk"
    assert figures["time_to_recover_s"] == pytest.approx(0.32)
    # a jump of 0.1 rad in one period is outside max_step (0.03) and counted
    bad = log + [(0.44, [1.0] + rest, 2, 1, 1, "")]
    assert command_figures(bad, 0.1, limits, dt)["commands_outside_limits"] == 1
    # with tick numbers: a tick late by the OS is not a late hold, a tick that sent nothing is
    ticked = [(*c, i) for i, c in enumerate(log)]
    late = ticked[:10] + [(0.24, *ticked[10][1:])] + ticked[11:]        # first hold 2 periods late
    assert command_figures(late, 0.1, limits, dt)["hold_after_ticks"] == 1
    silent = ticked[:10] + [(*c[:6], c[6] + 1) for c in ticked[10:]]   # one tick sent nothing
    assert command_figures(silent, 0.1, limits, dt)["hold_after_ticks"] == 2
    # commands before the executor's reset belong to another episode (the sim moved the robot)
    assert episode_commands(bad, [(0.3, "reach_s100")], 0.35) == [c for c in bad if c[0] > 0.3]


def test_targets_flag_a_node_that_restarted_without_being_killed():
    case = BY_NAME["chunk_delayed"]
    clean = {"success": True, "restarts": {}, "notes": {}, "hold_after_ticks": 1}
    assert check_targets(case, clean) == []
    crashed = dict(clean, restarts={"executor": 1})          # the fault killed nothing: a crash
    assert check_targets(case, crashed) == ["restarted without being killed: {'executor': 1}"]
    killed = dict(clean, restarts={"policy": 1}, notes={"killed": "policy"})
    assert check_targets(BY_NAME["policy_killed"], killed) == []
    lost = dict(clean, error="the executor wrote no executor_stats.json (exit code -9; see logs/executor.log)")
    assert check_targets(case, lost) == [f"error: {lost['error']}"]


def test_clock_jump_is_taken_out_of_the_command_log():
    from vla_policy_node.bench.faults import undo_clock_jump

    log = [(10.0, [0.0], 1, 0, 1, ""), (10.02, [0.0], 1, 1, 1, ""), (5.03, [0.0], -1, -1, 0, "waiting for chunk"),
           (5.05, [0.0], 2, 0, 1, "")]
    fixed = undo_clock_jump(log, -5.0, 0.02)
    assert [c[0] for c in fixed] == [10.0, 10.02, 10.04, 10.06]
    assert undo_clock_jump(log[:2], -5.0, 0.02) == log[:2]          # no jump: unchanged


# ---- the soak's figures (vla_policy_node/bench/soak.py) on hand-made samples --------------------

def test_soak_figures_flag_growth_drift_and_tracebacks(tmp_path):
    from vla_policy_node.bench import soak

    steady = [(t, 60.0 + t, 500.0, 20, 18) for t in range(0, 1000, 10)]          # wall s, sim s, MiB, threads, fds
    leaking = [(t, 60.0 + t, 100.0 + 0.2 * t, 19 + t // 300, 18 + t // 100) for t in range(0, 1000, 10)]
    short = [(t, 60.0 + t, 100.0, 19, 18) for t in range(0, 60, 10)]
    rows = soak.resource_figures({("policy", 1): steady, ("evaluator", 2): leaking, ("perception", 3): short})
    by_pid = {r["pid"]: r for r in rows}
    assert by_pid[1]["rss_growth_mb"] == 0.0 and by_pid[1]["measured_s"] == 870.0   # from the end of warm-up
    assert by_pid[2]["rss_growth_mb"] == pytest.approx(0.2 * 870, abs=0.1)
    assert "rss_growth_mb" not in by_pid[3]                                           # died during warm-up
    chunks = [(60.0 + i, 100.0, 50.0) for i in range(300)] + [(360.0 + i, 250.0, 50.0) for i in range(300)]
    windows = soak.latency_windows(chunks, sim_start=60.0)
    assert [w["inference_ms_p50"] for w in windows] == [100.0, 250.0]
    (tmp_path / "policy.log").write_text("ok\nTraceback (most recent call last):\n  x\n")
    figures = {"error": None, "sim_minutes": 10.0, "sim_minutes_target": 10.0, "commands_outside_limits": 0,
               "tracebacks": soak.count_tracebacks(tmp_path), "processes": rows, "latency_windows": windows}
    problems = soak.check_soak(figures)
    assert any("evaluator (pid 2): memory grew" in p for p in problems)
    assert any("evaluator (pid 2): threads 19 -> 22" in p for p in problems)
    assert any("file descriptors" in p for p in problems)
    assert any("inference p50 drifted 100.0 -> 250.0" in p for p in problems)
    assert any("tracebacks in the logs: {'policy': 1}" in p for p in problems)
    assert not any("policy (pid 1)" in p for p in problems)
