"""torchmetrics ``Metric`` subclasses and functional metrics: detection (``detection.py``: EER, video-level, per
method, the constant baseline) and 3D reconstruction (``reconstruction.py``: volumetric IoU, landmark NME, mesh NME,
and the alignments they use: Umeyama similarity, ICP)."""
from __future__ import annotations

from faceforge.metrics.detection import (
    METRIC_KEYS,
    BinaryEER,
    DetectionScores,
    aggregate_by_video,
    binary_detection_metrics,
    binary_eer,
    constant_baseline,
    detection_report,
)
from faceforge.metrics.reconstruction import (
    IcpResult,
    LandmarkNME,
    MeshNME,
    ReconstructionMetricError,
    Similarity,
    VolumetricIoU,
    apply_similarity,
    icp,
    landmark_nme,
    mesh_nme,
    outer_interocular_distance,
    umeyama,
    volumetric_iou,
)

__all__ = [
    "METRIC_KEYS",
    "BinaryEER",
    "DetectionScores",
    "IcpResult",
    "LandmarkNME",
    "MeshNME",
    "ReconstructionMetricError",
    "Similarity",
    "VolumetricIoU",
    "aggregate_by_video",
    "apply_similarity",
    "binary_detection_metrics",
    "binary_eer",
    "constant_baseline",
    "detection_report",
    "icp",
    "landmark_nme",
    "mesh_nme",
    "outer_interocular_distance",
    "umeyama",
    "volumetric_iou",
]
