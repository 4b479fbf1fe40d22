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
    assert "faceforge-cross-dataset:" in capsys.readouterr().err  # its own message, on stderr
    assert not (tmp_path / "tables").exists()


def test_console_scripts_are_declared(project_root: Path) -> None:
    text = (project_root / "pyproject.toml").read_text()
    scripts = text.split("[project.scripts]", 1)[1].split("\n[", 1)[0]  # tomllib is Python >= 3.11 only
    assert 'faceforge = "faceforge.cli:main"' in scripts
    # the old per-tool commands keep working
    for name in ["faceforge-extract-faces", "faceforge-make-volumes", "faceforge-cross-dataset"]:
        assert f"{name} = " in scripts


def _usage_line(err: str, command: str) -> str:
    """The error line of a usage error (``usage: ...`` then one ``faceforge COMMAND: error: ...`` line)."""
    assert "Traceback" not in err
    lines = err.strip().splitlines()
    assert len(lines) == 2 and lines[0].startswith(f"usage: faceforge {command}"), err
    assert lines[1].startswith(f"faceforge {command}: error: "), err
    return lines[1]


@pytest.mark.parametrize(("flags", "named"), [(["--crops", "--frames", "-3"], "--frames"),
                                              (["--max-faces", "0"], "--max-faces"),
                                              (["--threshold", "nan"], "--threshold")])
def test_predict_flags_out_of_range_are_usage_errors(flags: list[str], named: str, tmp_path: Path,
                                                     capsys: pytest.CaptureFixture[str]) -> None:
    # checked before the checkpoint is read: a missing one is not reached
    assert main(["predict", str(tmp_path / "missing.ckpt"), str(tmp_path), *flags]) == 2
    assert named in _usage_line(capsys.readouterr().err, "predict")


@pytest.mark.parametrize(("flags", "named"), [(["--port", "99999"], "--port"), (["--port", "-5"], "--port"),
                                              (["--frames", "0"], "--frames"),
                                              (["--max-upload-mb", "inf"], "--max-upload-mb"),
                                              (["--max-video-s", "nan"], "--max-video-s")])
def test_serve_flags_out_of_range_are_usage_errors(flags: list[str], named: str, tmp_path: Path,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["serve", "--ckpt", str(tmp_path / "missing.ckpt"), *flags]) == 2
    assert named in _usage_line(capsys.readouterr().err, "serve")


def test_serve_address_that_cannot_be_bound_is_one_line_serve_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                                    capsys: pytest.CaptureFixture[str]) -> None:
    import socket

    from faceforge.serve import app

    def no_models(settings):  # noqa: ANN001, ANN202 - the address is bound before any model is loaded
        raise AssertionError("create_app reached")

    monkeypatch.setattr(app, "create_app", no_models)
    ckpt = str(tmp_path / "model.ckpt")
    with socket.socket() as busy:  # a port in use
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        assert main(["serve", "--ckpt", ckpt, "--port", str(port)]) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith("faceforge: ServeError: cannot listen on 127.0.0.1:") and "\n" not in err
    # an address that is not this machine's (TEST-NET-1: resolves without DNS)
    assert main(["serve", "--ckpt", ckpt, "--host", "192.0.2.1", "--port", "0"]) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith("faceforge: ServeError: cannot listen on 192.0.2.1:0") and "\n" not in err


def test_serve_settings_refuse_an_infinite_upload_limit() -> None:
    from faceforge.serve.app import ServeError, ServeSettings

    with pytest.raises(ServeError, match="max-upload-mb"):
        ServeSettings(ckpt="x.ckpt", max_upload_mb=float("inf")).check()


def test_cross_dataset_out_that_is_a_file_is_a_usage_error(tmp_path: Path,
                                                            capsys: pytest.CaptureFixture[str]) -> None:
    a_file = tmp_path / "a_file"
    a_file.write_text("x")
    for out in [str(a_file), f"--out={a_file / 'tables'}"]:
        argv = ["cross-dataset", str(tmp_path), *(["--out", out] if not out.startswith("--") else [out])]
        assert main(argv) == 2
        line = _usage_line(capsys.readouterr().err, "cross-dataset")
        assert "--out" in line and str(a_file) in line and "existing file" in line
    assert a_file.read_text() == "x" and sorted(p.name for p in tmp_path.iterdir()) == ["a_file"]
