"""VideoVLA family: configuration, modeling (the DiT) and policy (the backend); training
(training_videovla.py) is found through models/registry.py, so loading the backend loads no training code."""

from .configuration_videovla import VideoVLAConfig
from .policy_videovla import VideoVLAPipeline, VideoVLAPolicy as Policy

__all__ = ["Policy", "VideoVLAConfig", "VideoVLAPipeline"]
