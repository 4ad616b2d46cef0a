"""Training a BC checkpoint (`vla-train --family bc`): the VideoVLA trainer with no future frames."""

from __future__ import annotations

from ..videovla.training_videovla import VideoVLATrainer
from .configuration_bc import BCConfig


class BCTrainer(VideoVLATrainer):
    family = "bc"
    config_class = BCConfig
    learns_from_videos = False      # no video objective: action-free episodes need --label-videos idm
