"""A packed, decode-free cache of face crops: one uint8 ``(N, S, S, 3)`` NumPy memmap per face index and size.

Decoding a PNG/JPEG crop costs about a millisecond per sample, every epoch, in every worker. :class:`CropCache`
decodes every crop of an index ONCE (with :func:`faceforge.data.core.image_io.read_rgb_image`), resizes it to
``image_size`` x ``image_size`` (crops of another size are stretched with
:func:`faceforge.data.core.image_io.resize_image`, INTER_AREA by default), and packs the rows into a single ``.npy``
file that is then read with ``np.load(mmap_mode="r")``: a training sample is a 196 KB memory copy (at 256 px)
from the page cache, no decoding.

Files (in ``<index root>/cache/`` by default)::

    crops_<S>px_<key>.npy    uint8 (N, S, S, 3), row i = crop of row i of the index the cache was built from
    crops_<S>px_<key>.json   side-car: key, shape, crop paths' count, rows that could not be read (+ reason),
                             conversions made (ImageReadStats); written last, so it marks a complete build

``key`` is a hash of what determines the pixels: the ordered ``crop_path`` column, each crop file's size and
modification time (ns), ``S``, the interpolation and the format version. A changed index (rows added, removed,
reordered) or a rewritten crop file gives a new key, hence a rebuild; relabelling rows (labels, splits) does not,
since the pixels are the same. Old cache files are not deleted automatically (several configurations may share
one faces folder): remove ``cache/`` to reclaim the space. Builds are atomic (temporary file + rename), so a
killed build leaves no half-written cache. Two processes building the same cache at once (e.g. DDP ranks) both
write a temporary file and rename it onto the same name: wasteful but correct.

The object is picklable and opens the memmap lazily, so each DataLoader worker maps the file itself.

Before building, the file's size is checked against the free space of ``cache_dir`` (``shutil.disk_usage``): at
256 px a crop takes 196 KB, so DFDC at 32 frames (3.8M faces) would need about 745 GB. A cache that does not fit is
refused with :class:`CropCacheError` naming the folder, the bytes needed and free, and the option to use instead:
``data.crop_store=encoded`` (:class:`~faceforge.data.detection.crop_store.EncodedCropStore`: the encoded crop files
packed into a few shard files, decoded on read; about the size of the crops on disk) or ``data.cache_crops=false``.
Both stores share :class:`CropSource`'s interface (``ensure``, ``rows_for``, ``get``, ``errors``, ``valid``), which
is all :class:`~faceforge.data.detection.frames.FaceCropDataset` and
:class:`~faceforge.data.detection.clips.FaceClipDataset` use.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import threading
from abc import ABC, abstractmethod
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np

from faceforge.data.core.image_io import INTERPOLATIONS, ImageReadError, ImageReadStats, read_rgb_image, resize_image
from faceforge.data.detection.face_index import FaceIndex, StringColumn
from faceforge.errors import FaceforgeError
from faceforge.utils.atomic import atomic_path, atomic_write_json

log = logging.getLogger(__name__)

CACHE_FORMAT_VERSION = 1
CACHE_DIRNAME = "cache"


class CropCacheError(FaceforgeError, RuntimeError):
    """The crop cache cannot be built or read (no disk space, a crop not in the cache, a corrupt cache file)."""


def crop_file_stats(root: Path, crop_paths: StringColumn | np.ndarray) -> np.ndarray:
    """``(N, 2)`` int64 ``(size in bytes, modification time in ns)`` of each crop file, ``(-1, -1)`` if missing."""
    stat = np.zeros((len(crop_paths), 2), dtype=np.int64)
    for i, rel in enumerate(crop_paths.tolist()):
        try:
            st = os.stat(root / rel)
            stat[i] = (st.st_size, st.st_mtime_ns)
        except OSError:
            stat[i] = (-1, -1)
    return stat


def check_free_space(folder: Path, needed: int, what: str, instead: str) -> None:
    """Refuse to write ``needed`` bytes into ``folder`` when its file system has less free space.

    Args:
        folder: an existing folder (where the files will be written).
        needed: bytes about to be written.
        what: what is being built, for the message (e.g. ``"crop cache /x/cache/crops_256px_ab.npy"``).
        instead: the option(s) to use instead, for the message.

    Raises:
        CropCacheError: ``needed`` exceeds the free bytes; the message names ``folder``, both byte counts and
            ``instead``.
    """
    free = shutil.disk_usage(folder).free
    if needed > free:
        raise CropCacheError(
            f"{what} needs {needed} bytes ({needed / 2**30:.2f} GiB) but {folder} has only {free} bytes "
            f"({free / 2**30:.2f} GiB) free; {instead}")


class CropSource(ABC):
    """What the face datasets read crops from: one crop per row of the face index it was made from.

    Subclasses (:class:`CropCache`, :class:`~faceforge.data.detection.crop_store.EncodedCropStore`) build their
    files in :meth:`ensure` and serve ``(S, S, 3)`` uint8 RGB crops from :meth:`get`.

    Attributes:
        root: folder the index's ``crop_path`` values are relative to.
        image_size: side ``S`` of the served crops, pixels.
        crop_paths: ``(N,)`` crop paths (the index's ``crop_path`` column, in row order: a
            :class:`~faceforge.data.detection.face_index.StringColumn`).
        errors: ``{row: reason}`` of crops that could not be read (filled by :meth:`ensure`).
        read_stats: image conversions met while decoding.
        built: True if :meth:`ensure` built the files, False if it found them.
        path: the main file or folder of the store (for reports).
        meta_path: the side-car JSON its build writes last.
    """

    image_size: int
    crop_paths: StringColumn
    errors: dict[int, str]
    read_stats: ImageReadStats
    built: bool
    path: Path
    meta_path: Path  # the side-car JSON a build writes last (key, shape, errors, read statistics)
    _ready: bool
    _sorter: np.ndarray | None

    def __init__(self, index: FaceIndex, image_size: int, cache_dir: str | Path | None, interpolation: str,
                 num_threads: int | None) -> None:
        """The settings every store shares (see the subclasses for the arguments).

        Raises:
            ValueError: ``image_size`` < 1 or an unknown ``interpolation``.
        """
        if int(image_size) < 1:
            raise ValueError(f"image_size must be >= 1, got {image_size}")
        if interpolation not in INTERPOLATIONS:
            raise ValueError(f"unknown interpolation {interpolation!r}; choose one of {INTERPOLATIONS}")
        self.root = Path(index.root)
        self.image_size = int(image_size)
        self.interpolation = interpolation
        self.num_threads = int(num_threads or min(8, os.cpu_count() or 1))
        self.cache_dir = Path(cache_dir) if cache_dir is not None else self.root / CACHE_DIRNAME
        self.crop_paths = index.columns["crop_path"]  # a StringColumn: compact, shared with the index
        self.errors = {}
        self.read_stats = ImageReadStats()
        self.built = False
        self._ready = False
        self._sorter = None

    def ensure(self) -> CropSource:
        """Build the store if it is missing, stale or incomplete (:meth:`is_built`, :meth:`_build`), else load the
        side-car its build wrote. Returns ``self``.

        Crops that cannot be decoded (:class:`~faceforge.data.core.image_io.ImageReadError`) are listed in
        :attr:`errors` (callers drop those rows and count them in their report).

        Raises:
            CropCacheError: not enough free disk space for what is still to write, or a file cannot be written.
        """
        if self.is_built():
            self._load_side_meta(json.loads(self.meta_path.read_text(encoding="utf-8")))
            self.built = False
        else:
            self._build()
            self.built = True
        self._ready = True
        return self

    @abstractmethod
    def is_built(self) -> bool:
        """Whether a complete store for these crops and this size is on disk."""

    @abstractmethod
    def _build(self) -> None:
        """Write the store's files, the side-car last."""

    @abstractmethod
    def get(self, row: int) -> np.ndarray:
        """The crop of store row ``row`` as a fresh, writable ``(S, S, 3)`` uint8 RGB array."""

    def __len__(self) -> int:
        return len(self.crop_paths)

    @property
    def shape(self) -> tuple[int, int, int, int]:
        """``(N, S, S, 3)``."""
        return (len(self.crop_paths), self.image_size, self.image_size, 3)

    def _load_side_meta(self, meta: dict[str, Any]) -> None:
        """Set :attr:`errors` and :attr:`read_stats` from a side-car written by a build."""
        self.errors = {int(k): v for k, v in meta.get("errors", {}).items()}
        stats = meta.get("read_stats", {})
        self.read_stats = ImageReadStats()
        for kind, n in stats.get("conversions", {}).items():
            self.read_stats.conversions[kind] = int(n)
        self.read_stats.examples = {k: list(v) for k, v in stats.get("examples", {}).items()}

    @property
    def valid(self) -> np.ndarray:
        """Boolean ``(N,)``: rows whose crop was read (False for rows listed in :attr:`errors`)."""
        self._check_ready()
        mask = np.ones(len(self.crop_paths), dtype=bool)
        if self.errors:
            mask[np.fromiter(self.errors.keys(), dtype=np.int64)] = False
        return mask

    def rows_for(self, index: FaceIndex) -> np.ndarray:
        """Store rows of the crops of ``index`` (a subset of the index this store was built from).

        Returns:
            int64 ``(len(index),)`` positions into the store.

        Raises:
            CropCacheError: if some crop of ``index`` is not in the store (the message names the first few).
        """
        wanted_col = index.columns["crop_path"]
        if isinstance(wanted_col, StringColumn) and isinstance(self.crop_paths, StringColumn) \
                and wanted_col.vocab is self.crop_paths.vocab:
            # rows of the index this store was built from (the usual case: its splits): map codes, no strings
            pos = np.full(len(self.crop_paths.vocab), -1, dtype=np.int64)
            pos[self.crop_paths.codes] = np.arange(len(self.crop_paths))
            rows = pos[wanted_col.codes]
            if (rows >= 0).all():
                return rows
        if self._sorter is None:
            self._sorter = np.argsort(np.asarray(self.crop_paths), kind="stable")
        sorted_paths = np.asarray(self.crop_paths)[self._sorter]
        wanted = np.asarray(wanted_col)
        if len(sorted_paths) == 0:
            if len(wanted):
                raise CropCacheError(f"crop store {self.path} is empty but {len(wanted)} crops were asked for")
            return np.zeros(0, dtype=np.int64)
        pos = np.clip(np.searchsorted(sorted_paths, wanted), 0, len(sorted_paths) - 1)
        found = sorted_paths[pos] == wanted
        if not found.all():
            missing = wanted[~found][:5].tolist()
            raise CropCacheError(f"{int((~found).sum())} crops are not in the crop store {self.path}, e.g. {missing}")
        return self._sorter[pos].astype(np.int64)

    def _check_ready(self) -> None:
        if not self._ready:
            raise CropCacheError(f"crop store {self.path} is not ready: call ensure() first")


class CropCache(CropSource):
    """Packed uint8 crops of a face index, read by row without decoding.

    Args:
        index: the face index whose crops to pack (row order is kept).
        image_size: side ``S`` of the square cached crops, pixels.
        cache_dir: folder of the cache files (default ``<index.root>/cache``).
        interpolation: how crops of another size are resized (see :func:`~faceforge.data.core.image_io.resize_image`).
        num_threads: decoding threads while building (default ``min(8, os.cpu_count())``).

    Raises:
        ValueError: for ``image_size < 1`` or an unknown interpolation.
        CropCacheError: from :meth:`ensure` if there is not enough disk space (the message names the folder, the
            bytes needed and free, and ``data.crop_store=encoded``) or the files cannot be written.

    Attributes:
        path: the ``.npy`` file; ``meta_path``: its JSON side-car.
        errors: ``{row: reason}`` of crops that could not be read (their cached pixels are zero); filled by
            :meth:`ensure`.
        read_stats: conversions made while decoding (filled when this object built the cache, else loaded).
        built: True if :meth:`ensure` built the file, False if it found it.
    """

    def __init__(self, index: FaceIndex, image_size: int = 256, cache_dir: str | Path | None = None,
                 interpolation: str = "area", num_threads: int | None = None) -> None:
        super().__init__(index, image_size, cache_dir, interpolation, num_threads)
        self.key = self._compute_key()
        stem = f"crops_{self.image_size}px_{self.key}"
        self.path = self.cache_dir / f"{stem}.npy"
        self.meta_path = self.cache_dir / f"{stem}.json"
        self._mm: np.ndarray | None = None

    # ------------------------------------------------------------------ key
    def _compute_key(self) -> str:
        h = hashlib.sha256()
        h.update(f"v{CACHE_FORMAT_VERSION}|{self.image_size}|{self.interpolation}|{len(self.crop_paths)}|".encode())
        h.update("\n".join(self.crop_paths.tolist()).encode("utf-8"))
        self._file_stats = crop_file_stats(self.root, self.crop_paths)
        h.update(self._file_stats.tobytes())
        return h.hexdigest()[:16]

    # ------------------------------------------------------------------ build / load
    def is_built(self) -> bool:
        """True if a complete cache with this key exists on disk."""
        if not (self.path.is_file() and self.meta_path.is_file()):
            return False
        try:
            meta = json.loads(self.meta_path.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError):
            return False
        expected = self.path.stat().st_size >= int(np.prod(self.shape))
        return meta.get("key") == self.key and tuple(meta.get("shape", ())) == self.shape and expected


    def _build(self) -> None:
        n, s = len(self.crop_paths), self.image_size
        nbytes = n * s * s * 3
        self.cache_dir.mkdir(parents=True, exist_ok=True)
        encoded = int(self._file_stats[:, 0].clip(min=0).sum())
        check_free_space(self.cache_dir, nbytes, f"the crop cache {self.path} ({n} crops at {s}px, uint8 memmap)",
                         f"set data.crop_store=encoded (the encoded crop files packed into shards, about "
                         f"{encoded / 2**30:.2f} GiB here, decoded on read) or data.cache_crops=false (decode crops "
                         f"on the fly), or free some space")
        log.info("building crop cache %s (%d crops at %dpx, %.2f GiB)", self.path, n, s, nbytes / 2**30)
        errors: dict[int, str] = {}
        stats = ImageReadStats()
        lock = threading.Lock()
        try:
            with atomic_path(self.path, suffix=".npy.tmp") as tmp:
                mm = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.uint8, shape=self.shape)

                def load(i: int, out: np.ndarray = mm) -> None:
                    local = ImageReadStats()
                    try:
                        img = read_rgb_image(self.root / str(self.crop_paths[i]), stats=local)
                        out[i] = resize_image(img, s, self.interpolation)
                    except ImageReadError as exc:
                        with lock:
                            errors[i] = exc.reason
                        out[i] = 0
                    if local.total:
                        with lock:
                            stats.merge(local)

                chunk = 256
                with ThreadPoolExecutor(max_workers=self.num_threads) as pool:
                    for start in range(0, n, chunk):
                        list(pool.map(load, range(start, min(n, start + chunk))))
                        done = min(n, start + chunk)
                        if n >= 20 * chunk and (done // chunk) % max(1, (n // chunk) // 10) == 0:
                            log.info("crop cache: %d / %d crops", done, n)
                mm.flush()
                del load, mm  # unmap before the rename
            atomic_write_json(self.meta_path, {
                "key": self.key, "version": CACHE_FORMAT_VERSION, "shape": list(self.shape),
                "image_size": s, "interpolation": self.interpolation, "root": str(self.root),
                "errors": {str(k): v for k, v in sorted(errors.items())},
                "error_files": {str(k): str(self.crop_paths[k]) for k in sorted(errors)},
                "read_stats": stats.to_dict(),
            })
        except OSError as exc:
            raise CropCacheError(f"cannot write crop cache {self.path}: {exc}") from exc
        self.errors = errors
        self.read_stats = stats

    # ------------------------------------------------------------------ access
    def get(self, row: int) -> np.ndarray:
        """The cached crop of cache row ``row`` as a fresh, writable ``(S, S, 3)`` uint8 RGB array.

        Raises:
            CropCacheError: if the cache was not built / loaded (:meth:`ensure`) or the file is unreadable.
        """
        if self._mm is None:
            self._open()
        return np.array(self._mm[row])  # type: ignore[index]

    def _open(self) -> None:
        self._check_ready()
        try:
            mm = np.load(self.path, mmap_mode="r")
        except (OSError, ValueError) as exc:
            raise CropCacheError(f"cannot open crop cache {self.path}: {exc} (delete it to rebuild)") from exc
        if mm.shape != self.shape or mm.dtype != np.uint8:
            raise CropCacheError(f"crop cache {self.path} has shape {mm.shape} {mm.dtype}, expected {self.shape} "
                                 f"uint8 (delete it to rebuild)")
        self._mm = mm

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_mm"] = None  # each process maps the file itself
        return state

    def __repr__(self) -> str:
        return f"CropCache({self.path}, shape={self.shape}, errors={len(self.errors)})"
