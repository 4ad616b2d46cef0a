"""VITA model core: the DCT, the shared codebook, tokenizer round trips, cached generation,
checkpoint round trip and loud failures; a slow suite trains both stages on a recorded episode."""

import json

import numpy as np
import pytest
import scipy.fft
import torch
from conftest import TINY_VITA, record_episodes, tiny_vita_checkpoint

from vla_policy_node.core.embodiment import load_robot
from vla_policy_node.models.backend import PolicyInput
from vla_policy_node.models.checkpoint import CheckpointError
from vla_policy_node.models.registry import make_backend
from vla_policy_node.models.vita import VITAConfig
from vla_policy_node.models.vita.modeling_vita import (VITABackbone, VITATokenizer, codebook_usage, dct_matrix,
                                                       masked_mse)


def smooth_chunks(n: int, horizon: int = 8, dim: int = 4, seed: int = 0) -> torch.Tensor:
    """Chunks like a scripted expert's: per channel a ramp from one level to another, gripper +-1."""
    g = torch.Generator().manual_seed(seed)
    start, end = torch.rand(n, 1, dim, generator=g) * 2 - 1, torch.rand(n, 1, dim, generator=g) * 2 - 1
    t = torch.linspace(0, 1, horizon)[None, :, None]
    chunk = start + (end - start) * t
    chunk[..., -1] = torch.sign(start[..., -1])
    return chunk


def test_dct_is_scipys_orthonormal_dct_and_the_tokenizer_inverts_it():
    x = np.random.default_rng(0).normal(size=(8, 4))
    d = dct_matrix(8)
    np.testing.assert_allclose(d @ x, scipy.fft.dct(x, norm="ortho", axis=0), atol=1e-12)
    np.testing.assert_allclose(d.T @ (d @ x), x, atol=1e-12)
    tok = VITATokenizer(**VITAConfig(**TINY_VITA).tokenizer_config())
    chunks = smooth_chunks(16)
    coefficients = tok.dct_coefficients(chunks)
    torch.testing.assert_close(coefficients, torch.as_tensor(scipy.fft.dct(chunks.numpy(), norm="ortho", axis=1)),
                               atol=1e-5, rtol=0)
    torch.testing.assert_close(tok.inverse_dct(coefficients), chunks, atol=1e-5, rtol=0)
    # keeping only the lowest frequency keeps a constant chunk exactly
    low = VITATokenizer(**VITAConfig(**TINY_VITA, dct_keep=1).tokenizer_config())
    constant = torch.full((2, 8, 4), 0.3)
    torch.testing.assert_close(low.inverse_dct(low.dct_coefficients(constant)), constant, atol=1e-6, rtol=0)


def test_one_codebook_tensor_serves_both_modalities_unless_the_ablation_separates_them():
    shared = VITATokenizer(**VITAConfig(**TINY_VITA).tokenizer_config())
    assert shared.vision_quantizer is shared.action_quantizer
    assert shared.vision_quantizer.codebook.data_ptr() == shared.action_quantizer.codebook.data_ptr()
    assert sum(1 for name, _ in shared.named_buffers() if name.endswith("_codebook.embed")) == 1
    separate = VITATokenizer(**VITAConfig(**TINY_VITA, shared_codebook=False).tokenizer_config())
    assert separate.vision_quantizer is not separate.action_quantizer
    assert sum(1 for name, _ in separate.named_buffers() if name.endswith("_codebook.embed")) == 2
    with pytest.raises(RuntimeError, match="never trained"):      # codes from an untrained codebook: refused
        separate.tokenize(torch.randn(2, 4, 4, 4), None, torch.randn(2, 8, 4))
    with pytest.raises(ValueError, match="modality 'depth' unknown"):
        shared.codes(torch.zeros(1, 2, dtype=torch.long), "depth")
    # with one codebook, an index means the same vector whichever modality asks for it
    shared.quantize(torch.randn(64, 4, 16), torch.randn(64, 4, 16))
    idx = torch.arange(8)[None]
    torch.testing.assert_close(shared.codes(idx, "vision"), shared.codes(idx, "action"))


def test_action_tokenizer_round_trip_after_warm_up_is_within_the_stated_error():
    """Codes -> chunk reconstruction: normalized MSE below 0.05 (RMSE 0.22 of a [-1, 1] range) on unseen
    chunks after a 400-step warm-up, a tenth of what it starts at; the co-train stage refines the
    decoded chunk further with the backbone's hidden states."""
    torch.manual_seed(0)
    cfg = VITAConfig(**{**TINY_VITA, "codebook_size": 128, "tokenizer_width": 64})
    tok = VITATokenizer(**cfg.tokenizer_config())
    opt = torch.optim.AdamW(tok.parameters(), lr=2e-3)
    held_out = smooth_chunks(256, seed=99)
    mask = torch.ones(256, 8)

    def error() -> float:
        tok.eval()
        with torch.no_grad():
            _, (q, idx), _ = tok.quantize(None, tok.encode_action(held_out))
            return float(masked_mse(tok.decode_action(tok.codes(idx, "action")), held_out, mask))

    tok.train()
    tok.quantize(None, tok.encode_action(smooth_chunks(64, seed=1000)))   # k-means start on training chunks
    before = error()
    tok.train()
    for step in range(400):
        chunks = smooth_chunks(64, seed=step)
        _, (q, _), commit = tok.quantize(None, tok.encode_action(chunks))
        loss = masked_mse(tok.decode_action(q), chunks, torch.ones(64, 8)) + commit
        opt.zero_grad()
        loss.backward()
        opt.step()
    after = error()
    assert after < 0.05 and after < 0.1 * before, (before, after)
    tok.eval()
    _, (_, idx), _ = tok.quantize(None, tok.encode_action(held_out))
    usage = codebook_usage(idx, cfg.codebook_size)
    assert usage["used_codes"] + usage["dead_codes"] == cfg.codebook_size and usage["perplexity"] > 8


def test_cached_generation_gives_the_tokens_and_context_of_full_recomputation():
    torch.manual_seed(0)
    cfg = VITAConfig(**TINY_VITA)
    backbone = VITABackbone(**cfg.backbone_config()).eval()
    torch.nn.init.normal_(backbone.context_out.weight, std=0.1)
    g = torch.Generator().manual_seed(1)
    text = torch.randn(3, cfg.text_tokens, cfg.text_dim, generator=g)
    frame = torch.randn(3, cfg.latent_channels, cfg.latent_size, cfg.latent_size, generator=g)
    state = torch.randn(3, cfg.state_dim, generator=g)
    cached, context_cached = backbone.generate(text, frame, state, use_cache=True)
    full, context_full = backbone.generate(text, frame, state, use_cache=False)
    assert cached.shape == (3, cfg.sequence_tokens) and torch.equal(cached, full)
    torch.testing.assert_close(context_cached, context_full, atol=1e-5, rtol=1e-4)
    assert int(cached.max()) < cfg.codebook_size            # BOS is never generated
    # teacher forcing on the generated codes predicts those same codes at every position
    logits, context = backbone(text, frame, state, cached)
    assert torch.equal(logits.argmax(-1), cached)
    torch.testing.assert_close(context, context_full, atol=1e-5, rtol=1e-4)


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    return tiny_vita_checkpoint(tmp_path_factory.mktemp("vita"))


def observation(seed: int = 0) -> PolicyInput:
    rng = np.random.default_rng(seed)
    return PolicyInput(0.5, "open the drawer", {"corner": rng.integers(0, 255, (48, 48, 3), dtype=np.uint8)},
                       np.array([0.0, 0.6, 0.2, 0.01], dtype=np.float32))


def test_checkpoint_round_trip_serves_the_same_chunks_and_imagined_frame(checkpoint, tmp_path):
    robot = load_robot("metaworld_sawyer")
    policy = make_backend("vita", robot, checkpoint=str(checkpoint), decode_imagined=True)
    policy.reset("open the drawer", seed=3)
    out = policy.predict(observation())
    assert out.actions.shape == (8, 4) and np.all(np.isfinite(out.actions))
    assert out.imagined_frames["corner"].shape == (1, 32, 32, 3) and policy.future_offsets == [8]
    # saved again from the loaded pipeline and loaded once more: the same chunk, bit for bit
    policy.pipeline.save_pretrained(tmp_path / "again", policy.pipeline.meta.get("training"))
    again = make_backend("auto", robot, checkpoint=str(tmp_path / "again"), decode_imagined=True)
    again.reset("open the drawer", seed=7)                  # greedy decoding: the seed changes nothing
    out2 = again.predict(observation())
    np.testing.assert_array_equal(out.actions, out2.actions)
    np.testing.assert_array_equal(out.imagined_frames["corner"], out2.imagined_frames["corner"])
    batch = again.predict_batch([observation(0), observation(1)])
    np.testing.assert_allclose(batch[0].actions, out.actions, atol=1e-5)
    assert not np.allclose(batch[0].actions, batch[1].actions)    # the chunk depends on the frame
    # the ceiling of imagination: the real next frame through the frame codec, at the imagined size
    frames = np.stack([observation(i).images["corner"] for i in range(2)])
    assert again.reconstruct_future(frames[:1], frames[1:]).shape == (1, 32, 32, 3)
    assert again.imagined_view(frames).shape == (2, 32, 32, 3)
    assert again.describe()["parameters"] > 0


def test_without_the_next_frame_objective_nothing_is_imagined(tmp_path):
    ckpt = tiny_vita_checkpoint(tmp_path / "c", next_frame_objective=False)
    policy = make_backend("vita", load_robot("metaworld_sawyer"), checkpoint=str(ckpt), decode_imagined=True)
    policy.reset("open the drawer")
    out = policy.predict(observation())
    assert out.imagined_frames is None and policy.future_offsets == [] and policy.imagined_camera is None
    assert policy.pipeline.config.sequence_tokens == policy.pipeline.config.action_tokens


def test_broken_checkpoints_fail_loudly_naming_the_part(checkpoint, tmp_path):
    import shutil

    robot = load_robot("metaworld_sawyer")
    broken = tmp_path / "no_backbone"
    shutil.copytree(checkpoint, broken)
    shutil.rmtree(broken / "backbone")
    with pytest.raises(CheckpointError, match="backbone: missing"):
        make_backend("vita", robot, checkpoint=str(broken))
    wrong = tmp_path / "wrong_backend"
    shutil.copytree(checkpoint, wrong)
    config = json.loads((wrong / "config.json").read_text())
    (wrong / "config.json").write_text(json.dumps({**config, "backend": "videovla"}))
    with pytest.raises(CheckpointError, match="backend is 'videovla', not 'vita'"):
        make_backend("vita", robot, checkpoint=str(wrong))
    horizon = tmp_path / "horizon"
    shutil.copytree(checkpoint, horizon)
    (horizon / "config.json").write_text(json.dumps({**config, "policy": {**config["policy"], "horizon": 4}}))
    with pytest.raises(CheckpointError, match="do not match config.json"):
        make_backend("vita", robot, checkpoint=str(horizon))


@pytest.mark.slow
def test_both_training_stages_lower_their_losses_and_the_checkpoint_serves(tmp_path_factory):
    from vla_policy_node.train import main as train_main

    recorded = tmp_path_factory.mktemp("demos")
    record_episodes(recorded, 72, "[drawer-open]", "[2]", 40)
    ckpt = tmp_path_factory.mktemp("vita_ckpt")
    # the next-frame loss reaches the vision branch through the frozen VAE decoder: a VAE of 30 steps
    # barely responds to its latents, so nothing could be learned through it
    args = ["--family", "vita", "--data", str(recorded), "--output", str(ckpt), "--image-size", "32",
            "--vae-steps", "300", "--hidden-size", "32", "--num-layers", "2", "--codebook-size", "64",
            "--code-dim", "16", "--batch-size", "16", "--include-failed", "--save-every", "100000",
            "--tokenizer-steps", "250", "--steps", "250", "--lr", "2e-3"]
    assert train_main(args) == 0
    warm_up = json.loads((ckpt / "tokenizer_training" / "training_log.json").read_text())
    first, last = warm_up[0]["action_loss"], np.mean([r["action_loss"] for r in warm_up[-2:]])
    assert last < 0.5 * first, ("warm-up action loss", first, last)
    # rows are means over the 50 steps before them: the first such mean against the last ones
    first, last = warm_up[1]["vision_loss"], np.mean([r["vision_loss"] for r in warm_up[-2:]])
    assert last < first, ("warm-up vision loss", first, last)
    co_train = json.loads((ckpt / "training_log.json").read_text())
    first, last = co_train[0]["ce"], np.mean([r["ce"] for r in co_train[-2:]])
    assert last < 0.5 * first, ("co-train cross-entropy", first, last)
    config = json.loads((ckpt / "config.json").read_text())
    assert config["backend"] == "vita" and config["training"]["codebook_usage"]["all"]["used_codes"] > 1
    policy = make_backend("auto", load_robot("metaworld_sawyer"), checkpoint=str(ckpt))
    policy.reset("open the drawer")
    assert np.all(np.isfinite(policy.predict(observation()).actions))


@pytest.mark.slow
def test_the_shipped_checkpoint_drives_the_simulator_through_the_graph(tmp_path):
    """checkpoints/vita_metaworld behind the policy node (backend read from the checkpoint) presses the
    button of a held-out seed in lockstep, publishing its imagined next frames for the monitor."""
    from conftest import ROOT

    from vla_policy_node.data.bags import read_bag

    record_episodes(tmp_path, 74, "[button-press]", "[110]", 150, backend="auto",
                    checkpoint=str(ROOT / "checkpoints" / "vita_metaworld"))
    report = json.loads((tmp_path / "report.json").read_text())
    episode, = report["episodes"]
    assert report["policy"]["backend"] == "vita"
    assert episode["success"], episode
    assert report["summary"]["monitor"]["compared_frames"] > 0     # imagined frames reached the monitor
    commands = [m for topic, _, _, m in read_bag(tmp_path / "bags" / "button-press_s110") if topic == "/vla/sim/command"]
    assert commands and all(np.all(np.isfinite(c.values)) and np.all(np.abs(c.values) <= 1.0) for c in commands)
