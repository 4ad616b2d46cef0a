"""What the evaluator keeps of one episode for its report, with bounded memory (no rclpy).

Times are seconds from the episode start (its reset stamp, on the graph's clock). Real frames and
imagined futures are subsampled: every `stride`-th item is kept, and when `max_items` are held every
other one is dropped and the stride doubles, so a long episode keeps an evenly spread subset.
"""

from __future__ import annotations

import math

import numpy as np

from .metrics import ssim


class Subsampler:
    """Keeps at most `max_items` of a stream, evenly spread over it."""

    def __init__(self, max_items: int, stride: int = 1):
        if max_items < 2 or stride < 1:
            raise ValueError(f"subsampler needs max_items >= 2 and stride >= 1, got {max_items}, {stride}")
        self.max_items, self.stride = max_items, stride
        self.items: list = []
        self.seen = 0

    def add(self, item) -> None:
        self.offer(lambda: item)

    def offer(self, make) -> bool:
        """Count one stream item; call `make()` and keep its result only when this item is kept."""
        keep = self.seen % self.stride == 0
        self.seen += 1
        if keep:
            self.items.append(make())
            if len(self.items) > self.max_items:
                self.items = self.items[::2]
                self.stride *= 2
        return keep


class EpisodeLog:
    """Divergence series, image-quality figures, latencies and frames of one episode."""

    def __init__(self, start_s: float, max_frames: int = 80, frame_stride: int = 2, max_imagined: int = 80):
        self.start_s = start_s
        self.divergence: list[tuple[float, float]] = []
        self.psnr: list[float] = []
        self.ssim: list[float] = []
        self.exceeded = 0
        self.actions: dict[str, int] = {}
        self.latencies_ms: list[float] = []
        self.real = Subsampler(max_frames, frame_stride)
        self.imagined = Subsampler(max_imagined, 1)
        self.imagined_offsets_s: list[float] | None = None
        self.frame_change: list[tuple[float, float]] = []     # (s after start, 1 - SSIM to the previous frame)
        self.previous_view: np.ndarray | None = None

    def add_frame_change(self, stamp_s: float, view: np.ndarray) -> None:
        """Score a real frame (already in the model's view) against the one before: the detector of the
        unexpected that imagines nothing, on the monitor's own measure (1 - SSIM)."""
        previous, self.previous_view = self.previous_view, view
        if previous is not None and previous.shape == view.shape:
            self.frame_change.append((stamp_s - self.start_s, 1.0 - ssim(previous, view)))

    def add_divergence(self, stamp_s: float, psnr: float, ssim: float, divergence: float, exceeded: bool,
                       action: str) -> None:
        self.divergence.append((stamp_s - self.start_s, float(divergence)))
        self.psnr.append(float(psnr))
        self.ssim.append(float(ssim))
        if exceeded:
            self.exceeded += 1
            self.actions[action] = self.actions.get(action, 0) + 1

    def add_real_frame(self, stamp_s: float, decode) -> bool:
        """decode() -> HxWx3 uint8 frame, called only for frames kept (decoding every frame is wasted)."""
        return self.real.offer(lambda: (stamp_s - self.start_s, decode()))

    def add_imagined(self, source_stamp_s: float, frames: list[np.ndarray], offsets_s: list[float]) -> None:
        self.imagined.add((source_stamp_s - self.start_s, frames))
        if self.imagined_offsets_s is None:
            self.imagined_offsets_s = [float(o) for o in offsets_s]

    def quality(self) -> dict:
        """Mean PSNR (dB, over finite values) and SSIM of the imagined frames, and flagged frames."""
        finite = [p for p in self.psnr if math.isfinite(p)]
        return {"imagined_psnr_db_mean": float(np.mean(finite)) if finite else math.nan,
                "imagined_ssim_mean": float(np.mean(self.ssim)) if self.ssim else math.nan,
                "divergence_frames": len(self.divergence), "divergence_exceeded": self.exceeded,
                "monitor_actions": dict(self.actions)}

    @property
    def frame_times_s(self) -> list[float]:
        return [t for t, _ in self.real.items]

    @property
    def frames(self) -> list[np.ndarray]:
        return [f for _, f in self.real.items]
