"""Training pieces every family shares: statistics, the frame VAE, augmentation, and the loop.

The loop (`run_training`) owns what is not family-specific: AdamW, cosine schedule with warm-up
(diffusers.optimization), EMA weights (diffusers.training_utils.EMAModel), accelerate for the
device, mixed precision and data parallelism over processes (`accelerate launch` / `torchrun`),
gradient accumulation, seeded batches, periodic checkpoints and `--resume` from
<output>/training_state.pt (training wall time accumulates across resumed runs).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from ..checkpoint import CheckpointError
from .vae import FrameCodec, build_small_vae, load_vae, resize_frames


def compute_stats(values: np.ndarray, mode: str) -> dict:
    """Per-dimension statistics over axis 0 (values (N, dim), or (N, horizon, dim) per timestep)."""
    if mode == "quantile":
        lo, hi = np.quantile(values, 0.01, axis=0), np.quantile(values, 0.99, axis=0)
        return {"q01": lo, "q99": lo + np.maximum(hi - lo, 1e-3)}   # constant dimensions keep a finite scale
    if mode == "mean_std":
        return {"mean": values.mean(0), "std": np.maximum(values.std(0), 1e-3)}
    if mode == "min_max":
        lo, hi = values.min(0), values.max(0)
        return {"min": lo, "max": lo + np.maximum(hi - lo, 1e-3)}
    raise ValueError(f"normalization mode '{mode}' unknown")


def train_vae(frames: torch.Tensor, steps: int, batch_size: int, lr: float, seed: int, latent_channels: int,
              downsample: int, width: int, device: torch.device):
    """Fit a small AutoencoderKL to (N, S, S, 3) uint8 frames: L1 + MSE reconstruction, light KL."""
    from diffusers.optimization import get_cosine_schedule_with_warmup

    torch.manual_seed(seed)
    vae = build_small_vae(latent_channels, downsample, width).to(device).train()
    opt = torch.optim.AdamW(vae.parameters(), lr=lr, weight_decay=1e-4)
    schedule = get_cosine_schedule_with_warmup(opt, 0, steps)
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
        schedule.step()
        if step % 100 == 0:
            bar.set_postfix(loss=f"{loss.item():.4f}")
    return vae.eval()


def training_samples(episodes: list, cfg) -> tuple:
    """(accelerate PartialState, chunk_samples output, sample count, frames (N, S, S, 3) uint8 of the
    configured camera at the model input size) for a family configuration (horizon, future_offsets,
    camera, image_size)."""
    from accelerate import PartialState

    from ...data.dataset import chunk_samples

    state = PartialState()
    data = chunk_samples(episodes, cfg.horizon, cfg.future_offsets)
    n = len(data["actions"])
    state.print(f"dataset: {len(episodes)} episodes, {n} chunk samples, {len(data['instructions'])} instructions")
    return state, data, n, resize_frames(data["frames"][cfg.camera], cfg.image_size)


def add_frame_vae_arguments(p) -> None:
    """Options of the frame VAE a family trains here or reuses (`frame_vae`)."""
    p.add_argument("--vae", default="", help="reuse a trained VAE folder instead of training one")
    p.add_argument("--vae-steps", type=int, default=1500)
    p.add_argument("--vae-width", type=int, default=16, help="channels of the VAE's first level")
    p.add_argument("--vae-batch-size", type=int, default=16)
    p.add_argument("--vae-downsample", type=int, choices=[4, 8], default=8, help="image side / latent side")


def frame_vae(args, frames: torch.Tensor, latent_channels: int, out: Path, device: torch.device, state):
    """--vae, the resumed run's <output>/vae, or one trained here on (N, S, S, 3) uint8 frames. With
    several processes (accelerate PartialState `state`) the main process trains it and saves it to
    <output>/vae, and the others load that copy."""
    if args.vae:
        return load_vae(args.vae).to(device)
    resumed = args.resume and (out / "vae").is_dir()
    state.wait_for_everyone()           # every process has looked before the main process writes
    if resumed:
        return load_vae(out / "vae").to(device)
    if state.is_main_process:
        vae = train_vae(frames, args.vae_steps, args.vae_batch_size, 1e-3, args.seed, latent_channels,
                        args.vae_downsample, args.vae_width, device)
        if state.num_processes > 1:
            vae.save_pretrained(out / "vae")
    state.wait_for_everyone()
    return vae if state.is_main_process else load_vae(out / "vae").to(device)


def is_video(episode) -> bool:
    """Recorded without its actions: action-free, or labelled afterwards by an inverse-dynamics model."""
    return episode.action_free or episode.extra.get("actions_from") == "inverse_dynamics"


def demonstrations_per_task(episodes) -> dict:
    """Task name -> number of episodes with recorded actions (the training record's count of demonstrations)."""
    counts: dict[str, int] = {}
    for ep in episodes:
        if not is_video(ep):
            counts[ep.task] = counts.get(ep.task, 0) + 1
    return counts


def videos_per_task(episodes) -> dict:
    """Task name -> number of episodes recorded without actions (videos with proprio) in the training data."""
    counts: dict[str, int] = {}
    for ep in episodes:
        if is_video(ep):
            counts[ep.task] = counts.get(ep.task, 0) + 1
    return counts


@dataclass
class TrainingArrays:
    """The tensors and records every family trains from, built once from chunk_samples' output."""
    actions: torch.Tensor          # (N, horizon, dim) normalized chunks
    action_mask: torch.Tensor      # (N, horizon) 1 real step / 0 padding after the episode's end
    state: torch.Tensor            # (N, state_dim) normalized proprio
    action_stats: dict
    state_stats: dict
    text_encoder: object           # TextEncoder
    text_table: torch.Tensor       # (instructions, tokens, text_dim) embeddings
    instruction_id: torch.Tensor   # (N,) row of text_table per sample
    meta: dict                     # checkpoint config.json keys: backend, embodiment, action/state names
    facts: dict                    # the training record's data facts


def training_arrays(args, episodes: list, data: dict, robot, family: str, text_tokens: int,
                    statistics: tuple[dict, dict] | None = None) -> TrainingArrays:
    """Statistics (args.norm_mode, per row or per timestep), normalized chunks and proprio, the
    instruction table (args.text_encoder) and the checkpoint's description of the data.
    `statistics`: (action, state) statistics to normalize with instead of this data's own: a second
    stage keeps its source's, so its network reads every value on the scale it learned."""
    from ...core.normalization import Normalizer
    from .text_encoder import TextEncoder

    emb = robot.config
    labelled = [ep for ep in episodes if not ep.action_free]
    if not labelled:
        raise ValueError("no action-labelled episode: the action statistics and objective need at least one")
    actions_rows = np.concatenate([ep.actions for ep in labelled]).astype(np.float64)
    states_rows = np.concatenate([ep.states for ep in episodes]).astype(np.float64)
    chunks = data["actions"][data["action_mask"].any(axis=1)]      # chunks of labelled episodes
    action_stats, state_stats = statistics or (
        compute_stats(chunks if args.per_timestep_stats else actions_rows, args.norm_mode),
        compute_stats(states_rows, args.norm_mode))
    text_encoder = TextEncoder(args.text_encoder, text_tokens)
    return TrainingArrays(
        actions=torch.as_tensor(Normalizer(args.norm_mode, action_stats).normalize(data["actions"]), dtype=torch.float32),
        action_mask=torch.as_tensor(data["action_mask"], dtype=torch.float32),
        state=torch.as_tensor(Normalizer(args.norm_mode, state_stats).normalize(data["state"]), dtype=torch.float32),
        action_stats=action_stats, state_stats=state_stats, text_encoder=text_encoder,
        text_table=torch.stack([text_encoder.encode(s)[0] for s in data["instructions"]]).cpu(),
        instruction_id=torch.as_tensor(data["instruction_id"], dtype=torch.long),
        meta={"backend": family, "embodiment": emb.name, "action_names": list(emb.action.names),
              "state_names": list(emb.state.names), "action_space": emb.action.space},
        facts={"episodes": len(episodes), "samples": len(data["actions"]), "data": [str(d) for d in args.data],
               "demonstrations_per_task": demonstrations_per_task(episodes),
               "videos_per_task": videos_per_task(episodes),
               "video_actions": "inverse_dynamics" if any(is_video(e) and not e.action_free for e in episodes)
               else ("none" if any(e.action_free for e in episodes) else ""),
               **({"inverse_dynamics": args.inverse_dynamics} if getattr(args, "inverse_dynamics", None) else {})})


def encode_all(codec: FrameCodec, frames: torch.Tensor, batch: int = 256) -> torch.Tensor:
    """Scaled latents of (N, H, W, 3) uint8 frames, on the CPU."""
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


def earlier_stages(path: Path, training: dict) -> dict:
    """What a second training stage's record says about the checkpoint it started from (`--init-from`
    `path`, whose config.json "training" record is `training`): its steps and wall time, and those of the
    stages before it when it was a second stage itself."""
    return {"init_from": str(path), "init_steps": int(training.get("steps", 0)) + int(training.get("init_steps", 0)),
            "init_wall_time_s": float(training.get("wall_time_s", 0.0)) + float(training.get("init_wall_time_s", 0.0))}


def refuse_other_network(path, theirs: dict, ours: dict,
                         hint: str = "pass the options the checkpoint was trained with") -> None:
    """A second stage's source (`--init-from` `path`) must be the network this run builds: the first
    key of `ours` (then of `theirs`) whose values differ is named in a CheckpointError."""
    for key in list(ours) + [k for k in theirs if k not in ours]:
        if theirs.get(key) != ours.get(key):
            raise CheckpointError(f"--init-from {path}/config.json: policy.{key} is {theirs.get(key)!r}, this run "
                                  f"builds {ours.get(key)!r} ({hint})")


def chunk_length(args, robot) -> int:
    """Actions per chunk a run trains: --chunk-length, else the robot file's action.horizon."""
    if args.chunk_length < 0:
        raise SystemExit(f"vla-train: --chunk-length {args.chunk_length}: must be >= 1 (0: the robot file's)")
    return int(args.chunk_length or robot.config.action.horizon)


def add_arguments(p: argparse.ArgumentParser) -> None:
    """Options of the shared loop (the family adds its own)."""
    p.add_argument("--steps", type=int, default=4000, help="optimizer steps")
    p.add_argument("--chunk-length", type=int, default=0,
                   help="actions per predicted chunk (0: the robot file's action.horizon)")
    p.add_argument("--batch-size", type=int, default=32,
                   help="samples per optimizer step, summed over processes and accumulated micro-batches")
    p.add_argument("--gradient-accumulation-steps", type=int, default=1,
                   help="micro-batches per process whose gradients add up to one optimizer step")
    p.add_argument("--lr", type=float, default=3e-4)
    p.add_argument("--warmup-steps", type=int, default=200)
    p.add_argument("--ema-decay", type=float, default=0.999)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--resume", action="store_true", help="continue from <output>/training_state.pt")
    p.add_argument("--device", default="cpu")
    p.add_argument("--mixed-precision", choices=["no", "bf16", "fp16"], default="no")
    p.add_argument("--save-every", type=int, default=1000)


def micro_batch_size(batch_size: int, num_processes: int, accumulation: int) -> int:
    """Samples per process and micro-batch for a global --batch-size; a clear error if it does not divide."""
    if accumulation < 1:
        raise ValueError(f"--gradient-accumulation-steps must be at least 1, not {accumulation}")
    parts = num_processes * accumulation
    if batch_size % parts:
        raise ValueError(f"--batch-size {batch_size} does not split over {num_processes} process(es) x "
                         f"--gradient-accumulation-steps {accumulation}: use a multiple of {parts}")
    return batch_size // parts


@dataclass
class TrainingJob:
    """What a family hands to the shared loop.

    make_batch(generator, batch_size) -> dict of CPU tensors; loss(model, batch) ->
    {"loss", ...scalars}; export(model_with_ema_weights, step, final, record) writes the checkpoint."""
    model: torch.nn.Module
    make_batch: Callable[[torch.Generator, int], dict]
    loss: Callable[[torch.nn.Module, dict], dict]
    export: Callable[[torch.nn.Module, int, bool, dict], None]
    record: dict = field(default_factory=dict)      # family facts for the training record (episodes, ...)


def run_training(args, job: TrainingJob, out: Path, desc: str, setup_s: float = 0.0) -> dict:
    """Train job.model for args.steps optimizer steps; returns the final training record. `setup_s`:
    wall time the family spent before the loop (VAE, encoding), counted in the record's training wall
    time. Under a launcher every process trains on its own batches (seeds offset by its rank), the
    gradients are averaged, and the main process alone writes the checkpoint."""
    from accelerate import Accelerator
    from diffusers.optimization import get_cosine_schedule_with_warmup
    from diffusers.training_utils import EMAModel

    started = time.time()
    if args.device.startswith("cuda:"):
        torch.cuda.set_device(args.device)        # the loop's device is the one asked for, not cuda:0
    accelerator = Accelerator(cpu=args.device == "cpu", mixed_precision=args.mixed_precision)
    accumulation = args.gradient_accumulation_steps
    micro_batch = micro_batch_size(args.batch_size, accelerator.num_processes, accumulation)
    model = job.model
    optimizer = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=1e-4)
    lr_schedule = get_cosine_schedule_with_warmup(optimizer, min(args.warmup_steps, args.steps // 10), args.steps)
    start_step, previous_wall, state = 0, setup_s, None
    history: list[dict] = []
    state_file, log_file = out / "training_state.pt", out / "training_log.json"
    if args.resume and state_file.is_file():       # every process loads it
        state = torch.load(state_file, map_location="cpu", weights_only=False)
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        lr_schedule.load_state_dict(state["scheduler"])
        start_step, previous_wall = state["step"], float(state.get("wall_time_s", 0.0)) + setup_s
        history = json.loads(log_file.read_text()) if log_file.is_file() else []
        accelerator.print(f"resumed at step {start_step}")
    model, optimizer = accelerator.prepare(model, optimizer)     # several processes: weights broadcast from rank 0
    # the scheduler stays unprepared: it steps once per optimizer step, not once per process
    ema = EMAModel(accelerator.unwrap_model(model).parameters(), decay=args.ema_decay, use_ema_warmup=True,
                   power=0.75)
    if state is not None:
        ema.load_state_dict(state["ema"])
    ema.to(accelerator.device)
    seed = args.seed + start_step + 1_000_003 * accelerator.process_index
    gen = torch.Generator().manual_seed(seed)       # batches
    torch.manual_seed(seed)                         # noise

    def record(step: int, final: bool) -> dict:
        return {**job.record, "family": desc, "steps": step, "batch_size": args.batch_size,
                "num_processes": accelerator.num_processes, "gradient_accumulation_steps": accumulation,
                "per_process_batch_size": micro_batch, "lr": args.lr, "seed": args.seed,
                "wall_time_s": round(previous_wall + time.time() - started, 1),
                "loss_history": history[-50:], "final": final}

    def save(step: int, final: bool) -> None:
        accelerator.wait_for_everyone()
        if accelerator.is_main_process:
            unwrapped = accelerator.unwrap_model(model)
            torch.save({"model": unwrapped.state_dict(), "optimizer": optimizer.state_dict(),
                        "scheduler": lr_schedule.state_dict(), "ema": ema.state_dict(), "step": step,
                        "wall_time_s": previous_wall + time.time() - started}, state_file)
            ema.store(unwrapped.parameters())
            ema.copy_to(unwrapped.parameters())
            job.export(unwrapped, step, final, record(step, final))
            ema.restore(unwrapped.parameters())
            log_file.write_text(json.dumps(history, indent=1))
        accelerator.wait_for_everyone()

    model.train()
    bar = tqdm(range(start_step, args.steps), desc=desc, mininterval=5.0, initial=start_step, total=args.steps,
               disable=not accelerator.is_main_process)
    interval: dict[str, torch.Tensor] = {}          # losses summed since the last log row
    interval_steps = 0
    for step in bar:
        optimizer.zero_grad(set_to_none=True)
        summed: dict[str, torch.Tensor] = {}
        for micro in range(accumulation):
            batch = {k: v.to(accelerator.device) for k, v in job.make_batch(gen, micro_batch).items()}
            last = micro == accumulation - 1        # gradients are averaged over processes once, at the last
            with contextlib.nullcontext() if last else accelerator.no_sync(model):
                with accelerator.autocast():
                    losses = job.loss(model, batch)
                accelerator.backward(losses["loss"] / accumulation)
            for k, v in losses.items():
                summed[k] = summed.get(k, 0.0) + v.detach().float() / accumulation
        accelerator.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        lr_schedule.step()
        ema.step(accelerator.unwrap_model(model).parameters())
        for k, v in summed.items():
            interval[k] = interval.get(k, 0.0) + v
        interval_steps += 1
        if step % 50 == 0:                          # every process takes part in the mean
            # a row is the mean over every step since the previous row, not one batch's loss
            means = accelerator.reduce(torch.stack(list(interval.values())) / interval_steps, "mean")
            row = {k: round(float(v), 5) for k, v in zip(interval, means)} | {"step": step}
            history.append(row)
            interval, interval_steps = {}, 0
            bar.set_postfix({k: v for k, v in row.items() if k != "step"})
        if (step + 1) % args.save_every == 0 and step + 1 < args.steps:
            save(step + 1, final=False)
    save(args.steps, final=True)
    return record(args.steps, True)
