"""What every learned family's configuration, pipeline and backend share: the configuration's
dictionary form, the normalizers, device and dtype, writing the parts of a checkpoint that are not
the family's networks, and the backend skeleton (checkpoint checks, episode text and seed, noise
per observation, camera lookup, batch packing, outputs, imagined view, describe())."""

from __future__ import annotations

import abc
import json
from dataclasses import asdict, fields
from operator import attrgetter
from pathlib import Path

import numpy as np
import torch

from ...core.future_state import roll_forward
from ...core.normalization import Normalizer
from ..backend import PolicyBackend, PolicyInput, PolicyOutput
from ..checkpoint import CHECKPOINT_FORMAT, CheckpointError, checkpoint_size_mb, resolve_checkpoint, save_normalization
from .loading import check_fits_robot


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
    """The backend skeleton every learned family shares: checkpoint checks and loading, the episode
    (instruction, seed), sampling noise per observation, camera lookup and batch packing, outputs
    and `describe()`. A family supplies `load_pipeline` (its `self.pipeline`) and what differs."""

    pipeline: PipelineBase
    future_state = False          # VLASH: condition on the state rolled forward by the plan in flight
    counted_networks: tuple[str, ...] = ("transformer",)   # pipeline parts in `parameters` (dotted paths)
    reported_networks: tuple[str, ...] = ("codec.vae",)    # parts reported apart, as <last name>_parameters

    def __init__(self, embodiment, checkpoint: str = "", device: str = "cpu", dtype: str = "float32",
                 decode_imagined: bool = False):
        super().__init__(embodiment)
        if not checkpoint:
            raise CheckpointError(f"{self.name} backend needs option 'checkpoint' (a checkpoint directory)")
        self.checkpoint = str(resolve_checkpoint(checkpoint))
        self.pipeline = self.load_pipeline(checkpoint, device, dtype)
        self.fit_robot(checkpoint)
        self.set_decode_imagined(decode_imagined)
        self.instruction = ""
        self.seed = 0
        self.episode_t0: float | None = None      # time of the episode's first observation (s)

    @abc.abstractmethod
    def load_pipeline(self, checkpoint: str, device: str, dtype: str):
        """The family's pipeline from a checkpoint directory (CheckpointError naming the part that fails)."""

    def fit_robot(self, checkpoint: str) -> None:
        """CheckpointError unless the checkpoint drives this robot file (models/components/loading.py)."""
        check_fits_robot(checkpoint, self.config, self.pipeline.meta, self.embodiment)

    @property
    def chunk_length(self) -> int:
        return int(self.config.horizon)

    @property
    def config(self):
        return self.pipeline.config

    # ---- the episode ------------------------------------------------------------------------
    def reset(self, instruction: str, seed: int | None = None, task: str = "") -> None:
        self.instruction = instruction
        self.seed = int(seed or 0)
        self.episode_t0 = None
        if instruction:
            self.cache_instruction(instruction)

    def cache_instruction(self, instruction: str) -> None:
        """Compute what the episode's instruction is encoded to once (the text encoder caches it)."""
        self.pipeline.text_encoder.encode(instruction)

    def noise_seed(self, stamp: float) -> int:
        """The sampling noise of a chunk: a function of the episode's seed and the observation's
        time from the episode's first observation (us), so a chunk asked twice for one observation
        is the same chunk, and a lockstep episode is reproducible whatever the timing of the
        requests (a re-sent request, a loaded machine) and whatever ran before it on the clock."""
        if self.episode_t0 is None:
            self.episode_t0 = stamp
        return (self.seed * 1_000_003 + round((stamp - self.episode_t0) * 1e6)) % (2 ** 63)

    def observation_generator(self, stamp: float) -> torch.Generator:
        """The generator of one observation's sampling noise (one per observation of a batch)."""
        return torch.Generator(device=self.pipeline.device).manual_seed(self.noise_seed(stamp))

    # ---- inputs and outputs -------------------------------------------------------------------
    def model_state(self, obs: PolicyInput) -> np.ndarray:
        """The proprio the network is given: the measured state, or with `future_state` the state
        once the executor's plan in flight (async modes) has run (core/future_state.py)."""
        if not self.future_state or obs.in_flight is None or not len(obs.in_flight):
            return obs.state
        plan = self.pipeline.action_norm.unnormalize(np.asarray(obs.in_flight, dtype=np.float64))
        return roll_forward(self.embodiment.config, obs.state, plan)

    def camera_frames(self, obs: PolicyInput, cameras: list[str]) -> list[np.ndarray]:
        """The (H, W, 3) uint8 frames of `cameras` in `obs`; ValueError naming the missing ones."""
        missing = [c for c in cameras if obs.images.get(c) is None]
        if missing:
            raise ValueError(f"observation has no camera {', '.join(map(repr, missing))} (has {sorted(obs.images)})")
        return [obs.images[c] for c in cameras]

    def _frame(self, obs: PolicyInput) -> np.ndarray:
        """The configured camera's frame (H, W, 3) uint8."""
        return self.camera_frames(obs, [self.config.camera])[0]

    def camera_input(self, obs: PolicyInput) -> np.ndarray:
        """What the pipeline takes of one observation's cameras: the configured camera's frame."""
        return self._frame(obs)

    def instruction_text(self, obs: PolicyInput) -> str:
        """The text the pipeline is conditioned on: the observation's instruction, else the episode's."""
        return obs.instruction or self.instruction

    def pack(self, observations: list[PolicyInput]) -> tuple[np.ndarray, list[str], np.ndarray]:
        """A batch as the pipeline takes it: camera inputs stacked (B, ...), B texts and the
        model's states (B, state_dim) in physical units."""
        return (np.stack([self.camera_input(o) for o in observations]),
                [self.instruction_text(o) for o in observations],
                np.stack([self.model_state(o) for o in observations]))

    def outputs(self, out: dict, n: int) -> list[PolicyOutput]:
        """The pipeline's answer for n observations as one PolicyOutput each (timings amortized)."""
        per_chunk = {k: v / n for k, v in out["timings_ms"].items()}
        imagined = out.get("imagined")
        return [PolicyOutput(out["actions_normalized"][i], out["actions"][i],
                             None if imagined is None else {self.config.camera: imagined[i]}, dict(per_chunk))
                for i in range(n)]

    def imagined_view(self, frames: np.ndarray) -> np.ndarray | None:
        if self.imagined_camera is None:
            return None
        codec = self.pipeline.codec
        if not len(frames):
            return np.zeros((0, codec.image_size, codec.image_size, 3), np.uint8)
        return np.concatenate([codec.resize(torch.from_numpy(np.array(frames[i: i + 256]))).cpu().numpy()
                               for i in range(0, len(frames), 256)])

    # ---- description --------------------------------------------------------------------------
    def inference_settings(self) -> dict:
        """The settings chunks are computed with, for describe() (the family's options as resolved)."""
        return {}

    def describe(self) -> dict:
        def count(path: str) -> int:
            return int(sum(p.numel() for p in attrgetter(path)(self.pipeline).parameters()))

        training = self.pipeline.meta.get("training", {})
        return {"backend": self.name, "checkpoint": self.checkpoint,
                "parameters": sum(count(path) for path in self.counted_networks),
                **{f"{path.rpartition('.')[2]}_parameters": count(path) for path in self.reported_networks},
                "checkpoint_mb": round(checkpoint_size_mb(self.checkpoint), 2), **self.inference_settings(),
                "training": {k: v for k, v in training.items() if k != "loss_history"}}
