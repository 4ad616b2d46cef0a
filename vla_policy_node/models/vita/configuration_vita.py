"""VITA policy configuration: frame features, the shared codebook, both tokenizers, the
autoregressive backbone and its token sequence.

Saved under "policy" in a checkpoint's config.json; the networks' own architectures are derived
from it (`tokenizer_config`, `backbone_config`) and saved by diffusers next to their weights.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from ..components.pipeline import PolicyConfigMixin


@dataclass
class VITAConfig(PolicyConfigMixin):
    # inputs
    camera: str = "corner"
    image_size: int = 64                     # model input side (px); frames are resized to it
    text_tokens: int = 16
    text_dim: int = 384
    state_dim: int = 4
    use_proprio: bool = True
    # frame features: the frozen frame VAE's latents (C x h x h), cut into p x p patches
    latent_channels: int = 4
    latent_size: int = 8
    patch_size: int = 2
    # the next frame the vision tokens describe (steps ahead of the current one)
    future_offsets: list = field(default_factory=lambda: [8])
    # shared codebook (vector-quantize-pytorch, EMA codebook updates, dead codes re-seeded)
    codebook_size: int = 256
    code_dim: int = 64
    shared_codebook: bool = True             # False: the ablation with one codebook per modality
    vision_tokens: int = 4                   # codes per (frame, next frame) pair (M-Former queries)
    action_tokens: int = 4                   # codes per action chunk
    dct_keep: int = 0                        # DCT coefficients kept per action channel (0 = all, horizon)
    # tokenizers
    tokenizer_width: int = 128
    tokenizer_layers: int = 2
    tokenizer_heads: int = 4
    # action chunk
    horizon: int = 8
    action_dim: int = 4
    # autoregressive backbone (transformers LlamaForCausalLM at a small configuration)
    hidden_size: int = 192
    num_layers: int = 4
    num_heads: int = 4
    next_frame_objective: bool = True        # False: the ablation whose sequence holds action tokens only
    # co-train loss weights
    action_loss_weight: float = 1.0          # MSE of the chunk decoded from the generated tokens
    vision_loss_weight: float = 0.5          # L1 + SSIM of the next frame decoded from them

    def __post_init__(self):
        self.future_offsets = [int(o) for o in self.future_offsets]
        if len(self.future_offsets) != 1:
            raise ValueError(f"{type(self).__name__}.future_offsets: VITA's vision tokens describe one next "
                             f"frame; got {self.future_offsets}")
        if self.latent_size % self.patch_size:
            raise ValueError(f"{type(self).__name__}: latent_size {self.latent_size} is not a multiple of "
                             f"patch_size {self.patch_size}")
        if not 0 <= self.dct_keep <= self.horizon:
            raise ValueError(f"{type(self).__name__}.dct_keep: {self.dct_keep} outside 0..horizon ({self.horizon})")

    @property
    def num_future(self) -> int:
        return len(self.future_offsets)

    @property
    def sequence_tokens(self) -> int:
        """Codes the backbone generates per chunk: [vision tokens] + action tokens."""
        return (self.vision_tokens if self.next_frame_objective else 0) + self.action_tokens

    def tokenizer_config(self) -> dict:
        keys = ("latent_channels", "latent_size", "patch_size", "codebook_size", "code_dim", "shared_codebook",
                "vision_tokens", "action_tokens", "dct_keep", "tokenizer_width", "tokenizer_layers",
                "tokenizer_heads", "horizon", "action_dim")
        return {k: getattr(self, k) for k in keys}

    def backbone_config(self) -> dict:
        keys = ("text_dim", "text_tokens", "latent_channels", "latent_size", "patch_size", "state_dim",
                "use_proprio", "codebook_size", "code_dim", "hidden_size", "num_layers", "num_heads")
        return {k: getattr(self, k) for k in keys} | {"sequence_tokens": self.sequence_tokens}
