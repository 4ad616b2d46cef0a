"""VITA family: one codebook shared by vision and action, an autoregressive backbone that emits
codes, decoders from codes to the action chunk and (when asked) to the next frame. Training
(training_vita.py) is found through models/registry.py, so loading the backend loads no training code."""

from .configuration_vita import VITAConfig
from .policy_vita import VITAPipeline, VITAPolicy as Policy

__all__ = ["Policy", "VITAConfig", "VITAPipeline"]
