"""Behaviour cloning: the VideoVLA encoders and diffusion action head without any video objective.

The control that tells whether imagining the future helps: the same text encoder, frame VAE,
proprio projection, transformer and action head, trained on the same demonstrations to predict
actions only (no future-frame tokens, no video loss). Its trainer (training_bc.py) is found through
models/registry.py, so loading the backend loads no training code.
"""

from .configuration_bc import BCConfig
from .policy_bc import BCPolicy as Policy

__all__ = ["BCConfig", "Policy"]
