"""Does a detector notice that the world departed from the plan? Figures from the episodes of
report.json runs where the evaluator perturbed each episode once (sim/perturbation.py), beside
clean runs of the same episodes.

A detector is a per-episode series of (s after the episode's first state, score): the imagination
monitor's divergence (1 - SSIM of imagined against real frames) or the frame change that imagines
nothing (1 - SSIM of each real frame against the one before). For each perturbed episode the
largest score in the `window_s` before the perturbation and in the `window_s` after it are the two
classes of an AUROC (threshold-free: 1.0 = the after-window always scores higher). At a threshold:
detection = a score above it within `window_s` after, its delay the time of the first such score;
false alarms = the times a clean episode's score rises above it, per episode.
"""

from __future__ import annotations

import math

import numpy as np

from ..core.metrics import auroc

DETECTORS = {"divergence": "imagination divergence", "frame_change": "frame change (imagines nothing)"}


def series(episode: dict, detector: str) -> list[tuple[float, float]]:
    """The episode's (t s, score) series of `detector` ([] when it was not scored)."""
    section = episode.get(detector) or {}
    return [(float(t), float(v)) for t, v in section.get("series", []) if math.isfinite(float(v))]


def perturbed_at(episode: dict) -> float | None:
    """When the episode's perturbation came (s after its first state); None when it had none, it
    was refused, or the episode ended before it."""
    p = episode.get("perturbation")
    if not p or not p.get("scheduled"):
        return None
    duration = episode.get("duration_s")
    return None if duration is not None and p["at_s"] >= duration else float(p["at_s"])


def window_max(points: list[tuple[float, float]], start: float, end: float) -> float | None:
    values = [v for t, v in points if start <= t < end]
    return max(values) if values else None


def rises_above(points: list[tuple[float, float]], threshold: float) -> int:
    """How often the series goes from at or below `threshold` to above it (the first score counts)."""
    above = [v > threshold for _, v in points]
    return sum(1 for i, a in enumerate(above) if a and (i == 0 or not above[i - 1]))


def threshold_for_false_alarms(clean: list[dict], detector: str, per_episode: float) -> float:
    """The lowest threshold at which the clean episodes rise above it at most `per_episode` times each."""
    candidates = sorted({v for e in clean for _, v in series(e, detector)}, reverse=True)
    chosen = math.inf
    for value in candidates:                      # lowering the threshold only adds alarms, mostly
        if sum(rises_above(series(e, detector), value) for e in clean) > per_episode * max(len(clean), 1):
            break
        chosen = value
    return chosen


def detection_figures(perturbed: list[dict], clean: list[dict], detector: str, threshold: float,
                      window_s: float = 0.5) -> dict:
    """The figures of one detector at one threshold (see the module's docstring)."""
    before, after, delays, detected, scored = [], [], [], 0, 0
    for episode in perturbed:
        at = perturbed_at(episode)
        points = series(episode, detector)
        if at is None or not points:
            continue
        low, high = window_max(points, at - window_s, at), window_max(points, at, at + window_s)
        if low is None or high is None:
            continue
        scored += 1
        before.append(low)
        after.append(high)
        first = next((t for t, v in points if at <= t < at + window_s and v > threshold), None)
        if first is not None:
            detected += 1
            delays.append(first - at)
    alarms = [rises_above(series(e, detector), threshold) for e in clean if series(e, detector)]
    return {"detector": detector, "threshold": None if math.isinf(threshold) else round(threshold, 6),
            "perturbed_episodes": len(perturbed), "scored": scored,
            "auroc": auroc(before + after, [0] * len(before) + [1] * len(after)) if scored else math.nan,
            "detected": detected, "detection_rate": detected / scored if scored else math.nan,
            "median_delay_s": float(np.median(delays)) if delays else None,
            "clean_episodes": len(alarms),
            "false_alarms_per_episode": float(np.mean(alarms)) if alarms else math.nan}
