"""The interface every policy backend implements (the registry that names them is registry.py).

A backend turns one observation (numpy, no ROS types) into an action chunk:
    reset(instruction, seed, task) -> predict(obs, prefix) / predict_batch(observations) ->
    update(executed_actions, obs) -> ... -> reset
Everything a caller may ask of a backend is here: the policy node, offline evaluation, the
benchmarks and the leaderboard never reach inside one.
"""

from __future__ import annotations

import abc
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np


@dataclass
class PolicyInput:
    """One observation as a backend sees it. Times in s on the robot's clock."""
    stamp: float
    instruction: str
    images: dict                      # camera name -> HxWx3 uint8 RGB at the robot file's input size
    state: np.ndarray                 # proprio, embodiment state order, physical units
    env_state: np.ndarray | None = None   # privileged simulator state (scripted backends only)
    in_flight: np.ndarray | None = None   # async modes: (k, dim) model space, the executor's plan from `stamp`
    #   on, which runs while this chunk is computed (a world model may imagine its outcome first)


@dataclass
class PolicyOutput:
    actions_normalized: np.ndarray    # (horizon, dim), model space
    actions: np.ndarray               # (horizon, dim), physical units
    imagined_frames: dict | None = None   # camera name -> (k, S, S, 3) uint8 at `future_offsets`, when asked
    timings_ms: dict = field(default_factory=dict)   # preprocess_ms / inference_ms / postprocess_ms


@dataclass(frozen=True)
class BackendOption:
    """An option a backend accepts (a `policy` node parameter of the same name)."""
    default: Any
    help: str


COMMON_OPTIONS = {
    "checkpoint": BackendOption("", "checkpoint directory (learned backends)"),
    "device": BackendOption("cpu", "torch device: cpu, cuda, cuda:1, mps"),
    "dtype": BackendOption("float32", "float32, bfloat16 or float16"),
}


class PolicyBackend(abc.ABC):
    """Base class of every backend; subclasses set the class attributes and implement reset/predict."""

    name: ClassVar[str] = ""
    uses_privileged_state: ClassVar[bool] = False   # reads PolicyInput.env_state (never a learned policy)
    supports_prefix: ClassVar[bool] = False         # predict() keeps a real-time-chunking prefix
    stateful: ClassVar[bool] = False                # update() changes later predictions (world-model memory)
    options: ClassVar[dict[str, BackendOption]] = {}   # every option the constructor accepts

    def __init__(self, embodiment, **options):
        self.embodiment = embodiment
        self.decode_imagined = False      # the `decode_imagined` option where one is declared

    def set_decode_imagined(self, decode: bool) -> None:
        """Whether later chunks carry imagined frames: the `decode_imagined` option changed after
        construction (per request by vla-serve, per run by offline evaluation). Backends that
        imagine nothing return none either way."""
        self.decode_imagined = bool(decode)

    # ---- episode ------------------------------------------------------------------------
    @abc.abstractmethod
    def reset(self, instruction: str, seed: int | None = None, task: str = "") -> None:
        """Start an episode (instruction, sampling seed, task name where the backend needs it)."""

    @abc.abstractmethod
    def predict(self, obs: PolicyInput, prefix: np.ndarray | None = None) -> PolicyOutput:
        """A chunk for `obs`. `prefix` (k, dim) in model space: actions that will execute while
        this chunk is computed; backends that support real-time chunking keep them fixed."""

    def predict_batch(self, observations: list[PolicyInput]) -> list[PolicyOutput]:
        """Chunks for independent observations (each carries its instruction), in one model call
        where the backend can batch. Stateless backends only; the default predicts one by one."""
        return [self.predict(obs) for obs in observations]

    def update(self, executed_actions: np.ndarray, obs: PolicyInput | None = None) -> None:
        """Actions that really executed since the last call ((n, dim), physical units) and the
        newest real observation after them. Stateful backends keep them; the default ignores them."""

    # ---- imagination --------------------------------------------------------------------
    @property
    def chunk_length(self) -> int:
        """Actions per predicted chunk: the checkpoint's for learned backends (the robot file's
        action.horizon, a training default, for scripted ones)."""
        return int(self.embodiment.config.action.horizon)

    @property
    def future_offsets(self) -> list[int]:
        """Steps (action periods) ahead of each imagined frame; empty for backends that do not imagine."""
        return []

    @property
    def imagined_camera(self) -> str | None:
        """Camera whose future is imagined (None: no imagination)."""
        return None

    def imagined_view(self, frames: np.ndarray) -> np.ndarray | None:
        """(N, H, W, 3) uint8 camera frames resampled exactly as the backend sees them, at the size
        of its imagined frames: what imagined frames are compared with. None: no imagination."""
        return None

    def reconstruct_future(self, current: np.ndarray, future: np.ndarray) -> np.ndarray | None:
        """The best imagined frame the backend's frame codec can express for a real future frame:
        `current`, `future` (B, H, W, 3) uint8 camera frames -> (B, S, S, 3) uint8 (the ceiling of
        imagined-frame quality). None for backends without a frame codec."""
        return None

    # ---- description --------------------------------------------------------------------
    def describe(self) -> dict:
        """Figures for reports and the leaderboard: parameters, checkpoint, training record."""
        return {"backend": self.name, "parameters": 0, "checkpoint": None, "training": {}}

    def close(self) -> None:
        """Release what the backend holds (models, threads)."""


def check_options(cls: type[PolicyBackend], options: dict) -> dict:
    """The options with defaults filled in; an undeclared name is an error that lists the valid ones."""
    unknown = sorted(set(options) - set(cls.options))
    if unknown:
        raise ValueError(f"policy backend '{cls.name}' has no option(s) {unknown}; "
                         f"it accepts {sorted(cls.options) or 'none'}")
    return {key: options.get(key, spec.default) for key, spec in cls.options.items()}
