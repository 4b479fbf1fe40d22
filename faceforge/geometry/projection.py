"""Pose and projection of 300W-LP / AFLW2000-3D morphable-model fits.

300W-LP and AFLW2000-3D (Zhu et al., "Face Alignment Across Large Poses: A 3D Solution", CVPR 2016) store a
weak-perspective pose ``Pose_Para = [pitch, yaw, roll, tx, ty, tz, s]`` (radians, pixels, pixels per model unit).
The model vertices ``X`` (BFM units, micrometres) map to the image as

    R = Rx(-pitch) @ Ry(-yaw) @ Rz(-roll)
    V = s * X @ R.T + t
    x_img = V_x,   y_img = H + 1 - V_y,   z_img = V_z

This was verified against the ground truth of the released files (``pt2d`` of 300W-LP, ``pt3d_68`` of
AFLW2000-3D): see ``/work/shared/DESIGN.md`` ("Facts we verified"). face3d's ``h - y - 1`` is 2 px off.

The resulting frame (x right, y down, larger z nearer the camera) is a mirror image of a right-handed frame.
Consequence for meshes: the 3DDFA / 300W-LP triangle list (``tri.mat``) is wound so that the cross-product
normals point INTO the head in the model frame (y up), and OUT of it (towards the camera, +z) in this image frame.
Code that needs outward normals in a right-handed frame must swap two indices of every triangle
(:func:`flip_winding`).
"""
from __future__ import annotations

import numpy as np

from faceforge.errors import FaceforgeError

__all__ = ["ProjectionError", "angle2matrix_300wlp", "flip_winding", "project_300wlp", "split_pose_para"]


class ProjectionError(FaceforgeError, ValueError):
    """A pose vector, vertex or triangle array has the wrong shape or non-finite values."""


def _rot_x(a: float) -> np.ndarray:
    c, s = np.cos(a), np.sin(a)
    return np.array([[1.0, 0.0, 0.0], [0.0, c, -s], [0.0, s, c]])


def _rot_y(a: float) -> np.ndarray:
    c, s = np.cos(a), np.sin(a)
    return np.array([[c, 0.0, s], [0.0, 1.0, 0.0], [-s, 0.0, c]])


def _rot_z(a: float) -> np.ndarray:
    c, s = np.cos(a), np.sin(a)
    return np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]])


def angle2matrix_300wlp(pitch: float, yaw: float, roll: float) -> np.ndarray:
    """Rotation matrix of a 300W-LP / AFLW2000-3D pose.

    ``R = Rx(-pitch) @ Ry(-yaw) @ Rz(-roll)`` with the usual right-handed elementary rotations (the 3DDFA
    convention, called ``angle2matrix_3ddfa`` in face3d). Apply it as ``X @ R.T`` to row-vector vertices.

    Args:
        pitch: rotation about x, radians (``Pose_Para[0]``).
        yaw: rotation about y, radians (``Pose_Para[1]``).
        roll: rotation about z, radians (``Pose_Para[2]``).

    Returns:
        (3, 3) float64 orthonormal matrix with determinant +1.

    Raises:
        ProjectionError: if an angle is not finite.
    """
    angles = np.array([pitch, yaw, roll], dtype=np.float64)
    if not np.all(np.isfinite(angles)):
        raise ProjectionError(f"pose angles must be finite, got pitch={pitch}, yaw={yaw}, roll={roll}")
    return _rot_x(-angles[0]) @ _rot_y(-angles[1]) @ _rot_z(-angles[2])


def split_pose_para(pose_para: np.ndarray) -> tuple[np.ndarray, np.ndarray, float]:
    """Split a 300W-LP ``Pose_Para`` into angles, translation and scale.

    Args:
        pose_para: 7 numbers ``[pitch, yaw, roll, tx, ty, tz, s]`` (any shape holding 7 values, e.g. (1, 7)).

    Returns:
        ``(angles (3,) float64 radians, translation (3,) float64 pixels, scale float)``.

    Raises:
        ProjectionError: if it does not hold exactly 7 finite values.
    """
    p = np.asarray(pose_para, dtype=np.float64).reshape(-1)
    if p.size != 7:
        raise ProjectionError(f"pose_para must hold 7 values [pitch, yaw, roll, tx, ty, tz, s], got shape "
                            f"{np.shape(pose_para)}")
    if not np.all(np.isfinite(p)):
        raise ProjectionError(f"pose_para has non-finite values: {p.tolist()}")
    return p[:3].copy(), p[3:6].copy(), float(p[6])


def project_300wlp(vertices: np.ndarray, pose_para: np.ndarray, image_height: float) -> np.ndarray:
    """Project model vertices into the image with a 300W-LP / AFLW2000-3D pose.

    ``V = s * X @ R.T + t`` (:func:`angle2matrix_300wlp`), then ``y_img = H + 1 - V_y``; x is unchanged and z is
    kept as is (larger z is nearer the camera). The returned frame is mirrored (see the module docstring): the
    3DDFA triangles' cross-product normals point towards +z (the camera) there.

    Args:
        vertices: (N, 3) model vertices (BFM units), any float dtype.
        pose_para: ``Pose_Para`` (7 values: radians, pixels, scale).
        image_height: H, the height in pixels of the image the pose refers to (450 for 300W-LP / AFLW2000-3D).

    Returns:
        (N, 3) float64 image coordinates: x right and y down in pixels, z in pixels (same scale).

    Raises:
        ProjectionError: on a malformed pose or vertex array.
    """
    x = np.asarray(vertices, dtype=np.float64)
    if x.ndim != 2 or x.shape[1] != 3:
        raise ProjectionError(f"vertices must be (N, 3), got shape {x.shape}")
    angles, t, s = split_pose_para(pose_para)
    rot = angle2matrix_300wlp(*angles)
    v = s * (x @ rot.T) + t
    v[:, 1] = float(image_height) + 1.0 - v[:, 1]
    return v


def flip_winding(triangles: np.ndarray) -> np.ndarray:
    """Reverse the orientation of every triangle (swap its 2nd and 3rd vertex).

    Args:
        triangles: (F, 3) integer vertex indices.

    Returns:
        (F, 3) copy with the same dtype and reversed winding (cross-product normals negated).
    """
    tri = np.asarray(triangles)
    if tri.ndim != 2 or tri.shape[1] != 3:
        raise ProjectionError(f"triangles must be (F, 3), got shape {tri.shape}")
    return tri[:, [0, 2, 1]].copy()
