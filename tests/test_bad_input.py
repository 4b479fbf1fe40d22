"""Bad input (issue 8, point 4): each case is a clear faceforge error naming the file (and line), or a skipped
entry counted in the report the user sees; never a silent drop, never a bare library traceback.

Every corpus is a few empty or junk files in ``tmp_path``: no video is decoded.
"""
from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest

from faceforge.data.detection.readers import DatasetLayoutError, read_celebdf, read_dfdc, read_ffpp
from faceforge.errors import FaceforgeError

EXTRACT_KW = dict(num_frames=2, size=32, progress=False)


def touch(path: Path, data: bytes = b"") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


def write_json(path: Path, obj) -> Path:
    return touch(path, json.dumps(obj).encode())


def snapshot(folder: Path) -> dict[str, bytes]:
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


# ----------------------------------------------------------------------------------------------- Celeb-DF list
def make_celebdf(root: Path, lines: list[str], bom: bool = False) -> Path:
    for rel in ("Celeb-real/id0_0000.mp4", "Celeb-real/id1_0000.mp4", "Celeb-synthesis/id0_id1_0000.mp4",
                "YouTube-real/00000.mp4"):
        touch(root / rel)
    touch(root / "List_of_testing_videos.txt", (b"\xef\xbb\xbf" if bom else b"") + "\n".join(lines).encode())
    return root


@pytest.mark.parametrize("bad_line, problem", [
    ("1 Celeb-real/id1_0000.mp4 extra", "malformed line"),         # 3 columns
    ("REAL Celeb-real/id1_0000.mp4", "malformed line"),            # not a 0/1 flag
    ("1 ../../etc/passwd", "is not <folder>/<file>.mp4"),          # outside the root
    ("1 /etc/passwd", "is not <folder>/<file>.mp4"),
    ("1 celeb-real/id1_0000.mp4", "is not <folder>/<file>.mp4"),   # a folder the layout does not have
])
def test_celebdf_malformed_test_list_line_is_an_error_naming_file_and_line(tmp_path, bad_line, problem):
    root = make_celebdf(tmp_path / "celebdf", ["1 Celeb-real/id0_0000.mp4", "", bad_line])
    with pytest.raises(DatasetLayoutError) as err:
        read_celebdf(root)
    msg = str(err.value)
    assert str(root / "List_of_testing_videos.txt") in msg and "line 3" in msg and problem in msg


def test_celebdf_test_list_with_bom_gives_the_official_test_split(tmp_path):
    root = make_celebdf(tmp_path / "celebdf", ["1 Celeb-real/id0_0000.mp4", "0 Celeb-synthesis/id0_id1_0000.mp4"],
                        bom=True)
    records, report = read_celebdf(root)
    split = {r.video_id: r.split for r in records}
    assert split["celebdf/Celeb-real/id0_0000"] == "test"  # the BOM'd first line parses
    assert split["celebdf/Celeb-synthesis/id0_id1_0000"] == "test"
    assert split["celebdf/Celeb-real/id1_0000"] != "test" and not report.errors


def test_celebdf_bad_list_cli_exits_1_and_leaves_earlier_outputs_unchanged(tmp_path, capsys):
    from faceforge.data.detection.extraction.cli import main

    root = make_celebdf(tmp_path / "celebdf", ["\ufeff1 Celeb-real/id0_0000.mp4", "REAL Celeb-real/id1_0000.mp4"])
    out = tmp_path / "faces"
    touch(out / "face_index.csv", b"earlier output\n")
    before = snapshot(out)
    assert main(["--dataset", "celebdf", "--root", str(root), "--output", str(out), "--quiet"]) == 1
    err = capsys.readouterr().err
    assert "List_of_testing_videos.txt" in err and "line 2" in err and "Traceback" not in err
    assert snapshot(out) == before


# ----------------------------------------------------------------------------------------------- DFDC names
def make_dfdc_escape(tmp_path: Path) -> tuple[Path, Path]:
    """A DFDC root whose metadata names one good video and three names that leave its folder, and whose test
    labels name a file outside and a test/videos file that is a symbolic link out of the root."""
    root = tmp_path / "dfdc"
    outside = touch(tmp_path / "outside.mp4", b"secret")
    touch(root / "good.mp4", b"not a video")
    touch(root / "sub" / "x.mp4")
    write_json(root / "metadata.json", {
        "good.mp4": {"label": "REAL", "split": "train", "original": None},
        "../outside.mp4": {"label": "FAKE", "split": "train", "original": "good.mp4"},
        "/etc/hosts": {"label": "FAKE", "split": "train", "original": "good.mp4"},
        "sub/x.mp4": {"label": "FAKE", "split": "train", "original": "good.mp4"}})
    touch(root / "test" / "labels.csv", b"filename,label\n../../outside.mp4,1\nlinked.mp4,1\n")
    (root / "test" / "videos").mkdir(parents=True)
    (root / "test" / "videos" / "linked.mp4").symlink_to(outside)  # a plain name whose file links out
    return root, outside


def test_dfdc_names_outside_the_root_are_skipped_counted_and_warned(tmp_path, caplog):
    root, _ = make_dfdc_escape(tmp_path)
    with caplog.at_level(logging.WARNING, logger="faceforge.data.detection.readers.dfdc"):
        records, report = read_dfdc(root)
    assert [r.video_id for r in records] == ["dfdc/good"]
    assert report.skipped == {"outside_root": 5} and report.to_dict()["skipped"] == {"outside_root": 5}
    errors = "\n".join(report.errors)
    assert "'/etc/hosts'" in errors and "'../outside.mp4'" in errors and "labels.csv:2" in errors
    assert "labels.csv:3" in errors and "linked.mp4 leads outside" in errors
    warned = "\n".join(r.getMessage() for r in caplog.records)
    assert str(root / "metadata.json") in warned and str(root / "test" / "labels.csv") in warned


def test_dfdc_extraction_never_opens_a_file_outside_the_root(tmp_path, monkeypatch):
    import faceforge.data.detection.extraction.extract as extract
    from faceforge.data.detection.extraction.video import VideoDecodeError

    root, outside = make_dfdc_escape(tmp_path)
    opened: list[str] = []

    def probe(path, *args, **kwargs):
        opened.append(str(path))
        raise VideoDecodeError(str(path), "junk for the test")

    monkeypatch.setattr(extract, "probe_video", probe)
    out = tmp_path / "faces"
    with pytest.raises(extract.EmptyExtractionError) as err:
        extract.extract_dataset("dfdc", root, out, **EXTRACT_KW)
    assert opened == [str(root / "good.mp4")]
    assert str(out / "prepare_report.json") in str(err.value)
    report = json.loads((out / "prepare_report.json").read_text())
    assert report["reader"]["skipped"] == {"outside_root": 5}
    assert outside.read_bytes() == b"secret"


# ----------------------------------------------------------------------------------------------- DFDC metadata
@pytest.mark.parametrize("content, problem", [
    (b"{not json", "Expecting property name"),
    (b"[1, 2]", "got list"),
    (json.dumps({"a.mp4": "FAKE"}).encode(), "no entry maps a file name"),
    (json.dumps({"a.mp4": {"label": "MAYBE"}}).encode(), "no entry maps a file name"),
    (b"{}", "no entry maps a file name"),
])
def test_dfdc_invalid_metadata_is_an_error_naming_the_file(tmp_path, content, problem):
    root = tmp_path / "dfdc"
    touch(root / "a.mp4")
    meta = touch(root / "metadata.json", content)
    with pytest.raises(DatasetLayoutError) as err:
        read_dfdc(root)
    assert str(meta) in str(err.value) and problem in str(err.value)


def test_dfdc_one_bad_metadata_part_of_several_is_counted_and_warned(tmp_path, caplog):
    root = tmp_path / "dfdc"
    touch(root / "dfdc_train_part_0" / "r.mp4")
    write_json(root / "dfdc_train_part_0" / "metadata.json", {"r.mp4": {"label": "REAL", "original": None}})
    touch(root / "dfdc_train_part_1" / "z.mp4")
    bad = touch(root / "dfdc_train_part_1" / "metadata.json", b'["z.mp4"]')
    with caplog.at_level(logging.WARNING, logger="faceforge.data.detection.readers.dfdc"):
        records, report = read_dfdc(root)
    assert [r.video_id for r in records] == ["dfdc/dfdc_train_part_0/r"]
    assert report.skipped == {"bad_metadata": 1}
    assert any(str(bad) in e for e in report.errors) and any(u.endswith("z.mp4") for u in report.unlabelled)
    assert str(bad) in caplog.text


# ----------------------------------------------------------------------------------------------- FF++ ids
def test_ffpp_split_ids_that_are_not_numbers_are_refused(tmp_path):
    root = tmp_path / "ffpp"
    touch(root / "original_sequences/youtube/c23/videos/000.mp4")
    write_json(root / "splits/train.json", [["000", "001"]])
    write_json(root / "splits/val.json", [["../../etc", "002"]])
    write_json(root / "splits/test.json", [])
    with pytest.raises(DatasetLayoutError) as err:
        read_ffpp(root)
    assert str(root / "splits" / "val.json") in str(err.value) and "entry 0" in str(err.value)


# ----------------------------------------------------------------------------------------------- empty extraction
def test_empty_extraction_writes_no_index_and_names_the_report(tmp_path, capsys):
    from faceforge.data.detection.extraction.cli import main

    root = tmp_path / "dfdc"
    touch(root / "junk.mp4", b"not a video" * 20)
    write_json(root / "metadata.json", {"junk.mp4": {"label": "REAL", "split": "train", "original": None}})
    out = tmp_path / "faces"
    touch(out / "face_index.csv", b"video_id\n")  # an empty index left by an earlier failed run
    assert main(["--dataset", "dfdc", "--root", str(root), "--output", str(out), "--quiet", "--num-frames", "2",
                 "--size", "32"]) == 1
    err = capsys.readouterr().err
    assert str(out / "prepare_report.json") in err and "found no face" in err and "Traceback" not in err
    assert not (out / "face_index.csv").exists()
    report = json.loads((out / "prepare_report.json").read_text())
    assert [u["video_id"] for u in report["unreadable"]] == ["dfdc/junk"] and report["faces"] == 0


def test_prepared_folder_with_an_empty_index_is_rebuilt_or_refused(tmp_path):
    from faceforge.data.core.prepared import ensure_built

    class Err(FaceforgeError, RuntimeError):
        pass

    folder = tmp_path / "faces"
    touch(folder / "face_index.csv", b"video_id,label\n")
    with pytest.raises(Err) as err:
        ensure_built(folder, "face_index.csv", None, Err, "no index", "data.faces_dir")
    assert str(folder / "face_index.csv") in str(err.value) and "no rows" in str(err.value)

    calls = []

    def builder(output_dir: Path) -> None:
        calls.append(output_dir)
        touch(output_dir / "face_index.csv", b"video_id,label\nv,1\n")

    ensure_built(folder, "face_index.csv", builder, Err, "no index", "data.faces_dir")
    assert calls == [folder] and (folder / "face_index.csv").read_bytes().endswith(b"v,1\n")

    def empty_builder(output_dir: Path) -> None:
        touch(output_dir / "face_index.csv", b"video_id,label\n")

    with pytest.raises(Err, match="without any row"):
        ensure_built(tmp_path / "other", "face_index.csv", empty_builder, Err, "no index", "data.faces_dir")


def test_extraction_summary_shows_what_the_reader_skipped():
    from faceforge.data.core.records import ReaderReport
    from faceforge.data.detection.extraction.extract import ExtractionReport

    reader = ReaderReport()
    reader.skip("outside_root", "metadata.json: name '/etc/hosts' is not a file name inside /d; skipped")
    text = ExtractionReport(output_dir="/o", reader=reader.to_dict()).summary()
    assert "reader skipped: 1 outside_root (see prepare_report.json)" in text
