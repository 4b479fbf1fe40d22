"""The face index: one row per extracted face crop, shared by every detection dataset.

Face extraction (:mod:`faceforge.data.detection.extraction`), the synthetic generator and the image-folder reader all
write this one format; the Datasets and DataModules read only it. On disk it is a Parquet file
(``face_index.parquet``: zstd-compressed, repeated strings dictionary-encoded) with the columns of
:data:`FACE_INDEX_COLUMNS`, and a JSON side-car (``face_index.meta.json``) that records how it was made (dataset,
root, sampling, detector, counts). Folders prepared before the Parquet format hold ``face_index.csv``
(:data:`LEGACY_INDEX_FILENAME`); :meth:`FaceIndex.read` still reads them, and :func:`find_index_file` picks
whichever a folder has (the Parquet file when both exist).

Why Parquet (issue 8, point 5): DFDC at 32 frames is about 3.8M faces. A 1M-row CSV index is 270 MB, takes about
14 s to parse and holds about 1 GB of NumPy unicode (4 bytes per character); the same table as Parquet is a few tens
of MB and loads in about a second (``benchmarks/bench_face_index.py`` measures both in one run).

In memory the index is columnar, with no Python objects per row, so that a DataLoader's forked workers do not touch
reference counts and memory stays flat on DFDC-sized indexes: numeric columns are NumPy arrays, string columns are
:class:`StringColumn` (int32 codes into a sorted vocabulary of UTF-8 byte strings: a few bytes per row for the
repeated columns, and one UTF-8 copy for the unique ones such as ``crop_path``). A :class:`StringColumn` behaves
like a 1-D NumPy string array where the project uses one (``col == "train"``, ``col[mask]``, ``col[i]``,
``col.tolist()``, ``np.asarray(col)``, ``np.unique(col)``).

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
from typing import Any, Iterable, Iterator, Mapping, Sequence

import numpy as np

from faceforge.data.core.records import unsafe_relative_paths
from faceforge.errors import FaceforgeError
from faceforge.utils.atomic import atomic_path, atomic_write_json, atomic_write_text

INDEX_FILENAME = "face_index.parquet"
#: The CSV index written before the Parquet format; still read (``FaceIndex.read``), no longer written.
LEGACY_INDEX_FILENAME = "face_index.csv"
#: Every name an index file may have, the preferred one first (for completeness checks and clean-ups).
INDEX_FILENAMES = (INDEX_FILENAME, LEGACY_INDEX_FILENAME)
META_FILENAME = "face_index.meta.json"
#: Version of the Parquet layout, stored in the file's key-value metadata.
PARQUET_FORMAT_VERSION = 1
_PARQUET_VERSION_KEY = b"faceforge_face_index_version"

#: (column, dtype, meaning). ``str`` columns are held as :class:`StringColumn`.
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
STRING_COLUMNS: tuple[str, ...] = tuple(c for c in COLUMN_NAMES if _DTYPES[c] is str)
#: String columns whose values repeat across rows (per video, per dataset): dictionary-encoded in the Parquet file.
#: ``landmarks`` and ``crop_path`` differ on every row and are stored plain (zstd still compresses them).
DICTIONARY_COLUMNS: tuple[str, ...] = ("video_id", "dataset", "method", "compression", "split", "source_id",
                                       "video_path")
SPLITS = ("train", "val", "test")
#: Strings converted per step when turning Arrow string arrays into NumPy byte strings (bounds the transient memory).
_CONVERT_CHUNK = 1 << 18


def find_index_file(folder: str | Path) -> Path:
    """The index file of a prepared folder: ``face_index.parquet`` if present, else a legacy ``face_index.csv``
    if present, else the (absent) ``face_index.parquet`` path.

    Args:
        folder: a prepared faces folder (``data.faces_dir``, an extraction ``--output``).
    """
    folder = Path(folder)
    for name in INDEX_FILENAMES:
        if (folder / name).is_file():
            return folder / name
    return folder / INDEX_FILENAME


class StringColumn:
    """A 1-D column of strings held as int32 codes into a sorted vocabulary of UTF-8 byte strings.

    The vocabulary is a NumPy ``S`` (fixed-width bytes) array, normally sorted and without duplicates
    (``canonical``), so code order is string order (UTF-8 byte order equals code-point order) and comparing,
    sorting or grouping by a string column works on the codes alone. A column whose values are (nearly) all
    different, read from a file, is kept as it was stored instead (codes ``0..N-1``, ``canonical=False``), since
    sorting and de-duplicating the unique ``landmarks`` texts would cost more than it gives; the methods below
    then compare the vocabulary itself.
    Selecting rows (``col[mask]``, ``col[positions]``) copies only the codes and shares the vocabulary, so the
    splits of an index cost 4 bytes per row per string column. The memory is a few plain NumPy arrays: no
    Python object per row (safe to share with forked DataLoader workers).

    It acts as a NumPy string array where the project needs one: ``len``, ``col[i]`` (a ``numpy.str_``),
    ``col[mask or positions or slice]`` (a ``StringColumn``), ``col == "x"`` / ``col != "x"`` (bool ``(N,)``
    array), iteration, :meth:`tolist`, and ``np.asarray(col)`` (a NumPy unicode array, built on demand), through
    which any NumPy function (``np.unique``, ``np.isin``, ``np.lexsort``...) accepts it.

    Args:
        codes: integer ``(N,)`` positions into ``vocab`` (stored as int32).
        vocab: NumPy ``S`` array of UTF-8 strings.
        canonical: True if ``vocab`` is sorted ascending without duplicates (not checked: use
            :meth:`from_strings` for arbitrary input).
    """

    __slots__ = ("codes", "vocab", "canonical")

    def __init__(self, codes: np.ndarray, vocab: np.ndarray, canonical: bool = True) -> None:
        self.codes = np.asarray(codes, dtype=np.int32)
        self.vocab = np.asarray(vocab) if np.asarray(vocab).dtype.kind == "S" else np.asarray(vocab, dtype="S1")
        self.canonical = bool(canonical)

    # ------------------------------------------------------------------ construction
    @classmethod
    def from_strings(cls, values: Iterable[Any] | np.ndarray) -> "StringColumn":
        """Encode strings (a NumPy unicode/bytes/object array or any iterable of ``str``).

        Raises:
            TypeError: if a value is not a string.
        """
        if isinstance(values, StringColumn):
            return values
        arr = np.asarray(values if isinstance(values, np.ndarray) else list(values))
        if arr.ndim != 1 and arr.size == 0:
            arr = arr.reshape(0)
        if arr.dtype.kind == "U":
            raw = _encode_utf8(arr)
        elif arr.dtype.kind == "S":
            raw = arr
        elif arr.dtype.kind == "O" or arr.size == 0:
            bad = [v for v in arr.tolist() if not isinstance(v, str)]
            if bad:
                raise TypeError(f"string column holds a non-string value {bad[0]!r}")
            raw = _encode_utf8(np.array(arr.tolist(), dtype=str)) if arr.size else np.zeros(0, dtype="S1")
        else:
            raise TypeError(f"string column got a {arr.dtype} array")
        return cls._sorted_unique(raw.reshape(-1), None)

    @classmethod
    def _sorted_unique(cls, vocab: np.ndarray, codes: np.ndarray | None) -> "StringColumn":
        """Column with ``vocab[codes]`` as values (codes default to ``arange``), re-coded onto a sorted unique vocab."""
        uniq, inverse = np.unique(vocab, return_inverse=True)
        inverse = inverse.reshape(-1).astype(np.int32)
        return cls(inverse if codes is None else inverse[codes], uniq if len(uniq) else np.zeros(0, dtype="S1"))

    @staticmethod
    def concat(columns: Sequence["StringColumn"]) -> "StringColumn":
        """Concatenate columns (vocabularies are merged; nothing is decoded)."""
        if not columns:
            return StringColumn(np.zeros(0, np.int32), np.zeros(0, dtype="S1"))
        if all(c.vocab is columns[0].vocab for c in columns):
            return StringColumn(np.concatenate([c.codes for c in columns]), columns[0].vocab, columns[0].canonical)
        vocab = np.concatenate([c.vocab for c in columns])
        offsets = np.cumsum([0] + [len(c.vocab) for c in columns[:-1]])
        codes = np.concatenate([c.codes.astype(np.int64) + o for c, o in zip(columns, offsets)])
        return StringColumn._sorted_unique(vocab, codes)

    # ------------------------------------------------------------------ array protocol
    def __len__(self) -> int:
        return len(self.codes)

    @property
    def shape(self) -> tuple[int]:
        """``(N,)``."""
        return (len(self.codes),)

    @property
    def ndim(self) -> int:
        """Always 1."""
        return 1

    @property
    def size(self) -> int:
        """Number of rows."""
        return len(self.codes)

    @property
    def dtype(self) -> np.dtype:
        """The NumPy unicode dtype ``np.asarray(col)`` has."""
        return np.dtype(f"<U{max(1, self.vocab.dtype.itemsize)}")

    @property
    def nbytes(self) -> int:
        """Bytes held: codes plus vocabulary."""
        return int(self.codes.nbytes + self.vocab.nbytes)

    def decoded_vocab(self) -> np.ndarray:
        """The vocabulary as a NumPy unicode array (sorted, unique)."""
        return _decode_utf8(self.vocab)

    def __array__(self, dtype: Any = None, copy: Any = None) -> np.ndarray:
        out = self.decoded_vocab()[self.codes] if len(self.codes) else np.zeros(0, dtype="<U1")
        return out.astype(dtype) if dtype is not None else out

    def astype(self, dtype: Any) -> np.ndarray:
        """``np.asarray(self).astype(dtype)``."""
        return np.asarray(self).astype(dtype)

    def __getitem__(self, key: Any) -> Any:
        if isinstance(key, (int, np.integer)):
            return np.str_(self.vocab[self.codes[key]].decode("utf-8"))
        if isinstance(key, StringColumn):
            raise TypeError("a StringColumn cannot index another")
        return StringColumn(self.codes[key], self.vocab, self.canonical)

    def __iter__(self) -> Iterator[np.str_]:
        vocab = self.decoded_vocab()
        for c in self.codes.tolist():
            yield vocab[c]

    def tolist(self) -> list[str]:
        """The values as a list of Python ``str``."""
        if not len(self.codes):
            return []
        vocab = [v.decode("utf-8") for v in self.vocab.tolist()]
        return [vocab[c] for c in self.codes.tolist()]

    def _codes_of(self, value: str | bytes) -> np.ndarray:
        """Vocabulary positions holding ``value`` (at most one when canonical)."""
        raw = value.encode("utf-8") if isinstance(value, str) else bytes(value)
        if raw != raw.rstrip(b"\0"):  # NumPy byte strings drop trailing NULs: such a value is never stored
            return np.zeros(0, dtype=np.int64)
        if not self.canonical:
            return np.flatnonzero(self.vocab == raw)
        pos = int(np.searchsorted(self.vocab, raw))
        return np.array([pos] if pos < len(self.vocab) and self.vocab[pos] == raw else [], dtype=np.int64)

    def order_keys(self) -> np.ndarray:
        """Integer ``(N,)`` keys that sort (and tie) like the strings: the codes when canonical."""
        if self.canonical:
            return self.codes
        return np.unique(self.vocab, return_inverse=True)[1].reshape(-1)[self.codes]

    def __eq__(self, other: Any) -> Any:  # type: ignore[override]
        if isinstance(other, (str, bytes)):
            hits = self._codes_of(other)
            return self.codes == hits[0] if len(hits) == 1 else np.isin(self.codes, hits)
        if isinstance(other, StringColumn) and other.vocab is self.vocab and self.canonical:  # compare codes
            return self.codes == other.codes
        return np.asarray(self) == (np.asarray(other) if isinstance(other, StringColumn) else other)

    def __ne__(self, other: Any) -> Any:  # type: ignore[override]
        return ~np.asarray(self.__eq__(other), dtype=bool)

    __hash__ = None  # type: ignore[assignment]

    def isin(self, values: Iterable[str]) -> np.ndarray:
        """Bool ``(N,)``: rows whose value is one of ``values`` (like ``np.isin``, without decoding)."""
        hits = [self._codes_of(v) for v in values]
        return np.isin(self.codes, np.concatenate(hits) if hits else np.zeros(0, dtype=np.int64))

    def unique(self) -> np.ndarray:
        """Distinct values present, sorted, as a NumPy unicode array."""
        if not len(self.codes):
            return np.zeros(0, dtype="<U1")
        values = _decode_utf8(self.vocab[np.unique(self.codes)])
        return values if self.canonical else np.unique(values)

    def nunique(self) -> int:
        """Number of distinct values present."""
        used = np.unique(self.codes)
        return int(len(used) if self.canonical else len(np.unique(self.vocab[used])))

    def __repr__(self) -> str:
        head = ", ".join(repr(v) for v in self[:3].tolist())
        return f"StringColumn([{head}{', ...' if len(self) > 3 else ''}], rows={len(self)}, vocab={len(self.vocab)})"

    def __reduce__(self) -> tuple[Any, ...]:
        return (StringColumn, (self.codes, self.vocab, self.canonical))


def _encode_utf8(arr: np.ndarray) -> np.ndarray:
    """NumPy unicode array -> NumPy ``S`` array of UTF-8 bytes (fast path for ASCII)."""
    if arr.size == 0:
        return np.zeros(arr.shape, dtype="S1")
    try:
        return arr.astype("S")
    except UnicodeEncodeError:
        return np.char.encode(arr, "utf-8")


def _decode_utf8(arr: np.ndarray) -> np.ndarray:
    """NumPy ``S`` array of UTF-8 bytes -> NumPy unicode array (fast path for ASCII)."""
    if arr.size == 0:
        return np.zeros(arr.shape, dtype="<U1")
    try:
        return arr.astype("U")
    except UnicodeDecodeError:
        return np.char.decode(arr, "utf-8")


class FaceIndexError(FaceforgeError, ValueError):
    """A face index file is missing, malformed or inconsistent; the message names the file and the problem."""


@dataclass
class FaceIndex:
    """Columnar table of face crops.

    Attributes:
        columns: column name -> 1-D column, all of the same length N. String columns are :class:`StringColumn`
            (NumPy string arrays given here are converted), ``label``/``num_frames``/``frame_index``/``face_rank``
            int64 NumPy arrays, boxes and ``det_prob`` float32.
        root: folder that ``crop_path`` is relative to (the folder of the index file).
        meta: how the index was made (free-form JSON-able dict).
    """

    columns: dict[str, Any]
    root: Path
    meta: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        missing = [c for c in COLUMN_NAMES if c not in self.columns]
        if missing:
            raise FaceIndexError(f"face index under {self.root} lacks columns {missing}")
        lengths = {len(v) for v in self.columns.values()}
        if len(lengths) > 1:
            raise FaceIndexError(f"face index under {self.root} has columns of different lengths {sorted(lengths)}")
        for c in STRING_COLUMNS:
            if not isinstance(self.columns[c], StringColumn):
                try:
                    self.columns[c] = StringColumn.from_strings(self.columns[c])
                except TypeError as exc:
                    raise FaceIndexError(f"face index under {self.root}: column {c!r}: {exc}") from exc
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
        """Read a face index (and its ``face_index.meta.json`` if present).

        Args:
            path: the index file (``face_index.parquet``, or a legacy ``face_index.csv``), or the folder that holds
                it (see :func:`find_index_file`). The format follows the file's suffix.

        Raises:
            FaceIndexError: if the file is missing, is not a readable index (wrong columns or types, a corrupt file,
                an empty value in a Parquet column), a value does not parse, or a ``crop_path`` leads outside the
                index's folder (absolute, ``..``); the message names the file (and for a CSV the line and the
                column).
        """
        path = Path(path)
        if path.is_dir():
            path = find_index_file(path)
        if not path.is_file():
            raise FaceIndexError(f"face index {path} does not exist (run face extraction first)")
        if path.suffix.lower() == ".csv":
            columns = _read_csv_columns(path)
        else:
            columns = _read_parquet_columns(path)
        crop_paths = columns["crop_path"]
        bad = unsafe_relative_paths(crop_paths.vocab if isinstance(crop_paths, StringColumn) else crop_paths)
        if bad:
            raise FaceIndexError(f"{path}: crop_path {bad[0]!r} is not a relative path inside {path.parent} (an "
                                 f"absolute path or a '..' component); the index is refused, nothing was opened")
        meta_path = path.with_name(META_FILENAME)
        meta: dict[str, Any] = {}
        if meta_path.is_file():
            try:
                meta = json.loads(meta_path.read_text(encoding="utf-8"))
            except json.JSONDecodeError as exc:
                raise FaceIndexError(f"{meta_path}: not valid JSON ({exc})") from exc
        return cls(columns=columns, root=path.parent, meta=meta)

    def write(self, folder: str | Path | None = None) -> Path:
        """Write ``face_index.meta.json`` then ``face_index.parquet`` atomically into ``folder`` (default: ``root``).

        The index file is written last, so a folder holding one is complete. Strings of
        :data:`DICTIONARY_COLUMNS` are dictionary-encoded, everything is zstd-compressed. A legacy
        ``face_index.csv`` in the folder is removed afterwards (the Parquet file supersedes it). Rows are written in
        their current order; writers sort them (video_id, frame_index, face_rank) first, and the same rows give the
        same bytes with the same pyarrow version (reruns are reproducible).

        Returns:
            The path of the Parquet file.

        Raises:
            OSError: the folder cannot be written (e.g. no space left); the previous files are then untouched.
        """
        import pyarrow as pa
        import pyarrow.parquet as pq

        folder = Path(folder) if folder is not None else self.root
        arrays = []
        for c in COLUMN_NAMES:
            col = self.columns[c]
            if isinstance(col, StringColumn):
                vocab = pa.array(col.vocab, type=pa.binary()).cast(pa.string())
                arrays.append(vocab.take(pa.array(col.codes, type=pa.int32())))
            else:
                arrays.append(pa.array(np.asarray(col, dtype=_DTYPES[c])))
        table = pa.Table.from_arrays(arrays, names=list(COLUMN_NAMES))
        table = table.replace_schema_metadata({_PARQUET_VERSION_KEY: str(PARQUET_FORMAT_VERSION).encode()})
        path = folder / INDEX_FILENAME
        atomic_write_json(folder / META_FILENAME, self.meta)
        with atomic_path(path, suffix=".parquet.tmp") as tmp:
            pq.write_table(table, str(tmp), compression="zstd", use_dictionary=list(DICTIONARY_COLUMNS),
                           row_group_size=1 << 20)
        (folder / LEGACY_INDEX_FILENAME).unlink(missing_ok=True)
        return path

    def write_csv(self, path: str | Path) -> Path:
        """Export the rows as a CSV file (the legacy ``face_index.csv`` layout, floats to 6 significant digits),
        atomically. For people and spreadsheets; the data modules read the Parquet file :meth:`write` makes.

        Returns:
            ``path``.
        """
        path = Path(path)
        buf = io.StringIO()
        writer = csv.writer(buf, lineterminator="\n")
        writer.writerow(COLUMN_NAMES)
        cols = [self.columns[c].tolist() for c in COLUMN_NAMES]
        for row in zip(*cols):
            writer.writerow([f"{v:.6g}" if isinstance(v, float) else v for v in row])
        atomic_write_text(path, buf.getvalue())
        return path

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
            mask &= np.asarray(self.columns[c] == v, dtype=bool)
        return self.select(mask)

    def sorted(self) -> "FaceIndex":
        """Rows sorted by (video_id, frame_index, face_rank): the canonical on-disk order (stable for ties)."""
        order = np.lexsort((self.columns["face_rank"], self.columns["frame_index"],
                            self.columns["video_id"].order_keys()))
        return self.select(order)

    @staticmethod
    def concat(indexes: Sequence["FaceIndex"], root: str | Path, meta: dict[str, Any] | None = None) -> "FaceIndex":
        """Concatenate indexes that share ``root``."""
        if not indexes:
            return FaceIndex.empty(root, meta)
        cols = {c: StringColumn.concat([ix.columns[c] for ix in indexes]) if c in STRING_COLUMNS
                else np.concatenate([ix.columns[c] for ix in indexes]) for c in COLUMN_NAMES}
        return FaceIndex(columns=cols, root=Path(root), meta=dict(meta or {}))

    def landmarks_array(self, i: int) -> np.ndarray:
        """Row ``i``'s landmarks as a (5, 2) float32 array in source-frame pixels, or shape (0, 2) if unknown."""
        text = str(self.columns["landmarks"][i]).strip()
        if not text:
            return np.zeros((0, 2), dtype=np.float32)
        return np.array(text.split(), dtype=np.float32).reshape(-1, 2)

    def nbytes(self) -> int:
        """Bytes held by the columns (codes and vocabularies of the string columns included)."""
        return int(sum(v.nbytes for v in self.columns.values()))

    def summary(self) -> dict[str, Any]:
        """Counts per split and label, and numbers of videos: a dict for reports."""
        videos = self.columns["video_id"]
        out: dict[str, Any] = {"faces": len(self), "videos": videos.nunique()}
        for split in self.columns["split"].unique().tolist():
            m = self.columns["split"] == split
            out[str(split)] = {
                "faces": int(m.sum()),
                "videos": int(len(np.unique(videos.codes[m]))),
                "fake_faces": int((self.columns["label"][m] == 1).sum()),
                "real_faces": int((self.columns["label"][m] == 0).sum()),
            }
        return out


def format_landmarks(points: np.ndarray | None) -> str:
    """Encode (K, 2) landmark pixels as the index's space-separated text ('' for None)."""
    if points is None:
        return ""
    return " ".join(f"{v:.2f}" for v in np.asarray(points, dtype=np.float64).reshape(-1))


def _read_csv_columns(path: Path) -> dict[str, Any]:
    """The columns of a legacy ``face_index.csv``: parsed by pyarrow's CSV reader when the file is well formed;
    anything it or a type conversion refuses is read again row by row (Python's csv module), which names the
    line and the column of the problem."""
    fast = _read_csv_columns_arrow(path)
    return fast if fast is not None else _read_csv_columns_checked(path)


def _read_csv_columns_arrow(path: Path) -> dict[str, Any] | None:
    """Columns of a well-formed legacy CSV index via ``pyarrow.csv`` (no Python object per value), or None when
    the file does not parse cleanly (the caller then reports the exact problem)."""
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.csv as pcsv

    try:
        with path.open("r", encoding="utf-8", newline="") as fh:
            if next(csv.reader([fh.readline()]), None) != list(COLUMN_NAMES):
                return None
        table = pcsv.read_csv(path, read_options=pcsv.ReadOptions(use_threads=True),
                              convert_options=pcsv.ConvertOptions(
                                  column_types={c: pa.string() for c in COLUMN_NAMES},
                                  strings_can_be_null=False, quoted_strings_can_be_null=False))
        if tuple(table.column_names) != COLUMN_NAMES:
            return None
        out: dict[str, Any] = {}
        for c in COLUMN_NAMES:
            col = table.column(c)
            if _DTYPES[c] is str:
                out[c] = _dictionary_to_column(pa.chunked_array([pc.dictionary_encode(col.combine_chunks())])) \
                    if c in DICTIONARY_COLUMNS else _plain_to_column(col)
            elif _DTYPES[c] is np.float32:
                out[c] = col.cast(pa.float64()).to_numpy().astype(np.float32)
            else:
                out[c] = col.cast(pa.int64()).to_numpy().astype(np.int64)
    except (OSError, UnicodeDecodeError, pa.ArrowException):
        return None
    if ((out["label"] != 0) & (out["label"] != 1)).any():
        return None
    return out


def _read_csv_columns_checked(path: Path) -> dict[str, Any]:
    """The columns of a legacy CSV index read row by row, raising :class:`FaceIndexError` at the first problem."""
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
    return _typed_columns(cols, source=str(path))


def _read_parquet_columns(path: Path) -> dict[str, Any]:
    """The columns of a ``face_index.parquet``: strings straight into :class:`StringColumn` (no Python objects)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        schema = pq.read_schema(path)
    except (OSError, pa.ArrowException) as exc:
        raise FaceIndexError(f"face index {path} is not a readable Parquet file ({exc}); delete it and prepare the "
                             f"folder again") from exc
    if tuple(schema.names) != COLUMN_NAMES:
        raise FaceIndexError(f"face index {path} has columns {schema.names}, expected {list(COLUMN_NAMES)}")
    expected = {c: pa.string() if _DTYPES[c] is str else pa.from_numpy_dtype(np.dtype(_DTYPES[c]))
                for c in COLUMN_NAMES}
    wrong = [f"{c}: {schema.field(c).type} (expected {expected[c]})" for c in COLUMN_NAMES
             if schema.field(c).type != expected[c]]
    if wrong:
        raise FaceIndexError(f"face index {path} has columns of the wrong type: {'; '.join(wrong)}")
    out: dict[str, Any] = {}
    pool = pa.default_memory_pool()
    try:
        pf = pq.ParquetFile(path, read_dictionary=list(DICTIONARY_COLUMNS))
        for c in COLUMN_NAMES:  # one column at a time: Arrow's copy of a column is freed before the next is read
            dictionary = c in DICTIONARY_COLUMNS
            chunked = pf.read(columns=[c]).column(0)
            if chunked.null_count:
                raise FaceIndexError(f"face index {path}: column {c!r} has {chunked.null_count} empty (null) values")
            if _DTYPES[c] is not str:
                out[c] = chunked.to_numpy().astype(_DTYPES[c])
            elif dictionary:
                out[c] = _dictionary_to_column(chunked)
            else:
                out[c] = _plain_to_column(chunked)
            del chunked
            pool.release_unused()  # hand the column's decode buffers back to the OS now (peak ~ one column)
    except (OSError, pa.ArrowException) as exc:
        raise FaceIndexError(f"face index {path} cannot be read ({exc}); delete it and prepare the folder again") \
            from exc
    bad = np.flatnonzero((out["label"] != 0) & (out["label"] != 1))
    if len(bad):
        raise FaceIndexError(f"{path}: row {int(bad[0])} has label {int(out['label'][bad[0]])}; labels must be 0 "
                             f"(real) or 1 (fake)")
    return out


def _dictionary_to_column(chunked: Any) -> StringColumn:
    """A pyarrow chunked dictionary<int32, string> array (a repeated column) -> canonical :class:`StringColumn`."""
    if chunked.num_chunks == 0:
        return StringColumn(np.zeros(0, np.int32), np.zeros(0, dtype="S1"))
    vocabs, codes, offset = [], [], 0
    for chunk in chunked.chunks:
        vocabs.append(_arrow_strings_to_bytes(chunk.dictionary))
        codes.append(chunk.indices.to_numpy(zero_copy_only=False).astype(np.int64) + offset)
        offset += len(chunk.dictionary)
    vocab = np.concatenate(vocabs) if len(vocabs) > 1 else vocabs[0]
    all_codes = np.concatenate(codes) if len(codes) > 1 else codes[0]
    if len(vocabs) == 1 and (len(vocab) < 2 or (vocab[1:] > vocab[:-1]).all()):
        return StringColumn(all_codes, vocab)
    return StringColumn._sorted_unique(vocab, all_codes)  # small: one entry per distinct value


def _plain_to_column(chunked: Any) -> StringColumn:
    """A pyarrow chunked string array of (nearly) all-different values -> :class:`StringColumn` with codes
    ``0..N-1``: canonical when the values are already strictly increasing (``crop_path`` of a sorted index)."""
    arr = chunked.combine_chunks() if chunked.num_chunks != 1 else chunked.chunk(0)
    vocab = _arrow_strings_to_bytes(arr) if len(arr) else np.zeros(0, dtype="S1")
    del arr
    canonical = bool(len(vocab) < 2 or (vocab[1:] > vocab[:-1]).all())
    return StringColumn(np.arange(len(vocab), dtype=np.int32), vocab, canonical=canonical)


def _arrow_strings_to_bytes(arr: Any) -> np.ndarray:
    """A pyarrow (large) string array without nulls -> NumPy ``S`` array of its UTF-8 bytes, without making a Python
    object per string (the bytes are scattered from Arrow's data buffer in chunks of :data:`_CONVERT_CHUNK`)."""
    import pyarrow as pa

    n = len(arr)
    if n == 0:
        return np.zeros(0, dtype="S1")
    import pyarrow.compute as pc

    offset_type = np.int64 if pa.types.is_large_string(arr.type) else np.int32
    width = max(1, int(pc.max(pc.binary_length(arr)).as_py() or 0))
    padded = pc.utf8_rpad(arr, width=width, padding="\0")  # pads code points: bytes == width for ASCII only
    _, off_buf, data_buf = padded.buffers()
    offsets = np.frombuffer(off_buf, dtype=offset_type)[padded.offset:padded.offset + n + 1]
    if data_buf is not None and (np.diff(offsets) == width).all():
        return np.frombuffer(data_buf, dtype=np.uint8)[offsets[0]:offsets[-1]].view(f"S{width}").copy()
    _, off_buf, data_buf = arr.buffers()
    offsets = np.frombuffer(off_buf, dtype=offset_type)[arr.offset:arr.offset + n + 1].astype(np.int64)
    data = np.frombuffer(data_buf, dtype=np.uint8) if data_buf is not None else np.zeros(0, np.uint8)
    lengths = np.diff(offsets)
    width = max(1, int(lengths.max()))
    out = np.zeros((n, width), dtype=np.uint8)
    for s in range(0, n, _CONVERT_CHUNK):
        e = min(n, s + _CONVERT_CHUNK)
        lens = lengths[s:e]
        total = int(lens.sum())
        if not total:
            continue
        rows = np.repeat(np.arange(s, e), lens)
        starts = np.repeat(offsets[s:e] - offsets[s], lens)
        out[rows, np.arange(total) - starts] = data[offsets[s]:offsets[e]]
    return out.view(f"S{width}").reshape(n)


def _typed_columns(cols: Mapping[str, list[Any]], source: str) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for c, values in cols.items():
        dtype = _DTYPES[c]
        try:
            if dtype is str:
                out[c] = StringColumn.from_strings(np.array([str(v) for v in values], dtype=str) if values
                                                   else np.zeros(0, dtype="<U1"))
            else:
                out[c] = np.array(values, dtype=np.float64 if dtype is np.float32 else None).astype(dtype) \
                    if values else np.array([], dtype=dtype)
        except (TypeError, ValueError) as exc:
            bad = _first_bad(values, dtype)
            raise FaceIndexError(f"{source}: column {c!r} has a value that is not {np.dtype(dtype).name}: {bad!r}") \
                from exc
    bad_rows = np.flatnonzero((out["label"] != 0) & (out["label"] != 1))
    if len(bad_rows):
        i = int(bad_rows[0])
        raise FaceIndexError(f"{source}: row {i} has label {out['label'][i]}; labels must be 0 (real) or 1 (fake)")
    return out


def _first_bad(values: Sequence[Any], dtype: Any) -> Any:
    for v in values:
        try:
            np.array([v]).astype(dtype)
        except (TypeError, ValueError):
            return v
    return None
