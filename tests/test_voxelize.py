"""Tests of faceforge.geometry.voxelize: crop frame, z-buffer, topology (no neck, capped mouth), voxelisation.

Synthetic meshes check the rules exactly (pixel-centre coverage, depth interpolation, "k <= front" filling,
clipping); the real 3DDFA / 3DDFA_V2 files check the topology facts the module relies on and that a posed face
voxelises onto the face in its image.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from matplotlib.path import Path as PolygonPath
from scipy.ndimage import binary_dilation

from faceforge.data.reconstruction.mesh import face_mesh_from_label, thin_plate_warp
from faceforge.geometry import load_3ddfa_mean_shape, project_300wlp, read_300wlp_mat
from faceforge.geometry.volume_frame import VolumeFrame
from faceforge.geometry.voxelize import (
    FaceTopology,
    VoxelizationError,
    crop_frame_from_points,
    crop_image_to_frame,
    face_columns,
    find_boundary_loops,
    load_noneck_topology,
    rasterize_depth,
    topology_from_triangles,
    voxelize_face,
)

H = 450
INNER = slice(17, 68)


# --------------------------------------------------------------------------------------------------------------
# Synthetic meshes
# --------------------------------------------------------------------------------------------------------------

def _grid_mesh(n: int, hole: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """An n x n vertex grid in the unit square (z = 0), 2 triangles per cell; optionally minus the centre cell."""
    ys, xs = np.mgrid[0:n, 0:n]
    verts = np.c_[xs.ravel(), ys.ravel(), np.zeros(n * n)].astype(np.float64) / (n - 1)
    tris = []
    c = (n - 1) // 2
    for r in range(n - 1):
        for q in range(n - 1):
            if hole and r == c and q == c:
                continue
            a, b, d, e = r * n + q, r * n + q + 1, (r + 1) * n + q, (r + 1) * n + q + 1
            tris += [(a, b, e), (a, e, d)]
    return verts, np.array(tris, dtype=np.int64)


def test_rasterize_plane_exact_depth_and_no_cracks() -> None:
    # a square [2.3, 12.7] x [3.1, 9.9] made of two triangles, on the plane k = 5 + 0.5 u - 0.25 v
    corners = np.array([[2.3, 3.1], [12.7, 3.1], [12.7, 9.9], [2.3, 9.9]])
    verts = np.c_[corners, 5 + 0.5 * corners[:, 0] - 0.25 * corners[:, 1]]
    tris = np.array([[0, 1, 2], [0, 2, 3]])
    front, mask = rasterize_depth(verts, tris, (16, 20))
    vv, uu = np.mgrid[0:16, 0:20]
    inside = (uu >= 2.3) & (uu <= 12.7) & (vv >= 3.1) & (vv <= 9.9)
    np.testing.assert_array_equal(mask, inside)  # pixel centres, diagonal included: no cracks
    np.testing.assert_allclose(front[mask], (5 + 0.5 * uu - 0.25 * vv)[mask], atol=1e-9)
    assert np.all(np.isneginf(front[~mask]))


def test_rasterize_keeps_nearest_surface_and_ignores_winding() -> None:
    far = np.array([[0, 0, 10.0], [15, 0, 10.0], [0, 15, 10.0]])
    near = np.array([[0, 0, 20.0], [15, 0, 20.0], [0, 15, 20.0]])
    verts = np.concatenate([far, near])
    for tris in (np.array([[0, 1, 2], [3, 4, 5]]), np.array([[3, 5, 4], [0, 2, 1]])):
        front, mask = rasterize_depth(verts, tris, 16)
        assert mask.sum() > 50
        np.testing.assert_allclose(front[mask], 20.0, atol=1e-9)


def test_rasterize_clips_to_raster_and_skips_degenerate() -> None:
    verts = np.array([[-50, -50, 1.0], [50, -50, 1.0], [-50, 50, 1.0], [3, 3, 9.0], [4, 4, 9.0], [5, 5, 9.0]])
    front, mask = rasterize_depth(verts, np.array([[0, 1, 2], [3, 4, 5]]), 8)
    vv, uu = np.mgrid[0:8, 0:8]
    np.testing.assert_array_equal(mask, uu + vv <= 0)  # hypotenuse u + v = 0 through the raster corner
    np.testing.assert_allclose(front[mask], 1.0)  # the zero-area triangle at depth 9 draws nothing
    with pytest.raises(VoxelizationError, match="indices"):
        rasterize_depth(verts, np.array([[0, 1, 6]]), 8)
    with pytest.raises(VoxelizationError, match="NaN"):
        rasterize_depth(np.array([[0, 0, np.nan]] * 3), np.array([[0, 1, 2]]), 8)


def test_face_columns_fill_rule_and_clipping() -> None:
    """Voxel (k, v, u) is filled iff inside the face and k <= front; too-deep columns are clipped and counted."""
    frame = VolumeFrame(scale=1.0, tx=0.0, ty=0.0, z_offset=0.0, size=12, depth=10)
    # a slanted square: front k = 0.8 u - 0.5 across [0.5, 10.5] x [0.5, 10.5], from -0.1 up to 7.9
    corners = np.array([[0.5, 0.5], [10.5, 0.5], [10.5, 10.5], [0.5, 10.5]])
    verts = np.c_[corners, 0.8 * corners[:, 0] - 0.9]
    tris = np.array([[0, 1, 2], [0, 2, 3]])
    cols = face_columns(verts, tris, frame)
    vol = voxelize_face(verts, tris, frame)
    assert vol.shape == (10, 12, 12) and vol.dtype == bool
    k, vv, uu = np.mgrid[0:10, 0:12, 0:12]
    inside = (uu >= 1) & (uu <= 10) & (vv >= 1) & (vv <= 10)
    expected = inside & (k <= 0.8 * uu - 0.9)
    np.testing.assert_array_equal(vol, expected)
    assert cols.clipped_back == 10  # column u = 1: front = -0.1 < 0 -> empty
    assert cols.clipped_front == 0
    # shift the surface forward by 3 levels: u >= 10 reaches k >= 10 = D
    deep = face_columns(verts, tris, VolumeFrame(1.0, 0.0, 0.0, z_offset=3.0, size=12, depth=10))
    assert deep.clipped_front == 10 and deep.height.max() == 10
    assert deep.clipped_back == 0


def test_crop_frame_centres_scales_and_places_depth() -> None:
    pts = np.array([[100.0, 150.0, -20.0], [300.0, 250.0, 40.0], [180.0, 160.0, 5.0]])
    frame = crop_frame_from_points(pts, (450, 450), margin=0.1, size=192, depth=200, z_margin=2.0)
    side = 200 * 1.2
    assert frame.scale == pytest.approx(192 / side)
    uvk = frame.image_to_volume(pts)
    centre = frame.image_to_volume(np.array([[200.0, 200.0, 0.0]]))[0]
    np.testing.assert_allclose(centre[:2], [95.5, 95.5])  # box centre -> crop centre (pixel centres at integers)
    assert uvk[:, 2].min() == pytest.approx(2.0)  # the rear-most point at k = z_margin
    # the crop spans [-0.5, 191.5]: the box's long side spans 192 / 1.2 pixels
    assert uvk[1, 0] - uvk[0, 0] == pytest.approx(192 / 1.2)
    np.testing.assert_allclose(frame.volume_to_image(uvk), pts)
    flat = crop_frame_from_points(pts[:, :2], (450, 450))
    assert flat.z_offset == 0.0


@pytest.mark.parametrize("points, match", [
    (np.array([[1.0, 2.0, np.nan], [3.0, 4.0, 5.0]]), "NaN"),
    (np.array([[5.0, 5.0], [5.0, 5.0]]), "degenerate"),
    (np.array([[600.0, 10.0], [700.0, 90.0]]), "outside"),
    (np.zeros((1, 2)), r"N >= 2"),
])
def test_crop_frame_rejects_bad_points(points: np.ndarray, match: str) -> None:
    with pytest.raises(VoxelizationError, match=match):
        crop_frame_from_points(points, (450, 450))


def test_crop_image_follows_the_frame() -> None:
    img = np.zeros((300, 400, 3), dtype=np.uint8)
    img[120:124, 250:254] = 255  # a bright 4x4 block centred at (251.5, 121.5)
    frame = crop_frame_from_points(np.array([[150.0, 50.0], [350.0, 250.0]]), img.shape[:2], margin=0.0, size=100)
    crop = crop_image_to_frame(img, frame)
    assert crop.shape == (100, 100, 3) and crop.dtype == np.uint8
    u, v, _ = frame.image_to_volume(np.array([[251.5, 121.5, 0.0]]))[0]
    w = crop[..., 0].astype(np.float64)
    vv, uu = np.mgrid[0:100, 0:100]
    cu, cv = (w * uu).sum() / w.sum(), (w * vv).sum() / w.sum()
    assert abs(cu - u) < 0.5 and abs(cv - v) < 0.5
    with pytest.raises(VoxelizationError, match="uint8"):
        crop_image_to_frame(img.astype(np.float32), frame)


def test_boundary_loops_and_hole_capping() -> None:
    verts, tris = _grid_mesh(5, hole=True)
    loops = find_boundary_loops(tris)
    assert [loop.size for loop in loops] == [16, 4]  # outer boundary first, then the hole
    topo = topology_from_triangles(tris, len(verts))
    assert len(topo.hole_loops) == 1 and set(topo.hole_loops[0]) == {12, 13, 17, 18}  # the centre cell
    v2, t2 = topo.closed_mesh(verts)
    assert v2.shape == (26, 3) and t2.shape == (tris.shape[0] + 4, 3)
    np.testing.assert_allclose(v2[25], verts[[12, 13, 17, 18]].mean(axis=0))
    assert [loop.size for loop in find_boundary_loops(t2)] == [16]  # closed, and consistently wound
    # the cap fills the hole in the raster
    frame = VolumeFrame(scale=40.0, tx=0.0, ty=0.0, z_offset=1.0, size=41, depth=8)
    assert not face_columns(verts, tris, frame).mask[25, 25]  # the hole spans [0.5, 0.75]^2 -> pixels 20..30
    assert face_columns(v2, t2, frame).mask.all()
    with pytest.raises(VoxelizationError, match=r"\(25, 3\)"):
        topo.closed_mesh(verts[:-1])


# --------------------------------------------------------------------------------------------------------------
# Real 3DDFA / 3DDFA_V2 files
# --------------------------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def model(fixtures_dir: Path):
    return load_3ddfa_mean_shape(fixtures_dir / "3ddfa")


@pytest.fixture(scope="module")
def topology(fixtures_dir: Path) -> FaceTopology:
    return load_noneck_topology(fixtures_dir / "3ddfa_v2" / "configs")


def test_noneck_topology_facts(model, topology: FaceTopology) -> None:
    assert topology.triangles.shape == (76073, 3) and topology.vertex_indices.size == 38365
    assert topology.triangles.max() < model.num_vertices
    # every no-neck triangle is a tri.mat triangle with the same winding (cyclic rotations allowed)
    def cyclic(tri: np.ndarray) -> set[tuple[int, int, int]]:
        r = np.argmin(tri, axis=1)
        rows = np.arange(len(tri))
        return set(map(tuple, np.stack([tri[rows, (r + j) % 3] for j in range(3)], axis=1).tolist()))
    assert cyclic(topology.triangles) <= cyclic(model.triangles)
    assert np.isin(model.landmark_indices, topology.vertex_indices).all()
    # exactly one hole: the mouth, between the inner-lip landmarks; capping leaves the outer boundary only
    assert len(topology.hole_loops) == 1 and topology.hole_loops[0].size == 78
    loop_centre = model.mean[topology.hole_loops[0]].mean(axis=0)
    mouth_centre = model.mean[model.landmark_indices[60:68]].mean(axis=0)
    assert np.linalg.norm(loop_centre - mouth_centre) < 5000  # < 5 mm (BFM units: micrometres)
    _, tris = topology.closed_mesh(model.mean)
    assert len(find_boundary_loops(tris)) == 1
    # the neck is gone: the lowest no-neck vertex is near the chin landmark, the full mesh goes much lower
    chin_y = model.mean[model.landmark_indices[8], 1]
    assert model.mean[topology.vertex_indices, 1].min() > chin_y - 15000
    assert model.mean[:, 1].min() < chin_y - 30000


def test_noneck_topology_file_errors(tmp_path: Path, fixtures_dir: Path) -> None:
    with pytest.raises(VoxelizationError, match=r"tri\.pkl: file not found"):
        load_noneck_topology(tmp_path)
    src = fixtures_dir / "3ddfa_v2" / "configs"
    (tmp_path / "indices.npy").write_bytes((src / "indices.npy").read_bytes())
    (tmp_path / "tri.pkl").write_bytes(b"cos\nsystem\n(S'echo owned'\ntR.")  # a pickle that would run code
    with pytest.raises(VoxelizationError, match=r"tri\.pkl: not a readable pickled NumPy array"):
        load_noneck_topology(tmp_path)
    (tmp_path / "tri.pkl").write_bytes((src / "tri.pkl").read_bytes())
    np.save(tmp_path / "indices.npy", np.arange(10))
    with pytest.raises(VoxelizationError, match=r"tri\.pkl: 0-based indices must lie in \[0, 10\)"):
        load_noneck_topology(tmp_path)


def _posed(model, topology: FaceTopology, label_path: Path, verts_model: np.ndarray | None = None):
    """Pose a mesh with a label: by default the label's landmark-warped mean (the fixture model's mesh)."""
    label = read_300wlp_mat(label_path)
    if verts_model is None:
        verts_model, mode = face_mesh_from_label(label, model)
        assert mode == "landmark_warp"
    verts = project_300wlp(verts_model, label.pose_para, H)
    frame = crop_frame_from_points(verts[topology.vertex_indices], (H, H))
    return label, verts, frame


@pytest.mark.parametrize("name", ["face3d_300wlp/IBUG_image_008_1_0.mat", "prnet_aflw2000/image00050.mat",
                                  "prnet_aflw2000/image00475.mat"])
def test_posed_face_voxelises_onto_the_face(model, topology: FaceTopology, fixtures_dir: Path, name: str) -> None:
    label, verts, frame = _posed(model, topology, fixtures_dir / name)
    all_v, tris = topology.closed_mesh(verts)
    cols = face_columns(all_v, tris, frame)
    assert cols.clipped_front == 0 and cols.clipped_back == 0 and cols.vertices_outside == 0
    assert 0.2 < cols.mask.mean() < 0.8
    # every masked column holds at least z_margin + 1 voxels (the rear-most vertex sits at k = 2)
    assert cols.height[cols.mask].min() >= 3 and cols.height[~cols.mask].max() == 0
    # the annotated inner landmarks lie in the footprint (far-side ones sit on the silhouette at large yaw)
    lmk = frame.image_to_volume(np.c_[label.landmarks_2d, np.zeros(68)])
    u, v = np.round(lmk[INNER, 0]).astype(int), np.round(lmk[INNER, 1]).astype(int)
    assert cols.mask[v, u].mean() > 0.9
    # and the mesh's own landmark vertices (hidden ones included) all project into it (to within a pixel: the
    # jaw landmarks lie on the mesh boundary)
    own = np.round(frame.image_to_volume(verts[model.landmark_indices])[:, :2]).astype(int)
    assert binary_dilation(cols.mask)[own[:, 1], own[:, 0]].all()
    # visible landmark vertices (nose tip, 30) are ON the surface: the z-buffer depth there equals their k
    nose = frame.image_to_volume(verts[model.landmark_indices[30]][None])[0]
    assert cols.front[round(nose[1]), round(nose[0])] == pytest.approx(nose[2], abs=1.5)


def test_mouth_is_filled_when_open(model, topology: FaceTopology, fixtures_dir: Path) -> None:
    """Open the mean face's mouth (lower lip and jaw 12 mm down): the uncapped no-neck mesh shows a hole between
    the lips (the lips mostly stretch, so it is a slit), the capped one fills it."""
    lmk = model.mean[model.landmark_indices].astype(np.float64)
    target = lmk.copy()
    lower = [*range(4, 13), *range(54, 60), 64, 65, 66, 67]  # lower jaw, lower outer and inner lip
    target[lower, 1] -= 12000.0
    opened = thin_plate_warp(model.mean, lmk, target)
    np.testing.assert_allclose(opened[model.landmark_indices], target, atol=1e-3)
    _, verts, frame = _posed(model, topology, fixtures_dir / "prnet_aflw2000" / "image00050.mat", opened)
    uv_lips = frame.image_to_volume(verts[model.landmark_indices[60:68]])[:, :2]
    vv, uu = np.mgrid[0:frame.size, 0:frame.size]
    in_mouth = PolygonPath(uv_lips).contains_points(np.c_[uu.ravel(), vv.ravel()]).reshape(uu.shape)
    assert in_mouth.sum() > 30
    open_cols = face_columns(verts, topology.triangles, frame)
    assert (~open_cols.mask[in_mouth]).sum() >= 20  # a hole through the face
    closed_cols = face_columns(*topology.closed_mesh(verts), frame)
    assert closed_cols.mask[in_mouth].all()
    assert np.all(closed_cols.mask >= open_cols.mask)
