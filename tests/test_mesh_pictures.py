"""Pictures of meshes (faceforge.visualization.meshes): occlusion is exact, shading shows the relief, files are
written and bad files are clear errors."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import trimesh

from faceforge.visualization.meshes import _LIGHT as LIGHT
from faceforge.visualization.meshes import MeshPictureError, load_mesh, render_shaded, save_mesh_comparison_png


def test_a_sphere_renders_as_a_disk_lit_from_the_upper_left() -> None:
    pic = render_shaded(trimesh.creation.icosphere(subdivisions=3, radius=1.0), size=64)
    covered = pic < 1.0
    assert 0.45 < covered.mean() < 0.75  # a disk of diameter 1/1.1 of the side: pi / 4 / 1.21 = 0.65
    assert pic[20, 20] > pic[44, 44]  # the upper left faces the light, the lower right turns away
    # turning a sphere changes nothing (up to sampling)
    assert np.abs(render_shaded(trimesh.creation.icosphere(3), 40.0, size=64) - pic).mean() < 0.03


def test_the_nearest_surface_hides_what_is_behind() -> None:
    front = trimesh.creation.box((1.0, 1.0, 0.1))
    back = trimesh.creation.box((2.0, 2.0, 0.1))
    back.apply_transform(trimesh.transformations.rotation_matrix(np.radians(50), [1, 0, 0]))
    back.apply_translation((0, 0, -1.5))
    pic = render_shaded(trimesh.util.concatenate([front, back]), size=64)
    flat = 0.2 + 0.8 * LIGHT[2]  # a face turned to the viewer
    assert pic[32, 32] == pytest.approx(flat, abs=1e-6)  # the front box, not the tilted one behind it
    assert abs(pic[32, 6] - flat) > 0.1  # beside it the tilted box shows


def test_comparison_png_and_bad_files(tmp_path: Path) -> None:
    sphere = trimesh.creation.icosphere(2)
    path = save_mesh_comparison_png([(sphere, sphere)], tmp_path / "pairs.png",
                                    images=[np.zeros((8, 8, 3), np.uint8)], titles=["s0"])
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    sphere.export(tmp_path / "s.glb")
    assert len(load_mesh(tmp_path / "s.glb").faces) == len(sphere.faces)
    (tmp_path / "bad.glb").write_bytes(b"not a mesh")
    with pytest.raises(MeshPictureError, match="bad.glb"):
        load_mesh(tmp_path / "bad.glb")
    with pytest.raises(MeshPictureError, match="no meshes"):
        save_mesh_comparison_png([], tmp_path / "none.png")
