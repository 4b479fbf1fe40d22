"""Atomic file writes: write to a temporary file in the same folder, then ``os.replace``.

A process killed mid-write leaves either the old file or the new one, never a truncated file.

Files written here get the permissions any ordinary ``open(path, "w")`` would give them: ``0o666`` less the
process umask (``0644`` under umask 022, ``0640`` under 027), and a folder's default ACL applies as usual. The
temporary file is created with ``os.open(..., O_CREAT | O_EXCL, 0o666)``, so the kernel applies the umask at
creation; unlike ``tempfile.mkstemp`` (always ``0600``) nothing needs to read or change the umask, which
``os.umask`` can only do by setting it (a race with other threads creating files).
"""
from __future__ import annotations

import contextlib
import errno
import json
import math
import os
import secrets
from pathlib import Path
from typing import Any, Iterator

from faceforge.errors import FaceforgeError

#: Permission bits asked for when creating a file; the process umask (and a default ACL) removes some of them.
FILE_MODE = 0o666
_NAME_ATTEMPTS = 100


def _create_temp(directory: Path, prefix: str, suffix: str) -> Path:
    """Create a new, empty, uniquely named file in ``directory`` with mode ``FILE_MODE & ~umask``; return its path.

    Raises:
        FileExistsError: no free name after many attempts (practically impossible).
        OSError: the folder cannot be written.
    """
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0)
    for _ in range(_NAME_ATTEMPTS):
        candidate = directory / f"{prefix}{secrets.token_hex(6)}{suffix}"
        try:
            fd = os.open(candidate, flags, FILE_MODE)
        except FileExistsError:
            continue
        os.close(fd)
        return candidate
    raise FileExistsError(errno.EEXIST, f"no free temporary file name in {directory}")


class OutputPathError(FaceforgeError, OSError):
    """A destination that cannot be written: its folder cannot be created (a file is in the way, no permission) or
    it is itself a folder. The message names the destination; ``errno`` is the underlying error's (so a full disk
    is still recognisable)."""


def _output_error(path: Path, exc: OSError) -> OutputPathError:
    code = exc.errno
    if path.is_dir():
        why = "it is a folder"
    elif any(p.exists() and not p.is_dir() for p in path.parents):
        blocker = next(p for p in reversed(path.parents) if p.exists() and not p.is_dir())
        why, code = f"{blocker} is a file, not a folder", errno.ENOTDIR  # mkdir says EEXIST for the same
    else:
        why = exc.strerror or str(exc)
    err = OutputPathError(f"cannot write {path}: {why}")
    err.errno = code
    return err


def check_destination(path: str | os.PathLike) -> Path:
    """Refuse, before any work, a destination :func:`atomic_path` could not write: a folder, or a path under a file.

    Returns:
        ``path`` as a :class:`~pathlib.Path`.

    Raises:
        OutputPathError: naming the destination and what is in the way.
    """
    path = Path(path)
    if path.is_dir():
        raise _output_error(path, IsADirectoryError(errno.EISDIR, "is a folder"))
    if any(p.exists() and not p.is_dir() for p in path.parents):
        raise _output_error(path, NotADirectoryError(errno.ENOTDIR, "not a folder"))
    return path


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, suffix: str | None = None) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; on success rename it onto ``path``.

    Args:
        path: final destination. Its parent folder is created if missing.
        suffix: suffix of the temporary file (defaults to the destination's, so libraries that
            pick a format from the extension, such as PIL or matplotlib, still work).

    The temporary file exists (empty) when the body starts, with the mode the umask gives (``0o666 & ~umask``);
    a body that writes into it (or truncates it, as ``open(tmp, "w")``, h5py's ``"w"`` and numpy's memmap ``"w+"``
    do) keeps that mode, so the final file has it too.

    Raises:
        OutputPathError: the folder cannot be created or written, or ``path`` is a folder (before the body runs when
            it can be told then).
        Whatever the body raises; the temporary file is then removed and ``path`` is untouched.
    """
    path = Path(path)
    if path.is_dir():  # one stat; a file in the way of the folder shows as mkdir's error below (no walk per write)
        raise _output_error(path, IsADirectoryError(errno.EISDIR, "is a folder"))
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp_path = _create_temp(path.parent, f".{path.name}.", suffix if suffix is not None else path.suffix)
    except OSError as exc:
        raise _output_error(path, exc) from exc
    try:
        yield tmp_path
        try:
            os.replace(tmp_path, path)
        except OSError as exc:
            raise _output_error(path, exc) from exc
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            tmp_path.unlink()
        raise


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    """Write ``text`` (UTF-8) to ``path`` atomically."""
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically."""
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


def atomic_write_json(path: str | os.PathLike, obj: Any, indent: int = 2) -> None:
    """Serialise ``obj`` as strict JSON (sorted keys, UTF-8) and write it to ``path`` atomically.

    NaN and infinite floats (undefined metrics, e.g. AUC with one class) are written as ``null``, so that any
    JSON parser reads the file.

    Raises:
        TypeError: if ``obj`` holds something JSON cannot encode.
    """
    text = json.dumps(_strict(obj), indent=indent, sort_keys=True, default=_json_default, allow_nan=False)
    atomic_write_text(path, text + "\n")


def _strict(obj: Any) -> Any:
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: _strict(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_strict(v) for v in obj]
    if hasattr(obj, "item") and callable(obj.item) and getattr(obj, "ndim", 1) == 0:
        return _strict(obj.item())
    return obj


def _json_default(o: Any) -> Any:
    if isinstance(o, Path):
        return str(o)
    if hasattr(o, "item") and callable(o.item):  # numpy / torch scalars
        return o.item()
    if hasattr(o, "tolist"):
        return o.tolist()
    raise TypeError(f"cannot encode {type(o).__name__} as JSON")
