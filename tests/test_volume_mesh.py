"""Volume -> mesh (marching cubes), vertex colours, frame mapping and OBJ / PLY / GLB export."""
from __future__ import annotations

import numpy as np
import pytest
import torch
import trimesh

from faceforge.geometry.volume_frame import VolumeFrame
from faceforge.geometry.volume_mesh import (
    MESH_FRAMES,
    MeshExportError,
    VolumeMeshError,
    export_mesh,
    sample_image_bilinear,
    to_mesh_frame,
    volume_to_mesh,
)

D, H, W = 40, 48, 48


def _ellipsoid(centre: tuple[float, float, float] = (20, 24, 22), radii: tuple[float, float, float] = (10, 14, 12)
               ) -> np.ndarray:
    k, v, u = np.mgrid[:D, :H, :W]
    return (((k - centre[0]) / radii[0]) ** 2 + ((v - centre[1]) / radii[1]) ** 2
            + ((u - centre[2]) / radii[2]) ** 2) <= 1.0


def _column() -> np.ndarray:
    """VRN-like filling: occupied from the back plane (k = 0) up to a dome-shaped front surface."""
    k, v, u = np.mgrid[:D, :H, :W]
    r2 = ((v - 24) / 16.0) ** 2 + ((u - 24) / 14.0) ** 2
    height = 12 + 20 * np.sqrt(np.clip(1 - r2, 0, None))
    return (r2 <= 1) & (k <= height)


def _occupied_bounds(vol: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(x, y, z) = (u, v, k) min / max of occupied voxel centres."""
    kk, vv, uu = np.nonzero(vol)
    pts = np.column_stack([uu, vv, kk]).astype(float)
    return pts.min(0), pts.max(0)


def test_ellipsoid_mesh_is_closed_outward_and_bounded() -> None:
    vol = _ellipsoid()
    mesh = volume_to_mesh(vol)
    lo, hi = _occupied_bounds(vol)
    # the surface passes half a voxel outside the outermost occupied centres (iso 0.5 on a binary volume)
    np.testing.assert_allclose(mesh.bounds[0], lo - 0.5, atol=1e-6)
    np.testing.assert_allclose(mesh.bounds[1], hi + 0.5, atol=1e-6)
    assert mesh.is_watertight and mesh.euler_number == 2
    assert mesh.volume > 0  # outward normals
    assert mesh.volume == pytest.approx(vol.sum(), rel=0.1)
    # the front of the face (largest k) looks at the camera: +z normals
    front = mesh.triangles_center[:, 2] > 28
    assert front.sum() > 10 and np.all(mesh.face_normals[front, 2] > 0)
    back = mesh.triangles_center[:, 2] < 12
    assert np.all(mesh.face_normals[back, 2] < 0)


def test_column_touching_the_border_is_capped_when_padded() -> None:
    vol = _column()
    mesh = volume_to_mesh(vol.astype(np.float32))
    assert mesh.is_watertight and mesh.volume > 0
    assert mesh.bounds[0, 2] == pytest.approx(-0.5)  # cap half a voxel behind the back plane
    lo, hi = _occupied_bounds(vol)
    np.testing.assert_allclose(mesh.bounds[1], hi + 0.5, atol=1e-6)
    np.testing.assert_allclose(mesh.bounds[0], lo - 0.5, atol=1e-6)
    open_mesh = volume_to_mesh(vol, pad=False)
    assert not open_mesh.is_watertight  # no back cap without padding
    assert open_mesh.bounds[0, 2] == pytest.approx(0.0)


def test_frame_maps_vertices_to_source_pixels() -> None:
    frame = VolumeFrame(scale=0.5, tx=-8.0, ty=4.0, z_offset=6.0, depth_scale=2.0, size=W, depth=D)
    vol = np.zeros((D, H, W), dtype=bool)
    vol[10:20, 30:34, 12:15] = True  # a box of voxels
    plain = volume_to_mesh(vol)
    mapped = volume_to_mesh(vol, frame=frame)
    np.testing.assert_allclose(mapped.vertices, frame.volume_to_image(plain.vertices))
    # box corners in source pixels: x = (u - tx) / s, y = (v - ty) / s, z = (k - z_offset) / (depth_scale * s)
    np.testing.assert_allclose(mapped.bounds[0], [(11.5 + 8) / 0.5, (29.5 - 4) / 0.5, (9.5 - 6) / 1.0])
    np.testing.assert_allclose(mapped.bounds[1], [(14.5 + 8) / 0.5, (33.5 - 4) / 0.5, (19.5 - 6) / 1.0])
    np.testing.assert_allclose(frame.image_to_volume(mapped.vertices), plain.vertices, atol=1e-9)
    assert mapped.volume > 0 and mapped.is_watertight  # the winding survives the mapping


def test_vertex_colours_from_a_two_colour_image() -> None:
    vol = _ellipsoid()
    img = np.zeros((H, W, 3), dtype=np.uint8)
    img[:, :22] = (255, 0, 0)
    img[:, 22:] = (0, 0, 255)
    mesh = volume_to_mesh(vol, image=img)
    colours = mesh.visual.vertex_colors
    x = mesh.vertices[:, 0]
    assert colours.shape == (len(mesh.vertices), 4) and colours.dtype == np.uint8
    assert np.all(colours[x <= 20.5] == (255, 0, 0, 255))
    assert np.all(colours[x >= 22.0] == (0, 0, 255, 255))
    mid = (x > 21) & (x < 22)  # bilinear blend between the two columns
    assert mid.any() and np.all(colours[mid, 0] > 0) and np.all(colours[mid, 2] > 0)
    # with a frame, colours come from the SOURCE image at the mapped position
    frame = VolumeFrame(scale=0.25, tx=0.0, ty=0.0, z_offset=0.0, size=W, depth=D)  # source is 4x larger
    src = np.zeros((4 * H, 4 * W, 3), dtype=np.uint8)
    src[:, : 4 * 22] = (0, 255, 0)
    m2 = volume_to_mesh(vol, frame=frame, image=src)
    xs = m2.vertices[:, 0]
    assert np.all(m2.visual.vertex_colors[xs < 4 * 21, 1] == 255)
    assert np.all(m2.visual.vertex_colors[xs > 4 * 22.5, 1] == 0)


def test_bilinear_sampling_values() -> None:
    img = np.tile((np.arange(5) * 10).astype(np.uint8), (3, 1))  # grey, columns 0, 10, ..., 40
    out = sample_image_bilinear(img, np.array([[1.5, 0.0], [0.0, 2.0], [-3.0, 1.0], [9.0, 1.0], [3.25, 1.7]]))
    np.testing.assert_array_equal(out[:, 0], [15, 0, 0, 40, 32])
    np.testing.assert_array_equal(out[:, 3], 255)
    with pytest.raises(VolumeMeshError, match="image"):
        sample_image_bilinear(np.zeros((4, 4, 2), np.uint8), np.zeros((1, 2)))


def test_input_types_and_iso_levels() -> None:
    vol = _ellipsoid()
    ref = volume_to_mesh(vol)
    # torch tensors, 0..255 bytes with the released VRN's iso 10, probabilities with 0.5
    t = volume_to_mesh(torch.from_numpy(vol.astype(np.float32)))
    np.testing.assert_allclose(t.vertices, ref.vertices)
    byte = volume_to_mesh(vol.astype(np.uint8) * 255, iso_level=10)
    assert byte.is_watertight
    # iso 10 on 0..255 sits 10/255 of the way from empty: the surface is fatter than at 127.5 (= 0.5)
    assert byte.volume > volume_to_mesh(vol.astype(np.uint8) * 255, iso_level=127.5).volume
    assert volume_to_mesh(vol, step_size=2).faces.shape[0] < ref.faces.shape[0]


def test_largest_component_drops_blobs() -> None:
    vol = _ellipsoid()
    vol[2:4, 2:4, 2:4] = True  # a floating blob
    assert len(volume_to_mesh(vol).split(only_watertight=False)) == 2
    kept = volume_to_mesh(vol, largest_component=True)
    assert kept.bounds[0, 0] > 5


def test_bad_volumes_raise_clear_errors() -> None:
    with pytest.raises(VolumeMeshError, match="empty volume"):
        volume_to_mesh(np.zeros((D, H, W), dtype=np.float32))
    with pytest.raises(VolumeMeshError, match="empty volume"):
        volume_to_mesh(np.full((D, H, W), 0.4, dtype=np.float32))
    with pytest.raises(VolumeMeshError, match="3-D"):
        volume_to_mesh(np.ones((4, 4)))
    nan = _ellipsoid().astype(np.float32)
    nan[0, 0, 0] = np.nan
    with pytest.raises(VolumeMeshError, match="NaN"):
        volume_to_mesh(nan)
    full = np.ones((6, 6, 6), dtype=bool)
    with pytest.raises(VolumeMeshError, match="pad=False"):
        volume_to_mesh(full, pad=False)
    box = volume_to_mesh(full)  # padded: a closed box around the full volume
    np.testing.assert_allclose(box.bounds, [[-0.5] * 3, [5.5] * 3])
    with pytest.raises(VolumeMeshError, match="image"):
        volume_to_mesh(_ellipsoid(), image=np.zeros((H, W, 3), dtype=np.float32) + 2.0)


@pytest.mark.parametrize("ext", [".obj", ".ply", ".glb", ".PLY"])
def test_export_reloads_with_trimesh(tmp_path, ext: str) -> None:
    vol = _ellipsoid()
    img = np.zeros((H, W, 3), dtype=np.uint8)
    img[:, :22] = (255, 0, 0)
    img[:, 22:] = (0, 0, 255)
    mesh = volume_to_mesh(vol, image=img)
    path = export_mesh(mesh, tmp_path / "out" / f"face{ext}")
    assert path.exists() and [p.name for p in path.parent.iterdir()] == [path.name]  # no temp / material files
    back = trimesh.load(path, force="mesh", process=False)
    assert back.vertices.shape == mesh.vertices.shape and back.faces.shape == mesh.faces.shape
    np.testing.assert_allclose(back.vertices, mesh.vertices, atol=1e-4)
    np.testing.assert_array_equal(back.visual.vertex_colors[:, :3], mesh.visual.vertex_colors[:, :3])
    assert back.volume == pytest.approx(mesh.volume, rel=1e-4)  # winding kept


def test_export_rejects_unknown_extensions(tmp_path) -> None:
    mesh = volume_to_mesh(_ellipsoid())
    with pytest.raises(MeshExportError, match=r"\.stl"):
        export_mesh(mesh, tmp_path / "face.stl")
    with pytest.raises(MeshExportError, match="extension"):
        export_mesh(mesh, tmp_path / "face")
    assert list(tmp_path.iterdir()) == []


def test_mesh_frames_map_known_voxel_coordinates() -> None:
    # three vertices at known (u, v, k) voxel coordinates of a (D, H, W) = (40, 48, 48) volume
    verts = np.array([[0.0, 0.0, 0.0], [47.0, 10.0, 20.0], [23.5, 47.0, 39.0]])
    faces = np.array([[0, 1, 2]])
    authors = to_mesh_frame(trimesh.Trimesh(verts.copy(), faces.copy(), process=False), "vrn_authors", (D, H, W))
    # raw2obj.py's frame: y down, voxels, z halved, not centred; winding kept
    np.testing.assert_allclose(authors.vertices, [[0.0, 0.0, 0.0], [47.0, 10.0, 10.0], [23.5, 47.0, 19.5]])
    assert authors.faces.tolist() == [[0, 1, 2]]
    display = to_mesh_frame(trimesh.Trimesh(verts.copy(), faces.copy(), process=False), "display", (D, H, W))
    # centred (c = 23.5), y up, z - D/2; faces re-wound for the y mirror
    np.testing.assert_allclose(display.vertices, [[-23.5, 23.5, -20.0], [23.5, 13.5, 0.0], [0.0, -23.5, 19.0]])
    assert display.faces.tolist() == [[0, 2, 1]]
    assert MESH_FRAMES == ("display", "vrn_authors")


def test_mesh_frames_keep_normals_outward_and_reject_unknown_frames() -> None:
    for frame in MESH_FRAMES:
        mesh = to_mesh_frame(volume_to_mesh(_column()), frame, (D, H, W))
        assert mesh.is_watertight and mesh.volume > 0, frame
    with pytest.raises(VolumeMeshError, match="unknown mesh frame"):
        to_mesh_frame(volume_to_mesh(_column()), "y_up", (D, H, W))
    with pytest.raises(VolumeMeshError, match="volume_shape"):
        to_mesh_frame(volume_to_mesh(_column()), "display", (H, W))
