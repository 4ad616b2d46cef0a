"""Video latents: a diffusers VAE that maps frames to latents and back.

Small checkpoints train their own `AutoencoderKL` (image VAE applied per frame) here; real ones
load `AutoencoderKLCogVideoX` or `AutoencoderKLWan` from a local directory. Frames are RGB uint8
(B, H, W, 3); latents are (B, C, h, w) multiplied by `scaling_factor` (unit variance).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

VAE_CLASSES = ("AutoencoderKL", "AutoencoderKLCogVideoX", "AutoencoderKLWan")


def build_small_vae(latent_channels: int = 4, downsample: int = 8, width: int = 32):
    """An AutoencoderKL whose latent is image_size / downsample per side."""
    from diffusers import AutoencoderKL

    levels = {4: 3, 8: 4}[downsample]
    channels = tuple(min(width * 2 ** i, width * 4) for i in range(levels))
    return AutoencoderKL(in_channels=3, out_channels=3, latent_channels=latent_channels,
                         down_block_types=("DownEncoderBlock2D",) * levels,
                         up_block_types=("UpDecoderBlock2D",) * levels,
                         block_out_channels=channels, layers_per_block=1, norm_num_groups=8)


def load_vae(path: str | Path, class_name: str = "AutoencoderKL"):
    import diffusers

    if class_name not in VAE_CLASSES:
        raise ValueError(f"VAE class '{class_name}' unsupported; use one of {VAE_CLASSES}")
    return getattr(diffusers, class_name).from_pretrained(Path(path), local_files_only=True)


def to_model_pixels(frames_uint8: torch.Tensor, size: int) -> torch.Tensor:
    """(B, H, W, 3) uint8 -> (B, 3, size, size) float in [-1, 1] (antialiased bilinear resize)."""
    x = frames_uint8.permute(0, 3, 1, 2).float() / 127.5 - 1.0
    if x.shape[-1] != size or x.shape[-2] != size:
        x = F.interpolate(x, size=(size, size), mode="bilinear", antialias=True, align_corners=False)
    return x


def resize_frames(frames: np.ndarray, size: int, batch: int = 512) -> torch.Tensor:
    """(N, H, W, 3) uint8 -> (N, size, size, 3) uint8, resized as the model resizes its input."""
    return torch.cat([FrameCodec.to_uint8(to_model_pixels(torch.from_numpy(frames[i: i + batch]), size))
                      for i in range(0, len(frames), batch)])


class FrameCodec:
    """Frames <-> scaled latents with one VAE at a fixed square resolution."""

    def __init__(self, vae, image_size: int, scaling_factor: float = 1.0):
        self.vae = vae.eval().requires_grad_(False)
        self.image_size = image_size
        self.scaling_factor = scaling_factor
        self.temporal = vae.__class__.__name__ != "AutoencoderKL"   # video VAEs take (B, C, T, H, W)

    @property
    def device(self) -> torch.device:
        return next(self.vae.parameters()).device

    def to_pixels(self, frames_uint8: torch.Tensor) -> torch.Tensor:
        """(B, H, W, 3) uint8 -> (B, 3, S, S) in [-1, 1] at the codec's resolution."""
        return to_model_pixels(frames_uint8.to(self.device), self.image_size)

    @torch.no_grad()
    def encode(self, frames_uint8: torch.Tensor) -> torch.Tensor:
        x = self.to_pixels(frames_uint8).to(self.vae.dtype)
        if self.temporal:
            x = x.unsqueeze(2)
        latent = self.vae.encode(x).latent_dist.mode()
        if self.temporal:
            latent = latent[:, :, 0]
        return latent.float() * self.scaling_factor

    @torch.no_grad()
    def decode_float(self, latents: torch.Tensor) -> torch.Tensor:
        """(B, C, h, w) scaled latents -> (B, 3, S, S) float pixels in [-1, 1] (not clamped)."""
        z = (latents / self.scaling_factor).to(self.vae.dtype)
        if self.temporal:
            z = z.unsqueeze(2)
        x = self.vae.decode(z).sample
        if self.temporal:
            x = x[:, :, 0]
        return x.float()

    @staticmethod
    def to_uint8(pixels: torch.Tensor) -> torch.Tensor:
        """(B, 3, S, S) float pixels in [-1, 1] -> (B, S, S, 3) uint8."""
        return ((pixels.float().clamp(-1, 1) + 1.0) * 127.5).round().to(torch.uint8).permute(0, 2, 3, 1)

    @torch.no_grad()
    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        """(B, C, h, w) scaled latents -> (B, S, S, 3) uint8."""
        return self.to_uint8(self.decode_float(latents))

    @torch.no_grad()
    def resize(self, frames_uint8: torch.Tensor) -> torch.Tensor:
        """(B, H, W, 3) uint8 -> (B, S, S, 3) uint8: the frames exactly as the model sees them."""
        return self.to_uint8(self.to_pixels(frames_uint8))


def patchify(latents: torch.Tensor, p: int) -> torch.Tensor:
    """(B, F, C, h, w) latents -> (B, F * (h/p) * (w/p), C * p * p) patch tokens, raster order per frame."""
    b, f, c, h, w = latents.shape
    x = latents.reshape(b, f, c, h // p, p, w // p, p).permute(0, 1, 3, 5, 2, 4, 6)
    return x.reshape(b, f * (h // p) * (w // p), c * p * p)


def unpatchify(tokens: torch.Tensor, frames: int, c: int, size: int, p: int) -> torch.Tensor:
    """The inverse of `patchify`: (B, frames * (size/p)^2, c * p * p) -> (B, frames, c, size, size)."""
    b, n = tokens.shape[0], size // p
    x = tokens.reshape(b, frames, n, n, c, p, p).permute(0, 1, 4, 2, 5, 3, 6)
    return x.reshape(b, frames, c, size, size)
