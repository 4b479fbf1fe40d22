"""The face mesh of a 300W-LP / AFLW2000-3D label, as well as a morphable model can represent it.

* ``"dense"``: a model with dense identity and expression bases (BFM 2009 + 3DDFA expression, or 3DDFA's
  ``bfm_noneck_v3.pkl``): the label's full fit, the mesh 300W-LP was made from.
* ``"landmark_warp"``: the fixture / 3DDFA mean-shape model (``load_3ddfa_mean_shape``) has dense MEAN vertices and
  68-point bases only (40 identity and 10 expression PCs). The mean mesh is deformed by a 3D thin-plate spline
  (:func:`thin_plate_warp`) that moves its 68 landmark vertices exactly onto the label's 68 model landmarks
  (``model.landmarks(Shape_Para, Exp_Para)``): the pose, the face's overall proportions, the jaw and the mouth
  opening follow the fit; identity detail away from the landmarks (nose shape, cheeks, forehead) is the mean's.
  Good for tests, demos and the synthetic data; use a dense model for real training data.
* ``"mean"``: the mean shape with the label's pose only.
"""
from __future__ import annotations

import numpy as np
from scipy.interpolate import RBFInterpolator

from faceforge.data.reconstruction.errors import VolumeGenerationError
from faceforge.geometry.morphable_model import MorphableModel
from faceforge.geometry.w300lp import W300LPLabel

__all__ = ["MESH_MODES", "face_mesh_from_label", "resolve_mesh_mode", "thin_plate_warp"]

MESH_MODES = ("auto", "dense", "landmark_warp", "mean")


def resolve_mesh_mode(model: MorphableModel, mode: str) -> str:
    """The mode ``"auto"`` stands for with ``model`` (other modes are returned as given)."""
    if mode != "auto":
        return mode
    if model.shape_basis is not None and model.exp_basis is not None:
        return "dense"
    if model.landmark_shape_basis is not None or model.shape_basis is not None:
        return "landmark_warp"
    return "mean"


def face_mesh_from_label(label: W300LPLabel, model: MorphableModel, mode: str = "auto") -> tuple[np.ndarray, str]:
    """The label's face mesh in model units, as well as the model can represent it.

    Modes (see the module docstring for what each represents):

    * ``"dense"``: ``model.vertices(Shape_Para, Exp_Para)`` (needs dense bases).
    * ``"landmark_warp"``: the mean mesh deformed by a 3D thin-plate (biharmonic) spline interpolating the
      displacements of the 68 landmark vertices from the mean to ``model.landmarks(Shape_Para, Exp_Para)``
      (:func:`thin_plate_warp`); the warped landmark vertices land exactly on the fit's landmarks.
    * ``"mean"``: the mean mesh (pose only).
    * ``"auto"``: dense if the model has both dense bases, else landmark_warp if it has landmark bases, else mean.

    Args:
        label: a 300W-LP / AFLW2000-3D label.
        model: the morphable model.
        mode: one of :data:`MESH_MODES`.

    Returns:
        ``(vertices (N, 3) float64 model units, mode used)``.

    Raises:
        MorphableModelError: if the model lacks what the mode needs.
        VolumeGenerationError: for an unknown mode.
    """
    if mode not in MESH_MODES:
        raise VolumeGenerationError(f"mesh mode must be one of {MESH_MODES}, got {mode!r}")
    used = resolve_mesh_mode(model, mode)
    if used == "dense":
        return model.vertices(label.shape_para, label.exp_para), used
    base = model.vertices()
    if used == "mean":
        return base, used
    src = base[model.landmark_indices]
    dst = model.landmarks(label.shape_para, label.exp_para)
    return thin_plate_warp(base, src, dst), used


def thin_plate_warp(points: np.ndarray, source: np.ndarray, target: np.ndarray) -> np.ndarray:
    """Deform points with the 3D thin-plate spline that maps ``source`` landmarks exactly onto ``target``.

    The displacement field is ``f(x) = sum_i w_i U(|x - s_i|) + a + A x`` with the 3D biharmonic kernel
    ``U(r) = r`` (the thin-plate spline in three dimensions: Duchon 1977; Bookstein, PAMI 1989), interpolating
    ``f(s_i) = t_i - s_i`` under the side conditions ``sum_i w_i = 0``, ``sum_i w_i s_i^T = 0``. It is solved by
    :class:`scipy.interpolate.RBFInterpolator` with ``kernel="linear"`` (``-r``: the same space of functions, the
    sign goes into the weights) and ``degree=1`` (the affine part). SciPy's ``"thin_plate_spline"`` kernel,
    ``r^2 log r``, is the two-dimensional thin-plate spline; in 3D it is not the minimiser of the bending energy.
    Coordinates are centred and scaled to unit size for conditioning.

    Args:
        points: (N, 3) points to deform (model units).
        source: (K, 3) landmark positions before (K >= 4, not coplanar).
        target: (K, 3) landmark positions after.

    Returns:
        (N, 3) float64 deformed points (``source`` itself maps onto ``target`` up to round-off).

    Raises:
        numpy.linalg.LinAlgError: if the landmarks are degenerate (coplanar or repeated).
        ValueError: if the shapes do not match.
    """
    x = np.asarray(points, dtype=np.float64)
    s = np.asarray(source, dtype=np.float64)
    t = np.asarray(target, dtype=np.float64)
    if x.ndim != 2 or x.shape[1] != 3 or s.ndim != 2 or s.shape[1] != 3 or s.shape != t.shape:
        raise ValueError(f"points must be (N, 3), source and target (K, 3) of one shape; got {x.shape}, {s.shape} "
                         f"and {t.shape}")
    centre = s.mean(axis=0)
    scale = float(np.abs(s - centre).max()) or 1.0
    displacement = RBFInterpolator((s - centre) / scale, (t - s) / scale, kernel="linear", degree=1)
    return x + displacement((x - centre) / scale) * scale
