"""A new policy family is one folder plus one registry line: a toy stateful family (written to a
temporary folder) plugs into the registry, option checking, `vla-train --family`, offline
evaluation and the policy node through the backend contract alone."""

import json
import os
import sys
import textwrap
import time

import numpy as np
import pytest

from conftest import stop_in_process

from vla_policy_node.core.embodiment import load_robot
from vla_policy_node.data.dataset import Episode
from vla_policy_node.models import registry
from vla_policy_node.models.backend import PolicyInput

TOY_FAMILY = '''
"""Toy family: the chunk repeats the mean of the actions executed so far (a stateful policy)."""
import json
from pathlib import Path

import numpy as np

from vla_policy_node.models.backend import BackendOption, PolicyBackend, PolicyOutput


class Policy(PolicyBackend):
    name = "toy"
    stateful = True
    options = {"checkpoint": BackendOption("", "checkpoint directory"),
               "gain": BackendOption(1.0, "scale of the repeated action")}

    def __init__(self, embodiment, checkpoint="", gain=1.0):
        super().__init__(embodiment)
        self.horizon, self.dim = embodiment.config.action.horizon, embodiment.config.action.dim
        self.gain = gain * (json.loads((Path(checkpoint) / "config.json").read_text())["gain"] if checkpoint else 1.0)
        self.updates = []
        self.requests = []       # (prefix, in_flight) of every predict

    def reset(self, instruction, seed=None, task=""):
        self.executed = np.zeros((0, self.dim))

    def update(self, executed_actions, obs=None):
        self.updates.append((np.array(executed_actions), None if obs is None else obs.stamp))
        self.executed = np.concatenate([self.executed, executed_actions])

    def predict(self, obs, prefix=None):
        self.requests.append((prefix, obs.in_flight))
        mean = self.executed.mean(0) if len(self.executed) else np.zeros(self.dim)
        actions = np.repeat(np.clip(self.gain * mean, -1, 1)[None], self.horizon, axis=0)
        return PolicyOutput(actions, actions)


class Trainer:
    @staticmethod
    def add_arguments(group):
        group.add_argument("--gain", type=float, default=1.0)

    def run(self, args, episodes, robot, out):
        (out / "config.json").write_text(json.dumps({"backend": "toy", "format": 2, "gain": args.gain,
                                                     "episodes": len(episodes)}))
'''


@pytest.fixture
def toy(tmp_path, monkeypatch):
    package = tmp_path / "toy_family"
    package.mkdir()
    (package / "__init__.py").write_text(textwrap.dedent(TOY_FAMILY))
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setitem(registry.BACKENDS, "toy", "toy_family")      # the one registration line
    yield
    sys.modules.pop("toy_family", None)


def toy_episode(n: int = 20) -> Episode:
    rng = np.random.default_rng(0)
    return Episode(task="drawer-open", seed=100, instruction="open the drawer", success=True,
                   frames={"corner": rng.integers(0, 255, (n, 128, 128, 3), dtype=np.uint8)},
                   states=rng.normal(size=(n, 4)).astype(np.float32),
                   actions=rng.uniform(-1, 1, (n, 4)).astype(np.float32),
                   stamps=np.arange(n) * 0.0125, bag="toy_s100")


def test_registry_lists_and_builds_the_new_family_with_its_declared_options(toy):
    robot = load_robot("metaworld_sawyer")
    assert "toy" in registry.available_backends()
    policy = registry.make_backend("toy", robot, gain=0.5)
    assert policy.name == "toy" and policy.gain == 0.5 and policy.stateful
    with pytest.raises(ValueError, match=r"has no option\(s\) \['steps'\]; it accepts \['checkpoint', 'gain'\]"):
        registry.make_backend("toy", robot, steps=3)
    with pytest.raises(KeyError, match="policy backend 'nothing' unknown"):
        registry.make_backend("nothing", robot)


def test_train_cli_dispatches_to_the_family_trainer(toy, tmp_path, monkeypatch):
    from vla_policy_node import train

    monkeypatch.setattr("vla_policy_node.data.dataset.load_dataset", lambda *a, **k: [toy_episode()])
    out = tmp_path / "ckpt"
    assert train.main(["--family", "toy", "--data", str(tmp_path), "--output", str(out), "--gain", "0.25"]) == 0
    assert json.loads((out / "config.json").read_text()) == {"backend": "toy", "format": 2, "gain": 0.25,
                                                              "episodes": 1}
    policy = registry.make_backend("auto", load_robot("metaworld_sawyer"), checkpoint=str(out))
    assert policy.name == "toy" and policy.gain == 0.25
    with pytest.raises(SystemExit, match="not trained here; families with a trainer: .*bc.*videovla"):
        train.main(["--family", "oracle", "--data", str(tmp_path), "--output", str(out)])


def test_offline_evaluation_feeds_a_stateful_backend_the_recorded_episode_in_order(toy):
    from vla_policy_node.evaluation.offline import OpenLoopEvaluator

    robot = load_robot("metaworld_sawyer")
    policy = registry.make_backend("toy", robot)
    evaluator = OpenLoopEvaluator(policy, robot, stride=8, batch=4, seed=0)
    episode = toy_episode()
    scores = evaluator.add(episode, keep_video=False)
    assert scores.done and sorted(scores.pred) == [0, 8, 16]
    # between queries the backend saw exactly the recorded actions, with the observation after them
    assert [u[1] for u in policy.updates] == pytest.approx([episode.stamps[8], episode.stamps[16]])
    np.testing.assert_allclose(policy.updates[0][0], episode.actions[0:8])
    np.testing.assert_allclose(policy.updates[1][0], episode.actions[8:16])
    np.testing.assert_allclose(scores.pred[16][0], episode.actions[:16].mean(0), atol=1e-6)
    record, _ = evaluator.score(scores)
    assert record.extra["chunks"] == 3


def test_policy_node_gives_executed_actions_and_the_observation_to_update_before_predicting(toy):
    import rclpy
    from rclpy.executors import SingleThreadedExecutor
    from rclpy.parameter import Parameter
    from vla_msgs.msg import ActionChunk, ExecutionFeedback, Observation

    from vla_policy_node.nodes.common import RELIABLE_QOS, SENSOR_QOS, image_msg, to_stamp
    from vla_policy_node.nodes.policy import PolicyNode

    os.environ["ROS_DOMAIN_ID"] = "58"
    context = rclpy.Context()
    rclpy.init(context=context)
    node = PolicyNode(context=context, parameter_overrides=[Parameter("backend", value="toy"),
                                                            Parameter("gain", value=2.0)])
    peer = rclpy.create_node("peer", context=context)
    executor = SingleThreadedExecutor(context=context)
    for n in (node, peer):
        executor.add_node(n)
    chunks = []
    peer.create_subscription(ActionChunk, "/vla/action_chunk", chunks.append, RELIABLE_QOS)
    obs_pub = peer.create_publisher(Observation, "/vla/observation", SENSOR_QOS)
    fb_pub = peer.create_publisher(ExecutionFeedback, "/vla/execution_feedback", RELIABLE_QOS)
    try:
        assert node.backend.gain == 2.0                                  # the declared option, as a parameter
        request = type("R", (), dict(task="drawer-open", instruction="open the drawer", seed=0, episode_id="e1"))()
        assert node.on_reset(request, type("S", (), {})()).success
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and not (obs_pub.get_subscription_count() and fb_pub.get_subscription_count()):
            executor.spin_once(timeout_sec=0.05)
        executed = np.array([[0.1, -0.2, 0.3, 1.0], [0.3, -0.2, 0.1, 1.0]])
        obs = Observation(seq=9, episode_id="e1", embodiment="metaworld_sawyer", instruction="open the drawer",
                          camera_names=["corner"], state=[0.0, 0.6, 0.2, 0.0])
        obs.header.stamp = to_stamp(3.0)
        obs.images = [image_msg(np.zeros((128, 128, 3), np.uint8), obs.header.stamp, "camera_corner")]
        fb = ExecutionFeedback(episode_id="e1", request_chunk=True, action_dim=4, executed_count=2,
                               executed_actions=executed.ravel().tolist())
        fb.request_after = to_stamp(3.0)
        deadline = time.monotonic() + 10
        fb_pub.publish(fb)
        while time.monotonic() < deadline and not chunks:
            obs_pub.publish(obs)
            executor.spin_once(timeout_sec=0.05)
        assert chunks, "no ActionChunk received"
        (update,) = node.backend.updates
        np.testing.assert_allclose(update[0], executed)
        assert update[1] == pytest.approx(3.0)                           # the observation the chunk answers
        expected = np.clip(2.0 * executed.mean(0), -1, 1)
        np.testing.assert_allclose(np.asarray(chunks[0].actions).reshape(-1, 4)[0], expected, atol=1e-6)
        assert node.backend.requests[0] == (None, None)                  # sync: nothing in flight
        # async: the executor's plan during inference reaches the backend as in_flight; only with
        # prefix_fixed (async_rtc) is it also the prefix the chunk must continue
        plan = np.array([[0.5, -0.5, 0.25, -0.25], [0.125, 0.0, 0.0, 1.0]])
        for i, fixed in enumerate((False, True)):
            stamp = 3.1 + 0.1 * i
            obs.header.stamp = to_stamp(stamp)
            fb = ExecutionFeedback(episode_id="e1", request_chunk=True, action_dim=4, prefix_fixed=fixed,
                                   leftover_normalized=plan.ravel().tolist())
            fb.request_after = to_stamp(stamp)
            fb_pub.publish(fb)
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline and len(chunks) < i + 2:
                obs_pub.publish(obs)
                executor.spin_once(timeout_sec=0.05)
            prefix, in_flight = node.backend.requests[-1]
            np.testing.assert_allclose(in_flight, plan, atol=1e-7)
            if fixed:
                np.testing.assert_allclose(prefix, plan, atol=1e-7)
            else:
                assert prefix is None
    finally:
        stop_in_process(node, peer, executor, context)
