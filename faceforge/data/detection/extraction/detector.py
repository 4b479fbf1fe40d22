"""Face detection with facenet-pytorch's MTCNN (Zhang et al., "Joint Face Detection and Alignment using
Multi-task Cascaded Convolutional Networks", IEEE SPL 2016).

MTCNN runs three networks: P-Net slides over an image pyramid (scales ``12 / min_face_size * factor**k``) and
proposes windows; R-Net (24x24) and O-Net (48x48) re-score and refine crops of those windows taken from the
full-resolution frame; O-Net also gives 5 landmarks. facenet-pytorch ships the trained weights inside the pip
package (``facenet_pytorch/data/{pnet,rnet,onet}.pt``), so building the detector downloads nothing.

Speed (see ``benchmarks/bench_face_extraction.py``): the cost of MTCNN on a full-HD frame is dominated by the
P-Net pyramid (every level is resampled from the full frame) and by the R-Net/O-Net crops of the many windows
P-Net proposes at small scales. Deepfake datasets show large faces, so by default the smallest face searched for
is a fraction of the frame's short side (``min_face_fraction``, 20 px at least), which drops the large pyramid
levels while R-Net and O-Net still see full-resolution crops (downscaling the whole frame is faster still, but
lost faces on the dark fixture clip for some scales). On that clip, whose faces score near O-Net's threshold,
recall depends on how the face size falls between pyramid levels; a finer step (``factor``) than MTCNN's 0.709
gives each face more chances. Both defaults (0.07, 0.75) were chosen by a sweep on the fixture clips: on all 300
frames of the dark clip they find a face in 289 frames (MTCNN's defaults: 263), at about a quarter of the cost.
The frame is also handed to MTCNN as a float tensor whose memory is already in (C, H, W) order, which makes
MTCNN's resampling about twice as fast as from an (H, W, C) uint8 array (same results), and on the CPU the three
networks keep their weights in channels-last memory, where max-pooling is faster (same results to 1e-4 px).
Run it with one torch thread (the extractor does): MTCNN's small convolutions gain little from more, and on
shared cores waiting OpenMP threads made it several times slower.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from faceforge.errors import FaceforgeError

__all__ = [
    "DEFAULT_FACTOR",
    "DEFAULT_MIN_FACE_FRACTION",
    "MIN_FACE_FLOOR",
    "Detection",
    "FaceDetector",
    "FaceDetectorError",
]

#: Default smallest face searched for, as a fraction of the frame's short side (76 px on 1080p, 50 px on 720p).
DEFAULT_MIN_FACE_FRACTION = 0.07
#: Default pyramid scale step (MTCNN's own default is 0.709 = sqrt(0.5)).
DEFAULT_FACTOR = 0.75
#: Never search for faces smaller than this (pixels): MTCNN's default minimum face size.
MIN_FACE_FLOOR = 20.0


class FaceDetectorError(FaceforgeError, RuntimeError):
    """Bad detector settings or input frames (the message says which)."""


@dataclass(frozen=True)
class Detection:
    """One detected face.

    Attributes:
        box: (4,) float32 ``x1, y1, x2, y2`` in pixels of the frame (x right, y down); may extend past the frame.
        prob: O-Net face probability in [0, 1].
        landmarks: (5, 2) float32 ``x, y`` pixels: left eye, right eye, nose, left and right mouth corners (as
            seen in the image).
    """

    box: np.ndarray
    prob: float
    landmarks: np.ndarray


def _check_frame(i: int, frame: Any) -> None:
    """Raise :class:`FaceDetectorError` unless ``frame`` is an (H, W, 3) uint8 array (``i``: its position)."""
    if not isinstance(frame, np.ndarray) or frame.ndim != 3 or frame.shape[2] != 3 or frame.dtype != np.uint8:
        desc = f"{frame.dtype} array of shape {frame.shape}" if isinstance(frame, np.ndarray) else type(frame)
        raise FaceDetectorError(f"frame {i}: expected an (H, W, 3) uint8 RGB array, got {desc}")


class FaceDetector:
    """MTCNN face detector (facenet-pytorch) with a frame-size-relative minimum face size.

    Args:
        device: torch device (``"cpu"``, ``"cuda"``, ``"cuda:1"``...).
        min_face_size: smallest face searched for, in pixels; overrides ``min_face_fraction`` when given.
        min_face_fraction: smallest face as a fraction of each frame's short side (used when ``min_face_size`` is
            None); at least :data:`MIN_FACE_FLOOR` px. ``0`` gives MTCNN's 20 px.
        thresholds: P-Net, R-Net and O-Net score thresholds.
        factor: pyramid scale step in (0, 1); larger is finer and slower.
        keep: at most this many faces per frame, most confident first (None: all).

    Raises:
        FaceDetectorError: if a setting is out of range.
    """

    def __init__(self, device: str | torch.device = "cpu", min_face_size: float | None = None,
                 min_face_fraction: float = DEFAULT_MIN_FACE_FRACTION,
                 thresholds: Sequence[float] = (0.6, 0.7, 0.7), factor: float = DEFAULT_FACTOR,
                 keep: int | None = 1) -> None:
        if min_face_size is not None and not min_face_size > 0:
            raise FaceDetectorError(f"min_face_size must be > 0 pixels, got {min_face_size}")
        if not 0.0 <= min_face_fraction < 1.0:
            raise FaceDetectorError(f"min_face_fraction must be in [0, 1), got {min_face_fraction}")
        if len(thresholds) != 3 or not all(0.0 <= t <= 1.0 for t in thresholds):
            raise FaceDetectorError(f"thresholds must be 3 values in [0, 1], got {thresholds}")
        if not 0.0 < factor < 1.0:
            raise FaceDetectorError(f"factor must be in (0, 1), got {factor}")
        if keep is not None and keep < 1:
            raise FaceDetectorError(f"keep must be >= 1 or None, got {keep}")
        from facenet_pytorch import MTCNN  # heavy import, deferred

        self.device = torch.device(device)
        self.min_face_size = None if min_face_size is None else float(min_face_size)
        self.min_face_fraction = float(min_face_fraction)
        self.thresholds = tuple(float(t) for t in thresholds)
        self.factor = float(factor)
        self.keep = keep
        self._mtcnn = MTCNN(min_face_size=MIN_FACE_FLOOR, thresholds=list(self.thresholds), factor=self.factor,
                            post_process=False, select_largest=False, keep_all=True, device=self.device)
        self._mtcnn.eval()
        if self.device.type == "cpu":
            # Same weights, channels-last memory: the CPU max-pooling layers run ~2.5x faster on it (detections
            # equal to 1e-4 px); ~15 % less detection time in all.
            for net in (self._mtcnn.pnet, self._mtcnn.rnet, self._mtcnn.onet):
                net.to(memory_format=torch.channels_last)

    def settings(self) -> dict[str, Any]:
        """The settings that determine the detections (JSON-able; the device is left out)."""
        return {"model": "facenet_pytorch.MTCNN", "min_face_size": self.min_face_size,
                "min_face_fraction": self.min_face_fraction, "min_face_floor": MIN_FACE_FLOOR,
                "thresholds": list(self.thresholds), "factor": self.factor, "keep": self.keep}

    def min_face_for(self, height: int, width: int) -> float:
        """Smallest face size (pixels) searched for in a ``height`` x ``width`` frame."""
        if self.min_face_size is not None:
            return self.min_face_size
        return max(MIN_FACE_FLOOR, self.min_face_fraction * min(height, width))

    def detect(self, frames: Sequence[np.ndarray]) -> list[list[Detection]]:
        """Detect faces in each frame.

        On the CPU one frame at a time (batching is slower there); on a GPU the frames of equal size go through
        MTCNN as one batch (the sampled frames of a video share their size), which keeps the device busy.

        Args:
            frames: (H, W, 3) uint8 RGB arrays (sizes may differ).

        Returns:
            For each frame, its detections sorted by decreasing ``prob``, at most ``keep`` of them.

        Raises:
            FaceDetectorError: if a frame is not an (H, W, 3) uint8 array.
        """
        for i, frame in enumerate(frames):
            _check_frame(i, frame)
        if self.device.type == "cpu" or len(frames) < 2:
            return [self._detect_one(i, f) for i, f in enumerate(frames)]
        return self._detect_batched(frames)

    def _detect_batched(self, frames: Sequence[np.ndarray]) -> list[list[Detection]]:
        """:meth:`detect` with the frames of equal size run through MTCNN as one batch (checked frames)."""
        found: list[list[Detection]] = [[] for _ in frames]
        by_shape: dict[tuple[int, ...], list[int]] = {}
        for i, frame in enumerate(frames):
            by_shape.setdefault(frame.shape, []).append(i)
        for shape, members in by_shape.items():
            h, w = shape[:2]
            min_face = self.min_face_for(h, w)
            if min(h, w) < 12 or min_face > min(h, w):
                continue
            with torch.no_grad():
                batch = torch.from_numpy(np.stack([frames[i] for i in members])).to(self.device).float()
                self._mtcnn.min_face_size = min_face
                boxes, probs, points = self._mtcnn.detect(batch, landmarks=True)
            for k, i in enumerate(members):
                found[i] = self._detections(boxes[k], probs[k], points[k])
        return found

    @torch.no_grad()
    def _detect_one(self, i: int, frame: np.ndarray) -> list[Detection]:
        _check_frame(i, frame)
        h, w = frame.shape[:2]
        min_face = self.min_face_for(h, w)
        if min(h, w) < 12 or min_face > min(h, w):
            return []  # MTCNN's pyramid would be empty: no face of the searched size fits
        if not frame.flags.writeable:
            frame = frame.copy()
        # (H, W, C) view of a (C, H, W)-contiguous float tensor: MTCNN permutes it back to contiguous (N, C, H, W).
        image = torch.from_numpy(frame).to(self.device).permute(2, 0, 1).float().contiguous().permute(1, 2, 0)
        self._mtcnn.min_face_size = min_face
        boxes, probs, points = self._mtcnn.detect(image, landmarks=True)
        return self._detections(boxes, probs, points)

    def _detections(self, boxes: Any, probs: Any, points: Any) -> list[Detection]:
        """MTCNN's boxes (K, 4), probabilities (K,) and 5 points (K, 5, 2) of one frame (None where it found
        none) as detections sorted by decreasing ``prob``, at most ``keep``."""
        if boxes is None or len(boxes) == 0:
            return []
        boxes = np.asarray(boxes, dtype=np.float32).reshape(-1, 4)
        probs = np.asarray(probs, dtype=np.float64).reshape(-1)
        points = np.asarray(points, dtype=np.float32).reshape(-1, 5, 2)
        order = np.argsort(-probs, kind="stable")
        if self.keep is not None:
            order = order[: self.keep]
        return [Detection(box=boxes[k].copy(), prob=float(probs[k]), landmarks=points[k].copy()) for k in order]
