"""torchmetrics ``Metric`` subclasses and functional metrics: detection (``detection.py``: EER, video-level, per
method) and 3D reconstruction (``reconstruction.py``: volumetric IoU, landmark NME, mesh NME)."""
from __future__ import annotations

from faceforge.metrics.detection import (
    METRIC_KEYS,
    BinaryEER,
    DetectionScores,
    aggregate_by_video,
    binary_detection_metrics,
    binary_eer,
    detection_report,
)

__all__ = [
    "METRIC_KEYS",
    "BinaryEER",
    "DetectionScores",
    "aggregate_by_video",
    "binary_detection_metrics",
    "binary_eer",
    "detection_report",
]
