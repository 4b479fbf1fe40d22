"""The embedded 3D reconstruction dataset: procedural 3D faces with exact ground-truth volumes and landmarks.

:func:`build_synthetic_reconstruction` writes exactly what volume generation
(:func:`faceforge.data.reconstruction.generation.generate_volumes`) writes for 300W-LP: volume store shards
(:class:`~faceforge.data.reconstruction.store.VolumeStoreWriter`), ``volume_index.csv`` with the same columns
(:data:`~faceforge.data.reconstruction.volume_index.INDEX_COLUMNS`) and ``volume_report.json``, so ``data=synthetic_3d``
runs the same data module, augmentation and task code as ``data=w300lp``. It needs no external file.

The face model (our own parametric surface, in face units; x right, y down, z towards the camera):

* **Shape.** A height field over the ellipse ``x^2 + (y / b)^2 <= 1`` (half-width 1, half-height ``b``): a
  flattened ellipsoid cap ``z = c sqrt(1 - r^4)`` (``r`` the normalised radius: the face's front is flat and its
  sides steep, down to ``z = 0`` at the rim) plus Gaussian features whose sizes and positions are random per
  identity: eye sockets and eyeballs, brow ridges, a nose ridge growing towards the tip with nostril wings,
  cheeks, upper and lower lips with a mouth groove, and a chin. Everything is placed relative to one set of
  parameters (:class:`FaceShape`), the same ones that place the landmarks.
* **Mesh.** A fixed structured grid over the unit disk (vertices outside it moved onto the rim), scaled by ``b``
  in y and lifted to ``z = f(x, y)``: the same topology for every identity at a given resolution.
* **Landmarks.** 68 points with iBUG semantics (jaw 0-16 along the lower face, brows 17-26, nose bridge 27-30,
  nostrils 31-35, eyes 36-47 with 36/45 the outer corners, outer lips 48-59, inner lips 60-67), placed on the
  identity's feature curves in (x, y) and lifted ONTO THE MESH (barycentric interpolation in the grid triangle that
  holds them), so each landmark is exactly a point of the voxelised surface, visible or not (like the 3D model
  landmarks of AFLW2000-3D's ``pt3d_68``).
* **Pose.** ``R = Rz(roll) Rx(pitch) Ry(yaw)`` (positive yaw turns the face towards the image's right), yaw
  uniform in ``+-max_yaw_deg`` (75 by default in the dataset builder), pitch +-20 and roll +-15 degrees, placed
  in a nominal 450x450 "source image" frame like 300W-LP's (``x_src = s R X + t``, larger z nearer the camera).
* **Crop and volume, as for real data.** :func:`~faceforge.geometry.voxelize.crop_frame_from_points` (the face
  box + 10 % margin scaled to ``size``, the rear-most vertex at depth level 2), then moved and resized as a face
  detector's box varies (:func:`jitter_crop_frame`: the crop side times 0.85-1.2, shifted by up to 6 % of it per
  axis; without this every face filled the crop alike and the mean training volume scored IoU 0.78), and
  :func:`~faceforge.geometry.voxelize.face_columns` (the z-buffer of the mesh; voxel ``(k, v, u)`` filled iff on
  or behind the visible surface). Landmarks are stored in crop pixels (``landmarks``) and volume coordinates
  (``landmarks_3d``), the frame maps both back to the source frame.
* **Image.** Rendered in the crop with the same z-buffer (:func:`~faceforge.geometry.voxelize.rasterize_depth`) at
  ``supersample`` x resolution: each covered pixel's surface point is mapped back to face coordinates, which give
  its albedo (skin with a mild texture, hair above a hairline for some identities, sclera, iris and pupil, brows,
  nostrils, lips, an open mouth's dark interior) and its exact surface normal (Lambert + ambient + Blinn-Phong
  light from a random direction); a smooth random background, 2x2 box down-sampling, sensor noise. Stored as JPEG
  (quality 95), as generated 300W-LP crops are.

Everything is drawn from ``numpy.random.default_rng([seed, i])`` for sample ``i``: the dataset is deterministic
per seed (and does not depend on ``workers``); the default (512 samples of 64x64, 64 depth levels) builds in a
few seconds. Splits: a seeded permutation puts ``val_fraction`` and ``test_fraction`` of the samples (each face is
a new identity) in ``val`` and ``test``.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import logging
import math
import os
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from faceforge.data.core.prepared import PREPARE_REPORT, make_report
from faceforge.data.core.runner import run_parallel
from faceforge.data.detection.face_index import format_landmarks
from faceforge.data.reconstruction.codec import EncodedVolume
from faceforge.data.reconstruction.generation import REPORT_FILENAME
from faceforge.data.reconstruction.store import VolumeSample, VolumeStoreWriter, encode_image
from faceforge.data.reconstruction.volume_index import INDEX_FILENAME, write_volume_index
from faceforge.errors import BuilderSettingsError as SettingsError
from faceforge.geometry.volume_frame import VolumeFrame
from faceforge.geometry.voxelize import FaceColumns, crop_frame_from_points, face_columns, rasterize_depth
from faceforge.utils.atomic import atomic_write_json

__all__ = [
    "FaceAppearance",
    "FacePose",
    "FaceShape",
    "SyntheticFace",
    "build_synthetic_reconstruction",
    "face_grid",
    "landmark_template",
    "rotation_matrix",
    "sample_appearance",
    "sample_pose",
    "sample_shape",
    "surface_height",
    "synthesize_face",
]

log = logging.getLogger(__name__)

GENERATOR = "faceforge.data.reconstruction.synthetic.build_synthetic_reconstruction"
GENERATOR_VERSION = 2  # 2: crop placement jitter, yaw up to 75 degrees
DATASET = "synthetic_3d"
#: Side of the nominal source frame the faces are posed in (300W-LP's images are 450x450).
SOURCE_SIZE = 450
#: Normalised radius of the jaw landmarks (keeps their grid cells clear of the rim).
JAW_RADIUS = 0.86


# ---------------------------------------------------------------------------------------------------------------
# Parameters
# ---------------------------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class FaceShape:
    """Shape parameters of one identity, in face units (half face width = 1; x right, y down).

    Attributes:
        half_height: ``b``, half the face height (the face domain is ``x^2 + (y/b)^2 <= 1``).
        depth: ``c``, the depth of the face cap at its centre.
        eye_y, eye_dx, eye_w, eye_h: eye centre height, horizontal offset of each eye centre, half-width and
            half-height of the eye opening.
        brow_y, brow_in, brow_out, brow_arch: brow height, inner and outer |x| ends, arch height.
        nose_tip_y, nose_height, nose_w: height of the nose tip, its protrusion, half-width of the nostrils.
        mouth_y, mouth_w, lip_upper, lip_lower, mouth_open: mouth line height, half-width, upper and lower lip
            thickness, lip gap.
        chin, cheek: protrusion of the chin and the cheeks.
        gaze: horizontal offset of the irises (fraction of the eye half-width).
    """

    half_height: float
    depth: float
    eye_y: float
    eye_dx: float
    eye_w: float
    eye_h: float
    brow_y: float
    brow_in: float
    brow_out: float
    brow_arch: float
    nose_tip_y: float
    nose_height: float
    nose_w: float
    mouth_y: float
    mouth_w: float
    lip_upper: float
    lip_lower: float
    mouth_open: float
    chin: float
    cheek: float
    gaze: float


@dataclass(frozen=True)
class FaceAppearance:
    """Colours (RGB in [0, 1]) and lighting of one rendered face.

    Attributes:
        skin, hair, iris, lips, brows: albedos.
        hairline: face-unit y above which hair covers the head (``-inf``: no hair).
        light: unit light direction (x right, y down, z towards the camera).
        ambient, diffuse, specular, shininess: shading weights (Lambert + ambient + Blinn-Phong).
        texture_phase: phases of the skin texture.
        background_seed: seed of the background field.
        noise_sigma: sensor noise (0..255 units).
    """

    skin: tuple[float, float, float]
    hair: tuple[float, float, float]
    iris: tuple[float, float, float]
    lips: tuple[float, float, float]
    brows: tuple[float, float, float]
    hairline: float
    light: tuple[float, float, float]
    ambient: float
    diffuse: float
    specular: float
    shininess: float
    texture_phase: tuple[float, float, float]
    background_seed: int
    noise_sigma: float


@dataclass(frozen=True)
class FacePose:
    """Pose of the face in the nominal source frame.

    Attributes:
        yaw, pitch, roll: radians (``R = Rz(roll) Rx(pitch) Ry(yaw)``; positive yaw turns the face to the image's
            right).
        scale: source pixels per face unit.
        cx, cy: source-frame position of the face centre, pixels.
    """

    yaw: float
    pitch: float
    roll: float
    scale: float
    cx: float
    cy: float


def _u(rng: np.random.Generator, lo: float, hi: float) -> float:
    return float(rng.uniform(lo, hi))


def sample_shape(rng: np.random.Generator) -> FaceShape:
    """Draw a random identity's shape (ranges keep every landmark clear of the face rim)."""
    eye_y = _u(rng, -0.32, -0.18)
    nose_tip_y = _u(rng, 0.18, 0.3)
    return FaceShape(
        half_height=_u(rng, 1.2, 1.4), depth=_u(rng, 0.7, 0.95),
        eye_y=eye_y, eye_dx=_u(rng, 0.36, 0.44), eye_w=_u(rng, 0.13, 0.17), eye_h=_u(rng, 0.045, 0.07),
        brow_y=eye_y - _u(rng, 0.2, 0.27), brow_in=_u(rng, 0.1, 0.16), brow_out=_u(rng, 0.62, 0.72),
        brow_arch=_u(rng, 0.02, 0.07),
        nose_tip_y=nose_tip_y, nose_height=_u(rng, 0.22, 0.4), nose_w=_u(rng, 0.15, 0.21),
        mouth_y=nose_tip_y + _u(rng, 0.28, 0.36), mouth_w=_u(rng, 0.26, 0.36), lip_upper=_u(rng, 0.04, 0.07),
        lip_lower=_u(rng, 0.05, 0.09), mouth_open=0.0 if rng.random() < 0.5 else _u(rng, 0.01, 0.08),
        chin=_u(rng, 0.04, 0.12), cheek=_u(rng, 0.02, 0.08), gaze=_u(rng, -0.3, 0.3))


def _colour(rng: np.random.Generator, lo: Sequence[float], hi: Sequence[float]) -> tuple[float, float, float]:
    return tuple(float(rng.uniform(a, b)) for a, b in zip(lo, hi))  # type: ignore[return-value]


def sample_appearance(rng: np.random.Generator) -> FaceAppearance:
    """Draw colours and lighting."""
    tone = rng.uniform(0.0, 1.0)  # dark .. light skin
    skin = tuple(float(np.clip(v, 0, 1)) for v in
                 np.array([0.36, 0.22, 0.15]) + tone * np.array([0.52, 0.5, 0.45]) + rng.uniform(-0.04, 0.04, 3))
    hair = tuple(float(v) for v in rng.uniform(0.04, 0.6) * np.array([1.0, 0.78, 0.58]) + rng.uniform(0, 0.04, 3))
    light = np.array([rng.uniform(-0.7, 0.7), rng.uniform(-0.7, 0.3), rng.uniform(0.5, 1.0)])
    light /= np.linalg.norm(light)
    lips = tuple(float(np.clip(s * f, 0, 1)) for s, f in zip(skin, rng.uniform([0.95, 0.55, 0.55], [1.2, 0.8, 0.8])))
    return FaceAppearance(
        skin=skin, hair=hair, iris=_colour(rng, (0.05, 0.05, 0.05), (0.45, 0.4, 0.35)),  # type: ignore[arg-type]
        lips=lips, brows=tuple(float(0.6 * h + 0.05) for h in hair),  # type: ignore[arg-type]
        hairline=-math.inf if rng.random() < 0.35 else _u(rng, -1.15, -0.8),
        light=tuple(float(v) for v in light), ambient=_u(rng, 0.3, 0.55),  # type: ignore[arg-type]
        diffuse=_u(rng, 0.45, 0.75), specular=_u(rng, 0.0, 0.15), shininess=_u(rng, 8.0, 30.0),
        texture_phase=tuple(float(v) for v in rng.uniform(0, 2 * math.pi, 3)),  # type: ignore[arg-type]
        background_seed=int(rng.integers(0, 2 ** 31)), noise_sigma=_u(rng, 1.0, 4.0))


def sample_pose(rng: np.random.Generator, max_yaw_deg: float = 60.0, max_pitch_deg: float = 20.0,
                max_roll_deg: float = 15.0) -> FacePose:
    """Draw a pose: yaw, pitch, roll uniform in +- the limits (degrees), scale and position in the source frame."""
    return FacePose(yaw=math.radians(_u(rng, -max_yaw_deg, max_yaw_deg)),
                    pitch=math.radians(_u(rng, -max_pitch_deg, max_pitch_deg)),
                    roll=math.radians(_u(rng, -max_roll_deg, max_roll_deg)), scale=_u(rng, 60.0, 80.0),
                    cx=SOURCE_SIZE / 2 + _u(rng, -20.0, 20.0), cy=SOURCE_SIZE / 2 + _u(rng, -20.0, 20.0))


# ---------------------------------------------------------------------------------------------------------------
# Surface, landmarks, mesh
# ---------------------------------------------------------------------------------------------------------------

def _gauss(x: np.ndarray, y: np.ndarray, cx: float, cy: float, sx: float, sy: float) -> np.ndarray:
    return np.exp(-0.5 * (((x - cx) / sx) ** 2 + ((y - cy) / sy) ** 2))


def surface_height(shape: FaceShape, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Height ``z = f(x, y)`` of the face surface (face units; 0 on and outside the rim).

    Args:
        shape: the identity.
        x, y: face coordinates (arrays of one shape).

    Returns:
        float64 array of ``x``'s shape.
    """
    s = shape
    x = np.asarray(x, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    r2 = x ** 2 + (y / s.half_height) ** 2
    base = s.depth * np.sqrt(np.clip(1.0 - r2 ** 2, 0.0, None))
    ax = np.abs(x)
    feat = -0.10 * _gauss(ax, y, s.eye_dx, s.eye_y, 0.17, 0.12)  # eye sockets
    feat += 0.045 * _gauss(ax, y, s.eye_dx, s.eye_y, 0.7 * s.eye_w, 1.6 * s.eye_h)  # eyeballs
    feat += 0.06 * np.exp(-0.5 * ((y - s.brow_y) / 0.06) ** 2) * _gauss(ax, y, 0.45, s.brow_y, 0.28, 1.0)
    root = s.eye_y - 0.03
    t = np.clip((y - root) / (s.nose_tip_y - root), 0.0, 1.0)
    below = np.clip(y - s.nose_tip_y, 0.0, None)
    sigma = s.nose_w * (0.3 + 0.25 * t)
    feat += s.nose_height * (0.3 + 0.7 * t ** 1.5) * np.exp(-0.5 * (x / sigma) ** 2) \
        * np.exp(-0.5 * (below / 0.05) ** 2) * (y > root - 0.1)
    feat += 0.07 * _gauss(ax, y, 0.8 * s.nose_w, s.nose_tip_y + 0.04, 0.07, 0.06)  # nostril wings
    feat += s.cheek * _gauss(ax, y, 0.5, s.nose_tip_y, 0.22, 0.22)
    feat += 0.06 * _gauss(x, y, 0.0, s.mouth_y - 0.5 * s.lip_upper, 0.75 * s.mouth_w, 0.8 * s.lip_upper)
    feat += 0.07 * _gauss(x, y, 0.0, s.mouth_y + s.mouth_open + 0.5 * s.lip_lower, 0.65 * s.mouth_w,
                          0.8 * s.lip_lower)
    feat -= 0.03 * _gauss(x, y, 0.0, s.mouth_y + 0.5 * s.mouth_open, 0.8 * s.mouth_w, 0.02 + 0.5 * s.mouth_open)
    feat += s.chin * _gauss(x, y, 0.0, 0.8 * s.half_height, 0.22, 0.13)
    window = np.clip((1.0 - r2) / 0.25, 0.0, 1.0)
    window = window * window * (3.0 - 2.0 * window)  # smoothstep: features vanish at the rim
    return base + feat * window


def _q(x: np.ndarray, half_width: float) -> np.ndarray:
    return np.sqrt(np.clip(1.0 - (x / half_width) ** 2, 0.0, None))


def _upper_lip(s: FaceShape, x: np.ndarray) -> np.ndarray:
    """Outer contour of the upper lip (with a cupid's bow dip at the centre)."""
    return s.mouth_y - s.lip_upper * _q(x, s.mouth_w) * (1.0 - 0.15 * np.exp(-0.5 * (x / (0.1 * s.mouth_w)) ** 2))


def _upper_inner(s: FaceShape, x: np.ndarray) -> np.ndarray:
    """Inner contour of the upper lip (the mouth line; opening the mouth moves the lower lip down)."""
    return s.mouth_y - 0.008 * _q(x, 0.85 * s.mouth_w)


def _lower_inner(s: FaceShape, x: np.ndarray) -> np.ndarray:
    return s.mouth_y + (0.008 + s.mouth_open) * _q(x, 0.85 * s.mouth_w)


def _lower_lip(s: FaceShape, x: np.ndarray) -> np.ndarray:
    """Outer contour of the lower lip."""
    return s.mouth_y + s.mouth_open * _q(x, 0.85 * s.mouth_w) + s.lip_lower * _q(x, s.mouth_w)


def _brow_curve(s: FaceShape, ax: np.ndarray) -> np.ndarray:
    t = np.clip((ax - s.brow_in) / (s.brow_out - s.brow_in), 0.0, 1.0)
    return s.brow_y - s.brow_arch * np.sin(np.pi * t)


def landmark_template(shape: FaceShape) -> np.ndarray:
    """The 68 landmarks of an identity in face coordinates (x, y), iBUG-68 order and semantics.

    Jaw 0-16 from the image-left ear level down around the chin (8) to the image-right side, at normalised radius
    :data:`JAW_RADIUS`; brows 17-21 (image-left, outer to inner) and 22-26 (inner to outer) on the brow curves;
    nose bridge 27-30 down to the tip; nostrils 31-35 left to right; eyes 36-41 (image-left: outer corner 36,
    upper lid 37-38, inner corner 39, lower lid 40-41) and 42-47 (inner corner 42, upper 43-44, outer corner 45,
    lower 46-47); outer lips 48-59 from the left corner over the upper lip to 54 and back along the lower lip;
    inner lips 60-67 likewise.

    Returns:
        (68, 2) float64.
    """
    s = shape
    pts = np.zeros((68, 2))
    phi = np.radians(np.linspace(172.0, 8.0, 17))
    pts[0:17] = np.c_[JAW_RADIUS * np.cos(phi), JAW_RADIUS * s.half_height * np.sin(phi)]
    bx = np.linspace(s.brow_out, s.brow_in, 5)
    pts[17:22] = np.c_[-bx, _brow_curve(s, bx)]
    pts[22:27] = np.c_[bx[::-1], _brow_curve(s, bx[::-1])]
    pts[27:31] = np.c_[np.zeros(4), np.linspace(s.eye_y - 0.03, s.nose_tip_y, 4)]
    nx = np.array([-0.75, -0.4, 0.0, 0.4, 0.75]) * s.nose_w
    pts[31:36] = np.c_[nx, s.nose_tip_y + 0.08 - 0.02 * (np.abs(nx) < 1e-9)]
    w, h = s.eye_w, s.eye_h
    # the same offsets for both eyes: 36 outer (-x), 37-38 upper lid, 39 inner, 40-41 lower lid (right to left);
    # 42 inner (-x), 43-44 upper lid, 45 outer, 46-47 lower lid: mirror images of each other
    ring = [(-w, 0.0), (-w / 3, -h), (w / 3, -h), (w, 0.0), (w / 3, h), (-w / 3, h)]
    for centre, first in ((-s.eye_dx, 36), (s.eye_dx, 42)):
        for k, (dx, dy) in enumerate(ring):
            pts[first + k] = (centre + dx, s.eye_y + dy)
    ox = np.array([-1.0, -0.6, -0.25, 0.0, 0.25, 0.6, 1.0]) * s.mouth_w
    pts[48:55] = np.c_[ox, _upper_lip(s, ox)]
    lx = np.array([0.6, 0.25, 0.0, -0.25, -0.6]) * s.mouth_w
    pts[55:60] = np.c_[lx, _lower_lip(s, lx)]
    ix = np.array([-0.85, -0.35, 0.0, 0.35, 0.85]) * s.mouth_w
    pts[60:65] = np.c_[ix, _upper_inner(s, ix)]
    jx = np.array([0.35, 0.0, -0.35]) * s.mouth_w
    pts[65:68] = np.c_[jx, _lower_inner(s, jx)]
    return pts


@dataclass(frozen=True)
class FaceGrid:
    """A structured triangle grid over the unit disk (normalised face coordinates ``(x, y / b)``).

    Attributes:
        n: cells across the diameter.
        points: (N, 2) float64 vertex positions; grid vertices outside the disk are moved radially onto it.
        triangles: (F, 3) int64.
        vertex_of: (n + 1, n + 1) int64 grid node (i = column, j = row) -> vertex index, -1 if unused.
        moved: (N,) bool, vertices moved onto the rim.
    """

    n: int
    points: np.ndarray
    triangles: np.ndarray
    vertex_of: np.ndarray
    moved: np.ndarray

    @property
    def step(self) -> float:
        """Grid spacing in normalised units."""
        return 2.0 / self.n

    def locate(self, points: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Triangles holding (K, 2) normalised points and their barycentric weights.

        Returns:
            ``(vertex indices (K, 3) int64, weights (K, 3) float64)``.

        Raises:
            ValueError: if a point lies outside the grid or in a cell touching the rim (moved vertices).
        """
        p = np.asarray(points, dtype=np.float64)
        g = (p + 1.0) / self.step
        ij = np.floor(g).astype(np.int64)
        f = g - ij
        i, j = ij[:, 0], ij[:, 1]
        if np.any((i < 0) | (j < 0) | (i >= self.n) | (j >= self.n)):
            raise ValueError("landmark outside the face grid")
        a = self.vertex_of[j, i]
        b = self.vertex_of[j, i + 1]
        c = self.vertex_of[j + 1, i + 1]
        d = self.vertex_of[j + 1, i]
        lower = f[:, 0] >= f[:, 1]  # triangle (a, b, c) else (a, c, d)
        idx = np.where(lower[:, None], np.c_[a, b, c], np.c_[a, c, d])
        w = np.where(lower[:, None], np.c_[1.0 - f[:, 0], f[:, 0] - f[:, 1], f[:, 1]],
                     np.c_[1.0 - f[:, 1], f[:, 0], f[:, 1] - f[:, 0]])
        if np.any(idx < 0) or np.any(self.moved[idx]):
            raise ValueError("landmark in a grid cell that touches the face rim")
        return idx, w


@lru_cache(maxsize=8)
def face_grid(n: int) -> FaceGrid:
    """The (cached) structured grid with ``n`` cells across the unit disk (see :class:`FaceGrid`).

    A cell contributes its two triangles (split along the main diagonal) when one of their vertices lies strictly
    inside the disk; outside vertices of kept triangles are moved onto the circle (a smooth rim).

    Raises:
        ValueError: if ``n < 8``.
    """
    if n < 8:
        raise ValueError(f"face grid needs at least 8 cells, got {n}")
    ax = np.linspace(-1.0, 1.0, n + 1)
    gx, gy = np.meshgrid(ax, ax)  # [row j, column i]
    node = np.arange((n + 1) ** 2).reshape(n + 1, n + 1)
    a, b = node[:-1, :-1].ravel(), node[:-1, 1:].ravel()
    c, d = node[1:, 1:].ravel(), node[1:, :-1].ravel()
    tri = np.concatenate([np.c_[a, b, c], np.c_[a, c, d]])
    r = np.hypot(gx, gy).ravel()
    tri = tri[(r[tri] < 1.0 - 1e-9).any(axis=1)]
    used = np.unique(tri)
    vertex_of = np.full((n + 1) ** 2, -1, dtype=np.int64)
    vertex_of[used] = np.arange(used.size)
    pts = np.c_[gx.ravel(), gy.ravel()][used]
    rad = np.hypot(pts[:, 0], pts[:, 1])
    moved = rad > 1.0
    pts[moved] /= rad[moved, None]
    return FaceGrid(n=n, points=pts, triangles=vertex_of[tri], vertex_of=vertex_of.reshape(n + 1, n + 1),
                    moved=moved)


def rotation_matrix(yaw: float, pitch: float, roll: float) -> np.ndarray:
    """``R = Rz(roll) @ Rx(pitch) @ Ry(yaw)`` in the x-right, y-down, z-towards-camera frame, (3, 3) float64."""
    cy, sy = math.cos(yaw), math.sin(yaw)
    cp, sp = math.cos(pitch), math.sin(pitch)
    cr, sr = math.cos(roll), math.sin(roll)
    ry = np.array([[cy, 0, sy], [0, 1, 0], [-sy, 0, cy]])
    rx = np.array([[1, 0, 0], [0, cp, -sp], [0, sp, cp]])
    rz = np.array([[cr, -sr, 0], [sr, cr, 0], [0, 0, 1]])
    return rz @ rx @ ry


# ---------------------------------------------------------------------------------------------------------------
# One face
# ---------------------------------------------------------------------------------------------------------------

@dataclass
class SyntheticFace:
    """One generated sample and everything it was made from.

    Attributes:
        image: (size, size, 3) uint8 RGB crop.
        frame: source frame -> volume coordinates.
        columns: the voxelised face (height map = the volume, z-buffer ``front``, ``mask``, clipping counts).
        landmarks: (68, 2) float64 crop pixels.
        landmarks_3d: (68, 3) float64 volume coordinates (u, v, k), points of the voxelised surface.
        landmarks_src: (68, 3) float64 source-frame pixels.
        vertices_src: (N, 3) float64 mesh vertices in the source frame.
        triangles: (F, 3) int64.
        shape, appearance, pose: the parameters.
    """

    image: np.ndarray
    frame: VolumeFrame
    columns: FaceColumns
    landmarks: np.ndarray
    landmarks_3d: np.ndarray
    landmarks_src: np.ndarray
    vertices_src: np.ndarray
    triangles: np.ndarray
    shape: FaceShape
    appearance: FaceAppearance
    pose: FacePose

    @property
    def encoded(self) -> EncodedVolume:
        """The volume as runs ``[0, height)``."""
        return EncodedVolume.from_heights(self.columns.height, self.columns.depth)


def _albedo(s: FaceShape, a: FaceAppearance, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """(N, 3) albedo at face coordinates."""
    ax = np.abs(x)
    skin = np.asarray(a.skin)
    tex = 1.0 + 0.04 * np.sin(7.0 * x + a.texture_phase[0]) * np.sin(9.0 * y + a.texture_phase[1]) \
        + 0.02 * np.sin(23.0 * x + 17.0 * y + a.texture_phase[2])
    col = skin[None] * tex[:, None]
    blush = _gauss(ax, y, 0.5, s.nose_tip_y, 0.2, 0.15)[:, None]
    col = col * (1.0 + blush * np.array([0.06, -0.04, -0.04]))

    def paint(mask: np.ndarray, colour: Any) -> None:
        col[mask] = np.asarray(colour, dtype=np.float64)

    # brows
    bt = np.clip((ax - s.brow_in) / (s.brow_out - s.brow_in), 0.0, 1.0)
    thick = 0.035 * (1.25 - 0.6 * bt)
    paint((ax >= s.brow_in) & (ax <= s.brow_out) & (np.abs(y - _brow_curve(s, ax)) < thick), a.brows)
    # eyes: sclera, iris, pupil, lid line
    ex = np.where(x < 0, -s.eye_dx, s.eye_dx)
    e = ((x - ex) / s.eye_w) ** 2 + ((y - s.eye_y) / s.eye_h) ** 2
    paint((e >= 1.0) & (e < 1.35), skin * 0.3)
    paint(e < 1.0, (0.93, 0.91, 0.88))
    rr = np.hypot(x - ex - s.gaze * s.eye_w * 0.5, y - s.eye_y)
    paint((e < 1.0) & (rr < 0.95 * s.eye_h), a.iris)
    paint((e < 1.0) & (rr < 0.4 * s.eye_h), (0.03, 0.03, 0.03))
    # nostrils
    paint(((ax - 0.42 * s.nose_w) / 0.045) ** 2 + ((y - s.nose_tip_y - 0.065) / 0.022) ** 2 < 1.0, skin * 0.25)
    # lips and the mouth interior
    inside = ax < s.mouth_w
    paint(inside & (y >= _upper_lip(s, x)) & (y <= _lower_lip(s, x)), a.lips)
    if s.mouth_open > 0:
        paint(inside & (y > _upper_inner(s, x)) & (y < _lower_inner(s, x) - 0.008), (0.25, 0.06, 0.06))
    # hair above the hairline (wavy)
    if math.isfinite(a.hairline):
        paint(y < a.hairline + 0.06 * np.sin(5.0 * x + a.texture_phase[0]), a.hair)
    return col


def _background(seed: int, size: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    coarse = rng.uniform(0.05, 0.95, size=(3, 3, 3))
    coarse = (0.6 * coarse + 0.4 * coarse.mean(axis=2, keepdims=True)).astype(np.float32)  # less saturated
    field = cv2.resize(coarse, (size, size), interpolation=cv2.INTER_CUBIC)
    fine = cv2.resize(rng.uniform(-1, 1, size=(12, 12, 3)).astype(np.float32), (size, size),
                      interpolation=cv2.INTER_LINEAR)
    return np.clip(field + 0.05 * fine, 0.0, 1.0).astype(np.float64)


def _grid_cells(size: int) -> int:
    """Grid resolution: about one cell per 1.3 crop pixels, 32..96 cells."""
    return int(np.clip(round(size / 2), 32, 96))


def jitter_crop_frame(frame: VolumeFrame, points: np.ndarray, crop_scale: float, shift: tuple[float, float],
                      z_margin: float = 2.0) -> VolumeFrame:
    """Move and resize a crop frame as a face detector's box would, about the crop centre.

    The crop's side (in source pixels) is multiplied by ``crop_scale`` (> 1: a looser crop, a smaller face) and
    the crop is shifted by ``shift`` (fractions of its side, x and y), so that the face lands about
    ``-shift * size / crop_scale`` crop pixels from where
    :func:`~faceforge.geometry.voxelize.crop_frame_from_points` puts it.
    The depth placement is recomputed with the new scale (the rear-most point at level ``z_margin``), so voxels
    stay isotropic.

    Args:
        frame: the tight frame of the face box.
        points: (N, 3) source-image points the depth placement refers to (the mesh vertices), pixels.
        crop_scale: factor on the crop side (> 0).
        shift: (dx, dy) fractions of the crop side.
        z_margin: depth level of the rear-most point.

    Returns:
        The jittered :class:`~faceforge.geometry.volume_frame.VolumeFrame`.

    Raises:
        ValueError: if ``crop_scale`` is not positive.
    """
    if not crop_scale > 0:
        raise ValueError(f"crop_scale must be > 0, got {crop_scale}")
    half = (frame.size - 1) / 2.0
    s = frame.scale / float(crop_scale)
    # the source point that the tight frame maps to the crop centre, moved by the shift
    cx = (half - frame.tx) / frame.scale + shift[0] * frame.size / frame.scale
    cy = (half - frame.ty) / frame.scale + shift[1] * frame.size / frame.scale
    z_offset = float(z_margin - frame.depth_scale * s * np.asarray(points, dtype=np.float64)[:, 2].min())
    return VolumeFrame(scale=float(s), tx=float(half - s * cx), ty=float(half - s * cy), z_offset=z_offset,
                       depth_scale=frame.depth_scale, size=frame.size, depth=frame.depth)


def synthesize_face(seed: int, index: int, size: int = 64, depth: int = 64, max_yaw_deg: float = 75.0,
                    supersample: int = 2, margin: float = 0.1, z_margin: float = 2.0,
                    crop_scale: tuple[float, float] = (0.85, 1.2), crop_shift: float = 0.06) -> SyntheticFace:
    """Generate sample ``index`` of the dataset with ``seed`` (see the module docstring for every step).

    Args:
        seed: dataset seed.
        index: sample number (the sample's generator is ``default_rng([seed, index])``).
        size: crop side = volume side, pixels (>= 32).
        depth: volume depth levels.
        max_yaw_deg: largest absolute yaw, degrees (75).
        supersample: image supersampling factor per axis (1 = none).
        margin: crop margin (see :func:`~faceforge.geometry.voxelize.crop_frame_from_points`).
        z_margin: depth level of the rear-most vertex.
        crop_scale: ``[low, high]`` range of the factor on the crop side (uniform; ``(1, 1)``: the tight crop of
            the face box plus ``margin``), as a face detector's box varies (:func:`jitter_crop_frame`);
            the defaults are the dataset builder's.
        crop_shift: largest shift of the crop per axis, as a fraction of its side (uniform in +-``crop_shift``).

    Returns:
        :class:`SyntheticFace`.

    Raises:
        ValueError: on a too small size or depth, or a bad supersampling factor.
    """
    if size < 32 or depth < 8:
        raise ValueError(f"size must be >= 32 and depth >= 8, got size={size}, depth={depth}")
    if supersample < 1:
        raise ValueError(f"supersample must be >= 1, got {supersample}")
    rng = np.random.default_rng([int(seed), int(index)])
    shape = sample_shape(rng)
    appearance = sample_appearance(rng)
    pose = sample_pose(rng, max_yaw_deg=max_yaw_deg)

    grid = face_grid(_grid_cells(size))
    b = shape.half_height
    xy = grid.points * np.array([1.0, b])
    verts = np.c_[xy, surface_height(shape, xy[:, 0], xy[:, 1])]
    lmk_xy = landmark_template(shape)
    idx, w = grid.locate(lmk_xy / np.array([1.0, b]))
    lmk = np.einsum("kc,kcd->kd", w, verts[idx])  # exactly on the mesh

    rot = rotation_matrix(pose.yaw, pose.pitch, pose.roll)
    t = np.array([pose.cx, pose.cy, 0.0])
    verts_src = pose.scale * verts @ rot.T + t
    lmk_src = pose.scale * lmk @ rot.T + t
    frame = crop_frame_from_points(verts_src, (SOURCE_SIZE, SOURCE_SIZE), margin=margin, size=size, depth=depth,
                                   z_margin=z_margin)
    lo, hi = (float(v) for v in crop_scale)
    if not 0 < lo <= hi or crop_shift < 0:
        raise ValueError(f"crop_scale must be 0 < low <= high and crop_shift >= 0, got {crop_scale}, {crop_shift}")
    if (lo, hi) != (1.0, 1.0) or crop_shift > 0:
        frame = jitter_crop_frame(frame, verts_src, _u(rng, lo, hi),
                                  (_u(rng, -crop_shift, crop_shift), _u(rng, -crop_shift, crop_shift)),
                                  z_margin=z_margin)
    cols = face_columns(verts_src, grid.triangles, frame)
    lmk_3d = frame.image_to_volume(lmk_src)

    # image: z-buffer at supersampled resolution, surface points back to face coordinates for albedo and normal
    ss = int(supersample)
    big = ss * size
    uvk = frame.image_to_volume(verts_src)
    uvk_ss = np.c_[ss * uvk[:, :2] + (ss - 1) / 2.0, uvk[:, 2]]
    front, mask = rasterize_depth(uvk_ss, grid.triangles, big)
    img = _background(appearance.background_seed, big)
    vv, uu = np.nonzero(mask)
    if vv.size:
        crop_pts = np.c_[(uu - (ss - 1) / 2.0) / ss, (vv - (ss - 1) / 2.0) / ss, front[vv, uu]]
        face_pts = ((frame.volume_to_image(crop_pts) - t) / pose.scale) @ rot  # R^T p, row vectors
        fx, fy = face_pts[:, 0], face_pts[:, 1]
        h = 1e-3
        dzdx = (surface_height(shape, fx + h, fy) - surface_height(shape, fx - h, fy)) / (2 * h)
        dzdy = (surface_height(shape, fx, fy + h) - surface_height(shape, fx, fy - h)) / (2 * h)
        normal = np.c_[-dzdx, -dzdy, np.ones_like(fx)]
        normal /= np.linalg.norm(normal, axis=1, keepdims=True)
        normal = normal @ rot.T
        light = np.asarray(appearance.light)
        lam = np.clip(normal @ light, 0.0, None)
        half = light + np.array([0.0, 0.0, 1.0])
        half /= np.linalg.norm(half)
        spec = appearance.specular * np.clip(normal @ half, 0.0, None) ** appearance.shininess
        shade = appearance.ambient + appearance.diffuse * lam
        colour = _albedo(shape, appearance, fx, fy) * shade[:, None] + spec[:, None]
        img[vv, uu] = colour
    if ss > 1:
        img = img.reshape(size, ss, size, ss, 3).mean(axis=(1, 3))
    noise = rng.normal(0.0, appearance.noise_sigma, size=img.shape)
    image = np.clip(np.rint(img * 255.0 + noise), 0, 255).astype(np.uint8)
    return SyntheticFace(image=image, frame=frame, columns=cols, landmarks=lmk_3d[:, :2].copy(), landmarks_3d=lmk_3d,
                         landmarks_src=lmk_src, vertices_src=verts_src, triangles=grid.triangles, shape=shape,
                         appearance=appearance, pose=pose)


# ---------------------------------------------------------------------------------------------------------------
# The dataset
# ---------------------------------------------------------------------------------------------------------------

def _digest(*parts: str) -> str:
    h = hashlib.sha1()
    for p in parts:
        h.update(p.encode())
        h.update(b"\0")
    return h.hexdigest()


@dataclass(frozen=True)
class _SampleTask:
    """One sample to generate (a picklable work item of :func:`build_synthetic_reconstruction`)."""

    shard: int
    position: int
    index: int
    split: str
    seed: int
    size: int
    depth: int
    max_yaw_deg: float
    supersample: int
    crop_scale: tuple[float, float]
    crop_shift: float
    image_codec: str


def _generate_sample(task: _SampleTask) -> dict[str, Any]:
    """Worker body: synthesise sample ``task.index`` and return what its shard stores (a
    :class:`~faceforge.data.reconstruction.store.VolumeSample`, the encoded image, the index row)."""
    face = synthesize_face(task.seed, task.index, size=task.size, depth=task.depth, max_yaw_deg=task.max_yaw_deg,
                           supersample=task.supersample, crop_scale=task.crop_scale, crop_shift=task.crop_shift)
    sid = f"synthetic/{task.index:06d}"
    meta = {"sample_id": sid, "generator": GENERATOR, "generator_version": GENERATOR_VERSION, "seed": task.seed,
            "index": task.index, "split": task.split, "pose": asdict(face.pose), "shape": asdict(face.shape),
            "landmarks_source": "model", "mesh_source": "synthetic",
            "source_frame": f"nominal {SOURCE_SIZE}x{SOURCE_SIZE} (no source image is rendered)"}
    sample = VolumeSample(sample_id=sid, encoded=face.encoded, frame=face.frame, image=face.image,
                          landmarks=face.landmarks.astype(np.float32),
                          landmarks_3d=face.landmarks_3d.astype(np.float32), meta=meta)
    fr, cols = face.frame, face.columns
    row = {"sample_id": sid, "split": task.split, "subset": "", "flipped": 0, "group": sid, "image_path": "",
           "label_path": "", "pitch": face.pose.pitch, "yaw": face.pose.yaw, "roll": face.pose.roll,
           "frame_scale": fr.scale, "frame_tx": fr.tx, "frame_ty": fr.ty, "frame_z_offset": fr.z_offset,
           "frame_depth_scale": fr.depth_scale, "size": fr.size, "depth": fr.depth, "mesh_source": "synthetic",
           "landmarks_source": "model", "landmarks": format_landmarks(face.landmarks),
           "filled_columns": cols.filled_columns, "clipped_front": cols.clipped_front,
           "clipped_back": cols.clipped_back, "vertices_outside": cols.vertices_outside}
    image_bytes = encode_image(face.image, task.image_codec) if task.image_codec != "raw" else None
    return {"sample": sample, "image_bytes": image_bytes, "row": row}


def _shard_record(out: Path, name: str) -> Path:
    return out / (name[: -len(".h5")] + ".json")


def _load_shard_record(out: Path, name: str, ids: list[int]) -> dict[str, Any] | None:
    """The record of shard ``name`` written by an earlier build, if it holds samples ``ids`` and its file is
    complete (of the recorded size); else None (the shard is generated again)."""
    path = _shard_record(out, name)
    if not path.is_file():
        return None
    try:
        rec = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        log.warning("%s: unreadable shard record, generating the shard again", path)
        return None
    h5 = out / name
    if not isinstance(rec, dict) or rec.get("indices") != ids or not h5.is_file() \
            or h5.stat().st_size != rec.get("file_bytes"):
        return None
    return rec


def build_synthetic_reconstruction(output_dir: str | os.PathLike, num_samples: int = 512, size: int = 64,
                                   depth: int = 64, seed: int = 0, val_fraction: float = 0.1,
                                   test_fraction: float = 0.1, max_yaw_deg: float = 75.0, supersample: int = 2,
                                   shard_size: int = 1024, image_codec: str = "jpeg",
                                   crop_scale: Sequence[float] = (0.85, 1.2), crop_shift: float = 0.06,
                                   workers: int = 1, progress: bool = False) -> dict[str, Any]:
    """Generate the synthetic reconstruction dataset into ``output_dir`` (volume stores + index + report).

    Deterministic for a given ``seed`` and arguments (identical index and stored arrays, whatever ``workers``).
    The prepared-dataset contract (:mod:`faceforge.data.core.prepared`): the samples are generated by
    :func:`~faceforge.data.core.runner.run_parallel` (spawned workers that die with this process), and this
    process writes each shard when all its samples are back (temporary file + rename), then its record
    ``shards/part-NNNNN-DIGEST.json`` (index rows, file size); DIGEST names the generator version, the parameters
    and the shard's samples. An existing ``volume_index.csv`` is removed first and the index is written last, so
    an interrupted build leaves no index, and the next build with the same arguments resumes: shards with a record
    and a file of the recorded size are not generated again, and the index is byte-identical to an uninterrupted
    build's.

    Args:
        output_dir: output folder (created): ``shards/part-NNNNN-DIGEST.{h5,json}``, ``volume_index.csv``,
            ``volume_report.json``, ``prepare_report.json``.
        num_samples: faces (each a new identity, pose and lighting).
        size: crop side = volume side, pixels (>= 32; 192 is VRN's).
        depth: volume depth levels (200 is VRN's).
        seed: the only source of randomness.
        val_fraction, test_fraction: shares of samples in val and test (each at least one sample when > 0).
        max_yaw_deg: largest absolute yaw, degrees (75).
        supersample: image supersampling factor per axis.
        shard_size: samples per volume store file.
        image_codec: ``"jpeg"`` (default, as generated 300W-LP crops), ``"png"`` or ``"raw"``.
        crop_scale: ``[low, high]`` factor on the crop side per sample (0.85-1.2: the face spans 0.69-0.98 of the
            crop), as a detector's box varies; ``(1, 1)`` gives the tight box + 10 % margin of earlier versions.
        crop_shift: largest shift of the crop per axis, fraction of its side (0.06).
        workers: generating processes (``<= 1``: in this process); the output does not depend on it.
        progress: show a tqdm bar of the samples on stderr.

    Returns:
        The report written to ``volume_report.json`` (counts, splits, clipping, timing, parameters).

    Raises:
        ValueError: on too few samples for the splits, fractions out of range or bad sizes.
        OSError: if the files cannot be written.
    """
    t0 = time.perf_counter()
    out = Path(output_dir)
    n = int(num_samples)
    if val_fraction < 0 or test_fraction < 0 or val_fraction + test_fraction >= 1:
        raise SettingsError(f"val_fraction ({val_fraction}) and test_fraction ({test_fraction}) must be >= 0 and sum "
                           f"to less than 1")
    n_val = max(1, round(n * val_fraction)) if val_fraction > 0 else 0
    n_test = max(1, round(n * test_fraction)) if test_fraction > 0 else 0
    if n - n_val - n_test < 1:
        raise SettingsError(f"num_samples={n} is too few for a train split plus {n_val} val and {n_test} test samples")
    if shard_size < 1:
        raise SettingsError(f"shard_size must be >= 1, got {shard_size}")
    params = {"num_samples": n, "size": int(size), "depth": int(depth), "seed": int(seed),
              "val_fraction": float(val_fraction), "test_fraction": float(test_fraction),
              "max_yaw_deg": float(max_yaw_deg), "supersample": int(supersample), "shard_size": int(shard_size),
              "image_codec": image_codec, "crop_scale": [float(v) for v in crop_scale],
              "crop_shift": float(crop_shift)}
    splits = np.full(n, "train", dtype=object)
    perm = np.random.default_rng([int(seed), 0x5EED]).permutation(n)
    splits[perm[:n_val]] = "val"
    splits[perm[n_val:n_val + n_test]] = "test"

    index_path = out / INDEX_FILENAME
    index_path.unlink(missing_ok=True)
    (out / "shards").mkdir(parents=True, exist_ok=True)
    for leftover in (out / "shards").glob(".part-*"):  # temporary files of a build that was killed
        leftover.unlink(missing_ok=True)
    config_digest = _digest(f"synthetic-3d-v{GENERATOR_VERSION}", json.dumps(params, sort_keys=True))

    shards: list[tuple[str, list[int]]] = []  # (file name, sample numbers)
    for j0 in range(0, n, shard_size):
        ids = list(range(j0, min(n, j0 + shard_size)))
        shards.append((f"shards/part-{j0 // shard_size:05d}-{_digest(config_digest, str(ids[0]), str(ids[-1]))[:10]}"
                       f".h5", ids))
    records: dict[int, dict[str, Any]] = {}
    for k, (name, ids) in enumerate(shards):  # resume: shards an interrupted build finished
        rec = _load_shard_record(out, name, ids)
        if rec is not None:
            records[k] = rec
    reused = len(records)
    buffers: dict[int, list[dict[str, Any] | None]] = {}

    def collect(task: _SampleTask, result: dict[str, Any]) -> None:
        name, ids = shards[task.shard]
        buf = buffers.setdefault(task.shard, [None] * len(ids))
        buf[task.position] = result
        if any(r is None for r in buf):
            return
        rows = []
        with VolumeStoreWriter(out / name, size=size, depth=depth, image_codec=image_codec) as writer:
            for r in buffers.pop(task.shard):
                row_i = writer.add(r["sample"], image_bytes=r["image_bytes"])
                rows.append({**r["row"], "store_file": name, "store_row": row_i})
            summary = writer.close()
        for row, vb, ib in zip(rows, summary.volume_bytes, summary.image_bytes, strict=True):
            row["volume_bytes"], row["image_bytes"] = int(vb), int(ib)
        records[task.shard] = {"name": name, "indices": ids, "rows": rows, "file_bytes": summary.file_bytes}
        atomic_write_json(_shard_record(out, name), records[task.shard])  # after the shard file: its done-marker

    tasks = [_SampleTask(k, pos, i, str(splits[i]), int(seed), int(size), int(depth), float(max_yaw_deg),
                         int(supersample), (float(crop_scale[0]), float(crop_scale[1])), float(crop_shift),
                         str(image_codec))
             for k, (_, ids) in enumerate(shards) for pos, i in enumerate(ids)]
    run_parallel(tasks, _generate_sample, workers=int(workers), on_result=collect,
                 skip=lambda task: task.shard in records, progress="3D samples" if progress else False)

    rows = [row for k in range(len(shards)) for row in records[k]["rows"]]
    clipped = [r["clipped_front"] + r["clipped_back"] for r in rows]
    vol = np.array([r["volume_bytes"] for r in rows], dtype=np.float64)
    report = {"output": str(out), "dataset": DATASET, "generator": GENERATOR,
              "generator_version": GENERATOR_VERSION, "params": params,
              "total": n, "stored": len(rows), "skipped": {}, "num_skipped": 0,
              "splits": dict(sorted(Counter(r["split"] for r in rows).items())),
              "clipped_samples": int(sum(c > 0 for c in clipped)), "clipped_columns": int(sum(clipped)),
              "volume_bytes_per_sample": float(vol.mean()), "mesh_sources": {"synthetic": len(rows)},
              "shards": [name for name, _ in shards],
              "reused_shards": reused,
              "seconds": time.perf_counter() - t0}
    atomic_write_json(out / REPORT_FILENAME, report)
    atomic_write_json(out / PREPARE_REPORT, make_report(
        GENERATOR, {"samples": n, "stored": len(rows)}, [],
        summary=[f"{len(rows)} synthetic samples {report['splits']}"],
        details_file=REPORT_FILENAME))
    write_volume_index(index_path, rows)  # last: its presence marks a complete build
    log.info("synthetic 3D dataset written to %s: %d samples %s in %.1f s", out, n, report["splits"],
             report["seconds"])
    return report


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m faceforge.data.reconstruction.synthetic OUTPUT [--num-samples N] [--size S] ...``."""
    p = argparse.ArgumentParser(description="Build the synthetic 3D face reconstruction dataset (volumes + index).")
    p.add_argument("output")
    p.add_argument("--num-samples", type=int, default=512)
    p.add_argument("--size", type=int, default=64)
    p.add_argument("--depth", type=int, default=64)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--workers", type=int, default=1, help="generating processes (the output does not depend on it)")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    report = build_synthetic_reconstruction(args.output, num_samples=args.num_samples, size=args.size,
                                            depth=args.depth, seed=args.seed, workers=args.workers,
                                            progress=True)
    print(json.dumps({k: report[k] for k in ("stored", "splits", "clipped_samples", "seconds")}))
    return 0


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())

