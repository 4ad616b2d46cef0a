"""LingBot-VA at small scale: an autoregressive video-action world model over a cache of real
observations, with a mixture-of-transformers (MoT) of a wide video stream and a narrow action
stream.

Sequence: groups of tokens in time order, each attending to itself (bidirectionally) and to the
groups before it (causal across groups, Figure 3 of the paper):
    [frame z_0 | actions a_0.. | frame z_n | actions a_n.. | ... | video chunk | action chunk]
A real frame group holds the frame latent's patches and a proprio token; an action group the
actions that executed after it (one token each). The chunk is two groups: the video chunk (the
next `frames_per_chunk` frames, one every `actions_per_frame` steps, as changes from the newest
real frame) attends to the history only (visual dynamics, Eq. 8); the action chunk attends to the
history and the video chunk (inverse dynamics, Eq. 9). Forward dynamics (Eq. 13) is the video
chunk predicted after an action group: the outcome of actions that are given.

Streams: each layer gives each stream its own adaptive LayerNorms, QKV and output projections and
feed-forward; the action stream's queries, keys and values are projected into the video width for
one joint self-attention over both (the paper's MoT block). Time enters as rotary embeddings of
the token's step (RoPE over time: attention sees only time differences, so cached keys stay valid
as the episode goes on); the flow-matching noise level of each token through its adaLN; the
instruction through cross-attention. Flow matching: x_s = (1 - s) x + s eps, the network predicts
eps - x (diffusers' FlowMatchEuler integrates it).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn as nn
import torch.nn.functional as F
from diffusers import ConfigMixin, ModelMixin
from diffusers.configuration_utils import register_to_config

from ..components.diffusion import noise_to_level
from ..components.diffusion import randn as _randn
from ..components.vae import patchify, unpatchify

KIND_FRAME, KIND_STATE, KIND_IMAGINED = 0, 1, 2     # video-stream token kinds: real frame, proprio, predicted frame
TIME_EMBED_DIM = 128


def rotate_by_time(x: torch.Tensor, times: torch.Tensor, theta: float) -> torch.Tensor:
    """Rotary embedding over time: x (B, H, L, d) rotated by angles times (B, L) (steps) x frequencies."""
    half = x.shape[-1] // 2
    freqs = theta ** (-torch.arange(half, device=x.device, dtype=torch.float32) / half)
    angles = times.float()[:, None, :, None] * freqs
    cos, sin = angles.cos().to(x.dtype), angles.sin().to(x.dtype)
    x1, x2 = x[..., :half], x[..., half:]
    return torch.cat([x1 * cos - x2 * sin, x1 * sin + x2 * cos], dim=-1)


@dataclass
class TokenLayout:
    """Per-token facts of a sequence (video-stream tokens first, then action-stream tokens).
    times in steps; levels the flow noise level (0 clean .. 1 noise); groups order the causal
    mask (a token sees its own group and lower ones); valid False for padding."""
    times: torch.Tensor      # (B, L) float
    levels: torch.Tensor     # (B, L) float
    groups: torch.Tensor     # (B, L) long
    valid: torch.Tensor      # (B, L) bool
    num_video: int           # the first num_video tokens belong to the video stream

    def attention_mask(self, past: int = 0) -> torch.Tensor:
        """(B, 1, L, past + L) bool: every past token, and the causal group rule among these tokens
        (each token always sees itself, so padding rows stay finite)."""
        g = self.groups
        own = (g[:, None, :] <= g[:, :, None]) & self.valid[:, None, :]
        own |= torch.eye(g.shape[1], dtype=torch.bool, device=g.device)[None]
        if past:
            own = torch.cat([own.new_ones(g.shape[0], g.shape[1], past), own], dim=2)
        return own[:, None]


class MoTBlock(nn.Module):
    """One mixture-of-transformers layer: per-stream adaLN, QKV, output projection, cross-attention
    to the instruction and feed-forward; one joint self-attention in the video width."""

    def __init__(self, video_width: int, action_width: int, num_heads: int, rope_theta: float):
        super().__init__()
        dv, da = video_width, action_width
        self.num_heads, self.rope_theta = num_heads, rope_theta
        self.norm1_v, self.norm1_a = (nn.LayerNorm(d, elementwise_affine=False, eps=1e-6) for d in (dv, da))
        self.qkv_v, self.qkv_a = nn.Linear(dv, 3 * dv), nn.Linear(da, 3 * dv)     # actions into the video width
        self.out_v, self.out_a = nn.Linear(dv, dv), nn.Linear(dv, da)              # ... and back
        self.norm2_v, self.norm2_a = nn.LayerNorm(dv), nn.LayerNorm(da)
        self.cross_v = nn.MultiheadAttention(dv, num_heads, batch_first=True)
        self.cross_a = nn.MultiheadAttention(da, num_heads, kdim=dv, vdim=dv, batch_first=True)
        self.norm3_v, self.norm3_a = (nn.LayerNorm(d, elementwise_affine=False, eps=1e-6) for d in (dv, da))
        self.ff_v = nn.Sequential(nn.Linear(dv, 4 * dv), nn.GELU(approximate="tanh"), nn.Linear(4 * dv, dv))
        self.ff_a = nn.Sequential(nn.Linear(da, 4 * da), nn.GELU(approximate="tanh"), nn.Linear(4 * da, da))
        self.mod_v, self.mod_a = nn.Linear(TIME_EMBED_DIM, 6 * dv), nn.Linear(TIME_EMBED_DIM, 6 * da)
        for mod in (self.mod_v, self.mod_a):         # adaLN-Zero: every block starts as the identity
            nn.init.zeros_(mod.weight)
            nn.init.zeros_(mod.bias)

    def forward(self, xv, xa, temb, layout: TokenLayout, mask, text, past=None):
        """xv (B, Lv, dv), xa (B, La, da), temb (B, L, TIME_EMBED_DIM), text (B, Lt, dv);
        past (keys, values) (B, H, Lp, dv/H) of cached tokens. Returns xv, xa and these tokens' keys/values."""
        b, lv = xv.shape[0], xv.shape[1]
        sv, cv, gv, s2v, c2v, g2v = self.mod_v(F.silu(temb[:, :lv])).chunk(6, dim=-1)
        sa, ca, ga, s2a, c2a, g2a = self.mod_a(F.silu(temb[:, lv:])).chunk(6, dim=-1)
        qkv = torch.cat([self.qkv_v(self.norm1_v(xv) * (1 + cv) + sv),
                         self.qkv_a(self.norm1_a(xa) * (1 + ca) + sa)], dim=1)
        length, width = qkv.shape[1], qkv.shape[2] // 3
        q, k, v = qkv.reshape(b, length, 3, self.num_heads, width // self.num_heads).permute(2, 0, 3, 1, 4)
        q = rotate_by_time(q, layout.times, self.rope_theta)
        k = rotate_by_time(k, layout.times, self.rope_theta)
        kv = (k, v)
        if past is not None:
            k, v = torch.cat([past[0], k], dim=2), torch.cat([past[1], v], dim=2)
        attn = F.scaled_dot_product_attention(q, k, v, attn_mask=mask).transpose(1, 2).reshape(b, length, width)
        xv = xv + gv * self.out_v(attn[:, :lv])
        xa = xa + ga * self.out_a(attn[:, lv:])
        if lv:
            h = self.norm2_v(xv)
            xv = xv + self.cross_v(h, text, text, need_weights=False)[0]
        if xa.shape[1]:
            h = self.norm2_a(xa)
            xa = xa + self.cross_a(h, text, text, need_weights=False)[0]
        xv = xv + g2v * self.ff_v(self.norm3_v(xv) * (1 + c2v) + s2v)
        xa = xa + g2a * self.ff_a(self.norm3_a(xa) * (1 + c2a) + s2a)
        return xv, xa, kv


class LingBotVATransformer(ModelMixin, ConfigMixin):
    """The two-stream transformer; `run` processes new tokens over an optional cache of past keys/values."""

    @register_to_config
    def __init__(self, text_dim: int = 384, latent_channels: int = 4, latent_size: int = 8, patch_size: int = 2,
                 action_dim: int = 4, state_dim: int = 4, video_width: int = 128, action_width: int = 64,
                 num_layers: int = 4, num_heads: int = 4, rope_theta: float = 10000.0):
        super().__init__()
        from diffusers.models.embeddings import TimestepEmbedding, Timesteps

        dv, da = video_width, action_width
        self.patch_dim = latent_channels * patch_size ** 2
        self.patches_per_frame = (latent_size // patch_size) ** 2
        self.patch_in = nn.Linear(self.patch_dim, dv)
        self.spatial_embed = nn.Parameter(torch.randn(self.patches_per_frame, dv) * 0.02)
        self.kind_embed = nn.Parameter(torch.zeros(3, dv))       # real frame, proprio, predicted frame
        self.state_in = nn.Linear(state_dim, dv)
        self.action_in = nn.Linear(action_dim, da)
        self.text_proj = nn.Linear(text_dim, dv)
        self.time_proj = Timesteps(TIME_EMBED_DIM, flip_sin_to_cos=True, downscale_freq_shift=0)
        self.time_embed = TimestepEmbedding(TIME_EMBED_DIM, TIME_EMBED_DIM)
        self.blocks = nn.ModuleList([MoTBlock(dv, da, num_heads, rope_theta) for _ in range(num_layers)])
        self.norm_out_v = nn.LayerNorm(dv, elementwise_affine=False, eps=1e-6)
        self.norm_out_a = nn.LayerNorm(da, elementwise_affine=False, eps=1e-6)
        self.mod_out_v, self.mod_out_a = nn.Linear(TIME_EMBED_DIM, 2 * dv), nn.Linear(TIME_EMBED_DIM, 2 * da)
        self.patch_out = nn.Linear(dv, self.patch_dim)
        self.action_out = nn.Linear(da, action_dim)
        for layer in (self.patch_out, self.action_out, self.mod_out_v, self.mod_out_a):
            nn.init.zeros_(layer.weight)
            nn.init.zeros_(layer.bias)

    # ---- token embeddings ---------------------------------------------------------------
    def frame_tokens(self, latents: torch.Tensor, kind: int) -> torch.Tensor:
        """(B, F, C, h, w) latents -> (B, F * patches, video_width)."""
        b, f = latents.shape[:2]
        x = self.patch_in(patchify(latents, self.config.patch_size))
        return x + self.spatial_embed.repeat(f, 1)[None] + self.kind_embed[kind]

    def state_tokens(self, state: torch.Tensor) -> torch.Tensor:
        """(B, n, state_dim) normalized proprio -> (B, n, video_width)."""
        return self.state_in(state) + self.kind_embed[KIND_STATE]

    def action_tokens(self, actions: torch.Tensor) -> torch.Tensor:
        """(B, n, action_dim) normalized actions -> (B, n, action_width)."""
        return self.action_in(actions)

    def text_tokens(self, text: torch.Tensor) -> torch.Tensor:
        return self.text_proj(text)

    def frames_from_tokens(self, tokens: torch.Tensor, frames: int) -> torch.Tensor:
        cfg = self.config
        return unpatchify(tokens, frames, cfg.latent_channels, cfg.latent_size, cfg.patch_size)

    # ---- the stack ----------------------------------------------------------------------
    def run(self, xv: torch.Tensor, xa: torch.Tensor, layout: TokenLayout, text: torch.Tensor,
            past: list | None = None, outputs: bool = True):
        """New tokens through every layer. past: per layer (keys, values) of cached tokens, all
        visible. Returns (video predictions (B, Lv, patch_dim), action predictions (B, La, action_dim),
        per-layer (keys, values) of the new tokens); predictions are None with outputs=False."""
        b, length = layout.times.shape
        temb = self.time_embed(self.time_proj(layout.levels.reshape(-1) * 1000.0).to(xv.dtype))
        temb = temb.reshape(b, length, -1)
        mask = layout.attention_mask(0 if past is None else past[0][0].shape[2])
        new_kv = []
        for i, block in enumerate(self.blocks):
            xv, xa, kv = block(xv, xa, temb, layout, mask, text, None if past is None else past[i])
            new_kv.append(kv)
        if not outputs:
            return None, None, new_kv
        lv = xv.shape[1]
        shift_v, scale_v = self.mod_out_v(F.silu(temb[:, :lv])).chunk(2, dim=-1)
        shift_a, scale_a = self.mod_out_a(F.silu(temb[:, lv:])).chunk(2, dim=-1)
        video = self.patch_out(self.norm_out_v(xv) * (1 + scale_v) + shift_v)
        actions = self.action_out(self.norm_out_a(xa) * (1 + scale_a) + shift_a)
        return video, actions, new_kv


# ---- the cache of real observations ----------------------------------------------------------
@dataclass
class KVCache:
    """Keys and values of every layer for the real history: frame groups (a real frame's patches
    and proprio) and the action groups that executed after them. Imagined frames never enter it.
    `max_frames` bounds it: the oldest frame group and its actions are evicted first."""
    max_frames: int
    layers: list = field(default_factory=list)      # per layer [keys, values] (B, H, L, d)
    groups: list = field(default_factory=list)      # [(kind "frame" | "actions", tokens, step)]

    def clear(self) -> None:
        self.layers, self.groups = [], []

    def __len__(self) -> int:
        return sum(n for _, n, _ in self.groups)

    @property
    def frames(self) -> int:
        return sum(kind == "frame" for kind, _, _ in self.groups)

    def past(self) -> list | None:
        return [tuple(kv) for kv in self.layers] if self.groups else None

    def append(self, kind: str, kv: list, step: float) -> None:
        tokens = kv[0][0].shape[2]
        if not self.layers:
            self.layers = [[k, v] for k, v in kv]
        else:
            for cached, (k, v) in zip(self.layers, kv):
                cached[0] = torch.cat([cached[0], k], dim=2)
                cached[1] = torch.cat([cached[1], v], dim=2)
        self.groups.append((kind, tokens, step))
        while self.frames > self.max_frames:
            drop = self.groups[0][1]
            self.groups.pop(0)
            while self.groups and self.groups[0][0] != "frame":      # that frame's actions go with it
                drop += self.groups.pop(0)[1]
            self.layers = [[k[:, :, drop:], v[:, :, drop:]] for k, v in self.layers]

    def pop(self) -> None:
        """Drop the newest group (a frame that is replaced by a newer observation of the same step)."""
        _, tokens, _ = self.groups.pop()
        self.layers = [[k[:, :, :-tokens], v[:, :, :-tokens]] for k, v in self.layers] if self.groups else []

    def memory_bytes(self) -> int:
        return sum(k.numel() * k.element_size() + v.numel() * v.element_size() for k, v in self.layers)


def concat_past(past: list | None, extra: list) -> list:
    """Cached keys/values followed by those of extra tokens (a temporary context, the cache unchanged)."""
    if past is None:
        return [tuple(kv) for kv in extra]
    return [(torch.cat([pk, k], dim=2), torch.cat([pv, v], dim=2)) for (pk, pv), (k, v) in zip(past, extra)]


# ---- building sequences ---------------------------------------------------------------------
def _layout(parts: list, num_video: int, batch: int, device) -> TokenLayout:
    """parts: (count, times (B, count) or scalar, level (B,) / scalar, group, valid (B, count) or None)."""
    times, levels, groups, valid = [], [], [], []
    for count, t, level, group, ok in parts:
        if not count:
            continue
        t = torch.as_tensor(t, dtype=torch.float32, device=device)
        times.append(t.expand(batch, count) if t.dim() < 2 else t)
        level = torch.as_tensor(level, dtype=torch.float32, device=device)
        levels.append(level.reshape(-1, 1).expand(batch, count) if level.dim() < 2 else level)
        groups.append(torch.full((batch, count), group, dtype=torch.long, device=device))
        valid.append(torch.ones(batch, count, dtype=torch.bool, device=device) if ok is None else ok)
    return TokenLayout(torch.cat(times, 1), torch.cat(levels, 1), torch.cat(groups, 1), torch.cat(valid, 1), num_video)


def training_loss(model: LingBotVATransformer, batch: dict, noisy_history_prob: float = 0.5,
                  noisy_history_max: float = 0.5, video_loss_weight: float = 1.0,
                  generator: torch.Generator | None = None) -> dict:
    """Teacher-forced flow matching on one chunk per sample (see training_lingbot_va for the batch):
    dynamics loss on the video chunk (Eq. 11/13) and inverse-dynamics loss on the action chunk
    (Eq. 12), over a real history whose frames are noised with probability noisy_history_prob
    (noisy history augmentation, Eq. 10). The video chunk and the action chunk draw their own
    noise levels, so actions learn to read video at every level partial denoising leaves."""
    hist, q_video = batch["hist_latents"], batch["query_video"]
    b, w, dev = hist.shape[0], hist.shape[1], hist.device
    g, k, n = batch["hist_actions"].shape[2], q_video.shape[1], model.patches_per_frame

    def randn(shape):
        return torch.randn(shape, generator=generator, device=dev, dtype=hist.dtype)

    def rand(shape):
        return torch.rand(shape, generator=generator, device=dev)

    hist_level = (rand(b) < noisy_history_prob) * rand(b) * noisy_history_max
    hist_noised = (1 - hist_level.view(b, 1, 1, 1, 1)) * hist + hist_level.view(b, 1, 1, 1, 1) * randn(hist.shape)
    img_level = batch["imagined_level"]
    imagined = batch["imagined"]
    img_noised = (1 - img_level.view(b, 1, 1, 1)) * imagined + img_level.view(b, 1, 1, 1) * randn(imagined.shape)
    s_v, s_a = rand(b), rand(b)
    noise_v, noise_a = randn(q_video.shape), randn(batch["query_actions"].shape)
    video_in = (1 - s_v.view(b, 1, 1, 1, 1)) * q_video + s_v.view(b, 1, 1, 1, 1) * noise_v
    actions_in = (1 - s_a.view(b, 1, 1)) * batch["query_actions"] + s_a.view(b, 1, 1) * noise_a

    xv = torch.cat([model.frame_tokens(hist_noised, KIND_FRAME), model.state_tokens(batch["hist_state"]),
                    model.frame_tokens(img_noised[:, None], KIND_IMAGINED),
                    model.frame_tokens(video_in, KIND_IMAGINED)], dim=1)
    xa = torch.cat([model.action_tokens(batch["hist_actions"].reshape(b, w * g, -1)),
                    model.action_tokens(batch["inflight"]), model.action_tokens(actions_in)], dim=1)
    hist_valid, query_valid = batch["hist_valid"], batch["query_video_valid"]
    frame_group = torch.arange(w, device=dev) * 2
    horizon = batch["query_actions"].shape[1]
    per_patch = lambda x: x.repeat_interleave(n, dim=1)  # noqa: E731
    zeros = torch.zeros(b, device=dev)
    times = torch.cat([per_patch(batch["hist_time"]), batch["hist_time"], batch["imagined_time"][:, None].expand(b, n),
                       per_patch(batch["query_video_time"]), batch["hist_action_time"].reshape(b, w * g),
                       batch["inflight_time"], batch["query_action_time"]], dim=1)
    levels = torch.cat([hist_level[:, None].expand(b, w * n), zeros[:, None].expand(b, w),
                        img_level[:, None].expand(b, n), s_v[:, None].expand(b, k * n),
                        zeros[:, None].expand(b, w * g + g), s_a[:, None].expand(b, horizon)], dim=1)
    groups = torch.cat([frame_group.repeat_interleave(n), frame_group, torch.full((n,), 2 * w + 1, device=dev),
                        torch.full((k * n,), 2 * w + 2, device=dev), (frame_group + 1).repeat_interleave(g),
                        torch.full((g,), 2 * w, device=dev), torch.full((horizon,), 2 * w + 3, device=dev)])
    action_valid = batch["query_action_mask"].sum(1, keepdim=True) > 0
    valid = torch.cat([per_patch(hist_valid), batch["hist_state_valid"],
                       batch["imagined_valid"][:, None].expand(b, n), per_patch(query_valid),
                       batch["hist_action_valid"].reshape(b, w * g), batch["inflight_valid"],
                       action_valid.expand(b, horizon)], dim=1)
    layout = TokenLayout(times, levels, groups[None].expand(b, -1), valid, xv.shape[1])
    video_pred, action_pred, _ = model.run(xv, xa, layout, model.text_tokens(batch["text"]))
    video_pred = model.frames_from_tokens(video_pred[:, -k * n:], k)
    frame_w = query_valid.float().view(b, k, 1, 1, 1)
    video_loss = (((video_pred - (noise_v - q_video)) ** 2) * frame_w).sum() / \
        (frame_w.sum() * q_video[0, 0].numel()).clamp(min=1)
    mask = batch["query_action_mask"][..., None]
    action_pred = action_pred[:, -horizon:]
    action_loss = (((action_pred - (noise_a - batch["query_actions"])) ** 2) * mask).sum() / \
        (mask.sum() * action_pred.shape[-1]).clamp(min=1)
    total = action_loss + video_loss_weight * video_loss
    return {"loss": total, "action_loss": action_loss.detach(), "video_loss": video_loss.detach()}


# ---- inference over the cache ---------------------------------------------------------------
def _empty(model, b: int, width: int, like: torch.Tensor) -> torch.Tensor:
    return like.new_zeros(b, 0, width)


@torch.no_grad()
def encode_frame(model: LingBotVATransformer, latent: torch.Tensor, state: torch.Tensor | None, step: float,
                 text: torch.Tensor, past: list | None, kind: int = KIND_FRAME, level: float = 0.0) -> list:
    """Keys/values of a frame group: latent (B, C, h, w) (real: absolute, clean; imagined: change from
    the newest real frame at noise `level`) and proprio (B, state_dim) or None, at time `step`."""
    b = latent.shape[0]
    xv = model.frame_tokens(latent[:, None], kind)
    if state is not None:
        xv = torch.cat([xv, model.state_tokens(state[:, None])], dim=1)
    layout = _layout([(xv.shape[1], step, level, 0, None)], xv.shape[1], b, latent.device)
    if state is not None:
        layout.levels[:, -1] = 0.0
    return model.run(xv, _empty(model, b, model.config.action_width, xv), layout, text, past, outputs=False)[2]


@torch.no_grad()
def encode_actions(model: LingBotVATransformer, actions: torch.Tensor, first_step: float, text: torch.Tensor,
                   past: list | None) -> list:
    """Keys/values of an action group: actions (B, n, action_dim) normalized, executed (or about to) at
    steps first_step, first_step + 1, ..."""
    b, count = actions.shape[:2]
    xa = model.action_tokens(actions)
    times = first_step + torch.arange(count, device=actions.device, dtype=torch.float32)
    layout = _layout([(count, times[None].expand(b, -1), 0.0, 0, None)], 0, b, actions.device)
    return model.run(_empty(model, b, model.config.video_width, xa), xa, layout, text, past, outputs=False)[2]


@torch.no_grad()
def denoise_video(model: LingBotVATransformer, scheduler, x: torch.Tensor, times: torch.Tensor, text: torch.Tensor,
                  past: list | None, start: int, stop: int) -> torch.Tensor:
    """Integrate video chunk x (B, F, C, h, w) over the scheduler's steps start..stop (set_timesteps
    done by the caller); times (F,) steps of the frames. The chunk sees the context only."""
    b, frames = x.shape[:2]
    n = model.patches_per_frame
    for i in range(start, stop):
        t = scheduler.timesteps[i]
        level = float(scheduler.sigmas[i])
        xv = model.frame_tokens(x, KIND_IMAGINED)
        layout = _layout([(frames * n, times.repeat_interleave(n)[None].expand(b, -1), level, 0, None)],
                         frames * n, b, x.device)
        v, _, _ = model.run(xv, _empty(model, b, model.config.action_width, xv), layout, text, past)
        x = scheduler.step(model.frames_from_tokens(v, frames), t, x).prev_sample
    return x


@torch.no_grad()
def video_chunk_context(model: LingBotVATransformer, x: torch.Tensor, level: float, times: torch.Tensor,
                        text: torch.Tensor, past: list | None) -> list:
    """Keys/values of the (partially denoised) video chunk at noise `level`: what the actions attend to."""
    b, frames = x.shape[:2]
    n = model.patches_per_frame
    xv = model.frame_tokens(x, KIND_IMAGINED)
    layout = _layout([(frames * n, times.repeat_interleave(n)[None].expand(b, -1), level, 0, None)],
                     frames * n, b, x.device)
    return model.run(xv, _empty(model, b, model.config.action_width, xv), layout, text, past, outputs=False)[2]


@torch.no_grad()
def denoise_actions(model: LingBotVATransformer, scheduler, num_steps: int, first_step: float, text: torch.Tensor,
                    past: list | None, batch: int, generator=None, prefix: torch.Tensor | None = None,
                    horizon: int = 8) -> torch.Tensor:
    """The action chunk (B, horizon, action_dim) at steps first_step.., integrated fully over
    `num_steps`, attending to `past` (history and video chunk). `prefix` (B, k, dim) is kept fixed
    (inpainted at every step at the current noise level, set exactly at the end)."""
    dim = model.config.action_dim
    device = text.device
    dtype = text.dtype
    x = _randn((batch, horizon, dim), generator, device, dtype)
    k = 0 if prefix is None else prefix.shape[1]
    prefix_noise = None if not k else _randn(tuple(prefix.shape), generator, device, dtype)
    times = (first_step + torch.arange(horizon, device=device, dtype=torch.float32))[None].expand(batch, -1)
    scheduler.set_timesteps(num_steps, device=device)
    for i, t in enumerate(scheduler.timesteps):
        if k:
            x = x.clone()
            x[:, :k] = noise_to_level(scheduler, prefix, prefix_noise, t)
        level = float(scheduler.sigmas[i])
        layout = _layout([(horizon, times, level, 0, None)], 0, batch, device)
        _, v, _ = model.run(_empty(model, batch, model.config.video_width, x), model.action_tokens(x), layout,
                            text, past)
        x = scheduler.step(v, t, x).prev_sample
    if k:
        x = x.clone()
        x[:, :k] = prefix
    return x


@torch.no_grad()
def encode_history(model: LingBotVATransformer, groups: list, text: torch.Tensor) -> list:
    """Keys/values of a whole real history in one pass, in the cache's token order (what a model
    without a KV cache recomputes). groups: ("frame", latent (B, C, h, w), proprio (B, S) | None, step)
    and ("actions", actions (B, n, dim), first step) in time order."""
    b = text.shape[0]
    video, actions, v_parts, a_parts, order_v, order_a = [], [], [], [], [], []
    position = 0
    for g, group in enumerate(groups):
        if group[0] == "frame":
            _, latent, state, step = group
            tokens = model.frame_tokens(latent[:, None], KIND_FRAME)
            if state is not None:
                tokens = torch.cat([tokens, model.state_tokens(state[:, None])], dim=1)
            video.append(tokens)
            v_parts.append((tokens.shape[1], float(step), 0.0, g, None))
            order_v.append((position, tokens.shape[1]))
        else:
            _, values, step = group
            actions.append(model.action_tokens(values))
            times = float(step) + torch.arange(values.shape[1], dtype=torch.float32, device=values.device)
            a_parts.append((values.shape[1], times[None].expand(b, -1), 0.0, g, None))
            order_a.append((position, values.shape[1]))
        position += video[-1].shape[1] if group[0] == "frame" else values.shape[1]
    xv = torch.cat(video, dim=1) if video else text.new_zeros(b, 0, model.config.video_width)
    xa = torch.cat(actions, dim=1) if actions else text.new_zeros(b, 0, model.config.action_width)
    layout = _layout(v_parts + a_parts, xv.shape[1], b, text.device)
    kv = model.run(xv, xa, layout, text, None, outputs=False)[2]
    # the one pass holds video tokens first, then action tokens: back to time order
    index, v_at, a_at = [], 0, xv.shape[1]
    for (start, count), kind in sorted([(o, "v") for o in order_v] + [(o, "a") for o in order_a]):
        if kind == "v":
            index += range(v_at, v_at + count)
            v_at += count
        else:
            index += range(a_at, a_at + count)
            a_at += count
    index = torch.as_tensor(index, device=text.device)
    return [(k[:, :, index], v[:, :, index]) for k, v in kv]
