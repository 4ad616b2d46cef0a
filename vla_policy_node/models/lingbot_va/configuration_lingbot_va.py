"""LingBot-VA policy configuration: inputs, chunk layout, the two streams, flow matching, cache.

Saved under "policy" in a checkpoint's config.json; the transformer's architecture is derived
from it (`transformer_config`) and saved by diffusers in transformer/config.json. Times are in
action steps (control periods); a chunk covers `frames_per_chunk` video frames, each followed
by `actions_per_frame` actions (the paper's tau = 4), so horizon = frames_per_chunk * actions_per_frame.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..components.pipeline import PolicyConfigMixin

GROUNDINGS = ("none", "fdm")


@dataclass
class LingBotVAConfig(PolicyConfigMixin):
    # inputs
    camera: str = "corner"
    image_size: int = 64                     # model input side (px)
    text_tokens: int = 16
    text_dim: int = 384
    state_dim: int = 4
    use_proprio: bool = True                 # a proprio token beside every real frame
    # frame codec (VAE latents)
    latent_channels: int = 4
    latent_size: int = 8
    patch_size: int = 2
    delta_scaling_factor: float = 1.0        # imagined frames are (z_future - z_newest_real) times this
    # chunk layout (video sparsification: one frame every actions_per_frame steps)
    frames_per_chunk: int = 2                # K
    actions_per_frame: int = 4               # tau
    horizon: int = 8
    action_dim: int = 4
    # mixture of transformers: a wide video stream and a narrow action stream, joint attention
    video_width: int = 128
    action_width: int = 64
    num_layers: int = 4
    num_heads: int = 4
    # flow matching (FlowMatchEuler); partial video denoising
    num_train_timesteps: int = 1000
    num_inference_steps: int = 10            # action steps (integrated fully)
    num_video_steps: int = 5                 # video steps of the same schedule (5 of 10: to noise level 0.5)
    # training
    history_frames: int = 4                  # real frames in a training sample's history
    max_frame_gap: int = 8                   # steps between history frames drawn from 1..max_frame_gap
    noisy_history_prob: float = 0.5          # noisy history augmentation (Eq. 10)
    noisy_history_max: float = 0.5          # ... noise level drawn from [0, max] (0 clean, 1 noise)
    fdm_prob: float = 0.25                   # samples training the forward-dynamics step (Eq. 13)
    grounded_prob: float = 0.25              # samples predicting from an imagined in-flight outcome
    video_loss_weight: float = 1.0
    action_history_dropout: float = 0.0      # samples whose history actions are hidden (frames and proprio stay)
    action_history_noise: float = 0.0        # std of Gaussian noise on history actions (normalized units)
    # inference
    cache_frames: int = 4                    # KV cache window: real frames kept (older ones evicted)

    def __post_init__(self):
        if self.horizon != self.frames_per_chunk * self.actions_per_frame:
            raise ValueError(f"{type(self).__name__}: horizon {self.horizon} != frames_per_chunk "
                             f"{self.frames_per_chunk} x actions_per_frame {self.actions_per_frame}")
        if self.latent_size % self.patch_size:
            raise ValueError(f"{type(self).__name__}: latent_size {self.latent_size} is not a multiple of "
                             f"patch_size {self.patch_size}")
        if not 0.0 <= self.action_history_dropout <= 1.0 or self.action_history_noise < 0.0:
            raise ValueError(f"{type(self).__name__}: action_history_dropout {self.action_history_dropout} must be in "
                             f"[0, 1] and action_history_noise {self.action_history_noise} >= 0")
        if not 0 < self.num_video_steps <= self.num_inference_steps:
            raise ValueError(f"{type(self).__name__}: num_video_steps {self.num_video_steps} must be in "
                             f"1..num_inference_steps ({self.num_inference_steps})")

    @property
    def future_offsets(self) -> list[int]:
        """Steps ahead of each imagined frame of a chunk."""
        return [self.actions_per_frame * (i + 1) for i in range(self.frames_per_chunk)]

    def transformer_config(self) -> dict:
        keys = ("text_dim", "latent_channels", "latent_size", "patch_size", "action_dim", "state_dim",
                "video_width", "action_width", "num_layers", "num_heads")
        return {k: getattr(self, k) for k in keys}
