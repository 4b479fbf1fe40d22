"""Storage of VRN training volumes: one run per column, in HDF5 (see :mod:`faceforge.data.volumes.storage`)."""
from __future__ import annotations

from faceforge.data.volumes.storage import (
    DENSE_BYTES_PER_SAMPLE,
    EncodedVolume,
    StoreSummary,
    VolumeEncodingError,
    VolumeSample,
    VolumeStore,
    VolumeStoreError,
    VolumeStoreWriter,
    decode_runs,
    decode_volume,
    encode_volume,
)

__all__ = [
    "DENSE_BYTES_PER_SAMPLE",
    "EncodedVolume",
    "StoreSummary",
    "VolumeEncodingError",
    "VolumeSample",
    "VolumeStore",
    "VolumeStoreError",
    "VolumeStoreWriter",
    "decode_runs",
    "decode_volume",
    "encode_volume",
]
