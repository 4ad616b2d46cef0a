"""`videovla` backend: serves a VideoVLA checkpoint (models/videovla.py) behind the policy interface.

Per observation: encode the current camera frame to the clean latent V1 with the VAE, take the
cached instruction tokens, normalize the proprio, jointly denoise future latents and an action
chunk, unnormalize the actions. Imagined frames are decoded only when asked (decode_imagined).
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch

from ..core.normalization import Normalizer
from .backend import PolicyBackend, PolicyInput, PolicyOutput, register_backend
from .checkpoint import CheckpointError, load_normalization, read_config, resolve_checkpoint, save_normalization
from .text_encoder import DEFAULT_TEXT_ENCODER, TextEncoder
from .video_vae import FrameCodec, load_vae
from .videovla import VideoVLAConfig, VideoVLATransformer, make_scheduler, sample

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


class VideoVLAModel:
    """Everything a VideoVLA checkpoint holds: transformer, frame codec, text encoder, statistics."""

    def __init__(self, config: VideoVLAConfig, transformer: VideoVLATransformer, codec: FrameCodec,
                 text_encoder: TextEncoder, norm_mode: str, action_stats: dict, state_stats: dict, meta: dict):
        self.config, self.transformer, self.codec, self.text_encoder = config, transformer, codec, text_encoder
        self.action_norm = Normalizer(norm_mode, action_stats)
        self.state_norm = Normalizer(norm_mode, state_stats)
        self.norm_mode, self.action_stats, self.state_stats = norm_mode, action_stats, state_stats
        self.meta = meta

    @property
    def device(self) -> torch.device:
        return next(self.transformer.parameters()).device

    def save_pretrained(self, path: str | Path, training: dict | None = None) -> None:
        from safetensors.torch import save_file

        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        meta = dict(self.meta)
        meta.update(backend="videovla", model=asdict(self.config), text_encoder=self.text_encoder.ref,
                    vae={"path": "vae", "class": self.codec.vae.__class__.__name__,
                         "scaling_factor": self.codec.scaling_factor})
        if training is not None:
            meta["training"] = training
        (path / "config.json").write_text(json.dumps(meta, indent=2))
        state = {k: v.detach().float().cpu().contiguous() for k, v in self.transformer.state_dict().items()}
        save_file(state, str(path / "model.safetensors"))
        self.codec.vae.save_pretrained(path / "vae")
        save_normalization(path, self.norm_mode, self.action_stats, self.state_stats)

    @classmethod
    def from_pretrained(cls, path: str | Path, device: str = "cpu", dtype: str = "float32") -> "VideoVLAModel":
        from safetensors.torch import load_file

        path = resolve_checkpoint(path)
        meta = read_config(path)
        if meta["backend"] != "videovla":
            raise CheckpointError(f"{path}/config.json: backend is '{meta['backend']}', not 'videovla'")
        config = VideoVLAConfig.from_dict(meta["model"])
        transformer = VideoVLATransformer(config)
        weights = path / "model.safetensors"
        if not weights.is_file():
            raise CheckpointError(f"{weights}: missing")
        missing, unexpected = transformer.load_state_dict(load_file(str(weights)), strict=False)
        if missing or unexpected:
            raise CheckpointError(f"{weights}: does not match config.json (missing {missing[:3]}, "
                                  f"unexpected {unexpected[:3]})")
        vae_ref = meta["vae"]
        vae_path = Path(vae_ref["path"]) if Path(vae_ref["path"]).is_absolute() else path / vae_ref["path"]
        vae = load_vae(vae_path, vae_ref.get("class", "AutoencoderKL"))
        torch_dtype = DTYPES[dtype]
        transformer.to(device, torch_dtype).eval().requires_grad_(False)
        vae.to(device, torch_dtype)
        codec = FrameCodec(vae, config.image_size, float(vae_ref.get("scaling_factor", 1.0)))
        text = TextEncoder(meta.get("text_encoder", DEFAULT_TEXT_ENCODER), config.text_tokens, device, torch_dtype)
        mode, action_stats, state_stats = load_normalization(path, config.action_dim, config.state_dim)
        return cls(config, transformer, codec, text, mode, action_stats, state_stats, meta)

    @torch.no_grad()
    def predict_batch(self, frames: np.ndarray, instructions: list[str], states: np.ndarray,
                      num_inference_steps: int | None = None, generator: torch.Generator | None = None,
                      decode_imagined: bool = True, scheduler=None) -> dict:
        """Chunks for B observations in one denoising loop (offline evaluation, batched serving).

        frames (B, H, W, 3) uint8 RGB from the checkpoint's camera; instructions: B strings (their
        embeddings are cached); states (B, state_dim) proprio in physical units. Returns
        actions_normalized (B, horizon, dim) model space in [-1, 1], actions (B, horizon, dim)
        physical units, imagined (B, num_future, S, S, 3) uint8 frames for config.future_offsets
        steps ahead (None unless decode_imagined)."""
        cfg = self.config
        dtype = next(self.transformer.parameters()).dtype
        v1 = self.codec.encode(torch.as_tensor(np.asarray(frames, dtype=np.uint8))).to(dtype)
        text = torch.stack([self.text_encoder.encode(s)[0] for s in instructions]).to(dtype)
        state = torch.as_tensor(self.state_norm.normalize(np.asarray(states)), dtype=dtype, device=self.device)
        future, actions_n = sample(self.transformer, text, v1, state, num_inference_steps or cfg.num_inference_steps,
                                   generator=generator, scheduler=scheduler or make_scheduler(cfg))
        actions_n = actions_n.float().cpu().numpy().clip(-1.0, 1.0)
        imagined = None
        if decode_imagined:
            b, f = future.shape[:2]
            imagined = self.codec.decode(future.reshape(b * f, *future.shape[2:])).cpu().numpy()
            imagined = imagined.reshape(b, f, *imagined.shape[1:])
        return {"actions_normalized": actions_n, "actions": self.action_norm.unnormalize(actions_n),
                "imagined": imagined}


@register_backend
class VideoVLAPolicy(PolicyBackend):
    name = "videovla"
    supports_prefix = True

    def __init__(self, embodiment, checkpoint: str = "", device: str = "cpu", dtype: str = "float32",
                 num_inference_steps: int = 0, decode_imagined: bool = False, **options):
        super().__init__(embodiment)
        if not checkpoint:
            raise CheckpointError("videovla backend needs parameter 'checkpoint' (a checkpoint directory)")
        self.model = VideoVLAModel.from_pretrained(checkpoint, device, dtype)
        cfg, emb = self.model.config, embodiment.config
        names = self.model.meta.get("action_names")
        if names is not None and list(names) != list(emb.action.names):
            raise CheckpointError(f"{checkpoint}: trained for actions {names}, robot file {embodiment.path} "
                                  f"has {emb.action.names}")
        if cfg.camera not in [c.name for c in emb.cameras]:
            raise CheckpointError(f"{checkpoint}: needs camera '{cfg.camera}', not in {embodiment.path}")
        self.num_inference_steps = int(num_inference_steps) or cfg.num_inference_steps
        self.decode_imagined = bool(decode_imagined)
        self.scheduler = make_scheduler(cfg)
        self.future_offsets = list(cfg.future_offsets)
        self.instruction = ""
        self.generator = torch.Generator(device=self.model.device)

    def reset(self, instruction: str, seed: int | None = None, task: str = "") -> None:
        self.instruction = instruction
        self.model.text_encoder.encode(instruction)      # cache the embedding for the episode
        self.generator.manual_seed(int(seed or 0))

    def predict(self, obs: PolicyInput, prefix: np.ndarray | None = None) -> PolicyOutput:
        cfg, m = self.model.config, self.model
        t0 = time.perf_counter()
        device, dtype = m.device, next(m.transformer.parameters()).dtype
        frame = obs.images.get(cfg.camera)
        if frame is None:
            raise ValueError(f"observation has no camera '{cfg.camera}' (has {sorted(obs.images)})")
        v1 = m.codec.encode(torch.tensor(frame)[None]).to(dtype)
        text, _ = m.text_encoder.encode(obs.instruction or self.instruction)
        state = torch.as_tensor(m.state_norm.normalize(obs.state[None]), dtype=dtype, device=device)
        prefix_t = None
        if prefix is not None and len(prefix):
            prefix_t = torch.as_tensor(np.asarray(prefix)[None, : cfg.horizon], dtype=dtype, device=device)
        t1 = time.perf_counter()
        future, actions_n = sample(m.transformer, text[None].to(dtype), v1, state, self.num_inference_steps,
                                   prefix=prefix_t, generator=self.generator, scheduler=self.scheduler)
        t2 = time.perf_counter()
        actions_n = actions_n[0].float().cpu().numpy().clip(-1.0, 1.0)
        out = PolicyOutput(actions_n, m.action_norm.unnormalize(actions_n))
        if self.decode_imagined:
            frames = m.codec.decode(future[0]).cpu().numpy()
            out.imagined_frames = {cfg.camera: frames}
        out.timings_ms = {"preprocess_ms": (t1 - t0) * 1e3, "inference_ms": (t2 - t1) * 1e3,
                          "postprocess_ms": (time.perf_counter() - t2) * 1e3}
        return out
