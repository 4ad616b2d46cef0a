"""LingBot-VA model core: the causal mask, the KV cache of real observations against recomputation,
imagined latents kept out of the cache, the window, prefix inpainting, forward-dynamics grounding,
checkpoint round trip; a slow suite trains on a recorded episode and drives the simulator."""

import json

import numpy as np
import pytest
import torch
from conftest import TINY_LINGBOT, record_episodes, tiny_lingbot_checkpoint

from vla_policy_node.core.embodiment import load_robot
from vla_policy_node.models.backend import PolicyInput
from vla_policy_node.models.checkpoint import CheckpointError
from vla_policy_node.models.lingbot_va import LingBotVAConfig
from vla_policy_node.models.lingbot_va.modeling_lingbot_va import (KIND_FRAME, KIND_IMAGINED, KVCache,
                                                                   LingBotVATransformer, TokenLayout,
                                                                   encode_actions, encode_frame)
from vla_policy_node.models.lingbot_va.training_lingbot_va import augment_action_history
from vla_policy_node.models.registry import make_backend


def random_model(seed: int = 0) -> LingBotVATransformer:
    torch.manual_seed(seed)
    model = LingBotVATransformer(**LingBotVAConfig(**TINY_LINGBOT).transformer_config()).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(0.0, 0.1)
    return model


class Episode:
    """A short history: frames with proprio at steps 0, 3, 5 and the actions between them."""

    def __init__(self, model, seed: int = 1):
        g = torch.Generator().manual_seed(seed)
        c, s = model.config.latent_channels, model.config.latent_size
        self.frames = [torch.randn(1, c, s, s, generator=g) for _ in range(3)]
        self.states = [torch.randn(1, 4, generator=g) for _ in range(3)]
        self.actions = [torch.randn(1, 3, 4, generator=g), torch.randn(1, 2, 4, generator=g)]
        self.steps = [0, 3, 5]
        self.text = model.text_tokens(torch.randn(1, 5, 384, generator=g))

    def cached(self, model, max_frames: int = 10) -> KVCache:
        cache = KVCache(max_frames)
        for i in range(3):
            cache.append("frame", encode_frame(model, self.frames[i], self.states[i], self.steps[i], self.text,
                                               cache.past()), self.steps[i])
            if i < 2:
                cache.append("actions", encode_actions(model, self.actions[i], self.steps[i], self.text,
                                                       cache.past()), self.steps[i])
        return cache

    def one_pass(self, model, chunk: torch.Tensor | None = None, chunk_steps=(9.0,), level: float = 0.6):
        """Every group in one sequence (and a video chunk after them): (video outputs, per-layer keys/values,
        index of each token in the cache's order)."""
        n = model.patches_per_frame
        video = []
        for z, s in zip(self.frames, self.states):
            video += [model.frame_tokens(z[:, None], KIND_FRAME), model.state_tokens(s[:, None])]
        times, groups, levels = [], [], []
        for i, step in enumerate(self.steps):
            times += [float(step)] * (n + 1)
            groups += [2 * i] * (n + 1)
            levels += [0.0] * (n + 1)
        if chunk is not None:
            video.append(model.frame_tokens(chunk, KIND_IMAGINED))
            for step in chunk_steps:
                times += [step] * n
            groups += [6] * (n * len(chunk_steps))
            levels += [level] * (n * len(chunk_steps))
        xv = torch.cat(video, dim=1)
        xa = torch.cat([model.action_tokens(a) for a in self.actions], dim=1)
        times += [0.0, 1.0, 2.0, 3.0, 4.0]
        groups += [1, 1, 1, 3, 3]
        levels += [0.0] * 5
        length = len(times)
        layout = TokenLayout(torch.tensor([times]), torch.tensor([levels]), torch.tensor([groups]),
                             torch.ones(1, length, dtype=torch.bool), xv.shape[1])
        out_v, _, kv = model.run(xv, xa, layout, self.text)
        lv = xv.shape[1]
        order = list(range(n + 1)) + [lv, lv + 1, lv + 2] + list(range(n + 1, 2 * n + 2)) + [lv + 3, lv + 4] + \
            list(range(2 * n + 2, 3 * n + 3))
        return out_v, kv, order


def test_the_cache_holds_exactly_what_recomputing_the_whole_history_gives():
    model = random_model()
    ep = Episode(model)
    with torch.no_grad():
        cache = ep.cached(model)
        chunk = torch.randn(1, 2, model.config.latent_channels, model.config.latent_size, model.config.latent_size)
        full_v, full_kv, order = ep.one_pass(model, chunk, (9.0, 13.0))
        assert len(full_kv) == len(cache.layers) == model.config.num_layers
        for (k, v), (ck, cv) in zip(full_kv, cache.layers):
            torch.testing.assert_close(ck, k[:, :, order], atol=1e-5, rtol=1e-5)
            torch.testing.assert_close(cv, v[:, :, order], atol=1e-5, rtol=1e-5)
        # the video chunk over the cache predicts what it predicts at the end of the full sequence
        n = model.patches_per_frame
        layout = TokenLayout(torch.tensor([[9.0] * n + [13.0] * n]), torch.full((1, 2 * n), 0.6),
                             torch.zeros(1, 2 * n, dtype=torch.long), torch.ones(1, 2 * n, dtype=torch.bool), 2 * n)
        cached_v, _, _ = model.run(model.frame_tokens(chunk, KIND_IMAGINED), torch.zeros(1, 0, 16), layout, ep.text,
                                   cache.past())
        torch.testing.assert_close(cached_v, full_v[:, 3 * (n + 1):], atol=1e-5, rtol=1e-5)
    assert len(cache) == 3 * (n + 1) + 5 and cache.frames == 3 and cache.memory_bytes() > 0


def test_a_later_group_never_changes_an_earlier_groups_outputs():
    model = random_model()
    ep = Episode(model)
    with torch.no_grad():
        chunk = torch.randn(1, 1, model.config.latent_channels, model.config.latent_size, model.config.latent_size)
        base_v, _, _ = ep.one_pass(model, chunk)
        later = Episode(model)
        later.frames[2] = ep.frames[2] + 1.0            # the newest frame changes ...
        later_v, _, _ = later.one_pass(model, chunk)
    n = model.patches_per_frame
    earlier = slice(0, 2 * (n + 1))
    torch.testing.assert_close(later_v[:, earlier], base_v[:, earlier])          # ... not the frames before it
    assert (later_v[:, 3 * (n + 1):] - base_v[:, 3 * (n + 1):]).abs().max() > 1e-3   # but the chunk after it


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    return tiny_lingbot_checkpoint(tmp_path_factory.mktemp("lingbot") / "ckpt")


def observation(seed: int = 0, stamp: float = 0.0) -> PolicyInput:
    rng = np.random.default_rng(seed)
    return PolicyInput(stamp, "open the drawer", {"corner": rng.integers(0, 255, (64, 64, 3), dtype=np.uint8)},
                       np.array([0.0, 0.6, 0.2, 0.0]))


def snapshot(cache: KVCache) -> list:
    return [(k.clone(), v.clone()) for k, v in cache.layers]


def test_only_real_observations_and_executed_actions_enter_the_cache(checkpoint):
    policy = make_backend("auto", load_robot("metaworld_sawyer"), checkpoint=str(checkpoint))
    assert policy.name == "lingbot_va" and policy.stateful
    n = policy.pipeline.transformer.patches_per_frame + 1                  # patches and proprio
    policy.reset("open the drawer", seed=1)
    out = policy.predict(observation(0, 0.0))
    assert [kind for kind, _, _ in policy.cache.groups] == ["frame"] and len(policy.cache) == n
    before = snapshot(policy.cache)
    grounded = observation(0, 0.0)
    grounded.in_flight = out.actions_normalized[:3]
    policy.predict(grounded)                       # imagines the in-flight outcome and its own chunk ...
    assert len(policy.cache.layers) == len(before) > 0
    for (k, v), (k0, v0) in zip(policy.cache.layers, before):                # ... and keeps none of it
        assert torch.equal(k, k0) and torch.equal(v, v0)
    assert len(policy.cache) == n
    policy.update(out.actions[:2], observation(1, 0.025))
    assert [kind for kind, _, _ in policy.cache.groups] == ["frame", "actions", "frame"]
    assert len(policy.cache) == 2 * n + 2 and policy.step == 2
    assert len(policy.cache.layers) == len(before)
    for (k, _), (k0, _) in zip(policy.cache.layers, before):              # appended, the old entries untouched
        assert torch.equal(k[:, :, :n], k0)
    # the window: at most cache_frames real frames, the oldest evicted with its actions
    for i in range(2, 6):
        policy.update(out.actions[:2], observation(i, 0.025 * i))
    assert policy.cache.frames == TINY_LINGBOT["cache_frames"]
    assert policy.cache.groups[0][0] == "frame" and len(policy.cache) == 3 * n + 2 * 2
    policy.reset("open the drawer", seed=1)
    assert len(policy.cache) == 0 and policy.cache.layers == [] and policy.step == 0


def test_history_changes_the_chunk_and_the_same_history_gives_the_same_chunk(checkpoint):
    robot = load_robot("metaworld_sawyer")
    policy = make_backend("lingbot_va", robot, checkpoint=str(checkpoint))

    def run(actions_scale: float) -> np.ndarray:
        policy.reset("open the drawer", seed=4)
        out = policy.predict(observation(0, 0.0))
        policy.update(out.actions[:2] * actions_scale, observation(1, 0.025))
        return policy.predict(observation(1, 0.025)).actions_normalized

    a, b, c = run(1.0), run(1.0), run(-1.0)
    np.testing.assert_array_equal(a, b)
    assert np.abs(a - c).max() > 1e-4            # what executed is remembered


def test_prefix_inpainting_and_fdm_grounding_keep_the_in_flight_actions_exactly(checkpoint):
    robot = load_robot("metaworld_sawyer")
    prefix = np.linspace(-0.5, 0.5, 12, dtype=np.float32).reshape(3, 4)
    plain = make_backend("lingbot_va", robot, checkpoint=str(checkpoint), async_grounding="none")
    plain.reset("open the drawer", seed=2)
    out = plain.predict(observation(), prefix=prefix)
    np.testing.assert_array_equal(out.actions_normalized[:3], prefix)
    free = plain.predict(observation(), prefix=None).actions_normalized
    obs = observation()
    obs.in_flight = prefix
    np.testing.assert_array_equal(plain.predict(obs).actions_normalized, free)     # none: in-flight ignored

    grounded = make_backend("lingbot_va", robot, checkpoint=str(checkpoint), async_grounding="fdm")
    grounded.reset("open the drawer", seed=2)
    chunk = grounded.predict(obs).actions_normalized
    assert chunk.shape == (3 + 8, 4)                         # the in-flight rows, then a whole chunk after them
    np.testing.assert_array_equal(chunk[:3], prefix)
    assert np.abs(chunk[3:] - free).max() > 1e-4            # predicted from the imagined outcome, not the stale frame
    with pytest.raises(ValueError, match="async_grounding"):
        make_backend("lingbot_va", robot, checkpoint=str(checkpoint), async_grounding="magic")


def test_checkpoint_round_trip_serves_the_same_chunks_and_imagined_frames(checkpoint, tmp_path):
    from vla_policy_node.models.lingbot_va import LingBotVAPipeline

    robot = load_robot("metaworld_sawyer")
    first = make_backend("lingbot_va", robot, checkpoint=str(checkpoint), decode_imagined=True)
    first.pipeline.save_pretrained(tmp_path / "copy")
    second = make_backend("lingbot_va", robot, checkpoint=str(tmp_path / "copy"), decode_imagined=True)
    outs = []
    for policy in (first, second):
        policy.reset("open the drawer", seed=7)
        a = policy.predict(observation(0, 0.0))
        policy.update(a.actions[:2], observation(1, 0.025))
        outs.append(policy.predict(observation(1, 0.025)))
    np.testing.assert_array_equal(outs[0].actions, outs[1].actions)
    np.testing.assert_array_equal(outs[0].imagined_frames["corner"], outs[1].imagined_frames["corner"])
    assert outs[0].imagined_frames["corner"].shape == (2, 32, 32, 3)
    assert first.future_offsets == [4, 8]
    # a batch of independent observations = each observation alone on an empty history
    first.reset("open the drawer", seed=7)
    single = first.predict(observation(3, 0.5)).actions
    first.reset("open the drawer", seed=7)
    batch = first.predict_batch([observation(3, 0.5), observation(4, 0.6)])
    np.testing.assert_allclose(batch[0].actions, single, atol=1e-5)
    assert isinstance(LingBotVAPipeline.from_pretrained(tmp_path / "copy").config, LingBotVAConfig)


def test_broken_checkpoints_fail_loudly_naming_the_part(checkpoint, tmp_path):
    import shutil

    robot = load_robot("metaworld_sawyer")
    broken = tmp_path / "broken"
    shutil.copytree(checkpoint, broken)
    shutil.rmtree(broken / "transformer")
    with pytest.raises(CheckpointError, match="transformer"):
        make_backend("lingbot_va", robot, checkpoint=str(broken))
    config = json.loads((checkpoint / "config.json").read_text())
    config["policy"]["horizon"] = 12
    config["policy"]["frames_per_chunk"] = 3
    bad = tmp_path / "horizon"
    shutil.copytree(checkpoint, bad)
    (bad / "config.json").write_text(json.dumps(config))
    # a chunk's length is its checkpoint's: three frames of four actions, whatever the robot file's horizon
    assert make_backend("lingbot_va", robot, checkpoint=str(bad)).config.horizon == 12
    with pytest.raises(ValueError, match="horizon 8 != frames_per_chunk 3"):
        LingBotVAConfig(frames_per_chunk=3)


@pytest.mark.slow
def test_a_training_run_lowers_the_loss_and_the_checkpoint_serves(tmp_path_factory):
    from vla_policy_node.train import main as train_main

    recorded = tmp_path_factory.mktemp("demos")
    record_episodes(recorded, 86, "[drawer-open]", "[2]", 40)
    ckpt = tmp_path_factory.mktemp("lingbot_ckpt")
    args = ["--family", "lingbot_va", "--data", str(recorded), "--output", str(ckpt), "--image-size", "32",
            "--vae-steps", "30", "--video-width", "32", "--action-width", "16", "--num-layers", "2",
            "--batch-size", "16", "--include-failed", "--save-every", "100000", "--steps", "300", "--lr", "2e-3"]
    assert train_main(args) == 0
    log = json.loads((ckpt / "training_log.json").read_text())
    for key in ("action_loss", "video_loss"):
        first, last = log[0][key], np.mean([r[key] for r in log[-2:]])
        assert last < 0.6 * first, (key, first, last)
    policy = make_backend("auto", load_robot("metaworld_sawyer"), checkpoint=str(ckpt))
    policy.reset("open the drawer")
    assert np.all(np.isfinite(policy.predict(observation()).actions))

    # a second stage continues from it (its network, VAE and latent scales), with action-history augmentation
    stage = tmp_path_factory.mktemp("lingbot_stage2")
    second = [a for a in args if a not in ("--steps", "300")] + ["--steps", "20", "--init-from", str(ckpt),
                                                               "--action-history-dropout", "0.5",
                                                               "--action-history-noise", "0.1"]
    second[second.index("--output") + 1] = str(stage)
    assert train_main(second) == 0
    log2 = json.loads((stage / "training_log.json").read_text())
    assert log2[0]["loss"] < 0.6 * log[0]["loss"], (log2[0]["loss"], log[0]["loss"])   # not from scratch
    first_cfg, second_cfg = (json.loads((d / "config.json").read_text()) for d in (ckpt, stage))
    assert second_cfg["vae"]["scaling_factor"] == first_cfg["vae"]["scaling_factor"]
    assert second_cfg["policy"]["delta_scaling_factor"] == first_cfg["policy"]["delta_scaling_factor"]
    assert second_cfg["policy"]["action_history_dropout"] == 0.5
    assert second_cfg["training"]["init_from"] == str(ckpt) and second_cfg["training"]["init_steps"] == 300
    # ... and its normalization: re-recorded demonstrations differ by a few steps, the network's scale must not
    assert (stage / "normalization.json").read_text() == (ckpt / "normalization.json").read_text()
    # a source that is not the network this run builds is refused, naming the key
    wrong = [a if a != "32" or i != second.index("--video-width") + 1 else "64" for i, a in enumerate(second)]
    wrong[wrong.index("--output") + 1] = str(tmp_path_factory.mktemp("lingbot_wrong"))
    with pytest.raises(SystemExit, match="policy.video_width is 32, this run builds 64"):
        train_main(wrong)


@pytest.mark.slow
def test_the_shipped_checkpoint_drives_the_simulator_through_the_graph(tmp_path):
    """checkpoints/lingbot_va_metaworld behind the policy node presses the button of a held-out seed
    in lockstep, its cache fed with what executed, imagined frames reaching the monitor."""
    from conftest import ROOT

    from vla_policy_node.data.bags import read_bag

    record_episodes(tmp_path, 87, "[button-press]", "[110]", 150, backend="auto",     # its sync loop (README)
                    checkpoint=str(ROOT / "checkpoints" / "lingbot_va_metaworld"), mode="sync")
    report = json.loads((tmp_path / "report.json").read_text())
    episode, = report["episodes"]
    assert report["policy"]["backend"] == "lingbot_va"
    assert episode["success"], episode
    assert report["summary"]["monitor"]["compared_frames"] > 0
    commands = [m for topic, _, _, m in read_bag(tmp_path / "bags" / "button-press_s110") if topic == "/vla/sim/command"]
    assert commands and all(np.all(np.isfinite(c.values)) and np.all(np.abs(c.values) <= 1.0) for c in commands)


def test_one_pass_over_the_history_equals_the_cache_built_step_by_step():
    from vla_policy_node.models.lingbot_va.modeling_lingbot_va import encode_history

    model = random_model()
    ep = Episode(model)
    groups = []
    for i in range(3):
        groups.append(("frame", ep.frames[i], ep.states[i], ep.steps[i]))
        if i < 2:
            groups.append(("actions", ep.actions[i], ep.steps[i]))
    cache = ep.cached(model)
    encoded = encode_history(model, groups, ep.text)
    assert len(encoded) == len(cache.layers) == model.config.num_layers
    for (k, v), (ck, cv) in zip(encoded, cache.layers):
        torch.testing.assert_close(k, ck, atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(v, cv, atol=1e-5, rtol=1e-5)


def test_action_history_augmentation_hides_whole_histories_and_noises_the_rest():
    g = torch.Generator().manual_seed(0)
    actions, valid = torch.rand(4000, 4, 8, 4), torch.ones(4000, 4, 8, dtype=torch.bool)
    same, same_valid = augment_action_history(actions, valid, 0.0, 0.0, g)
    assert torch.equal(same, actions) and torch.equal(same_valid, valid)
    noised, kept = augment_action_history(actions, valid, 0.5, 0.1, g)
    hidden = ~kept.any(dim=(1, 2))
    assert torch.equal(kept, ~hidden[:, None, None].expand_as(kept))        # a sample's history: all or nothing
    assert 0.45 < hidden.float().mean() < 0.55
    assert abs(float((noised - actions).std()) - 0.1) < 0.005
    masked = valid.clone()
    masked[:, 2:] = False                                                     # slots that never held an action
    _, still = augment_action_history(actions, masked, 0.5, 0.0, g)
    assert not still[:, 2:].any()
