"""Readers of the official dataset layouts, on tiny fake layouts (only file names matter to readers)."""
from __future__ import annotations

import json
from collections import defaultdict
from pathlib import Path

import pytest

from faceforge.data.detection.readers import READERS, DatasetLayoutError, assign_split, read_dataset, stable_unit_hash
from faceforge.data.detection.readers.celebdf import read_celebdf
from faceforge.data.detection.readers.dfdc import read_dfdc
from faceforge.data.detection.readers.ffpp import read_ffpp


def touch(path: Path, data: bytes = b"") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


def assert_groups_whole(records, allow_test_straddle: bool = False) -> None:
    splits = defaultdict(set)
    for r in records:
        splits[r.source_id].add(r.split)
    for group, s in splits.items():
        if allow_test_straddle:
            s = s - {"test"} or s
        assert len(s) == 1, f"group {group} split across {s}"


def assert_common(records) -> None:
    ids = [r.video_id for r in records]
    assert len(set(ids)) == len(ids), "video ids must be unique"
    assert ids == sorted(ids), "records sorted by video_id"
    for r in records:
        assert r.label in (0, 1)
        assert r.split in ("train", "val", "test")
        assert r.path.is_file() and r.path.is_absolute()
        assert (r.label == 0) == (r.method == "original")


# ----------------------------------------------------------------------------------------------- FF++
PAIRS = {"train": [["000", "001"], ["002", "003"]], "val": [["004", "005"]], "test": [["006", "007"]]}


def make_ffpp(root: Path, with_splits: bool = True) -> Path:
    ids = [f"{i:03d}" for i in range(9)]  # 008 is in no split
    for comp in ("c23", "c40"):
        for vid in ids:
            touch(root / "original_sequences/youtube" / comp / "videos" / f"{vid}.mp4")
        for method in ("Deepfakes", "Face2Face", "FaceShifter"):
            if method != "Deepfakes" and comp == "c40":
                continue
            for pairs in PAIRS.values():
                for a, b in pairs:
                    touch(root / "manipulated_sequences" / method / comp / "videos" / f"{a}_{b}.mp4")
                    touch(root / "manipulated_sequences" / method / comp / "videos" / f"{b}_{a}.mp4")
    touch(root / "manipulated_sequences/Deepfakes/c23/videos/notes.mp4")  # odd name
    touch(root / "manipulated_sequences/Deepfakes/c23/videos/000_008.mp4")  # pair in no split
    touch(root / "original_sequences/actors/c23/videos/01__kitchen_pan.mp4")
    touch(root / "manipulated_sequences/DeepFakeDetection/c23/videos/01_02__kitchen_pan__ABCDEFGH.mp4")
    if with_splits:
        for split, pairs in PAIRS.items():
            touch(root / "splits" / f"{split}.json", json.dumps(pairs).encode())
    return root


def test_ffpp_labels_methods_splits(tmp_path):
    root = make_ffpp(tmp_path / "ffpp")
    records, report = read_ffpp(root, compressions=("c23",), methods=("Deepfakes", "Face2Face"))
    assert_common(records)
    by_id = {r.video_id: r for r in records}
    # 8 reals in splits + 2 methods x 8 fakes
    assert len(records) == 8 + 2 * 8
    real = by_id["ffpp/original/c23/004"]
    assert (real.label, real.method, real.compression, real.split, real.source_id) == \
        (0, "original", "c23", "val", "ffpp/004")
    assert real.rel_path == "original_sequences/youtube/c23/videos/004.mp4"
    fake = by_id["ffpp/Deepfakes/c23/005_004"]
    assert (fake.label, fake.method, fake.split, fake.source_id) == (1, "Deepfakes", "val", "ffpp/005")
    assert by_id["ffpp/Face2Face/c23/007_006"].split == "test"
    assert by_id["ffpp/original/c23/000"].split == "train"
    # a pair (both reals and all fakes between them) never leaves its split
    for pairs in PAIRS.values():
        for a, b in pairs:
            members = [r for r in records if any(x in r.video_id.rsplit("/", 1)[1].split("_") for x in (a, b))]
            assert len({r.split for r in members}) == 1
    assert_groups_whole(records)
    # problems are reported, not raised
    unassigned = "\n".join(report.unassigned)
    assert "008.mp4" in unassigned and "000_008.mp4" in unassigned
    assert "01__kitchen_pan.mp4" in unassigned and "DeepFakeDetection" in unassigned
    assert any("notes.mp4" in e for e in report.errors)


def test_ffpp_compressions_and_optional_methods(tmp_path):
    root = make_ffpp(tmp_path / "ffpp")
    records, report = read_ffpp(root, compressions=("c23", "c40"), methods=("Deepfakes", "FaceShifter"))
    ids = {r.video_id for r in records}
    assert "ffpp/Deepfakes/c23/000_001" in ids and "ffpp/Deepfakes/c40/000_001" in ids
    assert "ffpp/FaceShifter/c23/000_001" in ids
    assert not any("Face2Face" in i for i in ids)
    # FaceShifter c40 was not downloaded: reported, not fatal
    assert any("FaceShifter" in e and "c40" in e for e in report.errors)
    assert_common(records)


def test_ffpp_missing_splits_names_expected_files(tmp_path):
    root = make_ffpp(tmp_path / "ffpp", with_splits=False)
    with pytest.raises(DatasetLayoutError) as err:
        read_ffpp(root)
    msg = str(err.value)
    assert "train.json" in msg and "val.json" in msg and "test.json" in msg and str(root) in msg


def test_ffpp_bad_root(tmp_path):
    with pytest.raises(DatasetLayoutError, match="original_sequences"):
        read_ffpp(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(DatasetLayoutError) as err:
        read_ffpp(tmp_path / "empty")
    assert str(tmp_path / "empty") in str(err.value) and "manipulated_sequences" in str(err.value)


def test_ffpp_id_in_two_splits_is_an_error(tmp_path):
    root = make_ffpp(tmp_path / "ffpp")
    touch(root / "splits/test.json", json.dumps([["006", "007"], ["000", "009"]]).encode())
    with pytest.raises(DatasetLayoutError, match="000"):
        read_ffpp(root)


# ----------------------------------------------------------------------------------------------- DFDC
def write_json(path: Path, obj) -> None:
    touch(path, json.dumps(obj).encode())


def make_dfdc(root: Path) -> Path:
    p0 = root / "dfdc_train_part_0"
    meta0 = {"r1.mp4": {"label": "REAL", "split": "train", "original": None},
             "f1.mp4": {"label": "FAKE", "split": "train", "original": "r1.mp4"},
             "f2.mp4": {"label": "FAKE", "split": "train", "original": "r1.mp4"},
             "r2.mp4": {"label": "REAL", "split": "train", "original": None},
             "g1.mp4": {"label": "FAKE", "split": "train", "original": "r2.mp4"},
             "gone.mp4": {"label": "FAKE", "split": "train", "original": "r2.mp4"},
             "weird.mp4": {"label": "MAYBE", "split": "train", "original": None}}
    for name in meta0:
        if name != "gone.mp4":
            touch(p0 / name)
    touch(p0 / "stray.mp4")
    write_json(p0 / "metadata.json", meta0)
    # many small groups, to see splits spread; part 1 also holds a fake of r1 (part 0)
    p1 = root / "dfdc_train_part_1"
    meta1 = {"x1.mp4": {"label": "FAKE", "split": "train", "original": "r1.mp4"}}
    for i in range(60):
        meta1[f"o{i:02d}.mp4"] = {"label": "REAL", "split": "train", "original": None}
        meta1[f"k{i:02d}.mp4"] = {"label": "FAKE", "split": "train", "original": f"o{i:02d}.mp4"}
    for name in meta1:
        touch(p1 / name)
    write_json(p1 / "metadata.json", meta1)
    p2 = root / "dfdc_train_part_2"
    touch(p2 / "z.mp4")
    touch(p2 / "metadata.json", b"{not json")
    test = root / "test"
    touch(test / "videos" / "t1.mp4")
    touch(test / "t2.mp4")
    touch(test / "labels.csv", b"filename,label\nt1.mp4,1\nt2.mp4,0\nt3.mp4,1\n")
    return root


def test_dfdc_labels_groups_and_report(tmp_path):
    root = make_dfdc(tmp_path / "dfdc")
    records, report = read_dfdc(root, val_fraction=0.2, test_fraction=0.1, seed=0)
    assert_common(records)
    by_id = {r.video_id: r for r in records}
    r1, f1 = by_id["dfdc/dfdc_train_part_0/r1"], by_id["dfdc/dfdc_train_part_0/f1"]
    assert (r1.label, r1.method, r1.source_id) == (0, "original", "dfdc/r1")
    assert (f1.label, f1.method, f1.source_id, f1.compression) == (1, "DFDC", "dfdc/r1", "")
    # the fake in another part stays with its original
    assert by_id["dfdc/dfdc_train_part_1/x1"].split == r1.split == f1.split
    assert_groups_whole(records)
    # public test set
    assert by_id["dfdc/test/t1"].split == "test" and by_id["dfdc/test/t1"].label == 1
    assert by_id["dfdc/test/t2"].label == 0 and by_id["dfdc/test/t2"].rel_path == "test/t2.mp4"
    # train-part splits spread roughly as asked (61 groups)
    train_part = [r for r in records if not r.video_id.startswith("dfdc/test/")]
    assert {r.split for r in train_part} == {"train", "val", "test"}
    # problems
    assert any(m.endswith("gone.mp4") for m in report.missing)
    assert any(m.endswith("t3.mp4") for m in report.missing)
    assert any(u.endswith("stray.mp4") for u in report.unlabelled)
    assert any(u.endswith("z.mp4") for u in report.unlabelled)
    errors = "\n".join(report.errors)
    assert "weird.mp4" in errors and "MAYBE" in errors
    assert "dfdc_train_part_2" in errors and "metadata.json" in errors
    assert "weird" not in "".join(by_id) and "stray" not in "".join(by_id)
    assert report.to_dict()["counts"]["missing"] == 2


def test_dfdc_splits_are_seeded_and_stable(tmp_path):
    root = make_dfdc(tmp_path / "dfdc")
    a, _ = read_dfdc(root, seed=0)
    b, _ = read_dfdc(root, seed=0)
    c, _ = read_dfdc(root, seed=1)
    assert [(r.video_id, r.split) for r in a] == [(r.video_id, r.split) for r in b]
    assert [r.split for r in a] != [r.split for r in c]
    assert_groups_whole(c)
    none_test, _ = read_dfdc(root, val_fraction=0.1, test_fraction=0.0)
    assert {r.split for r in none_test if not r.video_id.startswith("dfdc/test/")} <= {"train", "val"}


def test_dfdc_root_metadata_and_errors(tmp_path):
    root = tmp_path / "single"
    touch(root / "a.mp4")
    write_json(root / "metadata.json", {"a.mp4": {"label": "FAKE", "split": "train", "original": "b.mp4"},
                                        "b.mp4": {"label": "REAL", "split": "train", "original": None}})
    records, report = read_dfdc(root)
    assert [r.video_id for r in records] == ["dfdc/a"]
    assert records[0].source_id == "dfdc/b" and report.missing == [str((root / "b.mp4").resolve())]
    with pytest.raises(DatasetLayoutError, match="metadata.json"):
        read_dfdc(tmp_path / "missing")
    (tmp_path / "emptydir").mkdir()
    with pytest.raises(DatasetLayoutError, match="dfdc_train_part"):
        read_dfdc(tmp_path / "emptydir")
    with pytest.raises(ValueError):
        read_dfdc(root, val_fraction=0.6, test_fraction=0.5)


# ----------------------------------------------------------------------------------------------- Celeb-DF
def make_celebdf(root: Path) -> Path:
    for name in ("id0_0000", "id0_0001", "id1_0000", "id1_0001", "id2_0000"):
        touch(root / "Celeb-real" / f"{name}.mp4")
    for name in ("00000", "00001", "00002"):
        touch(root / "YouTube-real" / f"{name}.mp4")
    for name in ("id0_id1_0000", "id0_id1_0001", "id1_id0_0000", "id1_id0_0001", "id2_id0_0000"):
        touch(root / "Celeb-synthesis" / f"{name}.mp4")
    lines = ["1 Celeb-real/id0_0000.mp4", "0 Celeb-synthesis/id0_id1_0000.mp4", "1 YouTube-real/00000.mp4",
             "0 Celeb-synthesis/id9_id8_0003.mp4",  # absent
             "1 Celeb-real/id1_0000.mp4", "1 Celeb-synthesis/id1_id0_0000.mp4",  # flag disagrees with folder
             ""]
    touch(root / "List_of_testing_videos.txt", "\n".join(lines).encode())
    return root


def test_celebdf_labels_inverted_list_and_groups(tmp_path):
    root = make_celebdf(tmp_path / "celebdf")
    records, report = read_celebdf(root, val_fraction=0.5, seed=3)
    assert_common(records)
    by_id = {r.video_id: r for r in records}
    assert len(records) == 13
    real, fake = by_id["celebdf/Celeb-real/id0_0000"], by_id["celebdf/Celeb-synthesis/id0_id1_0000"]
    # the list's "1" means REAL: our label stays 0 for reals, 1 for fakes
    assert (real.label, real.split, real.method) == (0, "test", "original")
    assert (fake.label, fake.split, fake.method) == (1, "test", "Celeb-synthesis")
    assert fake.source_id == real.source_id == "celebdf/id0_0000"
    assert by_id["celebdf/YouTube-real/00000"].split == "test"
    assert by_id["celebdf/YouTube-real/00001"].source_id == "celebdf/youtube/00001"
    # unlisted videos are train/val, a fake with its target
    assert by_id["celebdf/Celeb-synthesis/id0_id1_0001"].split == by_id["celebdf/Celeb-real/id0_0001"].split
    assert by_id["celebdf/Celeb-synthesis/id2_id0_0000"].split == by_id["celebdf/Celeb-real/id2_0000"].split
    assert {by_id[i].split for i in by_id if i not in (
        "celebdf/Celeb-real/id0_0000", "celebdf/Celeb-synthesis/id0_id1_0000", "celebdf/YouTube-real/00000",
        "celebdf/Celeb-real/id1_0000", "celebdf/Celeb-synthesis/id1_id0_0000")} <= {"train", "val"}
    assert_groups_whole(records)
    # a flag that disagrees with the folder: the folder wins, the disagreement is reported
    assert by_id["celebdf/Celeb-synthesis/id1_id0_0000"].label == 1
    errors = "\n".join(report.errors)
    assert "id1_id0_0000" in errors
    assert [Path(m).name for m in report.missing] == ["id9_id8_0003.mp4"]


def test_celebdf_layout_errors(tmp_path):
    root = make_celebdf(tmp_path / "celebdf")
    (root / "List_of_testing_videos.txt").unlink()
    with pytest.raises(DatasetLayoutError, match="List_of_testing_videos.txt"):
        read_celebdf(root)
    (tmp_path / "other").mkdir()
    with pytest.raises(DatasetLayoutError) as err:
        read_celebdf(tmp_path / "other")
    assert "Celeb-real" in str(err.value) and str(tmp_path / "other") in str(err.value)


# ----------------------------------------------------------------------------------------------- shared
def test_registry_and_read_dataset(tmp_path):
    assert set(READERS) == {"ffpp", "dfdc", "celebdf"}
    root = make_celebdf(tmp_path / "c")
    records, _ = read_dataset("celebdf", root, val_fraction=0.2)
    assert records == read_celebdf(root, val_fraction=0.2)[0]
    with pytest.raises(ValueError, match="unknown dataset"):
        read_dataset("nope", root)
    with pytest.raises(DatasetLayoutError):
        read_dataset("dfdc", tmp_path / "absent")


def test_assign_split_is_stable_and_proportional():
    # SHA-256 based, so the value is the same in every process (Python's hash() is salted per process)
    assert stable_unit_hash(0, "dfdc/abc") == pytest.approx(0.7445193583575161, abs=1e-15)
    assert 0.0 <= stable_unit_hash(7, "x") < 1.0
    splits = [assign_split(f"g{i}", seed=0, val_fraction=0.2, test_fraction=0.1) for i in range(4000)]
    frac = {s: splits.count(s) / len(splits) for s in ("train", "val", "test")}
    assert abs(frac["val"] - 0.2) < 0.03 and abs(frac["test"] - 0.1) < 0.03
    assert [assign_split(f"g{i}", 1, 0.2, 0.1) for i in range(200)] != splits[:200]
