"""Real-time chunking: the part of the executor's plan a new chunk must continue (no rclpy).

With a chunk request the executor sends the plan that will run while the policy thinks: rows
of actions in model space, row j for time prefix_start_s + j * dt (s, the robot's clock). The
new chunk is computed from an observation captured at obs_stamp_s, its action i for time
obs_stamp_s + i * dt, so row j lines up with action i = j - shift where shift is the whole
number of periods from the prefix start to the observation.
"""

from __future__ import annotations

import numpy as np


def align_prefix(prefix_start_s: float, rows: np.ndarray, obs_stamp_s: float, dt: float) -> np.ndarray | None:
    """The prefix rows from the observation's capture time on ((k, dim), model space), row 0
    for the new chunk's action 0. None when the observation is older than the prefix start
    (in whole periods, rounded: the plan does not reach back to it) or when no row is left."""
    shift = int(round((obs_stamp_s - prefix_start_s) / dt))
    if shift < 0:
        return None
    rows = rows[shift:]
    return rows if len(rows) else None
