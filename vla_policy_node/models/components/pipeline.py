"""What every learned family's configuration, pipeline and backend share: the configuration's
dictionary form, the normalizers, device and dtype, writing the parts of a checkpoint that are not
the family's networks, and the backend's episode text, camera frame and imagined-view handling."""

from __future__ import annotations

import json
from dataclasses import asdict, fields
from pathlib import Path

import numpy as np
import torch

from ...core.future_state import roll_forward
from ...core.normalization import Normalizer
from ..backend import PolicyBackend, PolicyInput
from ..checkpoint import CHECKPOINT_FORMAT, save_normalization


class PolicyConfigMixin:
    """to_dict / from_dict for a family's configuration dataclass (saved under "policy")."""

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict):
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"{cls.__name__}: unknown keys {unknown}")
        return cls(**data)


class PipelineBase:
    """Mixed into a family's pipeline dataclass, which has the fields config, codec, text_encoder,
    norm_mode, action_stats, state_stats and meta, and names its main network in `network_attr`."""

    network_attr = "transformer"

    def __post_init__(self):
        self.action_norm = Normalizer(self.norm_mode, self.action_stats)
        self.state_norm = Normalizer(self.norm_mode, self.state_stats)

    @property
    def device(self) -> torch.device:
        return getattr(self, self.network_attr).device

    @property
    def dtype(self) -> torch.dtype:
        return getattr(self, self.network_attr).dtype

    def save_common(self, path: str | Path, training: dict | None = None) -> Path:
        """config.json, the frame VAE and normalization.json; the family saves its networks beside them."""
        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        meta = dict(self.meta)
        meta.update(format=CHECKPOINT_FORMAT, policy=self.config.to_dict(), text_encoder=self.text_encoder.ref,
                    vae={"path": "vae", "class": self.codec.vae.__class__.__name__,
                         "scaling_factor": self.codec.scaling_factor})
        if training is not None:
            meta["training"] = training
        (path / "config.json").write_text(json.dumps(meta, indent=2))
        self.codec.vae.save_pretrained(path / "vae")
        save_normalization(path, self.norm_mode, self.action_stats, self.state_stats)
        return path

    def encode_inputs(self, frames: np.ndarray, instructions: list[str], states: np.ndarray):
        """Frames (B, H, W, 3) uint8 -> a writable uint8 copy and their latents; instruction tokens
        (B, Lt, text_dim); normalized proprio (B, S): the inputs every family conditions on."""
        frames = np.array(frames, dtype=np.uint8)        # a writable copy (message buffers are read-only)
        latents = self.codec.encode(torch.from_numpy(frames)).to(self.dtype)
        text = torch.stack([self.text_encoder.encode(s)[0] for s in instructions]).to(self.dtype)
        state = torch.as_tensor(self.state_norm.normalize(np.asarray(states)), dtype=self.dtype, device=self.device)
        return frames, latents, text, state


class LearnedPolicy(PolicyBackend):
    """Backend pieces every learned family shares; `self.pipeline` is the family's pipeline."""

    pipeline: PipelineBase
    future_state = False          # VLASH: condition on the state rolled forward by the plan in flight

    @property
    def config(self):
        return self.pipeline.config

    def model_state(self, obs: PolicyInput) -> np.ndarray:
        """The proprio the network is given: the measured state, or with `future_state` the state
        once the executor's plan in flight (async modes) has run (core/future_state.py)."""
        if not self.future_state or obs.in_flight is None or not len(obs.in_flight):
            return obs.state
        plan = self.pipeline.action_norm.unnormalize(np.asarray(obs.in_flight, dtype=np.float64))
        return roll_forward(self.embodiment.config, obs.state, plan)

    def reset(self, instruction: str, seed: int | None = None, task: str = "") -> None:
        self.instruction = instruction
        if instruction:
            self.pipeline.text_encoder.encode(instruction)      # cache the embedding for the episode

    def _frame(self, obs: PolicyInput) -> np.ndarray:
        frame = obs.images.get(self.config.camera)
        if frame is None:
            raise ValueError(f"observation has no camera '{self.config.camera}' (has {sorted(obs.images)})")
        return frame

    def imagined_view(self, frames: np.ndarray) -> np.ndarray | None:
        if self.imagined_camera is None:
            return None
        codec = self.pipeline.codec
        if not len(frames):
            return np.zeros((0, codec.image_size, codec.image_size, 3), np.uint8)
        return np.concatenate([codec.resize(torch.from_numpy(np.array(frames[i: i + 256]))).cpu().numpy()
                               for i in range(0, len(frames), 256)])
