"""VideoVLA policy configuration: inputs, frame codec, imagined future, action chunk, diffusion.

Saved under "policy" in a checkpoint's config.json; the transformer's own architecture is
derived from it (`transformer_config`) and saved by diffusers in transformer/config.json.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from ..components.pipeline import PolicyConfigMixin

FUTURE_TARGETS = ("absolute", "delta")
IMAGINED_DECODINGS = ("latent", "residual")
OBJECTIVES = ("ddpm", "flow")


@dataclass
class VideoVLAConfig(PolicyConfigMixin):
    # inputs
    camera: str = "corner"
    image_size: int = 64                     # model input side (px); frames are resized to it
    text_tokens: int = 16
    text_dim: int = 384
    state_dim: int = 4
    use_proprio: bool = True
    # frame codec (VAE latents)
    latent_channels: int = 4
    latent_size: int = 8                     # latent side = image_size / VAE downsampling
    patch_size: int = 2
    # imagined future
    future_offsets: list = field(default_factory=lambda: [4, 8])   # steps ahead of each imagined frame
    future_target: str = "absolute"          # absolute: future latents | delta: change from the current latent
    delta_scaling_factor: float = 1.0        # delta target: multiplies (z_future - z_current) to unit variance
    imagined_decoding: str = "latent"        # latent: decode the latent | residual: current frame + decoded change
    # action chunk
    horizon: int = 8
    action_dim: int = 4
    # transformer
    hidden_size: int = 192
    num_layers: int = 6
    num_heads: int = 4
    action_sees_video: bool = True           # True: the paper's joint attention over all tokens; False: only the
    #   future latents attend to the future latents, so the actions come from the context alone and the
    #   future is imagined given them (an action-conditioned world model beside a BC action path)
    # diffusion
    objective: str = "ddpm"                  # ddpm (epsilon, DDIM sampling) | flow (velocity, FlowMatchEuler)
    num_train_timesteps: int = 1000
    num_inference_steps: int = 10
    video_loss_weight: float = 1.0           # loss = action + weight * video; 0 = the paper's "no video loss" ablation
    # real-time chunking learned in training (TT-RTC): a share of the samples has its first
    # k ~ U{1..train_prefix_max} actions given clean (the plan that runs during inference), loss left out
    train_prefix_max: int = 0                # 0 = off (the network then keeps a prefix by inpainting only)
    train_prefix_probability: float = 0.5

    def __post_init__(self):
        for name, value, allowed in (("future_target", self.future_target, FUTURE_TARGETS),
                                     ("imagined_decoding", self.imagined_decoding, IMAGINED_DECODINGS),
                                     ("objective", self.objective, OBJECTIVES)):
            if value not in allowed:
                raise ValueError(f"{type(self).__name__}.{name}: '{value}' unknown; use one of {allowed}")
        if self.latent_size % self.patch_size:
            raise ValueError(f"{type(self).__name__}: latent_size {self.latent_size} is not a multiple of "
                             f"patch_size {self.patch_size}")
        if not self.video_loss_weight >= 0:   # also refuses NaN
            raise ValueError(f"{type(self).__name__}.video_loss_weight: {self.video_loss_weight} is not >= 0")
        if not 0 <= self.train_prefix_max < self.horizon:
            raise ValueError(f"{type(self).__name__}.train_prefix_max: {self.train_prefix_max} outside 0..horizon-1 "
                             f"({self.horizon - 1})")
        if not 0 <= self.train_prefix_probability <= 1:
            raise ValueError(f"{type(self).__name__}.train_prefix_probability: {self.train_prefix_probability} "
                             "outside [0, 1]")
        self.future_offsets = [int(o) for o in self.future_offsets]

    @property
    def num_future(self) -> int:
        return len(self.future_offsets)

    @property
    def prefix_conditioning(self) -> bool:
        """The network was trained with a given prefix (TT-RTC) and can take one clean."""
        return self.train_prefix_max > 0

    def transformer_config(self) -> dict:
        """Keyword arguments of VideoVLATransformer for this configuration."""
        keys = ("text_dim", "text_tokens", "latent_channels", "latent_size", "patch_size", "horizon",
                "action_dim", "state_dim", "use_proprio", "hidden_size", "num_layers", "num_heads", "action_sees_video",
                "prefix_conditioning")
        return {k: getattr(self, k) for k in keys} | {"num_future": self.num_future}
