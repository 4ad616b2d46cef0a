"""Image buffers <-> numpy, the one image resize of the package, and the crop/resize that maps a
camera frame to the model input. Images are RGB uint8, (H, W, 3); sizes are (height, width) in px."""

from __future__ import annotations

import cv2
import numpy as np

CHANNELS = {"rgb8": 3, "bgr8": 3, "mono8": 1}


class ImageEncodingError(ValueError):
    """An image whose encoding or buffer does not match what the embodiment expects; `field` names
    the sensor_msgs/Image field at fault (encoding, height, width, step or data)."""

    def __init__(self, message: str, field: str = "data"):
        super().__init__(message)
        self.field = field


def decode(encoding: str, height: int, width: int, step: int, data, where: str = "image") -> np.ndarray:
    """Raw sensor_msgs/Image fields -> HxWx3 RGB uint8 array (mono8 is replicated to 3 channels)."""
    if encoding not in CHANNELS:
        raise ImageEncodingError(f"{where}: encoding '{encoding}' not supported (use one of {', '.join(CHANNELS)})",
                                 "encoding")
    if height <= 0 or width <= 0:
        raise ImageEncodingError(f"{where}: empty image ({height}x{width})", "height" if height <= 0 else "width")
    ch = CHANNELS[encoding]
    if step < width * ch:
        raise ImageEncodingError(f"{where}: field 'step' {step} too small for rows of {width} px {encoding}", "step")
    buf = np.frombuffer(bytes(data) if not isinstance(data, (bytes, bytearray, memoryview)) else data, np.uint8)
    if buf.size < step * height:
        raise ImageEncodingError(f"{where}: buffer of {buf.size} bytes (step {step}) too small for "
                                 f"{height}x{width} {encoding}")
    img = buf[: step * height].reshape(height, step)[:, : width * ch].reshape(height, width, ch)
    if encoding == "bgr8":
        img = img[:, :, ::-1]
    elif encoding == "mono8":
        img = np.repeat(img, 3, axis=2)
    return np.ascontiguousarray(img)


def resize_rgb(frames: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """(H, W, 3) or (N, H, W, 3) uint8 -> the same at size (height, width): pixel-area averaging when
    shrinking (no aliasing), bilinear when enlarging. Frames already at `size` are returned as they are."""
    frames = np.asarray(frames, dtype=np.uint8)
    h, w = frames.shape[-3:-1]
    out_h, out_w = size
    if (h, w) == (out_h, out_w):
        return np.ascontiguousarray(frames)
    interpolation = cv2.INTER_AREA if out_h <= h and out_w <= w else cv2.INTER_LINEAR
    if frames.ndim == 3:
        return cv2.resize(frames, (out_w, out_h), interpolation=interpolation)
    out = np.empty((len(frames), out_h, out_w, frames.shape[-1]), np.uint8)
    for i, frame in enumerate(frames):
        out[i] = cv2.resize(frame, (out_w, out_h), interpolation=interpolation)
    return out


def to_model_input(img: np.ndarray, input_size: tuple[int, int], crop=None) -> np.ndarray:
    """Crop (top, left, height, width) then resize to (height, width); returns RGB uint8."""
    if crop is not None:
        top, left, h, w = crop
        if top + h > img.shape[0] or left + w > img.shape[1]:
            raise ImageEncodingError(f"crop {tuple(crop)} exceeds image of {img.shape[0]}x{img.shape[1]}",
                                     "height" if top + h > img.shape[0] else "width")
        img = img[top: top + h, left: left + w]
    if img.shape[0] == 0 or img.shape[1] == 0:
        raise ImageEncodingError(f"empty image ({img.shape[0]}x{img.shape[1]}) to resize", "height")
    return resize_rgb(img, input_size)
