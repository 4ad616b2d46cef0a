"""VideoVLA at small scale: one diffusion transformer jointly denoises future video latents and
an action chunk, conditioned on instruction tokens and the clean latent V1 of the current frame.

Token sequence (bidirectional attention, one common width, timestep through adaptive LayerNorm):
    [text tokens T | clean V1 patches | noised future latent patches V2..Vn | noised actions A | proprio]
Video and actions share one noise level per sample ("synchronous schedule"). Objectives:
`ddpm` (epsilon prediction; DDIM sampling) or `flow` (velocity; FlowMatchEuler sampling), both
with diffusers schedulers. Real-time chunking: `sample(..., prefix=...)` keeps the first actions
equal to a given prefix (inpainting at every step), so the new chunk continues it.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F


@dataclass
class VideoVLAConfig:
    text_dim: int = 384
    text_tokens: int = 16
    latent_channels: int = 4
    latent_size: int = 8                     # latent side (image_size / VAE downsample)
    patch_size: int = 2
    future_offsets: list = field(default_factory=lambda: [4, 8])   # steps ahead of each imagined frame
    horizon: int = 8
    action_dim: int = 4
    state_dim: int = 4
    use_proprio: bool = True
    hidden_size: int = 192
    num_layers: int = 6
    num_heads: int = 4
    objective: str = "ddpm"                  # ddpm | flow
    num_train_timesteps: int = 1000
    num_inference_steps: int = 10
    video_loss_weight: float = 1.0           # 0 = the paper's "no video loss" ablation
    image_size: int = 64
    camera: str = "corner"

    @property
    def patches_per_frame(self) -> int:
        return (self.latent_size // self.patch_size) ** 2

    @property
    def patch_dim(self) -> int:
        return self.latent_channels * self.patch_size ** 2

    @property
    def num_future(self) -> int:
        return len(self.future_offsets)

    def save(self, path: Path) -> None:
        path.write_text(json.dumps(asdict(self), indent=2))

    @classmethod
    def from_dict(cls, data: dict) -> "VideoVLAConfig":
        known = set(cls.__dataclass_fields__)
        unknown = set(data) - known
        if unknown:
            raise ValueError(f"VideoVLA config: unknown keys {sorted(unknown)}")
        return cls(**data)


def patchify(latents: torch.Tensor, p: int) -> torch.Tensor:
    """(B, F, C, h, w) -> (B, F * (h/p) * (w/p), C * p * p), raster order per frame."""
    b, f, c, h, w = latents.shape
    x = latents.reshape(b, f, c, h // p, p, w // p, p).permute(0, 1, 3, 5, 2, 4, 6)
    return x.reshape(b, f * (h // p) * (w // p), c * p * p)


def unpatchify(tokens: torch.Tensor, frames: int, c: int, size: int, p: int) -> torch.Tensor:
    b = tokens.shape[0]
    n = size // p
    x = tokens.reshape(b, frames, n, n, c, p, p).permute(0, 1, 4, 2, 5, 3, 6)
    return x.reshape(b, frames, c, size, size)


class VideoVLATransformer(nn.Module):
    """The DiT backbone (adaLN-single blocks from diffusers, PixArt style)."""

    def __init__(self, config: VideoVLAConfig):
        super().__init__()
        from diffusers.models.attention import BasicTransformerBlock
        from diffusers.models.normalization import AdaLayerNormSingle

        self.config = cfg = config
        d = cfg.hidden_size
        self.text_proj = nn.Linear(cfg.text_dim, d)
        self.latent_proj = nn.Linear(cfg.patch_dim, d)        # shared by V1 and future latents
        self.action_proj = nn.Linear(cfg.action_dim, d)
        self.state_proj = nn.Linear(cfg.state_dim, d)
        n_tokens = cfg.text_tokens + cfg.patches_per_frame * (1 + cfg.num_future) + cfg.horizon + 1
        self.pos_embed = nn.Parameter(torch.randn(1, n_tokens, d) * 0.02)
        self.modality_embed = nn.Parameter(torch.zeros(5, d))  # text, V1, future, action, proprio
        self.adaln_single = AdaLayerNormSingle(d)
        self.blocks = nn.ModuleList([
            BasicTransformerBlock(d, cfg.num_heads, d // cfg.num_heads, norm_type="ada_norm_single",
                                  activation_fn="gelu-approximate", norm_elementwise_affine=False, norm_eps=1e-6)
            for _ in range(cfg.num_layers)])
        self.norm_out = nn.LayerNorm(d, elementwise_affine=False, eps=1e-6)
        self.scale_shift_table = nn.Parameter(torch.randn(2, d) / d ** 0.5)
        self.latent_out = nn.Linear(d, cfg.patch_dim)
        self.action_out = nn.Linear(d, cfg.action_dim)
        nn.init.zeros_(self.latent_out.weight)
        nn.init.zeros_(self.latent_out.bias)
        nn.init.zeros_(self.action_out.weight)
        nn.init.zeros_(self.action_out.bias)

    def forward(self, text: torch.Tensor, v1: torch.Tensor, future: torch.Tensor, actions: torch.Tensor,
                state: torch.Tensor, timestep: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """text (B, Lt, text_dim); v1 (B, C, h, w); future (B, F, C, h, w) noised; actions (B, H, A)
        noised; state (B, S); timestep (B,). Returns predictions shaped like future and actions."""
        cfg = self.config
        b = v1.shape[0]
        p = cfg.patch_size
        state = state if cfg.use_proprio else torch.zeros_like(state)
        parts = [self.text_proj(text) + self.modality_embed[0],
                 self.latent_proj(patchify(v1[:, None], p)) + self.modality_embed[1],
                 self.latent_proj(patchify(future, p)) + self.modality_embed[2],
                 self.action_proj(actions) + self.modality_embed[3],
                 self.state_proj(state)[:, None] + self.modality_embed[4]]
        x = torch.cat(parts, dim=1) + self.pos_embed
        t6, t_embed = self.adaln_single(timestep, {"resolution": None, "aspect_ratio": None}, batch_size=b,
                                        hidden_dtype=x.dtype)
        for block in self.blocks:
            x = block(x, timestep=t6)
        shift, scale = (self.scale_shift_table[None] + t_embed[:, None]).chunk(2, dim=1)
        x = self.norm_out(x) * (1 + scale) + shift
        start = cfg.text_tokens + cfg.patches_per_frame
        n_future = cfg.patches_per_frame * cfg.num_future
        future_tokens = x[:, start: start + n_future]
        action_tokens = x[:, start + n_future: start + n_future + cfg.horizon]
        future_pred = unpatchify(self.latent_out(future_tokens), cfg.num_future, cfg.latent_channels,
                                 cfg.latent_size, p)
        return future_pred, self.action_out(action_tokens)


def make_scheduler(config: VideoVLAConfig, kind: str | None = None):
    """The inference scheduler matching the training objective (DDIM for ddpm, Euler for flow)."""
    from diffusers import DDIMScheduler, FlowMatchEulerDiscreteScheduler

    if config.objective == "flow":
        if kind not in (None, "flow_euler"):
            raise ValueError(f"a flow-matching model samples with 'flow_euler', not '{kind}'")
        return FlowMatchEulerDiscreteScheduler(num_train_timesteps=config.num_train_timesteps, shift=1.0)
    if kind not in (None, "ddim"):
        raise ValueError(f"a DDPM-trained model samples with 'ddim', not '{kind}'")
    return DDIMScheduler(num_train_timesteps=config.num_train_timesteps, beta_schedule="squaredcos_cap_v2",
                         clip_sample=False, set_alpha_to_one=True, prediction_type="epsilon")


def training_loss(model: VideoVLATransformer, text, v1, future, actions, action_mask, state,
                  generator: torch.Generator | None = None) -> dict:
    """Joint diffusion loss on future latents and actions with one shared noise level per sample."""
    from diffusers import DDPMScheduler

    cfg = model.config
    b = v1.shape[0]
    noise_f = torch.randn(future.shape, generator=generator, device=future.device)
    noise_a = torch.randn(actions.shape, generator=generator, device=actions.device)
    if cfg.objective == "flow":
        sigma = torch.rand(b, generator=generator, device=v1.device)
        sf, sa = sigma.view(b, 1, 1, 1, 1), sigma.view(b, 1, 1)
        noisy_f, noisy_a = (1 - sf) * future + sf * noise_f, (1 - sa) * actions + sa * noise_a
        target_f, target_a = noise_f - future, noise_a - actions
        timestep = sigma * cfg.num_train_timesteps
    else:
        sched = getattr(training_loss, "_ddpm", None)
        if sched is None or sched.config.num_train_timesteps != cfg.num_train_timesteps:
            sched = training_loss._ddpm = DDPMScheduler(num_train_timesteps=cfg.num_train_timesteps,
                                                        beta_schedule="squaredcos_cap_v2")
        timestep = torch.randint(0, cfg.num_train_timesteps, (b,), generator=generator, device=v1.device)
        noisy_f = sched.add_noise(future, noise_f, timestep)
        noisy_a = sched.add_noise(actions, noise_a, timestep)
        target_f, target_a = noise_f, noise_a
    pred_f, pred_a = model(text, v1, noisy_f, noisy_a, state, timestep)
    mask = action_mask[..., None].to(pred_a.dtype)
    action_loss = ((pred_a - target_a) ** 2 * mask).sum() / (mask.sum() * cfg.action_dim).clamp(min=1)
    video_loss = F.mse_loss(pred_f, target_f)
    total = action_loss + cfg.video_loss_weight * video_loss
    return {"loss": total, "action_loss": action_loss.detach(), "video_loss": video_loss.detach()}


@torch.no_grad()
def sample(model: VideoVLATransformer, text, v1, state, num_inference_steps: int | None = None,
           prefix: torch.Tensor | None = None, generator: torch.Generator | None = None,
           scheduler=None) -> tuple[torch.Tensor, torch.Tensor]:
    """Jointly denoise future latents and an action chunk. `prefix` (B, k, A) in model space is
    kept fixed: at every step the first k actions are replaced by the prefix noised to the
    current level, and set exactly at the end. Returns (future latents, actions)."""
    cfg = model.config
    b, device = v1.shape[0], v1.device
    scheduler = scheduler or make_scheduler(cfg)
    scheduler.set_timesteps(num_inference_steps or cfg.num_inference_steps, device=device)
    fut_shape = (b, cfg.num_future, cfg.latent_channels, cfg.latent_size, cfg.latent_size)
    act_shape = (b, cfg.horizon, cfg.action_dim)
    n_fut = int(torch.tensor(fut_shape[1:]).prod())
    x = torch.randn((b, n_fut + cfg.horizon * cfg.action_dim), generator=generator, device=device)
    x = x * getattr(scheduler, "init_noise_sigma", 1.0)
    k = 0 if prefix is None else prefix.shape[1]
    prefix_noise = None if prefix is None else torch.randn(prefix.shape, generator=generator, device=device)
    timesteps = scheduler.timesteps
    for i, t in enumerate(timesteps):
        if k:
            x = _inpaint(scheduler, cfg, x, prefix, prefix_noise, t, n_fut)
        future, actions = x[:, :n_fut].reshape(fut_shape), x[:, n_fut:].reshape(act_shape)
        tt = t.expand(b).to(device)
        pred_f, pred_a = model(text, v1, future, actions, state, tt)
        pred = torch.cat([pred_f.reshape(b, -1), pred_a.reshape(b, -1)], dim=1)
        x = scheduler.step(pred, t, x).prev_sample
    future, actions = x[:, :n_fut].reshape(fut_shape), x[:, n_fut:].reshape(act_shape).clone()
    if k:
        actions[:, :k] = prefix
    return future, actions


def _inpaint(scheduler, cfg, x, prefix, prefix_noise, t, n_fut):
    """Overwrite the prefix actions of x with the prefix at the noise level of timestep t."""
    b, k, a = prefix.shape
    if cfg.objective == "flow":
        noisy = scheduler.scale_noise(prefix, t.reshape(1), prefix_noise)
    else:
        noisy = scheduler.add_noise(prefix, prefix_noise, t.reshape(1).long())
    x = x.clone()
    x[:, n_fut: n_fut + k * a] = noisy.reshape(b, -1)
    return x
