"""Qwen-VLA at small scale: a Qwen2-VL vision-language backbone (transformers) and a DiT
flow-matching action expert over one zero-padded, masked action tensor shared by every robot,
told apart by the embodiment prompt rendered from the robot file. Training (training_qwen_vla.py) is
found through models/registry.py, so loading the backend loads no training code."""

from .configuration_qwen_vla import QwenVLAConfig
from .policy_qwen_vla import QwenVLAPolicy as Policy

__all__ = ["QwenVLAConfig", "Policy"]
