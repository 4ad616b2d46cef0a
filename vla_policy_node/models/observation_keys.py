"""How a PolicyInput is laid out in an openpi observation dict, and back.

openpi servers name their inputs per model ("observation/image", "observation/wrist_image",
"observation/state", "prompt" for its LIBERO models; other names for DROID); the layout is
therefore configurable: per-camera keys, the state key and the prompt key. The default is this
project's own: "observation/images/<camera>", "observation/state", "prompt". Both ends use it:
the remote backend (models/remote.py) and vla-serve (serving/server.py).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from .backend import PolicyInput
from .wire import WireError

IMAGE_PREFIX = "observation/images/"


@dataclass(frozen=True)
class ObservationKeys:
    prompt: str = "prompt"
    state: str = "observation/state"
    env_state: str = "observation/env_state"     # privileged simulator state (scripted backends only)
    images: dict = field(default_factory=dict)   # camera name -> key; absent: IMAGE_PREFIX + name

    @classmethod
    def parse(cls, image_keys: str = "", state: str = "", prompt: str = "") -> "ObservationKeys":
        """From option strings: image_keys "scene=observation/image,wrist=observation/wrist_image"."""
        images = {}
        for item in filter(None, (s.strip() for s in image_keys.split(","))):
            camera, sep, key = item.partition("=")
            if not sep or not camera.strip() or not key.strip():
                raise ValueError(f"image_keys: '{item}' is not CAMERA=KEY")
            images[camera.strip()] = key.strip()
        return cls(prompt=prompt or cls.prompt, state=state or cls.state, images=images)

    def image_key(self, camera: str) -> str:
        return self.images.get(camera, IMAGE_PREFIX + camera)

    def to_message(self, obs: PolicyInput) -> dict:
        message = {self.prompt: obs.instruction, self.state: np.asarray(obs.state, dtype=np.float32),
                   "stamp": float(obs.stamp)}
        for camera, frame in obs.images.items():
            message[self.image_key(camera)] = np.asarray(frame, dtype=np.uint8)
        if obs.env_state is not None:
            message[self.env_state] = np.asarray(obs.env_state, dtype=np.float32)
        return message

    def from_message(self, message: dict, cameras: dict[str, bool], state_dim: int) -> PolicyInput:
        """An observation dict -> PolicyInput for `cameras` (name -> required) and a state of
        `state_dim` values; WireError naming the key that is missing or malformed."""
        images = {}
        for camera, required in cameras.items():
            key = self.image_key(camera)
            frame = message.get(key)
            if frame is None and not required:
                continue
            if frame is None:
                raise WireError(f"observation key '{key}' (camera '{camera}') missing; keys: {sorted(message)}")
            frame = np.asarray(frame)
            if frame.dtype != np.uint8 or frame.ndim != 3 or frame.shape[2] != 3:
                raise WireError(f"observation key '{key}': expected HxWx3 uint8, got {frame.dtype} {frame.shape}")
            images[camera] = frame
        state = np.asarray(message.get(self.state, np.zeros(0)), dtype=np.float64).reshape(-1)
        if state.shape != (state_dim,) or not np.all(np.isfinite(state)):
            raise WireError(f"observation key '{self.state}': expected {state_dim} finite values, got {state.shape}")
        prompt = message.get(self.prompt, "")
        if not isinstance(prompt, str):
            raise WireError(f"observation key '{self.prompt}': expected a string, got {type(prompt).__name__}")
        env_state = message.get(self.env_state)
        return PolicyInput(stamp=float(message.get("stamp", 0.0)), instruction=prompt, images=images, state=state,
                           env_state=None if env_state is None else np.asarray(env_state, dtype=np.float64))
