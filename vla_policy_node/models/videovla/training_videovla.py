"""`vla-train`: train a VideoVLA checkpoint from rosbag2 episodes (recorded by this graph or any writer).

Stages: assemble the dataset per robot file -> train the frame VAE (unless one is given) ->
encode every frame once -> normalization statistics -> joint video/action diffusion training
(AdamW, cosine schedule, EMA weights) -> save_pretrained. CPU by default; `accelerate` places
the model on a GPU when asked (--device cuda). Seeds make runs repeatable; --resume continues.
"""

from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from .core.embodiment import load_robot
from .core.normalization import Normalizer
from .models.text_encoder import DEFAULT_TEXT_ENCODER, TextEncoder
from .models.video_vae import FrameCodec, build_small_vae, load_vae
from .models.videovla import VideoVLAConfig, VideoVLATransformer, training_loss
from .models.videovla_policy import VideoVLAModel


def compute_stats(values: np.ndarray, mode: str) -> dict:
    """Per-dimension statistics over axis 0 (values (N, dim) or (N, horizon, dim) for per-timestep)."""
    if mode == "quantile":
        lo, hi = np.quantile(values, 0.01, axis=0), np.quantile(values, 0.99, axis=0)
        span = np.maximum(hi - lo, 1e-3)          # constant dimensions keep a finite scale
        return {"q01": lo, "q99": lo + span}
    if mode == "mean_std":
        return {"mean": values.mean(0), "std": np.maximum(values.std(0), 1e-3)}
    if mode == "min_max":
        lo, hi = values.min(0), values.max(0)
        return {"min": lo, "max": lo + np.maximum(hi - lo, 1e-3)}
    raise ValueError(f"normalization mode '{mode}' unknown")


def resize_frames(frames: np.ndarray, size: int, batch: int = 512) -> torch.Tensor:
    """(N, H, W, 3) uint8 -> (N, size, size, 3) uint8 tensor (antialiased)."""
    out = []
    for i in range(0, len(frames), batch):
        x = torch.from_numpy(frames[i: i + batch]).permute(0, 3, 1, 2).float()
        x = F.interpolate(x, size=(size, size), mode="bilinear", antialias=True, align_corners=False)
        out.append(x.round().clamp(0, 255).to(torch.uint8).permute(0, 2, 3, 1))
    return torch.cat(out)


def train_vae(frames: torch.Tensor, steps: int, batch_size: int, lr: float, seed: int, latent_channels: int,
              downsample: int, width: int, device: torch.device):
    """Fit a small AutoencoderKL to the frames: L1 + MSE reconstruction, light KL."""
    torch.manual_seed(seed)
    vae = build_small_vae(latent_channels, downsample, width).to(device).train()
    opt = torch.optim.AdamW(vae.parameters(), lr=lr, weight_decay=1e-4)
    gen = torch.Generator().manual_seed(seed)
    bar = tqdm(range(steps), desc="vae", mininterval=5.0)
    for step in bar:
        idx = torch.randint(0, len(frames), (batch_size,), generator=gen)
        x = frames[idx].to(device).permute(0, 3, 1, 2).float() / 127.5 - 1.0
        post = vae.encode(x).latent_dist
        recon = vae.decode(post.sample()).sample
        kl = post.kl().mean() / x[0].numel()
        loss = F.l1_loss(recon, x) + F.mse_loss(recon, x) + 1e-4 * kl
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        for g in opt.param_groups:
            g["lr"] = lr * 0.5 * (1 + math.cos(math.pi * (step + 1) / steps))
        if step % 100 == 0:
            bar.set_postfix(loss=f"{loss.item():.4f}")
    return vae.eval()


def encode_all(codec: FrameCodec, frames: torch.Tensor, batch: int = 256) -> torch.Tensor:
    return torch.cat([codec.encode(frames[i: i + batch]).cpu() for i in range(0, len(frames), batch)])


def shift_frames(frames: torch.Tensor, dx: int, dy: int) -> torch.Tensor:
    """Translate (N, H, W, 3) uint8 frames by (dx, dy) pixels, repeating the border (DrQ-style shift)."""
    if dx == 0 and dy == 0:
        return frames
    pad = max(abs(dx), abs(dy))
    x = F.pad(frames.permute(0, 3, 1, 2).float(), (pad, pad, pad, pad), mode="replicate")
    h, w = frames.shape[1:3]
    x = x[:, :, pad - dy: pad - dy + h, pad - dx: pad - dx + w]
    return x.to(torch.uint8).permute(0, 2, 3, 1)


def augmented_latents(codec: FrameCodec, frames: torch.Tensor, copies: int, max_shift: int,
                      seed: int) -> torch.Tensor:
    """(copies, N, C, h, w) latents of the frames under `copies` random shifts (copy 0 unshifted).

    Shifts are drawn once per copy and encoded up front, so training pays no VAE cost per step;
    a sample uses the same copy for its current and future frames (one consistent camera shift)."""
    gen = torch.Generator().manual_seed(seed)
    out = [encode_all(codec, frames)]
    for _ in range(1, copies):
        dx, dy = (torch.randint(-max_shift, max_shift + 1, (2,), generator=gen)).tolist()
        out.append(encode_all(codec, shift_frames(frames, dx, dy)))
    return torch.stack(out)


def build_argparser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="vla-train", description=__doc__.splitlines()[0])
    p.add_argument("--data", nargs="+", required=True,
                   help="evaluator output folders (report.json + bags/) or rosbag2 folders")
    p.add_argument("--robot", default="metaworld_sawyer")
    p.add_argument("--output", required=True, help="checkpoint directory to write")
    p.add_argument("--steps", type=int, default=4000)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--lr", type=float, default=3e-4)
    p.add_argument("--vae-steps", type=int, default=1500)
    p.add_argument("--vae", default="", help="reuse a trained VAE folder instead of training one")
    p.add_argument("--vae-width", type=int, default=16, help="channels of the VAE's first level")
    p.add_argument("--vae-batch-size", type=int, default=16)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--resume", action="store_true", help="continue from <output>/training_state.pt")
    p.add_argument("--no-video-loss", action="store_true", help="ablation: train without the video loss")
    p.add_argument("--objective", choices=["ddpm", "flow"], default="ddpm")
    p.add_argument("--norm-mode", choices=["quantile", "mean_std", "min_max"], default="quantile")
    p.add_argument("--per-timestep-stats", action="store_true")
    p.add_argument("--hidden-size", type=int, default=192)
    p.add_argument("--num-layers", type=int, default=6)
    p.add_argument("--image-size", type=int, default=64)
    p.add_argument("--text-encoder", default=DEFAULT_TEXT_ENCODER)
    p.add_argument("--include-failed", action="store_true", help="also train on unsuccessful episodes")
    p.add_argument("--device", default="cpu")
    p.add_argument("--mixed-precision", choices=["no", "bf16", "fp16"], default="no")
    p.add_argument("--save-every", type=int, default=1000)
    p.add_argument("--shift-augment", type=int, default=0,
                   help="random image shift in pixels at --image-size (0 = none); DrQ-style augmentation")
    p.add_argument("--augment-copies", type=int, default=4, help="shifted copies of every frame encoded up front")
    return p


def main(argv=None) -> int:
    from accelerate import Accelerator
    from diffusers.training_utils import EMAModel

    from .data.dataset import chunk_samples, load_dataset

    args = build_argparser().parse_args(argv)
    accelerator = Accelerator(cpu=args.device == "cpu", mixed_precision=args.mixed_precision)
    device = accelerator.device
    torch.manual_seed(args.seed)
    np.random.seed(args.seed)
    out = Path(args.output)
    out.mkdir(parents=True, exist_ok=True)
    started = time.time()

    robot = load_robot(args.robot)
    emb = robot.config
    episodes = []
    for source in args.data:
        episodes += load_dataset(Path(source), robot, successful_only=not args.include_failed)
    if not episodes:
        raise SystemExit(f"vla-train: no usable episodes in {args.data}")
    camera = emb.cameras[0].name
    cfg = VideoVLAConfig(horizon=emb.action.horizon, action_dim=emb.action.dim, state_dim=len(emb.state.names),
                         hidden_size=args.hidden_size, num_layers=args.num_layers, objective=args.objective,
                         video_loss_weight=0.0 if args.no_video_loss else 1.0, image_size=args.image_size,
                         camera=camera)
    data = chunk_samples(episodes, cfg.horizon, cfg.future_offsets)
    n = len(data["actions"])
    print(f"dataset: {len(episodes)} episodes, {n} chunk samples, {len(data['instructions'])} instructions")

    frames = resize_frames(data["frames"][camera], cfg.image_size)
    if args.vae:
        vae = load_vae(args.vae).to(device)
    elif args.resume and (out / "vae").is_dir():
        vae = load_vae(out / "vae").to(device)
    else:
        vae = train_vae(frames, args.vae_steps, args.vae_batch_size, 1e-3, args.seed, cfg.latent_channels,
                        cfg.image_size // cfg.latent_size, args.vae_width, device)
    codec = FrameCodec(vae, cfg.image_size)
    copies = args.augment_copies if args.shift_augment > 0 else 1
    latents = augmented_latents(codec, frames, copies, args.shift_augment, args.seed)
    codec.scaling_factor = float(1.0 / latents[0].std())
    latents = latents * codec.scaling_factor

    actions_rows = np.concatenate([ep.actions for ep in episodes]).astype(np.float64)
    states_rows = np.concatenate([ep.states for ep in episodes]).astype(np.float64)
    action_stats = compute_stats(data["actions"] if args.per_timestep_stats else actions_rows, args.norm_mode)
    state_stats = compute_stats(states_rows, args.norm_mode)
    action_norm, state_norm = Normalizer(args.norm_mode, action_stats), Normalizer(args.norm_mode, state_stats)
    actions_n = torch.as_tensor(action_norm.normalize(data["actions"]), dtype=torch.float32)
    state_n = torch.as_tensor(state_norm.normalize(data["state"]), dtype=torch.float32)
    mask = torch.as_tensor(data["action_mask"], dtype=torch.float32)
    text_encoder = TextEncoder(args.text_encoder, cfg.text_tokens)
    text_table = torch.stack([text_encoder.encode(s)[0] for s in data["instructions"]]).cpu()
    frame_index = torch.as_tensor(data["frame_index"], dtype=torch.long)
    future_index = torch.as_tensor(data["future_index"], dtype=torch.long)
    instruction_id = torch.as_tensor(data["instruction_id"], dtype=torch.long)

    model = VideoVLATransformer(cfg)
    optimizer = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=1e-4)
    warmup = min(200, args.steps // 10)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: min(1.0, (s + 1) / max(1, warmup)) * 0.5 * (
        1 + math.cos(math.pi * min(s, args.steps) / args.steps)))
    ema = EMAModel(model.parameters(), decay=0.999, use_ema_warmup=True, power=0.75)
    start_step = 0
    history: list[dict] = []
    state_file = out / "training_state.pt"
    if args.resume and state_file.is_file():
        state = torch.load(state_file, map_location="cpu", weights_only=False)
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        ema.load_state_dict(state["ema"])
        start_step = state["step"]
        log_file = out / "training_log.json"
        history = json.loads(log_file.read_text()) if log_file.is_file() else []
        print(f"resumed at step {start_step}")
    model, optimizer = accelerator.prepare(model, optimizer)
    ema.to(device)
    gen = torch.Generator().manual_seed(args.seed + start_step)
    bar = tqdm(range(start_step, args.steps), desc="videovla", mininterval=5.0, initial=start_step,
               total=args.steps)

    def save(step: int, final: bool) -> None:
        unwrapped = accelerator.unwrap_model(model)
        torch.save({"model": unwrapped.state_dict(), "optimizer": optimizer.state_dict(),
                    "scheduler": scheduler.state_dict(), "ema": ema.state_dict(), "step": step}, state_file)
        export = VideoVLATransformer(cfg)
        export.load_state_dict(unwrapped.state_dict())
        ema.copy_to(export.parameters())
        meta = {"embodiment": emb.name, "action_names": list(emb.action.names),
                "state_names": list(emb.state.names), "action_space": emb.action.space}
        training = {"steps": step, "batch_size": args.batch_size, "lr": args.lr, "seed": args.seed,
                    "episodes": len(episodes), "samples": n, "video_loss": not args.no_video_loss,
                    "data": [str(d) for d in args.data], "shift_augment": args.shift_augment, "wall_time_s": round(time.time() - started, 1),
                    "loss_history": history[-50:], "final": final}
        VideoVLAModel(cfg, export, codec, text_encoder, args.norm_mode, action_stats, state_stats, meta) \
            .save_pretrained(out, training)

    model.train()
    for step in bar:
        idx = torch.randint(0, n, (args.batch_size,), generator=gen)
        aug = torch.randint(0, copies, (args.batch_size,), generator=gen)
        aug_f = aug.view(-1, *([1] * (future_index.dim() - 1))).expand_as(future_index[idx])
        batch = dict(text=text_table[instruction_id[idx]], v1=latents[aug, frame_index[idx]],
                     future=latents[aug_f, future_index[idx]], actions=actions_n[idx], action_mask=mask[idx],
                     state=state_n[idx])
        batch = {k: v.to(device) for k, v in batch.items()}
        with accelerator.autocast():
            losses = training_loss(model, **batch)
        optimizer.zero_grad(set_to_none=True)
        accelerator.backward(losses["loss"])
        accelerator.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        scheduler.step()
        ema.step(accelerator.unwrap_model(model).parameters())
        if step % 50 == 0:
            row = {k: round(float(v.detach()), 5) for k, v in losses.items()} | {"step": step}
            history.append(row)
            bar.set_postfix(action=row["action_loss"], video=row["video_loss"])
        if (step + 1) % args.save_every == 0 and step + 1 < args.steps:
            save(step + 1, final=False)
    save(args.steps, final=True)
    (out / "training_log.json").write_text(json.dumps(history, indent=1))
    print(f"checkpoint written to {out} ({time.time() - started:.0f} s)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
