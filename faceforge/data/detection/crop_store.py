"""A compact, sharded store of encoded face crops, for datasets whose uint8 crop cache does not fit on disk.

The memmap :class:`~faceforge.data.detection.crop_cache.CropCache` holds every crop decoded: 196 KB per crop at
256 px, about 745 GB for DFDC at 32 frames (3.8M faces). :class:`EncodedCropStore` keeps each crop file's encoded
bytes (the JPEG/PNG the extraction wrote, unchanged, so nothing is lost) packed into a few large shard files with
an offsets table, and decodes a crop when it is read (PIL, then the same RGB conversion and resize as the memmap
cache: both stores serve identical pixels). It costs about the size of the crops on disk, one decode per sample
(about a millisecond at 256 px), and replaces millions of small files by a few large ones (no per-file open, one
memory map per shard). Choose it with ``data.crop_store=encoded``.

Files (in ``<index root>/cache/crops_encoded_<key>/`` by default)::

    shard_00000.bin     the encoded crop files of rows [a, b), concatenated in row order
    shard_00000.npy     int64 (b - a, 2): byte offset and length of each row's crop in the shard (length -1 for a
                        crop that could not be read)
    shard_00000.json    the shard's key, row range, unreadable rows (+ reason), conversions met; written last
    store.json          the store's key, rows, shards, unreadable rows, conversions; written last of all: its
                        presence marks a complete store

``key`` hashes the ordered ``crop_path`` column and each crop file's size and modification time (ns), like the
memmap cache's key (without the image size: the stored bytes do not depend on it). Rows are assigned to shards by
the cumulative size of their files (``shard_bytes`` per shard), so the partition is fixed by the key. Every file is
written atomically (temporary file + rename); a build that is killed keeps its finished shards, and the next build
with the same key reuses them and writes only the missing ones (resumable). Before writing, the bytes still to
write are checked against the free disk space.

Every crop is decoded once while the store is built: crops that cannot be decoded are listed in
:attr:`EncodedCropStore.errors` (the data module drops and counts them), exactly as with the memmap cache.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import threading
import warnings
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np

from faceforge.data.core.image_io import (
    ImageConversionWarning,
    ImageReadError,
    ImageReadStats,
    read_rgb_image,
    resize_image,
)
from faceforge.data.detection.crop_cache import CropCache, CropCacheError, CropSource, check_free_space, crop_file_stats
from faceforge.data.detection.face_index import FaceIndex
from faceforge.utils.atomic import atomic_path, atomic_write_json

log = logging.getLogger(__name__)

STORE_FORMAT_VERSION = 1
#: The kinds of crop store ``data.crop_store`` may name.
CROP_STORES = ("memmap", "encoded")
#: Default target size of one shard file, bytes.
DEFAULT_SHARD_BYTES = 1 << 30
STORE_META = "store.json"


class EncodedCropStore(CropSource):
    """The encoded crop files of a face index, packed into shard files and decoded on read.

    Args:
        index: the face index whose crops to store (row order is kept).
        image_size: side ``S`` of the served crops, pixels (crops of another size are resized on read with
            :func:`~faceforge.data.core.image_io.resize_image`, as the memmap cache does when it is built).
        cache_dir: folder holding the store's folder (default ``<index.root>/cache``).
        interpolation: how crops of another size are resized.
        num_threads: reading/decoding threads while building (default ``min(8, os.cpu_count())``).
        shard_bytes: target bytes per shard file (a shard holds whole crops; the last may be smaller).

    Raises:
        ValueError: for ``image_size < 1``, ``shard_bytes < 1`` or an unknown interpolation.
        CropCacheError: from :meth:`ensure` if there is not enough disk space or the files cannot be written;
            from :meth:`get` if a shard is missing or shorter than its offsets say.

    Attributes:
        path: the store's folder; ``meta_path``: its ``store.json``.
        errors, read_stats, built: see :class:`~faceforge.data.detection.crop_cache.CropSource`.
    """

    def __init__(self, index: FaceIndex, image_size: int = 256, cache_dir: str | Path | None = None,
                 interpolation: str = "area", num_threads: int | None = None,
                 shard_bytes: int = DEFAULT_SHARD_BYTES) -> None:
        if int(shard_bytes) < 1:
            raise ValueError(f"shard_bytes must be >= 1, got {shard_bytes}")
        super().__init__(index, image_size, cache_dir, interpolation, num_threads)
        self.shard_bytes = int(shard_bytes)
        self._file_stats = crop_file_stats(self.root, self.crop_paths)
        self.key = self._compute_key()
        self.path = self.cache_dir / f"crops_encoded_{self.key}"
        self.meta_path = self.path / STORE_META
        self._table: np.ndarray | None = None
        self._shards: dict[int, np.ndarray] = {}

    def _compute_key(self) -> str:
        h = hashlib.sha256()
        h.update(f"encoded-v{STORE_FORMAT_VERSION}|{self.shard_bytes}|{len(self.crop_paths)}|".encode())
        h.update("\n".join(self.crop_paths.tolist()).encode("utf-8"))
        h.update(self._file_stats.tobytes())
        return h.hexdigest()[:16]

    # ------------------------------------------------------------------ layout
    def shard_ranges(self) -> list[tuple[int, int]]:
        """Row ranges ``[(a, b), ...]`` of the shards: rows in order, a new shard when ``shard_bytes`` is reached."""
        n = len(self.crop_paths)
        if n == 0:
            return []
        sizes = self._file_stats[:, 0].clip(min=0)
        before = np.concatenate([[0], np.cumsum(sizes)[:-1]])
        shard_of = before // self.shard_bytes
        cuts = np.flatnonzero(np.diff(shard_of)) + 1
        bounds = [0, *cuts.tolist(), n]
        return [(bounds[k], bounds[k + 1]) for k in range(len(bounds) - 1)]

    def _shard_files(self, k: int) -> tuple[Path, Path, Path]:
        stem = self.path / f"shard_{k:05d}"
        return stem.with_suffix(".bin"), stem.with_suffix(".npy"), stem.with_suffix(".json")

    def _shard_done(self, k: int, rows: tuple[int, int]) -> dict[str, Any] | None:
        """The side-car of shard ``k`` if it is complete for this key and row range, else None."""
        data, offsets, meta = self._shard_files(k)
        if not (data.is_file() and offsets.is_file() and meta.is_file()):
            return None
        try:
            info = json.loads(meta.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError):
            return None
        if info.get("key") != self.key or info.get("rows") != list(rows) or data.stat().st_size != info.get("bytes"):
            return None
        return info

    # ------------------------------------------------------------------ build / load
    def is_built(self) -> bool:
        """True if a complete store with this key exists on disk."""
        if not self.meta_path.is_file():
            return False
        try:
            meta = json.loads(self.meta_path.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError):
            return False
        return meta.get("key") == self.key and meta.get("rows") == len(self.crop_paths)


    def _build(self) -> None:
        ranges = self.shard_ranges()
        sizes = self._file_stats[:, 0].clip(min=0)
        todo = [k for k, r in enumerate(ranges) if self._shard_done(k, r) is None]
        try:
            self.path.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise CropCacheError(f"cannot create the crop store folder {self.path}: {exc}") from exc
        needed = int(sum(int(sizes[a:b].sum()) + 16 * (b - a) for a, b in (ranges[k] for k in todo)))
        check_free_space(self.path, needed, f"the encoded crop store {self.path} ({len(todo)} of {len(ranges)} "
                         f"shards to write)", "free some space or point the cache elsewhere")
        log.info("building encoded crop store %s (%d crops, %d shards, %d to write, %.2f GiB)", self.path,
                 len(self.crop_paths), len(ranges), len(todo), needed / 2**30)
        errors: dict[int, str] = {}
        stats = ImageReadStats()
        try:
            for k, rows in enumerate(ranges):
                info = self._shard_done(k, rows) if k not in todo else None
                if info is None:
                    info = self._write_shard(k, rows)
                errors.update({int(r): v for r, v in info.get("errors", {}).items()})
                part = info.get("read_stats", {})
                stats.merge(ImageReadStats(conversions=Counter({k: int(n) for k, n in part.get("conversions", {})
                                                                .items()}),
                                           examples={k: list(v) for k, v in part.get("examples", {}).items()}))
            atomic_write_json(self.meta_path, {
                "key": self.key, "version": STORE_FORMAT_VERSION, "rows": len(self.crop_paths),
                "shards": [list(r) for r in ranges], "shard_bytes": self.shard_bytes, "root": str(self.root),
                "errors": {str(k): v for k, v in sorted(errors.items())},
                "error_files": {str(k): str(self.crop_paths[k]) for k in sorted(errors)},
                "read_stats": stats.to_dict(),
            })
        except OSError as exc:
            raise CropCacheError(f"cannot write the encoded crop store {self.path}: {exc}") from exc
        self.errors = errors
        self.read_stats = stats

    def _write_shard(self, k: int, rows: tuple[int, int]) -> dict[str, Any]:
        """Read, check (decode) and pack the crops of rows ``[a, b)`` into shard ``k``; return its side-car."""
        a, b = rows
        data_path, offsets_path, meta_path = self._shard_files(k)
        errors: dict[int, str] = {}
        stats = ImageReadStats()
        lock = threading.Lock()

        def load(i: int) -> bytes | None:
            path = self.root / str(self.crop_paths[i])
            local = ImageReadStats()
            try:
                try:
                    raw = path.read_bytes()
                except OSError as exc:
                    raise ImageReadError(path, "file does not exist" if isinstance(exc, FileNotFoundError)
                                         else str(exc)) from None
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore", ImageConversionWarning)
                    read_rgb_image(path, stats=local, data=raw)  # decodes: an unreadable crop is found now
            except ImageReadError as exc:
                with lock:
                    errors[i] = exc.reason
                return None
            if local.total:
                with lock:
                    stats.merge(local)
            return raw

        table = np.full((b - a, 2), -1, dtype=np.int64)
        offset = 0
        chunk = 256
        with atomic_path(data_path, suffix=".bin.tmp") as tmp, open(tmp, "wb") as fh, \
                ThreadPoolExecutor(max_workers=self.num_threads) as pool:
            for start in range(a, b, chunk):
                block = range(start, min(b, start + chunk))
                for i, raw in zip(block, pool.map(load, block)):
                    if raw is None:
                        continue
                    fh.write(raw)
                    table[i - a] = (offset, len(raw))
                    offset += len(raw)
            fh.flush()
            os.fsync(fh.fileno())
        with atomic_path(offsets_path, suffix=".npy.tmp") as tmp, open(tmp, "wb") as fh:
            np.save(fh, table)
        info = {"key": self.key, "rows": [a, b], "bytes": offset,
                "errors": {str(r): v for r, v in sorted(errors.items())}, "read_stats": stats.to_dict()}
        atomic_write_json(meta_path, info)
        return info

    # ------------------------------------------------------------------ access
    def _row_table(self) -> np.ndarray:
        """int64 ``(N, 3)``: shard, offset, length of every row (length -1: unreadable)."""
        if self._table is None:
            self._check_ready()
            parts = []
            for k, (a, b) in enumerate(self.shard_ranges()):
                _, offsets_path, _ = self._shard_files(k)
                try:
                    t = np.load(offsets_path)
                except (OSError, ValueError, EOFError) as exc:
                    raise CropCacheError(f"cannot read {offsets_path}: {exc} (delete {self.path} to rebuild)") from exc
                if t.shape != (b - a, 2):
                    raise CropCacheError(f"{offsets_path} has shape {t.shape}, expected {(b - a, 2)} (delete "
                                         f"{self.path} to rebuild)")
                parts.append(np.column_stack([np.full(b - a, k, dtype=np.int64), t]))
            self._table = np.concatenate(parts) if parts else np.zeros((0, 3), dtype=np.int64)
        return self._table

    def encoded(self, row: int) -> bytes:
        """The stored (encoded) bytes of store row ``row``: the crop file as it was when the store was built.

        Raises:
            CropCacheError: the store is not ready, the row's crop was unreadable, or its shard is missing/short.
        """
        shard, offset, length = (int(v) for v in self._row_table()[row])
        if length < 0:
            raise CropCacheError(f"crop {self.crop_paths[row]} (row {row}) was unreadable when the store {self.path} "
                                 f"was built: {self.errors.get(row, 'unknown reason')}")
        mm = self._shards.get(shard)
        if mm is None:
            data_path = self._shard_files(shard)[0]
            try:
                mm = np.memmap(data_path, dtype=np.uint8, mode="r") if data_path.stat().st_size else \
                    np.zeros(0, np.uint8)
            except (OSError, ValueError) as exc:
                raise CropCacheError(f"cannot open {data_path}: {exc} (delete {self.path} to rebuild)") from exc
            self._shards[shard] = mm
        if offset + length > len(mm):
            raise CropCacheError(f"{self._shard_files(shard)[0]} is shorter than its offsets say (delete {self.path} "
                                 f"to rebuild)")
        return mm[offset:offset + length].tobytes()

    def get(self, row: int) -> np.ndarray:
        """The crop of store row ``row``, decoded and resized to ``(S, S, 3)`` uint8 RGB (a fresh array).

        Raises:
            CropCacheError: see :meth:`encoded`, or the stored bytes no longer decode.
        """
        raw = self.encoded(row)
        path = self.root / str(self.crop_paths[row])
        try:
            with warnings.catch_warnings():  # conversions were counted (and warned about) when the store was built
                warnings.simplefilter("ignore", ImageConversionWarning)
                img = read_rgb_image(path, data=raw)
        except ImageReadError as exc:
            raise CropCacheError(f"crop {path} stored in {self.path} does not decode: {exc.reason}") from exc
        return np.ascontiguousarray(resize_image(img, self.image_size, self.interpolation))

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_shards"] = {}  # each process maps the shards itself
        return state

    def __repr__(self) -> str:
        return f"EncodedCropStore({self.path}, rows={len(self)}, errors={len(self.errors)})"


def make_crop_store(kind: str, index: FaceIndex, image_size: int = 256, **kwargs: Any) -> CropSource:
    """The crop store ``data.crop_store`` names, over ``index`` (not yet built: call ``ensure()``).

    Args:
        kind: ``"memmap"`` (:class:`~faceforge.data.detection.crop_cache.CropCache`: decoded uint8 crops, fastest,
            196 KB per crop at 256 px) or ``"encoded"`` (:class:`EncodedCropStore`: the encoded files in shards,
            about their size on disk, one decode per read).
        index: the face index whose crops to store.
        image_size: side of the served crops, pixels.
        **kwargs: passed to the store's constructor (``cache_dir``, ``interpolation``, ``num_threads``, ...).

    Raises:
        ValueError: for an unknown ``kind``.
    """
    if kind == "memmap":
        return CropCache(index, image_size=image_size, **kwargs)
    if kind == "encoded":
        return EncodedCropStore(index, image_size=image_size, **kwargs)
    raise ValueError(f"unknown crop store {kind!r}; choose one of {CROP_STORES}")
