"""Face extraction: sampling, cropping, decoding, MTCNN detection and the resumable pipeline.

The pipeline tests run on the two real DFDC fixture clips (copied into a temporary DFDC layout) with 4 frames
per video, plus generated bad videos: a byte-truncated copy (unopenable), a truncated copy whose header is
intact (stream ends early) and a flat gray clip (no face).
"""
from __future__ import annotations

import json
import os
import shutil
import socket
from pathlib import Path

import av
import cv2
import numpy as np
import pytest

from faceforge.data.detection.extraction.crop import crop_face
from faceforge.data.detection.extraction.sampling import sample_frame_indices
from faceforge.data.detection.extraction.video import VideoDecodeError, probe_video, read_frames
from faceforge.data.detection.face_index import FaceIndex

FAKE, REAL = "abofeumbvv.mp4", "lynaeydofd.mp4"
EXTRACT_KW = dict(num_frames=4, size=96, progress=False)


def make_video(path: Path, values: list[int], size: tuple[int, int] = (64, 48), codec: str = "libx264") -> Path:
    """Write a clip whose frame i is flat gray ``values[i]`` (PyAV encoder)."""
    container = av.open(str(path), "w")
    stream = container.add_stream(codec, rate=10)
    stream.width, stream.height, stream.pix_fmt = size[0], size[1], "yuv420p"
    for v in values:
        frame = av.VideoFrame.from_ndarray(np.full((size[1], size[0], 3), v, np.uint8), format="rgb24")
        for packet in stream.encode(frame):
            container.mux(packet)
    for packet in stream.encode():
        container.mux(packet)
    container.close()
    return path


def remux_faststart(src: Path, dst: Path) -> Path:
    """Copy the packets of ``src`` into an MP4 whose header (moov) comes first, so a truncated copy still opens."""
    inp = av.open(str(src))
    out = av.open(str(dst), "w", options={"movflags": "faststart"})
    ostream = out.add_stream_from_template(inp.streams.video[0])
    for packet in inp.demux(inp.streams.video[0]):
        if packet.dts is None:
            continue
        packet.stream = ostream
        out.mux(packet)
    out.close()
    inp.close()
    return dst


def truncate_copy(src: Path, dst: Path, fraction: float = 0.2) -> Path:
    data = src.read_bytes()
    dst.write_bytes(data[: int(len(data) * fraction)])
    return dst


# ----------------------------------------------------------------------------------------------- sampling
def test_sampling_evenly_covers_the_whole_video():
    idx = sample_frame_indices(300, 8)
    assert idx.dtype == np.int64 and len(idx) == 8
    assert np.all(np.diff(idx) > 0)
    assert idx[0] < 300 / 8 and idx[-1] > 300 * 7 / 8  # not the first N frames
    assert np.all(np.abs(np.diff(idx) - 300 / 8) <= 1)
    assert sample_frame_indices(5, 8).tolist() == [0, 1, 2, 3, 4]
    assert sample_frame_indices(0, 8).size == 0


def test_sampling_seeded_modes_are_reproducible_per_video():
    a = sample_frame_indices(1000, 16, "contiguous", seed=0, key="v1")
    assert np.array_equal(a, sample_frame_indices(1000, 16, "contiguous", seed=0, key="v1"))
    assert np.array_equal(np.diff(a), np.ones(15))
    starts = {int(sample_frame_indices(1000, 16, "contiguous", seed=0, key=f"v{i}")[0]) for i in range(20)}
    assert len(starts) > 10  # each video gets its own draw
    s = sample_frame_indices(1000, 10, "stride", stride=5, seed=1, key="v1")
    assert len(s) == 10 and np.all(np.diff(s) == 5) and s[-1] < 1000
    short = sample_frame_indices(30, 10, "stride", stride=5, seed=1, key="v1")  # clip does not fit
    assert np.all(np.diff(short) == 5) and 0 < len(short) <= 10 and short[0] < 5
    with pytest.raises(ValueError, match="sampling mode"):
        sample_frame_indices(10, 2, "random")


# ----------------------------------------------------------------------------------------------- crop
def test_crop_square_window_margin_and_padding():
    frame = np.full((100, 200, 3), 200, np.uint8)
    crop, box = crop_face(frame, (90, 40, 110, 60), margin=0.5, size=30)  # 20 px face -> 30 px window
    assert crop.shape == (30, 30, 3) and crop.dtype == np.uint8
    assert box.tolist() == [85, 35, 115, 65]
    assert np.all(crop == 200)  # no resampling when the window already has the output size
    # a face at the top-left corner: the part of the window outside the frame is zero
    crop, box = crop_face(frame, (0, 0, 40, 20), margin=0.0, size=64)
    assert box.tolist() == [0, -10, 40, 30]
    assert crop.shape == (64, 64, 3)
    assert np.all(crop[:12] == 0) and np.all(crop[-20:] == 200)
    with pytest.raises(ValueError, match="x2 > x1"):
        crop_face(frame, (10, 10, 5, 20))


def test_crop_keeps_content_in_place():
    frame = np.zeros((200, 200, 3), np.uint8)
    frame[80:120, 60:100] = 255  # a white 40x40 "face"
    crop, box = crop_face(frame, (60, 80, 100, 120), margin=1.0, size=160)  # 80 px window, enlarged x2
    assert box.tolist() == [40, 60, 120, 140]
    white = np.argwhere(crop[..., 0] > 128)
    assert white.min(0).tolist() == [40, 40] and white.max(0).tolist() == [119, 119]


# ----------------------------------------------------------------------------------------------- video
def test_read_frames_decodes_the_requested_frames(tmp_path):
    path = make_video(tmp_path / "ramp.mp4", [i * 20 for i in range(10)], codec="mpeg4")
    info = probe_video(path)
    assert (info.num_frames, info.width, info.height) == (10, 64, 48) and info.fps == pytest.approx(10)
    frames = read_frames(path, [9, 0, 5, 5])
    assert [i for i, _ in frames] == [0, 5, 9]
    for i, f in frames:
        assert f.shape == (48, 64, 3) and f.dtype == np.uint8
        assert abs(float(f.mean()) - i * 20) < 6
    assert not frames.truncated
    beyond = read_frames(path, [3, 12])
    assert beyond.truncated and beyond.missing == [12] and "ended early" in beyond.reason
    assert [i for i, _ in beyond] == [3]


def test_prefetch_keeps_order_propagates_errors_and_stops_early():
    from faceforge.data.detection.extraction.video import prefetch

    assert list(prefetch(range(50), depth=2)) == list(range(50))

    def failing():
        yield 1
        raise OSError("disk gone")

    with pytest.raises(OSError, match="disk gone"):
        list(prefetch(failing()))
    closed = []

    def endless():
        try:
            i = 0
            while True:
                yield i
                i += 1
        finally:
            closed.append(True)

    gen = prefetch(endless(), depth=3)
    assert [next(gen) for _ in range(5)] == [0, 1, 2, 3, 4]
    gen.close()  # the consumer stops: the producer is stopped, joined and its source closed
    assert closed == [True]


def test_unreadable_videos_raise_video_decode_error(tmp_path):
    with pytest.raises(VideoDecodeError, match="does not exist"):
        probe_video(tmp_path / "absent.mp4")
    junk = tmp_path / "junk.mp4"
    junk.write_bytes(b"not a video" * 50)
    with pytest.raises(VideoDecodeError) as err:
        read_frames(junk, [0])
    assert err.value.path == str(junk) and err.value.reason


# ----------------------------------------------------------------------------------------------- detector
def test_detector_builds_offline_and_finds_no_face_in_gray(monkeypatch):
    from faceforge.data.detection.extraction.detector import FaceDetector, FaceDetectorError

    def no_network(*args, **kwargs):
        raise AssertionError("the face detector tried to use the network")

    monkeypatch.setattr(socket.socket, "connect", no_network)
    monkeypatch.setattr("torch.hub.download_url_to_file", no_network)
    det = FaceDetector()
    assert det.detect([np.full((240, 320, 3), 128, np.uint8), np.zeros((8, 8, 3), np.uint8)]) == [[], []]
    assert det.min_face_for(1080, 1920) == pytest.approx(det.min_face_fraction * 1080)
    assert det.min_face_for(100, 100) == 20.0
    with pytest.raises(FaceDetectorError, match="uint8"):
        det.detect([np.zeros((10, 10, 3), np.float32)])
    with pytest.raises(FaceDetectorError, match="factor"):
        FaceDetector(factor=1.5)


def test_detector_on_a_real_frame(fixtures_dir):
    from faceforge.data.detection.extraction.detector import FaceDetector

    (_, frame), = read_frames(fixtures_dir / "videos/dfdc" / REAL, [30])
    det_all = FaceDetector(keep=None).detect([frame])[0]
    assert len(det_all) >= 1
    probs = [d.prob for d in det_all]
    assert probs == sorted(probs, reverse=True)
    (best,) = FaceDetector(keep=1).detect([frame])[0]
    assert best.box.shape == (4,) and best.box.dtype == np.float32 and best.landmarks.shape == (5, 2)
    x1, y1, x2, y2 = best.box
    assert 0 <= x1 < x2 <= frame.shape[1] and 0 <= y1 < y2 <= frame.shape[0]
    # the 5 landmarks (eyes, nose, mouth corners) lie inside the face box
    assert np.all((best.landmarks[:, 0] > x1) & (best.landmarks[:, 0] < x2))
    assert np.all((best.landmarks[:, 1] > y1) & (best.landmarks[:, 1] < y2))


# ----------------------------------------------------------------------------------------------- pipeline
@pytest.fixture(scope="module")
def dfdc_root(fixtures_dir, tmp_path_factory) -> Path:
    """A DFDC-layout folder: the two real clips, bad videos, a missing and an unlabelled file."""
    root = tmp_path_factory.mktemp("dfdc")
    src = fixtures_dir / "videos" / "dfdc"
    shutil.copy(src / FAKE, root / FAKE)
    shutil.copy(src / REAL, root / REAL)
    truncate_copy(src / REAL, root / "broken.mp4")  # MP4 index at the end: cannot be opened
    tmp = tmp_path_factory.mktemp("tmp")
    truncate_copy(remux_faststart(src / FAKE, tmp / "fs.mp4"), root / "cut.mp4")  # opens, stream ends early
    make_video(root / "gray.mp4", [128] * 10, size=(320, 240))
    shutil.copy(root / "gray.mp4", root / "stray.mp4")
    meta = {FAKE: {"label": "FAKE", "split": "train", "original": "atvmxvwyns.mp4"},
            REAL: {"label": "REAL", "split": "train", "original": None},
            "broken.mp4": {"label": "REAL", "split": "train", "original": None},
            "cut.mp4": {"label": "FAKE", "split": "train", "original": REAL},
            "gray.mp4": {"label": "REAL", "split": "train", "original": None},
            "gone.mp4": {"label": "FAKE", "split": "train", "original": REAL}}
    (root / "metadata.json").write_text(json.dumps(meta))
    return root


@pytest.fixture(scope="module")
def extracted(dfdc_root, tmp_path_factory):
    """One extraction run (4 frames per video), shared by the pipeline tests."""
    from faceforge.data.detection.extraction.extract import extract_dataset

    out = tmp_path_factory.mktemp("faces")
    index = extract_dataset("dfdc", dfdc_root, out, **EXTRACT_KW)
    report = json.loads((out / "prepare_report.json").read_text())
    return out, index, report


def test_extraction_finds_faces_with_labels(extracted, dfdc_root):
    out, index, _ = extracted
    assert FaceIndex.read(out).columns["video_id"].tolist() == index.columns["video_id"].tolist()
    for name, label, method in ((FAKE, 1, "DFDC"), (REAL, 0, "original")):
        rows = index.where(video_id=f"dfdc/{Path(name).stem}")
        assert len(rows) >= 3, f"faces in most of the 4 sampled frames of {name}"
        assert set(rows.columns["label"].tolist()) == {label}
        assert set(rows.columns["method"].tolist()) == {method}
        assert set(rows.columns["num_frames"].tolist()) == {probe_video(dfdc_root / name).num_frames}
        assert len(set(rows.columns["frame_index"].tolist())) == len(rows)  # keep=1: one face per frame
        for i in range(len(rows)):
            crop = cv2.imread(str(rows.crop_file(i)))
            assert crop is not None and crop.shape == (96, 96, 3)
            row = rows.row(i)
            assert 0 <= row["x1"] < row["x2"] <= 1920 and 0 <= row["y1"] < row["y2"] <= 1080
            assert rows.landmarks_array(i).shape == (5, 2)
    assert index.where(video_id="dfdc/abofeumbvv").columns["source_id"][0] == "dfdc/atvmxvwyns"
    meta = json.loads((out / "face_index.meta.json").read_text())
    assert meta["dataset"] == "dfdc" and meta["root"] == str(dfdc_root.resolve())
    assert meta["sampling"] == {"mode": "evenly", "num_frames": 4, "seed": 0, "stride": 1}
    assert meta["crop"]["size"] == 96 and meta["detector"]["model"] == "facenet_pytorch.MTCNN"


def test_bad_videos_are_counted_not_fatal(extracted):
    out, index, report = extracted
    assert [u["video_id"] for u in report["unreadable"]] == ["dfdc/broken"]
    assert [t["video_id"] for t in report["truncated"]] == ["dfdc/cut"]
    assert "ended early" in report["truncated"][0]["reason"]
    assert "dfdc/gray" in report["no_face"]
    assert report["failed"] == []
    assert any(m.endswith("gone.mp4") for m in report["reader"]["missing"])
    assert any(u.endswith("stray.mp4") for u in report["reader"]["unlabelled"])
    assert report["videos_total"] == 5 and report["faces"] == len(index)
    assert not (out / "videos" / "dfdc" / "broken.json").exists()  # retried on the next run
    assert (out / "videos" / "dfdc" / "gray.json").is_file()


def test_rerun_resumes_and_rebuilds_the_identical_index(extracted, dfdc_root):
    from faceforge.data.detection.extraction.extract import extract_faces
    from faceforge.data.detection.readers import read_dataset

    out, _, _ = extracted
    csv_before = (out / "face_index.parquet").read_bytes()
    meta_before = (out / "face_index.meta.json").read_bytes()
    fake_crop = next((out / "crops" / "dfdc" / "abofeumbvv").iterdir())
    mtime = fake_crop.stat().st_mtime_ns
    # simulate a run killed before the real video was finished: its marker and the index never got written
    (out / "videos" / "dfdc" / "lynaeydofd.json").unlink()
    (out / "face_index.parquet").unlink()
    records, _ = read_dataset("dfdc", dfdc_root)
    report = extract_faces(records, out, source={"dataset": "dfdc", "root": str(dfdc_root.resolve())}, **EXTRACT_KW)
    assert report.videos_skipped == 3  # fake, cut, gray
    assert report.videos_extracted == 2  # real (no marker) and broken (unreadable: tried again)
    assert (out / "face_index.parquet").read_bytes() == csv_before
    assert (out / "face_index.meta.json").read_bytes() == meta_before
    assert fake_crop.stat().st_mtime_ns == mtime  # finished videos are not redone


def test_rerun_with_other_settings_is_refused(extracted, dfdc_root):
    from faceforge.data.detection.extraction.extract import ExtractionSettingsError, extract_dataset

    out, _, _ = extracted
    with pytest.raises(ExtractionSettingsError) as err:
        extract_dataset("dfdc", dfdc_root, out, **{**EXTRACT_KW, "num_frames": 8})
    assert "num_frames" in str(err.value) and "another output folder" in str(err.value)


def test_cli_runs_in_process(extracted, dfdc_root, capsys):
    from faceforge.data.detection.extraction.cli import main

    out, _, _ = extracted
    csv_before = (out / "face_index.parquet").read_bytes()
    code = main(["--dataset", "dfdc", "--root", str(dfdc_root), "--output", str(out), "--num-frames", "4",
                 "--size", "96", "--quiet"])
    printed = capsys.readouterr()
    assert code == 0
    assert "4 already done" in printed.out and "1 unreadable" in printed.out
    assert (out / "face_index.parquet").read_bytes() == csv_before

    code = main(["--dataset", "dfdc", "--root", str(dfdc_root / "absent"), "--output", str(out)])
    err = capsys.readouterr().err
    assert code == 1 and len(err.strip().splitlines()) == 1 and "absent" in err
    code = main(["--dataset", "celebdf", "--root", str(dfdc_root), "--output", str(out), "--test-fraction", "0.1"])
    assert code == 2 and "--test-fraction" in capsys.readouterr().err


def test_cli_fresh_run(tmp_path, fixtures_dir, capsys):
    from faceforge.data.detection.extraction.cli import main

    root = tmp_path / "dfdc"
    root.mkdir()
    shutil.copy(fixtures_dir / "videos/dfdc" / REAL, root / REAL)
    make_video(root / "gray.mp4", [90] * 10, size=(320, 240))
    (root / "metadata.json").write_text(json.dumps({REAL: {"label": "REAL", "original": None},
                                                    "gray.mp4": {"label": "FAKE", "original": REAL}}))
    out = tmp_path / "out"
    assert main(["--dataset", "dfdc", "--root", str(root), "--output", str(out), "--num-frames", "2",
                 "--image-format", "jpg", "--size", "64", "--val-fraction", "0", "--test-fraction", "0"]) == 0
    printed = capsys.readouterr()
    assert "videos: 100%" in printed.err and "2/2" in printed.err and "faces:" in printed.out  # the tqdm bar
    index = FaceIndex.read(out)
    assert index.columns["video_id"].tolist() == ["dfdc/lynaeydofd"] * 2
    assert set(index.columns["split"].tolist()) == {"train"}
    assert all(p.endswith(".jpg") for p in index.columns["crop_path"].tolist())
    assert cv2.imread(str(index.crop_file(0))).shape == (64, 64, 3)


def test_parallel_workers_give_the_same_index(extracted, dfdc_root, tmp_path):
    from faceforge.data.detection.extraction.extract import extract_dataset

    out, _, _ = extracted
    par = tmp_path / "parallel"
    extract_dataset("dfdc", dfdc_root, par, workers=2, **EXTRACT_KW)
    assert (par / "face_index.parquet").read_bytes() == (out / "face_index.parquet").read_bytes()
    report = json.loads((par / "prepare_report.json").read_text())
    assert [t["video_id"] for t in report["truncated"]] == ["dfdc/cut"]
    for name in os.listdir(out / "crops" / "dfdc" / "lynaeydofd"):
        a = cv2.imread(str(out / "crops" / "dfdc" / "lynaeydofd" / name))
        b = cv2.imread(str(par / "crops" / "dfdc" / "lynaeydofd" / name))
        assert np.array_equal(a, b)


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="needs /proc")
@pytest.mark.slow
@pytest.mark.timeout(300)
def test_kill_9_mid_run_leaves_no_worker_and_the_rerun_gives_the_same_index(extracted, dfdc_root, tmp_path):
    """SIGKILL of ``faceforge-extract-faces --workers 2`` mid-run: its workers die with it (issue 8: they used to
    stay alive in futex_wait), and rerunning the same command completes an index byte-identical to an
    uninterrupted run's."""
    import subprocess
    import sys

    from tests.test_runner import kill_mid_run

    out_ref, _, _ = extracted
    out = tmp_path / "killed"
    argv = [sys.executable, "-m", "faceforge.data.detection.extraction.cli", "--dataset", "dfdc", "--root",
            str(dfdc_root), "--output", str(out), "--num-frames", "4", "--size", "96", "--workers", "2", "--quiet"]
    kill_mid_run(argv, Path(__file__).resolve().parents[1],
                 lambda: (out / "videos").is_dir() and any((out / "videos").rglob("*.json")),
                 "extraction")  # the first video is done: the run is in the middle
    assert not (out / "face_index.parquet").exists()  # the index is written last
    done = subprocess.run(argv, cwd=Path(__file__).resolve().parents[1], capture_output=True, text=True, timeout=240)
    assert done.returncode == 0, done.stderr
    assert "already done" in done.stdout
    # (the meta file differs: the command records the config's reader_kwargs, the reference run none)
    assert (out / "face_index.parquet").read_bytes() == (out_ref / "face_index.parquet").read_bytes()
