"""Atomic writes leave the old file intact when the writer dies mid-way."""
from __future__ import annotations

import json

import pytest

from faceforge.utils.atomic import atomic_path, atomic_write_json


def test_failed_write_keeps_old_content_and_leaves_no_temp(tmp_path):
    target = tmp_path / "report.json"
    atomic_write_json(target, {"v": 1})
    with pytest.raises(RuntimeError):
        with atomic_path(target) as tmp:
            tmp.write_text('{"v": 2, "trunc')
            raise RuntimeError("killed")
    assert json.loads(target.read_text()) == {"v": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["report.json"]


def test_temp_keeps_suffix_for_format_sniffing_libraries(tmp_path):
    with atomic_path(tmp_path / "plot.png") as tmp:
        assert tmp.suffix == ".png" and tmp.parent == tmp_path
        tmp.write_bytes(b"x")
    assert (tmp_path / "plot.png").read_bytes() == b"x"


def test_json_is_strict_nan_becomes_null(tmp_path):
    atomic_write_json(tmp_path / "m.json", {"auc": float("nan"), "acc": 0.5, "rows": [float("inf"), 1.0]})
    assert json.loads((tmp_path / "m.json").read_text()) == {"acc": 0.5, "auc": None, "rows": [None, 1.0]}
