"""``faceforge make-volumes``: a flag out of its range is a usage error (argparse's usage, one error line naming
the flag, exit 2) before anything is read or written."""
from __future__ import annotations

from pathlib import Path

import pytest

from faceforge.cli import main


@pytest.mark.parametrize(("flags", "named"), [
    (["--size", "-5", "--depth", "0", "--limit", "1"], "--size"),
    (["--size", "0"], "--size"),
    (["--depth", "0"], "--depth"),
    (["--margin", "-3"], "--margin"),
    (["--margin", "nan"], "--margin"),
    (["--jpeg-quality", "500"], "--jpeg-quality"),
    (["--jpeg-quality", "0"], "--jpeg-quality"),
    (["--limit", "0"], "--limit"),
    (["--workers", "0"], "--workers"),
    (["--shard-size", "0"], "--shard-size"),
    (["--z-margin", "-1"], "--z-margin"),
    (["--depth", "8", "--z-margin", "8"], "--z-margin"),
    (["--image-size", "-1"], "--image-size"),
    (["--max-landmark-nme", "nan"], "--max-landmark-nme"),
    (["--val-fraction", "1.5"], "--val-fraction"),
])
def test_flags_out_of_range_are_usage_errors(flags: list[str], named: str, tmp_path: Path,
                                             capsys: pytest.CaptureFixture[str]) -> None:
    root = tmp_path / "root"
    root.mkdir()
    with pytest.raises(SystemExit) as exc:
        main(["make-volumes", "--root", str(root), "--output", str(tmp_path / "out"),
              "--model-dir", str(tmp_path / "model"), *flags])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err and err.startswith("usage: faceforge-make-volumes")
    errors = [line for line in err.splitlines() if "error:" in line]
    assert len(errors) == 1 and errors[0].startswith(f"faceforge-make-volumes: error: {named} "), err
    assert not (tmp_path / "out").exists()


def test_defaults_are_in_range() -> None:
    from faceforge.data.reconstruction.cli import _range_problem, build_parser

    args = build_parser().parse_args(["--root", "r", "--output", "o", "--model-dir", "m"])
    assert _range_problem(args) is None
