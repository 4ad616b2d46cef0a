"""VITA family: one codebook shared by vision and action, an autoregressive backbone that emits
codes, decoders from codes to the action chunk and (when asked) to the next frame."""

from .configuration_vita import VITAConfig
from .policy_vita import VITAPipeline, VITAPolicy as Policy
from .training_vita import VITATrainer as Trainer

__all__ = ["Policy", "Trainer", "VITAConfig", "VITAPipeline"]
