"""How far a closed-loop episode got: the simulator's success flag, step count and stage progress."""

import numpy as np
import pytest

from vla_policy_node.core.progress import StageThresholds, StageTracker
from vla_policy_node.evaluation.episode_tracker import METAWORLD_STATE_DIM, EpisodeTracker

OBJECT = np.array([0.0, 0.7, 0.1])


def state(hand, obj=OBJECT) -> np.ndarray:
    """A MetaWorld 39-D state with the hand at [0:3] and the object at [4:7] (m)."""
    s = np.zeros(METAWORLD_STATE_DIM)
    s[0:3], s[4:7] = hand, obj
    return s


def near(distance_m: float) -> np.ndarray:
    return OBJECT + np.array([distance_m, 0.0, 0.0])


# ---- stage progress (core/progress.py) ----------------------------------------------------------

def test_approach_contact_complete_on_the_first_try_scores_one():
    stages = StageTracker()
    stages.update(state(near(0.5)), False)
    assert stages.score == 0.0
    stages.update(state(near(0.05)), False)
    assert stages.attempts == {"approach": 1, "contact": 0, "complete": 0}
    stages.update(state(near(0.05), OBJECT + [0.0, 0.02, 0.0]), False)
    assert stages.attempts == {"approach": 1, "contact": 1, "complete": 0}
    stages.update(state(near(0.05), OBJECT + [0.0, 0.03, 0.0]), True)
    assert stages.score == 1.0
    assert stages.summary()["stages"]["complete"] == {"reached": True, "retries": 0}


def test_a_stage_lost_and_reached_again_scores_one_half():
    stages = StageTracker()
    stages.update(state(near(0.10)), False)          # approached
    stages.update(state(near(0.14)), False)          # inside the release distance: still approached
    assert stages.attempts["approach"] == 1
    stages.update(state(near(0.20)), False)          # backed off beyond approach_release_m before contact
    stages.update(state(near(0.10)), False)          # approached again: a retry
    assert stages.attempts["approach"] == 2
    assert stages.score == pytest.approx(0.5 / 3)
    assert stages.summary()["stages"]["approach"] == {"reached": True, "retries": 1}


def test_stages_never_reached_score_zero():
    stages = StageTracker()
    for d in (0.6, 0.5, 0.4):
        stages.update(state(near(d)), False)
    assert stages.score == 0.0
    assert not any(s["reached"] for s in stages.summary()["stages"].values())


def test_a_later_stage_implies_the_earlier_ones():
    stages = StageTracker()
    stages.update(state(near(0.5)), False)
    stages.update(state(near(0.5), OBJECT + [0.05, 0.0, 0.0]), False)    # pushed from afar
    assert stages.attempts == {"approach": 1, "contact": 1, "complete": 0}


def test_stage_thresholds_are_checked():
    with pytest.raises(ValueError, match="approach_radius_m \\(0.2\\) < approach_release_m \\(0.1\\)"):
        StageThresholds(0.2, 0.1)
    with pytest.raises(ValueError, match="contact_displacement_m must be > 0"):
        StageThresholds(contact_displacement_m=0.0)
    with pytest.raises(ValueError, match="env_state has 4 values"):
        StageTracker().update(np.zeros(4), False)


# ---- episode tracker (evaluation/episode_tracker.py) --------------------------------------------

def test_success_counts_only_after_the_episodes_first_false():
    tracker = EpisodeTracker(start=10.0)
    tracker.on_success(True)                         # still in flight from the previous episode
    tracker.on_env_state(10.0, 0)
    assert not tracker.success
    tracker.on_success(False)                        # the reset of this episode
    tracker.changed.clear()
    tracker.on_env_state(10.1, 1)
    tracker.on_env_state(10.2, 2)
    tracker.on_success(True)
    assert tracker.success and tracker.success_stamp == pytest.approx(10.2)
    assert tracker.changed.is_set()
    tracker.on_env_state(10.3, 3)
    tracker.on_success(True)
    assert tracker.success_stamp == pytest.approx(10.2)     # the first success is kept
    assert tracker.progress_score == 1.0 and not tracker.staged


def test_steps_and_last_stamp_ignore_states_before_the_start():
    tracker = EpisodeTracker(start=10.0)
    tracker.on_env_state(9.5, 250)                   # the previous episode's last state
    assert (tracker.steps, tracker.last_stamp) == (0, 10.0)
    assert not tracker.changed.is_set()
    tracker.on_env_state(10.5, 4)
    tracker.on_env_state(10.4, 3)                    # out of order: the newest counts
    assert (tracker.steps, tracker.last_stamp) == (4, 10.5)
    assert not tracker.success and tracker.success_stamp is None and tracker.progress_score == 0.0


def test_tracker_follows_a_clock_that_went_back():
    tracker = EpisodeTracker(start=10.0)
    tracker.on_env_state(10.2, 10, now=10.2)
    tracker.on_env_state(9.9, 250, now=9.95)          # the clock lags the reset a little: an old state
    assert tracker.steps == 10
    tracker.on_env_state(5.2, 11, now=5.2)            # the clock went back 5 s: the episode goes on
    tracker.on_env_state(5.22, 12, now=5.22)
    assert (tracker.steps, tracker.last_stamp, tracker.start) == (12, 5.22, 5.2)


def test_stage_progress_only_from_a_metaworld_state():
    tracker = EpisodeTracker(start=0.0, stages=StageTracker())
    tracker.on_success(False)
    tracker.on_env_state(0.1, 1, np.r_[near(0.05), 0.0, OBJECT])     # 7 values: not MetaWorld's layout
    assert not tracker.staged and tracker.progress_score == 0.0
    tracker.on_env_state(0.2, 2, state(near(0.05)))
    assert tracker.staged and tracker.stages.attempts["approach"] == 1
    assert tracker.progress_score == pytest.approx(1 / 3)
    tracker.on_success(True)                         # success reaches the stages with the last state
    assert tracker.stages.attempts == {"approach": 1, "contact": 1, "complete": 1}
    assert tracker.progress_score == 1.0


def test_a_state_that_carries_the_flag_decides_the_success_step():
    """The flag topic handled after the next state (a loaded machine) must not move the success
    to that later step: a state carrying its own flag decides."""
    from vla_policy_node.evaluation.episode_tracker import EpisodeTracker

    tracker = EpisodeTracker(start=10.0)
    tracker.on_success(False)
    for step in range(1, 6):
        tracker.on_env_state(10.0 + 0.0125 * step, step, success=int(step >= 4))
    tracker.on_success(True)                      # the flag of step 4, handled after state 5
    assert tracker.success and tracker.success_steps == 4 and tracker.success_stamp == 10.0 + 0.0125 * 4
    assert tracker.success_reported

    held = EpisodeTracker(start=10.0)             # a goal met from the first state on is no success,
    for step in range(1, 4):                      # as on the flag topic (True only after a False)
        held.on_env_state(10.0 + 0.0125 * step, step, success=1)
    assert not held.success and held.success_reported

    legacy = EpisodeTracker(start=10.0)           # a simulator whose states carry no flag
    legacy.on_success(False)
    legacy.on_env_state(10.0125, 1)
    legacy.on_success(True)
    assert legacy.success and legacy.success_steps == 1
