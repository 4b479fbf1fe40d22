"""Video records: what a dataset reader returns for each video of an official layout."""
from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class VideoRecord:
    """One labelled video found in an official dataset layout.

    Attributes:
        video_id: unique across the dataset (``dataset/method/compression/video``), e.g.
            ``ffpp/Deepfakes/c23/000_003``; used for video-level metrics, so two videos never share it.
        path: absolute path of the video file.
        rel_path: path relative to the dataset root (recorded in the face index).
        dataset: ``ffpp``, ``dfdc``, ``celebdf``, ...
        label: 1 = fake, 0 = real.
        method: manipulation method (``Deepfakes``, ``Face2Face``, ``DFDC``, ``Celeb-synthesis``) or ``original``.
        compression: ``c0``/``c23``/``c40`` (FF++), else ``''``.
        split: ``train``, ``val`` or ``test`` (official split where the dataset has one).
        source_id: the video_id-independent group key of the real video the fake was made from (its own key
            for a real video); splits never separate a group.
    """

    video_id: str
    path: Path
    rel_path: str
    dataset: str
    label: int
    method: str
    compression: str
    split: str
    source_id: str

    def to_dict(self) -> dict[str, Any]:
        """The record as JSON-able values (``path`` as a string)."""
        d = asdict(self)
        d["path"] = str(self.path)
        return d


@dataclass
class ReaderReport:
    """Problems a reader met in a dataset layout: each entry names the file and what is wrong.

    Attributes:
        missing: files named by metadata but absent on disk.
        unlabelled: video files present on disk that no metadata labels (skipped).
        unassigned: videos with no official split (skipped unless the reader is told otherwise).
        errors: other problems (malformed metadata lines, unknown labels, ...).
        skipped: counts of entries skipped by kind, e.g. ``{"outside_root": 2}`` for metadata names that would
            point outside the dataset root, ``{"bad_metadata": 1}`` for a metadata file that could not be used.
    """

    missing: list[str] = field(default_factory=list)
    unlabelled: list[str] = field(default_factory=list)
    unassigned: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    skipped: dict[str, int] = field(default_factory=dict)

    def skip(self, kind: str, message: str) -> None:
        """Count one skipped entry of ``kind`` and record ``message`` (naming the file) in :attr:`errors`."""
        self.skipped[kind] = self.skipped.get(kind, 0) + 1
        self.errors.append(message)

    def to_dict(self) -> dict[str, Any]:
        """The report as JSON-able values: the lists, ``skipped`` counts by kind, and ``counts`` of each list."""
        return {"missing": self.missing, "unlabelled": self.unlabelled, "unassigned": self.unassigned,
                "errors": self.errors, "skipped": dict(self.skipped),
                "counts": {k: len(v) for k, v in (("missing", self.missing), ("unlabelled", self.unlabelled),
                                                   ("unassigned", self.unassigned), ("errors", self.errors))}}


def unsafe_relative_paths(paths: Any) -> list[str]:
    """The entries of ``paths`` that are not plain relative paths inside their folder.

    Prepared-data indexes (``face_index.parquet``'s ``crop_path``, ``volume_index.csv``'s ``store_file``) name
    files relative to the index's folder; a value read from such a file is data, so an absolute path, a drive
    letter, a backslash or a ``..`` component (a way out of the folder) is refused instead of followed.

    Args:
        paths: an iterable of ``str`` or ``bytes`` (e.g. a :class:`~faceforge.data.detection.face_index.StringColumn`'s
            vocabulary, or a list of strings).

    Returns:
        The offending entries as ``str`` (at most 5, in input order); empty when all are safe.
    """
    import numpy as np

    paths = paths if isinstance(paths, np.ndarray) and paths.dtype.kind in "SU" else np.asarray(
        [p.decode("utf-8", "replace") if isinstance(p, (bytes, bytearray)) else str(p) for p in paths], dtype=str)
    if not len(paths):
        return []
    # vectorised for the millions of crop paths of a full-size index (bytes are compared as they are stored)
    enc = (lambda t: t.encode()) if paths.dtype.kind == "S" else (lambda t: t)
    slash, colon = np.char.find(paths, enc("/")), np.char.find(paths, enc(":"))
    mask = ((np.char.str_len(paths) == 0) | np.char.startswith(paths, enc("/"))
            | (np.char.find(paths, enc("\\")) >= 0) | ((colon >= 0) & ((slash < 0) | (colon < slash)))
            | (paths == enc("..")) | np.char.startswith(paths, enc("../"))
            | (np.char.find(paths, enc("/../")) >= 0) | np.char.endswith(paths, enc("/..")))
    return [v.decode("utf-8", "replace") if isinstance(v, bytes) else str(v)
            for v in paths[np.flatnonzero(mask)[:5]].tolist()]
