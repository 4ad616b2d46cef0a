"""Training a VITA checkpoint (`vla-train --family vita`): the paper's two stages.

    warm-up  (--stage tokenizer): the vision tokenizer (frame-pair features -> codes -> next frame,
             L1 + SSIM), the action tokenizer (DCT chunk -> codes -> chunk, MSE) and the shared
             codebook, trained together; saved to <output>/tokenizer
    co-train (--stage backbone): codebook and encoders frozen; every sample's target codes computed
             once; the autoregressive backbone learns them (cross-entropy) while both decoders learn
             to decode its greedy codes and hidden states (action MSE + next-frame L1 + SSIM)
--stage all (default) runs both. Each stage resumes from its own training_state.pt (the
tokenizer's under <output>/tokenizer_training). Frame features are the frozen frame VAE's latents
(--vae: reuse another family's, as bc does, so the families see the same pixels).
"""

from __future__ import annotations

import argparse
import copy
import time
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F
from accelerate.utils import broadcast_object_list

from ..components.text_encoder import DEFAULT_TEXT_ENCODER
from ..components.training import (TrainingJob, add_frame_vae_arguments, chunk_length, encode_all, frame_vae,
                                   run_training, training_arrays, training_samples)
from ..components.vae import FrameCodec, load_vae
from .configuration_vita import VITAConfig
from .modeling_vita import VITABackbone, VITATokenizer, codebook_usage, frame_loss, masked_mse
from .policy_vita import VITAPipeline

STAGES = ("all", "tokenizer", "backbone")


def pixels(frames_uint8: torch.Tensor) -> torch.Tensor:
    """(B, S, S, 3) uint8 -> (B, 3, S, S) float in [-1, 1]."""
    return frames_uint8.permute(0, 3, 1, 2).float() / 127.5 - 1.0


def residual_frame(codec: FrameCodec, current_px: torch.Tensor, f_now: torch.Tensor,
                   f_next_pred: torch.Tensor) -> torch.Tensor:
    """The imagined next frame as the current frame plus the decoded change of the latent (gradient
    flows through the frozen VAE decoder into the prediction): where nothing moves, exactly I_t."""
    vae, scale = codec.vae, codec.scaling_factor
    with torch.no_grad():
        now = vae.decode(f_now / scale).sample
    return current_px + vae.decode(f_next_pred / scale).sample - now


class VITAWarmUp(nn.Module):
    """The warm-up objective (`forward(**batch)` -> losses): both tokenizers and the codebook.
    Without the next-frame objective the vision branch is frozen (it is never used)."""

    def __init__(self, tokenizer: VITATokenizer, codec: FrameCodec, vision: bool):
        super().__init__()
        self.tokenizer, self.vision = tokenizer, vision
        self._codec = [codec]                    # the frozen frame VAE: used, not trained or saved here
        if not vision:
            tokenizer.freeze(vision_encoder=True, vision_decoder=True)

    def forward(self, f_now, f_next, now_px, next_px, actions, mask) -> dict:
        tok = self.tokenizer
        z_v = tok.encode_vision(f_now, f_next) if self.vision else None
        q_v, q_a, commit = tok.quantize(z_v, tok.encode_action(actions))
        action_loss = masked_mse(tok.decode_action(q_a[0]), actions, mask)
        vision_loss = action_loss.new_zeros(())
        if self.vision:
            predicted = residual_frame(self._codec[0], now_px, f_now, tok.decode_vision(f_now, q_v[0]))
            vision_loss = frame_loss(predicted, next_px)
        return {"loss": action_loss + vision_loss + commit, "action_loss": action_loss.detach(),
                "vision_loss": vision_loss.detach(), "commit_loss": commit.detach()}


class VITACoTrain(nn.Module):
    """The co-train objective (`forward(**batch)` -> losses): the backbone and both decoders learn,
    encoders and codebook stay as the warm-up left them."""

    def __init__(self, backbone: VITABackbone, tokenizer: VITATokenizer, codec: FrameCodec, cfg: VITAConfig):
        super().__init__()
        self.backbone, self.tokenizer, self.cfg = backbone, tokenizer, cfg
        self._codec = [codec]
        self.vision_tokens = cfg.vision_tokens if cfg.next_frame_objective else 0
        tokenizer.freeze(vision_encoder=True, action_encoder=True, codebook=True,
                         vision_decoder=not cfg.next_frame_objective)

    def train(self, mode: bool = True):
        super().train(mode)
        self.tokenizer.quantizer.eval()              # the codebook stays as the warm-up left it
        self.tokenizer.action_quantizer.eval()
        return self

    def forward(self, text, f_now, state, tokens, actions, mask, now_px, next_px) -> dict:
        cfg, tok, lv = self.cfg, self.tokenizer, self.vision_tokens
        logits, context = self.backbone(text, f_now, state, tokens)
        ce = F.cross_entropy(logits.flatten(0, 1).float(), tokens.flatten())
        greedy = logits.argmax(-1).detach()
        codes_a = tok.codes(greedy[:, lv:], "action") + context[:, lv:]
        action_loss = masked_mse(tok.decode_action(codes_a), actions, mask)
        vision_loss = action_loss.new_zeros(())
        if lv:
            codes_v = tok.codes(greedy[:, :lv], "vision") + context[:, :lv]
            predicted = residual_frame(self._codec[0], now_px, f_now, tok.decode_vision(f_now, codes_v))
            vision_loss = frame_loss(predicted, next_px)
        return {"loss": ce + cfg.action_loss_weight * action_loss + cfg.vision_loss_weight * vision_loss,
                "ce": ce.detach(), "action_loss": action_loss.detach(), "vision_loss": vision_loss.detach(),
                "token_accuracy": (greedy == tokens).float().mean()}


def _call(model: nn.Module, batch: dict) -> dict:
    """The job's loss: the model's own forward (so data-parallel wrappers synchronize gradients)."""
    return model(**batch)


class VITATrainer:
    family = "vita"

    @classmethod
    def add_arguments(cls, p: argparse.ArgumentParser) -> None:
        p.add_argument("--stage", choices=STAGES, default="all", help="tokenizer: warm-up only; backbone: "
                       "co-train from <output>/tokenizer; all: both")
        p.add_argument("--tokenizer-steps", type=int, default=3000, help="warm-up optimizer steps")
        p.add_argument("--tokenizer-lr", type=float, default=1e-3)
        p.add_argument("--future-offset", type=int, default=8, help="steps ahead of the next frame the vision "
                       "tokens describe")
        p.add_argument("--codebook-size", type=int, default=256)
        p.add_argument("--code-dim", type=int, default=64)
        p.add_argument("--vision-tokens", type=int, default=4)
        p.add_argument("--action-tokens", type=int, default=4)
        p.add_argument("--dct-keep", type=int, default=0, help="DCT coefficients kept per action channel (0 = all)")
        p.add_argument("--separate-codebooks", action="store_true", help="ablation: one codebook per modality")
        p.add_argument("--no-next-frame", action="store_true",
                       help="ablation: no vision tokens in the sequence, no next-frame objective")
        p.add_argument("--hidden-size", type=int, default=192)
        p.add_argument("--num-layers", type=int, default=4)
        p.add_argument("--num-heads", type=int, default=4)
        p.add_argument("--image-size", type=int, default=64)
        p.add_argument("--text-encoder", default=DEFAULT_TEXT_ENCODER)
        p.add_argument("--no-proprio", action="store_true", help="camera and instruction only")
        add_frame_vae_arguments(p)

    @staticmethod
    def make_config(args, robot) -> VITAConfig:
        emb = robot.config
        return VITAConfig(camera=emb.cameras[0].name, image_size=args.image_size,
                          latent_size=args.image_size // args.vae_downsample, state_dim=len(emb.state.names),
                          use_proprio=not args.no_proprio, future_offsets=[args.future_offset],
                          codebook_size=args.codebook_size, code_dim=args.code_dim,
                          shared_codebook=not args.separate_codebooks, vision_tokens=args.vision_tokens,
                          action_tokens=args.action_tokens, dct_keep=args.dct_keep, horizon=chunk_length(args, robot),
                          action_dim=emb.action.dim, hidden_size=args.hidden_size, num_layers=args.num_layers,
                          num_heads=args.num_heads, next_frame_objective=not args.no_next_frame)

    def run(self, args, episodes: list, robot, out: Path) -> dict:
        started = time.time()
        cfg = self.make_config(args, robot)
        device = torch.device(args.device)
        state, data, n, frames = training_samples(episodes, cfg)
        vae_dir = out / "vae"
        if not args.vae and (args.resume or args.stage == "backbone") and vae_dir.is_dir():
            vae = load_vae(vae_dir).to(device)          # the warm-up's: its codes are in its latent space
        else:
            vae = frame_vae(args, frames, cfg.latent_channels, out, device, state)
            if not args.vae and state.is_main_process:
                vae.save_pretrained(vae_dir)            # a later stage or a resumed run finds it
        codec = FrameCodec(vae, cfg.image_size)
        latents = encode_all(codec, frames)
        codec.scaling_factor = broadcast_object_list([float(1.0 / latents.std())])[0]
        latents = latents * codec.scaling_factor
        cfg.latent_channels, cfg.latent_size = int(latents.shape[1]), int(latents.shape[-1])   # the VAE's own
        frame_index = torch.as_tensor(data["frame_index"], dtype=torch.long)
        next_index = torch.as_tensor(data["future_index"][:, 0], dtype=torch.long)

        arrays = training_arrays(args, episodes, data, robot, self.family, cfg.text_tokens)
        cfg.text_dim = arrays.text_encoder.hidden_size
        actions_n = arrays.actions.clamp(-1, 1)             # the decoded chunk is clipped to [-1, 1] too
        facts = dict(arrays.facts)
        vision = cfg.next_frame_objective

        def samples(idx: torch.Tensor) -> dict:
            return dict(f_now=latents[frame_index[idx]], now_px=pixels(frames[frame_index[idx]]),
                        next_px=pixels(frames[next_index[idx]]), actions=actions_n[idx], mask=arrays.action_mask[idx])

        # ---- stage 1: tokenizers and the shared codebook ---------------------------------
        warm_up_dir = out / "tokenizer_training"                 # its state, log and exported tokenizer
        tokenizer_dir = warm_up_dir / "tokenizer"
        warm_up_record: dict = {}
        if args.stage in ("all", "tokenizer"):
            warm_up_dir.mkdir(parents=True, exist_ok=True)

            def warm_up_batch(gen: torch.Generator, batch_size: int) -> dict:
                idx = torch.randint(0, n, (batch_size,), generator=gen)
                return samples(idx) | dict(f_next=latents[next_index[idx]])

            def warm_up_export(model: VITAWarmUp, step: int, final: bool, record: dict) -> None:
                model.tokenizer.save_pretrained(tokenizer_dir)
                warm_up_record.update(record)

            stage_args = copy.copy(args)
            # the codebook follows the raw encoder outputs (EMA of its own), so the encoders are saved raw
            stage_args.steps, stage_args.lr, stage_args.ema_decay = args.tokenizer_steps, args.tokenizer_lr, 0.0
            torch.manual_seed(args.seed)
            warm_up = VITAWarmUp(VITATokenizer(**cfg.tokenizer_config()), codec, vision)
            run_training(stage_args, TrainingJob(warm_up, warm_up_batch, _call, warm_up_export, dict(facts)),
                         warm_up_dir, "vita-tokenizer", setup_s=time.time() - started)
        if args.stage == "tokenizer":
            return warm_up_record
        if not (tokenizer_dir / "config.json").is_file():
            raise SystemExit(f"vla-train: the co-train stage needs the warm-up's tokenizer in {tokenizer_dir}")

        # ---- stage 2: the autoregressive backbone and the decoders ------------------------
        co_train_started = time.time()
        tokenizer = VITATokenizer.from_pretrained(tokenizer_dir).to(device)
        resuming = args.resume and (out / "training_state.pt").is_file()
        if resuming:       # the targets come from the codebook and encoders this co-train run began with
            saved = torch.load(out / "training_state.pt", map_location="cpu", weights_only=False)["model"]
            tokenizer.load_state_dict({k.split(".", 1)[1]: v for k, v in saved.items() if k.startswith("tokenizer.")})
        vision_idx, action_idx = [], []
        for i in range(0, n, 512):
            sl = slice(i, min(n, i + 512))
            v, a = tokenizer.tokenize(latents[frame_index[sl]].to(device),
                                      latents[next_index[sl]].to(device) if vision else None, actions_n[sl].to(device))
            vision_idx.append(v.cpu() if vision else torch.zeros(len(a), 0, dtype=torch.long))
            action_idx.append(a.cpu())
        vision_idx, action_idx = torch.cat(vision_idx), torch.cat(action_idx)
        targets = torch.cat([vision_idx, action_idx], 1)
        usage = {"action": codebook_usage(action_idx, cfg.codebook_size)}
        if vision:
            usage["vision"] = codebook_usage(vision_idx, cfg.codebook_size)
            if cfg.shared_codebook:                  # one index space: the union means something
                usage["all"] = codebook_usage(targets, cfg.codebook_size)
        state.print(f"codebook use over the training samples: {usage}")
        facts |= {"codebook_usage": usage, "tokenizer_steps": args.tokenizer_steps}

        def co_train_batch(gen: torch.Generator, batch_size: int) -> dict:
            idx = torch.randint(0, n, (batch_size,), generator=gen)
            return samples(idx) | dict(text=arrays.text_table[arrays.instruction_id[idx]], state=arrays.state[idx],
                                       tokens=targets[idx])

        def co_train_export(model: VITACoTrain, step: int, final: bool, record: dict) -> None:
            VITAPipeline(cfg, model.tokenizer, model.backbone, codec, arrays.text_encoder, args.norm_mode,
                         arrays.action_stats, arrays.state_stats, arrays.meta).save_pretrained(out, record)

        # wall time: the warm-up's counts once, when the co-train stage starts (not when it resumes),
        # and every run's own set-up (frames, VAE, codes) counts
        warm_up_s = 0.0 if resuming else float(warm_up_record.get("wall_time_s") or _recorded_wall_time(warm_up_dir))
        setup_s = warm_up_s + (time.time() - co_train_started if warm_up_record else time.time() - started)
        model = VITACoTrain(VITABackbone(**cfg.backbone_config()), tokenizer, codec, cfg)
        return run_training(args, TrainingJob(model, co_train_batch, _call, co_train_export, facts), out,
                            self.family, setup_s=setup_s)


def _recorded_wall_time(stage_dir: Path) -> float:
    """Wall time (s) a finished stage recorded in its training state, 0 when there is none."""
    state_file = stage_dir / "training_state.pt"
    if not state_file.is_file():
        return 0.0
    return float(torch.load(state_file, map_location="cpu", weights_only=False).get("wall_time_s", 0.0))
