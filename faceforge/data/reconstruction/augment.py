"""The VRN thesis augmentation, applied consistently to the image, the 68 landmarks and the volume's run maps.

Jackson's thesis (and Jackson et al., "Large Pose 3D Face Reconstruction from a Single Image via Direct
Volumetric CNN Regression", ICCV 2017, Sec. 4 "Training") augments every training pair with a random in-plane
rotation of +-45 degrees, a translation of +-15 pixels (at the 192x192 input), a scale of 0.85-1.15, horizontal
flips, and a per-channel colour scaling of 0.6-1.4. :class:`VolumeAugmentation` draws those parameters from a
seeded :class:`numpy.random.Generator` and :func:`apply_augmentation` applies them:

* **One 2D similarity for everything in the image plane.** With ``c = ((S - 1) / 2, (S - 1) / 2)`` the crop centre
  (pixel centres at integer coordinates, :mod:`faceforge.geometry.volume_frame`), a point ``p = (u, v)`` moves to
  ``p' = a R(theta) F (p - c) + c + t``, ``F = diag(-1, 1)`` for a flip (else the identity). The image is
  resampled with it (bilinear, black outside, OpenCV), the landmarks are mapped by it, and so are the volume's
  columns.
* **The volume stays in its stored form.** A VRN volume is "filled from the face surface backwards": one run of
  filled voxels ``[start, stop)`` per column (:mod:`faceforge.data.reconstruction.store`). A similarity in the image
  plane moves whole columns, so each output column takes the run of the source column nearest to
  ``M^-1 (u', v')`` (nearest-neighbour, no blending: the result is again exactly one run per column and decodes
  with :func:`~faceforge.data.reconstruction.codec.decode_runs`). Columns that come from outside the crop are empty.
  A rotation about the viewing axis, a translation and a flip keep every column's depths: on the maps they are
  exact up to the nearest-neighbour resampling of the columns.
* **Depth scales with the in-plane scale.** Voxels are isotropic (``depth_scale`` levels per crop pixel), so an
  in-plane scale ``a`` must scale depth too, or the face would be flattened / stretched. Depth is scaled about the
  back plane ``k = 0`` (where generated volumes start): a surface at depth ``f`` moves to ``a f``. The maps only
  know ``stop = floor(f) + 1`` (voxel ``k`` filled iff its centre lies on or behind the surface), so ``f`` is
  taken at the middle of its level, ``f = stop - 1/2``, and ``stop' = floor(a (stop - 1/2)) + 1``; likewise
  ``start' = ceil(a (start - 1/2))`` (0 stays 0). ``a = 1`` gives the maps back unchanged. Runs that would leave
  the volume are clipped to ``D`` (counted in the result). 3D landmarks (u, v, k) get the same mapping, ``k' = a
  k``.
* **Flips permute the landmarks.** Mirroring the image turns the subject's left eye into the image's right one,
  so after the coordinates are mirrored the points are renumbered with :data:`FLIP_PERMUTATION_68` (the iBUG
  68-point markup: jaw 0-16, brows 17-26, nose 27-35, eyes 36-47, mouth 48-67), so that point 36 is again the
  outer corner of the eye on the image's left.
* **Colour scaling** multiplies each RGB channel by its own factor in [0.6, 1.4] (clipped to 0..255).

The crop's :class:`~faceforge.geometry.volume_frame.VolumeFrame` (an axis-aligned similarity to the source
image) cannot express a rotation or a flip, so after augmentation the sample has no frame any more: the data
module sends NaN for it (source-image coordinates are only needed for evaluation, which is not augmented).
"""
from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import cv2
import numpy as np

from faceforge.errors import FaceforgeError

__all__ = [
    "FLIP_PERMUTATION_68",
    "AugmentationConfigError",
    "AugmentationParams",
    "AugmentedSample",
    "VolumeAugmentation",
    "affine_matrix",
    "apply_augmentation",
    "transform_points",
    "warp_runs",
]


def _flip_permutation_68() -> tuple[int, ...]:
    """The left/right renumbering of the iBUG 68-point markup (an involution)."""
    perm = list(range(68))

    def swap(a: int, b: int) -> None:
        perm[a], perm[b] = b, a

    for i in range(8):  # jaw 0..16 around the chin (8 is the chin)
        swap(i, 16 - i)
    for i in range(5):  # brows 17..21 <-> 26..22
        swap(17 + i, 26 - i)
    swap(31, 35)  # nostrils (33 is the centre; 27-30 the bridge)
    swap(32, 34)
    for a, b in ((36, 45), (37, 44), (38, 43), (39, 42), (40, 47), (41, 46)):  # eyes
        swap(a, b)
    for a, b in ((48, 54), (49, 53), (50, 52), (55, 59), (56, 58)):  # outer lips (51, 57 central)
        swap(a, b)
    for a, b in ((60, 64), (61, 63), (65, 67)):  # inner lips (62, 66 central)
        swap(a, b)
    return tuple(perm)


#: ``flipped[i] = mirrored[FLIP_PERMUTATION_68[i]]``: renumbering of the iBUG 68 points after a horizontal flip.
FLIP_PERMUTATION_68: tuple[int, ...] = _flip_permutation_68()


class AugmentationConfigError(FaceforgeError, ValueError):
    """An augmentation setting is unknown or out of range (the message names it)."""


@dataclass(frozen=True)
class AugmentationParams:
    """One draw of the augmentation.

    Attributes:
        angle: in-plane rotation, radians (positive turns x towards y, i.e. clockwise on screen).
        scale: in-plane (and depth) scale factor ``a``.
        tx, ty: translation in crop pixels.
        flip: horizontal flip.
        colour: per-channel RGB multipliers.
    """

    angle: float = 0.0
    scale: float = 1.0
    tx: float = 0.0
    ty: float = 0.0
    flip: bool = False
    colour: tuple[float, float, float] = (1.0, 1.0, 1.0)

    def to_dict(self) -> dict[str, Any]:
        """Plain dict."""
        d = asdict(self)
        d["colour"] = list(self.colour)
        return d


@dataclass
class AugmentedSample:
    """What :func:`apply_augmentation` returns.

    Attributes:
        image: (S, S, 3) uint8 RGB.
        start, stop: (S, S) run maps (dtype of the input maps).
        landmarks: (68, 2) float32 crop pixels (NaN stays NaN), renumbered after a flip; or None.
        landmarks_3d: (68, 3) float32 (u, v, k), same mapping with ``k' = a k``; or None.
        clipped_columns: columns whose scaled run was cut at the depth ``D``.
        params: the parameters applied.
    """

    image: np.ndarray
    start: np.ndarray
    stop: np.ndarray
    landmarks: np.ndarray | None
    landmarks_3d: np.ndarray | None
    clipped_columns: int
    params: AugmentationParams


def affine_matrix(params: AugmentationParams, size: int) -> np.ndarray:
    """The (2, 3) matrix ``M`` with ``p' = M [u, v, 1]^T`` (see the module docstring), float64.

    Args:
        params: the augmentation draw.
        size: crop side ``S`` in pixels.
    """
    c = (size - 1) / 2.0
    cos, sin = math.cos(params.angle), math.sin(params.angle)
    a = np.array([[cos, -sin], [sin, cos]], dtype=np.float64) * float(params.scale)
    if params.flip:
        a = a @ np.diag([-1.0, 1.0])
    t = np.array([c + params.tx, c + params.ty]) - a @ np.array([c, c])
    return np.c_[a, t]


def transform_points(points: np.ndarray, matrix: np.ndarray) -> np.ndarray:
    """Map (N, 2) points by a (2, 3) affine matrix (NaN rows stay NaN); float64."""
    p = np.asarray(points, dtype=np.float64)
    return p @ matrix[:, :2].T + matrix[:, 2]


def warp_runs(start: np.ndarray, stop: np.ndarray, matrix: np.ndarray, depth: int,
              depth_factor: float = 1.0) -> tuple[np.ndarray, np.ndarray, int]:
    """Move the columns of run maps by an in-plane affine map and scale their depths (nearest column).

    Output column ``(u', v')`` takes the run of the source column nearest to ``M^-1 (u', v')`` (empty when that
    lies outside the maps); depths are scaled by ``depth_factor`` about ``k = 0`` with the half-level rule of the
    module docstring and clipped to ``[0, depth]``.

    Args:
        start, stop: (H, W) integer run maps (``start <= stop``).
        matrix: (2, 3) affine matrix from input to output pixel coordinates (invertible).
        depth: D.
        depth_factor: the scale ``a`` applied to depth.

    Returns:
        ``(start', stop', clipped_columns)``: maps of the input dtype and the number of columns cut at D.

    Raises:
        ValueError: if the maps differ in shape or the matrix is singular.
    """
    start = np.asarray(start)
    stop = np.asarray(stop)
    if start.shape != stop.shape or start.ndim != 2:
        raise ValueError(f"start and stop must be (H, W) maps of one shape, got {start.shape} and {stop.shape}")
    h, w = start.shape
    a = matrix[:, :2]
    if abs(np.linalg.det(a)) < 1e-12:
        raise ValueError("the augmentation matrix is singular")
    inv = np.linalg.inv(a)
    vv, uu = np.mgrid[0:h, 0:w].astype(np.float64)
    du, dv = uu - matrix[0, 2], vv - matrix[1, 2]
    su = np.rint(inv[0, 0] * du + inv[0, 1] * dv).astype(np.int64)
    sv = np.rint(inv[1, 0] * du + inv[1, 1] * dv).astype(np.int64)
    inside = (su >= 0) & (su < w) & (sv >= 0) & (sv < h)
    s0 = np.zeros((h, w), dtype=np.float64)
    s1 = np.zeros((h, w), dtype=np.float64)
    s0[inside] = start[sv[inside], su[inside]]
    s1[inside] = stop[sv[inside], su[inside]]
    nonempty = s1 > s0
    clipped = 0
    if depth_factor != 1.0:
        new1 = np.floor(depth_factor * (s1 - 0.5)) + 1.0
        new0 = np.where(s0 > 0, np.ceil(depth_factor * (s0 - 0.5)), 0.0)
        clipped = int(np.count_nonzero(nonempty & (new1 > depth)))
        s1 = np.clip(new1, 0, depth)
        s0 = np.clip(np.minimum(new0, s1), 0, depth)
    s0 = np.where(nonempty, s0, 0)
    s1 = np.where(nonempty, s1, 0)
    return s0.astype(start.dtype), s1.astype(stop.dtype), clipped


def apply_augmentation(image: np.ndarray, start: np.ndarray, stop: np.ndarray, depth: int,
                       params: AugmentationParams, landmarks: np.ndarray | None = None,
                       landmarks_3d: np.ndarray | None = None) -> AugmentedSample:
    """Apply one augmentation draw consistently to an image, its run maps and its landmarks.

    Args:
        image: (S, S, 3) uint8 RGB crop.
        start, stop: (S, S) integer run maps of the volume (:mod:`faceforge.data.reconstruction.store`).
        depth: D, the volume's depth levels.
        params: the draw (:meth:`VolumeAugmentation.sample`).
        landmarks: optional (68, 2) crop pixels (68 points needed when ``params.flip``).
        landmarks_3d: optional (68, 3) volume coordinates (u, v, k).

    Returns:
        :class:`AugmentedSample`.

    Raises:
        ValueError: on mismatched shapes, a non-uint8 image, or a flip of a markup other than 68 points.
    """
    img = np.asarray(image)
    if img.ndim != 3 or img.shape[2] != 3 or img.dtype != np.uint8:
        raise ValueError(f"image must be (S, S, 3) uint8, got {img.dtype} {img.shape}")
    size = img.shape[0]
    if img.shape[:2] != (size, size) or np.shape(start) != (size, size):
        raise ValueError(f"image {img.shape[:2]} and run maps {np.shape(start)} must be one square size")
    m = affine_matrix(params, size)
    out = cv2.warpAffine(img, m, (size, size), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT,
                         borderValue=(0, 0, 0))
    if params.colour != (1.0, 1.0, 1.0):
        out = np.clip(out.astype(np.float32) * np.asarray(params.colour, dtype=np.float32), 0, 255)
        out = np.rint(out).astype(np.uint8)
    s0, s1, clipped = warp_runs(start, stop, m, depth, params.scale)

    def permute(p: np.ndarray) -> np.ndarray:
        if not params.flip:
            return p
        if p.shape[0] != 68:
            raise ValueError(f"a flip needs the 68-point markup to renumber the landmarks, got {p.shape[0]} points")
        return p[list(FLIP_PERMUTATION_68)]

    lmk = None
    if landmarks is not None:
        lmk = permute(transform_points(np.asarray(landmarks)[:, :2], m)).astype(np.float32)
    lmk3 = None
    if landmarks_3d is not None:
        p3 = np.asarray(landmarks_3d, dtype=np.float64)
        moved = np.c_[transform_points(p3[:, :2], m), p3[:, 2] * params.scale]
        lmk3 = permute(moved).astype(np.float32)
    return AugmentedSample(image=np.ascontiguousarray(out), start=s0, stop=s1, landmarks=lmk, landmarks_3d=lmk3,
                           clipped_columns=clipped, params=params)


def _pair(value: Any, name: str) -> tuple[float, float]:
    try:
        lo, hi = (float(v) for v in value)
    except (TypeError, ValueError) as exc:
        raise AugmentationConfigError(f"augment.{name} must be a [low, high] pair, got {value!r}") from exc
    if not (0 < lo <= hi):
        raise AugmentationConfigError(f"augment.{name} must satisfy 0 < low <= high, got {value!r}")
    return lo, hi


class VolumeAugmentation:
    """The thesis augmentation with its ranges (Jackson's thesis; Jackson et al. 2017, Sec. 4), seeded.

    Every draw applies all of: a rotation uniform in ``+-rotation_deg``, a translation uniform in
    ``+-translation_px * size / reference_size`` per axis (15 px at the 192-pixel input; scaled for smaller
    crops), a scale uniform in ``scale``, a flip with probability ``flip_p`` and per-channel colour factors uniform
    in ``colour_scale``. Set a range to its neutral value (0, [1, 1], 0) to switch that part off.

    Args:
        rotation_deg: largest absolute rotation, degrees (45).
        translation_px: largest absolute translation per axis, pixels at ``reference_size`` (15).
        reference_size: the crop size ``translation_px`` refers to (192).
        scale: ``[low, high]`` scale factors (0.85, 1.15); depth is scaled with it.
        flip_p: probability of a horizontal flip (0.5).
        colour_scale: ``[low, high]`` per-channel colour factors (0.6, 1.4).

    Raises:
        AugmentationConfigError: on a negative or inverted range or a probability outside [0, 1].
    """

    def __init__(self, rotation_deg: float = 45.0, translation_px: float = 15.0, reference_size: int = 192,
                 scale: Sequence[float] = (0.85, 1.15), flip_p: float = 0.5,
                 colour_scale: Sequence[float] = (0.6, 1.4)) -> None:
        self.rotation_deg = float(rotation_deg)
        self.translation_px = float(translation_px)
        self.reference_size = int(reference_size)
        self.scale = _pair(scale, "scale")
        self.flip_p = float(flip_p)
        self.colour_scale = _pair(colour_scale, "colour_scale")
        if self.rotation_deg < 0 or self.translation_px < 0:
            raise AugmentationConfigError(f"augment.rotation_deg and augment.translation_px must be >= 0, got "
                                          f"{rotation_deg} and {translation_px}")
        if self.reference_size < 1:
            raise AugmentationConfigError(f"augment.reference_size must be >= 1, got {reference_size}")
        if not 0.0 <= self.flip_p <= 1.0:
            raise AugmentationConfigError(f"augment.flip_p must lie in [0, 1], got {flip_p}")

    @classmethod
    def from_config(cls, config: Mapping[str, Any] | None) -> VolumeAugmentation | None:
        """Build from a primitive dict (a Hydra ``augment:`` block); None (``augment: null``) disables it.

        Raises:
            AugmentationConfigError: on an unknown key or a bad value.
        """
        if config is None:
            return None
        known = {"rotation_deg", "translation_px", "reference_size", "scale", "flip_p", "colour_scale"}
        unknown = sorted(set(config) - known)
        if unknown:
            raise AugmentationConfigError(f"unknown augment keys {unknown}; known: {sorted(known)}")
        return cls(**dict(config))

    def to_dict(self) -> dict[str, Any]:
        """The settings as a primitive dict (inverse of :meth:`from_config`)."""
        return {"rotation_deg": self.rotation_deg, "translation_px": self.translation_px,
                "reference_size": self.reference_size, "scale": list(self.scale), "flip_p": self.flip_p,
                "colour_scale": list(self.colour_scale)}

    def sample(self, rng: np.random.Generator, size: int) -> AugmentationParams:
        """Draw parameters for a crop of side ``size`` (pixels) from ``rng``."""
        t = self.translation_px * size / self.reference_size
        angle = math.radians(rng.uniform(-self.rotation_deg, self.rotation_deg))
        scale = rng.uniform(*self.scale)
        tx, ty = rng.uniform(-t, t, size=2)
        flip = bool(rng.random() < self.flip_p)
        colour = tuple(float(c) for c in rng.uniform(*self.colour_scale, size=3))
        return AugmentationParams(angle=float(angle), scale=float(scale), tx=float(tx), ty=float(ty), flip=flip,
                                  colour=colour)  # type: ignore[arg-type]

    def __call__(self, image: np.ndarray, start: np.ndarray, stop: np.ndarray, depth: int,
                 rng: np.random.Generator, landmarks: np.ndarray | None = None,
                 landmarks_3d: np.ndarray | None = None) -> AugmentedSample:
        """Draw parameters with ``rng`` and apply them (:func:`apply_augmentation`)."""
        return apply_augmentation(image, start, stop, depth, self.sample(rng, int(np.shape(image)[0])),
                                  landmarks=landmarks, landmarks_3d=landmarks_3d)

    def __repr__(self) -> str:
        return f"VolumeAugmentation({self.to_dict()})"
