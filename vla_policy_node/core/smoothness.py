"""Chunk-boundary smoothness of an executed command stream.

Jerk is the third time derivative of the commanded position. For position action spaces the
commands are positions; for delta spaces (a displacement per control period) the position is
their running sum, so jerk is the second difference of the commands divided by dt^3.
A *boundary* tick is one whose jerk stencil spans commands from two different chunks; the
ratio max |jerk| at boundaries / max |jerk| inside chunks is 1 for a seamless executor and
grows with every jump where one chunk meets the next. Gripper dims are left out (a grasp is a
deliberate step).
"""

from __future__ import annotations

import numpy as np

from .motion_limiter import POSITION_SPACES


def jerk(commands: np.ndarray, dt: float, space: str) -> np.ndarray:
    """(T, D) commands -> (T', D) jerk, units/s^3; row j uses commands j .. j+3 (positions) or
    j .. j+2 (deltas), aligned so row j belongs to the stencil starting at command j."""
    c = np.asarray(commands, dtype=np.float64)
    if space in POSITION_SPACES:
        return np.diff(c, n=3, axis=0) / dt ** 3
    return np.diff(c, n=2, axis=0) / dt ** 3


def boundary_jerk(commands, chunk_ids, dt: float, space: str, dims=None) -> dict:
    """Max jerk at chunk boundaries and inside chunks, and their ratio.

    `chunk_ids` (T,): chunk each command came from (-1 for holds, which end a segment);
    `dims`: action dims to score (default all). Stencils touching a hold are skipped."""
    c = np.asarray(commands, dtype=np.float64)
    ids = np.asarray(chunk_ids)
    if dims is not None:
        c = c[:, list(dims)]
    width = 4 if space in POSITION_SPACES else 3
    if len(c) < width:
        return {"max_boundary": float("nan"), "max_inside": float("nan"), "ratio": float("nan"),
                "boundaries": 0, "stencils": 0}
    j = np.abs(jerk(c, dt, space)).max(axis=1)
    windows = np.lib.stride_tricks.sliding_window_view(ids, width)
    valid = (windows >= 0).all(axis=1)
    crossing = (windows != windows[:, :1]).any(axis=1)
    at_boundary, inside = j[valid & crossing], j[valid & ~crossing]
    mb = float(at_boundary.max()) if len(at_boundary) else float("nan")
    mi = float(inside.max()) if len(inside) else float("nan")
    ratio = mb / mi if len(at_boundary) and len(inside) and mi > 0 else float("nan")
    return {"max_boundary": mb, "max_inside": mi, "ratio": ratio, "boundaries": int(len(at_boundary)),
            "stencils": int(valid.sum())}
