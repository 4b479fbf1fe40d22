"""Bad input while preparing data (issue 8, point 4, remaining cases): each is one clear faceforge error naming the
file and the problem (exit status 2 from the console commands, no traceback), or a bad sample skipped and counted
in the report; earlier outputs stay as they were and no incomplete folder is left looking finished.

* ``faceforge-extract-faces --output FILE``: refused before any work.
* A full disk while extraction writes: the run stops, the error names the file and "no space left", and no
  ``face_index.csv`` is left behind (the index is written last).
* A zero-byte ``.mat`` in a 300W-LP folder: skipped as ``unreadable_label``; ``faceforge-make-volumes`` exits 0.
"""
from __future__ import annotations

import errno
import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest

import faceforge.data.detection.extraction.extract as extract
from faceforge.data.detection.extraction.detector import Detection
from faceforge.errors import FaceforgeError

EXTRACT_KW = dict(num_frames=2, size=32, progress=False)
REAL_REPLACE = os.replace


def touch(path: Path, data: bytes = b"") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


def snapshot(folder: Path) -> dict[str, bytes]:
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def make_video(path: Path, frames: int = 4, size: tuple[int, int] = (64, 48)) -> Path:
    """A short flat-gray clip (PyAV encoder)."""
    import av

    path.parent.mkdir(parents=True, exist_ok=True)
    container = av.open(str(path), "w")
    stream = container.add_stream("libx264", rate=10)
    stream.width, stream.height, stream.pix_fmt = size[0], size[1], "yuv420p"
    for _ in range(frames):
        frame = av.VideoFrame.from_ndarray(np.full((size[1], size[0], 3), 128, np.uint8), format="rgb24")
        for packet in stream.encode(frame):
            container.mux(packet)
    for packet in stream.encode():
        container.mux(packet)
    container.close()
    return path


def make_dfdc(root: Path, names: list[str]) -> Path:
    """A DFDC root with one real gray clip per name."""
    for name in names:
        make_video(root / f"{name}.mp4")
    touch(root / "metadata.json", json.dumps(
        {f"{n}.mp4": {"label": "REAL", "split": "train", "original": None} for n in names}).encode())
    return root


class CentreFaceDetector:
    """Stands in for MTCNN: one face in the middle of every frame (no model, no weights)."""

    def __init__(self, **kwargs):
        self.kwargs = kwargs

    def settings(self) -> dict:
        return {"fake": True}

    def detect(self, frames):
        out = []
        for frame in frames:
            h, w = frame.shape[:2]
            box = np.array([w / 4, h / 4, 3 * w / 4, 3 * h / 4], np.float32)
            out.append([Detection(box=box, prob=0.99, landmarks=np.full((5, 2), w / 2, np.float32))])
        return out


def full_disk_when(monkeypatch, matches) -> list[str]:
    """Make ``os.replace`` (the last step of every atomic write) fail with ENOSPC for targets ``matches`` accepts."""
    real_replace = REAL_REPLACE
    hits: list[str] = []

    def replace(src, dst, *args, **kwargs):
        if matches(Path(dst)):
            hits.append(str(dst))
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(src), None, str(dst))
        return real_replace(src, dst, *args, **kwargs)

    monkeypatch.setattr(os, "replace", replace)
    return hits


# ----------------------------------------------------------------------------------------------- --output FILE
def test_extract_cli_output_that_is_a_file_is_refused_before_any_work(tmp_path, monkeypatch, capsys):
    import faceforge.data.detection.readers as readers
    from faceforge.data.detection.extraction import cli

    root = make_dfdc(tmp_path / "dfdc", ["a"])
    out = touch(tmp_path / "faces.csv", b"someone's file\n")
    read: list[str] = []
    real_read = readers.read_dataset

    def read_dataset(*args, **kwargs):
        read.append(args[0])
        return real_read(*args, **kwargs)

    monkeypatch.setattr(readers, "read_dataset", read_dataset)
    monkeypatch.setattr(extract, "FaceDetector", CentreFaceDetector)
    assert cli.main(["--dataset", "dfdc", "--root", str(root), "--output", str(out), "--quiet"]) == 1
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("faceforge: OutputFolderError: "), err
    assert str(out) in err and "is an existing file, not a folder" in err and "Traceback" not in err
    assert read == []  # refused before the dataset was read
    assert out.read_bytes() == b"someone's file\n"


def test_extract_output_below_a_file_is_refused(tmp_path, monkeypatch):
    monkeypatch.setattr(extract, "FaceDetector", CentreFaceDetector)
    blocker = touch(tmp_path / "data", b"x")
    with pytest.raises(extract.OutputFolderError) as err:
        extract.extract_faces([], blocker / "faces", **EXTRACT_KW)
    assert isinstance(err.value, FaceforgeError) and str(blocker) in str(err.value)
    assert "parent of the output folder" in str(err.value) and blocker.read_bytes() == b"x"


# ----------------------------------------------------------------------------------------------- full disk
def test_full_disk_while_writing_crops_stops_with_a_clear_error_and_leaves_no_index(tmp_path, monkeypatch):
    from faceforge.data.detection.face_index import INDEX_FILENAME, META_FILENAME

    monkeypatch.setattr(extract, "FaceDetector", CentreFaceDetector)
    root = make_dfdc(tmp_path / "dfdc", ["a"])
    out = tmp_path / "faces"
    extract.extract_dataset("dfdc", root, out, **EXTRACT_KW)  # an earlier complete run
    assert (out / INDEX_FILENAME).is_file()
    marker_a = (out / "videos" / "dfdc" / "a.json").read_bytes()

    make_dfdc(root, ["a", "b", "c"])  # new videos; the disk fills up on the first new crop
    hits = full_disk_when(monkeypatch, lambda p: "crops" in p.parts)
    with pytest.raises(extract.DiskFullError) as err:
        extract.extract_dataset("dfdc", root, out, **EXTRACT_KW)
    msg = str(err.value)
    assert isinstance(err.value, FaceforgeError) and isinstance(err.value, OSError)
    assert len(hits) == 1 and hits[0] in msg and "no space left" in msg.lower()  # stopped at the first failure
    assert not (out / INDEX_FILENAME).exists() and not (out / META_FILENAME).exists()
    assert (out / "videos" / "dfdc" / "a.json").read_bytes() == marker_a  # finished work is kept
    assert not (out / "videos" / "dfdc" / "b.json").exists()

    monkeypatch.setattr(os, "replace", REAL_REPLACE)  # space freed: the same command resumes
    index = extract.extract_dataset("dfdc", root, out, **EXTRACT_KW)
    assert sorted(set(index.columns["video_id"])) == ["dfdc/a", "dfdc/b", "dfdc/c"]


def test_full_disk_while_writing_the_index_leaves_no_index(tmp_path, monkeypatch):
    from faceforge.data.detection.face_index import INDEX_FILENAME, META_FILENAME

    monkeypatch.setattr(extract, "FaceDetector", CentreFaceDetector)
    root = make_dfdc(tmp_path / "dfdc", ["a"])
    out = tmp_path / "faces"
    full_disk_when(monkeypatch, lambda p: p.name == INDEX_FILENAME)
    with pytest.raises(extract.DiskFullError) as err:
        extract.extract_dataset("dfdc", root, out, **EXTRACT_KW)
    assert str(out / INDEX_FILENAME) in str(err.value) and "no space left" in str(err.value).lower()
    assert not (out / INDEX_FILENAME).exists() and not (out / META_FILENAME).exists()
    assert not [p for p in out.iterdir() if p.name.startswith(".")]  # no temporary file left


def test_full_disk_cli_exits_1_with_one_line(tmp_path, monkeypatch, capsys):
    from faceforge.data.detection.extraction import cli
    from faceforge.data.detection.face_index import INDEX_FILENAME

    monkeypatch.setattr(extract, "FaceDetector", CentreFaceDetector)
    root = make_dfdc(tmp_path / "dfdc", ["a"])
    out = tmp_path / "faces"
    hits = full_disk_when(monkeypatch, lambda p: p.suffix == ".png")
    assert cli.main(["--dataset", "dfdc", "--root", str(root), "--output", str(out), "--quiet",
                     "--num-frames", "2", "--size", "32"]) == 1
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("faceforge: DiskFullError: "), err
    assert hits and hits[0] in err and "no space left" in err.lower() and "Traceback" not in err
    assert not (out / INDEX_FILENAME).exists()


# ----------------------------------------------------------------------------------------------- 300W-LP .mat
@pytest.fixture()
def wlp_root(tmp_path: Path, fixtures_dir: Path) -> Path:
    """A 300W-LP folder with the fixture sample and a copy of its image whose .mat is empty (0 bytes)."""
    src = fixtures_dir / "face3d_300wlp"
    root = tmp_path / "300W_LP"
    (root / "IBUG").mkdir(parents=True)
    for ext in ("jpg", "mat"):
        shutil.copy(src / f"IBUG_image_008_1_0.{ext}", root / "IBUG")
    shutil.copy(src / "IBUG_image_008_1_0.jpg", root / "IBUG" / "IBUG_image_009_1_0.jpg")
    touch(root / "IBUG" / "IBUG_image_009_1_0.mat")
    return root


def _volume_args(root: Path, out: Path, fixtures_dir: Path) -> list[str]:
    return ["--root", str(root), "--output", str(out), "--model-dir", str(fixtures_dir / "3ddfa"),
            "--noneck-dir", str(fixtures_dir / "3ddfa_v2" / "configs"), "-q"]


@pytest.mark.fixtures
def test_zero_byte_mat_is_skipped_as_unreadable_label(wlp_root, tmp_path, fixtures_dir, capsys):
    from faceforge.data.reconstruction.cli import main
    from faceforge.data.reconstruction.generation import REPORT_FILENAME

    out = tmp_path / "volumes"
    for _ in range(2):  # a rerun gives the same answer
        assert main(_volume_args(wlp_root, out, fixtures_dir)) == 0, capsys.readouterr().err
        report = json.loads((out / REPORT_FILENAME).read_text())
        assert report["stored"] == 1 and report["skipped"] == {"unreadable_label": 1}
        (skip,) = report["skipped_samples"]
        empty = wlp_root / "IBUG" / "IBUG_image_009_1_0.mat"
        assert skip["sample_id"] == "IBUG/IBUG_image_009_1_0" and str(empty) in skip["detail"]
        assert "empty file" in skip["detail"]
    assert "skipped unreadable_label: 1" in capsys.readouterr().out


@pytest.mark.fixtures
def test_rerun_retries_samples_an_earlier_run_failed_on(wlp_root, tmp_path, fixtures_dir, monkeypatch, capsys):
    """A shard that recorded an internal error (e.g. by an older faceforge) is regenerated, not reused."""
    import faceforge.data.reconstruction.generation as volumes
    from faceforge.data.reconstruction.cli import main

    real_read = volumes.read_300wlp_mat

    def old_reader(path):
        if Path(path).stat().st_size == 0:
            raise RuntimeError("Mat file appears to be truncated")  # what scipy let through before
        return real_read(path)

    out = tmp_path / "volumes"
    monkeypatch.setattr(volumes, "read_300wlp_mat", old_reader)
    assert main(_volume_args(wlp_root, out, fixtures_dir)) == 1
    monkeypatch.setattr(volumes, "read_300wlp_mat", real_read)
    assert main(_volume_args(wlp_root, out, fixtures_dir)) == 0
    report = json.loads((out / volumes.REPORT_FILENAME).read_text())
    assert report["skipped"] == {"unreadable_label": 1} and report["stored"] == 1
    capsys.readouterr()
