"""Preprocessing: face extraction from the official video layouts into a face index.

Modules: :mod:`~faceforge.data.detection.extraction.video` (PyAV decoding),
    :mod:`~faceforge.data.detection.extraction.sampling`
(seeded frame sampling), :mod:`~faceforge.data.detection.extraction.detector` (facenet-pytorch MTCNN),
:mod:`~faceforge.data.detection.extraction.crop` (square crops), :mod:`~faceforge.data.detection.extraction.extract`
(the resumable
pipeline) and :mod:`~faceforge.data.detection.extraction.cli` (the ``faceforge-extract-faces`` command).

Heavy modules (torch, facenet-pytorch) are imported lazily, on first use of a name from them.
"""
from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "VideoInfo": "video", "VideoDecodeError": "video", "FrameList": "video", "FrameStream": "video",
    "probe_video": "video", "read_frames": "video",
    "sample_frame_indices": "sampling", "SAMPLING_MODES": "sampling",
    "Detection": "detector", "FaceDetector": "detector", "FaceDetectorError": "detector",
    "crop_face": "crop",
    "ExtractionReport": "extract", "ExtractionSettingsError": "extract", "EmptyExtractionError": "extract",
    "OutputFolderError": "extract", "DiskFullError": "extract", "check_output_dir": "extract",
    "extract_faces": "extract",
    "extract_dataset": "extract",
}
__all__ = list(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        module = importlib.import_module(f"{__name__}.{_EXPORTS[name]}")
        return getattr(module, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
