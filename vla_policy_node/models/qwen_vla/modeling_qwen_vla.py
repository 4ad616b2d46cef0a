"""Qwen-VLA networks at small scale.

- Views to Qwen2-VL patches (`views_to_patches`): the layout transformers' Qwen2VLImageProcessor
  produces, computed in torch so a batch of frames never leaves the device.
- The prompt sequence (`PromptTokenizer`): each view wrapped in its tag and vision tokens
  ("corner: <|vision_start|><|image_pad|>...<|vision_end|>"), then the embodiment prompt, WordPiece tokens.
- The backbone is transformers' `Qwen2VLModel` (vision tower with 2x2 patch merge, M-RoPE text
  model); its last hidden states condition the action expert.
- `QwenVLAActionExpert`: a DiT over [backbone states | proprio | H noisy action rows], adaLN-Zero from
  the flow time, trained by flow matching on the unified tensor Y (H x K) with the validity mask M
  (`masked_flow_loss`, the paper's Eq. 1-2), sampled by a few Euler steps (`sample_actions`).
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.models.embeddings import TimestepEmbedding, Timesteps
from diffusers.models.modeling_utils import ModelMixin

from ..components.diffusion import noise_to_level, randn

VISION_START, VISION_END, IMAGE_PAD = "<|vision_start|>", "<|vision_end|>", "<|image_pad|>"
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)     # Qwen2-VL's image normalization (OpenAI CLIP)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)


def views_to_patches(frames: torch.Tensor, patch_size: int, merge: int, temporal: int) -> tuple:
    """(N, S, S, 3) uint8 images -> pixel_values (N * (S/p)^2, 3 * temporal * p * p) float and
    image_grid_thw (N, 3), in the order Qwen2VLImageProcessor emits them (each still image repeated
    over the temporal patch, patches grouped by merge window)."""
    n, s = frames.shape[0], frames.shape[1]
    mean = torch.tensor(CLIP_MEAN, device=frames.device).view(1, 3, 1, 1)
    std = torch.tensor(CLIP_STD, device=frames.device).view(1, 3, 1, 1)
    x = (frames.permute(0, 3, 1, 2).float() / 255.0 - mean) / std                   # (N, 3, S, S)
    x = x[:, None].expand(n, temporal, 3, s, s)
    g = s // patch_size
    x = x.reshape(n, 1, temporal, 3, g // merge, merge, patch_size, g // merge, merge, patch_size)
    x = x.permute(0, 1, 4, 7, 5, 8, 3, 2, 6, 9)
    pixel_values = x.reshape(n * g * g, 3 * temporal * patch_size * patch_size)
    grid = torch.tensor([[1, g, g]], dtype=torch.long, device=frames.device).expand(n, 3)
    return pixel_values, grid


class PromptTokenizer:
    """Token ids of [view tags + vision tokens | embodiment prompt] with the mask of image tokens.

    WordPiece (the MiniLM tokenizer shipped offline) with the three vision tokens added; sequences
    are cached per (prompt, views), padded on the right to the longest in a batch."""

    def __init__(self, tokenizer, tokens_per_view: int, max_text_tokens: int):
        self.tokenizer, self.tokens_per_view, self.max_text_tokens = tokenizer, tokens_per_view, max_text_tokens
        missing = [t for t in (VISION_START, VISION_END, IMAGE_PAD) if t not in tokenizer.get_vocab()]
        if missing:
            tokenizer.add_special_tokens({"additional_special_tokens": missing})
        self.image_token_id = tokenizer.convert_tokens_to_ids(IMAGE_PAD)
        self.vision_start_id = tokenizer.convert_tokens_to_ids(VISION_START)
        self.vision_end_id = tokenizer.convert_tokens_to_ids(VISION_END)
        self.pad_id = tokenizer.pad_token_id or 0
        self._cache: dict = {}

    def __len__(self) -> int:
        return len(self.tokenizer)

    def ids(self, prompt: str, views: tuple) -> list[int]:
        key = (prompt, tuple(views))
        if key not in self._cache:
            seq: list[int] = []
            for view in views:
                seq += self.tokenizer.encode(f"{view}:", add_special_tokens=False)
                seq += [self.vision_start_id] + [self.image_token_id] * self.tokens_per_view + [self.vision_end_id]
            seq += self.tokenizer.encode(prompt, add_special_tokens=False)[: self.max_text_tokens]
            self._cache[key] = seq
        return self._cache[key]

    def batch(self, prompts: list[str], views: list[tuple], device=None) -> dict:
        """input_ids, attention_mask and mm_token_type_ids (1 on image tokens) for B samples."""
        seqs = [self.ids(p, v) for p, v in zip(prompts, views)]
        length = max(len(s) for s in seqs)
        ids = torch.full((len(seqs), length), self.pad_id, dtype=torch.long)
        mask = torch.zeros((len(seqs), length), dtype=torch.long)
        for i, s in enumerate(seqs):
            ids[i, : len(s)] = torch.tensor(s)
            mask[i, : len(s)] = 1
        return {"input_ids": ids.to(device), "attention_mask": mask.to(device),
                "mm_token_type_ids": (ids == self.image_token_id).int().to(device)}


def build_backbone(config: dict):
    """A transformers Qwen2VLModel from QwenVLAConfig.backbone_config() (random weights)."""
    from transformers import Qwen2VLConfig, Qwen2VLModel

    return Qwen2VLModel(Qwen2VLConfig(**config))


class DiTBlock(nn.Module):
    """Self-attention and MLP over all tokens, each modulated by the flow time (adaLN-Zero)."""

    def __init__(self, width: int, heads: int):
        super().__init__()
        self.norm1 = nn.LayerNorm(width, elementwise_affine=False, eps=1e-6)
        self.attn = nn.MultiheadAttention(width, heads, batch_first=True)
        self.norm2 = nn.LayerNorm(width, elementwise_affine=False, eps=1e-6)
        self.mlp = nn.Sequential(nn.Linear(width, 4 * width), nn.GELU(approximate="tanh"), nn.Linear(4 * width, width))
        self.modulation = nn.Linear(width, 6 * width)
        nn.init.zeros_(self.modulation.weight)
        nn.init.zeros_(self.modulation.bias)

    def forward(self, x: torch.Tensor, temb: torch.Tensor, padding: torch.Tensor | None) -> torch.Tensor:
        shift1, scale1, gate1, shift2, scale2, gate2 = self.modulation(F.silu(temb))[:, None].chunk(6, dim=-1)
        h = self.norm1(x) * (1 + scale1) + shift1
        x = x + gate1 * self.attn(h, h, h, key_padding_mask=padding, need_weights=False)[0]
        h = self.norm2(x) * (1 + scale2) + shift2
        return x + gate2 * self.mlp(h)


class QwenVLAActionExpert(ModelMixin, ConfigMixin):
    """Velocity of the unified action tensor: (B, H, K) noisy rows, flow time, backbone states -> (B, H, K).

    One shared projection K -> width and width -> K for every robot (zero-padded channels carry
    nothing); with `per_embodiment_channels` (the ablation) each robot has its own input and output
    projection over its own channels instead."""

    @register_to_config
    def __init__(self, condition_dim: int = 128, unified_dim: int = 32, horizon: int = 16, width: int = 128,
                 num_layers: int = 4, num_heads: int = 4, use_proprio: bool = False,
                 per_embodiment_channels: dict | None = None):
        super().__init__()
        self.condition_proj = nn.Linear(condition_dim, width)
        self.proprio_proj = nn.Linear(unified_dim, width) if use_proprio else None
        self.per_embodiment = sorted(per_embodiment_channels or {})
        if self.per_embodiment:
            chans = per_embodiment_channels
            self.action_in = nn.ModuleList(nn.Linear(len(chans[n]), width) for n in self.per_embodiment)
            self.action_out = nn.ModuleList(nn.Linear(width, len(chans[n])) for n in self.per_embodiment)
            for i, n in enumerate(self.per_embodiment):
                self.register_buffer(f"channels_{i}", torch.tensor(chans[n], dtype=torch.long), persistent=False)
        else:
            self.action_in, self.action_out = nn.Linear(unified_dim, width), nn.Linear(width, unified_dim)
        self.position = nn.Parameter(torch.randn(1, horizon, width) * 0.02)
        self.time_proj = Timesteps(width, flip_sin_to_cos=True, downscale_freq_shift=0)
        self.time_embedding = TimestepEmbedding(width, width)
        self.blocks = nn.ModuleList(DiTBlock(width, num_heads) for _ in range(num_layers))
        self.norm_out = nn.LayerNorm(width, elementwise_affine=False, eps=1e-6)
        self.modulation_out = nn.Linear(width, 2 * width)
        nn.init.zeros_(self.modulation_out.weight)
        nn.init.zeros_(self.modulation_out.bias)

    def embodiment_index(self, names: list[str], device=None) -> torch.Tensor | None:
        """Rows of the per-embodiment projections for B samples (None with the shared projection)."""
        if not self.per_embodiment:
            return None
        return torch.tensor([self.per_embodiment.index(n) for n in names], dtype=torch.long, device=device)

    def _project_in(self, noisy: torch.Tensor, embodiment: torch.Tensor | None) -> torch.Tensor:
        if not self.per_embodiment:
            return self.action_in(noisy)
        out = noisy.new_zeros(*noisy.shape[:2], self.position.shape[-1])
        for i, layer in enumerate(self.action_in):
            rows = embodiment == i
            if rows.any():
                out[rows] = layer(noisy[rows][..., getattr(self, f"channels_{i}")])
        return out

    def _project_out(self, h: torch.Tensor, embodiment: torch.Tensor | None) -> torch.Tensor:
        if not self.per_embodiment:
            return self.action_out(h)
        out = h.new_zeros(*h.shape[:2], self.config.unified_dim)
        for i, layer in enumerate(self.action_out):
            rows = embodiment == i
            if rows.any():
                sub = out[rows]
                sub[..., getattr(self, f"channels_{i}")] = layer(h[rows])
                out[rows] = sub
        return out

    def forward(self, noisy: torch.Tensor, timestep: torch.Tensor, condition: torch.Tensor,
                condition_mask: torch.Tensor, proprio: torch.Tensor | None = None,
                embodiment: torch.Tensor | None = None) -> torch.Tensor:
        """noisy (B, H, K); timestep (B,) on the 0..1000 scale; condition (B, L, C) backbone states
        with condition_mask (B, L) 1 valid / 0 padding; proprio (B, K) zero-padded, normalized."""
        b, h = noisy.shape[:2]
        temb = self.time_embedding(self.time_proj(timestep.reshape(-1).expand(b)).to(noisy.dtype))
        tokens = [self.condition_proj(condition)]
        valid = [condition_mask.bool()]
        if self.proprio_proj is not None:
            tokens.append(self.proprio_proj(proprio)[:, None])
            valid.append(torch.ones(b, 1, dtype=torch.bool, device=noisy.device))
        tokens.append(self._project_in(noisy, embodiment) + self.position[:, :h])
        valid.append(torch.ones(b, h, dtype=torch.bool, device=noisy.device))
        x, padding = torch.cat(tokens, 1), ~torch.cat(valid, 1)
        for block in self.blocks:
            x = block(x, temb, padding)
        shift, scale = self.modulation_out(F.silu(temb))[:, None].chunk(2, dim=-1)
        return self._project_out(self.norm_out(x[:, -h:]) * (1 + scale) + shift, embodiment)


def masked_flow_loss(velocity: torch.Tensor, target: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Eq. 1-2: per sample and channel, the squared error averaged over the valid steps; then the
    mean over the sample's active channels (each channel counts the same whatever a robot's channel
    count); then over the batch. Padded entries (mask 0) never reach the gradient."""
    err = (velocity - target).pow(2) * mask
    steps = mask.sum(1)                                                # (B, K) valid steps per channel
    per_channel = err.sum(1) / steps.clamp(min=1)
    active = (steps > 0).float()
    return ((per_channel * active).sum(1) / active.sum(1).clamp(min=1)).mean()


@torch.no_grad()
def sample_actions(expert: QwenVLAActionExpert, scheduler, condition: torch.Tensor, condition_mask: torch.Tensor,
                   num_inference_steps: int, proprio: torch.Tensor | None = None,
                   embodiment: torch.Tensor | None = None, generator=None, prefix: torch.Tensor | None = None,
                   prefix_mask: torch.Tensor | None = None) -> torch.Tensor:
    """(B, H, K) unified actions by Euler integration from tau = 1 (noise) to 0 (diffusers
    FlowMatchEulerDiscreteScheduler). `prefix` (B, H, K) with `prefix_mask` (B, H, K): entries kept
    fixed (real-time chunking), re-noised to each step's level and set exactly at the end."""
    cfg = expert.config
    b = condition.shape[0]
    x = randn((b, cfg.horizon, cfg.unified_dim), generator, condition.device, condition.dtype)
    noise = x.clone()
    scheduler.set_timesteps(num_inference_steps, device=condition.device)
    for t in scheduler.timesteps:
        if prefix is not None:
            x = torch.where(prefix_mask.bool(), noise_to_level(scheduler, prefix, noise, t), x)
        velocity = expert(x, t.expand(b).to(condition.dtype), condition, condition_mask, proprio, embodiment)
        x = scheduler.step(velocity, t, x).prev_sample
    if prefix is not None:
        x = torch.where(prefix_mask.bool(), prefix, x)
    return x
