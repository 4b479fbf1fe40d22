"""Voxelisation of a posed face mesh into VRN's image-aligned occupancy volume.

VRN (Jackson et al., "Large Pose 3D Face Reconstruction from a Single Image via Direct Volumetric CNN
Regression", ICCV 2017, Sec. 3.1; A. Jackson's PhD thesis) trains on 192x192 image crops paired with 192x192x200
binary volumes made from the 300W-LP 3DMM fits: the mesh is projected with the label's pose, cropped and scaled
with the image, and voxelised so that the volume is aligned with the image. The volume is filled "from the face
surface backwards": a voxel is occupied when it lies behind (or on) the visible face surface, down to the back of
the volume. The mouth is filled (it is part of the solid), ears and neck are absent.

This module implements that with the binding frame of :mod:`faceforge.geometry.volume_frame`
(array ``[k, v, u]``, ``(D, H, W) = (200, 192, 192)``, larger ``k`` nearer the camera, pixel centres at integer
coordinates):

1. :func:`crop_frame_from_points`: a square crop around the projected face (the bounding box of the projected
   no-neck mesh plus a margin, scaled to 192 pixels) and the depth offset: the face's rear-most vertex lands at
   ``k = z_margin`` (2 by default), so every visible surface point has ``k >= z_margin`` and only the front can
   leave the volume (a face deeper than ``D - z_margin`` levels; clipped and counted).
2. :class:`FaceTopology`: the triangles to voxelise. :func:`load_noneck_topology` reads 3DDFA_V2's no-neck, no-ear
   BFM topology (``tri.pkl``: (3, 76073) int32 0-based triangles over the vertex subset ``indices.npy``: (38365,)
   int32 sorted indices into the 53,215 vertices of the 3DDFA / 300W-LP BFM; every one of its triangles is a
   triangle of 3DDFA's ``tri.mat`` with the same winding, and the 68 landmark vertices are in the subset: checked
   on the released files). That mesh is NOT closed at the mouth: the lips bound a hole of 78 boundary edges
   (between the lips; open when the expression opens the mouth). :meth:`FaceTopology.closed_mesh` caps every
   hole except the outer boundary with a fan around the hole's centroid, so that the z-buffer fills the mouth.
3. :func:`rasterize_depth`: a vectorised z-buffer (no Python loop over triangles) giving, per pixel centre, the
   depth of the nearest surface (the largest ``k``) and the footprint mask.
4. :func:`face_columns` / :func:`voxelize_face`: voxel ``(k, v, u)`` is filled iff pixel ``(u, v)`` is inside the
   projected face and ``k <= front(v, u)``, i.e. the voxel centre lies on or behind the visible surface. Every
   column is therefore a single run ``[0, floor(front)]``, which :mod:`faceforge.data.reconstruction.store` stores as a
   height map.

Mesh coordinates: ``vertices_img`` are (x, y, z) source-image pixels as returned by
:func:`faceforge.geometry.projection.project_300wlp` (x right, y down, larger z nearer the camera).
"""
from __future__ import annotations

import io
import os
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

from faceforge.errors import FaceforgeError
from faceforge.geometry.volume_frame import VOLUME_DEPTH, VOLUME_SIZE, VolumeFrame
from faceforge.utils.safe_pickle import ArrayUnpickler

__all__ = [
    "DEFAULT_MARGIN",
    "DEFAULT_Z_MARGIN",
    "FaceColumns",
    "FaceTopology",
    "VoxelizationError",
    "crop_frame_from_points",
    "crop_image_to_frame",
    "face_columns",
    "find_boundary_loops",
    "load_noneck_topology",
    "rasterize_depth",
    "topology_from_triangles",
    "voxelize_face",
]

#: Crop margin on each side, as a fraction of the face box's longer side: the crop side is
#: ``max(w, h) * (1 + 2 * margin)`` of the projected no-neck mesh's box, so the face fills 1/1.2 of the crop.
DEFAULT_MARGIN = 0.1
#: Depth level of the face's rear-most vertex (see :func:`crop_frame_from_points`).
DEFAULT_Z_MARGIN = 2.0


class VoxelizationError(FaceforgeError, ValueError):
    """Malformed vertices, triangles, topology files, or a face that cannot be placed in a crop."""


# ---------------------------------------------------------------------------------------------------------------
# Topology
# ---------------------------------------------------------------------------------------------------------------

def find_boundary_loops(triangles: np.ndarray) -> list[np.ndarray]:
    """Ordered boundary loops of a triangle mesh.

    A boundary edge belongs to exactly one triangle. Each loop follows the boundary edges in the direction they
    have in their triangle (``a -> b`` for a triangle ``(a, b, c)`` wound ``a, b, c``).

    Args:
        triangles: (F, 3) integer vertex indices.

    Returns:
        The loops as (L,) int64 vertex-index arrays, longest first (for an open face mesh, the outer boundary is
        the first one).

    Raises:
        VoxelizationError: if the boundary is not a set of simple loops (a vertex with several outgoing boundary
            edges, or an open chain).
    """
    tri = _check_triangles(triangles)
    if tri.shape[0] == 0:
        return []
    directed = np.concatenate([tri[:, [0, 1]], tri[:, [1, 2]], tri[:, [2, 0]]])
    undirected = np.sort(directed, axis=1)
    _, inverse, counts = np.unique(undirected, axis=0, return_inverse=True, return_counts=True)
    boundary = directed[counts[inverse.reshape(-1)] == 1]
    if boundary.shape[0] == 0:
        return []
    starts, n_out = np.unique(boundary[:, 0], return_counts=True)
    if np.any(n_out > 1):
        raise VoxelizationError(f"non-simple mesh boundary: vertex {int(starts[n_out > 1][0])} starts "
                                f"{int(n_out.max())} boundary edges")
    nxt = dict(zip(boundary[:, 0].tolist(), boundary[:, 1].tolist(), strict=True))
    loops: list[np.ndarray] = []
    unvisited = set(nxt)
    while unvisited:
        first = min(unvisited)
        loop = [first]
        unvisited.discard(first)
        cur = nxt[first]
        while cur != first:
            if cur not in unvisited:
                raise VoxelizationError(f"open or self-touching mesh boundary at vertex {cur}")
            loop.append(cur)
            unvisited.discard(cur)
            cur = nxt[cur]
        loops.append(np.asarray(loop, dtype=np.int64))
    loops.sort(key=lambda a: (-a.size, int(a.min())))
    return loops


@dataclass(frozen=True)
class FaceTopology:
    """Which triangles of a morphable model to voxelise, and which holes to cap.

    Attributes:
        triangles: (F, 3) int64 0-based indices into the model's vertex array (all N vertices, not a subset).
        num_vertices: N, the model's vertex count.
        hole_loops: ordered boundary loops (int64 vertex indices) to cap; the outer boundary of the face is not
            among them.
        source: a human-readable description.
    """

    triangles: np.ndarray
    num_vertices: int
    hole_loops: tuple[np.ndarray, ...] = field(default=())
    source: str = ""

    def __post_init__(self) -> None:
        object.__setattr__(self, "triangles", _check_triangles(self.triangles))
        object.__setattr__(self, "hole_loops", tuple(np.asarray(h, dtype=np.int64) for h in self.hole_loops))
        object.__setattr__(self, "_vertex_indices", np.unique(self.triangles))

    @property
    def vertex_indices(self) -> np.ndarray:
        """(M,) int64 sorted indices of the vertices the triangles use (the face region)."""
        return self._vertex_indices  # type: ignore[attr-defined]

    def closed_mesh(self, vertices: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The face mesh with its holes (the mouth) capped.

        Each hole loop ``l_0 .. l_{L-1}`` gets one new vertex at the centroid of its loop vertices (computed from
        ``vertices``, so it follows the pose and expression) and the fan triangles ``(l_{i+1}, l_i, c)``, wound
        like the mesh (each cap triangle traverses the boundary edge opposite to its triangle's direction).

        Args:
            vertices: (N, 3) float vertices of the whole model (any frame: model units or image pixels).

        Returns:
            ``(vertices (N + holes, 3) float64, triangles (F + sum L, 3) int64)``: the input vertices followed by
            the cap centroids, and the face triangles followed by the cap triangles.

        Raises:
            VoxelizationError: if ``vertices`` is not (N, 3).
        """
        v = np.asarray(vertices, dtype=np.float64)
        if v.shape != (self.num_vertices, 3):
            raise VoxelizationError(f"vertices must be ({self.num_vertices}, 3) for topology {self.source!r}, "
                                    f"got {v.shape}")
        if not self.hole_loops:
            return v, self.triangles
        centroids = np.stack([v[loop].mean(axis=0) for loop in self.hole_loops])
        caps = []
        for h, loop in enumerate(self.hole_loops):
            c = np.full(loop.size, self.num_vertices + h, dtype=np.int64)
            caps.append(np.stack([np.roll(loop, -1), loop, c], axis=1))
        return np.concatenate([v, centroids]), np.concatenate([self.triangles, *caps])


def topology_from_triangles(triangles: np.ndarray, num_vertices: int, source: str = "",
                            cap_holes: bool = True) -> FaceTopology:
    """A :class:`FaceTopology` from a triangle list, capping every boundary loop but the longest.

    Args:
        triangles: (F, 3) 0-based indices into the N model vertices.
        num_vertices: N.
        source: description for messages and reports.
        cap_holes: cap the inner boundary loops (e.g. the mouth); False keeps the mesh as it is.

    Returns:
        FaceTopology.

    Raises:
        VoxelizationError: on out-of-range indices or a non-simple boundary.
    """
    tri = _check_triangles(triangles)
    if tri.size and (tri.min() < 0 or tri.max() >= num_vertices):
        raise VoxelizationError(f"{source or 'triangles'}: indices must lie in [0, {num_vertices}), got "
                                f"[{tri.min()}, {tri.max()}]")
    holes = tuple(find_boundary_loops(tri)[1:]) if cap_holes else ()
    return FaceTopology(triangles=tri, num_vertices=int(num_vertices), hole_loops=holes, source=source)


def load_noneck_topology(configs_dir: str | os.PathLike, num_vertices: int = 53215,
                         cap_holes: bool = True) -> FaceTopology:
    """Load 3DDFA_V2's no-neck, no-ear BFM topology and cap its mouth.

    Files (cleardusk/3DDFA_V2 ``configs/``): ``tri.pkl``, a pickled (3, F) or (F, 3) integer array of 0-based
    triangles over the vertex subset, and ``indices.npy``, the (M,) sorted indices of that subset into the
    53,215-vertex 3DDFA / 300W-LP BFM (M = 38,365, F = 76,073 in the released files). The pickle is read with an
    unpickler that only rebuilds NumPy arrays.

    Args:
        configs_dir: folder with ``tri.pkl`` and ``indices.npy``.
        num_vertices: N of the model the indices refer to (53,215).
        cap_holes: cap the mouth (see :meth:`FaceTopology.closed_mesh`).

    Returns:
        FaceTopology whose triangles index the full model's vertices.

    Raises:
        VoxelizationError: naming the file when it is missing, unreadable, or holds an array of the wrong shape
            or range.
    """
    root = Path(configs_dir)
    p_tri, p_idx = root / "tri.pkl", root / "indices.npy"
    for p in (p_tri, p_idx):
        if not p.is_file():
            raise VoxelizationError(f"{p}: file not found (3DDFA_V2 no-neck topology needs tri.pkl and "
                                    "indices.npy)")
    try:
        tri = np.asarray(ArrayUnpickler(io.BytesIO(p_tri.read_bytes())).load())
    except Exception as exc:  # any unpickling failure means a bad (or unsafe) file
        raise VoxelizationError(f"{p_tri}: not a readable pickled NumPy array ({exc})") from exc
    try:
        idx = np.load(p_idx, allow_pickle=False)
    except (ValueError, OSError) as exc:
        raise VoxelizationError(f"{p_idx}: not a readable .npy array ({exc})") from exc
    if idx.ndim != 1 or not np.issubdtype(idx.dtype, np.integer) or idx.size == 0:
        raise VoxelizationError(f"{p_idx}: expected a 1-D integer index array, got {idx.dtype} {idx.shape}")
    idx = idx.astype(np.int64)
    if idx.min() < 0 or idx.max() >= num_vertices or np.unique(idx).size != idx.size:
        raise VoxelizationError(f"{p_idx}: indices must be distinct and lie in [0, {num_vertices})")
    if tri.ndim != 2 or 3 not in tri.shape or not np.issubdtype(tri.dtype, np.integer):
        raise VoxelizationError(f"{p_tri}: expected a (3, F) or (F, 3) integer array, got {tri.dtype} {tri.shape}")
    if tri.shape[0] == 3 and tri.shape[1] != 3:
        tri = tri.T
    tri = tri.astype(np.int64)
    if tri.min() < 0 or tri.max() >= idx.size:
        raise VoxelizationError(f"{p_tri}: 0-based indices must lie in [0, {idx.size}) (the size of "
                                f"{p_idx.name}), got [{tri.min()}, {tri.max()}]")
    return topology_from_triangles(idx[tri], num_vertices, source=f"3DDFA_V2 no-neck ({root})",
                                   cap_holes=cap_holes)


def _check_triangles(triangles: np.ndarray) -> np.ndarray:
    tri = np.asarray(triangles)
    if tri.ndim != 2 or tri.shape[1] != 3 or not np.issubdtype(tri.dtype, np.integer):
        raise VoxelizationError(f"triangles must be an (F, 3) integer array, got {tri.dtype} {tri.shape}")
    return np.ascontiguousarray(tri, dtype=np.int64)


def _check_vertices(vertices: np.ndarray, name: str = "vertices") -> np.ndarray:
    v = np.asarray(vertices, dtype=np.float64)
    if v.ndim != 2 or v.shape[1] != 3:
        raise VoxelizationError(f"{name} must be (N, 3), got shape {v.shape}")
    if not np.all(np.isfinite(v)):
        raise VoxelizationError(f"{name} contain NaN or inf")
    return v


# ---------------------------------------------------------------------------------------------------------------
# Crop frame
# ---------------------------------------------------------------------------------------------------------------

def crop_frame_from_points(points: np.ndarray, image_size: tuple[int, int], margin: float = DEFAULT_MARGIN,
                           size: int = VOLUME_SIZE, depth: int = VOLUME_DEPTH, z_margin: float = DEFAULT_Z_MARGIN,
                           depth_scale: float = 1.0) -> VolumeFrame:
    """Square VRN-style crop around projected face points, with the depth placement.

    The crop is the square of side ``max(w, h) * (1 + 2 * margin)`` centred on the points' bounding box
    (``w, h`` its width and height in source pixels), scaled to ``size`` pixels: ``s = size / side``, and the box
    centre ``c`` maps to the crop centre ``(size - 1) / 2`` (pixel centres at integer coordinates, so the crop
    covers ``[-0.5, size - 0.5]``). With 3D points the depth offset puts the rear-most point at ``k = z_margin``:
    ``z_offset = z_margin - depth_scale * s * min(z)``; with 2D points ``z_offset = 0``.

    Pass the projected vertices of the face mesh actually voxelised (the no-neck mesh), so that the whole face is
    inside the crop and the volume.

    Args:
        points: (N, 2) or (N, 3) source-image pixels (x right, y down, z larger nearer the camera).
        image_size: ``(height, width)`` of the source image in pixels.
        margin: extra border on each side, as a fraction of the box's longer side (0.1: the face spans 1/1.2 of
            the crop).
        size: crop side in pixels (192).
        depth: number of depth levels (200).
        z_margin: depth level of the rear-most point.
        depth_scale: depth levels per crop pixel of depth (1: isotropic voxels).

    Returns:
        VolumeFrame mapping source pixels to (u, v, k).

    Raises:
        VoxelizationError: for malformed or non-finite points, a degenerate box, a negative margin, or a box whose
            centre lies outside the image (no face to crop there).
    """
    p = np.asarray(points, dtype=np.float64)
    if p.ndim != 2 or p.shape[1] not in (2, 3) or p.shape[0] < 2:
        raise VoxelizationError(f"points must be (N, 2) or (N, 3) with N >= 2, got shape {p.shape}")
    if not np.all(np.isfinite(p)):
        raise VoxelizationError("points contain NaN or inf")
    if margin < 0 or size <= 0 or depth <= 0 or depth_scale <= 0:
        raise VoxelizationError(f"need margin >= 0 and positive size, depth, depth_scale; got margin={margin}, "
                                f"size={size}, depth={depth}, depth_scale={depth_scale}")
    lo, hi = p[:, :2].min(axis=0), p[:, :2].max(axis=0)
    side = float((hi - lo).max()) * (1.0 + 2.0 * margin)
    if not side > 1e-6:
        raise VoxelizationError(f"degenerate face box {lo.tolist()} .. {hi.tolist()}")
    height, width = int(image_size[0]), int(image_size[1])
    centre = (lo + hi) / 2.0
    if not (-0.5 <= centre[0] <= width - 0.5 and -0.5 <= centre[1] <= height - 0.5):
        raise VoxelizationError(f"face box centre ({centre[0]:.1f}, {centre[1]:.1f}) lies outside the "
                                f"{width}x{height} image")
    s = size / side
    half = (size - 1) / 2.0
    z_offset = 0.0
    if p.shape[1] == 3:
        z_offset = float(z_margin - depth_scale * s * p[:, 2].min())
    return VolumeFrame(scale=float(s), tx=float(half - s * centre[0]), ty=float(half - s * centre[1]),
                       z_offset=z_offset, depth_scale=float(depth_scale), size=int(size), depth=int(depth))


def crop_image_to_frame(image: np.ndarray, frame: VolumeFrame, antialias: bool = True) -> np.ndarray:
    """Resample a source image into the frame's ``size x size`` crop (the same transform as the volume).

    Crop pixel ``(u, v)`` takes the source at ``((u - tx) / s, (v - ty) / s)`` (bilinear, pixel centres at integer
    coordinates on both sides, black outside the image). When shrinking (``s < 1``) the source is first blurred
    with a Gaussian of sigma ``(1 / s - 1) / 2`` source pixels (scikit-image's anti-aliasing rule) so that the
    crop does not alias.

    Args:
        image: (H, W, 3) uint8 RGB.
        frame: the crop frame.
        antialias: blur before shrinking.

    Returns:
        (size, size, 3) uint8 RGB, C-contiguous.

    Raises:
        VoxelizationError: if the image is not (H, W, 3) uint8.
    """
    img = np.asarray(image)
    if img.ndim != 3 or img.shape[2] != 3 or img.dtype != np.uint8:
        raise VoxelizationError(f"image must be (H, W, 3) uint8, got {img.dtype} {img.shape}")
    s = frame.scale
    if antialias and s < 1.0:
        sigma = (1.0 / s - 1.0) / 2.0
        if sigma > 0.05:
            img = cv2.GaussianBlur(img, (0, 0), sigmaX=sigma, sigmaY=sigma, borderType=cv2.BORDER_REFLECT_101)
    m = np.array([[s, 0.0, frame.tx], [0.0, s, frame.ty]], dtype=np.float64)
    out = cv2.warpAffine(img, m, (frame.size, frame.size), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT,
                         borderValue=(0, 0, 0))
    return np.ascontiguousarray(out)


# ---------------------------------------------------------------------------------------------------------------
# Z-buffer and voxelisation
# ---------------------------------------------------------------------------------------------------------------

def rasterize_depth(vertices_uvk: np.ndarray, triangles: np.ndarray,
                    size: int | tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """Depth of the nearest surface at every pixel centre (a vectorised orthographic z-buffer).

    A pixel ``(u, v)`` (centre at integer coordinates) is covered by a triangle when its centre lies inside the
    triangle's (u, v) projection, edges included (so neighbouring triangles leave no cracks). Its depth there is
    the barycentric (affine, exact for an orthographic projection) interpolation of the vertices' ``k``; the
    z-buffer keeps the largest ``k`` (nearest the camera). Triangles are expanded to the pixel centres of their
    bounding boxes with array operations (no loop over triangles); degenerate (zero-area) triangles are skipped.
    Winding does not matter (no back-face culling).

    Args:
        vertices_uvk: (N, 3) volume coordinates (u, v pixels, k depth levels), any float dtype.
        triangles: (F, 3) int vertex indices.
        size: ``S`` for an S x S raster, or ``(H, W)``.

    Returns:
        ``(front, mask)``: ``front`` (H, W) float64, the nearest surface's ``k`` (``-inf`` where nothing is
        drawn); ``mask`` (H, W) bool, covered pixels.

    Raises:
        VoxelizationError: on malformed or non-finite vertices, or triangles out of range.
    """
    v = _check_vertices(vertices_uvk, "vertices_uvk")
    tri = _check_triangles(triangles)
    h, w = (size, size) if isinstance(size, (int, np.integer)) else (int(size[0]), int(size[1]))
    front = np.full(h * w, -np.inf)
    if tri.shape[0] == 0:
        return front.reshape(h, w), np.zeros((h, w), dtype=bool)
    if tri.min() < 0 or tri.max() >= v.shape[0]:
        raise VoxelizationError(f"triangle indices must lie in [0, {v.shape[0]}), got [{tri.min()}, {tri.max()}]")
    p = v[tri]  # (F, 3 corners, 3 coords)
    x, y, z = p[..., 0], p[..., 1], p[..., 2]

    def lo(a: np.ndarray) -> np.ndarray:  # row-wise min of 3 columns (faster than a.min(axis=1))
        return np.minimum(np.minimum(a[:, 0], a[:, 1]), a[:, 2])

    def hi(a: np.ndarray) -> np.ndarray:
        return np.maximum(np.maximum(a[:, 0], a[:, 1]), a[:, 2])

    u0 = np.maximum(np.ceil(lo(x)), 0).astype(np.int64)
    u1 = np.minimum(np.floor(hi(x)), w - 1).astype(np.int64)
    v0 = np.maximum(np.ceil(lo(y)), 0).astype(np.int64)
    v1 = np.minimum(np.floor(hi(y)), h - 1).astype(np.int64)
    area = (x[:, 1] - x[:, 0]) * (y[:, 2] - y[:, 0]) - (x[:, 2] - x[:, 0]) * (y[:, 1] - y[:, 0])
    nu, nv = u1 - u0 + 1, v1 - v0 + 1
    keep = (nu > 0) & (nv > 0) & (np.abs(area) > 1e-12)
    if not np.any(keep):
        return front.reshape(h, w), np.zeros((h, w), dtype=bool)
    x, y, z, area = x[keep], y[keep], z[keep], area[keep]
    u0, v0, nu, nv = u0[keep], v0[keep], nu[keep], nv[keep]
    counts = nu * nv
    t = np.repeat(np.arange(counts.size), counts)  # triangle of each candidate pixel
    offset = np.arange(t.size) - np.repeat(np.cumsum(counts) - counts, counts)
    pu = (u0[t] + offset % nu[t]).astype(np.float64)
    pv = (v0[t] + offset // nu[t]).astype(np.float64)
    xt, yt, inv_area = x[t], y[t], 1.0 / area[t]
    # barycentric weights of the pixel centre: w_i = signed area of the sub-triangle opposite corner i / area
    w0 = ((xt[:, 1] - pu) * (yt[:, 2] - pv) - (xt[:, 2] - pu) * (yt[:, 1] - pv)) * inv_area
    w1 = ((xt[:, 2] - pu) * (yt[:, 0] - pv) - (xt[:, 0] - pu) * (yt[:, 2] - pv)) * inv_area
    w2 = 1.0 - w0 - w1
    eps = -1e-9
    inside = (w0 >= eps) & (w1 >= eps) & (w2 >= eps)
    zt = z[t[inside]]
    depth = w0[inside] * zt[:, 0] + w1[inside] * zt[:, 1] + w2[inside] * zt[:, 2]
    flat = pv[inside].astype(np.int64) * w + pu[inside].astype(np.int64)
    np.maximum.at(front, flat, depth)
    front = front.reshape(h, w)
    return front, np.isfinite(front)


@dataclass(frozen=True)
class FaceColumns:
    """A voxelised face as one run per column (the form volumes are stored in).

    Attributes:
        height: (H, W) int16, filled voxels per column: column (v, u) is filled for ``0 <= k < height[v, u]``.
        front: (H, W) float64, depth ``k`` of the visible surface (``-inf`` outside the face).
        mask: (H, W) bool, pixels inside the projected face.
        depth: D, number of depth levels.
        clipped_front: columns with ``floor(front) >= D``: filled to ``D``, their top is lost (the face was too
            deep for the volume).
        clipped_back: columns inside the face whose surface lies behind ``k = 0`` (``front < 0``): left empty.
        vertices_outside: mesh vertices whose (u, v) fall outside the crop (that part of the face is cut off).
    """

    height: np.ndarray
    front: np.ndarray
    mask: np.ndarray
    depth: int
    clipped_front: int
    clipped_back: int
    vertices_outside: int

    @property
    def filled_columns(self) -> int:
        """Number of columns with at least one filled voxel."""
        return int(np.count_nonzero(self.height))

    def volume(self) -> np.ndarray:
        """The dense (D, H, W) bool volume: ``volume[k, v, u] = k < height[v, u]``."""
        k = np.arange(self.depth, dtype=np.int16)[:, None, None]
        return k < self.height[None]


def face_columns(vertices_img: np.ndarray, triangles: np.ndarray, frame: VolumeFrame) -> FaceColumns:
    """Voxelise a posed face mesh as per-column runs ("filled from the face surface backwards").

    The vertices are mapped to volume coordinates with ``frame`` (:meth:`VolumeFrame.image_to_volume`), the
    nearest surface is z-buffered at every pixel centre (:func:`rasterize_depth`), and voxel ``(k, v, u)`` is
    filled iff ``(u, v)`` is inside the face and ``k <= front(v, u)`` (voxel centre on or behind the surface):
    ``height = clip(floor(front) + 1, 0, D)``. Pass a closed face mesh (:meth:`FaceTopology.closed_mesh`) so the
    mouth is filled; the no-neck topology has no ears or neck.

    Args:
        vertices_img: (N, 3) source-image pixels (x right, y down, z larger nearer the camera), e.g. from
            :func:`faceforge.geometry.projection.project_300wlp`.
        triangles: (F, 3) int vertex indices.
        frame: the crop and depth placement (:func:`crop_frame_from_points`).

    Returns:
        FaceColumns with clipping counts.

    Raises:
        VoxelizationError: on malformed or non-finite input.
    """
    v = _check_vertices(vertices_img, "vertices_img")
    uvk = frame.image_to_volume(v)
    front, mask = rasterize_depth(uvk, triangles, frame.size)
    top = np.full(front.shape, -1.0)
    top[mask] = np.floor(front[mask])
    d = int(frame.depth)
    clipped_front = int(np.count_nonzero(mask & (top >= d)))
    clipped_back = int(np.count_nonzero(mask & (top < 0)))
    height = np.clip(top + 1, 0, d).astype(np.int16)
    outside = ((uvk[:, 0] < -0.5) | (uvk[:, 0] > frame.size - 0.5) | (uvk[:, 1] < -0.5)
               | (uvk[:, 1] > frame.size - 0.5))
    used = np.zeros(v.shape[0], dtype=bool)
    used[np.asarray(triangles, dtype=np.int64).reshape(-1)] = True
    return FaceColumns(height=height, front=front, mask=mask, depth=d, clipped_front=clipped_front,
                       clipped_back=clipped_back, vertices_outside=int(np.count_nonzero(outside & used)))


def voxelize_face(vertices_img: np.ndarray, triangles: np.ndarray, frame: VolumeFrame) -> np.ndarray:
    """The dense binary volume of a posed face mesh (see :func:`face_columns` for the rule and the stats).

    Args:
        vertices_img: (N, 3) source-image pixels.
        triangles: (F, 3) int vertex indices (a closed face mesh: :meth:`FaceTopology.closed_mesh`).
        frame: the crop and depth placement.

    Returns:
        (D, H, W) bool volume indexed ``[k, v, u]`` (VRN: (200, 192, 192)), larger ``k`` nearer the camera.

    Raises:
        VoxelizationError: on malformed or non-finite input.
    """
    return face_columns(vertices_img, triangles, frame).volume()
