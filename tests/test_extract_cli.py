"""``faceforge extract-faces --device``: a device torch cannot parse or this machine lacks is a usage error (exit 2,
one error line), checked before the output folder (or anything else) is created."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch

from faceforge.cli import main


def _run(tmp_path: Path, device: str) -> int:
    return main(["extract-faces", "--dataset", "dfdc", "--root", str(tmp_path / "root"),
                 "--output", str(tmp_path / "out"), "--device", device])


def _error_line(err: str) -> str:
    assert "Traceback" not in err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("faceforge-extract-faces: error: --device "), err
    return lines[0]


@pytest.mark.parametrize(("device", "says"), [("foo", "not a torch device"), ("cuda:x", "not a torch device"),
                                              ("meta", "cpu, cuda[:N] or mps")])
def test_a_device_that_is_not_one_is_a_usage_error(device: str, says: str, tmp_path: Path,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    assert _run(tmp_path, device) == 2
    assert says in _error_line(capsys.readouterr().err)
    assert not (tmp_path / "out").exists()


def test_cuda_without_a_gpu_is_a_usage_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                             capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert _run(tmp_path, "cuda") == 2
    assert "CUDA is not available" in _error_line(capsys.readouterr().err)
    assert not (tmp_path / "out").exists()


def test_a_cuda_index_this_machine_lacks_is_a_usage_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                          capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    assert _run(tmp_path, "cuda:3") == 2
    assert "1 CUDA device(s)" in _error_line(capsys.readouterr().err)
    assert not (tmp_path / "out").exists()
