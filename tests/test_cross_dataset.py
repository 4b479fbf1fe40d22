"""Cross-dataset tables put each result in its (trained on, tested on) cell and fail clearly on bad files."""
from __future__ import annotations

import json

import pytest

from faceforge.reporting.cross_dataset import ResultsError, cross_dataset_matrix, load_result, main
from faceforge.utils.atomic import atomic_write_json


def _result(tmp_path, trained, tested, auc, ckpt="run/checkpoints/best.ckpt"):
    metrics = {k: 0.5 for k in ("eer", "ap", "acc", "precision", "recall", "f1")}
    data = {"trained_on": trained, "tested_on": tested, "checkpoint": {"path": str(tmp_path / trained / ckpt)},
            "metrics": {"frame": {**metrics, "auc": auc}, "video": {**metrics, "auc": auc + 0.01},
                        "per_method": {}}}
    path = tmp_path / f"{trained}_{tested}" / "results.json"
    atomic_write_json(path, data)
    return path


def test_matrix_cells_and_files(tmp_path, capsys):
    _result(tmp_path, "ffpp", "ffpp", 0.95)
    _result(tmp_path, "ffpp", "celebdf", 0.61)
    _result(tmp_path, "dfdc", "celebdf", float("nan"))
    out = tmp_path / "tables"
    assert main([str(tmp_path), "--out", str(out)]) == 0
    table = json.loads((out / "cross_dataset.json").read_text())
    assert table["frame"]["auc"] == {"ffpp": {"ffpp": 0.95, "celebdf": 0.61}, "dfdc": {"celebdf": None}}
    assert table["video"]["auc"]["ffpp"]["celebdf"] == 0.62
    md = (out / "cross_dataset.md").read_text()
    assert "| trained on \\ tested on | celebdf | ffpp |" in md and "| dfdc | n/a |  |" in md
    assert "ffpp,celebdf,frame,auc,0.61" in (out / "cross_dataset.csv").read_text()


def test_two_checkpoints_trained_on_one_dataset_get_separate_rows(tmp_path):
    a = load_result(_result(tmp_path, "ffpp", "dfdc", 0.7, ckpt="runA/checkpoints/best.ckpt"))
    b = load_result(_result(tmp_path / "b", "ffpp", "dfdc", 0.8, ckpt="runB/checkpoints/best.ckpt"))
    assert len(cross_dataset_matrix([a, b])) == 2


def test_bad_results_file_is_named(tmp_path, capsys):
    bad = tmp_path / "x" / "results.json"
    bad.parent.mkdir()
    bad.write_text("{not json")
    assert main([str(bad), "--out", str(tmp_path / "o")]) == 2
    assert str(bad) in capsys.readouterr().err


def test_an_out_that_is_a_file_is_named_before_anything_is_read(tmp_path, capsys):
    (tmp_path / "afile").write_text("x")
    assert main([str(tmp_path / "nothing"), "--out", str(tmp_path / "afile")]) == 2
    assert capsys.readouterr().err.strip() == (f"faceforge-cross-dataset: cannot write {tmp_path}/afile/"
                                               f"cross_dataset.md: {tmp_path}/afile is a file, not a folder")


def test_two_results_for_one_cell_are_refused_not_dropped(tmp_path, capsys):
    """One checkpoint evaluated twice on data of one name (FF++ c23 and c40 are both `ffpp`): an error naming
    both files, never a table that silently keeps the last one."""
    first = _result(tmp_path / "c23", "ffpp", "ffpp", 0.91)
    second = _result(tmp_path / "c40", "ffpp", "ffpp", 0.62)
    a, b = load_result(first), load_result(second)
    b["checkpoint"]["path"] = a["checkpoint"]["path"]  # the same checkpoint
    with pytest.raises(ResultsError, match=f"{first} and {second} both hold ffpp tested on ffpp"):
        cross_dataset_matrix([a, b])
