"""Executor scheduling: latency estimate, merging, interpolation, async / RTC modes, smoothness.

A small discrete-event loop plays the executor against a policy whose chunks arrive a fixed
delay after the request, at the control rate (free-running, no ROS). Property-based tests
(hypothesis) cover the timing rules for many delays and chunk shapes.
"""

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from vla_policy_node.core.action_queue import ActionQueue, Chunk
from vla_policy_node.core.embodiment import load_robot
from vla_policy_node.core.executor import ChunkExecutor
from vla_policy_node.core.latency import LatencyEstimator
from vla_policy_node.core.motion_limiter import MotionLimiter
from vla_policy_node.core.smoothness import boundary_jerk

DT = 0.0125
H = 8                     # actions per chunk of the fake policy


@pytest.fixture(scope="module")
def sawyer():
    return load_robot("metaworld_sawyer")


def const_chunk(t0, value, chunk_id, h=8, dim=4):
    a = np.full((h, dim), float(value))
    return Chunk(chunk_id, t0, DT, a, a / 2.0, 0, "ep")


def trajectory(t):
    """A smooth 'ideal' action signal (ee_delta units) the fake policy tracks."""
    return np.stack([0.5 * np.sin(2 * t), 0.4 * np.cos(3 * t), 0.3 * np.sin(t), np.where(t > 1.0, 1.0, -1.0)], -1)


def run_loop(executor, delay_s, n_ticks, chunk_error=0.0, honour_prefix=True, seed=0):
    """Tick the executor at every control period; a request at t is answered by a chunk
    computed from the observation at t that arrives at t + delay_s. Returns per-tick results."""
    rng = np.random.default_rng(seed)
    executor.reset("ep", 0.0)
    executor.set_armed(True)
    pending, results, chunk_id = [], [], 0
    for k in range(n_ticks):
        now = k * DT
        for arrival, chunk in [p for p in pending if p[0] <= now + 1e-9]:
            executor.on_chunk(chunk, now)
        pending = [p for p in pending if p[0] > now + 1e-9]
        result = executor.tick(now, now)
        results.append(result)
        if result.request_chunk:
            _, prefix = executor.take_feedback(request=True)
            chunk_id += 1
            times = now + np.arange(H) * DT
            actions = trajectory(times) + chunk_error * rng.standard_normal(4)   # each chunk a bit off
            actions[:, 3] = trajectory(times)[:, 3]
            if honour_prefix and len(prefix):
                actions[: len(prefix)] = prefix * 2.0       # normalized = actions / 2 here
                # continue from the prefix end into the new plan smoothly (what inpainting achieves)
                k0 = len(prefix)
                end = actions[k0 - 1, :3] - trajectory(times[k0 - 1:k0])[0, :3]   # offset where the plan ends
                for i in range(k0, H):
                    u = min(1.0, (i - k0 + 1) / (H - k0 + 1))
                    w = u * u * (3 - 2 * u)                                     # smoothstep
                    actions[i, :3] = trajectory(times[i:i + 1])[0, :3] + (1 - w) * end + w * (
                        actions[i, :3] - trajectory(times[i:i + 1])[0, :3])
            pending.append((now + delay_s, Chunk(chunk_id, now, DT, actions, actions / 2.0, 0, "ep")))
    return results


# ---- latency estimate ---------------------------------------------------------------------
def test_latency_is_windowed_percentile_without_warmup():
    est = LatencyEstimator(window=10, warmup=2, percentile=50, default_s=0.3)
    assert est.estimate() == 0.3
    for d in (5.0, 5.0):                     # warm-up chunks (model load) do not count
        est.add(d)
    assert est.estimate() == 0.3
    for _ in range(10):
        est.add(0.1)
    assert est.estimate() == pytest.approx(0.1)
    est.add(2.0)                             # one outlier does not become the estimate
    assert est.estimate() == pytest.approx(0.1)
    for _ in range(10):
        est.add(0.05)                        # and the window forgets old values
    assert est.estimate() == pytest.approx(0.05)
    assert est.steps(DT) == 4


@settings(max_examples=60, deadline=None)
@given(delay_steps=st.integers(0, 7), t0=st.floats(0.0, 100.0), h=st.integers(1, 12))
def test_stale_actions_skipped_exactly(delay_steps, t0, h):
    q = ActionQueue(DT)
    now = t0 + delay_steps * DT
    queued = q.insert(Chunk(1, t0, DT, np.zeros((h, 2)), np.zeros((h, 2))), now)
    assert q.skipped_stale == min(delay_steps, h)
    assert queued == max(0, h - delay_steps)
    if queued:
        item = q.pop(now)
        assert item.index == delay_steps and item.time == now


# ---- merging and interpolation --------------------------------------------------------------
def test_ensemble_weights_follow_act():
    q = ActionQueue(DT, merge="ensemble", ensemble_decay=0.5)
    q.insert(const_chunk(0.0, 1.0, 1), 0.0)
    q.insert(const_chunk(2 * DT, 3.0, 2), 2 * DT)
    w_old, w_new = 1.0, math.exp(-0.5)
    expected = (w_old * 1.0 + w_new * 3.0) / (w_old + w_new)
    assert q.pop(0.0).action[0] == pytest.approx(1.0)          # only chunk 1 covers t=0
    item = q.pop(2 * DT)
    assert item.action[0] == pytest.approx(expected) and item.sources == [1, 2]
    assert item.action_normalized[0] == pytest.approx(expected / 2)
    assert q.pop(8 * DT).action[0] == pytest.approx(3.0)       # chunk 1 has ended


def test_average_crossfades_monotonically_from_old_to_new():
    q = ActionQueue(DT, merge="average")
    q.insert(const_chunk(0.0, 0.0, 1), 0.0)
    q.insert(const_chunk(3 * DT, 1.0, 2), 0.0)
    values = [q.pop(i * DT).action[0] for i in range(11)]
    assert values[:3] == [0.0, 0.0, 0.0]
    overlap = values[3:8]
    assert all(0.0 < v < 1.0 for v in overlap) and np.all(np.diff(overlap) > 0)
    assert values[8:] == [1.0, 1.0, 1.0]


def test_replace_cuts_the_older_chunk():
    q = ActionQueue(DT, merge="replace")
    q.insert(const_chunk(0.0, 0.0, 1), 0.0)
    q.insert(const_chunk(3 * DT, 1.0, 2), 0.0)
    assert [q.pop(i * DT).chunk_id for i in range(11)] == [1, 1, 1] + [2] * 8


def test_linear_interpolation_to_a_faster_controller():
    q = ActionQueue(DT, sampling="linear")
    a = np.arange(8, dtype=float)[:, None] * np.ones((1, 2))
    q.insert(Chunk(1, 0.0, DT, a, a), 0.0)
    ticks = np.arange(0, 7 * DT, DT / 4)       # 4x the action rate
    values = [q.pop(t).action[0] for t in ticks]
    np.testing.assert_allclose(values, ticks / DT, atol=1e-9)


@settings(max_examples=40, deadline=None)
@given(target=st.lists(st.floats(-2, 2), min_size=3, max_size=3), amax=st.floats(0.5, 20.0))
def test_smooth_limiter_bounds_acceleration_and_settles(target, amax):
    dt = 0.01
    lim = MotionLimiter(dt, "position", max_velocity=[5.0] * 3, max_acceleration=[amax] * 3)
    lim.reset(np.zeros(3))
    ys = [np.zeros(3), np.zeros(3)] + [lim.step(target) for _ in range(3000)]
    acc = np.diff(np.asarray(ys), n=2, axis=0) / dt ** 2
    assert np.all(np.abs(acc) <= amax * 1.0001 + 1e-9)
    np.testing.assert_allclose(ys[-1], target, atol=1e-6)     # arrives, no residual oscillation


# ---- modes -------------------------------------------------------------------------------
def test_sync_starves_while_the_policy_thinks(sawyer):
    ex = ChunkExecutor(sawyer, mode="sync", lockstep=False)
    results = run_loop(ex, delay_s=4 * DT, n_ticks=200)
    starved = sum(r.executed is None for r in results)
    # waits 4 of every 6 ticks; the wait for the episode's first chunk is counted apart
    assert ex.counters["starved_ticks"] + ex.counters["startup_ticks"] == starved and starved > 90
    assert ex.counters["startup_ticks"] == 4


@settings(max_examples=25, deadline=None)
@given(delay_steps=st.integers(1, 4), mode=st.sampled_from(["async", "async_rtc"]))
def test_async_never_starves_when_latency_is_below_the_horizon(sawyer, delay_steps, mode):
    """0 starved ticks whenever the inference delay d is at most the executed horizon: with one
    request in flight a chunk of horizon H yields H - d fresh actions per d ticks (H = 8: d <= 4)."""
    ex = ChunkExecutor(sawyer, mode=mode, lockstep=False, overrides={"latency_warmup": 0, "latency_margin_s": 0.0})
    results = run_loop(ex, delay_s=delay_steps * DT, n_ticks=300)
    first = next(i for i, r in enumerate(results) if r.executed is not None)
    assert first == delay_steps                                # only the very first chunk is waited for
    assert ex.counters["startup_ticks"] == delay_steps and ex.counters["starved_ticks"] == 0
    assert sum(r.executed is None for r in results[first:]) == 0
    assert ex.latency.steps(DT) == delay_steps


def test_async_starvation_beyond_the_executed_horizon_is_counted(sawyer):
    ex = ChunkExecutor(sawyer, mode="async", lockstep=False, overrides={"latency_warmup": 0, "latency_margin_s": 0.0})
    results = run_loop(ex, delay_s=6 * DT, n_ticks=200)
    starved = sum(r.executed is None for r in results)
    assert ex.counters["starved_ticks"] > 0 and ex.counters["starved_ticks"] + ex.counters["startup_ticks"] == starved


def test_async_requests_early_by_measured_latency(sawyer):
    ex = ChunkExecutor(sawyer, mode="async", lockstep=False, overrides={"latency_warmup": 0, "latency_margin_s": 0.0})
    results = run_loop(ex, delay_s=3 * DT, n_ticks=120)
    requests = [i for i, r in enumerate(results) if r.request_chunk]
    gaps = np.diff(requests[3:])
    # horizon 8, delay 3: a new chunk is asked for when 3 (+1) actions are left, every 4 ticks
    assert set(gaps.tolist()) == {4}


def test_rtc_prefix_is_the_plan_that_runs_during_inference(sawyer):
    ex = ChunkExecutor(sawyer, mode="async_rtc", lockstep=False, overrides={"latency_warmup": 0, "latency_margin_s": 0.0})
    ex.execute_per_chunk = 8                   # asked for by the horizon left, not by the re-plan cadence
    ex.reset("ep", 0.0)
    ex.set_armed(True)
    for _ in range(5):
        ex.latency.add(2 * DT)
    a = np.arange(8, dtype=float)[:, None] * np.ones((1, 4)) * 0.1
    ex.on_chunk(Chunk(1, 0.0, DT, a, a * 10, 0, "ep"), 0.0)
    for k in range(6):
        r = ex.tick(k * DT, k * DT)
        if r.request_chunk:
            break
    assert r.request_chunk and k == 5          # asked when 3 = delay 2 + 1 actions are left, this one included
    _, prefix = ex.take_feedback(request=True)
    # plan from the request time: indices 5, 6, 7 (delay 2 steps + 1), model space
    np.testing.assert_allclose(prefix[:, 0], [5.0, 6.0, 7.0])
    ex_sync = ChunkExecutor(sawyer, mode="async", lockstep=False)
    assert ex_sync.take_feedback(request=True)[1].shape == (0, 4)  # no prefix outside RTC


def test_rtc_boundaries_are_smoother_than_naive_replacement(sawyer):
    scores = {}
    for mode, honour in (("async", False), ("async_rtc", True)):
        ex = ChunkExecutor(sawyer, mode=mode, lockstep=False, overrides={"latency_warmup": 0, "merge": "replace", "latency_margin_s": 0.0})
        results = run_loop(ex, delay_s=3 * DT, n_ticks=400, chunk_error=0.05, honour_prefix=honour)
        done = [r for r in results if r.executed is not None]
        cmds = np.array([r.command for r in done])
        ids = [r.executed.chunk_id for r in done]
        scores[mode] = boundary_jerk(cmds, ids, DT, "ee_delta", dims=[0, 1, 2])
    assert scores["async_rtc"]["boundaries"] > 20
    assert scores["async_rtc"]["max_boundary"] * 3 < scores["async"]["max_boundary"]


def test_replan_request_keeps_or_drops_the_plan(sawyer):
    ex = ChunkExecutor(sawyer, mode="async", lockstep=False)
    ex.reset("ep", 0.0)
    ex.set_armed(True)
    ex.on_chunk(const_chunk(0.0, 0.5, 1), 0.0)
    ex.tick(0.0, 0.0)
    assert ex.replan(DT, drop_plan=False)
    r = ex.tick(DT, DT)
    assert r.request_chunk and r.executed is not None          # keeps moving while re-planning
    ex.awaiting_chunk = False
    assert ex.replan(2 * DT, drop_plan=True)
    r = ex.tick(2 * DT, 2 * DT)
    assert r.request_chunk and r.executed is None and r.hold_reason == "waiting for chunk"


def test_stale_chunk_is_refused_and_asked_again(sawyer):
    ex = ChunkExecutor(sawyer, mode="async", lockstep=False, overrides={"max_chunk_age_s": 0.1})
    ex.reset("ep", 0.0)
    ex.set_armed(True)
    ok, why = ex.on_chunk(const_chunk(0.0, 0.5, 1), 0.5)
    assert not ok and "stale" in why and ex.counters["chunks_stale"] == 1
    assert ex.tick(0.5, 0.5).request_chunk


def test_executor_settings_come_from_yaml_and_overrides(sawyer):
    ex = ChunkExecutor(sawyer, overrides={"merge": "ensemble", "interpolation": "smooth"})
    assert ex.mode == sawyer.config.executor.mode and ex.queue.merge == "ensemble" and ex.smooth
    with pytest.raises(ValueError, match="merge"):
        ChunkExecutor(sawyer, overrides={"merge": "blend"})
    with pytest.raises(ValueError, match="mode 'fast'"):
        ChunkExecutor(sawyer, mode="fast")
    with pytest.raises(ValueError, match="control_rate_hz"):
        ChunkExecutor(sawyer, overrides={"control_rate_hz": 100.0})   # ee_delta cannot be resampled


def test_sync_with_ensembling_votes_like_act(sawyer):
    """sync + ensemble: whole chunks are kept, k actions run per chunk, overlapping predictions
    for the same time are averaged with ACT's exponential weights."""
    ex = ChunkExecutor(sawyer, mode="sync", lockstep=True, overrides={"merge": "ensemble", "ensemble_decay": 0.0})
    ex.reset("ep", 0.0)
    ex.set_armed(True)
    k = sawyer.config.action.execute_per_chunk
    assert ex.tick(0.0, 0.0).request_chunk
    ex.on_chunk(const_chunk(0.0, 0.2, 1), 0.0)
    first = [ex.tick(i * DT, i * DT) for i in range(k + 1)]
    assert [r.command is not None for r in first] == [True] * k + [False] and first[k].request_chunk
    ex.on_chunk(const_chunk(k * DT, 0.6, 2), k * DT)
    r = ex.tick(k * DT, k * DT)
    assert r.executed.sources == [1, 2]
    np.testing.assert_allclose(r.command[:3], [0.4] * 3)         # equal weights: the mean of 0.2 and 0.6
