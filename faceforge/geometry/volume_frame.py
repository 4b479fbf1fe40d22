"""The coordinate frame shared by volume generation, volume storage and volume-to-mesh conversion.

VRN (Jackson et al., ICCV 2017, Sec. 3.1) regresses a binary occupancy volume aligned with the input image: a
192x192 crop of the image and 200 depth levels. faceforge stores a volume as an array ``(D, H, W) = (200, 192,
192)`` indexed ``[k, v, u]``:

* ``u`` (column) and ``v`` (row) are pixels of the 192x192 crop, x right, y down; pixel centres at integer
  coordinates (pixel (v, u) covers [u - 0.5, u + 0.5] x [v - 0.5, v + 0.5]), as the landmark heatmaps.
* ``k`` is the depth level; larger ``k`` is nearer the camera (the 300W-LP frame: larger z nearer, see
  DESIGN.md). Depth uses the same pixel scale as u and v, times ``depth_scale``, shifted by the per-sample
  ``z_offset`` so the face fits in [0, D).

A point (x, y, z) of a mesh in source-image pixels maps to the volume by the crop's similarity transform
``u = s x + tx``, ``v = s y + ty`` and ``k = depth_scale * s * z + z_offset``. :class:`VolumeFrame` holds these
numbers; volume generation records them next to each volume so that meshes extracted from a volume go back to
source-image pixels with :meth:`VolumeFrame.volume_to_image`.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

#: VRN's volume size (Jackson et al. 2017, Sec. 3.1): 192x192 pixels, 200 depth levels.
VOLUME_SIZE = 192
VOLUME_DEPTH = 200


@dataclass(frozen=True)
class VolumeFrame:
    """Similarity transform from source-image pixels to volume coordinates (u, v, k).

    Attributes:
        scale: s, crop pixels per source pixel.
        tx, ty: translation in crop pixels.
        z_offset: added to the scaled depth, in depth levels.
        depth_scale: depth levels per crop pixel of depth (1.0: isotropic voxels).
        size: crop side H = W in pixels (192).
        depth: number of depth levels D (200).
    """

    scale: float
    tx: float
    ty: float
    z_offset: float
    depth_scale: float = 1.0
    size: int = VOLUME_SIZE
    depth: int = VOLUME_DEPTH

    def image_to_volume(self, points: np.ndarray) -> np.ndarray:
        """Map (N, 3) source-image points (x, y, z pixels) to (N, 3) volume coordinates (u, v, k), float64."""
        p = np.asarray(points, dtype=np.float64)
        out = np.empty_like(p)
        out[:, 0] = self.scale * p[:, 0] + self.tx
        out[:, 1] = self.scale * p[:, 1] + self.ty
        out[:, 2] = self.depth_scale * self.scale * p[:, 2] + self.z_offset
        return out

    def volume_to_image(self, points: np.ndarray) -> np.ndarray:
        """Inverse of :meth:`image_to_volume`: (N, 3) (u, v, k) to source-image (x, y, z) pixels, float64."""
        p = np.asarray(points, dtype=np.float64)
        out = np.empty_like(p)
        out[:, 0] = (p[:, 0] - self.tx) / self.scale
        out[:, 1] = (p[:, 1] - self.ty) / self.scale
        out[:, 2] = (p[:, 2] - self.z_offset) / (self.depth_scale * self.scale)
        return out

    def to_dict(self) -> dict[str, Any]:
        """Plain dict (for HDF5 attributes and JSON)."""
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "VolumeFrame":
        """Inverse of :meth:`to_dict`."""
        return cls(**{k: (int(v) if k in ("size", "depth") else float(v)) for k, v in d.items()})
