"""The face index round-trips through its on-disk form and rejects malformed files with a clear message."""
from __future__ import annotations

import numpy as np
import pytest

from faceforge.data.detection.face_index import (
    COLUMN_NAMES,
    INDEX_FILENAME,
    FaceIndex,
    FaceIndexError,
    format_landmarks,
)


def _row(video: str, frame: int, label: int = 1, split: str = "train") -> dict:
    return {
        "video_id": video, "dataset": "dfdc", "method": "DFDC" if label else "original", "compression": "",
        "split": split, "label": label, "source_id": "dfdc/src", "video_path": f"{video}.mp4", "num_frames": 300,
        "frame_index": frame, "face_rank": 0, "det_prob": 0.99, "x1": 10.5, "y1": 20.0, "x2": 110.0, "y2": 140.0,
        "landmarks": format_landmarks(np.arange(10, dtype=np.float32).reshape(5, 2)),
        "crop_path": f"crops/{video}/{frame:06d}_0.png",
    }


def test_round_trip_is_exact_and_sorted(tmp_path):
    rows = [_row("dfdc/b", 5), _row("dfdc/a", 9, label=0, split="val"), _row("dfdc/a", 3, label=0, split="val")]
    index = FaceIndex.from_records(rows, tmp_path, meta={"dataset": "dfdc"}).sorted()
    path = index.write()
    again = FaceIndex.read(path)
    assert list(again.columns["video_id"]) == ["dfdc/a", "dfdc/a", "dfdc/b"]
    assert list(again.columns["frame_index"]) == [3, 9, 5]
    assert again.meta == {"dataset": "dfdc"}
    assert again.columns["label"].dtype == np.int64
    np.testing.assert_allclose(again.landmarks_array(0), np.arange(10).reshape(5, 2))
    assert again.crop_file(2) == tmp_path / "crops/dfdc/b/000005_0.png"
    # writing the re-read index gives the same bytes (reruns are reproducible)
    first = path.read_bytes()
    again.write(tmp_path / "copy")
    assert (tmp_path / "copy" / INDEX_FILENAME).read_bytes() == first


def test_where_and_summary(tmp_path):
    index = FaceIndex.from_records([_row("v1", 0), _row("v1", 1), _row("v2", 0, label=0, split="val")], tmp_path)
    assert len(index.where(split="train")) == 2
    assert len(index.where(split="val", label=0)) == 1
    summary = index.summary()
    assert summary["videos"] == 2 and summary["train"]["fake_faces"] == 2 and summary["val"]["real_faces"] == 1


def test_missing_file_names_it(tmp_path):
    with pytest.raises(FaceIndexError, match="does not exist"):
        FaceIndex.read(tmp_path / "nope.csv")


def test_bad_header_and_bad_value_name_file_and_column(tmp_path):
    bad = tmp_path / "bad" / INDEX_FILENAME
    bad.parent.mkdir()
    bad.write_text("a,b\n1,2\n")
    with pytest.raises(FaceIndexError, match="header"):
        FaceIndex.read(bad)
    index = FaceIndex.from_records([_row("v", 0)], tmp_path / "ok")
    path = index.write()
    text = path.read_text().replace(",300,", ",three hundred,")
    path.write_text(text)
    with pytest.raises(FaceIndexError, match="num_frames.*three hundred"):
        FaceIndex.read(path)


def test_labels_must_be_binary(tmp_path):
    row = _row("v", 0)
    row["label"] = 2
    with pytest.raises(FaceIndexError, match="label 2"):
        FaceIndex.from_records([row], tmp_path)


def test_short_row_reports_line(tmp_path):
    path = FaceIndex.from_records([_row("v", 0)], tmp_path).write()
    with path.open("a") as fh:
        fh.write("only,three,fields\n")
    with pytest.raises(FaceIndexError, match=r":3: expected 18 fields"):
        FaceIndex.read(path)
    assert len(COLUMN_NAMES) == 18
