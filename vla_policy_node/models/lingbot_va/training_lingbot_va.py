"""Training a LingBot-VA checkpoint (`vla-train --family lingbot_va`).

Stages: per-step frames resized to the model input -> the frame VAE (trained here unless one is
given) -> every frame encoded once -> normalization statistics -> teacher-forced flow matching in
the shared loop -> a checkpoint directory (LingBotVAPipeline.save_pretrained).

A sample is one autoregressive step at a random step t of a demonstration, over a real history
of up to `history_frames` frames drawn back from t with gaps of 1..max_frame_gap steps (the
spacings sync and async control observe at), each followed by the actions that executed until
the next one. Three kinds (teacher forcing throughout; the paper's Eq. 11-13):
- predict:   the video chunk (frames t+4, t+8 as changes from z_t) and the actions t..t+7;
- fdm:       k in-flight actions a_t..a_t+k-1 are given; the frame they lead to (t+k) is the target;
- grounded:  as fdm, with that frame given (noised to a level partial denoising leaves), and the
             chunk predicted from t+k: what FDM-grounded asynchronous inference asks.
In training the history's actions are the expert's; in closed loop they are the model's own. Action-
history dropout and noise (`--action-history-dropout`, `--action-history-noise`) keep the model from
predicting by continuing them (the copycat problem of behaviour cloning with history).
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import torch
from accelerate.utils import broadcast_object_list

from ..components.diffusion import make_scheduler
from ..components.text_encoder import DEFAULT_TEXT_ENCODER
from ..checkpoint import CheckpointError, resolve_checkpoint
from ..components.loading import vae_location
from ..components.training import (TrainingJob, add_frame_vae_arguments, chunk_length, earlier_stages, encode_all,
                                   frame_vae, refuse_other_network, run_training, training_arrays,
                                   training_samples)
from ..components.vae import FrameCodec
from .configuration_lingbot_va import LingBotVAConfig
from .modeling_lingbot_va import LingBotVATransformer, training_loss
from .policy_lingbot_va import LingBotVAPipeline

PREDICT, FDM, GROUNDED = 0, 1, 2


def sample_indices(cfg: LingBotVAConfig, idx: np.ndarray, step: np.ndarray, length: np.ndarray,
                   rng: np.random.Generator) -> dict:
    """Row indices, step times and validity of every slot of a batch of samples (see the module
    docstring). idx: (B,) rows of the current frame; step, length: per row, its step in its episode
    and the episode's length. Rows index the concatenated per-step arrays."""
    b = len(idx)
    w, g, k_frames, h = cfg.history_frames, cfg.max_frame_gap, cfg.frames_per_chunk, cfg.horizon
    offsets = np.asarray(cfg.future_offsets)
    out = {name: np.zeros(shape, np.int64) for name, shape in (
        ("hist_rows", (b, w)), ("hist_time", (b, w)), ("ha_rows", (b, w, g)), ("ha_time", (b, w, g)),
        ("inf_rows", (b, g)), ("inf_time", (b, g)), ("img_row", (b,)), ("img_time", (b,)),
        ("qv_rows", (b, k_frames)), ("qv_time", (b, k_frames)), ("qa_rows", (b, h)), ("qa_time", (b, h)),
        ("ref_row", (b,)), ("kind", (b,)))}
    for name, shape in (("hist_valid", (b, w)), ("ha_valid", (b, w, g)), ("inf_valid", (b, g)), ("img_valid", (b,)),
                        ("qv_valid", (b, k_frames)), ("qa_mask", (b, h))):
        out[name] = np.zeros(shape, bool)
    u = rng.random(b)
    kinds = np.where(u < cfg.fdm_prob, FDM, np.where(u < cfg.fdm_prob + cfg.grounded_prob, GROUNDED, PREDICT))
    in_flight = rng.integers(1, h, b)
    n_hist = rng.integers(1, w + 1, b)
    gaps = rng.integers(1, g + 1, (b, w))
    for i in range(b):
        r, s, n = int(idx[i]), int(step[idx[i]]), int(length[idx[i]])
        start, kind, k = r - s, int(kinds[i]), int(in_flight[i])
        if kind != PREDICT and s + k > n - 1:
            kind = PREDICT
        frames = [s]
        for j in range(n_hist[i] - 1):
            if frames[-1] - gaps[i, j] < 0:
                break
            frames.append(frames[-1] - gaps[i, j])
        frames = frames[::-1]
        for j, f in enumerate(frames):
            out["hist_rows"][i, j], out["hist_time"][i, j], out["hist_valid"][i, j] = start + f, f, True
            if j + 1 < len(frames):
                count = frames[j + 1] - f
                out["ha_rows"][i, j, :count] = start + f + np.arange(count)
                out["ha_time"][i, j, :count] = f + np.arange(count)
                out["ha_valid"][i, j, :count] = True
        out["ref_row"][i], out["kind"][i], base = start + s, kind, s
        if kind != PREDICT:
            out["inf_rows"][i, :k] = start + s + np.arange(k)
            out["inf_time"][i, :k] = s + np.arange(k)
            out["inf_valid"][i, :k] = True
        if kind == FDM:
            out["qv_rows"][i], out["qv_time"][i] = start + s + k, s + k
            out["qv_valid"][i, 0] = True
            continue
        if kind == GROUNDED:
            out["img_row"][i], out["img_time"][i], out["img_valid"][i] = start + s + k, s + k, True
            base = s + k
        out["qv_rows"][i] = start + np.minimum(base + offsets, n - 1)
        out["qv_time"][i] = base + offsets
        out["qv_valid"][i] = True
        steps = base + np.arange(h)
        out["qa_rows"][i] = start + np.minimum(steps, n - 1)
        out["qa_time"][i] = steps
        out["qa_mask"][i] = steps < n
    return out


def augment_action_history(actions: torch.Tensor, valid: torch.Tensor, dropout: float, noise: float,
                           gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """History actions (B, W, G, A; normalized) and their validity (B, W, G) after action-history
    augmentation: each sample's history actions hidden altogether with probability `dropout` (its
    frames and proprio stay), and Gaussian noise of std `noise` added to the rest."""
    if dropout > 0:
        hidden = torch.rand(actions.shape[0], generator=gen) < dropout
        valid = valid & ~hidden[:, None, None]
    if noise > 0:
        actions = actions + noise * torch.randn(actions.shape, generator=gen, dtype=actions.dtype)
    return actions, valid


# configuration keys a second stage (--init-from) must share with its source: the network and its inputs
INIT_KEYS = ("camera", "image_size", "text_tokens", "text_dim", "state_dim", "use_proprio", "latent_channels",
             "latent_size", "patch_size", "frames_per_chunk", "actions_per_frame", "horizon", "action_dim",
             "video_width", "action_width", "num_layers", "num_heads", "num_train_timesteps")


def initial_checkpoint(path: str, cfg: LingBotVAConfig, norm_mode: str) -> LingBotVAPipeline:
    """The `--init-from` checkpoint, refused (naming the key) unless it is the network this run builds,
    normalized the way this run normalizes."""
    try:
        source = LingBotVAPipeline.from_pretrained(path)
    except CheckpointError as exc:
        raise CheckpointError(f"--init-from: {exc}") from None
    refuse_other_network(path, {k: getattr(source.config, k) for k in INIT_KEYS},
                         {k: getattr(cfg, k) for k in INIT_KEYS})
    if source.norm_mode != norm_mode:
        raise CheckpointError(f"--init-from {path}/normalization.json: mode is '{source.norm_mode}', this run "
                              f"normalizes '{norm_mode}' (pass --norm-mode {source.norm_mode})")
    return source


class LingBotVATrainer:
    family = "lingbot_va"
    config_class = LingBotVAConfig

    @classmethod
    def add_arguments(cls, p: argparse.ArgumentParser) -> None:
        p.add_argument("--video-width", type=int, default=128)
        p.add_argument("--action-width", type=int, default=64)
        p.add_argument("--num-layers", type=int, default=4)
        p.add_argument("--num-heads", type=int, default=4)
        p.add_argument("--num-inference-steps", type=int, default=10, help="action denoising steps")
        p.add_argument("--num-video-steps", type=int, default=5,
                       help="video steps of the same schedule (partial denoising; = --num-inference-steps for full)")
        p.add_argument("--history-frames", type=int, default=4, help="real frames of history per sample")
        p.add_argument("--max-frame-gap", type=int, default=8, help="history frames are 1..this many steps apart")
        p.add_argument("--fdm-prob", type=float, default=0.25, help="share of forward-dynamics samples")
        p.add_argument("--grounded-prob", type=float, default=0.25, help="share of samples predicting after "
                                                                          "an imagined in-flight outcome")
        p.add_argument("--cache-frames", type=int, default=4, help="the checkpoint's KV cache window (frames)")
        p.add_argument("--action-history-dropout", type=float, default=0.0,
                       help="share of samples whose history actions are hidden (frames and proprio stay), so the "
                            "model does not predict by continuing them")
        p.add_argument("--action-history-noise", type=float, default=0.0,
                       help="std of Gaussian noise on the history actions (normalized units)")
        p.add_argument("--init-from", default="",
                       help="a finished lingbot_va checkpoint to continue training from (its network, VAE, latent "
                            "scales and normalization statistics; a fresh optimizer and schedule): a second stage "
                            "of --steps")
        p.add_argument("--image-size", type=int, default=64)
        p.add_argument("--patch-size", type=int, default=2)
        p.add_argument("--text-encoder", default=DEFAULT_TEXT_ENCODER)
        p.add_argument("--no-proprio", action="store_true", help="camera and instruction only")
        add_frame_vae_arguments(p)

    def make_config(self, args, robot) -> LingBotVAConfig:
        emb = robot.config
        horizon = chunk_length(args, robot)
        per_frame = 4 if horizon % 4 == 0 else horizon
        return LingBotVAConfig(
            camera=emb.cameras[0].name, image_size=args.image_size, state_dim=len(emb.state.names),
            use_proprio=not args.no_proprio, latent_size=args.image_size // args.vae_downsample,
            patch_size=args.patch_size, frames_per_chunk=horizon // per_frame, actions_per_frame=per_frame,
            horizon=horizon, action_dim=emb.action.dim, video_width=args.video_width,
            action_width=args.action_width, num_layers=args.num_layers, num_heads=args.num_heads,
            num_inference_steps=args.num_inference_steps, num_video_steps=args.num_video_steps,
            history_frames=args.history_frames, max_frame_gap=args.max_frame_gap, fdm_prob=args.fdm_prob,
            grounded_prob=args.grounded_prob, cache_frames=args.cache_frames,
            action_history_dropout=args.action_history_dropout, action_history_noise=args.action_history_noise)

    def run(self, args, episodes: list, robot, out: Path) -> dict:
        started = time.time()
        if args.per_timestep_stats:
            raise ValueError("--per-timestep-stats: lingbot_va normalizes every action alike (the cache holds "
                             "executed actions, which have no chunk position)")
        cfg = self.make_config(args, robot)
        device = torch.device(args.device)
        state, data, n, frames = training_samples(episodes, cfg)
        source = initial_checkpoint(args.init_from, cfg, args.norm_mode) if args.init_from else None
        if source is not None:
            args.vae = str(vae_location(resolve_checkpoint(args.init_from), source.meta))  # latents it knows
        vae = frame_vae(args, frames, cfg.latent_channels, out, device, state)
        codec = FrameCodec(vae, cfg.image_size)
        latents = encode_all(codec, frames)
        codec.scaling_factor = (source.codec.scaling_factor if source is not None
                                else broadcast_object_list([float(1.0 / latents.std())])[0])
        latents = latents * codec.scaling_factor
        lengths = np.array([len(e) for e in episodes if len(e)], dtype=np.int64)
        length = np.repeat(lengths, lengths)
        step = np.asarray(data["step"])
        change = latents[np.minimum(np.arange(n) + cfg.horizon, n - 1)] - latents
        change = change[step + cfg.horizon < length]
        cfg.delta_scaling_factor = (source.config.delta_scaling_factor if source is not None else
                                    broadcast_object_list([float(1.0 / change.std().clamp(min=1e-6))])[0])

        arrays = training_arrays(args, episodes, data, robot, self.family, cfg.text_tokens,
                                 None if source is None else (source.action_stats, source.state_stats))
        row_actions = arrays.actions[:, 0]            # a chunk's first action is its row's action
        instruction_id, text_table = arrays.instruction_id, arrays.text_table
        scale = cfg.delta_scaling_factor

        def make_batch(gen: torch.Generator, batch_size: int) -> dict:
            seed = int(torch.randint(0, 2 ** 31 - 1, (1,), generator=gen))
            rng = np.random.default_rng(seed)
            idx = rng.integers(0, n, batch_size)
            s = {k: torch.as_tensor(v) for k, v in sample_indices(cfg, idx, step, length, rng).items()}
            ref = latents[s["ref_row"]]
            hist_actions, hist_action_valid = augment_action_history(
                row_actions[s["ha_rows"]], s["ha_valid"], cfg.action_history_dropout, cfg.action_history_noise, gen)
            return dict(
                hist_latents=latents[s["hist_rows"]], hist_state=arrays.state[s["hist_rows"]],
                hist_time=s["hist_time"].float(), hist_valid=s["hist_valid"],
                hist_state_valid=s["hist_valid"] & cfg.use_proprio,
                hist_actions=hist_actions, hist_action_time=s["ha_time"].float(),
                hist_action_valid=hist_action_valid,
                inflight=row_actions[s["inf_rows"]], inflight_time=s["inf_time"].float(), inflight_valid=s["inf_valid"],
                imagined=(latents[s["img_row"]] - ref) * scale, imagined_time=s["img_time"].float(),
                imagined_valid=s["img_valid"], imagined_level=torch.rand(batch_size, generator=gen) * 0.6,
                query_video=(latents[s["qv_rows"]] - ref[:, None]) * scale, query_video_time=s["qv_time"].float(),
                query_video_valid=s["qv_valid"],
                query_actions=row_actions[s["qa_rows"]], query_action_time=s["qa_time"].float(),
                query_action_mask=s["qa_mask"].float(),
                text=text_table[instruction_id[torch.as_tensor(idx)]])

        def loss(model, batch: dict) -> dict:
            return training_loss(model, batch, cfg.noisy_history_prob, cfg.noisy_history_max, cfg.video_loss_weight)

        def export(model, step_: int, final: bool, record: dict) -> None:
            network = LingBotVATransformer(**cfg.transformer_config())
            network.load_state_dict(model.state_dict())
            LingBotVAPipeline(cfg, network, codec, arrays.text_encoder, make_scheduler("flow", cfg.num_train_timesteps),
                              args.norm_mode, arrays.action_stats, arrays.state_stats, arrays.meta
                              ).save_pretrained(out, record)

        model = LingBotVATransformer(**cfg.transformer_config())
        facts = {**arrays.facts, "history_frames": cfg.history_frames, "fdm_prob": cfg.fdm_prob,
                 "grounded_prob": cfg.grounded_prob, "action_history_dropout": cfg.action_history_dropout,
                 "action_history_noise": cfg.action_history_noise}
        if source is not None:
            model.load_state_dict(source.transformer.state_dict())
            facts |= earlier_stages(Path(args.init_from), source.meta.get("training", {}))
            del source
        return run_training(args, TrainingJob(model, make_batch, loss, export, facts), out, self.family,
                            setup_s=time.time() - started)
