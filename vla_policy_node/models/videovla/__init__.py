"""VideoVLA family: configuration, modeling (the DiT), policy (the backend) and training."""

from .configuration_videovla import VideoVLAConfig
from .policy_videovla import VideoVLAPipeline, VideoVLAPolicy as Policy
from .training_videovla import VideoVLATrainer as Trainer

__all__ = ["Policy", "Trainer", "VideoVLAConfig", "VideoVLAPipeline"]
