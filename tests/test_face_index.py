"""The face index round-trips through its on-disk form (Parquet; legacy CSV still read), holds strings compactly,
and rejects malformed files with a clear message."""
from __future__ import annotations

import pickle

import numpy as np
import pytest

from faceforge.data.detection.face_index import (
    COLUMN_NAMES,
    INDEX_FILENAME,
    LEGACY_INDEX_FILENAME,
    META_FILENAME,
    FaceIndex,
    FaceIndexError,
    StringColumn,
    find_index_file,
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
    bad = tmp_path / "bad" / LEGACY_INDEX_FILENAME
    bad.parent.mkdir()
    bad.write_text("a,b\n1,2\n")
    with pytest.raises(FaceIndexError, match="header"):
        FaceIndex.read(bad)
    index = FaceIndex.from_records([_row("v", 0)], tmp_path / "ok")
    path = index.write_csv(tmp_path / "ok" / LEGACY_INDEX_FILENAME)
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
    path = FaceIndex.from_records([_row("v", 0)], tmp_path).write_csv(tmp_path / LEGACY_INDEX_FILENAME)
    with path.open("a") as fh:
        fh.write("only,three,fields\n")
    with pytest.raises(FaceIndexError, match=r":3: expected 18 fields"):
        FaceIndex.read(path)
    assert len(COLUMN_NAMES) == 18


def test_parquet_is_the_written_format_and_a_legacy_csv_folder_still_reads(tmp_path):
    rows = [_row("dfdc/a", 0, label=0), _row("dfdc/a", 1, label=0), _row("dfdc/b", 0, split="test")]
    index = FaceIndex.from_records(rows, tmp_path / "new", meta={"dataset": "dfdc"})
    assert index.write().name == INDEX_FILENAME == "face_index.parquet"
    assert (tmp_path / "new" / INDEX_FILENAME).read_bytes()[:4] == b"PAR1"
    # a folder prepared before the Parquet format: only face_index.csv (+ meta)
    old = tmp_path / "old"
    index.write_csv(old / LEGACY_INDEX_FILENAME)
    (old / META_FILENAME).write_text('{"dataset": "dfdc"}')
    assert find_index_file(old) == old / LEGACY_INDEX_FILENAME
    legacy = FaceIndex.read(old)
    parquet = FaceIndex.read(tmp_path / "new")
    assert legacy.meta == parquet.meta == {"dataset": "dfdc"}
    for c in COLUMN_NAMES:
        np.testing.assert_array_equal(np.asarray(legacy.columns[c]), np.asarray(parquet.columns[c]), err_msg=c)
    # rewriting the legacy folder writes the Parquet file, removes the CSV, and the folder reads the same
    legacy.write()
    assert find_index_file(old) == old / INDEX_FILENAME and not (old / LEGACY_INDEX_FILENAME).exists()
    assert (old / INDEX_FILENAME).read_bytes() == (tmp_path / "new" / INDEX_FILENAME).read_bytes()


def test_floats_and_non_ascii_strings_round_trip_exactly(tmp_path):
    row = _row("ffpp/Deepfakes/c23/000_003", 7)
    row["x1"], row["det_prob"] = 123.456789, 0.987654321
    row["video_path"] = "vidéos/été 1/ü.mp4"
    index = FaceIndex.from_records([row, _row("a", 0)], tmp_path)
    again = FaceIndex.read(index.write())
    assert again.columns["x1"][0] == np.float32(123.456789)  # float32 exact, not rounded to 6 digits
    assert again.columns["det_prob"].dtype == np.float32
    assert again.columns["video_path"][0] == "vidéos/été 1/ü.mp4"
    assert again.row(0)["video_path"] == "vidéos/été 1/ü.mp4"
    assert len(again.where(video_path="vidéos/été 1/ü.mp4")) == 1


def test_string_columns_are_compact_and_act_like_arrays():
    values = np.array(["train", "val", "train", "test", "train"] * 1000)
    col = StringColumn.from_strings(values)
    assert col.nbytes < values.nbytes / 3  # int32 codes + 3 short byte strings vs 4 bytes per character
    np.testing.assert_array_equal(col == "train", values == "train")
    np.testing.assert_array_equal(col != "val", values != "val")
    assert not (col == "nope").any() and not (col == "trai").any()
    np.testing.assert_array_equal(np.asarray(col), values)
    np.testing.assert_array_equal(np.unique(col), ["test", "train", "val"])
    np.testing.assert_array_equal(col.isin(["val", "test"]), np.isin(values, ["val", "test"]))
    sub = col[values != "train"]
    assert isinstance(sub, StringColumn) and sub.vocab is col.vocab and set(sub.tolist()) == {"val", "test"}
    assert col[1] == "val" and isinstance(col[np.int64(3)], np.str_)
    assert list(col[:3]) == ["train", "val", "train"]
    assert pickle.loads(pickle.dumps(col)).tolist() == col.tolist()
    merged = StringColumn.concat([col[:2], StringColumn.from_strings(["zeta", "alpha"])])
    assert merged.tolist() == ["train", "val", "zeta", "alpha"]
    assert list(merged.vocab) == sorted(merged.vocab)  # sorted vocabulary: codes follow string order


def test_sorted_follows_string_order_and_concat_keeps_rows(tmp_path):
    rows = [_row("b", 1), _row("a", 2), _row("b", 0), _row("ab", 0)]
    ix = FaceIndex.from_records(rows, tmp_path).sorted()
    assert list(zip(ix.columns["video_id"].tolist(), ix.columns["frame_index"].tolist())) == \
        [("a", 2), ("ab", 0), ("b", 0), ("b", 1)]
    both = FaceIndex.concat([ix.select([0]), FaceIndex.from_records([_row("zz", 5)], tmp_path)], root=tmp_path)
    assert both.columns["video_id"].tolist() == ["a", "zz"] and both.columns["frame_index"].tolist() == [2, 5]
    assert both.summary()["videos"] == 2


def test_index_write_is_deterministic_and_last(tmp_path):
    rows = [_row(f"dfdc/v{i % 7}", i) for i in range(50)]
    a = FaceIndex.from_records(rows, tmp_path / "a").sorted().write()
    b = FaceIndex.from_records(rows, tmp_path / "b").sorted().write()
    assert a.read_bytes() == b.read_bytes()
    assert (tmp_path / "a" / META_FILENAME).stat().st_mtime_ns <= a.stat().st_mtime_ns


def test_corrupt_or_foreign_parquet_is_refused_naming_the_file(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    path = tmp_path / INDEX_FILENAME
    path.write_bytes(b"PAR1 not really")
    with pytest.raises(FaceIndexError, match="not a readable Parquet file") as err:
        FaceIndex.read(tmp_path)
    assert str(path) in str(err.value)
    pq.write_table(pa.table({"video_id": ["a"], "label": [1]}), path)
    with pytest.raises(FaceIndexError, match="has columns"):
        FaceIndex.read(path)
    FaceIndex.from_records([_row("v", 0)], tmp_path).write()
    table = pq.read_table(path)
    table = table.set_column(COLUMN_NAMES.index("label"), "label", pa.array([2], type=pa.int64()))
    pq.write_table(table, path)
    with pytest.raises(FaceIndexError, match="label 2"):
        FaceIndex.read(path)
    table = table.set_column(COLUMN_NAMES.index("label"), "label", pa.array(["1"]))
    pq.write_table(table, path)
    with pytest.raises(FaceIndexError, match="wrong type: label"):
        FaceIndex.read(path)


def test_empty_index_round_trips(tmp_path):
    path = FaceIndex.empty(tmp_path).write()
    again = FaceIndex.read(path)
    assert len(again) == 0 and again.summary() == {"faces": 0, "videos": 0}


def test_unique_columns_read_back_as_stored_still_compare_and_sort(tmp_path):
    rows = [_row("v2", 1), _row("v1", 0), _row("v3", 0), _row("v0", 4)]
    rows[0]["landmarks"] = rows[2]["landmarks"] = ""  # repeated values in a column stored without a dictionary
    rows[1]["crop_path"], rows[3]["crop_path"] = "z/1.png", "a/0.png"  # crop paths out of order
    again = FaceIndex.read(FaceIndex.from_records(rows, tmp_path).write())  # written unsorted
    lm, crops = again.columns["landmarks"], again.columns["crop_path"]
    assert not lm.canonical and not crops.canonical
    assert (lm == "").tolist() == [True, False, True, False] and lm.nunique() == 2
    assert crops.isin(["a/0.png", "nope"]).tolist() == [False, False, False, True]
    assert crops.unique().tolist() == sorted(r["crop_path"] for r in rows)
    assert again.sorted().columns["video_id"].tolist() == ["v0", "v1", "v2", "v3"]
    assert np.array_equal(np.argsort(crops.order_keys()), np.argsort(np.asarray(crops)))
    assert again.where(landmarks="").columns["video_id"].tolist() == ["v2", "v3"]


def test_legacy_csv_fast_parse_equals_the_checked_row_by_row_read(tmp_path):
    from faceforge.data.detection import face_index as fi

    rows = [_row("dfdc/b", 2), _row("dfdc/a", 1, label=0, split="test"), _row("dfdc/a", 0, label=0, split="test")]
    rows[0]["video_path"] = 'odd, "quoted" name.mp4'
    rows[1]["landmarks"] = ""
    path = FaceIndex.from_records(rows, tmp_path).write_csv(tmp_path / LEGACY_INDEX_FILENAME)
    fast = fi._read_csv_columns_arrow(path)
    assert fast is not None
    checked = fi._read_csv_columns_checked(path)
    for c in COLUMN_NAMES:
        np.testing.assert_array_equal(np.asarray(fast[c]), np.asarray(checked[c]), err_msg=c)
    assert fast["video_path"][0] == 'odd, "quoted" name.mp4' and fast["landmarks"][1] == ""
    # a file the fast parser refuses is read row by row, which names the problem
    path.write_text(path.read_text().replace(",300,", ",3e2x,", 1))
    assert fi._read_csv_columns_arrow(path) is None
    with pytest.raises(FaceIndexError, match="num_frames.*3e2x"):
        FaceIndex.read(path)


@pytest.mark.parametrize("crop_path", ["/tmp/secret.png", "../secret.png", "crops/../../secret.png", "C:/x.png",
                                       "crops\\..\\x.png"])
@pytest.mark.parametrize("fmt", ["parquet", "csv"])
def test_crop_paths_outside_the_folder_are_refused(tmp_path, crop_path, fmt):
    """An index is data: a crop path leading out of its folder is refused on read (never opened)."""
    rows = [_row("dfdc/a", 0), {**_row("dfdc/a", 1), "crop_path": crop_path}]
    index = FaceIndex.from_records(rows, tmp_path)
    path = index.write() if fmt == "parquet" else index.write_csv(tmp_path / LEGACY_INDEX_FILENAME)
    with pytest.raises(FaceIndexError, match=f"crop_path .* is not a relative path inside {tmp_path}"):
        FaceIndex.read(path)
    ok = FaceIndex.from_records([_row("dfdc/a", 0), {**_row("dfdc/a", 1), "crop_path": "crops/a..b/x.png"}], tmp_path)
    assert len(FaceIndex.read(ok.write())) == 2  # '..' inside a name is not a way out
