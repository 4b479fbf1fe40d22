"""The face index: one row per extracted face crop, shared by every detection dataset.

Face extraction (:mod:`faceforge.data.detection.extraction`), the synthetic generator and the image-folder reader all
write this one format; the Datasets and DataModules read only it. On disk it is a CSV file
(``face_index.csv``) with the columns of :data:`FACE_INDEX_COLUMNS` and a JSON side-car
(``face_index.meta.json``) that records how it was made (dataset, root, sampling, detector, counts).

In memory the index is columnar (one NumPy array per column, no Python objects per row), so that a
DataLoader's forked workers do not touch reference counts and memory stays flat on DFDC-sized indexes.

Conventions (see DESIGN.md): label 1 = fake, 0 = real; ``video_id`` is unique across the whole dataset
(``dataset/method/compression/video``); boxes and landmarks are in pixels of the source frame, x right,
y down; ``crop_path`` is relative to the folder that holds the index file.
"""
from __future__ import annotations

import csv
import io
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

import numpy as np

from faceforge.errors import FaceforgeError
from faceforge.utils.atomic import atomic_write_json, atomic_write_text

INDEX_FILENAME = "face_index.csv"
META_FILENAME = "face_index.meta.json"

#: (column, dtype, meaning). ``str`` columns are stored as NumPy unicode arrays.
FACE_INDEX_COLUMNS: tuple[tuple[str, Any, str], ...] = (
    ("video_id", str, "unique across the dataset: dataset/method/compression/video"),
    ("dataset", str, "ffpp, dfdc, celebdf, synthetic, image_folder, ..."),
    ("method", str, "manipulation method; 'original' for real videos"),
    ("compression", str, "c0, c23, c40 for FF++; '' where the dataset has none"),
    ("split", str, "train, val or test"),
    ("label", np.int64, "1 = fake, 0 = real"),
    ("source_id", str, "group key: the real video a fake was made from (itself for a real one)"),
    ("video_path", str, "source video (or image) path relative to the dataset root"),
    ("num_frames", np.int64, "frames in the source video (1 for an image)"),
    ("frame_index", np.int64, "0-based index of the decoded frame the face comes from"),
    ("face_rank", np.int64, "0 = most confident face of the frame"),
    ("det_prob", np.float32, "face detector confidence in [0, 1] (1 for given crops)"),
    ("x1", np.float32, "face box left, pixels of the source frame"),
    ("y1", np.float32, "face box top, pixels"),
    ("x2", np.float32, "face box right, pixels"),
    ("y2", np.float32, "face box bottom, pixels"),
    ("landmarks", str, "10 space-separated floats: MTCNN's 5 points (eyes, nose, mouth corners) as x y pairs, "
                       "pixels of the source frame; '' if unknown"),
    ("crop_path", str, "face crop image, relative to the index folder"),
)
COLUMN_NAMES: tuple[str, ...] = tuple(c[0] for c in FACE_INDEX_COLUMNS)
_DTYPES = {name: dtype for name, dtype, _ in FACE_INDEX_COLUMNS}
SPLITS = ("train", "val", "test")


class FaceIndexError(FaceforgeError, ValueError):
    """A face index file is missing, malformed or inconsistent; the message names the file and the problem."""


@dataclass
class FaceIndex:
    """Columnar table of face crops.

    Attributes:
        columns: column name -> 1-D NumPy array, all of the same length N. String columns are unicode arrays,
            ``label``/``num_frames``/``frame_index``/``face_rank`` int64, boxes and ``det_prob`` float32.
        root: folder that ``crop_path`` is relative to (the folder of the index file).
        meta: how the index was made (free-form JSON-able dict).
    """

    columns: dict[str, np.ndarray]
    root: Path
    meta: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        missing = [c for c in COLUMN_NAMES if c not in self.columns]
        if missing:
            raise FaceIndexError(f"face index under {self.root} lacks columns {missing}")
        lengths = {len(v) for v in self.columns.values()}
        if len(lengths) > 1:
            raise FaceIndexError(f"face index under {self.root} has columns of different lengths {sorted(lengths)}")
        self.root = Path(self.root)

    # ------------------------------------------------------------------ construction
    @classmethod
    def from_records(cls, records: Iterable[Mapping[str, Any]], root: str | Path,
                     meta: dict[str, Any] | None = None) -> "FaceIndex":
        """Build an index from row dicts (keys = :data:`COLUMN_NAMES`).

        Raises:
            FaceIndexError: if a row lacks a column or a value cannot be converted to the column's type.
        """
        records = list(records)
        cols: dict[str, list[Any]] = {c: [] for c in COLUMN_NAMES}
        for i, rec in enumerate(records):
            for c in COLUMN_NAMES:
                if c not in rec:
                    raise FaceIndexError(f"face record {i} (root {root}) lacks column {c!r}")
                cols[c].append(rec[c])
        return cls(columns=_typed_columns(cols, source=str(root)), root=Path(root), meta=dict(meta or {}))

    @classmethod
    def empty(cls, root: str | Path, meta: dict[str, Any] | None = None) -> "FaceIndex":
        """An index with no rows."""
        return cls.from_records([], root, meta)

    # ------------------------------------------------------------------ I/O
    @classmethod
    def read(cls, path: str | Path) -> "FaceIndex":
        """Read ``face_index.csv`` (and its ``face_index.meta.json`` if present).

        Args:
            path: the CSV file, or the folder that holds it.

        Raises:
            FaceIndexError: if the file is missing, has a wrong header, or a value does not parse; the message
                names the file, the line and the column.
        """
        path = Path(path)
        if path.is_dir():
            path = path / INDEX_FILENAME
        if not path.is_file():
            raise FaceIndexError(f"face index {path} does not exist (run face extraction first)")
        with path.open(newline="", encoding="utf-8") as fh:
            reader = csv.reader(fh)
            try:
                header = next(reader)
            except StopIteration:
                raise FaceIndexError(f"face index {path} is empty (no header line)") from None
            if tuple(header) != COLUMN_NAMES:
                raise FaceIndexError(f"face index {path} has header {header}, expected {list(COLUMN_NAMES)}")
            cols: dict[str, list[str]] = {c: [] for c in COLUMN_NAMES}
            for lineno, row in enumerate(reader, start=2):
                if len(row) != len(COLUMN_NAMES):
                    raise FaceIndexError(f"{path}:{lineno}: expected {len(COLUMN_NAMES)} fields, got {len(row)}")
                for c, v in zip(COLUMN_NAMES, row):
                    cols[c].append(v)
        meta_path = path.with_name(META_FILENAME)
        meta: dict[str, Any] = {}
        if meta_path.is_file():
            try:
                meta = json.loads(meta_path.read_text(encoding="utf-8"))
            except json.JSONDecodeError as exc:
                raise FaceIndexError(f"{meta_path}: not valid JSON ({exc})") from exc
        return cls(columns=_typed_columns(cols, source=str(path)), root=path.parent, meta=meta)

    def write(self, folder: str | Path | None = None) -> Path:
        """Write ``face_index.csv`` and ``face_index.meta.json`` atomically into ``folder`` (default: ``root``).

        Rows are written in their current order; writers sort them (video_id, frame_index, face_rank) first so
        that reruns produce byte-identical files.

        Returns:
            The path of the CSV file.
        """
        folder = Path(folder) if folder is not None else self.root
        buf = io.StringIO()
        writer = csv.writer(buf, lineterminator="\n")
        writer.writerow(COLUMN_NAMES)
        for i in range(len(self)):
            writer.writerow([_format_value(self.columns[c][i]) for c in COLUMN_NAMES])
        csv_path = folder / INDEX_FILENAME
        atomic_write_json(folder / META_FILENAME, self.meta)
        atomic_write_text(csv_path, buf.getvalue())
        return csv_path

    # ------------------------------------------------------------------ access
    def __len__(self) -> int:
        return len(self.columns["video_id"])

    def row(self, i: int) -> dict[str, Any]:
        """Row ``i`` as a dict of Python scalars."""
        return {c: self.columns[c][i].item() for c in COLUMN_NAMES}

    def crop_file(self, i: int) -> Path:
        """Absolute path of row ``i``'s crop image."""
        return self.root / str(self.columns["crop_path"][i])

    def select(self, rows: np.ndarray | Sequence[int]) -> "FaceIndex":
        """A new index with the given rows (boolean mask or integer positions), sharing ``root`` and ``meta``."""
        rows = np.asarray(rows)
        return FaceIndex(columns={c: v[rows] for c, v in self.columns.items()}, root=self.root, meta=self.meta)

    def where(self, **equals: Any) -> "FaceIndex":
        """Rows whose columns equal the given values, e.g. ``index.where(split="train", label=1)``."""
        mask = np.ones(len(self), dtype=bool)
        for c, v in equals.items():
            if c not in self.columns:
                raise KeyError(f"face index has no column {c!r}")
            mask &= self.columns[c] == v
        return self.select(mask)

    def sorted(self) -> "FaceIndex":
        """Rows sorted by (video_id, frame_index, face_rank): the canonical on-disk order."""
        order = np.lexsort((self.columns["face_rank"], self.columns["frame_index"], self.columns["video_id"]))
        return self.select(order)

    @staticmethod
    def concat(indexes: Sequence["FaceIndex"], root: str | Path, meta: dict[str, Any] | None = None) -> "FaceIndex":
        """Concatenate indexes that share ``root``."""
        if not indexes:
            return FaceIndex.empty(root, meta)
        cols = {c: np.concatenate([ix.columns[c] for ix in indexes]) for c in COLUMN_NAMES}
        return FaceIndex(columns=cols, root=Path(root), meta=dict(meta or {}))

    def landmarks_array(self, i: int) -> np.ndarray:
        """Row ``i``'s landmarks as a (5, 2) float32 array in source-frame pixels, or shape (0, 2) if unknown."""
        text = str(self.columns["landmarks"][i]).strip()
        if not text:
            return np.zeros((0, 2), dtype=np.float32)
        return np.array(text.split(), dtype=np.float32).reshape(-1, 2)

    def summary(self) -> dict[str, Any]:
        """Counts per split and label, and numbers of videos: a dict for reports."""
        out: dict[str, Any] = {"faces": len(self), "videos": int(len(np.unique(self.columns["video_id"])))}
        for split in np.unique(self.columns["split"]):
            m = self.columns["split"] == split
            out[str(split)] = {
                "faces": int(m.sum()),
                "videos": int(len(np.unique(self.columns["video_id"][m]))),
                "fake_faces": int((self.columns["label"][m] == 1).sum()),
                "real_faces": int((self.columns["label"][m] == 0).sum()),
            }
        return out


def format_landmarks(points: np.ndarray | None) -> str:
    """Encode (K, 2) landmark pixels as the index's space-separated text ('' for None)."""
    if points is None:
        return ""
    return " ".join(f"{v:.2f}" for v in np.asarray(points, dtype=np.float64).reshape(-1))


def _format_value(v: Any) -> str:
    if isinstance(v, (np.floating, float)):
        return f"{float(v):.6g}"
    return str(v.item() if hasattr(v, "item") else v)


def _typed_columns(cols: Mapping[str, list[Any]], source: str) -> dict[str, np.ndarray]:
    out: dict[str, np.ndarray] = {}
    for c, values in cols.items():
        dtype = _DTYPES[c]
        try:
            if dtype is str:
                out[c] = np.array([str(v) for v in values], dtype=str) if values else np.array([], dtype="<U1")
            else:
                out[c] = np.array(values, dtype=np.float64 if dtype is np.float32 else None).astype(dtype) \
                    if values else np.array([], dtype=dtype)
        except (TypeError, ValueError) as exc:
            bad = _first_bad(values, dtype)
            raise FaceIndexError(f"{source}: column {c!r} has a value that is not {np.dtype(dtype).name}: {bad!r}") \
                from exc
    for i, lab in enumerate(out["label"]):
        if lab not in (0, 1):
            raise FaceIndexError(f"{source}: row {i} has label {lab}; labels must be 0 (real) or 1 (fake)")
    return out


def _first_bad(values: Sequence[Any], dtype: Any) -> Any:
    for v in values:
        try:
            np.array([v]).astype(dtype)
        except (TypeError, ValueError):
            return v
    return None
