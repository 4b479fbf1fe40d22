"""The error of 3D dataset preparation (300W-LP / AFLW2000-3D -> VRN volumes)."""
from __future__ import annotations

from faceforge.errors import FaceforgeError

__all__ = ["VolumeGenerationError"]


class VolumeGenerationError(FaceforgeError, ValueError):
    """Bad arguments or inputs that stop a whole run (missing root, duplicate sample ids, unusable model)."""
