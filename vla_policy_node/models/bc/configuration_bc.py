"""BC configuration: a VideoVLA configuration that imagines no frames and has no video loss."""

from __future__ import annotations

from dataclasses import dataclass, field

from ..videovla.configuration_videovla import VideoVLAConfig


@dataclass
class BCConfig(VideoVLAConfig):
    future_offsets: list = field(default_factory=list)
    video_loss_weight: float = 0.0

    def __post_init__(self):
        super().__post_init__()
        if self.future_offsets or self.video_loss_weight:
            raise ValueError(f"BCConfig: a behaviour-cloning policy imagines nothing (future_offsets "
                             f"{self.future_offsets}, video_loss_weight {self.video_loss_weight})")
