"""The ``faceforge`` command: subcommands, their ``--help``, dispatch to the existing commands, exit statuses."""
from __future__ import annotations

from pathlib import Path

import pytest

from faceforge.cli import DISPATCHED, main


@pytest.mark.parametrize("command", ["predict", "reconstruct", "serve", "extract-faces", "make-volumes",
                                     "cross-dataset"])
def test_every_subcommand_has_help(command: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        main([command, "--help"])
    assert exc.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith("usage:") and "--help" in out


def test_top_level_help_lists_all_subcommands(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["--help"])
    out = capsys.readouterr().out
    for command in ["predict", "reconstruct", "serve", *DISPATCHED]:
        assert command in out


def test_usage_errors_exit_2(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["no-such-command"])
    assert exc.value.code == 2
    with pytest.raises(SystemExit) as exc:
        main(["predict"])  # CKPT and INPUT missing
    assert exc.value.code == 2
    assert main(["predict", "x.ckpt", "y.jpg", "--threshold", "1.5"]) == 2
    assert "--threshold" in capsys.readouterr().err


def test_faceforge_errors_print_one_line_and_exit_1(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    image = tmp_path / "a.jpg"
    image.write_bytes(b"not an image")
    assert main(["predict", str(tmp_path / "missing.ckpt"), str(image)]) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith("faceforge: CheckpointError: ") and "missing.ckpt" in err and "Traceback" not in err
    assert main(["reconstruct", str(image), str(image)]) == 1  # a text file is no checkpoint either
    assert capsys.readouterr().err.startswith("faceforge: CheckpointError: ")


def test_dispatched_subcommands_reach_the_existing_mains(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    # cross-dataset over a folder with no evaluation runs: the existing command's own error and status
    code = main(["cross-dataset", str(tmp_path), "--out", str(tmp_path / "tables")])
    assert code == 2
    assert "faceforge-cross-dataset:" in capsys.readouterr().out  # its own message
    assert not (tmp_path / "tables").exists()


def test_console_scripts_are_declared(project_root: Path) -> None:
    text = (project_root / "pyproject.toml").read_text()
    scripts = text.split("[project.scripts]", 1)[1].split("\n[", 1)[0]  # tomllib is Python >= 3.11 only
    assert 'faceforge = "faceforge.cli:main"' in scripts
    # the old per-tool commands keep working
    for name in ["faceforge-extract-faces", "faceforge-make-volumes", "faceforge-cross-dataset"]:
        assert f"{name} = " in scripts
