"""Atomic writes leave the old file intact when the writer dies mid-way, and give files the mode the umask gives."""
from __future__ import annotations

import json
import os
import stat

import h5py
import numpy as np
import pytest

from faceforge.utils.atomic import atomic_path, atomic_write_bytes, atomic_write_json, atomic_write_text


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


# ----------------------------------------------------------------------------------------------------------------
# Permissions: files get the mode the umask gives (as open(path, "w") would), never tempfile's 0600
# ----------------------------------------------------------------------------------------------------------------

@pytest.fixture(params=[0o022, 0o027], ids=["umask022", "umask027"])
def umask(request):
    """Run the test under a given umask; yield the mode a new file should get (``0o666 & ~umask``)."""
    old = os.umask(request.param)
    try:
        yield 0o666 & ~request.param
    finally:
        os.umask(old)


def _mode(path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


def _write_memmap(tmp) -> None:  # the crop cache's way of filling its temporary file
    mm = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.uint8, shape=(2, 3))
    mm[:] = 7
    mm.flush()
    del mm


def _write_h5(tmp) -> None:  # the volume store's way of filling its temporary file
    with h5py.File(tmp, "w") as f:
        f["x"] = np.arange(3)


WRITERS = {
    "atomic_write_text": lambda p: atomic_write_text(p, "hello"),
    "atomic_write_bytes": lambda p: atomic_write_bytes(p, b"\x00\x01"),
    "atomic_write_json": lambda p: atomic_write_json(p, {"a": 1}),
    "atomic_path+open": lambda p: _with_atomic_path(p, lambda t: t.write_text("x")),
    "atomic_path+memmap": lambda p: _with_atomic_path(p, _write_memmap, suffix=".npy.tmp"),
    "atomic_path+h5py": lambda p: _with_atomic_path(p, _write_h5, suffix=".h5.tmp"),
}


def _with_atomic_path(path, body, suffix=None) -> None:
    with atomic_path(path, suffix=suffix) as tmp:
        body(tmp)


@pytest.mark.parametrize("writer", sorted(WRITERS))
def test_written_files_get_the_mode_the_umask_gives(tmp_path, umask, writer):
    target = tmp_path / "sub" / "out.bin"
    WRITERS[writer](target)
    assert target.is_file() and target.stat().st_size > 0
    assert _mode(target) == umask, f"{writer}: mode {oct(_mode(target))}, umask gives {oct(umask)}"
    # replacing a file the user had restricted gives the umask's mode again, and leaves no temporary file
    target.chmod(0o600)
    WRITERS[writer](target)
    assert _mode(target) == umask
    assert [p.name for p in target.parent.iterdir()] == ["out.bin"]


def test_temporary_file_already_has_the_final_mode(tmp_path, umask):
    with atomic_path(tmp_path / "a.txt") as tmp:
        assert tmp.is_file() and tmp.stat().st_size == 0 and tmp.name.startswith(".a.txt.")
        assert _mode(tmp) == umask
        tmp.write_text("x")


def test_a_taken_temporary_name_is_never_reused(tmp_path, monkeypatch):
    import faceforge.utils.atomic as atomic

    names = iter(["taken", "taken", "free"])
    monkeypatch.setattr(atomic.secrets, "token_hex", lambda n: next(names))
    (tmp_path / ".a.txt.taken.txt").write_text("someone else's")
    atomic_write_text(tmp_path / "a.txt", "mine")
    assert (tmp_path / ".a.txt.taken.txt").read_text() == "someone else's"
    assert (tmp_path / "a.txt").read_text() == "mine"


def test_a_destination_that_cannot_be_written_is_a_clear_error(tmp_path):
    """A folder as destination, or a file where a folder should be: OutputPathError (a FaceforgeError and an
    OSError) naming the destination and what is in the way, with the underlying errno; nothing is left behind."""
    from faceforge.errors import FaceforgeError
    from faceforge.utils.atomic import OutputPathError, check_destination

    (tmp_path / "afile").write_text("x")
    (tmp_path / "adir").mkdir()
    cases = [(tmp_path / "adir", "it is a folder", 21), (tmp_path / "afile" / "x.csv", "afile is a file", 20),
             (tmp_path / "afile" / "sub" / "y.json", "afile is a file", 20)]
    for target, words, code in cases:
        for write, args in ((atomic_write_text, (target, "hi")), (check_destination, (target,))):
            with pytest.raises(OutputPathError, match=f"cannot write {target}: .*{words}") as info:
                write(*args)
            assert isinstance(info.value, FaceforgeError) and isinstance(info.value, OSError)
            assert info.value.errno == code
    assert sorted(p.name for p in tmp_path.iterdir()) == ["adir", "afile"] and not list((tmp_path / "adir").iterdir())
    assert check_destination(tmp_path / "new" / "ok.json") == tmp_path / "new" / "ok.json"
