"""torchmetrics ``Metric`` subclasses and functional metrics (detection now; NME, volumetric IoU, ... later)."""
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
