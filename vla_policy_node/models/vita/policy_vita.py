"""`vita` backend: a VITA checkpoint behind the policy interface.

Per observation: the current camera frame through the frozen frame VAE (its latent is the frame
feature), the cached instruction tokens, the normalized proprio; the backbone greedily emits the
code sequence ([vision codes] + action codes) with its KV cache; the action decoder turns the
action codes into the chunk. Only when imagined frames are asked (the imagination monitor) does
the vision decoder turn the vision codes into the next frame (current frame + decoded change).
Greedy decoding makes a chunk a function of its observation: nothing to seed.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ..backend import COMMON_OPTIONS, BackendOption, PolicyInput, PolicyOutput
from ..checkpoint import CheckpointError
from ..components.loading import load_checkpoint_parts, load_network
from ..components.pipeline import LearnedPolicy, PipelineBase
from ..components.text_encoder import TextEncoder
from ..components.vae import FrameCodec
from .configuration_vita import VITAConfig
from .modeling_vita import VITABackbone, VITATokenizer


@dataclass
class VITAPipeline(PipelineBase):
    """Everything a VITA checkpoint holds, and chunk generation from it."""
    config: VITAConfig
    tokenizer: VITATokenizer
    backbone: VITABackbone
    codec: FrameCodec
    text_encoder: TextEncoder
    norm_mode: str
    action_stats: dict
    state_stats: dict
    meta: dict

    network_attr = "backbone"

    # ---- checkpoint ---------------------------------------------------------------------
    def save_pretrained(self, path: str | Path, training: dict | None = None) -> None:
        path = self.save_common(path, training)
        self.tokenizer.save_pretrained(path / "tokenizer")
        self.backbone.save_pretrained(path / "backbone")

    @classmethod
    def from_pretrained(cls, path: str | Path, device: str = "cpu", dtype: str = "float32") -> "VITAPipeline":
        parts = load_checkpoint_parts(path, "vita", VITAConfig, device, dtype, required=("tokenizer", "backbone"))
        tokenizer = load_network(parts.path / "tokenizer", VITATokenizer, device, parts.dtype)
        backbone = load_network(parts.path / "backbone", VITABackbone, device, parts.dtype)
        cfg = parts.config
        if backbone.config.sequence_tokens != cfg.sequence_tokens or tokenizer.config.horizon != cfg.horizon:
            raise CheckpointError(f"{parts.path}: networks for {backbone.config.sequence_tokens} codes and horizon "
                                  f"{tokenizer.config.horizon} do not match config.json policy "
                                  f"({cfg.sequence_tokens}, {cfg.horizon})")
        return cls(cfg, tokenizer, backbone, parts.codec, parts.text_encoder, parts.norm_mode, parts.action_stats,
                   parts.state_stats, parts.meta)

    # ---- inference ----------------------------------------------------------------------
    @torch.no_grad()
    def __call__(self, frames: np.ndarray, instructions: list[str], states: np.ndarray,
                 decode_imagined: bool = False, use_cache: bool = True) -> dict:
        """Chunks for B observations: frames (B, H, W, 3) uint8 RGB of the configured camera,
        instructions (B strings), states (B, state_dim) physical units. Returns actions_normalized
        and actions (B, horizon, dim), the codes (B, L), imagined (B, 1, S, S, 3) uint8 or None,
        and the times (ms) before, in and after generation."""
        t0 = time.perf_counter()
        cfg, dtype = self.config, self.dtype
        frames, f_now, text, state = self.encode_inputs(frames, instructions, states)
        t1 = time.perf_counter()
        tokens, context = self.backbone.generate(text, f_now, state, use_cache=use_cache)
        lv = cfg.vision_tokens if cfg.next_frame_objective else 0
        codes = self.tokenizer.codes(tokens[:, lv:], "action").to(dtype) + context[:, lv:]
        actions_n = self.tokenizer.decode_action(codes).float().cpu().numpy().clip(-1.0, 1.0)
        t2 = time.perf_counter()
        imagined = None
        if decode_imagined and lv:
            vision_codes = self.tokenizer.codes(tokens[:, :lv], "vision").to(dtype) + context[:, :lv]
            imagined = self.decode_next(frames, f_now, self.tokenizer.decode_vision(f_now, vision_codes))[:, None]
        return {"actions_normalized": actions_n, "actions": self.action_norm.unnormalize(actions_n),
                "tokens": tokens.cpu().numpy(), "imagined": imagined,
                "timings_ms": {"preprocess_ms": (t1 - t0) * 1e3, "inference_ms": (t2 - t1) * 1e3,
                               "postprocess_ms": (time.perf_counter() - t2) * 1e3}}

    @torch.no_grad()
    def decode_next(self, frames: np.ndarray, f_now: torch.Tensor, f_next: torch.Tensor) -> np.ndarray:
        """(B, S, S, 3) uint8 next frames: the current frame plus the decoded change of the latent."""
        current = self.codec.to_pixels(torch.from_numpy(np.array(frames, dtype=np.uint8)))
        next_px, now_px = self.codec.decode_float(torch.cat([f_next, f_now])).chunk(2)   # one VAE call
        return self.codec.to_uint8(current + next_px - now_px).cpu().numpy()

    @torch.no_grad()
    def reconstruct_future(self, current: np.ndarray, future: np.ndarray) -> np.ndarray:
        """The next frame as the frame codec would give it if the codes described it exactly."""
        f_now = self.codec.encode(torch.from_numpy(np.array(current, dtype=np.uint8))).to(self.dtype)
        f_next = self.codec.encode(torch.from_numpy(np.array(future, dtype=np.uint8))).to(self.dtype)
        return self.decode_next(current, f_now, f_next)


class VITAPolicy(LearnedPolicy):
    name = "vita"
    options = {**COMMON_OPTIONS,
               "decode_imagined": BackendOption(False, "decode the imagined next frame (for the monitor)")}
    counted_networks = ("backbone", "tokenizer")
    reported_networks = ("backbone", "codec.vae")

    def load_pipeline(self, checkpoint: str, device: str, dtype: str) -> VITAPipeline:
        return VITAPipeline.from_pretrained(checkpoint, device, dtype)

    def predict(self, obs: PolicyInput, prefix: np.ndarray | None = None) -> PolicyOutput:
        return self.predict_batch([obs])[0]

    def predict_batch(self, observations: list[PolicyInput]) -> list[PolicyOutput]:
        return self.outputs(self.pipeline(*self.pack(observations), self.decode_imagined), len(observations))

    @property
    def future_offsets(self) -> list[int]:
        return list(self.config.future_offsets) if self.config.next_frame_objective else []

    @property
    def imagined_camera(self) -> str | None:
        return self.config.camera if self.config.next_frame_objective else None

    def reconstruct_future(self, current: np.ndarray, future: np.ndarray) -> np.ndarray | None:
        return self.pipeline.reconstruct_future(current, future) if self.config.next_frame_objective else None
