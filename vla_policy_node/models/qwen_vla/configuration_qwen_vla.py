"""Qwen-VLA policy configuration: the backbone's size, the action expert's, the unified action
tensor and the embodiments one checkpoint drives.

Saved under "policy" in a checkpoint's config.json; the networks' own architectures are derived
from it (`backbone_config`, `action_expert_config`) and saved by their libraries next to their weights.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from ..components.pipeline import PolicyConfigMixin


@dataclass
class QwenVLAConfig(PolicyConfigMixin):
    # views: each camera's frame resized to image_size x image_size, cut into Qwen2-VL patches
    image_size: int = 112                    # px, a multiple of patch_size * spatial_merge_size
    patch_size: int = 14
    spatial_merge_size: int = 2
    temporal_patch_size: int = 2             # a still image is repeated over the temporal patch
    max_text_tokens: int = 64                # embodiment prompt + instruction, WordPiece tokens
    # vision-language backbone (transformers Qwen2VLModel at a small configuration, trained here)
    hidden_size: int = 128
    num_layers: int = 4
    num_heads: int = 4
    num_kv_heads: int = 2
    intermediate_size: int = 384
    vision_depth: int = 2
    vision_embed_dim: int = 96
    vision_heads: int = 4
    vocab_size: int = 0                      # the saved tokenizer's, with the vision tokens added
    image_token_id: int = 0                  # ids of <|image_pad|>, <|vision_start|>, <|vision_end|> in it
    vision_start_token_id: int = 0
    vision_end_token_id: int = 0
    # action expert (DiT, flow matching)
    unified_dim: int = 32                    # K: channels of the unified action tensor
    horizon: int = 16                        # H: rows of the unified action tensor (>= every robot's chunk)
    expert_width: int = 128
    expert_layers: int = 4
    expert_heads: int = 4
    num_inference_steps: int = 5             # Euler steps from tau = 1 (noise) to 0
    action_projection: str = "shared"        # shared: one K -> width projection; per_embodiment: the ablation
    use_proprio: bool = False                # the paper's default; on: one proprio token (zero-padded to K)
    # embodiments: name -> {action_space, action_names, state_names, channels, horizon, cameras}
    embodiments: dict = field(default_factory=dict)

    def __post_init__(self):
        side = self.patch_size * self.spatial_merge_size
        if self.image_size % side:
            raise ValueError(f"{type(self).__name__}.image_size: {self.image_size} is not a multiple of "
                             f"patch_size x spatial_merge_size ({side})")
        if self.action_projection not in ("shared", "per_embodiment"):
            raise ValueError(f"{type(self).__name__}.action_projection: '{self.action_projection}' is not "
                             f"shared or per_embodiment")
        for name, emb in self.embodiments.items():
            channels = list(emb["channels"])
            if max(channels) >= self.unified_dim or int(emb["horizon"]) > self.horizon:
                raise ValueError(f"{type(self).__name__}.embodiments.{name}: channels {channels} / horizon "
                                 f"{emb['horizon']} do not fit the unified tensor ({self.horizon} x {self.unified_dim})")

    @property
    def tokens_per_view(self) -> int:
        """Backbone tokens per image after the vision tower's 2x2 patch merge."""
        return (self.image_size // (self.patch_size * self.spatial_merge_size)) ** 2

    def backbone_config(self) -> dict:
        """Keyword arguments of transformers' Qwen2VLConfig for this size."""
        head_dim = self.hidden_size // self.num_heads
        half = head_dim // 2                       # M-RoPE: temporal / height / width sections of the rotary half
        section = [half - 2 * (half // 3), half // 3, half // 3]
        return dict(
            text_config=dict(vocab_size=self.vocab_size, hidden_size=self.hidden_size,
                             intermediate_size=self.intermediate_size, num_hidden_layers=self.num_layers,
                             num_attention_heads=self.num_heads, num_key_value_heads=self.num_kv_heads,
                             max_position_embeddings=1024, bos_token_id=None, eos_token_id=None,
                             rope_parameters={"rope_type": "default", "rope_theta": 10000.0, "mrope_section": section}),
            vision_config=dict(depth=self.vision_depth, embed_dim=self.vision_embed_dim, hidden_size=self.hidden_size,
                               num_heads=self.vision_heads, mlp_ratio=2, patch_size=self.patch_size,
                               spatial_merge_size=self.spatial_merge_size, temporal_patch_size=self.temporal_patch_size),
            vocab_size=self.vocab_size, image_token_id=self.image_token_id, video_token_id=-1,
            vision_start_token_id=self.vision_start_token_id, vision_end_token_id=self.vision_end_token_id)

    def action_expert_config(self) -> dict:
        return dict(condition_dim=self.hidden_size, unified_dim=self.unified_dim, horizon=self.horizon,
                    width=self.expert_width, num_layers=self.expert_layers, num_heads=self.expert_heads,
                    use_proprio=self.use_proprio,
                    per_embodiment_channels=({n: list(e["channels"]) for n, e in sorted(self.embodiments.items())}
                                             if self.action_projection == "per_embodiment" else {}))
