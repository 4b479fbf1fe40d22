"""Preprocessing for 3D face reconstruction: 300W-LP / AFLW2000-3D images + 3DMM fits -> VRN training volumes."""
from __future__ import annotations

from faceforge.data.preprocess_3d.volumes import (
    INDEX_COLUMNS,
    INDEX_FILENAME,
    REPORT_FILENAME,
    SKIP_REASONS,
    VolumeGenerationConfig,
    VolumeGenerationError,
    VolumeReport,
    W300LPSample,
    face_mesh_from_label,
    find_300wlp_samples,
    generate_volumes,
    open_volume_store,
    read_volume_index,
    thin_plate_warp,
)

__all__ = [
    "INDEX_COLUMNS",
    "INDEX_FILENAME",
    "REPORT_FILENAME",
    "SKIP_REASONS",
    "VolumeGenerationConfig",
    "VolumeGenerationError",
    "VolumeReport",
    "W300LPSample",
    "face_mesh_from_label",
    "find_300wlp_samples",
    "generate_volumes",
    "open_volume_store",
    "read_volume_index",
    "thin_plate_warp",
]
