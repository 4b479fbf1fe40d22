"""``faceforge reconstruct``: a real AFLW2000-3D photo -> detected face -> VRN volume -> textured mesh as OBJ (+ MTL
+ texture PNG), GLB and a turntable MP4, with a checkpoint trained briefly in this session."""
from __future__ import annotations

import re
from pathlib import Path

import av
import numpy as np
import pytest
import trimesh
from PIL import Image

from faceforge.cli import main
from faceforge.inference.reconstruction import TURNTABLE_FPS, TURNTABLE_SECONDS, Reconstructor, load_reconstructor
from tests.inference_helpers import trained_vrn_checkpoint

pytestmark = [pytest.mark.fixtures, pytest.mark.slow]


@pytest.fixture(scope="module")
def vrn_ckpt(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return trained_vrn_checkpoint(tmp_path_factory)


def test_reconstruct_writes_obj_glb_texture_and_turntable(vrn_ckpt: Path, fixtures_dir: Path, tmp_path: Path,
                                                         capsys: pytest.CaptureFixture[str]) -> None:
    photo = fixtures_dir / "prnet_aflw2000" / "image00050.jpg"
    assert main(["reconstruct", str(vrn_ckpt), str(photo), "-o", str(tmp_path)]) == 0
    assert "image00050.obj" in capsys.readouterr().out
    names = sorted(p.name for p in tmp_path.iterdir())
    assert names == ["image00050.glb", "image00050.mtl", "image00050.obj", "image00050_texture.png",
                     "image00050_turntable.mp4"]
    # OBJ: coloured vertices, one UV per vertex, faces indexing both, the MTL naming the texture
    text = (tmp_path / "image00050.obj").read_text()
    v = [ln.split()[1:] for ln in text.splitlines() if ln.startswith("v ")]
    vt = [ln.split()[1:] for ln in text.splitlines() if ln.startswith("vt ")]
    f = [ln.split()[1:] for ln in text.splitlines() if ln.startswith("f ")]
    assert len(v) > 100 and all(len(x) == 6 for x in v) and len(vt) == len(v) and len(f) > 100
    rgb = np.array([x[3:] for x in v], float)
    assert 0 <= rgb.min() and rgb.max() <= 1 and rgb.std() > 0.01  # colours from the photo, not one flat value
    uv = np.array(vt, float)
    assert 0 <= uv.min() and uv.max() <= 1
    assert all(re.fullmatch(r"(\d+)/\1", c) for c in f[0])
    assert "map_Kd image00050_texture.png" in (tmp_path / "image00050.mtl").read_text()
    assert Image.open(tmp_path / "image00050_texture.png").size == (512, 512)
    # the OBJ loads back (trimesh follows mtllib and map_Kd) with its texture
    loaded = trimesh.load(tmp_path / "image00050.obj", force="mesh", process=False)
    assert len(loaded.vertices) == len(v) and loaded.visual.kind == "texture"
    # GLB: the same surface with its texture and UVs
    glb = trimesh.load(tmp_path / "image00050.glb", force="mesh", process=False)
    assert len(glb.faces) == len(f) and glb.visual.uv is not None and glb.visual.material is not None
    # the turntable: about 2 s of 256 x 256 frames that change as the face turns
    with av.open(str(tmp_path / "image00050_turntable.mp4")) as container:
        frames = [fr.to_ndarray(format="rgb24") for fr in container.decode(video=0)]
    assert len(frames) == round(TURNTABLE_SECONDS * TURNTABLE_FPS) and frames[0].shape == (256, 256, 3)
    assert (frames[0] < 240).any(axis=-1).mean() > 0.05  # the face is drawn on the white background
    assert np.abs(frames[0].astype(int) - frames[len(frames) // 4]).mean() > 1.0  # it turned


def test_mesh_follows_the_texture_projection(vrn_ckpt: Path, fixtures_dir: Path) -> None:
    rec = Reconstructor(load_reconstructor(vrn_ckpt), crops=True)
    photo = np.asarray(Image.open(fixtures_dir / "prnet_aflw2000" / "image00081.jpg").convert("RGB"))
    face = rec.reconstruct_array(photo, "image00081")
    s = rec.model.image_size
    # UV = orthographic projection onto the crop: u grows with x, v with y (display frame: y up)
    x, y = face.vertices[:, 0], face.vertices[:, 1]
    assert np.allclose(face.uv[:, 0], np.clip((x + (s - 1) / 2 + 0.5) / s, 0, 1))
    assert np.allclose(face.uv[:, 1], np.clip(1 - ((s - 1) / 2 - y + 0.5) / s, 0, 1))
    assert face.texture.shape == (512, 512, 3) and face.crop.shape == (s, s, 3)


def test_wrong_kinds_of_checkpoint_and_photos_without_a_face(vrn_ckpt: Path, fixtures_dir: Path, tmp_path: Path,
                                                              capsys: pytest.CaptureFixture[str]) -> None:
    h5 = fixtures_dir / "mesonet" / "weights" / "Meso4_DF.h5"
    assert main(["reconstruct", str(h5), str(fixtures_dir / "prnet_aflw2000" / "image00050.jpg")]) == 1
    assert "ReconstructError" in capsys.readouterr().err
    blank = tmp_path / "blank.png"
    Image.fromarray(np.full((120, 120, 3), 90, np.uint8)).save(blank)
    assert main(["reconstruct", str(vrn_ckpt), str(blank), "-o", str(tmp_path / "out"), "--no-video"]) == 1
    assert "no face found" in capsys.readouterr().err
    # a 3D checkpoint is refused by predict, naming the right command
    assert main(["predict", str(vrn_ckpt), str(blank)]) == 1
    assert "faceforge reconstruct" in capsys.readouterr().err
