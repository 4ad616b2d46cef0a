"""Every learned family draws its sampling noise the same way, from the episode's seed and the
observation's time: a chunk asked twice for one observation is the same chunk, a reset with the
same seed gives the same chunks again, another time gives other noise, and in a batch each
observation has a generator of its own. The skeleton this comes from lives once
(models/components/pipeline.py): no family's policy module defines its own."""

import ast
from pathlib import Path

import numpy as np
import pytest
from conftest import tiny_lingbot_checkpoint, tiny_qwen_checkpoint, tiny_videovla_checkpoint, tiny_vita_checkpoint

from vla_policy_node.core.embodiment import load_robot
from vla_policy_node.models.backend import PolicyInput
from vla_policy_node.models.registry import TRAINERS, make_backend

BUILDERS = {   # family -> a tiny random checkpoint of it for the Sawyer robot file
    "videovla": lambda path: tiny_videovla_checkpoint(path, action_head_std=0.3),
    "bc": lambda path: tiny_videovla_checkpoint(path, backend="bc", action_head_std=0.3),
    "vita": tiny_vita_checkpoint,
    "lingbot_va": tiny_lingbot_checkpoint,
    "qwen_vla": lambda path: tiny_qwen_checkpoint(path, robots=("metaworld_sawyer",)),
}
GREEDY = {"vita"}            # decoding without noise: a chunk is a function of its observation alone
ROBOT = "metaworld_sawyer"
DT = 0.0125                  # the Sawyer's action period (s)


def test_every_trained_family_is_covered():
    assert sorted(BUILDERS) == sorted(TRAINERS)


@pytest.fixture(scope="module", params=sorted(BUILDERS))
def policy(request, tmp_path_factory):
    path = BUILDERS[request.param](tmp_path_factory.mktemp(request.param) / "ckpt")
    return make_backend(request.param, load_robot(ROBOT), checkpoint=str(path))


def observation(stamp: float, seed: int = 0) -> PolicyInput:
    rng = np.random.default_rng(seed)
    cfg = load_robot(ROBOT).config
    images = {c.name: rng.integers(0, 255, (*c.input_size, 3), dtype=np.uint8) for c in cfg.cameras}
    return PolicyInput(stamp, "open the drawer", images, np.array([0.0, 0.6, 0.2, 0.0]) + rng.uniform(-0.1, 0.1, 4))


def chunk(policy, obs: PolicyInput) -> np.ndarray:
    return policy.predict(obs).actions_normalized


def test_a_chunk_asked_twice_for_one_observation_is_the_same_chunk(policy):
    policy.reset("open the drawer", seed=7)
    first = observation(2.0)
    a = chunk(policy, first)
    assert np.array_equal(chunk(policy, first), a)              # a re-sent request
    if not policy.stateful:                                     # a stateful backend's history moved on
        chunk(policy, observation(2.0 + 8 * DT, seed=1))
        assert np.array_equal(chunk(policy, first), a)


def test_a_reset_with_the_same_seed_gives_the_same_chunks(policy):
    observations = [observation(5.0), observation(5.0 + 8 * DT, seed=1)]
    runs = []
    for _ in range(2):
        policy.reset("open the drawer", seed=3)
        runs.append([chunk(policy, obs) for obs in observations])
    assert all(np.array_equal(a, b) for a, b in zip(*runs))
    policy.reset("open the drawer", seed=4)
    other = chunk(policy, observations[0])
    assert np.array_equal(other, runs[0][0]) == (policy.name in GREEDY)     # another seed, other noise


def test_another_observation_time_gives_other_noise(policy):
    policy.reset("open the drawer", seed=0)
    a = chunk(policy, observation(1.0))
    b = chunk(policy, observation(1.0 + DT))                    # the same frame and state, one period later
    assert np.array_equal(a, b) == (policy.name in GREEDY)


def test_a_batch_gives_each_observation_the_chunk_predict_gives_it(policy):
    observations = [observation(3.0), observation(3.0 + 8 * DT, seed=1)]
    policy.reset("open the drawer", seed=2)
    one_by_one = [chunk(policy, obs) for obs in observations]
    policy.reset("open the drawer", seed=2)
    batched = policy.predict_batch(observations)               # a generator per observation, not per place
    for alone, out in zip(one_by_one, batched):
        np.testing.assert_allclose(out.actions_normalized, alone, atol=1e-5)


def test_no_family_writes_the_backend_skeleton_again():
    shared = {"describe", "noise_seed", "observation_generator", "pack", "outputs", "_frame", "camera_frames",
              "model_state", "imagined_view"}
    source = Path(__file__).resolve().parents[1] / "vla_policy_node" / "models"
    copies = []
    for path in sorted(source.glob("*/policy_*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ClassDef):
                copies += [f"{path.name}: {node.name}.{f.name}" for f in node.body
                           if isinstance(f, ast.FunctionDef) and f.name in shared]
        if "needs option 'checkpoint'" in path.read_text():
            copies.append(f"{path.name}: its own checkpoint option check")
    assert copies == []
