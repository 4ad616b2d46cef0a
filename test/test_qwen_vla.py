"""Qwen-VLA model core: the embodiment prompt from each robot file, Qwen2-VL patches, the unified
padded action tensor and its mask (unused channels never reach the loss or the robot), refusal of
robot files a checkpoint has no channels or statistics for, checkpoint round trip; a slow suite
trains over both embodiments and drives both simulated robots through their graphs."""

import json
import shutil

import numpy as np
import pytest
import torch
import yaml
from conftest import ROOT, record_episodes, record_panda_episodes, tiny_qwen_checkpoint

from vla_policy_node.core.embodiment import load_robot
from vla_policy_node.evaluation.command_limits import commands_outside_limits
from vla_policy_node.models.backend import PolicyInput
from vla_policy_node.models.checkpoint import CheckpointError
from vla_policy_node.models.qwen_vla.modeling_qwen_vla import masked_flow_loss, views_to_patches
from vla_policy_node.models.qwen_vla.policy_qwen_vla import from_unified, to_unified
from vla_policy_node.models.registry import make_backend


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    return tiny_qwen_checkpoint(tmp_path_factory.mktemp("qwen_vla"))


def observation(robot, seed=0, instruction="reach the red target"):
    rng = np.random.default_rng(seed)
    images = {c.name: rng.integers(0, 255, (*c.input_size[::-1], 3), dtype=np.uint8) for c in robot.config.cameras}
    return PolicyInput(0.0, instruction, images, rng.uniform(-0.5, 0.5, len(robot.config.state.names)))


def test_the_prompt_is_rendered_from_each_shipped_robot_file(checkpoint):
    for path in sorted((ROOT / "config" / "robots").glob("*.yaml")):
        raw = yaml.safe_load(path.read_text())
        if "prompt" not in raw:
            continue                                  # statistics files
        robot = load_robot(path.stem)
        prompt = robot.config.render_prompt("open the drawer")
        assert prompt == (f"The robot is {raw['robot_tag']} with {raw['arms']}. The control frequency is "
                          f"{raw['action']['control_rate_hz']:g} Hz. Please predict the next {raw['action']['horizon']} "
                          f"control actions to execute the following task: open the drawer."), path
    for name, camera in (("metaworld_sawyer", "corner"), ("panda_ros2_control", "scene"), ("panda_isaac", "scene")):
        policy = make_backend("qwen_vla", load_robot(name), checkpoint=str(checkpoint))
        horizon = policy.pipeline.config.embodiments[policy.embodiment_name]["horizon"]   # the chunk it learned
        assert policy.prompt("x") == load_robot(name).config.render_prompt("x", chunk_size=horizon)
        ids = policy.pipeline.tokenizer.ids(policy.prompt("x"), tuple(policy.cameras))
        text = policy.pipeline.tokenizer.tokenizer.decode(ids)
        assert text.startswith(f"{camera} : <|vision_start|>") and text.count("<|image_pad|>") == 4, text
        assert "control frequency is 80 hz" in text if name == "metaworld_sawyer" else "is 50 hz" in text


def test_views_become_the_patches_qwen2vl_image_processor_gives():
    from transformers import Qwen2VLImageProcessorPil

    frames = torch.randint(0, 256, (3, 56, 56, 3), dtype=torch.uint8)
    pixel_values, grid = views_to_patches(frames, 14, 2, 2)
    reference = Qwen2VLImageProcessorPil(do_resize=False)(images=[f.numpy() for f in frames], return_tensors="pt")
    assert torch.equal(grid, reference["image_grid_thw"])
    assert torch.allclose(pixel_values, reference["pixel_values"].float(), atol=1e-5)


def test_padding_round_trips_and_the_mask_keeps_unused_entries_out_of_the_loss():
    rng = np.random.default_rng(0)
    actions = rng.uniform(-1, 1, (2, 8, 4)).astype(np.float32)
    y, mask = to_unified(actions, [0, 1, 2, 6], 32, 16)
    assert np.array_equal(from_unified(y, [0, 1, 2, 6], 8), actions)
    assert mask.sum() == 2 * 8 * 4 and np.all(y[mask == 0] == 0)
    target = torch.from_numpy(y)
    velocity = torch.randn(2, 16, 32, requires_grad=True)
    m = torch.from_numpy(mask)
    loss = masked_flow_loss(velocity, target, m)
    loss.backward()
    assert torch.all(velocity.grad[m == 0] == 0) and torch.all(velocity.grad[m == 1] != 0)
    wild = velocity.detach() + 1e3 * (1 - m)                 # anything at padded entries
    assert torch.allclose(masked_flow_loss(wild, target, m), loss.detach())
    # Eq. 2: each active channel counts the same, whatever the robot's channel count
    one_channel = torch.zeros(1, 16, 32)
    one_channel[0, :8, 7] = 1
    assert torch.allclose(masked_flow_loss(torch.ones(1, 16, 32), torch.zeros(1, 16, 32), one_channel), torch.tensor(1.0))


def test_only_the_robots_rows_and_channels_reach_it(checkpoint):
    for name, shape in (("metaworld_sawyer", (8, 4)), ("panda_ros2_control", (16, 7))):
        robot = load_robot(name)
        policy = make_backend("qwen_vla", robot, checkpoint=str(checkpoint))
        policy.reset("reach the red target", seed=3)
        obs = observation(robot)
        out = policy.predict(obs)
        assert out.actions.shape == shape and out.actions_normalized.shape == shape
        policy.reset("reach the red target", seed=3)
        emb = policy.pipeline.config.embodiments[name]
        full = policy.pipeline(policy.camera_input(obs)[None], [policy.prompt(obs.instruction)], name, obs.state[None],
                               generator=policy.observation_generator(obs.stamp))
        assert np.array_equal(out.actions_normalized, np.clip(full["unified"][0, : shape[0]][:, emb["channels"]], -1, 1))
        lo, hi = (np.asarray(robot.action_stats[k]) for k in ("q01", "q99"))
        assert np.all(out.actions >= lo - 1e-6) and np.all(out.actions <= hi + 1e-6)
        other = policy.predict(observation(robot, seed=1))
        assert not np.allclose(other.actions, out.actions)        # the views condition the chunk


def test_a_robot_file_the_checkpoint_has_no_channels_or_statistics_for_is_refused(checkpoint, tmp_path):
    source = yaml.safe_load((ROOT / "config" / "robots" / "metaworld_sawyer.yaml").read_text())
    source["action"]["unified"]["channels"] = [0, 1, 2, 5]
    bad = tmp_path / "sawyer_other_channels.yaml"
    bad.write_text(yaml.safe_dump(source))
    with pytest.raises(CheckpointError) as err:
        make_backend("qwen_vla", load_robot(str(bad)), checkpoint=str(checkpoint))
    message = str(err.value)
    assert str(bad) in message and "action.unified.channels [0, 1, 2, 5]" in message and str(checkpoint) in message
    sawyer_only = tiny_qwen_checkpoint(tmp_path / "sawyer_only", robots=("metaworld_sawyer",))
    with pytest.raises(CheckpointError, match="panda_ros2_control.yaml: action.unified.channels"):
        make_backend("qwen_vla", load_robot("panda_ros2_control"), checkpoint=str(sawyer_only))
    broken = tmp_path / "no_stats"
    shutil.copytree(checkpoint, broken)
    stats = json.loads((broken / "normalization.json").read_text())
    del stats["embodiments"]["panda_ros2_control"]
    (broken / "normalization.json").write_text(json.dumps(stats))
    with pytest.raises(CheckpointError, match="normalization.json"):
        make_backend("qwen_vla", load_robot("panda_ros2_control"), checkpoint=str(broken))


def test_relative_actions_are_the_motion_from_the_state_the_chunk_starts_at(checkpoint, tmp_path):
    """The same network and statistics, the Panda's actions learned relative to its joint positions: its
    joint targets are the absolute checkpoint's plus the state; the Sawyer's (ee_delta) are unchanged."""
    relative = tiny_qwen_checkpoint(tmp_path / "relative", relative=("panda_ros2_control",))
    for name, shifted in (("panda_ros2_control", True), ("metaworld_sawyer", False)):
        robot = load_robot(name)
        absolute_policy = make_backend("qwen_vla", robot, checkpoint=str(checkpoint))
        relative_policy = make_backend("qwen_vla", robot, checkpoint=str(relative))
        obs = observation(robot, seed=3)
        for policy in (absolute_policy, relative_policy):
            policy.reset("reach the red target", seed=1)
        a, r = absolute_policy.predict(obs), relative_policy.predict(obs)
        assert np.allclose(r.actions_normalized, a.actions_normalized)
        expected = a.actions + obs.state[None, :] if shifted else a.actions
        assert np.allclose(r.actions, expected, atol=1e-6), name
        assert relative_policy.supports_prefix is (not shifted)
    with pytest.raises(CheckpointError, match="relative actions need action.space joint_position"):
        tiny_qwen_checkpoint(tmp_path / "bad", relative=("metaworld_sawyer",))


def test_checkpoint_round_trip_serves_the_same_chunks_and_keeps_a_prefix(checkpoint, tmp_path):
    robot = load_robot("panda_ros2_control")
    first = make_backend("qwen_vla", robot, checkpoint=str(checkpoint))
    copy = tmp_path / "copy"
    first.pipeline.save_pretrained(copy)
    second = make_backend("qwen_vla", robot, checkpoint=str(copy))
    obs = observation(robot)
    for policy in (first, second):
        policy.reset("reach the red target", seed=5)
    a, b = first.predict(obs), second.predict(obs)
    assert np.array_equal(a.actions, b.actions)
    prefix = a.actions_normalized[:4] * 0.5
    kept = first.predict(obs, prefix=prefix)
    assert np.allclose(kept.actions_normalized[:4], prefix, atol=1e-6)
    batch = first.predict_batch([obs, observation(robot, seed=2)])
    assert len(batch) == 2 and batch[0].actions.shape == (16, 7)


def test_per_embodiment_heads_keep_each_robot_to_its_own_projection(tmp_path):
    ckpt = tiny_qwen_checkpoint(tmp_path / "heads", action_projection="per_embodiment")
    robot = load_robot("metaworld_sawyer")
    policy = make_backend("qwen_vla", robot, checkpoint=str(ckpt))
    expert = policy.pipeline.action_expert
    assert len(expert.action_in) == 2 and expert.action_in[0].in_features == 4 and expert.action_in[1].in_features == 7
    obs = observation(robot)
    policy.reset("press the button", seed=1)
    before = policy.predict(obs).actions
    with torch.no_grad():                                   # the Panda's head: no effect on the Sawyer's chunk
        panda = expert.per_embodiment.index("panda_ros2_control")
        expert.action_in[panda].weight.add_(1.0)
        expert.action_out[panda].weight.add_(1.0)
    policy.reset("press the button", seed=1)
    assert np.array_equal(policy.predict(obs).actions, before)


@pytest.mark.slow
def test_a_training_run_over_both_robots_lowers_the_loss_and_serves_both(tmp_path_factory):
    from vla_policy_node.train import main as train_main

    sawyer, panda = tmp_path_factory.mktemp("sawyer_demos"), tmp_path_factory.mktemp("panda_demos")
    record_episodes(sawyer, 91, "[button-press]", "[3]", 40)
    record_panda_episodes(panda, 92, "[3]", 60)
    ckpt = tmp_path_factory.mktemp("qwen_vla_ckpt")
    args = ["--family", "qwen_vla", "--data", str(sawyer), "--also", f"panda_ros2_control={panda}",
            "--output", str(ckpt), "--image-size", "56", "--hidden-size", "32", "--num-layers", "1",
            "--vision-depth", "1", "--expert-width", "32", "--expert-layers", "2", "--batch-size", "16",
            "--include-failed", "--save-every", "100000", "--steps", "200", "--lr", "2e-3", "--proprio"]
    assert train_main(args) == 0
    log = json.loads((ckpt / "training_log.json").read_text())
    first, last = log[0]["loss"], np.mean([r["loss"] for r in log[-2:]])
    assert last < 0.6 * first, (first, last)
    config = json.loads((ckpt / "config.json").read_text())
    assert sorted(config["policy"]["embodiments"]) == ["metaworld_sawyer", "panda_ros2_control"]
    for name, shape in (("metaworld_sawyer", (8, 4)), ("panda_ros2_control", (16, 7))):
        robot = load_robot(name)
        policy = make_backend("auto", robot, checkpoint=str(ckpt))
        policy.reset("reach the red target", seed=0)
        out = policy.predict(observation(robot))
        assert out.actions.shape == shape and np.all(np.isfinite(out.actions))

    # a second stage (--init-from) at learning rate 0 exports the first stage's networks bit for bit
    from safetensors.torch import load_file
    second = tmp_path_factory.mktemp("qwen_vla_stage2")
    stage2 = list(args)
    del stage2[stage2.index("--output"):stage2.index("--output") + 2]
    stage2[stage2.index("--steps") + 1] = "3"
    stage2[stage2.index("--lr") + 1] = "0.0"
    assert train_main([*stage2, "--output", str(second), "--init-from", str(ckpt)]) == 0
    for part in ("backbone/model.safetensors", "action_expert/diffusion_pytorch_model.safetensors"):
        before, after = load_file(ckpt / part), load_file(second / part)
        assert before.keys() == after.keys() and all(torch.equal(before[k], after[k]) for k in before), part
    record = json.loads((second / "config.json").read_text())["training"]
    assert record["init_from"] == str(ckpt) and record["init_steps"] == 200 and record["steps"] == 3
    # another network, or other demonstrations, is refused naming what differs
    wider = [*stage2, "--output", str(tmp_path_factory.mktemp("c")), "--init-from", str(ckpt)]
    wider[wider.index("--expert-width") + 1] = "48"
    with pytest.raises(SystemExit, match=r"policy\.expert_width is 32, this run builds 48"):
        train_main(wider)
    sawyer_only = [a for a in stage2 if a != f"panda_ros2_control={panda}" and a != "--also"]
    with pytest.raises(SystemExit, match="policy.embodiments"):
        train_main([*sawyer_only, "--output", str(tmp_path_factory.mktemp("d")), "--init-from", str(ckpt)])

    # a stage on other Panda demonstrations normalizes with the source's statistics, or with its own
    # for the robots it renormalizes (and only those)
    other_panda = tmp_path_factory.mktemp("panda_demos_other")
    record_panda_episodes(other_panda, 92, "[7]", 60)
    on_other = [a.replace(str(panda), str(other_panda)) for a in stage2]
    kept, renormalized = tmp_path_factory.mktemp("kept"), tmp_path_factory.mktemp("renormalized")
    assert train_main([*on_other, "--output", str(kept), "--init-from", str(ckpt)]) == 0
    assert (kept / "normalization.json").read_bytes() == (ckpt / "normalization.json").read_bytes()
    assert train_main([*on_other, "--output", str(renormalized), "--init-from", str(ckpt),
                       "--renormalize", "panda_ros2_control"]) == 0
    source, own = (json.loads((d / "normalization.json").read_text())["embodiments"] for d in (ckpt, renormalized))
    assert own["metaworld_sawyer"] == source["metaworld_sawyer"]
    assert own["panda_ros2_control"]["state"]["q99"] != source["panda_ros2_control"]["state"]["q99"]
    assert json.loads((renormalized / "config.json").read_text())["training"]["renormalized"] == ["panda_ros2_control"]
    with pytest.raises(SystemExit, match="--renormalize panda_ros2_control: only with --init-from"):
        train_main([*on_other, "--output", str(tmp_path_factory.mktemp("e")), "--renormalize", "panda_ros2_control"])
    with pytest.raises(SystemExit, match=r"--renormalize ur5: no robot \['ur5'\]"):
        train_main([*on_other, "--output", str(tmp_path_factory.mktemp("f")), "--init-from", str(ckpt),
                    "--renormalize", "ur5"])

    # the Panda's actions learned relative to its joint positions: statistics of the motion, computed anew
    with pytest.raises(SystemExit, match="panda_ros2_control's actions were absolute, this run's are relative: "
                                         "add --renormalize panda_ros2_control"):
        train_main([*on_other, "--output", str(tmp_path_factory.mktemp("g")), "--init-from", str(ckpt),
                    "--relative-actions", "panda_ros2_control"])
    relative = tmp_path_factory.mktemp("relative")
    assert train_main([*on_other, "--output", str(relative), "--init-from", str(ckpt), "--renormalize",
                       "panda_ros2_control", "--relative-actions", "panda_ros2_control"]) == 0
    entries = json.loads((relative / "config.json").read_text())["policy"]["embodiments"]
    assert entries["panda_ros2_control"]["relative_actions"] and not entries["metaworld_sawyer"]["relative_actions"]
    motion = json.loads((relative / "normalization.json").read_text())["embodiments"]["panda_ros2_control"]["action"]
    poses = own["panda_ros2_control"]["action"]                  # the same demonstrations, absolute
    assert motion != poses
    # served: each joint target is the state plus a motion within the statistics' range
    policy = make_backend("auto", load_robot("panda_ros2_control"), checkpoint=str(relative))
    policy.reset("reach the red target", seed=0)
    obs = observation(load_robot("panda_ros2_control"))
    moved = policy.predict(obs).actions - obs.state
    assert np.all(moved >= np.array(motion["q01"]) - 1e-6) and np.all(moved <= np.array(motion["q99"]) + 1e-6)


SHIPPED = ROOT / "checkpoints" / "qwen_vla_sawyer_panda"


@pytest.mark.slow
def test_the_shipped_checkpoint_drives_the_sawyer_through_the_graph(tmp_path):
    """One checkpoint, robot file metaworld_sawyer: a held-out episode in lockstep, every chunk from
    qwen_vla, every command within the action limits, the hand moved by it (success rates are the
    leaderboard's business, not a test's: one episode cannot tell them)."""
    from vla_policy_node.data.bags import read_bag

    record_episodes(tmp_path, 93, "[button-press]", "[111]", 60, backend="auto", checkpoint=str(SHIPPED))
    report = json.loads((tmp_path / "report.json").read_text())
    episode, = report["episodes"]
    assert report["policy"]["backend"] == "qwen_vla" and episode["steps"] >= 30, episode
    hand, commands = [], []
    for topic, _, _, m in read_bag(tmp_path / "bags" / "button-press_s111"):
        if topic == "/vla/sim/command":
            commands.append(np.asarray(m.values))
        elif topic == "/vla/sim/ee_pose":
            hand.append([m.pose.position.x, m.pose.position.y, m.pose.position.z])
    assert len(commands) >= 30 and all(np.all(np.abs(c) <= 1.0) for c in commands)
    assert np.linalg.norm(np.subtract(hand[-1], hand[0])) > 0.02        # the hand moved at least 2 cm


@pytest.mark.slow
@pytest.mark.parametrize("contract, domain", [("ros2_control", 94), ("isaac", 95)])
def test_the_same_checkpoint_drives_the_panda_over_both_joint_contracts(tmp_path, contract, domain):
    """The same checkpoint, robot files panda_ros2_control / panda_isaac: a held-out reach from pixels
    and joint states (env_state never reaches it); every command within the URDF joint limits and
    the flange moved by it."""
    import os

    from vla_policy_node.data.bags import read_bag
    from vla_policy_node.graph_runner import run_graph

    os.environ["ROS_DOMAIN_ID"] = str(domain)
    result = run_graph(f"arm_{contract}", {"policy": {"backend": "qwen_vla", "checkpoint": str(SHIPPED)},
                                           "evaluator": {"seeds": "[130]", "max_steps": "60",
                                                         "output_dir": str(tmp_path)}},
                       tmp_path / "logs", timeout_s=240)
    assert result["error"] is None, result["error"]
    report = json.loads((tmp_path / "report.json").read_text())
    episode, = report["episodes"]
    assert report["policy"]["backend"] == "qwen_vla" and episode["steps"] >= 50, episode
    bag = tmp_path / "bags" / "reach_s130"
    commands, outside = commands_outside_limits(bag, load_robot(f"panda_{contract}"))
    assert commands >= 50 and outside == 0
    flange = [[m.pose.position.x, m.pose.position.y, m.pose.position.z]
              for _, _, _, m in read_bag(bag, topics=["/vla/sim/ee_pose"])]
    assert np.linalg.norm(np.subtract(flange[-1], flange[0])) > 0.02
