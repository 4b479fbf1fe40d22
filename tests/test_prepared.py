"""A prepared data folder is built once and never silently reused with other builder settings."""
from __future__ import annotations

import functools
from pathlib import Path

import pytest

from faceforge.data.core.prepared import BUILD_RECORD
from faceforge.data.detection.datamodule import FaceDataError, FaceDataModule
from faceforge.data.detection.synthetic import build_synthetic_detection


def _builder(**kw):
    return functools.partial(build_synthetic_detection, num_videos=6, frames_per_video=1, image_size=32, **kw)


def test_built_once_then_reused(tmp_path: Path):
    faces = tmp_path / "faces"
    FaceDataModule("synthetic", str(faces), builder=_builder(seed=0), image_size=32).prepare_data()
    assert (faces / BUILD_RECORD).is_file()
    before = (faces / "face_index.parquet").stat().st_mtime_ns
    # same settings (the worker count does not change the output): reused, not rebuilt
    FaceDataModule("synthetic", str(faces), builder=_builder(seed=0, num_threads=1), image_size=32).prepare_data()
    assert (faces / "face_index.parquet").stat().st_mtime_ns == before


def test_other_settings_are_refused_with_the_difference_named(tmp_path: Path):
    faces = tmp_path / "faces"
    FaceDataModule("synthetic", str(faces), builder=_builder(seed=0), image_size=32).prepare_data()
    with pytest.raises(FaceDataError, match=r"seed: built with 0, now 1.*data.faces_dir"):
        FaceDataModule("synthetic", str(faces), builder=_builder(seed=1), image_size=32).prepare_data()


def test_folder_made_outside_a_data_module_is_not_checked(tmp_path: Path):
    faces = tmp_path / "faces"
    build_synthetic_detection(faces, num_videos=6, frames_per_video=1, image_size=32, seed=0)
    FaceDataModule("synthetic", str(faces), builder=_builder(seed=5), image_size=32).prepare_data()
    assert not (faces / BUILD_RECORD).exists()


def test_the_builder_writes_the_contract_report_and_train_copies_it(tmp_path: Path, caplog):
    import json
    import logging

    from faceforge.data.core.prepared import PREPARE_REPORT, log_prepare_report, read_prepare_report

    faces = tmp_path / "faces"
    dm = FaceDataModule("synthetic", str(faces), builder=_builder(seed=0), image_size=32)
    dm.prepare_data()
    report = read_prepare_report(faces)
    assert report is not None
    assert report["builder"] == "faceforge.data.detection.synthetic.build_synthetic_detection"
    assert report["counts"] == {"videos": 6, "faces": 6} and report["problems"] == []
    run = tmp_path / "run"
    run.mkdir()
    with caplog.at_level(logging.INFO, logger="faceforge.data.core.prepared"):
        assert log_prepare_report(dm, run) == report
    assert json.loads((run / PREPARE_REPORT).read_text()) == report
    assert "6 videos" in caplog.text and "6 faces" in caplog.text and "no problem met" in caplog.text


def test_report_lines_list_each_kind_with_a_few_examples():
    from faceforge.data.core.prepared import make_report, report_lines

    problems = [{"kind": "unreadable", "item": f"v{i}.mp4", "reason": "moov atom not found"} for i in range(5)]
    problems.append({"kind": "reader:missing", "item": "gone.mp4"})
    report = make_report("b.build", {"videos": 9}, problems)
    assert report["problem_counts"] == {"reader:missing": 1, "unreadable": 5}
    lines = report_lines(report, "/data/faces")
    assert lines[0] == "preparation of /data/faces (b.build): 9 videos"
    assert lines[2] == ("  5 unreadable: v0.mp4 (moov atom not found); v1.mp4 (moov atom not found); v2.mp4 (moov "
                        "atom not found) ... (+2)")
    assert len(lines) == 3


def test_an_unreadable_settings_record_is_refused_naming_it(tmp_path: Path):
    faces = tmp_path / "faces"
    FaceDataModule("synthetic", str(faces), builder=_builder(seed=0), image_size=32).prepare_data()
    for broken in ("{not json", '{"builder": "x", "kwargs": [1]}', '{"kwargs": {}}', "[1, 2]"):
        (faces / BUILD_RECORD).write_text(broken)
        with pytest.raises(FaceDataError, match=f"{BUILD_RECORD} is unreadable"):
            FaceDataModule("synthetic", str(faces), builder=_builder(seed=0), image_size=32).prepare_data()


def test_a_report_of_the_wrong_shape_is_no_report(tmp_path: Path, caplog):
    """prepare_report.json is data: one of another shape is ignored with a warning, never a traceback."""
    from faceforge.data.core.prepared import PREPARE_REPORT, read_prepare_report

    for broken in ('{"counts": [1, 2]}', '{"problems": {"a": 1}}', '{"problems": [1]}', '{"problem_counts": 3}'):
        (tmp_path / PREPARE_REPORT).write_text(broken)
        assert read_prepare_report(tmp_path) is None
    assert "is not a preparation report" in caplog.text
    (tmp_path / PREPARE_REPORT).write_text('{"counts": {"videos": 2}, "problems": [], "problem_counts": {}}')
    assert read_prepare_report(tmp_path)["counts"] == {"videos": 2}


def _prepare_main():
    import importlib.util

    spec = importlib.util.spec_from_file_location("prepare_cli", Path(__file__).resolve().parents[1] / "prepare.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.main


def test_prepare_py_builds_a_data_config_and_prints_its_report(tmp_path: Path, capsys):
    main = _prepare_main()
    faces = tmp_path / "faces"
    args = ["data=synthetic", f"data.faces_dir={faces}", "data.image_size=32", "data.builder.num_videos=6",
            "data.builder.frames_per_video=1"]
    assert main(args) == 0
    out = capsys.readouterr().out
    assert f"preparation of {faces}" in out and "6 videos" in out and "no problem met" in out
    assert (faces / "face_index.parquet").is_file() and (faces / BUILD_RECORD).is_file()
    # the same config again: reused; another seed: refused with the difference named, exit 1
    assert main(args) == 0
    assert main([*args, "data.builder.seed=1"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("faceforge: FaceDataError: ") and "seed: built with 0, now 1" in err[0]


def test_prepare_py_usage_and_input_errors(tmp_path: Path, capsys):
    main = _prepare_main()
    assert main(["data=ffpp", f"paths.data_dir={tmp_path}"]) == 2  # data.root unset
    err = capsys.readouterr().err
    assert "data.root" in err and "Traceback" not in err
    assert main(["data=no_such_config"]) == 2
    assert "no_such_config" in capsys.readouterr().err
    empty = tmp_path / "empty"
    empty.mkdir()
    assert main(["data=dfdc", f"data.root={empty}", f"data.faces_dir={tmp_path / 'faces'}"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("faceforge: ") and str(empty) in err[0]
    assert not (tmp_path / "faces" / "face_index.parquet").exists()


def test_builder_settings_out_of_range_are_faceforge_errors(tmp_path: Path):
    """A data.builder setting out of range is a one-line user error (FaceforgeError), raised before anything is
    written, for the synthetic detection and 3D builders and for face extraction."""
    from faceforge.data.detection.extraction.extract import extract_faces
    from faceforge.data.reconstruction.synthetic import build_synthetic_reconstruction
    from faceforge.errors import BuilderSettingsError, FaceforgeError

    cases = [(functools.partial(build_synthetic_detection, tmp_path / "a", frames_per_video=0), "frames_per_video"),
             (functools.partial(build_synthetic_detection, tmp_path / "b", num_videos=1), "num_videos=1"),
             (functools.partial(build_synthetic_reconstruction, tmp_path / "c", num_samples=2), "num_samples=2"),
             (functools.partial(extract_faces, [], tmp_path / "d", num_frames=0), "num_frames >= 1")]
    for call, words in cases:
        with pytest.raises(BuilderSettingsError, match=words) as info:
            call()
        assert isinstance(info.value, FaceforgeError) and isinstance(info.value, ValueError)
    assert not any((tmp_path / name).exists() for name in "abcd")
