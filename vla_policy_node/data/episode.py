"""One recorded episode as arrays (what every data source yields and every family trains on)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..core.embodiment import Embodiment, load_robot


def as_embodiment(embodiment) -> Embodiment:
    """A robot file name or path loaded, an Embodiment as it is."""
    return load_robot(embodiment) if isinstance(embodiment, (str, Path)) else embodiment


class DatasetError(ValueError):
    """A bag or evaluator output that cannot be turned into an episode (names the bag and why)."""


@dataclass
class Episode:
    task: str
    seed: int
    instruction: str
    success: bool
    frames: dict[str, np.ndarray]   # camera name -> (T, H, W, 3) uint8 at the model input size
    states: np.ndarray              # (T, state_dim) float32, the robot file's state order
    actions: np.ndarray             # (T, action_dim) float32, the command that answered row k
    stamps: np.ndarray              # (T,) float64 s, stamp of the observed state (== command stamp)
    bag: str
    skipped: int = 0                # commands without a matching image/state
    extra: dict = field(default_factory=dict)   # counts: duplicates dropped per topic
    duration_s: float = 0.0         # recorded span of the bag (first to last message), s
    time_to_success_s: float | None = None   # bag start to the first true success message, s
    action_free: bool = False       # a video with proprio: `actions` are zeros, never trained on

    def __len__(self) -> int:
        return len(self.actions)
