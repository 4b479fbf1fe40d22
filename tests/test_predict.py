"""``faceforge predict``: the MesoNet authors' weights on their own test images and on real DFDC videos, through the
same face extraction as training; bad inputs are reported and the rest goes on. A briefly trained ResNeXt-LSTM clip
checkpoint scores a real DFDC video as the clips evaluation scores (or, on request, clips of consecutive faces
covering them all) and refuses a single image; the data settings a checkpoint records are checked as untrusted
data."""
from __future__ import annotations

import csv
import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from faceforge.cli import main
from faceforge.inference.detection import (
    DEFAULT_MARGIN,
    DEFAULT_NUM_FRAMES,
    InputResult,
    PredictError,
    Predictor,
    collect_inputs,
    covering_clip_positions,
    format_table,
    load_detector,
)
from tests.inference_helpers import CLIP_LENGTH, trained_clip_checkpoint

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
        assert r.decision == ("fake" if r.p_fake > 0.5 else "real")
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


# ---------------------------------------------------------------------------------------------- clip models
@pytest.fixture(scope="module")
def clip_ckpt(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A ResNeXt-LSTM checkpoint (tiny backbone, 48 px, clips of 4) trained for one short epoch."""
    return trained_clip_checkpoint(tmp_path_factory)


@pytest.mark.parametrize("n", [1, 3, 4, 6, 9, 32, 33])
def test_covering_clips_are_consecutive_and_cover_every_face(n: int) -> None:
    clips = covering_clip_positions(n, CLIP_LENGTH)
    assert len(clips) == max(1, -(-n // CLIP_LENGTH))
    for pos in clips:
        assert len(pos) == min(n, CLIP_LENGTH) and np.all(np.diff(pos) == 1)  # consecutive faces
    assert sorted(set(np.concatenate(clips).tolist())) == list(range(n))  # nothing left out
    assert clips[0][0] == 0 and clips[-1][-1] == n - 1


def test_clip_model_loads_with_its_recorded_input(clip_ckpt: Path) -> None:
    model = load_detector(clip_ckpt)
    assert model.is_clip_model and model.clip_length == CLIP_LENGTH
    assert model.image_size == 48 and model.architecture == "ResNeXtLSTM"


def test_clip_model_on_a_dfdc_video_covering_clips_and_an_image(clip_ckpt: Path, fixtures_dir: Path, tmp_path: Path,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    video = sorted((fixtures_dir / "videos" / "dfdc").glob("*.mp4"))[0]
    image = fixtures_dir / "mesonet" / "test_images" / "real" / "real00240.jpg"
    code = main(["predict", str(clip_ckpt), str(video), str(image), "--frames", "6", "--no-progress", "--clips",
                 "cover", "--json", str(tmp_path / "out.json"), "--csv", str(tmp_path / "out.csv")])
    assert code == 1  # the image failed, as any failed input does
    captured = capsys.readouterr()
    assert "real00240.jpg" in captured.err and "clip model" in captured.err and "single image" in captured.err
    assert video.name in captured.out and "2 clips: frames" in captured.out  # the table lists the clips
    report = json.loads((tmp_path / "out.json").read_text())
    assert report["model"]["clip_length"] == CLIP_LENGTH and report["model"]["image_size"] == 48
    vid, img = report["inputs"]
    assert img["status"] == "error" and "real00240.jpg" in img["message"] and img["p_fake"] is None
    assert vid["status"] == "ok" and 0.0 <= vid["p_fake"] <= 1.0, vid["message"]
    face_frames = [f["frame"] for f in vid["faces"]]
    assert vid["frames_sampled"] == 6 and len(face_frames) == 6 and vid["frames"] == []  # no per-frame scores
    assert [c["frames"] for c in vid["clips"]] == [face_frames[:4], face_frames[2:]]  # 6 faces -> 2 clips of 4
    assert all(0.0 <= c["p_fake"] <= 1.0 and c["length"] == CLIP_LENGTH and c["padding"] == 0 for c in vid["clips"])
    assert vid["p_fake"] == pytest.approx(np.mean([c["p_fake"] for c in vid["clips"]]))  # "mean" aggregation
    assert vid["decision"] == ("fake" if vid["p_fake"] > 0.5 else "real")
    rows = [r for r in csv.DictReader((tmp_path / "out.csv").open()) if r["kind"] == "video"]
    assert [r["clip_frames"] for r in rows] == [" ".join(map(str, c["frames"])) for c in vid["clips"]]


def test_clip_model_scores_the_clips_evaluation_scores(clip_ckpt: Path, fixtures_dir: Path) -> None:
    """By default a video's clips are those evaluation serves: the checkpoint's clips_per_video clips placed by its
    clip_sampling (here one clip of 4 faces evenly spread over the 6 found), not consecutive faces."""
    from faceforge.data.detection.clips import clip_positions

    model = load_detector(clip_ckpt)
    assert (model.clip_sampling, model.clips_per_video) == ("evenly", 1) and model.extraction == {}  # synthetic
    video = sorted((fixtures_dir / "videos" / "dfdc").glob("*.mp4"))[0]
    (r,) = Predictor(model, num_frames=6).predict([video], progress=False)
    face_frames = [f.frame for f in r.faces]
    assert r.status == "ok" and len(face_frames) == 6
    assert [c["frames"] for c in r.clips] == [[face_frames[i] for i in (0, 2, 3, 5)]]
    assert r.p_fake == pytest.approx(r.clips[0]["p_fake"])
    for sampling, per_video in [("evenly", 3), ("contiguous", 2)]:  # what FaceClipDataset serves in evaluation
        predictor = Predictor(replace(model, clip_sampling=sampling, clips_per_video=per_video), crops=True)
        placed = predictor.clip_positions_for(9)
        assert [p.tolist() for p in placed] == [clip_positions(9, CLIP_LENGTH, sampling, (k + 0.5) / per_video)
                                                .tolist() for k in range(per_video)]
        assert [p.tolist() for p in predictor.clip_positions_for(3)] == [[0, 1, 2]]  # short video: one clip
    with pytest.raises(PredictError, match="clips must be one of"):
        Predictor(model, crops=True, clips="all")


def test_recorded_data_settings_are_checked(tmp_path: Path) -> None:
    """The data settings a checkpoint records are untrusted data: typed and range-checked, the file named."""
    from faceforge.inference.detection import _recorded_data

    good = {"datamodule_hyper_parameters": {
        "clip_sampling": "contiguous", "clips_per_video": 2,
        "extraction": {"num_frames": 16, "sampling": "stride", "stride": 2, "seed": 3, "margin": 0.2, "size": 64,
                       "detector": {"min_face_fraction": 0.05, "thresholds": [0.5, 0.6, 0.7], "device": "cuda",
                                    "keep": 4}}}}
    extraction, sampling, per_video = _recorded_data(good, tmp_path / "m.ckpt")
    assert (sampling, per_video) == ("contiguous", 2)
    assert extraction == {"num_frames": 16, "sampling": "stride", "stride": 2, "seed": 3, "margin": 0.2,
                          "detector": {"min_face_fraction": 0.05, "thresholds": [0.5, 0.6, 0.7]}}  # no device
    assert _recorded_data({"datamodule_hyper_parameters": {"builder": {"margin": 0.25}}}, tmp_path / "old.ckpt") \
        == ({"margin": 0.25}, "evenly", 1)  # an older checkpoint's margin
    assert _recorded_data({}, tmp_path / "bare.ckpt") == ({}, "evenly", 1)
    for key, value in [("num_frames", 0), ("num_frames", "32"), ("sampling", "random"), ("margin", -1),
                       ("margin", float("nan")), ("detector", "os.system"), ("detector", {"factor": "x"}),
                       ("detector", {"thresholds": [0.5]})]:
        bad = {"datamodule_hyper_parameters": {"extraction": {**good["datamodule_hyper_parameters"]["extraction"],
                                                              key: value}}}
        where = f"m.ckpt: the checkpoint's datamodule_hyper_parameters.extraction.{key}"
        with pytest.raises(PredictError, match=where):
            _recorded_data(bad, tmp_path / "m.ckpt")
    for key, value in [("clip_sampling", "random"), ("clips_per_video", 0), ("clips_per_video", True)]:
        with pytest.raises(PredictError, match=f"datamodule_hyper_parameters.{key} is"):
            _recorded_data({"datamodule_hyper_parameters": {key: value}}, tmp_path / "m.ckpt")


def test_the_data_module_records_its_extraction_settings(tmp_path: Path) -> None:
    """A face data module keeps its builder's extraction settings as primitives (weights_only-loadable), which
    load_detector reads back; a builder that does not extract faces records None."""
    import functools

    import torch
    from omegaconf import OmegaConf

    from faceforge.data.detection.datamodule import FaceDataModule
    from faceforge.data.detection.extraction.extract import extract_dataset

    cfg = OmegaConf.create({"detector": {"min_face_fraction": 0.05, "thresholds": [0.5, 0.6, 0.7]}})
    builder = functools.partial(extract_dataset, dataset="dfdc", root="/data", num_frames=12, sampling="evenly",
                                stride=1, seed=0, margin=0.25, size=64, image_format="png", detector=cfg.detector,
                                workers=2, progress=False)
    dm = FaceDataModule("dfdc", str(tmp_path / "faces"), builder=builder, image_size=64)
    assert dm.hparams["extraction"] == {"num_frames": 12, "sampling": "evenly", "stride": 1, "seed": 0,
                                        "margin": 0.25, "size": 64, "image_format": "png",
                                        "detector": {"min_face_fraction": 0.05, "thresholds": [0.5, 0.6, 0.7]}}
    torch.save({"datamodule_hyper_parameters": dict(dm.hparams)}, tmp_path / "dm.ckpt")
    saved = torch.load(tmp_path / "dm.ckpt", weights_only=True)
    from faceforge.inference.detection import _recorded_data

    extraction, _, _ = _recorded_data(saved, tmp_path / "dm.ckpt")
    assert extraction["num_frames"] == 12 and extraction["margin"] == 0.25
    assert extraction["detector"] == {"min_face_fraction": 0.05, "thresholds": [0.5, 0.6, 0.7]}
    synthetic = FaceDataModule("synthetic", str(tmp_path / "s"), builder=functools.partial(print, num_videos=4))
    assert synthetic.hparams["extraction"] is None


def test_short_videos_are_padded_and_the_padding_ignored(clip_ckpt: Path) -> None:
    """Fewer faces than ``clip_length``: one clip padded with the last face, scored as if the padding were absent."""
    import torch

    model = load_detector(clip_ckpt)
    predictor = Predictor(model, crops=True)
    rng = np.random.default_rng(0)
    crops = [rng.integers(0, 256, (48, 48, 3), dtype=np.uint8) for _ in range(2)]
    per_frame = [(10, 0.4, [(crops[0], [0.0, 0.0, 48.0, 48.0], 1.0)]), (20, 0.8, []),  # frame 20: no face
                 (30, 1.2, [(crops[1], [0.0, 0.0, 48.0, 48.0], 1.0)])]
    r = predictor._finish_clips(InputResult(path="short.mp4", kind="video", frames_sampled=3), per_frame)
    assert r.status == "ok" and len(r.clips) == 1
    clip = r.clips[0]
    assert clip["frames"] == [10, 30] and clip["length"] == 2 and clip["padding"] == CLIP_LENGTH - 2
    with torch.no_grad():
        alone = torch.from_numpy(np.stack(crops)).permute(0, 3, 1, 2)[None]
        expected = torch.sigmoid(model.task(alone, torch.tensor([2]))).item()
    assert clip["p_fake"] == pytest.approx(expected, abs=1e-5)
    assert r.p_fake == pytest.approx(clip["p_fake"])
    empty = predictor._finish_clips(InputResult(path="none.mp4", kind="video", frames_sampled=3), [(0, 0.0, [])])
    assert empty.status == "no_face" and "none.mp4" in empty.message
