"""``faceforge predict``: the MesoNet authors' weights on their own test images and on real DFDC videos, through the
same face extraction as training; bad inputs are reported and the rest goes on."""
from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from faceforge.cli import main
from faceforge.inference.detection import (
    DEFAULT_MARGIN,
    DEFAULT_NUM_FRAMES,
    InputResult,
    Predictor,
    collect_inputs,
    format_table,
    load_detector,
)

pytestmark = pytest.mark.fixtures


@pytest.fixture(scope="module")
def meso4(fixtures_dir: Path):
    return load_detector(fixtures_dir / "mesonet" / "weights" / "Meso4_DF.h5")


def test_defaults_follow_the_extraction_config(project_root: Path) -> None:
    import yaml

    builder = yaml.safe_load((project_root / "conf" / "data" / "video_base.yaml").read_text())["builder"]
    assert builder["margin"] == DEFAULT_MARGIN and builder["num_frames"] == DEFAULT_NUM_FRAMES


def test_mesonet_test_images_are_classified_correctly(fixtures_dir: Path, tmp_path: Path,
                                                      capsys: pytest.CaptureFixture[str]) -> None:
    images = fixtures_dir / "mesonet" / "test_images"
    code = main(["predict", str(fixtures_dir / "mesonet" / "weights" / "Meso4_DF.h5"), str(images),
                 "--json", str(tmp_path / "out.json"), "--csv", str(tmp_path / "out.csv"), "--no-progress"])
    assert code == 0
    table = capsys.readouterr().out
    assert "P(fake)" in table and "df00204.jpg" in table
    report = json.loads((tmp_path / "out.json").read_text())
    assert report["model"]["architecture"] == "Meso4" and report["model"]["threshold"] == 0.5
    inputs = report["inputs"]
    assert len(inputs) == len(list(images.rglob("*.jpg"))) >= 4
    for r in inputs:
        truth = "fake" if Path(r["path"]).parent.name == "df" else "real"  # class folders: df, real
        assert r["status"] == "ok" and r["decision"] == truth, r
        assert 0.5 <= r["confidence"] <= 1.0
        assert r["confidence"] == pytest.approx(r["p_fake"] if truth == "fake" else 1 - r["p_fake"])
        assert len(r["faces"]) == 1 and r["faces"][0]["detection_prob"] > 0.9  # MTCNN found the face
    rows = list(csv.DictReader((tmp_path / "out.csv").open()))
    assert len(rows) == len(inputs) and {row["decision"] for row in rows} == {"fake", "real"}


def test_crops_mode_skips_detection_and_agrees(meso4, fixtures_dir: Path) -> None:
    results = Predictor(meso4, crops=True).predict([fixtures_dir / "mesonet" / "test_images"], progress=False)
    for r in results:
        assert r.decision == ("fake" if Path(r.path).parent.name == "df" else "real")
        assert r.faces[0].detection_prob == 1.0  # no detector ran


def test_dfdc_videos_per_frame_and_per_video(meso4, fixtures_dir: Path) -> None:
    videos = sorted((fixtures_dir / "videos" / "dfdc").glob("*.mp4"))
    assert len(videos) == 2
    results = Predictor(meso4, num_frames=2).predict(videos, progress=False)
    for r in results:
        assert r.kind == "video" and r.status == "ok", r.message
        assert r.frames_sampled == 2 and len(r.frames) == 2
        times = [f["time_s"] for f in r.frames]
        assert times == sorted(times) and times[-1] > 5.0  # evenly spaced over the 10 s
        assert r.p_fake == pytest.approx(np.mean([f["p_fake"] for f in r.frames]))  # "mean" aggregation
        assert r.decision == ("fake" if r.p_fake >= 0.5 else "real")
        box = r.faces[0].box
        assert 0 <= box[0] < box[2] <= 1920 and 0 <= box[1] < box[3] <= 1080


def test_bad_inputs_are_reported_and_the_rest_goes_on(meso4, fixtures_dir: Path, tmp_path: Path,
                                                      capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "broken.jpg").write_text("this is text, not a JPEG")
    Image.fromarray(np.full((200, 200, 3), 128, np.uint8)).save(tmp_path / "blank.png")
    (tmp_path / "clip.mp4").write_bytes(b"\x00" * 100)
    good = fixtures_dir / "mesonet" / "test_images" / "real" / "real00240.jpg"
    results = Predictor(meso4).predict([tmp_path / "broken.jpg", tmp_path / "blank.png", tmp_path / "clip.mp4",
                                        good], progress=False)
    by_name = {Path(r.path).name: r for r in results}
    assert by_name["broken.jpg"].status == "error" and "broken.jpg" in by_name["broken.jpg"].message
    assert by_name["blank.png"].status == "no_face" and "no face" in by_name["blank.png"].message
    assert by_name["clip.mp4"].status == "error" and "clip.mp4" in by_name["clip.mp4"].message
    assert by_name["real00240.jpg"].status == "ok"
    table = format_table(results)
    assert "no face" in table and "real00240.jpg" in table
    # through the command: the table, one message per bad input, and exit status 1
    code = main(["predict", str(fixtures_dir / "mesonet" / "weights" / "Meso4_DF.h5"), str(tmp_path / "broken.jpg"),
                 str(good), "--no-progress"])
    assert code == 1
    captured = capsys.readouterr()
    assert "broken.jpg" in captured.err and "real00240.jpg" in captured.out


def test_inputs_are_collected_from_folders(tmp_path: Path) -> None:
    (tmp_path / "sub").mkdir()
    for name in ["a.jpg", "sub/b.MP4", "notes.txt"]:
        (tmp_path / name).write_bytes(b"x")
    found = collect_inputs([tmp_path])
    assert [(p.name, k) for p, k in found] == [("a.jpg", "image"), ("b.MP4", "video")]  # text files skipped
    with pytest.raises(Exception, match="does not exist"):
        collect_inputs([tmp_path / "nope"])
    assert InputResult(path="x", kind="image").to_dict()["status"] == "ok"
