"""`videovla` backend: a VideoVLA checkpoint behind the policy interface.

Per observation: encode the current camera frame to the clean latent V1 with the VAE, take the
cached instruction tokens, normalize the proprio, jointly denoise future latents and an action
chunk, unnormalize the actions. Imagined frames are decoded only when asked (decode_imagined).
With the `delta` future target the network predicts the change of the latent from the current
one; `residual` decoding adds the decoded change to the current frame, so "nothing moves" is
exactly the current frame and the VAE's reconstruction error cancels where nothing moves.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ..backend import COMMON_OPTIONS, BackendOption, PolicyInput, PolicyOutput
from ..checkpoint import CheckpointError
from ..components.loading import load_checkpoint_parts, load_network, load_scheduler
from ..components.pipeline import LearnedPolicy, PipelineBase
from ..components.text_encoder import TextEncoder
from ..components.vae import FrameCodec
from .configuration_videovla import VideoVLAConfig
from .modeling_videovla import PREFIX_METHODS, VideoVLATransformer, sample


@dataclass
class VideoVLAPipeline(PipelineBase):
    """Everything a checkpoint of this family holds, and chunk sampling from it."""
    config: VideoVLAConfig
    transformer: VideoVLATransformer
    codec: FrameCodec
    text_encoder: TextEncoder
    scheduler: object
    norm_mode: str
    action_stats: dict
    state_stats: dict
    meta: dict                       # backend, embodiment, action/state names, training record

    # ---- checkpoint ---------------------------------------------------------------------
    def save_pretrained(self, path: str | Path, training: dict | None = None) -> None:
        path = self.save_common(path, training)
        self.transformer.save_pretrained(path / "transformer")
        self.scheduler.save_pretrained(path / "scheduler")

    @classmethod
    def from_pretrained(cls, path: str | Path, backend: str, config_class=VideoVLAConfig, device: str = "cpu",
                        dtype: str = "float32") -> "VideoVLAPipeline":
        parts = load_checkpoint_parts(path, backend, config_class, device, dtype, required=("transformer", "scheduler"))
        path, config = parts.path, parts.config
        transformer = load_network(path / "transformer", VideoVLATransformer, device, parts.dtype)
        if transformer.config.num_future != config.num_future or transformer.config.horizon != config.horizon:
            raise CheckpointError(f"{path / 'transformer'}: network for {transformer.config.num_future} future frames "
                                  f"and horizon {transformer.config.horizon} does not match config.json policy "
                                  f"({config.num_future}, {config.horizon})")
        scheduler = load_scheduler(path / "scheduler")
        return cls(config, transformer, parts.codec, parts.text_encoder, scheduler, parts.norm_mode,
                   parts.action_stats, parts.state_stats, parts.meta)

    # ---- inference ----------------------------------------------------------------------
    @torch.no_grad()
    def __call__(self, frames: np.ndarray, instructions: list[str], states: np.ndarray, num_inference_steps: int,
                 generator: torch.Generator | list | None = None, prefix: np.ndarray | None = None,
                 decode_imagined: bool = False, prefix_method: str = "inpainting") -> dict:
        """Chunks for B observations in one denoising loop.

        frames (B, H, W, 3) uint8 RGB from the configured camera; instructions: B strings
        (embeddings cached); states (B, state_dim) proprio, physical units; prefix (B, k, dim) in
        model space or None, kept by `prefix_method` (inpainting | conditioning). Returns actions_normalized (B, horizon, dim) in [-1, 1], actions
        (B, horizon, dim) physical units, imagined (B, num_future, S, S, 3) uint8 or None, and
        the times (ms) spent before, in and after the denoising loop."""
        t0 = time.perf_counter()
        cfg, dtype = self.config, self.dtype
        frames, v1, text, state = self.encode_inputs(frames, instructions, states)
        prefix_t = None if prefix is None else torch.as_tensor(prefix, dtype=dtype, device=self.device)
        t1 = time.perf_counter()
        future, actions_n = sample(self.transformer, self.scheduler, text, v1, state, num_inference_steps,
                                   prefix=prefix_t, generator=generator, prefix_method=prefix_method)
        t2 = time.perf_counter()
        actions_n = actions_n.float().cpu().numpy().clip(-1.0, 1.0)
        imagined = self.decode_future(frames, v1, future) if decode_imagined and cfg.num_future else None
        return {"actions_normalized": actions_n, "actions": self.action_norm.unnormalize(actions_n),
                "imagined": imagined, "timings_ms": {"preprocess_ms": (t1 - t0) * 1e3,
                                                     "inference_ms": (t2 - t1) * 1e3,
                                                     "postprocess_ms": (time.perf_counter() - t2) * 1e3}}

    def future_latents(self, v1: torch.Tensor, future: torch.Tensor) -> torch.Tensor:
        """Network output (B, F, C, h, w) -> latents of the imagined frames."""
        if self.config.future_target == "delta":
            return v1[:, None] + future / self.config.delta_scaling_factor
        return future

    @torch.no_grad()
    def decode_future(self, frames: np.ndarray, v1: torch.Tensor, future: torch.Tensor) -> np.ndarray:
        """(B, F, S, S, 3) uint8 imagined frames from the network output."""
        latents = self.future_latents(v1, future)
        b, f = latents.shape[:2]
        decoded = self.codec.decode_float(latents.reshape(b * f, *latents.shape[2:]))
        decoded = decoded.reshape(b, f, *decoded.shape[1:])
        if self.config.imagined_decoding == "residual":
            current = self.codec.to_pixels(torch.from_numpy(np.array(frames, dtype=np.uint8)))
            decoded = current[:, None] + decoded - self.codec.decode_float(v1)[:, None]
        return self.codec.to_uint8(decoded.reshape(b * f, *decoded.shape[2:])).reshape(
            b, f, self.config.image_size, self.config.image_size, 3).cpu().numpy()

    @torch.no_grad()
    def reconstruct_future(self, current: np.ndarray, future: np.ndarray) -> np.ndarray:
        """What decoding would give if the network predicted the real future latent exactly."""
        z_cur = self.codec.encode(torch.from_numpy(np.array(current, dtype=np.uint8))).to(self.dtype)
        z_fut = self.codec.encode(torch.from_numpy(np.array(future, dtype=np.uint8))).to(self.dtype)
        if self.config.future_target == "delta":
            delta = (z_fut - z_cur) * self.config.delta_scaling_factor
        else:
            delta = z_fut
        return self.decode_future(current, z_cur, delta[:, None])[:, 0]


class VideoVLAPolicy(LearnedPolicy):
    name = "videovla"
    supports_prefix = True
    config_class = VideoVLAConfig
    options = {**COMMON_OPTIONS,
               "num_inference_steps": BackendOption(0, "denoising steps (0 = the checkpoint's)"),
               "rtc": BackendOption("inpainting", "how a real-time-chunking prefix is kept: inpainting (IT-RTC, "
                                                  "any checkpoint) or conditioning (TT-RTC: given clean, as the "
                                                  "checkpoint learned with --train-prefix-max)"),
               "future_state": BackendOption(False, "VLASH: condition on the state rolled forward by the plan in "
                                                    "flight (async modes) instead of the measured one"),
               "decode_imagined": BackendOption(False, "decode the imagined future frames (for the monitor)")}

    def __init__(self, embodiment, checkpoint: str = "", device: str = "cpu", dtype: str = "float32",
                 num_inference_steps: int = 0, rtc: str = "inpainting", future_state: bool = False,
                 decode_imagined: bool = False):
        super().__init__(embodiment, checkpoint, device, dtype, decode_imagined)
        cfg = self.pipeline.config
        self.num_inference_steps = int(num_inference_steps) or cfg.num_inference_steps
        if rtc not in PREFIX_METHODS:
            raise ValueError(f"option rtc: '{rtc}' unknown; use one of {PREFIX_METHODS}")
        if rtc == "conditioning" and not cfg.prefix_conditioning:
            raise CheckpointError(f"{checkpoint}: option rtc 'conditioning' needs a checkpoint trained with a given "
                                  "prefix (vla-train --train-prefix-max); this one keeps a prefix by inpainting only")
        self.rtc = rtc
        self.future_state = bool(future_state)

    def load_pipeline(self, checkpoint: str, device: str, dtype: str) -> VideoVLAPipeline:
        return VideoVLAPipeline.from_pretrained(checkpoint, self.name, self.config_class, device, dtype)

    def predict(self, obs: PolicyInput, prefix: np.ndarray | None = None) -> PolicyOutput:
        prefix_b = None
        if prefix is not None and len(prefix):
            prefix_b = np.asarray(prefix)[None, : self.config.horizon]
        out = self.pipeline(*self.pack([obs]), self.num_inference_steps, self.observation_generator(obs.stamp),
                            prefix_b, self.decode_imagined, self.rtc)
        return self.outputs(out, 1)[0]

    def predict_batch(self, observations: list[PolicyInput]) -> list[PolicyOutput]:
        out = self.pipeline(*self.pack(observations), self.num_inference_steps,
                            [self.observation_generator(o.stamp) for o in observations],
                            decode_imagined=self.decode_imagined)
        return self.outputs(out, len(observations))

    @property
    def future_offsets(self) -> list[int]:
        return list(self.config.future_offsets)

    @property
    def imagined_camera(self) -> str | None:
        return self.config.camera if self.config.num_future else None

    def reconstruct_future(self, current: np.ndarray, future: np.ndarray) -> np.ndarray | None:
        return self.pipeline.reconstruct_future(current, future) if self.config.num_future else None

    def inference_settings(self) -> dict:
        return {"num_inference_steps": self.num_inference_steps, "rtc": self.rtc, "future_state": self.future_state}
