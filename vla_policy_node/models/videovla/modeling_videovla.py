"""VideoVLA at small scale: one diffusion transformer jointly denoises future video latents and
an action chunk, conditioned on instruction tokens and the clean latent V1 of the current frame.

Token sequence (bidirectional attention, one common width, timestep through adaptive LayerNorm):
    [text tokens T | clean V1 patches | noised future latent patches V2..Vn | noised actions A | proprio]
With `action_sees_video` off, only the future patches attend to the future patches: the actions
are denoised from the context alone and the future is imagined given them.
Video and actions share one noise level per sample ("synchronous schedule"). Objectives `ddpm`
(epsilon prediction, DDIM sampling) or `flow` (velocity, FlowMatchEuler sampling), both with
diffusers schedulers. Real-time chunking: `sample(..., prefix=...)` keeps the first actions equal
to a given prefix, so the new chunk continues the plan that runs while it is computed, in one of
two ways: `inpainting` (IT-RTC: the prefix noised to the current level at every step, any
network) or `conditioning` (TT-RTC: a network with `prefix_conditioning` was trained with a random
prefix of the chunk given clean and flagged by a learned embedding, its loss left out; at inference
the committed prefix is given the same way). With no future frames (num_future = 0) the same
network is a plain diffusion action head (the `bc` control).
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F
from diffusers import ConfigMixin, ModelMixin
from diffusers.configuration_utils import register_to_config

from ..components.diffusion import TrainingNoise, noise_to_level
from ..components.diffusion import randn as _randn
from ..components.vae import patchify, unpatchify

PREFIX_METHODS = ("inpainting", "conditioning")   # IT-RTC | TT-RTC


class VideoVLATransformer(ModelMixin, ConfigMixin):
    """The DiT backbone (adaLN-single blocks from diffusers, PixArt style)."""

    @register_to_config
    def __init__(self, text_dim: int = 384, text_tokens: int = 16, latent_channels: int = 4, latent_size: int = 8,
                 patch_size: int = 2, num_future: int = 2, horizon: int = 8, action_dim: int = 4, state_dim: int = 4,
                 use_proprio: bool = True, hidden_size: int = 192, num_layers: int = 6, num_heads: int = 4,
                 action_sees_video: bool = True, prefix_conditioning: bool = False):
        super().__init__()
        from diffusers.models.attention import BasicTransformerBlock
        from diffusers.models.normalization import AdaLayerNormSingle

        d = hidden_size
        patch_dim = latent_channels * patch_size ** 2
        self.patches_per_frame = (latent_size // patch_size) ** 2
        self.text_proj = nn.Linear(text_dim, d)
        self.latent_proj = nn.Linear(patch_dim, d)        # shared by V1 and future latents
        self.action_proj = nn.Linear(action_dim, d)
        self.state_proj = nn.Linear(state_dim, d)
        n_tokens = text_tokens + self.patches_per_frame * (1 + num_future) + horizon + 1
        self.pos_embed = nn.Parameter(torch.randn(1, n_tokens, d) * 0.02)
        self.modality_embed = nn.Parameter(torch.zeros(5, d))  # text, V1, future, action, proprio
        # TT-RTC: added to the action tokens given clean (the committed prefix); zero at the start
        self.prefix_embed = nn.Parameter(torch.zeros(d)) if prefix_conditioning else None
        self.adaln_single = AdaLayerNormSingle(d)
        self.blocks = nn.ModuleList([
            BasicTransformerBlock(d, num_heads, d // num_heads, norm_type="ada_norm_single",
                                  activation_fn="gelu-approximate", norm_elementwise_affine=False, norm_eps=1e-6)
            for _ in range(num_layers)])
        self.norm_out = nn.LayerNorm(d, elementwise_affine=False, eps=1e-6)
        self.scale_shift_table = nn.Parameter(torch.randn(2, d) / d ** 0.5)
        self.latent_out = nn.Linear(d, patch_dim)
        self.action_out = nn.Linear(d, action_dim)
        for layer in (self.latent_out, self.action_out):
            nn.init.zeros_(layer.weight)
            nn.init.zeros_(layer.bias)
        # additive attention mask, built once: no token but the future latents' own attends to them
        self.register_buffer("future_hidden_mask", None if action_sees_video else
                             self._future_hidden_mask(text_tokens, self.patches_per_frame, num_future, n_tokens),
                             persistent=False)

    @staticmethod
    def _future_hidden_mask(text_tokens: int, patches_per_frame: int, num_future: int, n: int) -> torch.Tensor:
        """(L, L) additive mask: the future-latent columns closed to every other token's query."""
        start = text_tokens + patches_per_frame
        stop = start + patches_per_frame * num_future
        sees_future = torch.zeros(n, dtype=torch.bool)
        sees_future[start:stop] = True                    # queries that may look at the future
        mask = torch.zeros(n, n)
        mask[~sees_future[:, None] & sees_future[None, :]] = torch.finfo(torch.float32).min
        return mask

    def forward(self, text: torch.Tensor, v1: torch.Tensor, future: torch.Tensor, actions: torch.Tensor,
                state: torch.Tensor, timestep: torch.Tensor, prefix_mask: torch.Tensor | None = None
                ) -> tuple[torch.Tensor, torch.Tensor]:
        """text (B, Lt, text_dim); v1 (B, C, h, w); future (B, F, C, h, w) noised; actions (B, H, A)
        noised; state (B, S); timestep (B,); prefix_mask (B, H) bool: actions given clean (TT-RTC,
        networks with prefix_conditioning only). Returns predictions shaped like future and actions."""
        cfg = self.config
        b = v1.shape[0]
        p = cfg.patch_size
        state = state if cfg.use_proprio else torch.zeros_like(state)
        action_tokens = self.action_proj(actions) + self.modality_embed[3]
        if prefix_mask is not None:
            if self.prefix_embed is None:
                raise ValueError("this network was not trained with a given prefix (prefix_conditioning is off): "
                                 "use prefix inpainting")
            action_tokens = action_tokens + prefix_mask[..., None].to(action_tokens.dtype) * self.prefix_embed
        parts = [self.text_proj(text) + self.modality_embed[0],
                 self.latent_proj(patchify(v1[:, None], p)) + self.modality_embed[1],
                 self.latent_proj(patchify(future, p)) + self.modality_embed[2],
                 action_tokens,
                 self.state_proj(state)[:, None] + self.modality_embed[4]]
        x = torch.cat(parts, dim=1) + self.pos_embed
        t6, t_embed = self.adaln_single(timestep, {"resolution": None, "aspect_ratio": None}, batch_size=b,
                                        hidden_dtype=x.dtype)
        mask = None if self.future_hidden_mask is None else self.future_hidden_mask.expand(b, -1, -1)
        for block in self.blocks:
            x = block(x, attention_mask=mask, timestep=t6)
        shift, scale = (self.scale_shift_table[None] + t_embed[:, None]).chunk(2, dim=1)
        x = self.norm_out(x) * (1 + scale) + shift
        start = cfg.text_tokens + self.patches_per_frame
        n_future = self.patches_per_frame * cfg.num_future
        future_tokens = x[:, start: start + n_future]
        action_tokens = x[:, start + n_future: start + n_future + cfg.horizon]
        future_pred = unpatchify(self.latent_out(future_tokens), cfg.num_future, cfg.latent_channels,
                                 cfg.latent_size, p)
        return future_pred, self.action_out(action_tokens)


def training_loss(model: VideoVLATransformer, noise: TrainingNoise, text, v1, future, actions, action_mask, state,
                  video_loss_weight: float = 1.0, generator: torch.Generator | None = None,
                  prefix_max: int = 0, prefix_probability: float = 0.5) -> dict:
    """Joint diffusion loss on future latents and actions with one shared noise level per sample.
    With `prefix_max` (TT-RTC, a network with prefix_conditioning), a share `prefix_probability`
    of the samples has its first k ~ U{1..prefix_max} actions given clean and flagged, as the
    committed plan is at inference; their loss is left out."""
    b = v1.shape[0]
    noise_f = torch.randn(future.shape, generator=generator, device=future.device)
    noise_a = torch.randn(actions.shape, generator=generator, device=actions.device)
    levels = noise.sample_levels(b, generator, v1.device)
    noised_actions = noise.noised(actions, noise_a, levels)
    prefix_mask = None
    if prefix_max:
        prefix_mask = training_prefix_mask(b, actions.shape[1], prefix_max, prefix_probability, generator,
                                           actions.device)
        noised_actions = torch.where(prefix_mask[..., None], actions, noised_actions)
        action_mask = action_mask * ~prefix_mask
    pred_f, pred_a = model(text, v1, noise.noised(future, noise_f, levels), noised_actions, state,
                           noise.model_timestep(levels), prefix_mask)
    mask = action_mask[..., None].to(pred_a.dtype)
    target_a = noise.target(actions, noise_a)
    action_loss = ((pred_a - target_a) ** 2 * mask).sum() / (mask.sum() * actions.shape[-1]).clamp(min=1)
    video_loss = F.mse_loss(pred_f, noise.target(future, noise_f)) if future.numel() else pred_a.new_zeros(())
    total = action_loss + video_loss_weight * video_loss
    return {"loss": total, "action_loss": action_loss.detach(), "video_loss": video_loss.detach()}


def training_prefix_mask(batch: int, horizon: int, prefix_max: int, probability: float,
                         generator: torch.Generator | None = None, device=None) -> torch.Tensor:
    """(B, H) bool: the first k actions of a sample given clean, k ~ U{1..prefix_max} for a share
    `probability` of the samples, 0 for the rest (they train the plain, prefix-free chunk)."""
    k = torch.randint(1, min(prefix_max, horizon - 1) + 1, (batch,), generator=generator, device=device)
    k = torch.where(torch.rand(batch, generator=generator, device=device) < probability, k, torch.zeros_like(k))
    return torch.arange(horizon, device=device)[None] < k[:, None]


def sample(model: VideoVLATransformer, scheduler, text, v1, state, num_inference_steps: int,
           prefix: torch.Tensor | None = None, generator: torch.Generator | list | None = None,
           prefix_method: str = "inpainting") -> tuple[torch.Tensor, torch.Tensor]:
    """Jointly denoise future latents and an action chunk. `prefix` (B, k, A) in model space is
    kept fixed: `inpainting` replaces the first k actions at every step by the prefix noised to the
    current level; `conditioning` (networks with prefix_conditioning) gives them clean and flagged.
    Either way they are set exactly at the end. `generator`: one, or one per sample. Returns
    (future latents, actions)."""
    if prefix_method not in PREFIX_METHODS:
        raise ValueError(f"prefix method '{prefix_method}' unknown; use one of {PREFIX_METHODS}")
    cfg = model.config
    b, device = v1.shape[0], v1.device
    scheduler.set_timesteps(num_inference_steps, device=device)
    fut_shape = (b, cfg.num_future, cfg.latent_channels, cfg.latent_size, cfg.latent_size)
    act_shape = (b, cfg.horizon, cfg.action_dim)
    n_fut = cfg.num_future * cfg.latent_channels * cfg.latent_size ** 2
    x = _randn((b, n_fut + cfg.horizon * cfg.action_dim), generator, device, v1.dtype)
    x = x * getattr(scheduler, "init_noise_sigma", 1.0)
    k = 0 if prefix is None else prefix.shape[1]
    prefix_noise = None if prefix is None else _randn(tuple(prefix.shape), generator, device, v1.dtype)
    conditioning = bool(k) and prefix_method == "conditioning"
    prefix_mask = (torch.arange(cfg.horizon, device=device) < k).expand(b, -1) if conditioning else None
    for t in scheduler.timesteps:
        if k:
            x = x.clone()
            given = prefix if conditioning else noise_to_level(scheduler, prefix, prefix_noise, t)
            x[:, n_fut: n_fut + k * cfg.action_dim] = given.reshape(b, -1)
        future, actions = x[:, :n_fut].reshape(fut_shape), x[:, n_fut:].reshape(act_shape)
        pred_f, pred_a = model(text, v1, future, actions, state, t.expand(b).to(device), prefix_mask)
        pred = torch.cat([pred_f.reshape(b, -1), pred_a.reshape(b, -1)], dim=1)
        x = scheduler.step(pred, t, x).prev_sample
    future, actions = x[:, :n_fut].reshape(fut_shape), x[:, n_fut:].reshape(act_shape).clone()
    if k:
        actions[:, :k] = prefix
    return future, actions
