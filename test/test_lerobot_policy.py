"""The `lerobot` backend: a policy directory LeRobot saved (here a small ACT built from the Sawyer's
features, normalized by LeRobot's own processors) loads by name or `auto`, predicts whole chunks in
physical units, refuses features the robot cannot feed by name, and drives the simulator through
the graph."""

import json

import numpy as np
import pytest
import torch
from conftest import record_episodes

from vla_policy_node.core.embodiment import load_robot
from vla_policy_node.lerobot_compat import prepare_lerobot
from vla_policy_node.models.backend import PolicyInput
from vla_policy_node.models.lerobot_policy import LeRobotFeatureError
from vla_policy_node.models.registry import make_backend

CHUNK = 8
ACTION_MEAN = np.array([0.1, -0.2, 0.3, 0.5])
ACTION_STD = np.array([0.5, 0.25, 0.4, 0.8])


def save_act(path, robot, image_key="observation.images.corner", image_shape=None):
    """A small ACT policy directory for `robot`, written by LeRobot's save_pretrained."""
    prepare_lerobot()
    from lerobot.configs.types import FeatureType, PolicyFeature
    from lerobot.policies.act.configuration_act import ACTConfig
    from lerobot.policies.act.modeling_act import ACTPolicy
    from lerobot.policies.factory import make_pre_post_processors

    cam = robot.config.cameras[0]
    state_dim, action_dim = len(robot.config.state.names), robot.config.action.dim
    inputs = {image_key: PolicyFeature(FeatureType.VISUAL, image_shape or (3, *cam.input_size)),
              "observation.state": PolicyFeature(FeatureType.STATE, (state_dim,))}
    config = ACTConfig(input_features=inputs, output_features={"action": PolicyFeature(FeatureType.ACTION,
                                                                                       (action_dim,))},
                       chunk_size=CHUNK, n_action_steps=CHUNK, dim_model=32, n_heads=2, dim_feedforward=64,
                       n_encoder_layers=1, n_decoder_layers=1, use_vae=False, pretrained_backbone_weights=None,
                       device="cpu")
    torch.manual_seed(0)
    policy = ACTPolicy(config)
    stats = {image_key: {"mean": np.full((3, 1, 1), 0.5), "std": np.full((3, 1, 1), 0.25)},
             "observation.state": {"mean": np.zeros(state_dim), "std": np.ones(state_dim)},
             "action": {"mean": ACTION_MEAN, "std": ACTION_STD}}
    pre, post = make_pre_post_processors(config, dataset_stats=stats)
    for part in (policy, pre, post):
        part.save_pretrained(path)
    return path


@pytest.fixture(scope="module")
def robot():
    return load_robot("metaworld_sawyer")


@pytest.fixture(scope="module")
def act_dir(tmp_path_factory, robot):
    return save_act(tmp_path_factory.mktemp("act"), robot)


def observation(robot, seed=0):
    rng = np.random.default_rng(seed)
    cam = robot.config.cameras[0]
    return PolicyInput(0.0, "press the button", {cam.name: rng.integers(0, 255, (*cam.input_size, 3), np.uint8)},
                       rng.normal(size=len(robot.config.state.names)))


def test_auto_loads_a_lerobot_directory_and_predicts_whole_chunks(act_dir, robot):
    policy = make_backend("auto", robot, checkpoint=str(act_dir))
    assert policy.name == "lerobot" and policy.chunk_length == CHUNK
    policy.reset("press the button", seed=0)
    out = policy.predict(observation(robot))
    assert out.actions.shape == (CHUNK, 4) and np.all(np.isfinite(out.actions))
    # LeRobot's own postprocessor unnormalized the chunk with the stats the directory carries
    np.testing.assert_allclose(out.actions, out.actions_normalized * ACTION_STD + ACTION_MEAN, rtol=1e-5, atol=1e-5)
    assert policy.describe()["policy_type"] == "act" and policy.describe()["parameters"] > 10_000


def test_the_backend_feeds_the_policy_what_lerobot_would(act_dir, robot):
    """Same chunk as calling the LeRobot policy by hand with a CHW float image in [0, 1]."""
    from lerobot.policies.act.modeling_act import ACTPolicy
    from lerobot.policies.factory import make_pre_post_processors

    policy = make_backend("lerobot", robot, checkpoint=str(act_dir))
    obs = observation(robot, seed=3)
    ours = policy.predict(obs).actions
    reference = ACTPolicy.from_pretrained(act_dir).eval()
    pre, post = make_pre_post_processors(reference.config, pretrained_path=str(act_dir))
    batch = {"observation.images.corner": torch.tensor(obs.images["corner"]).permute(2, 0, 1).float() / 255,
             "observation.state": torch.tensor(obs.state, dtype=torch.float32), "task": obs.instruction}
    with torch.no_grad():
        theirs = post(reference.predict_action_chunk(pre(batch)))[0].numpy()
    np.testing.assert_allclose(ours, theirs, rtol=1e-5, atol=1e-6)


def save_diffusion(path, robot):
    """A small Diffusion Policy directory (one observation, DDIM), written by LeRobot's save_pretrained."""
    prepare_lerobot()
    from lerobot.configs.types import FeatureType, PolicyFeature
    from lerobot.policies.diffusion.configuration_diffusion import DiffusionConfig
    from lerobot.policies.diffusion.modeling_diffusion import DiffusionPolicy
    from lerobot.policies.factory import make_pre_post_processors

    cam = robot.config.cameras[0]
    state_dim, action_dim = len(robot.config.state.names), robot.config.action.dim
    config = DiffusionConfig(
        input_features={"observation.images.corner": PolicyFeature(FeatureType.VISUAL, (3, *cam.input_size)),
                        "observation.state": PolicyFeature(FeatureType.STATE, (state_dim,))},
        output_features={"action": PolicyFeature(FeatureType.ACTION, (action_dim,))},
        n_obs_steps=1, horizon=16, n_action_steps=CHUNK, drop_n_last_frames=8, down_dims=(16, 32),
        resize_shape=(32, 32), crop_ratio=0.875, spatial_softmax_num_keypoints=8, diffusion_step_embed_dim=16,
        noise_scheduler_type="DDIM", num_inference_steps=3, device="cpu")
    torch.manual_seed(0)
    policy = DiffusionPolicy(config)
    stats = {"observation.images.corner": {"mean": np.full((3, 1, 1), 0.5), "std": np.full((3, 1, 1), 0.25)},
             "observation.state": {"min": -np.ones(state_dim), "max": np.ones(state_dim)},
             "action": {"min": -np.ones(action_dim), "max": np.ones(action_dim)}}
    pre, post = make_pre_post_processors(config, dataset_stats=stats)
    for part in (policy, pre, post):
        part.save_pretrained(path)
    return path


def test_a_diffusion_policy_gives_its_whole_queued_chunk(tmp_path, robot):
    """Diffusion Policy keeps observations and actions in queues and hands out one action a call;
    the backend returns the whole chunk it queued: the same actions, in order, that LeRobot's own
    select_action gives over n_action_steps calls from the same seed."""
    prepare_lerobot()
    from lerobot.policies.diffusion.modeling_diffusion import DiffusionPolicy
    from lerobot.policies.factory import make_pre_post_processors

    checkpoint = save_diffusion(tmp_path / "diffusion", robot)
    policy = make_backend("auto", robot, checkpoint=str(checkpoint))
    assert policy.name == "lerobot" and policy.chunk_length == CHUNK
    obs = observation(robot, seed=5)
    policy.reset("press the button", seed=7)
    ours = policy.predict(obs).actions
    again = policy.predict(obs).actions             # a new chunk each call, not the rest of the queue
    assert ours.shape == again.shape == (CHUNK, 4) and not np.allclose(ours, again)

    reference = DiffusionPolicy.from_pretrained(checkpoint).eval()
    pre, post = make_pre_post_processors(reference.config, pretrained_path=str(checkpoint))
    batch = {"observation.images.corner": torch.tensor(obs.images["corner"]).permute(2, 0, 1).float() / 255,
             "observation.state": torch.tensor(obs.state, dtype=torch.float32), "task": obs.instruction}
    reference.reset()
    torch.manual_seed(7)
    with torch.no_grad():
        theirs = np.stack([post(reference.select_action(pre(batch)))[0].numpy() for _ in range(CHUNK)])
    np.testing.assert_allclose(ours, theirs, rtol=1e-5, atol=1e-6)


def test_features_the_robot_cannot_feed_are_named(tmp_path, robot):
    wrist = save_act(tmp_path / "wrist", robot, image_key="observation.images.wrist")
    with pytest.raises(LeRobotFeatureError, match=r"'observation.images.wrist'.*no camera"):
        make_backend("lerobot", robot, checkpoint=str(wrist))
    big = save_act(tmp_path / "big", robot, image_shape=(3, 96, 96))
    with pytest.raises(LeRobotFeatureError, match=r"shape \(3, 96, 96\), camera 'corner' gives \(3, 128, 128\)"):
        make_backend("lerobot", robot, checkpoint=str(big))
    with pytest.raises(ValueError, match="not a LeRobot policy directory"):
        make_backend("lerobot", robot, checkpoint=str(tmp_path))
    config = json.loads((wrist / "config.json").read_text())
    assert config["type"] == "act"


def test_a_lerobot_policy_drives_the_simulator_through_the_graph(act_dir, tmp_path):
    """Six processes over DDS, the policy node serving the LeRobot policy: the episode runs to its
    step limit on the policy's commands (an untrained policy, so no success is expected)."""
    from vla_policy_node.data.bags import read_bag

    result = record_episodes(tmp_path, 74, "[button-press]", "[100]", 24, backend="lerobot",
                             checkpoint=str(act_dir), mode="sync")
    report = json.loads((tmp_path / "report.json").read_text())
    assert report["policy"]["backend"] == "lerobot" and report["episodes"][0]["steps"] == 24
    chunks = [m for topic, _, _, m in read_bag(tmp_path / "bags" / "button-press_s100")
              if topic == "/vla/action_chunk"]
    assert chunks and all(c.backend == "lerobot" and c.horizon == CHUNK and len(c.actions) == CHUNK * 4
                          and np.all(np.isfinite(c.actions)) for c in chunks)
    assert result["processes"]["policy"]["exit_code"] in (0, None)


@pytest.mark.slow
def test_a_lerobot_policy_trained_on_panda_bags_runs_a_task_on_the_bringup_graph(tmp_path):
    """The path of a user with a Franka: reach bags recorded through the ros2_control graph, exported
    as a LeRobotDataset, LeRobot's own training entry point (ACT, a few steps: the path, not a
    skill), and the checkpoint served by `auto` in the panda_bringup graph, run by `vla-task` as an
    operator does. The LeRobot policy's chunks reach the arm and every command stays inside the
    URDF joint limits."""
    import threading

    from conftest import record_panda_episodes, train_tiny_act
    from test_task_runner import FEEDBACK, result_of, vla_task, wait_until_active

    from vla_policy_node.data import cli
    from vla_policy_node.data.bags import read_bag
    from vla_policy_node.evaluation.command_limits import commands_outside_limits
    from vla_policy_node.graph_runner import run_graph

    robot = load_robot("panda_ros2_control")
    bags, dataset = tmp_path / "bags", tmp_path / "lerobot"
    record_panda_episodes(bags, 75, "[3,4]", 30)
    assert cli.main(["export-lerobot", str(bags), "--robot", "panda_ros2_control", "--out", str(dataset),
                     "--include-failed", "--images"]) == 0
    checkpoint = train_tiny_act(dataset, tmp_path / "act", "local/panda", chunk=16)
    env = {"ROS_DOMAIN_ID": "76", "ROS_AUTOMATIC_DISCOVERY_RANGE": "LOCALHOST"}
    command_topic = "/" + robot.config.output.command_topic
    overrides = {"policy": {"backend": "auto", "checkpoint": str(checkpoint)},
                 "task_runner": {"record_dir": str(tmp_path / "tasks"),
                                 "record_topics": f"[/clock,joint_states,vla/action_chunk,{command_topic}]"}}
    stop, result = threading.Event(), {}
    runner = threading.Thread(target=lambda: result.update(
        run_graph("panda_bringup", overrides, tmp_path / "logs", env=env, stop=stop, timeout_s=600)))
    runner.start()
    try:
        wait_until_active(env)
        task = vla_task(env, "reach the red target", "--arm", "--timeout", "10")
    finally:
        stop.set()
        runner.join(60)
    assert result.get("error") is None, result.get("error")
    assert task.returncode in (0, 1), task.stdout + task.stderr        # 1: the task ended without success
    ended = result_of(task.stdout)
    assert ended["reason"] in ("success", "timeout") and int(ended["steps"]) > 20, task.stdout
    assert any(m and m["phase"] == "armed" and int(m["chunks"]) > 0
               for m in map(FEEDBACK.match, task.stdout.splitlines())), task.stdout
    bag = tmp_path / "tasks" / ended["id"]
    chunks = [m for _, _, _, m in read_bag(bag, topics=["/vla/action_chunk"])]
    assert chunks and all(c.backend == "lerobot" and c.horizon == 16 for c in chunks)
    commands, outside = commands_outside_limits(bag, robot)
    assert commands > 20 and outside == 0
