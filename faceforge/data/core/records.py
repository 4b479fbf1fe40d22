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
        return {"missing": self.missing, "unlabelled": self.unlabelled, "unassigned": self.unassigned,
                "errors": self.errors, "skipped": dict(self.skipped),
                "counts": {k: len(v) for k, v in (("missing", self.missing), ("unlabelled", self.unlabelled),
                                                   ("unassigned", self.unassigned), ("errors", self.errors))}}
