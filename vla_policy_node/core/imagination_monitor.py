"""Imagination monitor: compares the future frames a world-model policy imagined with the real
camera frames captured at those times (no rclpy).

An ImaginedFuture stamped t0 (capture time of its source observation) holds frame k of camera c
for time t0 + frame_offsets[k]. When a real frame of camera c arrives with a stamp within
`tolerance_s` of such a time, the real frame is mapped to the model's view (the camera's crop and
input size from the robot file, then resized to the imagined frame's resolution) and scored:
PSNR (dB), SSIM, and divergence = 1 - SSIM (0 for identical frames, grows with mismatch, at most
2). Divergence above `threshold` flags the frame with the configured action (none | replan | hold).
Each imagined frame is compared at most once. Real frames are kept for a short while, so an
imagined future that arrives after its real frames (free-running time, slow inference) is still
scored; an imagined frame older than every kept real frame, or passed over, counts as expired.
A real frame stamped earlier than the previous one (clock restarted: new episode, replay) clears
what was kept of that camera.
"""

from __future__ import annotations

import math
from collections import OrderedDict, deque
from dataclasses import dataclass

import cv2
import numpy as np

from .metrics import psnr, ssim
from .images import to_model_input

ACTIONS = ("none", "replan", "hold")


@dataclass(frozen=True)
class MonitorSettings:
    threshold: float = math.inf        # divergence (1 - SSIM) above which a frame is flagged
    action: str = "none"               # what a flagged frame asks the executor to do
    camera: str = ""                   # compare only this camera ("" = every imagined camera)
    tolerance_s: float = 0.00625       # max |real stamp - imagined time|, s (half a control period)
    max_chunks: int = 32               # imagined futures kept while waiting for their real frames
    real_frames_kept: int = 64         # recent real frames per camera, for imagination that arrives late

    def __post_init__(self):
        if self.action not in ACTIONS:
            raise ValueError(f"monitor action '{self.action}' unknown; use one of {', '.join(ACTIONS)}")
        if not self.threshold > 0:
            raise ValueError(f"monitor threshold must be > 0, got {self.threshold}")
        if not self.tolerance_s > 0:
            raise ValueError(f"monitor tolerance_s must be > 0, got {self.tolerance_s}")
        if self.max_chunks < 1:
            raise ValueError(f"monitor max_chunks must be >= 1, got {self.max_chunks}")
        if self.real_frames_kept < 1:
            raise ValueError(f"monitor real_frames_kept must be >= 1, got {self.real_frames_kept}")


@dataclass
class ImaginedFrame:
    chunk_id: int
    episode_id: str
    camera: str
    index: int                 # k within its ImaginedFuture
    offset_s: float            # s after the source observation
    time_s: float              # t0 + offset_s: when the real frame should look like this
    frame: np.ndarray          # HxWx3 uint8 RGB, the model's resolution


@dataclass
class Comparison:
    """One imagined frame scored against the real frame captured at its time."""
    episode_id: str
    chunk_id: int
    camera: str
    frame_index: int
    offset_s: float
    real_stamp_s: float
    time_error_s: float        # real stamp - imagined time
    width: int
    height: int
    psnr: float                # dB; inf for identical frames
    ssim: float
    divergence: float          # 1 - ssim
    threshold: float
    exceeded: bool
    action: str                # settings.action when exceeded, else "none"


def divergence_of(ssim_value: float) -> float:
    """1 - SSIM: 0 for identical frames, up to 2 for anti-correlated ones."""
    return 1.0 - float(ssim_value)


def real_frame_at(frame: np.ndarray, shape: tuple[int, int], input_size=None, crop=None) -> np.ndarray:
    """The real camera frame as the model sees it (crop, input size), resized to `shape` (H, W)."""
    if input_size is not None:
        frame = to_model_input(frame, tuple(input_size), crop)
    if frame.shape[:2] != tuple(shape):
        h, w = shape
        interp = cv2.INTER_AREA if frame.shape[0] > h else cv2.INTER_LINEAR
        frame = cv2.resize(frame, (w, h), interpolation=interp)
    return np.ascontiguousarray(frame)


class ImaginationMonitor:
    """Pending imagined frames and recent real frames per camera, matched by time."""

    def __init__(self, settings: MonitorSettings, camera_views: dict | None = None):
        """camera_views: camera name -> (input_size, crop) of the robot file (None: frame as is)."""
        self.settings = settings
        self.camera_views = camera_views or {}
        self._chunks: OrderedDict[int, list[ImaginedFrame]] = OrderedDict()
        self._real: dict[str, deque] = {}
        self.counts = {"imagined": 0, "compared": 0, "exceeded": 0, "expired": 0, "evicted": 0}

    def reset(self) -> None:
        """Forget pending imagined frames and kept real frames (a new episode)."""
        self._chunks.clear()
        self._real.clear()

    @property
    def pending(self) -> int:
        return sum(len(v) for v in self._chunks.values())

    def drop_other_episodes(self, episode_id: str) -> None:
        """Forget imagined frames of episodes other than `episode_id`."""
        for chunk_id in [c for c, items in self._chunks.items() if items[0].episode_id != episode_id]:
            del self._chunks[chunk_id]

    def add_imagined(self, chunk_id: int, episode_id: str, t0_s: float, camera_names: list[str],
                     frames: list[np.ndarray], offsets_s: list[float]) -> list[Comparison]:
        """Frames horizon-major (frame k of camera c at k * len(camera_names) + c), as in
        vla_msgs/ImaginedFuture; times t0_s + offsets_s[k]. Frames whose real frame was already
        seen are scored now (returned); the others wait for theirs."""
        n_cams = len(camera_names)
        if n_cams == 0 or len(frames) % n_cams:
            raise ValueError(f"ImaginedFuture chunk {chunk_id}: {len(frames)} frames for cameras {camera_names}")
        horizon = len(frames) // n_cams
        if len(offsets_s) < horizon:
            raise ValueError(f"ImaginedFuture chunk {chunk_id}: field 'frame_offsets' has {len(offsets_s)} "
                             f"entries for {horizon} frames per camera")
        out, waiting = [], []
        for k in range(horizon):
            for c, cam in enumerate(camera_names):
                if self.settings.camera and cam != self.settings.camera:
                    continue
                item = ImaginedFrame(chunk_id, episode_id, cam, k, float(offsets_s[k]),
                                     float(t0_s) + float(offsets_s[k]), frames[k * n_cams + c])
                self.counts["imagined"] += 1
                seen = self._real.get(cam)
                match = self._nearest(seen, item.time_s) if seen else None
                if match is not None:
                    out.append(self.compare(item, *match))
                elif seen and item.time_s < seen[-1][0] - self.settings.tolerance_s:
                    self.counts["expired"] += 1      # its time has passed without a kept real frame
                else:
                    waiting.append(item)
        if waiting:
            self._chunks[chunk_id] = waiting
            while len(self._chunks) > self.settings.max_chunks:
                _, dropped = self._chunks.popitem(last=False)
                self.counts["evicted"] += len(dropped)
        return out

    def _nearest(self, seen: deque, time_s: float):
        best = min(seen, key=lambda sf: abs(sf[0] - time_s))
        return best if abs(best[0] - time_s) <= self.settings.tolerance_s else None

    def on_real_frame(self, camera: str, stamp_s: float, frame: np.ndarray) -> list[Comparison]:
        """Keep the frame; score every pending imagined frame of `camera` whose time matches `stamp_s`."""
        seen = self._real.setdefault(camera, deque(maxlen=self.settings.real_frames_kept))
        if seen and stamp_s < seen[-1][0]:
            seen.clear()                             # the clock restarted
        seen.append((float(stamp_s), frame))
        tol = self.settings.tolerance_s
        out = []
        for chunk_id in list(self._chunks):
            remaining = []
            for item in self._chunks[chunk_id]:
                if item.camera != camera:
                    remaining.append(item)
                elif abs(stamp_s - item.time_s) <= tol:
                    out.append(self.compare(item, stamp_s, frame))
                elif item.time_s < stamp_s - tol:
                    self.counts["expired"] += 1      # its time has passed without a real frame
                else:
                    remaining.append(item)
            if remaining:
                self._chunks[chunk_id] = remaining
            else:
                del self._chunks[chunk_id]
        return out

    def compare(self, item: ImaginedFrame, stamp_s: float, real: np.ndarray) -> Comparison:
        imagined = np.asarray(item.frame, dtype=np.uint8)
        input_size, crop = self.camera_views.get(item.camera, (None, None))
        real = real_frame_at(np.asarray(real, dtype=np.uint8), imagined.shape[:2], input_size, crop)
        p, s = psnr(imagined, real), ssim(imagined, real)
        d = divergence_of(s)
        exceeded = d > self.settings.threshold
        self.counts["compared"] += 1
        self.counts["exceeded"] += int(exceeded)
        return Comparison(item.episode_id, item.chunk_id, item.camera, item.index, item.offset_s, float(stamp_s),
                          float(stamp_s) - item.time_s, int(imagined.shape[1]), int(imagined.shape[0]), p, s, d,
                          self.settings.threshold, exceeded, self.settings.action if exceeded else "none")
