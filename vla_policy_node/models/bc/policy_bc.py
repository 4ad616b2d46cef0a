"""`bc` backend: a BC checkpoint served exactly like a VideoVLA one, without imagined frames."""

from __future__ import annotations

from ..videovla.policy_videovla import VideoVLAPolicy
from .configuration_bc import BCConfig


class BCPolicy(VideoVLAPolicy):
    name = "bc"
    config_class = BCConfig
    options = {k: v for k, v in VideoVLAPolicy.options.items() if k != "decode_imagined"}

    def __init__(self, embodiment, checkpoint: str = "", device: str = "cpu", dtype: str = "float32",
                 num_inference_steps: int = 0, rtc: str = "inpainting", future_state: bool = False):
        super().__init__(embodiment, checkpoint, device, dtype, num_inference_steps, rtc, future_state,
                         decode_imagined=False)
