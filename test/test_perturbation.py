"""Perturbations of a running episode (sim/perturbation.py): drawn reproducibly from the episode's
seed, applied by the embedded simulators to the real scene (the object or the hand really moves,
a fixed-base object with its goal so the task stays solvable), served by the sim bridge at a given
step, and asked by the evaluator once per episode through the graph."""

import json
import time

import numpy as np
import pytest
from conftest import free_running_sim_bridge, record_episodes

from vla_msgs.srv import Perturb, ResetEpisode
from vla_policy_node.evaluation.perturbation_detection import (detection_figures, perturbed_at, series,
                                                               threshold_for_false_alarms, window_max)
from vla_policy_node.sim.metaworld_sim import MetaWorldSim
from vla_policy_node.sim.perturbation import Perturbation, PerturbationSchedule, sample_perturbation

LEADERBOARD_TASKS = ["button-press", "drawer-open", "door-open", "window-open", "plate-slide"]


# ---- drawing ---------------------------------------------------------------------------------------

def test_a_perturbation_is_drawn_from_the_episode_seed_alone():
    draws = [sample_perturbation(seed, "object", (40, 120), (0.05, 0.15)) for seed in range(200, 300)]
    assert sample_perturbation(200, "object", (40, 120), (0.05, 0.15)) == draws[0]      # reproducible
    assert len({d.offset_m for d in draws}) == 100                                       # and varied
    distances = np.array([np.linalg.norm(d.offset_m) for d in draws])
    assert distances.min() >= 0.05 and distances.max() <= 0.15
    assert all(d.offset_m[2] == 0.0 for d in draws)                                      # on the table
    steps = np.array([d.at_step for d in draws])
    assert steps.min() >= 40 and steps.max() <= 120 and len(set(steps)) > 30
    angles = np.arctan2([d.offset_m[1] for d in draws], [d.offset_m[0] for d in draws])
    assert np.histogram(angles, bins=4, range=(-np.pi, np.pi))[0].min() >= 10            # every direction


def test_bad_perturbation_settings_are_named():
    assert PerturbationSchedule.from_parameters("none", [40, 120], [0.05, 0.15]) is None
    with pytest.raises(ValueError, match="parameter perturbation: 'shove' unknown"):
        PerturbationSchedule.from_parameters("shove", [40, 120], [0.05, 0.15])
    with pytest.raises(ValueError, match="perturbation_steps .* 1 <= first <= last"):
        PerturbationSchedule.from_parameters("hand", [0, 120], [0.05, 0.15])
    with pytest.raises(ValueError, match="two values each"):
        PerturbationSchedule.from_parameters("hand", [40], [0.05, 0.15])
    with pytest.raises(ValueError, match="offset_m must be 3 finite"):
        Perturbation("hand", (0.1, float("nan"), 0.0), 5)


# ---- the simulator ---------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def sim():
    s = MetaWorldSim(["corner2"], width=64, height=64)
    yield s
    s.close()


@pytest.mark.parametrize("task", LEADERBOARD_TASKS)
def test_the_task_object_really_moves(sim, task):
    sim.reset(task, 100)
    env = sim.env.unwrapped
    for _ in range(3):
        sim.step([0.0, 0.0, 0.0, 0.0])
    object_before, target_before = env._get_pos_objects()[:3].copy(), np.array(env._target_pos, dtype=float)
    frame_before = sim.render()["corner2"]
    applied = sim.perturb("object", [0.08, -0.04, 0.0])
    for _ in range(3):
        sim.step([0.0, 0.0, 0.0, 0.0])
    # the puck's slide joint in y ends at its start: a push towards -y is turned back to +y
    assert np.allclose(applied, [0.08, -0.04 if task != "plate-slide" else 0.04, 0.0])
    assert np.allclose(env._get_pos_objects()[:3] - object_before, applied, atol=5e-3)
    fixed_base = task != "plate-slide"          # the puck slides alone; a box, drawer, door or window moves whole
    assert np.allclose(np.array(env._target_pos) - target_before, applied if fixed_base else 0.0, atol=1e-9)
    changed = np.abs(sim.render()["corner2"].astype(int) - frame_before).max(axis=2) > 30
    assert changed.mean() > 0.005                # the camera sees it (at 64 x 64: 20 pixels or more)


def test_a_pushed_hand_goes_where_it_was_pushed(sim):
    sim.reset("drawer-open", 101)
    for _ in range(3):
        sim.step([0.0, 0.0, 0.0, 0.0])
    before = sim.ee_pose()[0]
    applied = sim.perturb("hand", [0.0, 0.1, 0.0])
    for _ in range(25):
        sim.step([0.0, 0.0, 0.0, 0.0])
    assert np.allclose(applied, [0.0, 0.1, 0.0])
    assert np.linalg.norm(sim.ee_pose()[0] - before - applied) < 0.01
    far = sim.perturb("hand", [0.0, 5.0, 0.0])                 # clipped to the hand's workspace
    assert 0.0 <= far[1] < 5.0
    with pytest.raises(ValueError, match="kind 'fly' not available for MetaWorld task 'drawer-open'"):
        sim.perturb("fly", [0.0, 0.0, 0.1])


def test_the_scripted_expert_still_solves_a_displaced_drawer(sim):
    """The displacement keeps the task solvable: the expert, reading the new state, still opens it."""
    from metaworld.policies import SawyerDrawerOpenV3Policy

    step = sim.reset("drawer-open", 102)
    expert = SawyerDrawerOpenV3Policy()
    for i in range(300):
        if i == 30:
            sim.perturb("object", [-0.1, 0.05, 0.0])
        step = sim.step(expert.get_action(step.env_state))
        if step.success:
            break
    assert step.success and step.step > 30


# ---- the sim bridge --------------------------------------------------------------------------------

@pytest.fixture
def bridge():
    states = []
    with free_running_sim_bridge(47, 60, lambda m: states.append((m.step, list(m.values)))) as (node, executor):
        yield node, executor, states


def spin_until_step(executor, states, step, timeout_s=60.0):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline and (not states or states[-1][0] < step):
        executor.spin_once(timeout_sec=0.01)


def test_the_bridge_applies_a_perturbation_before_the_step_asked(bridge):
    node, executor, states = bridge
    reset = node.on_reset(ResetEpisode.Request(task="drawer-open", seed=100, episode_id="p"), ResetEpisode.Response())
    assert reset.success, reset.message
    states.clear()
    answer = node.on_perturb(Perturb.Request(kind="object", offset_m=[0.1, 0.0, 0.0], at_step=20), Perturb.Response())
    assert answer.success, answer.message
    spin_until_step(executor, states, 25)
    by_step = dict(states)
    # MetaWorld's observation: the drawer handle at [4:7]; it moved 0.1 m in x between steps 19 and 20
    moved = np.array(by_step[20][4:7]) - np.array(by_step[19][4:7])
    still = np.array(by_step[19][4:7]) - np.array(by_step[18][4:7])
    assert moved[0] == pytest.approx(0.1, abs=5e-3) and np.abs(still).max() < 1e-3
    assert node.health_figures()["perturbations_applied"] == 1
    late = node.on_perturb(Perturb.Request(kind="object", offset_m=[0.1, 0.0, 0.0], at_step=10), Perturb.Response())
    assert not late.success and "at_step 10 has passed" in late.message
    unknown = node.on_perturb(Perturb.Request(kind="shove", offset_m=[0.1, 0.0, 0.0]), Perturb.Response())
    assert not unknown.success and "vla/sim/perturb" in unknown.message and "'shove' unknown" in unknown.message


def test_a_reset_drops_the_last_episodes_perturbation(bridge):
    node, executor, states = bridge
    node.on_reset(ResetEpisode.Request(task="button-press", seed=100, episode_id="a"), ResetEpisode.Response())
    assert node.on_perturb(Perturb.Request(kind="hand", offset_m=[0.0, 0.1, 0.0], at_step=50),
                           Perturb.Response()).success
    node.on_reset(ResetEpisode.Request(task="button-press", seed=101, episode_id="b"), ResetEpisode.Response())
    states.clear()
    spin_until_step(executor, states, 55)
    assert node.health_figures()["perturbations_applied"] == 0


# ---- through the graph -----------------------------------------------------------------------------

def test_the_evaluator_perturbs_each_episode_through_the_graph(tmp_path):
    """sim_demo with the scripted expert, the evaluator asking a displaced object per episode: the
    report names the perturbation drawn from the seed, the simulator applied it, the expert recovers."""
    out = tmp_path / "run"
    record_episodes(out, 48, "[drawer-open]", "[103]", 200,
                    evaluator={"perturbation": "object", "perturbation_steps": "[30, 30]", "record": "false",
                               "score_frame_change": "true"})
    episode = json.loads((out / "report.json").read_text())["episodes"][0]
    drawn = sample_perturbation(103, "object", (30, 30), (0.05, 0.15))
    assert episode["perturbation"]["scheduled"] is True
    assert episode["perturbation"]["offset_m"] == pytest.approx(list(drawn.offset_m), abs=1e-6)
    assert episode["perturbation"]["at_step"] == 30 and episode["perturbation"]["at_s"] == pytest.approx(29 * 0.0125)
    log = (out / "logs" / "sim_bridge.log").read_text()
    assert "perturbation: object moved" in log and "before step 30" in log
    assert episode["success"] and episode["steps"] > 30

    # the detector that imagines nothing sees the drawer jump: its largest change is the perturbation's
    points = series(episode, "frame_change")
    # one point a real frame the evaluator received (best effort: a loaded machine drops a few)
    assert len(points) > episode["steps"] / 2 and all(0.0 <= v <= 2.0 for _, v in points)
    # against the typical change of the half-second before: a frame the machine dropped makes its successor
    # score the motion of several steps, so the largest change before can be as high as the jump itself
    at = perturbed_at(episode)
    typical_before = float(np.median([v for t, v in points if at - 0.5 <= t < at]))
    assert window_max(points, at, at + 0.1) > 3 * typical_before


# ---- detection figures, on hand-made series ----------------------------------------------------------

def made_episode(at_s, scores, dt=0.0125, detector="divergence", duration_s=3.0):
    row = {detector: {"series": [[round(i * dt, 4), v] for i, v in enumerate(scores)]}, "duration_s": duration_s,
           "success": True, "task": "t", "seed": len(scores)}
    if at_s is not None:
        row["perturbation"] = {"kind": "object", "at_s": at_s, "at_step": round(at_s / dt) + 1, "scheduled": True}
    return row


def test_detection_figures_count_what_crossed_when():
    flat = [0.02] * 200
    spike = flat[:80] + [0.05, 0.2, 0.3] + flat[83:]           # above 0.1 one frame (12.5 ms) after 1.0 s
    late = flat[:160] + [0.3] + flat[161:]                     # rises 1.0 s after the perturbation: missed
    perturbed = [made_episode(1.0, spike), made_episode(1.0, late), made_episode(1.0, flat),
                 made_episode(2.9, flat, duration_s=2.5)]       # ended before its perturbation: not scored
    clean = [made_episode(None, flat), made_episode(None, flat[:50] + [0.2] + flat[51:])]
    figures = detection_figures(perturbed, clean, "divergence", threshold=0.1, window_s=0.5)
    assert figures["scored"] == 3 and figures["detected"] == 1
    assert figures["median_delay_s"] == pytest.approx(0.0125)
    assert figures["false_alarms_per_episode"] == 0.5
    # AUROC of after- against before-window maxima: the spike's after > every before (3 of 9 pairs
    # won outright), the other two tie their befores (half a win each)
    assert figures["auroc"] == pytest.approx((3 + 0.5 * 2 * 3) / 9)
    # the lowest threshold with at most 0.5 alarms per clean episode: the floor (only the spike rises
    # above it); with none allowed: the spike's own height (nothing rises above it)
    assert threshold_for_false_alarms(clean, "divergence", 0.5) == pytest.approx(0.02)
    assert threshold_for_false_alarms(clean, "divergence", 0.0) == pytest.approx(0.2)
    assert detection_figures(perturbed, clean, "frame_change", 0.1)["scored"] == 0     # not scored: no series


def test_the_bench_reads_its_description_and_names_what_is_missing(tmp_path):
    from vla_policy_node.bench.imagination import ImaginationBench

    bench = ImaginationBench.load()
    row = bench.row("perturbed_replan")
    assert row.set["evaluator.perturbation"] == "object" and row.set["imagination_monitor.action"] == "replan"
    assert "evaluator.perturbation" not in bench.row("clean").set or bench.row("clean").set[
        "evaluator.perturbation"] == "none"
    broken = tmp_path / "imagination.yaml"
    broken.write_text("protocol: {}\npolicy: {}\nperturbation: {}\nwindow_s: 0.5\nfalse_alarm_target: 0.1\n"
                      "arms: {perturbed_none: {}}\n")
    with pytest.raises(ValueError, match="needs 'clean'"):
        ImaginationBench.load(broken)


def test_the_bench_figures_from_the_arms_reports(tmp_path):
    from vla_policy_node.bench.imagination import ImaginationBench, figures, write_outputs

    bench = ImaginationBench.load()
    flat, spike = [0.02] * 200, [0.02] * 80 + [0.3] + [0.02] * 119

    def both(scores, at_s, success, seed):
        row = made_episode(at_s, scores)
        row["frame_change"] = {"series": [[t, 0.01] for t, _ in row["divergence"]["series"]]}   # never moves
        return dict(row, success=success, seed=seed)

    report = lambda eps: {"report": {"episodes": eps}}          # noqa: E731
    results = {"clean": report([both(flat, None, True, s) for s in range(4)]),
               "perturbed_none": report([both(spike, 1.0, s % 2 == 0, s) for s in range(4)]),
               "perturbed_replan": report([both(spike, 1.0, True, s) for s in range(4)])}
    summary = figures(bench, results, robot_threshold=0.08)
    by = {(d["detector"], d["operating_point"]): d for d in summary["detection"]}
    assert by[("divergence", "robot file threshold")]["detected"] == 4
    assert by[("divergence", "robot file threshold")]["auroc"] == 1.0
    assert by[("frame_change", "matched false alarms")]["auroc"] == 0.5 and \
        by[("frame_change", "matched false alarms")]["detected"] == 0
    assert [s["successes"] for s in summary["success"]] == [4, 2, 4]
    replan = next(c for c in summary["comparisons"] if c["a"] == "perturbed_replan")
    assert replan["difference"] == 0.5 and replan["only_a_succeeded"] == 2
    _, md = write_outputs(bench, summary, tmp_path)
    line = next(x for x in md.read_text().splitlines() if "robot file threshold" in x)
    assert [c.strip() for c in line.split("|")[1:6]] == ["imagination divergence", "robot file threshold", "0.0800",
                                                         "1.00", "4/4"]
