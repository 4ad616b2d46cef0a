"""The inference-delay remedies of the diffusion families, one option apart (DESIGN section 8d):
TT-RTC (a prefix given clean, as learned in training), IT-RTC (prefix inpainting) and VLASH
(conditioning on the state rolled forward by the plan in flight)."""

import numpy as np
import pytest
import torch
from conftest import tiny_videovla_checkpoint

from vla_policy_node.core.embodiment import load_robot
from vla_policy_node.core.future_state import roll_forward
from vla_policy_node.models.backend import PolicyInput
from vla_policy_node.models.checkpoint import CheckpointError
from vla_policy_node.models.components.diffusion import TrainingNoise, make_scheduler
from vla_policy_node.models.registry import make_backend
from vla_policy_node.models.videovla import VideoVLAConfig
from vla_policy_node.models.videovla.modeling_videovla import (VideoVLATransformer, sample, training_loss,
                                                               training_prefix_mask)

TINY = dict(hidden_size=32, num_layers=2, num_heads=2, image_size=32, latent_size=4, horizon=8)


def inputs(cfg, b=2, seed=0):
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(b, cfg.text_tokens, cfg.text_dim, generator=g),
            torch.randn(b, cfg.latent_channels, cfg.latent_size, cfg.latent_size, generator=g),
            torch.randn(b, cfg.state_dim, generator=g))


def conditioned_network(cfg):
    torch.manual_seed(0)
    model = VideoVLATransformer(**cfg.transformer_config()).eval()
    for p in (*model.action_out.parameters(), model.prefix_embed):    # outputs and the flag non-trivial
        torch.nn.init.normal_(p, std=0.5)
    return model


# ---- TT-RTC ---------------------------------------------------------------------------------
def test_training_prefixes_are_leading_runs_of_the_drawn_length():
    mask = training_prefix_mask(4000, 8, 5, 0.5, torch.Generator().manual_seed(0))
    k = mask.sum(1)
    assert torch.equal(mask, torch.arange(8)[None] < k[:, None])             # a leading run
    assert set(k.tolist()) == set(range(6))                                  # 0 and 1..5
    assert abs((k == 0).float().mean().item() - 0.5) < 0.03                  # half the samples without
    assert abs((k[k > 0] == 5).float().mean().item() - 0.2) < 0.03           # uniform over 1..5


def test_the_given_prefix_is_left_out_of_the_loss_and_seen_by_the_network():
    cfg = VideoVLAConfig(train_prefix_max=4, train_prefix_probability=1.0, **TINY)
    model = conditioned_network(cfg).train()
    text, v1, state = inputs(cfg, b=6)
    future = torch.randn(6, cfg.num_future, cfg.latent_channels, cfg.latent_size, cfg.latent_size)
    actions = torch.randn(6, cfg.horizon, cfg.action_dim).clamp(-1, 1)
    seen = {}

    def keep_inputs(module, args, kwargs):
        seen["actions"], seen["mask"] = args[3].detach().clone(), args[6]

    handle = model.register_forward_pre_hook(keep_inputs, with_kwargs=True)
    out = training_loss(model, TrainingNoise("ddpm"), text, v1, future, actions, torch.ones(6, cfg.horizon), state,
                        generator=torch.Generator().manual_seed(1), prefix_max=cfg.train_prefix_max,
                        prefix_probability=1.0)
    handle.remove()
    mask = seen["mask"]
    assert mask.any(1).all() and (mask.sum(1) <= 4).all()
    assert torch.equal(seen["actions"][mask], actions[mask])                  # given clean
    assert not torch.allclose(seen["actions"][~mask], actions[~mask])         # the rest noised
    # the loss does not reach the predictions at the given positions
    pred = {}
    model.action_out.register_forward_hook(lambda m, i, o: pred.setdefault("a", o))
    out = training_loss(model, TrainingNoise("ddpm"), text, v1, future, actions, torch.ones(6, cfg.horizon), state,
                        generator=torch.Generator().manual_seed(1), prefix_max=4, prefix_probability=1.0)
    grad = torch.autograd.grad(out["loss"], pred["a"])[0]
    assert torch.all(grad[mask] == 0) and torch.any(grad[~mask] != 0)


@pytest.mark.parametrize("objective", ["ddpm", "flow"])
def test_conditioning_gives_the_prefix_clean_and_flagged_and_differs_from_inpainting(objective):
    cfg = VideoVLAConfig(objective=objective, train_prefix_max=4, **TINY)
    model = conditioned_network(cfg)
    scheduler = make_scheduler(objective)
    text, v1, state = inputs(cfg, b=1)
    prefix = torch.linspace(-0.9, 0.9, 3 * cfg.action_dim).reshape(1, 3, cfg.action_dim)
    calls = []
    model.register_forward_pre_hook(lambda m, args, kwargs: calls.append((args[3][0, :3].clone(), args[6])),
                                    with_kwargs=True)
    g = lambda: torch.Generator().manual_seed(3)       # noqa: E731
    _, cond = sample(model, scheduler, text, v1, state, 4, prefix=prefix, generator=g(), prefix_method="conditioning")
    assert torch.equal(cond[:, :3], prefix)
    assert all(torch.equal(a, prefix[0]) for a, _ in calls)                  # clean at every step
    assert all(m is not None and m[0].tolist() == [True] * 3 + [False] * 5 for _, m in calls)
    calls.clear()
    _, inpainted = sample(model, scheduler, text, v1, state, 4, prefix=prefix, generator=g())
    assert torch.equal(inpainted[:, :3], prefix)
    assert all(m is None for _, m in calls) and not torch.equal(calls[0][0], prefix[0])   # noised, unflagged
    assert not torch.allclose(cond[:, 3:], inpainted[:, 3:])


def test_conditioning_is_refused_by_a_network_not_trained_for_it(tmp_path):
    robot = load_robot("metaworld_sawyer")
    path = tiny_videovla_checkpoint(tmp_path / "plain", horizon=8)
    with pytest.raises(CheckpointError, match="--train-prefix-max"):
        make_backend("videovla", robot, checkpoint=str(path), rtc="conditioning")
    with pytest.raises(ValueError, match="prefix_conditioning is off"):
        cfg = VideoVLAConfig(**TINY)
        model = VideoVLATransformer(**cfg.transformer_config())
        text, v1, state = inputs(cfg, b=1)
        sample(model, make_scheduler("ddpm"), text, v1, state, 2, prefix=torch.zeros(1, 2, 4),
               prefix_method="conditioning")


# ---- VLASH --------------------------------------------------------------------------------
def test_state_rolled_forward_by_the_plan_per_action_space():
    sawyer = load_robot("metaworld_sawyer").config
    state = np.array([0.1, 0.6, 0.2, 0.01])                      # ee x y z (m), finger (m)
    plan = np.array([[1.0, 0.0, -0.5, 1.0], [1.0, 0.5, -0.5, 1.0]])   # cm per step, gripper effort
    np.testing.assert_allclose(roll_forward(sawyer, state, plan), [0.12, 0.605, 0.19, 0.01])
    np.testing.assert_allclose(roll_forward(sawyer, state, np.zeros((0, 4))), state)
    panda = load_robot("panda_ros2_control").config
    joints = [s.partition(".")[2] for s in panda.state.sources]
    q = np.linspace(-0.5, 0.5, len(joints))
    plan = np.stack([q + 0.1, q + 0.2])[:, [joints.index(n) for n in panda.action.names]]
    rolled = roll_forward(panda, q, plan)
    for i, name in enumerate(joints):
        expected = q[i] + 0.2 if name in panda.action.names else q[i]
        assert rolled[i] == pytest.approx(expected)


def test_future_state_conditions_the_chunk_on_the_rolled_forward_state(tmp_path):
    robot = load_robot("metaworld_sawyer")
    path = tiny_videovla_checkpoint(tmp_path / "ckpt", action_head_std=0.5, horizon=8)
    plain = make_backend("videovla", robot, checkpoint=str(path))
    vlash = make_backend("videovla", robot, checkpoint=str(path), future_state=True)
    frame = np.random.default_rng(0).integers(0, 255, (128, 128, 3), dtype=np.uint8)
    state = np.array([0.0, 0.6, 0.2, 0.0])
    in_flight = np.tile([[0.8, 0.0, 0.0, 0.0]], (6, 1))           # model space: +0.8 cm a step in x
    obs = PolicyInput(1.0, "press the button", {"corner": frame}, state, in_flight=in_flight)
    for p in (plain, vlash):
        p.reset("press the button", seed=1)
    rolled = roll_forward(robot.config, state, plain.pipeline.action_norm.unnormalize(in_flight))
    assert rolled[0] == pytest.approx(0.048)
    a_vlash = vlash.predict(obs).actions
    a_plain = plain.predict(obs).actions
    a_rolled = plain.predict(PolicyInput(1.0, "press the button", {"corner": frame}, rolled)).actions
    np.testing.assert_allclose(a_vlash, a_rolled)                 # the rolled state is what it sees
    assert not np.allclose(a_vlash, a_plain)
    # without a plan in flight (sync) the measured state is used
    no_plan = PolicyInput(1.0, "press the button", {"corner": frame}, state)
    np.testing.assert_allclose(vlash.predict(no_plan).actions, plain.predict(no_plan).actions)
