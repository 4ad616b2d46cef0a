"""Run-level figures of the imagination monitor (no rclpy): does imagination tell success from failure?

Two questions, on the episodes whose imagined frames met real ones:
- failure prediction: AUROC of the per-episode divergence (1 - SSIM; max and mean over the
  episode) as a score for failure (label 1 = failed). 0.5 is chance; nan with one outcome only.
  Failed episodes run to the step limit while successful ones stop early, so the whole-episode
  figure mixes imagination with episode length; `failure_auroc_common_window` scores every
  episode on the same early span only: its first `window_s` seconds (default: the shortest
  episode's span), an early warning that episode length cannot inform.
- VideoVLA's claim that imagination quality goes with task success: Pearson (point-biserial) and
  Spearman correlation of the per-episode mean PSNR / SSIM with success (1/0).
"""

from __future__ import annotations

import math

import numpy as np

from .metrics import auroc, correlation


def monitor_figures(episodes: list[dict], window_s: float | None = None) -> dict:
    """episodes: one dict per episode with success (bool), divergence (list of values), times
    (s from the episode start of each divergence value), psnr and ssim (lists of values, PSNR in
    dB; +inf entries are left out of means). window_s: the early window (s) of the common-window
    AUROC; None: the shortest episode's span."""
    scored = [e for e in episodes if len(e["divergence"])]
    failed = [int(not e["success"]) for e in scored]
    success = [float(e["success"]) for e in scored]
    max_div = [float(np.max(e["divergence"])) for e in scored]
    mean_div = [float(np.mean(e["divergence"])) for e in scored]

    def finite_mean(values) -> float:
        values = [v for v in values if math.isfinite(v)]
        return float(np.mean(values)) if values else math.nan

    if window_s is None:
        window_s = min(max(e["times"]) for e in scored) if scored else math.nan
    windowed = [(e, [v for t, v in zip(e["times"], e["divergence"]) if t <= window_s]) for e in scored]
    windowed = [(e, v) for e, v in windowed if v]      # episodes with no imagined frame in the window: left out
    early_failed = [int(not e["success"]) for e, _ in windowed]
    psnr = [finite_mean(e["psnr"]) for e in scored]
    ssim = [finite_mean(e["ssim"]) for e in scored]
    return {"episodes": len(scored), "failures": int(sum(failed)),
            "compared_frames": int(sum(len(e["divergence"]) for e in scored)),
            "failure_auroc": {"max_divergence": auroc(max_div, failed) if scored else math.nan,
                              "mean_divergence": auroc(mean_div, failed) if scored else math.nan},
            "failure_auroc_common_window": {
                "window_s": window_s, "episodes": len(windowed), "left_out": len(scored) - len(windowed),
                "max_divergence": auroc([max(v) for _, v in windowed], early_failed) if windowed else math.nan,
                "mean_divergence": auroc([float(np.mean(v)) for _, v in windowed], early_failed)
                if windowed else math.nan},
            "quality_success_correlation": {"psnr_db": correlation(psnr, success),
                                            "ssim": correlation(ssim, success)},
            "mean_psnr_db": finite_mean(psnr), "mean_ssim": finite_mean(ssim),
            "mean_divergence_successful": finite_mean([d for d, s in zip(mean_div, success) if s]),
            "mean_divergence_failed": finite_mean([d for d, s in zip(mean_div, success) if not s])}
