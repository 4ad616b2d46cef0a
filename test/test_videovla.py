"""VideoVLA model core: shapes, determinism, prefix inpainting, checkpoint round trip, loud failures."""

import argparse
import json

import numpy as np
import pytest
import torch
from conftest import tiny_videovla_checkpoint

from vla_policy_node.core.embodiment import load_robot
from vla_policy_node.models.backend import PolicyInput
from vla_policy_node.models.registry import make_backend
from vla_policy_node.models.checkpoint import CheckpointError
from vla_policy_node.models.components.diffusion import TrainingNoise, make_scheduler
from vla_policy_node.models.videovla import VideoVLAConfig
from vla_policy_node.models.videovla.modeling_videovla import (VideoVLATransformer, patchify, sample, training_loss,
                                                               unpatchify)
from vla_policy_node.models.videovla.training_videovla import VideoVLATrainer

TINY = dict(hidden_size=32, num_layers=2, num_heads=2, image_size=32, latent_size=4)


def network(cfg):
    return VideoVLATransformer(**cfg.transformer_config())


def inputs(cfg, b=2, seed=0):
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(b, cfg.text_tokens, cfg.text_dim, generator=g),
            torch.randn(b, cfg.latent_channels, cfg.latent_size, cfg.latent_size, generator=g),
            torch.randn(b, cfg.state_dim, generator=g))


@pytest.mark.parametrize("objective", ["ddpm", "flow"])
def test_denoiser_shapes_and_determinism(objective):
    torch.manual_seed(0)
    cfg = VideoVLAConfig(objective=objective, **TINY)
    model = network(cfg).eval()
    scheduler = make_scheduler(objective)
    text, v1, state = inputs(cfg)
    fut, act = sample(model, scheduler, text, v1, state, 3, generator=torch.Generator().manual_seed(1))
    assert fut.shape == (2, cfg.num_future, cfg.latent_channels, cfg.latent_size, cfg.latent_size)
    assert act.shape == (2, cfg.horizon, cfg.action_dim) and torch.isfinite(act).all()
    fut2, act2 = sample(model, scheduler, text, v1, state, 3, generator=torch.Generator().manual_seed(1))
    assert torch.equal(act, act2) and torch.equal(fut, fut2)
    _, act3 = sample(model, scheduler, text, v1, state, 3, generator=torch.Generator().manual_seed(2))
    assert not torch.equal(act, act3)


@pytest.mark.parametrize("action_sees_video", [True, False])
def test_action_sees_video_decides_what_the_actions_attend_to(action_sees_video):
    """Joint attention (the paper): the action prediction depends on the noised future latents.
    Hidden future: it does not, while the future prediction still depends on the actions."""
    torch.manual_seed(0)
    cfg = VideoVLAConfig(action_sees_video=action_sees_video, **TINY)
    model = network(cfg).eval()
    for param in model.parameters():      # zero-initialised output layers would hide any dependence
        param.data.normal_(0.0, 0.2)
    text, v1, state = inputs(cfg)
    g = torch.Generator().manual_seed(3)
    shape = (2, cfg.num_future, cfg.latent_channels, cfg.latent_size, cfg.latent_size)
    fut_a, fut_b = torch.randn(shape, generator=g), torch.randn(shape, generator=g)
    actions, t = torch.randn(2, cfg.horizon, cfg.action_dim, generator=g), torch.tensor([500, 20])
    with torch.no_grad():
        _, act_a = model(text, v1, fut_a, actions, state, t)
        _, act_b = model(text, v1, fut_b, actions, state, t)
        pred_1, _ = model(text, v1, fut_a, actions, state, t)
        pred_2, _ = model(text, v1, fut_a, actions + 1.0, state, t)
    assert torch.equal(act_a, act_b) != action_sees_video
    assert not torch.allclose(pred_1, pred_2)


def test_patchify_round_trip():
    x = torch.randn(2, 3, 4, 8, 8)
    tokens = patchify(x, 2)
    assert tokens.shape == (2, 3 * 16, 16)
    assert torch.equal(unpatchify(tokens, 3, 4, 8, 2), x)


@pytest.mark.parametrize("objective", ["ddpm", "flow"])
def test_prefix_inpainting_returns_prefix_exactly_and_conditions_the_rest(objective):
    torch.manual_seed(0)
    cfg = VideoVLAConfig(objective=objective, **TINY)
    model = network(cfg).eval()
    for p in model.action_out.parameters():         # a non-trivial action head
        torch.nn.init.normal_(p, std=0.5)
    scheduler = make_scheduler(objective)
    text, v1, state = inputs(cfg, b=1)
    prefix = torch.linspace(-0.9, 0.9, 3 * cfg.action_dim).reshape(1, 3, cfg.action_dim)
    _, act = sample(model, scheduler, text, v1, state, 5, prefix=prefix, generator=torch.Generator().manual_seed(3))
    assert torch.equal(act[:, :3], prefix)
    _, free = sample(model, scheduler, text, v1, state, 5, generator=torch.Generator().manual_seed(3))
    assert not torch.allclose(free[:, 3:], act[:, 3:])  # the prefix changed what follows


def test_training_step_lowers_loss_on_a_fixed_batch():
    torch.manual_seed(0)
    cfg = VideoVLAConfig(**TINY)
    model = network(cfg)
    noise = TrainingNoise(cfg.objective)
    text, v1, state = inputs(cfg, b=8)
    future = torch.randn(8, cfg.num_future, cfg.latent_channels, cfg.latent_size, cfg.latent_size)
    actions = torch.randn(8, cfg.horizon, cfg.action_dim).clamp(-1, 1)
    mask = torch.ones(8, cfg.horizon)
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    losses = []
    for step in range(60):
        out = training_loss(model, noise, text, v1, future, actions, mask, state,
                            generator=torch.Generator().manual_seed(0))
        opt.zero_grad()
        out["loss"].backward()
        opt.step()
        losses.append(out["loss"].item())
    assert np.mean(losses[-5:]) < 0.5 * np.mean(losses[:5])


@pytest.mark.parametrize("weight", [0.0, 0.5])   # 0: the paper's "no video loss" ablation
def test_video_loss_weight_scales_the_video_term(weight):
    cfg = VideoVLAConfig(video_loss_weight=weight, **TINY)
    model = network(cfg)
    text, v1, state = inputs(cfg, b=4)
    future = torch.randn(4, cfg.num_future, cfg.latent_channels, cfg.latent_size, cfg.latent_size)
    out = training_loss(model, TrainingNoise("ddpm"), text, v1, future, torch.zeros(4, cfg.horizon, 4),
                        torch.ones(4, cfg.horizon), state, video_loss_weight=cfg.video_loss_weight)
    assert torch.allclose(out["loss"], out["action_loss"] + weight * out["video_loss"]) and out["video_loss"] > 0


def test_video_loss_weight_reaches_the_config_from_the_command_line():
    from vla_policy_node.models.components import training

    parser = argparse.ArgumentParser()
    training.add_arguments(parser)
    VideoVLATrainer.add_arguments(parser)
    robot = load_robot("metaworld_sawyer")
    # the chunk length: the robot file's by default, --chunk-length otherwise
    assert VideoVLATrainer().make_config(parser.parse_args([]), robot).horizon == robot.config.action.horizon
    assert VideoVLATrainer().make_config(parser.parse_args(["--chunk-length", "8"]), robot).horizon == 8
    assert VideoVLATrainer().make_config(parser.parse_args(["--video-loss-weight", "0.25"]), robot).video_loss_weight == 0.25
    assert VideoVLATrainer().make_config(parser.parse_args([]), robot).video_loss_weight == 1.0
    assert VideoVLATrainer().make_config(parser.parse_args(["--no-video-loss"]), robot).video_loss_weight == 0.0
    with pytest.raises(ValueError, match="video_loss_weight: -0.5"):
        VideoVLAConfig(video_loss_weight=-0.5)


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    return tiny_videovla_checkpoint(tmp_path_factory.mktemp("ckpt"), action_head_std=0.3)


def observation(seed=0):
    rng = np.random.default_rng(seed)
    frame = rng.integers(0, 255, size=(128, 128, 3), dtype=np.uint8)
    return PolicyInput(0.0, "open the drawer", {"corner": frame}, np.array([0.0, 0.6, 0.2, 0.0]))


def test_save_load_round_trip_gives_identical_outputs(checkpoint):
    robot = load_robot("metaworld_sawyer")
    outs = []
    for _ in range(2):
        policy = make_backend("auto", robot, checkpoint=str(checkpoint))   # backend read from config.json
        assert policy.name == "videovla"
        policy.reset("open the drawer", seed=4)
        outs.append(policy.predict(observation()))
    np.testing.assert_array_equal(outs[0].actions, outs[1].actions)
    assert outs[0].actions.shape == (8, 4) and np.abs(outs[0].actions_normalized).max() <= 1.0
    assert not np.allclose(outs[0].actions, outs[0].actions[0])        # a real, varying chunk


def test_imagined_frames_decoded_only_when_asked(checkpoint):
    robot = load_robot("metaworld_sawyer")
    plain = make_backend("videovla", robot, checkpoint=str(checkpoint))
    plain.reset("x", seed=0)
    assert plain.predict(observation()).imagined_frames is None
    seeing = make_backend("videovla", robot, checkpoint=str(checkpoint), decode_imagined=True)
    seeing.reset("x", seed=0)
    frames = seeing.predict(observation()).imagined_frames["corner"]
    assert frames.shape == (2, 32, 32, 3) and frames.dtype == np.uint8


def test_prefix_kept_by_backend(checkpoint):
    policy = make_backend("videovla", load_robot("metaworld_sawyer"), checkpoint=str(checkpoint))
    policy.reset("x", seed=0)
    prefix = np.array([[0.5, -0.5, 0.25, 1.0], [0.4, -0.4, 0.2, 1.0]])
    out = policy.predict(observation(), prefix=prefix)
    np.testing.assert_allclose(out.actions_normalized[:2], prefix, atol=1e-6)


def test_missing_statistics_fail_loudly(checkpoint, tmp_path):
    import shutil
    broken = tmp_path / "ckpt"
    shutil.copytree(checkpoint, broken)
    (broken / "normalization.json").unlink()
    with pytest.raises(CheckpointError, match="normalization.json: missing"):
        make_backend("videovla", load_robot("metaworld_sawyer"), checkpoint=str(broken))
    data = json.loads((checkpoint / "normalization.json").read_text())
    data["action"]["q99"] = [1.0, 1.0]
    (broken / "normalization.json").write_text(json.dumps(data))
    with pytest.raises(CheckpointError, match=r"action.q99 has shape \(2,\)"):
        make_backend("videovla", load_robot("metaworld_sawyer"), checkpoint=str(broken))


def test_checkpoint_for_other_actions_refused(checkpoint, tmp_path):
    import shutil
    other = tmp_path / "other"
    shutil.copytree(checkpoint, other)
    cfg = json.loads((other / "config.json").read_text())
    cfg["action_names"] = ["a", "b", "c", "d"]
    (other / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(CheckpointError, match="trained for actions"):
        make_backend("videovla", load_robot("metaworld_sawyer"), checkpoint=str(other))


def test_sampling_noise_follows_the_episode_seed_and_the_observation_time():
    """One observation asked twice gives one chunk (a re-sent request changes nothing later in a
    lockstep run); another time or another episode seed gives another sample; the time counts from
    the episode's first observation, so an episode samples alike whenever it runs."""
    robot = load_robot("metaworld_sawyer")
    policy = make_backend("videovla", robot, checkpoint="checkpoints/videovla_metaworld")
    frame = np.full((64, 64, 3), 90, np.uint8)
    state = np.array([0.0, 0.6, 0.2, 0.5])
    obs, later = (PolicyInput(t, "press the button", {"corner": frame}, state) for t in (1.0, 1.0125))
    policy.reset("press the button", seed=3)
    first = policy.predict(obs).actions
    policy.predict(later)
    np.testing.assert_array_equal(policy.predict(obs).actions, first)
    assert not np.array_equal(policy.predict(later).actions, first)
    policy.reset("press the button", seed=4)
    assert not np.array_equal(policy.predict(obs).actions, first)
    policy.reset("press the button", seed=3)            # the same episode later on the clock: the same chunks
    shifted = [PolicyInput(o.stamp + 60.0, o.instruction, o.images, o.state) for o in (obs, later)]
    np.testing.assert_array_equal(policy.predict(shifted[0]).actions, first)


def test_rtc_prefix_makes_the_shipped_policy_continue_its_plan():
    """Real-time chunking on the shipped checkpoint and rendered MetaWorld frames: a chunk computed
    with the plan's next actions as its prefix keeps them exactly, and the step from the prefix to
    the first new action is smaller than the jump a chunk computed without the prefix makes when it
    takes over from the plan at the same step (naive replacement after the same committed actions),
    on average over scenes and sampling seeds. Both new chunks come from the same observation time,
    so they share their sampling noise (a paired comparison). Measured over these 40 pairs: 0.187
    against 0.200 (0.93x) for the shipped checkpoint, 0.202 against 0.240 for the earlier, jointly
    trained one: a modest effect."""
    from vla_policy_node.sim.metaworld_sim import MetaWorldSim, default_instruction

    robot = load_robot("metaworld_sawyer")
    policy = make_backend("videovla", robot, checkpoint="checkpoints/videovla_metaworld")
    sim = MetaWorldSim(["corner2"], width=128, height=128)
    executed, overlap = 2, 2                      # actions run from the old plan, prefix length
    rtc_jumps, naive_jumps = [], []
    try:
        for task, seed in [("drawer-open", 150), ("button-press", 151), ("door-open", 152), ("plate-slide", 153)]:
            sim.reset(task, seed)
            names, positions, _ = sim.joint_state()
            state = np.append(sim.ee_pose()[0], positions[names.index("r_close")])   # the robot file's order
            instruction = default_instruction(task)
            obs = PolicyInput(0.0, instruction, {"corner": sim.render()["corner2"]}, state)
            # the next chunk is asked `executed` steps later (its sampling noise follows the time)
            later = PolicyInput(executed * robot.config.action.dt, instruction, obs.images, state)
            for s in range(10):
                policy.reset(instruction, seed=10 * s)
                plan = policy.predict(obs).actions_normalized
                prefix = plan[executed: executed + overlap]
                rtc = policy.predict(later, prefix=prefix).actions_normalized
                free = policy.predict(later).actions_normalized
                np.testing.assert_array_equal(rtc[:overlap], prefix)          # the prefix is kept exactly
                rtc_jumps.append(np.abs(rtc[overlap] - rtc[overlap - 1])[:3].sum())
                naive_jumps.append(np.abs(free[overlap] - prefix[-1])[:3].sum())
    finally:
        sim.close()
    assert np.mean(rtc_jumps) < np.mean(naive_jumps), (np.mean(rtc_jumps), np.mean(naive_jumps))


def test_delta_target_and_residual_decoding_make_copying_the_zero_point(tmp_path):
    """With the `delta` target the network's zero output means "nothing moves": its latents are the
    current frame's, and `residual` decoding then returns the current frame exactly as the model
    sees it; the codec ceiling of a real future frame inverts the training target."""
    path = tiny_videovla_checkpoint(tmp_path / "delta", future_target="delta", imagined_decoding="residual",
                                    delta_scaling_factor=4.0, future_offsets=[8, 16])
    policy = make_backend("auto", load_robot("metaworld_sawyer"), checkpoint=str(path))
    pipe = policy.pipeline
    rng = np.random.default_rng(1)
    current = rng.integers(0, 255, (2, 128, 128, 3), dtype=np.uint8)
    future = rng.integers(0, 255, (2, 128, 128, 3), dtype=np.uint8)
    v1 = pipe.codec.encode(torch.from_numpy(current))
    z_f = pipe.codec.encode(torch.from_numpy(future))
    target = (z_f - v1)[:, None] * pipe.config.delta_scaling_factor              # what training regresses
    torch.testing.assert_close(pipe.future_latents(v1, target)[:, 0], z_f, atol=1e-5, rtol=1e-5)
    still = pipe.decode_future(current, v1, torch.zeros(2, 2, *v1.shape[1:]))
    np.testing.assert_array_equal(still[:, 0], policy.imagined_view(current))
    np.testing.assert_array_equal(still[:, 1], policy.imagined_view(current))
    np.testing.assert_array_equal(policy.reconstruct_future(current, current), policy.imagined_view(current))
    moved = policy.reconstruct_future(current, future)
    assert np.abs(moved.astype(int) - policy.imagined_view(current).astype(int)).mean() > 5


def test_bc_checkpoint_serves_without_imagination(tmp_path):
    path = tiny_videovla_checkpoint(tmp_path / "bc", backend="bc", action_head_std=0.3)
    robot = load_robot("metaworld_sawyer")
    policy = make_backend("auto", robot, checkpoint=str(path))
    assert policy.name == "bc" and policy.future_offsets == [] and policy.imagined_camera is None
    policy.reset("open the drawer", seed=0)
    out = policy.predict(observation())
    assert out.actions.shape == (8, 4) and out.imagined_frames is None
    with pytest.raises(ValueError, match="has no option"):
        make_backend("bc", robot, checkpoint=str(path), decode_imagined=True)


def test_videovla_started_from_a_bc_checkpoint_predicts_its_actions(tmp_path):
    from vla_policy_node.models.videovla.training_videovla import InitialCheckpoint

    source = tiny_videovla_checkpoint(tmp_path / "bc", backend="bc", action_head_std=0.3)
    bc = VideoVLATransformer.from_pretrained(source / "transformer").eval()
    cfg = VideoVLAConfig(future_offsets=[4, 8], future_target="delta", action_sees_video=False, **TINY)
    start = InitialCheckpoint.read(str(source), cfg, "videovla")
    assert start.facts()["init_from"] == str(source)
    model = network(cfg).eval()
    model.load_state_dict(start.network_state(model))
    text, v1, state = inputs(cfg, b=3)
    actions = torch.randn(3, cfg.horizon, cfg.action_dim)
    timestep = torch.tensor([10, 400, 900])
    future = torch.randn(3, cfg.num_future, cfg.latent_channels, cfg.latent_size, cfg.latent_size)
    with torch.no_grad():
        imagined, predicted = model(text, v1, future, actions, state, timestep)
        _, expected = bc(text, v1, future[:, :0], actions, state, timestep)
    torch.testing.assert_close(predicted, expected)           # the actions are bc's, whatever the future
    assert not imagined.abs().any()                           # the latent head starts at zero, to be learned
    with pytest.raises(CheckpointError, match=r"policy\.hidden_size is 32, this run builds 48"):
        InitialCheckpoint.read(str(source), VideoVLAConfig(**{**TINY, "hidden_size": 48}), "videovla")


def test_a_chunk_shorter_than_the_robot_executes_is_refused(tmp_path):
    """The chunk length is the checkpoint's, any length the robot file's execute_per_chunk fits in."""
    robot = load_robot("metaworld_sawyer")
    long = tiny_videovla_checkpoint(tmp_path / "long", horizon=24)
    assert make_backend("videovla", robot, checkpoint=str(long)).config.horizon == 24
    short = tiny_videovla_checkpoint(tmp_path / "short", horizon=1)
    with pytest.raises(CheckpointError, match="chunks of 1 actions.*execute_per_chunk 2"):
        make_backend("videovla", robot, checkpoint=str(short))
