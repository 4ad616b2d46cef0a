"""Metrics for imagined frames, predicted action chunks and failure prediction.

Frames are HxWx3 arrays, either uint8 in [0, 255] or float in [0, 1]. Action arrays are
(N, H, D): N chunks, H horizon steps, D action dimensions, in the units of the action space.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
from scipy import stats
from skimage.metrics import peak_signal_noise_ratio, structural_similarity
from sklearn.metrics import roc_auc_score


def _as_unit_float(frame: np.ndarray) -> np.ndarray:
    """Returns the frame as float64 in [0, 1] (uint8 frames are divided by 255)."""
    frame = np.asarray(frame)
    if frame.dtype == np.uint8:
        return frame.astype(np.float64) / 255.0
    return frame.astype(np.float64)


def _check_same_shape(a: np.ndarray, b: np.ndarray) -> None:
    if a.shape != b.shape:
        raise ValueError(f"frames differ in shape: {a.shape} vs {b.shape}")


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    """Peak signal-to-noise ratio in dB over [0, 1] intensities; `math.inf` for identical frames."""
    a, b = _as_unit_float(a), _as_unit_float(b)
    _check_same_shape(a, b)
    if np.array_equal(a, b):
        return math.inf
    return float(peak_signal_noise_ratio(a, b, data_range=1.0))


def ssim(a: np.ndarray, b: np.ndarray) -> float:
    """Structural similarity in [-1, 1] over [0, 1] intensities, averaged over the color channels.

    The uniform 7x7 window of scikit-image is shrunk to the largest odd size that fits small
    frames (e.g. 8x8 -> 7, 5x5 -> 5); frames under 3 pixels on a side are rejected.
    """
    a, b = _as_unit_float(a), _as_unit_float(b)
    _check_same_shape(a, b)
    height, width = a.shape[:2]
    win_size = min(7, height, width)
    if win_size % 2 == 0:
        win_size -= 1
    if win_size < 3:
        raise ValueError(f"frames of {height}x{width} pixels are too small for SSIM (need >= 3x3)")
    channel_axis = -1 if a.ndim == 3 else None
    return float(structural_similarity(a, b, data_range=1.0, channel_axis=channel_axis, win_size=win_size))


def action_errors(pred: np.ndarray, target: np.ndarray, mask: np.ndarray | None = None,
                  names: Sequence[str] | None = None) -> dict:
    """L1 (mean absolute) and L2 (root mean square) errors of predicted action chunks.

    pred, target: (N, H, D). mask: (N, H) bool, False for padded steps beyond the recording.
    Returns {"l1", "l2", "count", "per_dim": {name: {"l1", "l2"}}, "per_step": {"l1": [H], "l2": [H]}};
    entries with no valid step are nan.
    """
    pred = np.asarray(pred, dtype=np.float64)
    target = np.asarray(target, dtype=np.float64)
    if pred.shape != target.shape or pred.ndim != 3:
        raise ValueError(f"pred and target must both be (N, H, D), got {pred.shape} and {target.shape}")
    n, horizon, dims = pred.shape
    valid = np.ones((n, horizon), dtype=bool) if mask is None else np.asarray(mask, dtype=bool)
    if valid.shape != (n, horizon):
        raise ValueError(f"mask must be (N, H) = {(n, horizon)}, got {valid.shape}")
    if names is None:
        names = [str(i) for i in range(dims)]
    if len(names) != dims:
        raise ValueError(f"{len(names)} names for {dims} action dimensions")

    diff = pred - target
    weights = np.broadcast_to(valid[..., None], diff.shape).astype(np.float64)

    def mean_over(values: np.ndarray, axis) -> np.ndarray:
        total = weights.sum(axis=axis)
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(total > 0, (values * weights).sum(axis=axis) / np.maximum(total, 1e-300), np.nan)

    abs_err, sq_err = np.abs(diff), diff ** 2
    return {
        "l1": float(mean_over(abs_err, None)),
        "l2": float(np.sqrt(mean_over(sq_err, None))),
        "count": int(valid.sum()),
        "per_dim": {name: {"l1": float(l1), "l2": float(np.sqrt(mse))}
                    for name, l1, mse in zip(names, mean_over(abs_err, (0, 1)), mean_over(sq_err, (0, 1)))},
        "per_step": {"l1": [float(v) for v in mean_over(abs_err, (0, 2))],
                     "l2": [float(np.sqrt(v)) for v in mean_over(sq_err, (0, 2))]},
    }


def gripper_accuracy(pred: np.ndarray, target: np.ndarray, index: int, threshold: float = 0.0) -> float:
    """Fraction of steps where predicted and recorded gripper commands agree on open vs close.

    The gripper is dimension `index` of the last axis; a value above `threshold` counts as one state,
    at or below as the other. nan when there are no steps.
    """
    pred_state = np.asarray(pred)[..., index] > threshold
    target_state = np.asarray(target)[..., index] > threshold
    if pred_state.size == 0:
        return math.nan
    return float(np.mean(pred_state == target_state))


def auroc(scores: Sequence[float], labels: Sequence[int]) -> float:
    """Area under the ROC curve of failure scores (label 1 = failure, higher score = predicted failure).

    nan when the labels hold a single class.
    """
    labels = np.asarray(labels).astype(int)
    if len(np.unique(labels)) < 2:
        return math.nan
    return float(roc_auc_score(labels, np.asarray(scores, dtype=np.float64)))


def auroc_text(value: float | None, failures: int | None, episodes: int, digits: int = 3) -> str:
    """A failure AUROC as reports print it: the value only where failed and successful episodes both
    exist; else why there is none, e.g. "n/a (one class: 15 successes, 0 failures)". `failures`
    among the `episodes` scored; None when not known (then a non-finite value says one class)."""
    if episodes == 0:
        return "n/a (no episodes)"
    if failures is not None and failures in (0, episodes):
        successes = episodes - failures
        return (f"n/a (one class: {successes} success{'es' * (successes != 1)}, "
                f"{failures} failure{'s' * (failures != 1)})")
    if value is None or not math.isfinite(value):
        return f"n/a (one class among {episodes} episode{'s' * (episodes != 1)})"
    return f"{value:.{digits}f}"


def correlation(x: Sequence[float], y: Sequence[float]) -> dict:
    """Pearson and Spearman correlation of paired values (non-finite pairs dropped); nan below 3 pairs."""
    x = np.asarray(x, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    keep = np.isfinite(x) & np.isfinite(y)
    x, y = x[keep], y[keep]
    n = int(x.size)
    if n < 3 or np.ptp(x) == 0 or np.ptp(y) == 0:
        return {"pearson": math.nan, "spearman": math.nan, "n": n}
    return {"pearson": float(stats.pearsonr(x, y).statistic),
            "spearman": float(stats.spearmanr(x, y).statistic), "n": n}
