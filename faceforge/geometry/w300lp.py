"""Labels of 300W-LP and AFLW2000-3D (Zhu et al., "Face Alignment Across Large Poses: A 3D Solution", CVPR 2016).

Each image ``NAME.jpg`` (450 x 450) has a ``NAME.mat`` holding the 3DMM fit: ``Pose_Para`` (1, 7)
``[pitch, yaw, roll, tx, ty, tz, s]``, ``Shape_Para`` (199, 1) BFM 2009 identity, ``Exp_Para`` (29, 1) 3DDFA
expression, plus texture/illumination parameters we do not use, and landmarks:

* 300W-LP: ``pt2d`` (2, 68) 2D iBUG-68 landmarks in pixels. Its jaw points follow the visible face outline, so at
  large yaw the far-side jaw differs from the model's jaw vertices (compare the 51 inner points there).
* AFLW2000-3D: ``pt3d_68`` (3, 68) 3D landmarks of the fit in image coordinates (x, y pixels; z same scale), and
  ``pt2d`` (2, 21) the original AFLW 21 points (-1 where invisible).
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import scipy.io

from faceforge.errors import FaceforgeError
from faceforge.geometry.morphable_model import MorphableModel
from faceforge.geometry.projection import project_300wlp

__all__ = ["W300LPLabel", "W300LPLabelError", "landmarks_68_from_params", "read_300wlp_mat"]


class W300LPLabelError(FaceforgeError, ValueError):
    """A 300W-LP / AFLW2000-3D ``.mat`` label is missing, unreadable, lacks a key, or holds a bad array."""


@dataclass(frozen=True)
class W300LPLabel:
    """One 300W-LP / AFLW2000-3D label.

    Attributes:
        path: the ``.mat`` file it was read from.
        pose_para: (7,) float64 ``[pitch, yaw, roll (radians), tx, ty, tz (pixels), s (pixels per BFM unit)]``.
        shape_para: (199,) float64 BFM 2009 identity coefficients (multiply the unit-norm ``shapePC`` directly).
        exp_para: (29,) float64 3DDFA expression coefficients.
        pt2d: (68, 2) float64 2D landmarks in pixels (300W-LP), or None.
        pt3d_68: (68, 3) float64 3D landmarks in image coordinates (AFLW2000-3D), or None.
        pt2d_21: (21, 2) float64 AFLW 21-point landmarks (AFLW2000-3D; -1 marks invisible points), or None.
        roi: (4,) float64 box ``[x0, y0, x1, y1]`` in pixels as stored (may exceed the image), or None.
    """

    path: str
    pose_para: np.ndarray
    shape_para: np.ndarray
    exp_para: np.ndarray
    pt2d: np.ndarray | None = None
    pt3d_68: np.ndarray | None = None
    pt2d_21: np.ndarray | None = None
    roi: np.ndarray | None = None

    @property
    def pitch_yaw_roll(self) -> tuple[float, float, float]:
        """The pose angles ``(pitch, yaw, roll)`` in radians."""
        return float(self.pose_para[0]), float(self.pose_para[1]), float(self.pose_para[2])

    @property
    def landmarks_2d(self) -> np.ndarray | None:
        """(68, 2) float64 ground-truth 2D landmarks: ``pt2d`` (300W-LP) or the xy of ``pt3d_68`` (AFLW2000-3D)."""
        if self.pt2d is not None:
            return self.pt2d
        if self.pt3d_68 is not None:
            return self.pt3d_68[:, :2]
        return None


def _fail(path: Path, key: str | None, what: str) -> W300LPLabelError:
    return W300LPLabelError(f"{path}{f' [{key}]' if key else ''}: {what}")


def _vector(data: dict, path: Path, key: str, size: int) -> np.ndarray:
    if key not in data:
        found = sorted(k for k in data if not k.startswith("__"))
        raise _fail(path, key, f"missing key (found {found})")
    arr = np.asarray(data[key])
    if arr.size != size or (arr.ndim == 2 and 1 not in arr.shape) or arr.ndim > 2:
        raise _fail(path, key, f"expected {size} values as (1, {size}), ({size}, 1) or ({size},), "
                               f"got shape {arr.shape}")
    if not np.issubdtype(arr.dtype, np.number):
        raise _fail(path, key, f"expected numbers, got dtype {arr.dtype}")
    out = arr.astype(np.float64).reshape(-1)
    if not np.all(np.isfinite(out)):
        raise _fail(path, key, "contains NaN or inf")
    return out


def _points(arr: np.ndarray, path: Path, key: str, dims: int, count: int) -> np.ndarray:
    arr = np.asarray(arr)
    if arr.shape == (dims, count):
        arr = arr.T
    elif arr.shape != (count, dims):
        raise _fail(path, key, f"expected ({dims}, {count}), got shape {arr.shape}")
    if not np.issubdtype(arr.dtype, np.number):
        raise _fail(path, key, f"expected numbers, got dtype {arr.dtype}")
    out = np.ascontiguousarray(arr, dtype=np.float64)
    if not np.all(np.isfinite(out)):
        raise _fail(path, key, "contains NaN or inf")
    return out


def read_300wlp_mat(path: str | os.PathLike) -> W300LPLabel:
    """Read and validate a 300W-LP or AFLW2000-3D ``.mat`` label.

    Required keys: ``Pose_Para`` (7 values), ``Shape_Para`` (199), ``Exp_Para`` (29). Optional: ``pt2d``
    ((2, 68) for 300W-LP, (2, 21) for AFLW2000-3D), ``pt3d_68`` (3, 68), ``roi`` (4 values). All must be finite.

    Args:
        path: the ``.mat`` file (MATLAB v5/v7, as released).

    Returns:
        W300LPLabel with float64 arrays, points as (K, D) rows.

    Raises:
        W300LPLabelError: naming the file and key when the file is missing or unreadable, a required key is
            missing, an array has the wrong shape, or a value is NaN / inf.
    """
    p = Path(path)
    if not p.is_file():
        raise _fail(p, None, "file not found")
    if p.stat().st_size == 0:
        raise _fail(p, None, "not a readable MATLAB .mat file (empty file, 0 bytes)")
    try:
        data = scipy.io.loadmat(str(p))
    except Exception as exc:  # noqa: BLE001 - scipy raises MatReadError, ValueError, NotImplementedError (v7.3), ...
        raise _fail(p, None, f"not a readable MATLAB .mat file ({type(exc).__name__}: {exc})") from exc

    pose = _vector(data, p, "Pose_Para", 7)
    shape = _vector(data, p, "Shape_Para", 199)
    exp = _vector(data, p, "Exp_Para", 29)
    pt2d = pt2d_21 = pt3d = roi = None
    if "pt2d" in data:
        raw = np.asarray(data["pt2d"])
        if raw.shape in ((2, 21), (21, 2)):
            pt2d_21 = _points(raw, p, "pt2d", 2, 21)
        else:
            pt2d = _points(raw, p, "pt2d", 2, 68)
    if "pt3d_68" in data:
        pt3d = _points(data["pt3d_68"], p, "pt3d_68", 3, 68)
    if "roi" in data:
        roi = _vector(data, p, "roi", 4)
    return W300LPLabel(path=str(p), pose_para=pose, shape_para=shape, exp_para=exp, pt2d=pt2d, pt3d_68=pt3d,
                       pt2d_21=pt2d_21, roi=roi)


def landmarks_68_from_params(label: W300LPLabel, model: MorphableModel, image_height: float) -> np.ndarray:
    """The 68 landmarks of a label's 3DMM fit, projected into its image.

    With the 3DDFA 68-point bases (:func:`faceforge.geometry.morphable_model.load_3ddfa_mean_shape`) the first 40
    ``Shape_Para`` and 10 ``Exp_Para`` apply directly (x1); with a full model all of them do. Then
    :func:`faceforge.geometry.projection.project_300wlp`.

    Args:
        label: a label from :func:`read_300wlp_mat`.
        model: a morphable model with landmark (or dense) bases.
        image_height: the image height in pixels (450 for 300W-LP / AFLW2000-3D).

    Returns:
        (68, 3) float64 image coordinates (x right, y down, pixels; z larger nearer the camera).

    Raises:
        faceforge.geometry.morphable_model.MorphableModelError: if the model lacks the bases.
    """
    lmk = model.landmarks(label.shape_para, label.exp_para)
    return project_300wlp(lmk, label.pose_para, image_height)
