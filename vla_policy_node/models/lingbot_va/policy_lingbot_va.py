"""`lingbot_va` backend: a LingBot-VA checkpoint behind the policy interface, with its cache.

Per episode the backend keeps a KV cache of what really happened: every real observation (frame
latent and proprio, `update` / `predict`) and the actions that really executed after it
(`update`). Imagined frames never enter it. A chunk (Algorithm 1 of the paper): the video chunk
is integrated part of the way (`num_video_steps` of `num_inference_steps`, the partial denoising
that noisy history augmentation makes possible), then the action chunk fully while attending to
it. Asynchronous control with `async_grounding: fdm` (Algorithm 2): the actions in flight (the
executor's plan while the model thinks, PolicyInput.in_flight, or the real-time-chunking prefix)
first go into a temporary context, the model imagines their outcome (forward dynamics) from the
newest real frame, and the next chunk is predicted from that imagined state; the chunk returned
is the in-flight actions followed by that whole chunk (k + horizon rows from the observation's time). `none` predicts from the stale observation.
Times are action steps since the episode began (actions executed).
"""

from __future__ import annotations

import copy
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ..backend import COMMON_OPTIONS, BackendOption, PolicyInput, PolicyOutput
from ..checkpoint import CheckpointError
from ..components.diffusion import randn as _randn
from ..components.loading import load_checkpoint_parts, load_network, load_scheduler
from ..components.pipeline import LearnedPolicy, PipelineBase
from ..components.text_encoder import TextEncoder
from ..components.vae import FrameCodec
from .configuration_lingbot_va import GROUNDINGS, LingBotVAConfig
from .modeling_lingbot_va import (KIND_IMAGINED, KVCache, LingBotVATransformer, concat_past,
                                  denoise_actions, denoise_video, encode_actions, encode_frame,
                                  video_chunk_context)


@dataclass
class LingBotVAPipeline(PipelineBase):
    """Everything a checkpoint of this family holds, and the chunk and cache operations on it."""
    config: LingBotVAConfig
    transformer: LingBotVATransformer
    codec: FrameCodec
    text_encoder: TextEncoder
    scheduler: object                # FlowMatchEulerDiscreteScheduler
    norm_mode: str
    action_stats: dict
    state_stats: dict
    meta: dict

    def save_pretrained(self, path: str | Path, training: dict | None = None) -> None:
        path = self.save_common(path, training)
        self.transformer.save_pretrained(path / "transformer")
        self.scheduler.save_pretrained(path / "scheduler")

    @classmethod
    def from_pretrained(cls, path: str | Path, backend: str = "lingbot_va", config_class=LingBotVAConfig,
                        device: str = "cpu", dtype: str = "float32") -> "LingBotVAPipeline":
        parts = load_checkpoint_parts(path, backend, config_class, device, dtype, required=("transformer", "scheduler"))
        path, config = parts.path, parts.config
        transformer = load_network(path / "transformer", LingBotVATransformer, device, parts.dtype)
        if transformer.config.action_dim != config.action_dim:
            raise CheckpointError(f"{path / 'transformer'}: network for {transformer.config.action_dim} action "
                                  f"dimensions, config.json policy has {config.action_dim}")
        scheduler = load_scheduler(path / "scheduler")
        return cls(config, transformer, parts.codec, parts.text_encoder, scheduler, parts.norm_mode,
                   parts.action_stats, parts.state_stats, parts.meta)

    # ---- pieces ---------------------------------------------------------------------------
    def text_tokens(self, instructions: list[str]) -> torch.Tensor:
        text = torch.stack([self.text_encoder.encode(s)[0] for s in instructions]).to(self.device, self.dtype)
        return self.transformer.text_tokens(text)

    def encode_frames(self, frames: np.ndarray, states: np.ndarray) -> tuple[torch.Tensor, torch.Tensor | None]:
        """(B, H, W, 3) uint8 camera frames and (B, S) proprio -> latents (B, C, h, w) and normalized
        proprio (None without proprio)."""
        frames = np.array(frames, dtype=np.uint8)
        latents = self.codec.encode(torch.from_numpy(frames)).to(self.device, self.dtype)
        if not self.config.use_proprio:
            return latents, None
        state = torch.as_tensor(self.state_norm.normalize(np.asarray(states)), dtype=self.dtype, device=self.device)
        return latents, state

    def normalized_actions(self, actions: np.ndarray) -> torch.Tensor:
        """(n, dim) physical units -> (1, n, dim) model space, clipped to [-1, 1]."""
        values = np.clip(self.action_norm.normalize(np.asarray(actions, dtype=np.float64)), -1.0, 1.0)
        return torch.as_tensor(values, dtype=self.dtype, device=self.device)[None]

    @torch.no_grad()
    def chunk(self, text: torch.Tensor, past: list | None, first_step: float, generator, num_inference_steps: int,
              num_video_steps: int, prefix: torch.Tensor | None = None, full_video: bool = False) -> tuple:
        """One autoregressive step over context `past`: the video chunk integrated `num_video_steps`
        steps (to its partial noise level), then the action chunk fully while attending to it.
        Returns (actions (B, horizon, dim) model space, video chunk (B, K, C, h, w) as changes from
        the newest real frame, fully integrated when full_video, else None)."""
        cfg, model = self.config, self.transformer
        b = text.shape[0]
        video_scheduler = copy.deepcopy(self.scheduler)
        video_scheduler.set_timesteps(num_inference_steps, device=self.device)
        times = first_step + torch.tensor(cfg.future_offsets, dtype=torch.float32, device=self.device)
        x = _randn((b, cfg.frames_per_chunk, cfg.latent_channels, cfg.latent_size, cfg.latent_size),
                   generator, self.device, self.dtype)
        x = denoise_video(model, video_scheduler, x, times, text, past, 0, num_video_steps)
        level = float(video_scheduler.sigmas[num_video_steps])
        context = concat_past(past, video_chunk_context(model, x, level, times, text, past))
        actions = denoise_actions(model, copy.deepcopy(self.scheduler), num_inference_steps, first_step, text,
                                  context, b, generator, prefix, cfg.horizon)
        video = None
        if full_video:
            video = denoise_video(model, video_scheduler, x, times, text, past, num_video_steps,
                                  len(video_scheduler.timesteps))
        return actions, video

    @torch.no_grad()
    def imagine_outcome(self, text: torch.Tensor, past: list | None, newest_step: float, in_flight: torch.Tensor,
                        generator, num_inference_steps: int, num_video_steps: int) -> list:
        """Forward dynamics: the context `past` followed by the in-flight actions (B, k, dim) and the
        frame they lead to, imagined from the newest real frame (partially denoised, at its noise level)."""
        model, cfg = self.transformer, self.config
        b, k = in_flight.shape[:2]
        context = concat_past(past, encode_actions(model, in_flight, newest_step, text, past))
        sched = copy.deepcopy(self.scheduler)
        sched.set_timesteps(num_inference_steps, device=self.device)
        times = torch.tensor([newest_step + k], dtype=torch.float32, device=self.device)
        x = _randn((b, 1, cfg.latent_channels, cfg.latent_size, cfg.latent_size), generator, self.device, self.dtype)
        x = denoise_video(model, sched, x, times, text, context, 0, num_video_steps)
        level = float(sched.sigmas[num_video_steps])
        return concat_past(context, encode_frame(model, x[:, 0], None, newest_step + k, text, context,
                                                 KIND_IMAGINED, level))

    @torch.no_grad()
    def decode_changes(self, frames: np.ndarray, z_current: torch.Tensor, changes: torch.Tensor) -> np.ndarray:
        """(B, F, S, S, 3) uint8 imagined frames: the current camera frame plus the decoded change of
        the latent (`changes` in model units), so "nothing moves" is exactly the current frame."""
        latents = z_current[:, None] + changes / self.config.delta_scaling_factor
        b, f = latents.shape[:2]
        decoded = self.codec.decode_float(latents.reshape(b * f, *latents.shape[2:]))
        decoded = decoded.reshape(b, f, *decoded.shape[1:])
        current = self.codec.to_pixels(torch.from_numpy(np.array(frames, dtype=np.uint8)))
        decoded = current[:, None] + decoded - self.codec.decode_float(z_current)[:, None]
        size = self.config.image_size
        return self.codec.to_uint8(decoded.reshape(b * f, *decoded.shape[2:])).reshape(b, f, size, size, 3).cpu().numpy()


class LingBotVAPolicy(LearnedPolicy):
    name = "lingbot_va"
    supports_prefix = True
    stateful = True
    config_class = LingBotVAConfig
    options = {**COMMON_OPTIONS,
               "num_inference_steps": BackendOption(0, "action denoising steps (0 = the checkpoint's)"),
               "num_video_steps": BackendOption(0, "video steps of that schedule, partial denoising (0 = the checkpoint's)"),
               "cache_frames": BackendOption(0, "real frames the KV cache keeps (0 = the checkpoint's)"),
               "async_grounding": BackendOption("fdm", "async modes: fdm = imagine the in-flight actions' outcome "
                                                       "first (forward dynamics); none = predict from the stale frame"),
               "decode_imagined": BackendOption(False, "decode the imagined future frames (for the monitor)")}

    def __init__(self, embodiment, checkpoint: str = "", device: str = "cpu", dtype: str = "float32",
                 num_inference_steps: int = 0, num_video_steps: int = 0, cache_frames: int = 0,
                 async_grounding: str = "fdm", decode_imagined: bool = False):
        if async_grounding not in GROUNDINGS:
            raise ValueError(f"{self.name} option async_grounding: '{async_grounding}' unknown; use one of {GROUNDINGS}")
        super().__init__(embodiment, checkpoint, device, dtype, decode_imagined)
        cfg = self.pipeline.config
        self.num_inference_steps = int(num_inference_steps) or cfg.num_inference_steps
        self.num_video_steps = min(int(num_video_steps) or cfg.num_video_steps, self.num_inference_steps)
        self.async_grounding = async_grounding
        self.cache = KVCache(int(cache_frames) or cfg.cache_frames)
        self._clear()

    def load_pipeline(self, checkpoint: str, device: str, dtype: str) -> LingBotVAPipeline:
        return LingBotVAPipeline.from_pretrained(checkpoint, self.name, self.config_class, device, dtype)

    def _clear(self) -> None:
        self.cache.clear()
        self.step = 0                      # action steps executed this episode
        self.newest: tuple | None = None   # (latent (1, C, h, w), step, stamp) of the newest real frame
        self.text: tuple[str, torch.Tensor] | None = None

    def reset(self, instruction: str, seed: int | None = None, task: str = "") -> None:
        super().reset(instruction, seed, task)
        self._clear()

    # ---- the cache -------------------------------------------------------------------------
    def _text(self, instruction: str) -> torch.Tensor:
        if self.text is None or self.text[0] != instruction:
            self.text = (instruction, self.pipeline.text_tokens([instruction]))
        return self.text[1]

    def _observe(self, obs: PolicyInput, text: torch.Tensor) -> None:
        """The real frame of `obs` into the cache at the current step (replacing a newest frame that
        no action followed: a second observation of the same moment)."""
        if self.newest is not None and self.newest[2] == obs.stamp:
            return
        if self.cache.groups and self.cache.groups[-1][0] == "frame":
            self.cache.pop()
        latent, state = self.pipeline.encode_frames(self._frame(obs)[None], obs.state[None])
        self.cache.append("frame", encode_frame(self.pipeline.transformer, latent, state, self.step, text,
                                                self.cache.past()), self.step)
        self.newest = (latent, self.step, obs.stamp)

    def update(self, executed_actions: np.ndarray, obs: PolicyInput | None = None) -> None:
        """Actions that executed since the newest real frame (physical units), then the observation after them."""
        text = self._text((obs.instruction if obs is not None else "") or self.instruction)
        executed = np.asarray(executed_actions, dtype=np.float64).reshape(-1, self.config.action_dim)
        if len(executed) and self.newest is not None:
            actions = self.pipeline.normalized_actions(executed)
            self.cache.append("actions", encode_actions(self.pipeline.transformer, actions, self.step, text,
                                                        self.cache.past()), self.step)
        self.step += len(executed)
        if obs is not None:
            self._observe(obs, text)

    # ---- chunks --------------------------------------------------------------------------
    def _in_flight(self, obs: PolicyInput, prefix: np.ndarray | None) -> np.ndarray | None:
        if self.async_grounding != "fdm":
            return None
        rows = prefix if prefix is not None and len(prefix) else obs.in_flight
        if rows is None or not len(rows):
            return None
        return np.asarray(rows, dtype=np.float64)[: self.config.horizon - 1]

    def predict(self, obs: PolicyInput, prefix: np.ndarray | None = None) -> PolicyOutput:
        t0 = time.perf_counter()
        cfg, pipe = self.config, self.pipeline
        text = self._text(self.instruction_text(obs))
        self._observe(obs, text)
        generator = self.observation_generator(obs.stamp)
        in_flight = self._in_flight(obs, prefix)
        t1 = time.perf_counter()
        past, first = self.cache.past(), float(self.newest[1])
        prefix_t = None
        if in_flight is not None:
            rows = torch.as_tensor(np.clip(in_flight, -1.0, 1.0), dtype=pipe.dtype, device=pipe.device)[None]
            past = pipe.imagine_outcome(text, past, first, rows, generator, self.num_inference_steps,
                                        self.num_video_steps)
            first += len(in_flight)
        elif prefix is not None and len(prefix):
            prefix_t = torch.as_tensor(np.asarray(prefix)[None, : cfg.horizon], dtype=pipe.dtype, device=pipe.device)
        decode = self.decode_imagined and in_flight is None
        actions, video = pipe.chunk(text, past, first, generator, self.num_inference_steps,
                                    self.num_video_steps, prefix_t, full_video=decode)
        actions = actions[0].float().cpu().numpy().clip(-1.0, 1.0)
        if in_flight is not None:      # the in-flight plan, then a whole chunk after it (Algorithm 2)
            actions = np.concatenate([np.clip(in_flight, -1.0, 1.0), actions])
        t2 = time.perf_counter()
        imagined = None
        if decode:
            imagined = {cfg.camera: pipe.decode_changes(self._frame(obs)[None], self.newest[0], video)[0]}
        return PolicyOutput(actions, pipe.action_norm.unnormalize(actions), imagined,
                            {"preprocess_ms": (t1 - t0) * 1e3, "inference_ms": (t2 - t1) * 1e3,
                             "postprocess_ms": (time.perf_counter() - t2) * 1e3})

    def predict_batch(self, observations: list[PolicyInput]) -> list[PolicyOutput]:
        """Chunks for independent observations, each from its own frame alone (an empty history)."""
        pipe = self.pipeline
        t0 = time.perf_counter()
        frames, instructions, states = self.pack(observations)
        text = pipe.text_tokens(instructions)
        latents, state = pipe.encode_frames(frames, states)
        past = encode_frame(pipe.transformer, latents, state, 0.0, text, None)
        generators = [self.observation_generator(o.stamp) for o in observations]
        actions, video = pipe.chunk(text, past, 0.0, generators, self.num_inference_steps, self.num_video_steps,
                                    full_video=self.decode_imagined)
        actions = actions.float().cpu().numpy().clip(-1.0, 1.0)
        imagined = pipe.decode_changes(frames, latents, video) if self.decode_imagined else None
        return self.outputs({"actions_normalized": actions, "actions": pipe.action_norm.unnormalize(actions),
                             "imagined": imagined, "timings_ms": {"inference_ms": (time.perf_counter() - t0) * 1e3}},
                            len(observations))

    # ---- imagination -----------------------------------------------------------------------
    @property
    def future_offsets(self) -> list[int]:
        return list(self.config.future_offsets)

    @property
    def imagined_camera(self) -> str | None:
        return self.config.camera

    @torch.no_grad()
    def reconstruct_future(self, current: np.ndarray, future: np.ndarray) -> np.ndarray | None:
        pipe = self.pipeline
        z_cur = pipe.codec.encode(torch.from_numpy(np.array(current, dtype=np.uint8))).to(pipe.dtype)
        z_fut = pipe.codec.encode(torch.from_numpy(np.array(future, dtype=np.uint8))).to(pipe.dtype)
        change = (z_fut - z_cur) * self.config.delta_scaling_factor
        return pipe.decode_changes(current, z_cur, change[:, None])[:, 0]

    def inference_settings(self) -> dict:
        return {"num_inference_steps": self.num_inference_steps, "num_video_steps": self.num_video_steps,
                "async_grounding": self.async_grounding, "cache_frames": self.cache.max_frames,
                "cache_tokens": len(self.cache), "cache_bytes": self.cache.memory_bytes()}
