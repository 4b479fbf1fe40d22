"""Square face crops with a margin.

The crop window is a square centred on the face box, of side ``max(w, h) * (1 + margin)`` (rounded to whole
pixels, at least 1), placed on the pixel grid at ``round(centre - side / 2)``. Parts of the window outside the
frame are zero (black). The window is then resized to ``size`` x ``size`` with OpenCV: ``INTER_AREA`` when
shrinking (averages, no aliasing), ``INTER_LINEAR`` when enlarging, no resampling when it already has that size.

The returned ``crop_box`` is the exact pixel window used, so a crop pixel ``(u, v)`` (pixel centres) maps to the
frame point ``x = x1 + (u + 0.5) * (x2 - x1) / size - 0.5`` (same for y).
"""
from __future__ import annotations

import math

import cv2
import numpy as np

__all__ = ["crop_face", "crop_window"]


def crop_window(box: np.ndarray | tuple[float, float, float, float], margin: float = 0.3) -> tuple[int, int, int]:
    """The integer square window ``(x1, y1, side)`` that :func:`crop_face` cuts for ``box``.

    Args:
        box: ``x1, y1, x2, y2`` face box in pixels.
        margin: relative margin added to the box's larger side (0.3 = 30 %).

    Raises:
        ValueError: if the box is not 4 finite numbers with x2 > x1 and y2 > y1, or ``margin < 0``.
    """
    b = np.asarray(box, dtype=np.float64).reshape(-1)
    if b.shape != (4,) or not np.all(np.isfinite(b)) or b[2] <= b[0] or b[3] <= b[1]:
        raise ValueError(f"face box must be 4 finite numbers x1, y1, x2, y2 with x2 > x1 and y2 > y1, got {box}")
    if margin < 0:
        raise ValueError(f"margin must be >= 0, got {margin}")
    side = max(1, int(round(max(b[2] - b[0], b[3] - b[1]) * (1.0 + margin))))
    cx, cy = (b[0] + b[2]) / 2.0, (b[1] + b[3]) / 2.0
    return int(math.floor(cx - side / 2.0 + 0.5)), int(math.floor(cy - side / 2.0 + 0.5)), side


def crop_face(frame: np.ndarray, box: np.ndarray | tuple[float, float, float, float], margin: float = 0.3,
              size: int = 256) -> tuple[np.ndarray, np.ndarray]:
    """Cut a square face crop with a margin and resize it.

    Args:
        frame: (H, W, 3) uint8 image (RGB, or any 3-channel order: channels are copied as they are).
        box: ``x1, y1, x2, y2`` face box in pixels (may extend past the frame).
        margin: relative margin added to the box's larger side (0.3 = 30 %).
        size: output side in pixels.

    Returns:
        ``(crop, crop_box)``: the (size, size, 3) uint8 crop, and the (4,) float64 window
        ``x1, y1, x2, y2`` it was cut from in frame pixels (integer-valued; may extend past the frame, where
        the crop is zero).

    Raises:
        ValueError: if ``frame`` is not (H, W, 3) uint8, the box is invalid (see :func:`crop_window`), or
            ``size < 1``.
    """
    if not isinstance(frame, np.ndarray) or frame.ndim != 3 or frame.shape[2] != 3 or frame.dtype != np.uint8:
        raise ValueError(f"frame must be an (H, W, 3) uint8 array, got "
                         f"{getattr(frame, 'dtype', type(frame))} {getattr(frame, 'shape', '')}")
    if size < 1:
        raise ValueError(f"crop size must be >= 1, got {size}")
    x1, y1, side = crop_window(box, margin)
    h, w = frame.shape[:2]
    window = np.zeros((side, side, 3), dtype=np.uint8)
    fx1, fy1, fx2, fy2 = max(x1, 0), max(y1, 0), min(x1 + side, w), min(y1 + side, h)
    if fx2 > fx1 and fy2 > fy1:
        window[fy1 - y1:fy2 - y1, fx1 - x1:fx2 - x1] = frame[fy1:fy2, fx1:fx2]
    if side != size:
        interp = cv2.INTER_AREA if side > size else cv2.INTER_LINEAR
        window = cv2.resize(window, (size, size), interpolation=interp)
    crop_box = np.array([x1, y1, x1 + side, y1 + side], dtype=np.float64)
    return np.ascontiguousarray(window), crop_box
