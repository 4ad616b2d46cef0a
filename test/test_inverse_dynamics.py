"""The inverse-dynamics control (vla-train --label-videos idm): fitted on labelled episodes, it reads
actions back from how the proprio moved, and labels action-free episodes without touching labelled ones."""

import numpy as np
import pytest

from vla_policy_node.data.episode import Episode
from vla_policy_node.models.components.inverse_dynamics import (InverseDynamicsConfig, action_error,
                                                                 fit_inverse_dynamics, label_episodes,
                                                                 proprio_windows)


def _episode(seed: int, steps: int = 120, action_free: bool = False) -> Episode:
    """A hand that follows its commanded displacement with a one-step lag (1 unit = 1 cm, as the
    Sawyer's mocap target) and a finger that closes under positive effort."""
    rng = np.random.default_rng(seed)
    actions = np.clip(rng.normal(0, 0.5, (steps, 4)), -1, 1).astype(np.float32)
    actions[:, 3] = np.sign(rng.normal(size=1)) * np.ones(steps)
    states = np.zeros((steps, 4), np.float32)
    states[0] = [0.0, 0.6, 0.2, 0.0]
    for k in range(1, steps):
        lagged = actions[k - 1, :3] * 0.01
        states[k, :3] = states[k - 1, :3] + lagged
        states[k, 3] = np.clip(states[k - 1, 3] + 0.004 * actions[k - 1, 3], -0.03, 0.03)
    return Episode(task="toy", seed=seed, instruction="move", success=True,
                   frames={"corner": np.zeros((steps, 8, 8, 3), np.uint8)}, states=states,
                   actions=np.zeros_like(actions) if action_free else actions,
                   stamps=np.arange(steps) * 0.0125, bag="toy", action_free=action_free,
                   extra={"true_actions": actions})


def test_proprio_windows_are_changes_from_step_k_then_the_state():
    states = np.arange(12, dtype=np.float32).reshape(4, 3)       # state k = 3k + (0, 1, 2)
    x = proprio_windows(states, past=1, future=2)
    assert x.shape == (4, 4 * 3 + 3)
    np.testing.assert_array_equal(x[1], [-3, -3, -3, 0, 0, 0, 3, 3, 3, 6, 6, 6, 3, 4, 5])
    np.testing.assert_array_equal(x[3, :12], [-3, -3, -3, 0, 0, 0, 0, 0, 0, 0, 0, 0])   # the end repeated


def test_idm_reads_held_out_actions_far_better_than_their_mean():
    train = [_episode(s) for s in range(5)]
    model = fit_inverse_dynamics(train, InverseDynamicsConfig(steps=600))
    held_out = [_episode(s) for s in range(100, 103)]
    err = action_error(model, held_out)
    true = np.concatenate([e.actions for e in held_out])
    mean_err = np.abs(true - np.concatenate([e.actions for e in train]).mean(0)).mean()
    assert err["rows"] == len(true) and len(err["mae_per_dim"]) == 4
    assert err["mae"] < 0.25 * mean_err, (err, mean_err)


def test_label_episodes_fills_only_the_action_free_ones():
    demos = [_episode(s) for s in range(3)]
    model = fit_inverse_dynamics(demos, InverseDynamicsConfig(steps=300))
    video = _episode(50, action_free=True)
    labelled = label_episodes(model, [demos[0], video])
    assert labelled[0] is demos[0]
    out = labelled[1]
    assert not out.action_free and out.extra["actions_from"] == "inverse_dynamics"
    assert video.action_free and not video.actions.any()                 # the source episode is untouched
    assert np.abs(out.actions - video.extra["true_actions"]).mean() < \
        np.abs(video.extra["true_actions"]).mean()
    with pytest.raises(ValueError, match="action-labelled episodes only"):
        fit_inverse_dynamics([demos[0], video])
