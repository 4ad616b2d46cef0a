"""The interface every policy family implements, and the registry that selects one by name."""

from __future__ import annotations

import abc
from dataclasses import dataclass, field

import numpy as np


@dataclass
class PolicyInput:
    """One observation as a backend sees it (numpy, no ROS types). Times in s."""
    stamp: float
    instruction: str
    images: dict                      # camera name -> HxWx3 uint8 RGB at the model input size
    state: np.ndarray                 # proprio, embodiment state order, physical units
    env_state: np.ndarray | None = None   # privileged simulator state (oracle only)


@dataclass
class PolicyOutput:
    actions_normalized: np.ndarray    # (horizon, dim), model space
    actions: np.ndarray               # (horizon, dim), physical units
    imagined_frames: dict | None = None   # camera name -> (k, H, W, 3) uint8, when asked for
    timings_ms: dict = field(default_factory=dict)


class PolicyBackend(abc.ABC):
    """reset -> predict (optionally conditioned on a prefix) -> update, per episode."""

    name: str = ""
    uses_privileged_state = False
    supports_prefix = False           # predict() honours `prefix` (real-time chunking by inpainting)

    def __init__(self, embodiment, **options):
        self.embodiment = embodiment

    @abc.abstractmethod
    def reset(self, instruction: str, seed: int | None = None, task: str = "") -> None:
        """Start an episode with a new instruction (and task name where the backend needs it)."""

    @abc.abstractmethod
    def predict(self, obs: PolicyInput, prefix: np.ndarray | None = None) -> PolicyOutput:
        """A chunk for `obs`. `prefix` (k, dim) in model space: actions that will execute while
        this chunk is computed; backends that support real-time chunking keep them fixed."""

    def update(self, executed_actions: np.ndarray, obs: PolicyInput | None = None) -> None:
        """Actions that really executed (physical units) and the observation that followed."""


_REGISTRY: dict[str, type[PolicyBackend]] = {}


def register_backend(cls: type[PolicyBackend]) -> type[PolicyBackend]:
    if not cls.name:
        raise ValueError(f"{cls.__qualname__} has no name")
    _REGISTRY[cls.name] = cls
    return cls


# Built-in backends, imported on first use so the oracle never loads torch.
_BUILTIN = {"oracle": "oracle", "videovla": "videovla_policy", "reach_ik": "reach_ik"}


def available_backends() -> list[str]:
    return sorted(set(_REGISTRY) | set(_BUILTIN))


def make_backend(name: str, embodiment, **options) -> PolicyBackend:
    """Backend by registry name; name 'auto' takes it from the checkpoint's config.json."""
    if name == "auto":
        from .checkpoint import read_config
        name = read_config(options.get("checkpoint", ""))["backend"]
    if name not in _REGISTRY and name in _BUILTIN:
        import importlib
        importlib.import_module(f"{__package__}.{_BUILTIN[name]}")
    if name not in _REGISTRY:
        raise KeyError(f"policy backend '{name}' unknown; available: {', '.join(available_backends())}")
    return _REGISTRY[name](embodiment, **options)
