"""Score of a replayed episode: what a dry-run executor would have commanded against what the
recording commanded (no rclpy).

Commands are (stamp s, values) in the robot's action space and units; they pair by stamp within
half a control period (core/replay.py `match_commands`).
"""

from __future__ import annotations

import math

from ..core.metrics import action_errors
from ..core.replay import match_commands


def replay_score(commanded: list[tuple[float, list[float]]], recorded: list[tuple[float, list[float]]],
                 names: list[str], dt: float) -> dict:
    """Commands paired, distinct stamps commanded and recorded, coverage (paired / recorded), and
    L1 (mean absolute) and L2 (root mean square) errors over all dimensions and per dimension
    (named by `names`). dt: the robot's control period (s). Errors are nan when nothing paired."""
    times, pred, target = match_commands(commanded, recorded, 0.5 * dt)
    n_recorded = len({round(t, 6) for t, _ in recorded})
    n_commanded = len({round(t, 6) for t, _ in commanded})
    score = {"matched": len(times), "commanded": n_commanded, "recorded": n_recorded,
             "coverage": len(times) / n_recorded if n_recorded else math.nan}
    if len(times) == 0:
        return {**score, "l1": math.nan, "l2": math.nan, "per_dim_l1": {n: math.nan for n in names},
                "per_dim_l2": {n: math.nan for n in names}}
    errors = action_errors(pred[:, None, :], target[:, None, :], names=names)
    return {**score, "l1": errors["l1"], "l2": errors["l2"],
            "per_dim_l1": {n: v["l1"] for n, v in errors["per_dim"].items()},
            "per_dim_l2": {n: v["l2"] for n, v in errors["per_dim"].items()}}
