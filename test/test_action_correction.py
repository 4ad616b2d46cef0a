"""A2C2-style per-step correction (core/action_correction.py, models/correction/): the executor adds the
head's residual, computed from the proprio now and the proprio its chunk was computed from, to every
scheduled action; the trainer fits the residual the demonstrations ask of a frozen base policy."""

import json

import numpy as np
import pytest
from conftest import tiny_videovla_checkpoint
from safetensors.numpy import save_file

from vla_policy_node.core.action_correction import ActionCorrection, correction_features
from vla_policy_node.core.action_queue import Chunk
from vla_policy_node.core.embodiment import load_robot
from vla_policy_node.core.executor import ChunkExecutor
from vla_policy_node.data.dataset import Episode
from vla_policy_node.models.correction.training_correction import base_samples, fit
from vla_policy_node.models.registry import make_backend

DT = 0.0125


def linear_head(path, gain):
    """A head whose residual on dx is `gain` x (state x now - state x at the chunk), others 0."""
    f = 2 * 4 + 4 + 1
    w0 = np.zeros((f, 2), np.float32)
    w0[0, 0], w0[0, 1] = 1.0, -1.0            # relu(x) - relu(-x) = x: the change of ee_x
    w1 = np.eye(2, dtype=np.float32)
    w2 = np.zeros((2, 4), np.float32)
    w2[0, 0], w2[1, 0] = gain, -gain
    meta = {"action_names": ["dx", "dy", "dz", "gripper"], "state_names": ["ee_x", "ee_y", "ee_z", "finger_right"],
            "gripper_index": 3}
    weights = {"w0": w0, "b0": np.zeros(2, np.float32), "w1": w1, "b1": np.zeros(2, np.float32), "w2": w2,
               "b2": np.full(4, 0.5, np.float32), "in_mean": np.zeros(f, np.float32),
               "in_std": np.ones(f, np.float32), "out_scale": np.ones(4, np.float32)}
    save_file(weights, str(path), metadata={"correction": json.dumps(meta)})
    return path


def test_the_executor_adds_the_residual_of_the_proprio_since_the_chunk(tmp_path):
    robot = load_robot("metaworld_sawyer")
    head = ActionCorrection.load(linear_head(tmp_path / "head.safetensors", gain=10.0), robot)
    ex = ChunkExecutor(robot, mode="async", lockstep=False, overrides={"merge": "replace"}, correction=head)
    ex.reset("ep", 0.0)
    ex.set_armed(True)
    origin = np.array([0.10, 0.60, 0.20, 0.0])
    first = ex.tick(0.0, 0.0, proprio=origin)                  # asks for the first chunk at this proprio
    assert first.request_chunk
    actions = np.tile([[0.2, 0.1, 0.0, 1.0]], (8, 1))
    assert ex.on_chunk(Chunk(1, 0.0, DT, actions, actions / 2, 0, "ep"), DT)[0]
    now = origin + np.array([0.01, 0.0, 0.0, 0.0])              # the hand moved 1 cm in x since
    result = ex.tick(DT, DT, proprio=now)
    # dx: 0.2 + 10 x 0.01 + 0.5 (bias); dy, dz: + 0.5; the gripper never corrected
    np.testing.assert_allclose(result.command, [0.8, 0.6, 0.5, 1.0], atol=1e-6)
    plain = ChunkExecutor(robot, mode="async", lockstep=False, overrides={"merge": "replace"})
    plain.reset("ep", 0.0)
    plain.set_armed(True)
    plain.tick(0.0, 0.0)
    plain.on_chunk(Chunk(1, 0.0, DT, actions, actions / 2, 0, "ep"), DT)
    np.testing.assert_allclose(plain.tick(DT, DT, proprio=now).command, actions[1])


def test_a_head_for_another_robot_is_refused_naming_the_file(tmp_path):
    path = linear_head(tmp_path / "head.safetensors", 1.0)
    with pytest.raises(ValueError, match=r"head.safetensors: trained for actions"):
        ActionCorrection.load(path, load_robot("panda_ros2_control"))
    (tmp_path / "junk.safetensors").write_bytes(b"not a file")
    with pytest.raises(ValueError, match="junk.safetensors: not an action-correction head"):
        ActionCorrection.load(tmp_path / "junk.safetensors")


def test_the_trainer_fits_the_residual_the_demonstrations_ask_of_the_base(tmp_path):
    """Demonstrations whose action follows the proprio change since the chunk's observation: the
    fitted head's residual tracks it, measured on held-out features."""
    robot = load_robot("metaworld_sawyer")
    ckpt = tiny_videovla_checkpoint(tmp_path / "base", horizon=8, action_head_std=0.3)
    base = make_backend("videovla", robot, checkpoint=str(ckpt))
    rng = np.random.default_rng(0)
    episodes = []
    for e in range(2):
        states = np.cumsum(rng.normal(0, 0.01, (24, 4)), 0).astype(np.float32) + [0.0, 0.6, 0.2, 0.0]
        frames = rng.integers(0, 255, (24, 128, 128, 3), dtype=np.uint8)
        actions = rng.uniform(-0.5, 0.5, (24, 4)).astype(np.float32)
        episodes.append(Episode("button-press", e, "press the button", True, {"corner": frames}, states, actions,
                                np.arange(24) * DT, bag=""))
    features, targets = base_samples(base, episodes, stride=2, batch=8, camera="corner")
    per_episode = sum(min(8, 24 - t) for t in range(0, 24, 2))      # chunk steps the episode reaches
    assert features.shape == (2 * per_episode, 13) and targets.shape == (2 * per_episode, 4)
    horizon_index = features[:, -1] * 8
    assert set(np.round(horizon_index).astype(int)) == set(range(8))
    # the first step of each chunk: no proprio change yet
    np.testing.assert_allclose(features[horizon_index < 0.5][:, :4], 0.0, atol=1e-6)
    weights, losses = fit(features, targets, 3, hidden=32, steps=600, batch_size=64, lr=3e-3, seed=0)
    assert losses[-1] < losses[0]
    meta = {"action_names": list(robot.config.action.names), "state_names": list(robot.config.state.names),
            "gripper_index": 3}
    save_file(weights, str(tmp_path / "head.safetensors"), metadata={"correction": json.dumps(meta)})
    head = ActionCorrection.load(tmp_path / "head.safetensors", robot)
    predicted = np.array([head.residual(f) for f in features])
    assert np.all(predicted[:, 3] == 0)
    err = np.sqrt(((predicted[:, :3] - targets[:, :3]) ** 2).mean())
    assert err < 0.8 * np.sqrt((targets[:, :3] ** 2).mean())        # explains part of the residual
    one = correction_features(features[0, 4:8], features[0, 4:8] - features[0, :4], features[0, 8:12], 0, 8)
    np.testing.assert_allclose(one, features[0], atol=1e-6)
