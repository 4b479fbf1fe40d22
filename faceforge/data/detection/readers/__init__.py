"""Readers of the official on-disk layouts of the deepfake-detection datasets.

Each reader walks one dataset's official folder layout and returns ``(records, report)``: a list of
:class:`~faceforge.data.core.records.VideoRecord` sorted by ``video_id`` (label 1 = fake, 0 = real, a split, a
group key ``source_id``) and a :class:`~faceforge.data.core.records.ReaderReport` of the problems met (files
named by metadata but absent, videos nobody labels, videos without an official split, malformed metadata).
Readers only look at file names and metadata; they never open a video.

Registered readers (:data:`READERS`):

* ``ffpp``: FaceForensics++ (:func:`~faceforge.data.detection.readers.ffpp.read_ffpp`), official split JSONs.
* ``dfdc``: DFDC train parts + optional public test set (:func:`~faceforge.data.detection.readers.dfdc.read_dfdc`).
* ``celebdf``: Celeb-DF (v2) (:func:`~faceforge.data.detection.readers.celebdf.read_celebdf`).

Where a dataset has no official validation (or test) split, videos are assigned by :func:`assign_split`: a
seeded, stable hash (SHA-256, not Python's salted ``hash``) of the video's *group*, so that a real video and
every fake made from it always land in the same split, on every machine and every run.
"""
from __future__ import annotations

import hashlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

from faceforge.data.core.records import ReaderReport, VideoRecord
from faceforge.errors import FaceforgeError

__all__ = [
    "READERS",
    "VIDEO_SUFFIXES",
    "DatasetLayoutError",
    "assign_split",
    "check_fractions",
    "list_videos",
    "read_dataset",
    "stable_unit_hash",
]

#: File suffixes (lower case) treated as videos by the readers.
VIDEO_SUFFIXES: tuple[str, ...] = (".mp4",)


class DatasetLayoutError(FaceforgeError, ValueError):
    """A dataset root is missing or does not have the official layout.

    The message names the root and the folders/files that were expected there.
    """


def stable_unit_hash(seed: int, key: str) -> float:
    """A reproducible pseudo-random number in [0, 1) for ``(seed, key)``.

    Uses SHA-256 of ``"<seed>\\x00<key>"`` (first 8 bytes, little endian, divided by 2**64), so the value is the
    same on every machine, Python version and run (unlike the built-in, per-process salted ``hash``).

    Args:
        seed: integer seed.
        key: any string (e.g. a group key).

    Returns:
        A float in [0, 1).
    """
    digest = hashlib.sha256(f"{int(seed)}\x00{key}".encode()).digest()
    return int.from_bytes(digest[:8], "little") / 2.0 ** 64


def check_fractions(val_fraction: float, test_fraction: float = 0.0) -> None:
    """Validate split fractions.

    Raises:
        ValueError: if a fraction is outside [0, 1) or their sum is not below 1.
    """
    for name, v in (("val_fraction", val_fraction), ("test_fraction", test_fraction)):
        if not 0.0 <= float(v) < 1.0:
            raise ValueError(f"{name} must be in [0, 1), got {v}")
    if float(val_fraction) + float(test_fraction) >= 1.0:
        raise ValueError(f"val_fraction + test_fraction must be below 1, got {val_fraction} + {test_fraction}")


def assign_split(group: str, seed: int, val_fraction: float, test_fraction: float = 0.0) -> str:
    """Assign a group of videos to ``train``, ``val`` or ``test`` by a seeded stable hash.

    ``u = stable_unit_hash(seed, group)``; ``u < test_fraction`` -> ``test``, ``u < test_fraction +
    val_fraction`` -> ``val``, else ``train``. Each group is decided on its own (no dependence on which other
    videos exist), so adding videos never moves existing ones, and every member of a group shares the split.

    Args:
        group: group key (e.g. the real video a fake was made from).
        seed: split seed.
        val_fraction: expected fraction of groups in ``val``.
        test_fraction: expected fraction of groups in ``test``.

    Returns:
        ``"train"``, ``"val"`` or ``"test"``.
    """
    u = stable_unit_hash(seed, group)
    if u < test_fraction:
        return "test"
    if u < test_fraction + val_fraction:
        return "val"
    return "train"


def list_videos(folder: Path) -> list[Path]:
    """Video files (suffix in :data:`VIDEO_SUFFIXES`, any case) directly inside ``folder``, sorted by name."""
    if not folder.is_dir():
        return []
    return sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in VIDEO_SUFFIXES)


def require_root(root: str | Path, dataset: str, expected: str) -> Path:
    """Return ``root`` as an absolute path, or raise if it is not a folder.

    Raises:
        DatasetLayoutError: naming the root and what a ``dataset`` root should hold (``expected``).
    """
    path = Path(root).expanduser()
    if not path.is_dir():
        raise DatasetLayoutError(f"{dataset} root {path} does not exist or is not a folder; expected a folder "
                                 f"holding {expected}")
    return path.resolve()


# Submodules import the names above from this package, so they are imported last.
from faceforge.data.detection.readers.celebdf import read_celebdf  # noqa: E402
from faceforge.data.detection.readers.dfdc import read_dfdc  # noqa: E402
from faceforge.data.detection.readers.ffpp import read_ffpp  # noqa: E402

Reader = Callable[..., "tuple[list[VideoRecord], ReaderReport]"]

#: Registry: dataset name -> reader function ``(root, **kwargs) -> (records, report)``.
READERS: dict[str, Reader] = {"ffpp": read_ffpp, "dfdc": read_dfdc, "celebdf": read_celebdf}


def read_dataset(name: str, root: str | Path, **kwargs: Any) -> tuple[list[VideoRecord], ReaderReport]:
    """Read a dataset layout with the registered reader ``name``.

    Args:
        name: a key of :data:`READERS` (``ffpp``, ``dfdc``, ``celebdf``).
        root: the dataset root folder.
        **kwargs: passed to the reader (e.g. ``val_fraction``, ``seed``, ``compressions``).

    Returns:
        ``(records, report)``: records sorted by ``video_id``, and the problems met.

    Raises:
        ValueError: if ``name`` is not registered.
        TypeError: if a keyword is not accepted by that reader.
        DatasetLayoutError: if ``root`` does not have the dataset's layout.
    """
    if name not in READERS:
        raise ValueError(f"unknown dataset {name!r}; known datasets: {sorted(READERS)}")
    return READERS[name](root, **kwargs)
