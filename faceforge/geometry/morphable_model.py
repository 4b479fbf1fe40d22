"""Linear 3D morphable model (BFM 2009 as used by 3DDFA / 300W-LP) and its loaders.

A shape is ``S = mean + shape_basis @ alpha + exp_basis @ beta`` on xyz-interleaved ``3N`` vectors
(Blanz & Vetter 1999; Paysan et al., "A 3D Face Model for Pose and Illumination Invariant Face Recognition",
AVSS 2009; expression basis of Zhu et al., CVPR 2016, built from FaceWarehouse). The 300W-LP / AFLW2000-3D
parameters (``Shape_Para`` 199, ``Exp_Para`` 29) multiply the bases directly: the BFM ``shapePC`` columns are
unit-norm and ``Shape_Para`` already carries the standard deviations (values ~1e5), while ``Exp_Para`` (~1)
multiplies 3DDFA's ``w_exp`` as stored. Units are BFM units (micrometres); ``Pose_Para``'s scale maps them to
pixels (see :mod:`faceforge.geometry.projection`).

Loaders:

* :func:`load_3ddfa_mean_shape`: the files the 3DDFA repository ships without a BFM registration (the 53,215-vertex
  mean ``u_shp + u_exp``, ``tri.mat``, the 68 landmark indices and the 68-point 40/10 PC bases). Tested on the real
  files.
* :func:`load_3ddfa_bfm_pkl`: 3DDFA / 3DDFA_V2's ``bfm_noneck_v3.pkl``-style pickle (``u``, ``w_shp``, ``w_exp``,
  ``tri``, ``keypoints``). Needs the BFM-derived file, which cannot ship: tested only on synthetic files with
  the documented layout.
* :func:`load_bfm_2009`: the registration-only ``01_MorphableModel.mat`` plus 3DDFA's ``model_info.mat`` and its
  expression model. Same caveat.
"""
from __future__ import annotations

import os
import pickle
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import scipy.io

from faceforge.errors import FaceforgeError
from faceforge.utils.safe_pickle import load_array_pickle

__all__ = [
    "NUM_LANDMARKS",
    "MorphableModel",
    "MorphableModelError",
    "load_3ddfa_bfm_pkl",
    "load_3ddfa_mean_shape",
    "load_bfm_2009",
]

NUM_LANDMARKS = 68


class MorphableModelError(FaceforgeError, ValueError):
    """A morphable-model file is missing, unreadable, lacks a key or holds an array of the wrong shape."""


def _err(path: str | os.PathLike | None, key: str | None, what: str) -> MorphableModelError:
    where = f"{path}" if path is not None else "<in memory>"
    if key is not None:
        where += f" [{key}]"
    return MorphableModelError(f"{where}: {what}")


@dataclass
class MorphableModel:
    """A linear morphable model with a triangle mesh and 68 iBUG landmarks.

    Attributes:
        mean: (N, 3) float32 mean vertices (BFM units), including the expression mean where the model has one.
        triangles: (F, 3) int64 0-based vertex indices. Winding as in the source files (for 3DDFA's ``tri.mat``
            the cross-product normals point into the head in this model frame; see
            :mod:`faceforge.geometry.projection`).
        landmark_indices: (68,) int64 0-based vertex indices of the iBUG-68 landmarks.
        shape_basis: (3N, Ks) float32 identity basis on xyz-interleaved vectors, or None.
        exp_basis: (3N, Ke) float32 expression basis, or None.
        landmark_mean: (68, 3) float32 mean of the landmarks, or None (then ``mean[landmark_indices]``).
        landmark_shape_basis: (204, Ks68) float32 identity basis restricted to the 68 landmarks (xyz-interleaved,
            rows ``3 * i + c``), or None (then derived from ``shape_basis`` when that exists).
        landmark_exp_basis: (204, Ke68) float32 expression basis restricted to the 68 landmarks, or None.
        source: a human-readable description of where the model came from.

    Raises:
        MorphableModelError: at construction, on inconsistent shapes or out-of-range indices.
    """

    mean: np.ndarray
    triangles: np.ndarray
    landmark_indices: np.ndarray
    shape_basis: np.ndarray | None = None
    exp_basis: np.ndarray | None = None
    landmark_mean: np.ndarray | None = None
    landmark_shape_basis: np.ndarray | None = None
    landmark_exp_basis: np.ndarray | None = None
    source: str = field(default="")

    def __post_init__(self) -> None:
        self.mean = np.ascontiguousarray(self.mean, dtype=np.float32)
        if self.mean.ndim != 2 or self.mean.shape[1] != 3:
            raise _err(None, "mean", f"expected (N, 3) vertices, got shape {self.mean.shape}")
        n = self.mean.shape[0]
        self.triangles = np.ascontiguousarray(self.triangles, dtype=np.int64)
        if self.triangles.ndim != 2 or self.triangles.shape[1] != 3:
            raise _err(None, "triangles", f"expected (F, 3), got shape {self.triangles.shape}")
        if self.triangles.size and (self.triangles.min() < 0 or self.triangles.max() >= n):
            raise _err(None, "triangles", f"indices must lie in [0, {n}), got [{self.triangles.min()}, "
                                          f"{self.triangles.max()}]")
        self.landmark_indices = np.ascontiguousarray(self.landmark_indices, dtype=np.int64).reshape(-1)
        if self.landmark_indices.shape != (NUM_LANDMARKS,):
            raise _err(None, "landmark_indices", f"expected {NUM_LANDMARKS} indices, got "
                                                 f"{self.landmark_indices.shape}")
        if self.landmark_indices.min() < 0 or self.landmark_indices.max() >= n:
            raise _err(None, "landmark_indices", f"indices must lie in [0, {n})")
        for name in ("shape_basis", "exp_basis"):
            basis = getattr(self, name)
            if basis is not None:
                basis = np.asarray(basis, dtype=np.float32)
                if basis.ndim != 2 or basis.shape[0] != 3 * n:
                    raise _err(None, name, f"expected (3N, K) = ({3 * n}, K), got shape {basis.shape}")
                setattr(self, name, basis)
        if self.landmark_mean is not None:
            self.landmark_mean = np.asarray(self.landmark_mean, dtype=np.float32).reshape(NUM_LANDMARKS, 3)
        for name in ("landmark_shape_basis", "landmark_exp_basis"):
            basis = getattr(self, name)
            if basis is not None:
                basis = np.asarray(basis, dtype=np.float32)
                if basis.ndim != 2 or basis.shape[0] != 3 * NUM_LANDMARKS:
                    raise _err(None, name, f"expected ({3 * NUM_LANDMARKS}, K), got shape {basis.shape}")
                setattr(self, name, basis)

    @property
    def num_vertices(self) -> int:
        """Number of vertices N."""
        return int(self.mean.shape[0])

    @property
    def landmark_flat_indices(self) -> np.ndarray:
        """(204,) int64 indices of the landmarks into the xyz-interleaved 3N vector (``3 * v + c``)."""
        return (3 * self.landmark_indices[:, None] + np.arange(3)[None, :]).reshape(-1)

    def vertices(self, shape_para: np.ndarray | None = None, exp_para: np.ndarray | None = None) -> np.ndarray:
        """Dense shape ``mean + shape_basis @ shape_para + exp_basis @ exp_para``.

        Parameters longer than the basis are truncated to its first K components (the PCA order: the 3DDFA
        reduced models keep the leading components); shorter ones use that many leading columns.

        Args:
            shape_para: identity coefficients (e.g. 300W-LP ``Shape_Para``, 199), or None for the mean.
            exp_para: expression coefficients (e.g. ``Exp_Para``, 29), or None.

        Returns:
            (N, 3) float64 vertices in model units.

        Raises:
            MorphableModelError: if coefficients are given (and non-zero) for a basis the model does not have.
        """
        flat = self.mean.reshape(-1).astype(np.float64)
        flat = flat + _apply_basis(self.shape_basis, shape_para, "shape_basis")
        flat = flat + _apply_basis(self.exp_basis, exp_para, "exp_basis")
        return flat.reshape(-1, 3)

    def landmarks(self, shape_para: np.ndarray | None = None, exp_para: np.ndarray | None = None) -> np.ndarray:
        """The 68 landmarks of a shape, from the 68-point bases when the model has them.

        Uses ``landmark_mean`` / ``landmark_*_basis`` when present (3DDFA's 40 shape / 10 expression PCs: the
        first 40 ``Shape_Para`` and 10 ``Exp_Para`` apply directly, x1), else the dense bases' landmark rows.

        Args:
            shape_para: identity coefficients or None.
            exp_para: expression coefficients or None.

        Returns:
            (68, 3) float64 landmark positions in model units.

        Raises:
            MorphableModelError: if coefficients are given for a basis the model has in neither form.
        """
        rows = self.landmark_flat_indices
        if self.landmark_mean is not None:
            flat = self.landmark_mean.reshape(-1).astype(np.float64)
        else:
            flat = self.mean.reshape(-1)[rows].astype(np.float64)
        shp = self.landmark_shape_basis
        if shp is None and self.shape_basis is not None:
            shp = self.shape_basis[rows]
        exp = self.landmark_exp_basis
        if exp is None and self.exp_basis is not None:
            exp = self.exp_basis[rows]
        flat = flat + _apply_basis(shp, shape_para, "landmark_shape_basis")
        flat = flat + _apply_basis(exp, exp_para, "landmark_exp_basis")
        return flat.reshape(NUM_LANDMARKS, 3)


def _apply_basis(basis: np.ndarray | None, para: np.ndarray | None, name: str) -> np.ndarray | float:
    if para is None:
        return 0.0
    p = np.asarray(para, dtype=np.float64).reshape(-1)
    if not np.all(np.isfinite(p)):
        raise _err(None, name, "coefficients contain NaN or inf")
    if basis is None:
        if np.any(p != 0):
            raise _err(None, name, "the model has no such basis, so non-zero coefficients cannot be applied "
                                   "(load a full model, e.g. load_bfm_2009 or load_3ddfa_bfm_pkl)")
        return 0.0
    k = min(basis.shape[1], p.size)
    if basis.shape[0] * k <= 1_000_000:  # small (landmark) bases: exact float64
        return basis[:, :k].astype(np.float64) @ p[:k]
    # dense bases: avoid a float64 copy of a (3N, K) matrix (hundreds of MB); float32 products are ample
    return (basis[:, :k] @ p[:k].astype(basis.dtype)).astype(np.float64)


# ---------------------------------------------------------------------------------------------------------------
# File helpers
# ---------------------------------------------------------------------------------------------------------------

def _require_file(path: Path) -> Path:
    if not path.is_file():
        raise _err(path, None, "file not found")
    return path


def _load_npy(path: Path) -> np.ndarray:
    _require_file(path)
    try:
        return np.load(path, allow_pickle=False)
    except (ValueError, OSError) as exc:
        raise _err(path, None, f"not a readable .npy array ({exc})") from exc


def _load_txt(path: Path) -> np.ndarray:
    _require_file(path)
    try:
        return np.loadtxt(path, dtype=np.float64, ndmin=1)
    except ValueError as exc:
        raise _err(path, None, f"not a whitespace-separated numeric table ({exc})") from exc


def _load_mat(path: Path, keys: tuple[str, ...]) -> dict[str, np.ndarray]:
    _require_file(path)
    try:
        data = scipy.io.loadmat(str(path), variable_names=list(keys))
    except (ValueError, OSError, NotImplementedError, TypeError) as exc:  # scipy: NotImplementedError = MATLAB v7.3
        raise _err(path, None, f"not a readable MATLAB .mat file ({exc}); MATLAB v7.3 files need conversion "
                               "to v7 (scipy cannot read HDF5-based .mat)") from exc
    for key in keys:
        if key not in data:
            found = sorted(k for k in data if not k.startswith("__"))
            raise _err(path, key, f"missing key (found {found})")
    return data


def _triangles_from(arr: Any, n_vertices: int, path: Path, key: str, base: str = "auto") -> np.ndarray:
    """Triangles as (F, 3) int64 0-based from a (3, F) or (F, 3) array, 1-based or 0-based."""
    tri = np.asarray(arr)
    if tri.ndim != 2 or 3 not in tri.shape:
        raise _err(path, key, f"expected a (3, F) or (F, 3) triangle array, got shape {tri.shape}")
    if tri.shape[0] == 3 and tri.shape[1] != 3:
        tri = tri.T
    if not np.issubdtype(tri.dtype, np.number) or not np.all(np.isfinite(tri)):
        raise _err(path, key, "triangle indices must be finite numbers")
    if np.any(tri != np.round(tri)):
        raise _err(path, key, "triangle indices must be integers")
    tri = tri.astype(np.int64)
    lo, hi = int(tri.min()), int(tri.max())
    if base == "auto":
        # 1-based lists use index N (0-based ones cannot); 0-based ones use 0 (1-based ones cannot).
        base = "one" if hi == n_vertices else "zero"
    if base == "one":
        if lo < 1 or hi > n_vertices:
            raise _err(path, key, f"1-based indices must lie in [1, {n_vertices}], got [{lo}, {hi}]")
        tri = tri - 1
    elif lo < 0 or hi >= n_vertices:
        raise _err(path, key, f"0-based indices must lie in [0, {n_vertices}), got [{lo}, {hi}]")
    return np.ascontiguousarray(tri)


def _landmarks_from_flat(flat: np.ndarray, path: Path, key: str) -> np.ndarray:
    """Vertex indices (68,) from 204 flat xyz-interleaved indices ``3v, 3v+1, 3v+2``."""
    k = np.asarray(flat).reshape(-1)
    if (k.size != 3 * NUM_LANDMARKS or not np.issubdtype(k.dtype, np.number)
            or not np.all(np.isfinite(k)) or np.any(k != np.round(k))):
        raise _err(path, key, f"expected {3 * NUM_LANDMARKS} integer indices into the xyz-interleaved vector, "
                              f"got {k.size} values of dtype {k.dtype}")
    k = k.astype(np.int64)
    triples = k.reshape(NUM_LANDMARKS, 3)
    if np.any(triples[:, 0] % 3 != 0) or np.any(triples[:, 1] != triples[:, 0] + 1) or np.any(
            triples[:, 2] != triples[:, 0] + 2):
        raise _err(path, key, "indices are not (3v, 3v+1, 3v+2) triples of the xyz-interleaved vector")
    return triples[:, 0] // 3


def _flat_vector(arr: Any, path: Path, key: str, length: int | None = None) -> np.ndarray:
    v = np.asarray(arr)
    if v.ndim > 2 or (v.ndim == 2 and 1 not in v.shape):
        raise _err(path, key, f"expected a vector, got shape {v.shape}")
    v = v.reshape(-1).astype(np.float32)
    if length is not None and v.size != length:
        raise _err(path, key, f"expected {length} values, got {v.size}")
    if v.size % 3:
        raise _err(path, key, f"length {v.size} is not a multiple of 3 (xyz-interleaved vertices)")
    if not np.all(np.isfinite(v)):
        raise _err(path, key, "contains NaN or inf")
    return v


def _basis(arr: Any, path: Path, key: str, rows: int) -> np.ndarray:
    b = np.asarray(arr)
    if b.ndim != 2 or b.shape[0] != rows:
        raise _err(path, key, f"expected ({rows}, K), got shape {b.shape}")
    b = b.astype(np.float32, copy=False)
    if not np.all(np.isfinite(b)):
        raise _err(path, key, "contains NaN or inf")
    return b


# ---------------------------------------------------------------------------------------------------------------
# Loaders
# ---------------------------------------------------------------------------------------------------------------

def load_3ddfa_mean_shape(fixtures_3ddfa_dir: str | os.PathLike) -> MorphableModel:
    """Load the 3DDFA mean face (no BFM registration needed) with its 68-point landmark bases.

    Expected layout (files of the cleardusk/3DDFA repository)::

        train.configs/u_shp.npy        (159645, 1) f32 BFM mean identity, xyz-interleaved
        train.configs/u_exp.npy        (159645, 1) f32 expression mean (mean = u_shp + u_exp)
        train.configs/keypoints_sim.npy (204,) int  flat indices (3v, 3v+1, 3v+2) of the 68 landmarks
        visualize/tri.mat              'tri' (3, 105840) 1-based triangles
        cpp_weights/u_base.txt         (204,) landmark mean          } optional, all three or none:
        cpp_weights/w_shp_base.txt     (204, 40) landmark shape PCs  } the 68-point bases for the first 40
        cpp_weights/w_exp_base.txt     (204, 10) landmark exp PCs    } Shape_Para and 10 Exp_Para (x1)

    The dense model has no bases (``shape_basis = exp_basis = None``): :meth:`MorphableModel.vertices` gives the
    mean only; :meth:`MorphableModel.landmarks` applies the 40/10 PCs.

    Args:
        fixtures_3ddfa_dir: folder with the layout above.

    Returns:
        MorphableModel with 53,215 vertices, 105,840 triangles (0-based) and 68 landmark indices.

    Raises:
        MorphableModelError: naming the file (and key) that is missing or malformed, or if ``u_base.txt``
            disagrees with the mean at the landmark indices (files from different models).
    """
    root = Path(fixtures_3ddfa_dir)
    if not root.is_dir():
        raise _err(root, None, "3DDFA folder not found")
    p_shp = root / "train.configs" / "u_shp.npy"
    p_exp = root / "train.configs" / "u_exp.npy"
    p_kpt = root / "train.configs" / "keypoints_sim.npy"
    p_tri = root / "visualize" / "tri.mat"
    u_shp = _flat_vector(_load_npy(p_shp), p_shp, "u_shp")
    u_exp = _flat_vector(_load_npy(p_exp), p_exp, "u_exp", length=u_shp.size)
    mean = (u_shp.astype(np.float64) + u_exp).astype(np.float32).reshape(-1, 3)
    n = mean.shape[0]
    lmk = _landmarks_from_flat(_load_npy(p_kpt), p_kpt, "keypoints_sim")
    if lmk.max() >= n:
        raise _err(p_kpt, "keypoints_sim", f"landmark vertex index {lmk.max()} >= number of vertices {n}")
    tri = _triangles_from(_load_mat(p_tri, ("tri",))["tri"], n, p_tri, "tri", base="one")

    cpp = root / "cpp_weights"
    names = ("u_base.txt", "w_shp_base.txt", "w_exp_base.txt")
    present = [(cpp / f).is_file() for f in names]
    lmk_mean = lmk_shp = lmk_exp = None
    if any(present):
        if not all(present):
            missing = [f for f, ok in zip(names, present) if not ok]
            raise _err(cpp / missing[0], None, "file not found (the 68-point bases need u_base.txt, "
                                               "w_shp_base.txt and w_exp_base.txt together)")
        rows = 3 * NUM_LANDMARKS
        u_base = _flat_vector(_load_txt(cpp / names[0]), cpp / names[0], "u_base", length=rows)
        lmk_shp = _basis(_load_txt(cpp / names[1]), cpp / names[1], "w_shp_base", rows)
        lmk_exp = _basis(_load_txt(cpp / names[2]), cpp / names[2], "w_exp_base", rows)
        lmk_mean = u_base.reshape(NUM_LANDMARKS, 3)
        # u_base must be the dense mean at the landmarks (verified to 5e-7 on the released files).
        diff = float(np.abs(mean[lmk].astype(np.float64) - lmk_mean).max())
        if diff > 1.0:
            raise _err(cpp / names[0], "u_base", f"differs from (u_shp + u_exp)[keypoints] by up to {diff:.3g} "
                                                 "BFM units: files from different models?")
    return MorphableModel(mean=mean, triangles=tri, landmark_indices=lmk, landmark_mean=lmk_mean,
                          landmark_shape_basis=lmk_shp, landmark_exp_basis=lmk_exp,
                          source=f"3DDFA mean shape ({root})")


def load_3ddfa_bfm_pkl(path: str | os.PathLike) -> MorphableModel:
    """Load a 3DDFA / 3DDFA_V2 BFM pickle (e.g. ``bfm_noneck_v3.pkl``).

    Documented layout: a dict with ``u`` (3N, 1) mean (identity + expression mean), ``w_shp`` (3N, Ks) and
    ``w_exp`` (3N, Ke) bases (3DDFA keeps Ks = 40, Ke = 10; 300W-LP parameters apply x1), ``tri`` triangles
    ((F, 3) or (3, F); 0- or 1-based, detected from the range) and ``keypoints`` (204,) flat xyz-interleaved
    indices of the 68 landmarks. Not testable here on the real file (BFM-derived, not redistributable): tested on
    synthetic files with this layout.

    Security: the pickle is read by :func:`faceforge.utils.safe_pickle.load_array_pickle`, which rebuilds only
    NumPy arrays and built-in containers: a pickle that names any other class is refused, so loading it runs no code.

    Args:
        path: the pickle file.

    Returns:
        MorphableModel with dense bases (landmark bases derived from them).

    Raises:
        MorphableModelError: naming the file and key that is missing or malformed.
    """
    p = _require_file(Path(path))
    try:
        data = load_array_pickle(p)
    except (pickle.UnpicklingError, EOFError, AttributeError, ImportError, ValueError) as exc:
        raise _err(p, None, f"not a readable pickle ({exc})") from exc
    if not isinstance(data, dict):
        raise _err(p, None, f"expected a dict, got {type(data).__name__}")
    for key in ("u", "w_shp", "w_exp", "tri", "keypoints"):
        if key not in data:
            raise _err(p, key, f"missing key (found {sorted(map(str, data))})")
    u = _flat_vector(data["u"], p, "u")
    n = u.size // 3
    w_shp = _basis(data["w_shp"], p, "w_shp", u.size)
    w_exp = _basis(data["w_exp"], p, "w_exp", u.size)
    tri = _triangles_from(data["tri"], n, p, "tri")
    lmk = _landmarks_from_flat(data["keypoints"], p, "keypoints")
    if lmk.max() >= n:
        raise _err(p, "keypoints", f"landmark vertex index {lmk.max()} >= number of vertices {n}")
    return MorphableModel(mean=u.reshape(-1, 3), triangles=tri, landmark_indices=lmk, shape_basis=w_shp,
                          exp_basis=w_exp, source=f"3DDFA BFM pickle ({p})")


def _read_exp_pca_bin(path: Path, n_vertices: int) -> tuple[np.ndarray, np.ndarray]:
    """Read an ``Exp_Pca.bin``: int32 K, float32 mean (3N), float32 K x 3N components (component-major)."""
    raw = path.read_bytes()
    if len(raw) < 4:
        raise _err(path, None, "file too short for an Exp_Pca.bin header")
    k = int(np.frombuffer(raw[:4], dtype="<i4")[0])
    expected = 4 + 4 * 3 * n_vertices * (1 + k)
    if k <= 0 or len(raw) != expected:
        raise _err(path, None, f"header says {k} components of {n_vertices} vertices ({expected} bytes), "
                               f"file has {len(raw)} bytes")
    body = np.frombuffer(raw[4:], dtype="<f4")
    mu = body[:3 * n_vertices].copy()
    pcs = body[3 * n_vertices:].reshape(k, 3 * n_vertices).T.copy()
    return mu, pcs


def load_bfm_2009(morphable_model_mat: str | os.PathLike, exp_pca: str | os.PathLike,
                  model_info_mat: str | os.PathLike) -> MorphableModel:
    """Build the 300W-LP model (53,215 vertices) from the full BFM 2009 and 3DDFA's model files.

    Needs three files that cannot ship with this project (BFM registration, 3DDFA "Code" download):

    * ``01_MorphableModel.mat`` (BFM 2009): ``shapeMU`` (160470, 1), ``shapePC`` (160470, 199), xyz-interleaved,
      53,490 vertices, micrometres.
    * ``model_info.mat`` (3DDFA): ``trimIndex`` (53215, 1) 1-based BFM vertices kept by 3DDFA, ``tri`` (3, F)
      1-based triangles of the trimmed mesh, ``keypoints`` (1, 68) 1-based landmark vertices.
    * the expression model, either 3DDFA's ``Model_Expression.mat`` (``mu_exp`` (159645, 1), ``w_exp``
      (159645, 29): the basis 300W-LP's 29 ``Exp_Para`` refer to) or an ``Exp_Pca.bin`` (int32 K, float32 mean
      3N, float32 K x 3N components) on the same 53,215 vertices. Beware that the widely shared ``Exp_Pca.bin``
      of Guo et al. is a different FaceWarehouse basis (more than 29 components) that does NOT match
      300W-LP's ``Exp_Para``.

    Result: ``mean = shapeMU[trim] + mu_exp``, ``shape_basis = shapePC[trim]`` (``Shape_Para`` applies x1),
    ``exp_basis = w_exp``. Written from these documented formats; not testable here on the real files (tested on
    synthetic files with the same keys and shapes).

    Args:
        morphable_model_mat: path of ``01_MorphableModel.mat``.
        exp_pca: path of ``Model_Expression.mat`` (``.mat``) or of an ``Exp_Pca.bin`` (any other suffix).
        model_info_mat: path of 3DDFA's ``model_info.mat``.

    Returns:
        MorphableModel with dense shape and expression bases.

    Raises:
        MorphableModelError: naming the file and key that is missing or inconsistent.
    """
    p_bfm, p_exp, p_info = Path(morphable_model_mat), Path(exp_pca), Path(model_info_mat)
    info = _load_mat(p_info, ("trimIndex", "tri", "keypoints"))
    bfm = _load_mat(p_bfm, ("shapeMU", "shapePC"))
    shape_mu = _flat_vector(bfm["shapeMU"], p_bfm, "shapeMU")
    n_full = shape_mu.size // 3
    shape_pc = _basis(bfm["shapePC"], p_bfm, "shapePC", shape_mu.size)

    trim = np.asarray(info["trimIndex"]).reshape(-1)
    if trim.size == 0 or np.any(trim != np.round(trim)):
        raise _err(p_info, "trimIndex", "expected integer 1-based vertex indices")
    trim = trim.astype(np.int64) - 1
    if trim.min() < 0 or trim.max() >= n_full:
        raise _err(p_info, "trimIndex", f"1-based indices must lie in [1, {n_full}] (the BFM's vertex count)")
    n = trim.size
    rows = (3 * trim[:, None] + np.arange(3)[None, :]).reshape(-1)

    if p_exp.suffix.lower() == ".mat":
        e = _load_mat(p_exp, ("mu_exp", "w_exp"))
        mu_exp = _flat_vector(e["mu_exp"], p_exp, "mu_exp", length=3 * n)
        w_exp = _basis(e["w_exp"], p_exp, "w_exp", 3 * n)
    else:
        _require_file(p_exp)
        mu_exp, w_exp = _read_exp_pca_bin(p_exp, n)

    tri = _triangles_from(info["tri"], n, p_info, "tri", base="one")
    kpt = np.asarray(info["keypoints"]).reshape(-1)
    if kpt.size != NUM_LANDMARKS or np.any(kpt != np.round(kpt)):
        raise _err(p_info, "keypoints", f"expected {NUM_LANDMARKS} integer 1-based vertex indices, got {kpt.size}")
    kpt = kpt.astype(np.int64) - 1
    if kpt.min() < 0 or kpt.max() >= n:
        raise _err(p_info, "keypoints", f"1-based indices must lie in [1, {n}]")
    mean = (shape_mu[rows].astype(np.float64) + mu_exp).astype(np.float32).reshape(-1, 3)
    return MorphableModel(mean=mean, triangles=tri, landmark_indices=kpt, shape_basis=shape_pc[rows],
                          exp_basis=w_exp, source=f"BFM 2009 ({p_bfm}) + 3DDFA ({p_info}, {p_exp})")
