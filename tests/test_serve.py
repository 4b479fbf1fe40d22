"""``faceforge serve`` through its HTTP API (FastAPI's test client): verdicts for an image and a video, the 3D face
as a GLB, clear errors for non-images and oversized uploads, the vendored viewer files, nothing left behind."""
from __future__ import annotations

import io
import tempfile
from pathlib import Path

import av
import numpy as np
import pytest
import trimesh
from fastapi.testclient import TestClient

from faceforge.serve.app import STATIC_DIR, ServeError, ServeSettings, create_app
from tests.inference_helpers import trained_clip_checkpoint, trained_vrn_checkpoint

pytestmark = [pytest.mark.fixtures, pytest.mark.slow]


@pytest.fixture(scope="module")
def vrn_ckpt(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return trained_vrn_checkpoint(tmp_path_factory)


def _short_video(src: Path, dst: Path, seconds: float) -> Path:
    """Re-encode the first ``seconds`` of ``src`` at 640 px wide (a small upload)."""
    with av.open(str(src)) as inp, av.open(str(dst), "w") as out:
        stream_in = inp.streams.video[0]
        fps = int(round(float(stream_in.average_rate)))
        stream = out.add_stream("libx264", rate=fps)
        stream.width, stream.height, stream.pix_fmt = 640, 360, "yuv420p"
        for i, frame in enumerate(inp.decode(stream_in)):
            if i >= seconds * fps:
                break
            for packet in stream.encode(frame.reformat(width=640, height=360, format="yuv420p")):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)
    return dst


def test_settings_are_checked() -> None:
    with pytest.raises(ServeError, match="--ckpt"):
        create_app(ServeSettings())
    with pytest.raises(ServeError, match="max-upload-mb"):
        create_app(ServeSettings(ckpt="x.h5", max_upload_mb=0))


def test_vendored_three_js_is_packaged() -> None:
    vendor = STATIC_DIR / "vendor"
    for name in ["three.module.min.js", "jsm/loaders/GLTFLoader.js", "jsm/controls/OrbitControls.js",
                 "jsm/utils/BufferGeometryUtils.js", "LICENSE"]:
        assert (vendor / name).is_file(), name
    assert "MIT" in (vendor / "LICENSE").read_text()
    page = (STATIC_DIR / "index.html").read_text() + (STATIC_DIR / "app.js").read_text()
    assert "http://" not in page.replace("http://www.w3.org/2000/svg", "") and "https://" not in page  # no CDN


def test_demo_api_end_to_end(vrn_ckpt: Path, fixtures_dir: Path, tmp_path: Path) -> None:
    settings = ServeSettings(ckpt=str(fixtures_dir / "mesonet" / "weights" / "Meso4_DF.h5"),
                             recon_ckpt=str(vrn_ckpt), max_upload_mb=2.0, max_video_s=3.0, frames=3)
    app = create_app(settings)
    with TestClient(app) as client:
        workdir = Path(tempfile.gettempdir())  # the server's own folder while it runs
        assert workdir.name.startswith("faceforge-serve-")
        page = client.get("/")
        assert page.status_code == 200 and "three.module.min.js" in page.text
        assert client.get("/static/vendor/jsm/loaders/GLTFLoader.js").status_code == 200
        # an image: the authors' fake test image is called fake, and a 3D face comes back as a GLB
        image = fixtures_dir / "mesonet" / "test_images" / "df" / "df00204.jpg"
        r = client.post("/api/analyze", files={"file": (image.name, image.read_bytes(), "image/jpeg")})
        assert r.status_code == 200, r.text
        body = r.json()
        assert body["kind"] == "image" and body["verdict"]["decision"] == "fake" and body["verdict"]["p_fake"] > 0.5
        mesh = client.get(body["mesh_url"])
        assert mesh.status_code == 200 and mesh.headers["content-type"] == "model/gltf-binary"
        glb = trimesh.load(io.BytesIO(mesh.content), file_type="glb", force="mesh")
        assert len(glb.faces) > 100
        # a short video: per-frame scores
        video = _short_video(fixtures_dir / "videos" / "dfdc" / "lynaeydofd.mp4", tmp_path / "clip.mp4", 1.0)
        r = client.post("/api/analyze", files={"file": ("clip.mp4", video.read_bytes(), "video/mp4")})
        assert r.status_code == 200, r.text
        body = r.json()
        assert body["kind"] == "video" and len(body["verdict"]["frames"]) == 3 and body["mesh_url"]
        # errors: a text file, a too long video, a too large upload, a bad mesh name
        r = client.post("/api/analyze", files={"file": ("notes.txt", b"hello, not an image", "text/plain")})
        assert r.status_code == 415 and "notes.txt" in r.json()["error"] and "not an image" in r.json()["error"]
        long_video = _short_video(fixtures_dir / "videos" / "dfdc" / "lynaeydofd.mp4", tmp_path / "long.mp4", 4.0)
        r = client.post("/api/analyze", files={"file": ("long.mp4", long_video.read_bytes(), "video/mp4")})
        assert r.status_code == 413 and "3 s" in r.json()["error"]
        big = np.random.default_rng(0).integers(0, 256, 3_000_000, dtype=np.uint8).tobytes()
        r = client.post("/api/analyze", files={"file": ("big.png", big, "image/png")})
        assert r.status_code == 413 and "2 MB" in r.json()["error"]
        assert client.get("/api/mesh/../../etc/passwd").status_code == 404
        assert client.get("/api/mesh/" + "0" * 32 + ".glb").status_code == 404
        written = {p.name for p in workdir.iterdir()}
        assert all(n.endswith(".glb") for n in written)  # uploads are removed once scored
    # shutdown: the folder (meshes, upload spool) is gone and the process's temporary folder is the usual one again
    assert not workdir.exists()
    assert Path(tempfile.gettempdir()) != workdir


def test_clip_model_video_verdict_has_its_clips(tmp_path_factory: pytest.TempPathFactory, fixtures_dir: Path,
                                                tmp_path: Path) -> None:
    """A clip model (ResNeXt-LSTM) scores clips, not frames: the verdict lists each clip with its time span and
    P(fake), the page's chart draws them, and the video's P(fake) is their mean (its video_aggregation)."""
    settings = ServeSettings(ckpt=str(trained_clip_checkpoint(tmp_path_factory)), frames=6)
    with TestClient(create_app(settings)) as client:
        video = _short_video(fixtures_dir / "videos" / "dfdc" / "lynaeydofd.mp4", tmp_path / "clip.mp4", 1.0)
        r = client.post("/api/analyze", files={"file": ("clip.mp4", video.read_bytes(), "video/mp4")})
        assert r.status_code == 200, r.text
        verdict = r.json()["verdict"]
    assert verdict["status"] == "ok" and verdict["frames"] == []  # no per-frame scores from a clip model
    (clip,) = verdict["clips"]  # one clip per video, as evaluation scores it
    assert set(clip) == {"clip", "start_s", "end_s", "length", "p_fake"}
    assert 0.0 <= clip["start_s"] < clip["end_s"] <= 1.0 and clip["length"] == 4
    assert verdict["p_fake"] == pytest.approx(clip["p_fake"])
