"""HDF5 volume stores: VRN training volumes as run maps (:mod:`faceforge.data.reconstruction.codec`), with crops.

Each volume is stored as its two run maps ``start`` / ``stop``
(:class:`~faceforge.data.reconstruction.codec.EncodedVolume`: ``volume[k, v, u] = start[v, u] <= k < stop[v, u]``);
how they are encoded, decoded and augmented is :mod:`faceforge.data.reconstruction.codec`.

File layout (one HDF5 file, ``format = "faceforge.volume_store"``, ``format_version = 1``; N samples, chunked
along the sample axis, one chunk per sample for the maps)::

    /sample_id     (N,) str                 unique sample ids
    /start, /stop  (N, H, W) uint8|uint16   the runs, gzip (or lzf) compressed, chunks (1, H, W)
    /image         (N,) vlen uint8          the 192x192 RGB crop, JPEG (default) or PNG bytes;
                   or (N, H, W, 3) uint8    with image_codec "raw" (compressed like the maps)
    /frame         (N, 5) float64           VolumeFrame (scale, tx, ty, z_offset, depth_scale) per sample
    /landmarks     (N, 68, 2) float32       2D landmarks in crop pixels (NaN where unknown)
    /landmarks_3d  (N, 68, 3) float32       model landmarks in volume coordinates (u, v, k) (NaN where unknown)
    /meta          (N,) str                 per-sample JSON (source image and label files, pose, ...)
    /volume_bytes  (N,) int64               stored (compressed) bytes of start + stop for each sample
    /image_bytes   (N,) int64               stored bytes of the image
    attrs: format, format_version, size, depth, image_codec, compression, num_landmarks

:class:`VolumeStoreWriter` writes a temporary file beside the destination and renames it on success (atomic).
:class:`VolumeStore` reads one or several such files (shards) as one sequence; it opens files lazily in each
process, so it can be pickled into DataLoader workers.
"""
from __future__ import annotations

import json
import os
from collections.abc import Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import cv2
import h5py
import numpy as np

from faceforge.data.reconstruction.codec import EncodedVolume, VolumeEncodingError, decode_volume, run_dtype
from faceforge.errors import FaceforgeError
from faceforge.geometry.volume_frame import VOLUME_DEPTH, VOLUME_SIZE, VolumeFrame
from faceforge.utils.atomic import atomic_path

if TYPE_CHECKING:  # torch is imported lazily: generation workers never need it
    import torch

__all__ = [
    "FORMAT_NAME",
    "FORMAT_VERSION",
    "StoreSummary",
    "VolumeSample",
    "VolumeStore",
    "VolumeStoreError",
    "VolumeStoreWriter",
    "encode_image",
]

FORMAT_NAME = "faceforge.volume_store"
FORMAT_VERSION = 1
FRAME_COLUMNS = ("scale", "tx", "ty", "z_offset", "depth_scale")
IMAGE_CODECS = ("jpeg", "png", "raw")
NUM_LANDMARKS = 68


class VolumeStoreError(FaceforgeError, OSError):
    """A volume store file is missing, truncated or corrupt, lacks a dataset, or has no such sample.

    The message names the file and the dataset or sample key.
    """


# ---------------------------------------------------------------------------------------------------------------
# Samples and the writer
# ---------------------------------------------------------------------------------------------------------------

@dataclass
class VolumeSample:
    """One stored training sample.

    Attributes:
        sample_id: unique id (e.g. ``"IBUG/IBUG_image_008_1_0"``).
        encoded: the volume's runs.
        frame: the source-image -> volume transform (:class:`VolumeFrame`).
        image: (H, W, 3) uint8 RGB crop aligned with the volume, or None.
        landmarks: (68, 2) float32 2D landmarks in crop pixels, or None.
        landmarks_3d: (68, 3) float32 model landmarks in volume coordinates (u, v, k), or None.
        meta: JSON-able per-sample metadata (source files, pose, ...).
    """

    sample_id: str
    encoded: EncodedVolume
    frame: VolumeFrame
    image: np.ndarray | None = None
    landmarks: np.ndarray | None = None
    landmarks_3d: np.ndarray | None = None
    meta: dict[str, Any] = field(default_factory=dict)

    def volume(self, dtype: torch.dtype | None = None) -> torch.Tensor:
        """The dense (D, H, W) target (:func:`decode_volume`)."""
        return decode_volume(self.encoded, dtype=dtype)


@dataclass(frozen=True)
class StoreSummary:
    """What a :class:`VolumeStoreWriter` wrote.

    Attributes:
        path: the final file.
        num_samples: N.
        volume_bytes: (N,) int64 stored bytes of each sample's start + stop chunks (after compression).
        image_bytes: (N,) int64 stored bytes of each sample's image.
        file_bytes: size of the whole file (all datasets, metadata and HDF5 overhead).
    """

    path: Path
    num_samples: int
    volume_bytes: np.ndarray
    image_bytes: np.ndarray
    file_bytes: int

    @property
    def mean_volume_bytes(self) -> float:
        """Mean stored volume bytes per sample (NaN for an empty store)."""
        return float(self.volume_bytes.mean()) if self.num_samples else float("nan")


def encode_image(image: np.ndarray, codec: str = "jpeg", jpeg_quality: int = 95) -> bytes:
    """Encode an (H, W, 3) uint8 RGB image as JPEG or PNG bytes (OpenCV).

    Raises:
        ValueError: for another codec or a malformed image.
    """
    img = np.asarray(image)
    if img.ndim != 3 or img.shape[2] != 3 or img.dtype != np.uint8:
        raise ValueError(f"image must be (H, W, 3) uint8, got {img.dtype} {img.shape}")
    bgr = np.ascontiguousarray(img[:, :, ::-1])
    if codec == "jpeg":
        ok, buf = cv2.imencode(".jpg", bgr, [cv2.IMWRITE_JPEG_QUALITY, int(jpeg_quality)])
    elif codec == "png":
        ok, buf = cv2.imencode(".png", bgr, [cv2.IMWRITE_PNG_COMPRESSION, 6])
    else:
        raise ValueError(f"unknown image codec {codec!r}; choose 'jpeg' or 'png'")
    if not ok:
        raise ValueError(f"OpenCV could not encode the image as {codec}")
    return buf.tobytes()


class VolumeStoreWriter(AbstractContextManager):
    """Write samples into a new volume store file, atomically.

    Samples go into a temporary file beside ``path``; :meth:`close` (or leaving the ``with`` block normally)
    records the stored bytes per sample and renames it onto ``path``. An exception inside the ``with`` block, or
    :meth:`abort`, deletes the temporary file and leaves ``path`` untouched.

    Args:
        path: destination ``.h5`` file (its folder is created).
        size: crop side H = W (192).
        depth: D (200).
        compression: ``"gzip"`` (default), ``"lzf"`` or None for the maps (and raw images).
        compression_level: gzip level 0-9 (default 4); ignored otherwise.
        image_codec: ``"jpeg"`` (default; quality ``jpeg_quality``), ``"png"`` (lossless) or ``"raw"`` (uint8
            array, compressed like the maps).
        jpeg_quality: JPEG quality (95).

    Raises:
        ValueError: for an unknown codec or compression.
        VolumeStoreError: if the temporary file cannot be created.
    """

    def __init__(self, path: str | os.PathLike, size: int = VOLUME_SIZE, depth: int = VOLUME_DEPTH,
                 compression: str | None = "gzip", compression_level: int = 4, image_codec: str = "jpeg",
                 jpeg_quality: int = 95) -> None:
        if image_codec not in IMAGE_CODECS:
            raise ValueError(f"unknown image codec {image_codec!r}; choose one of {IMAGE_CODECS}")
        if compression not in ("gzip", "lzf", None):
            raise ValueError(f"unknown compression {compression!r}; choose 'gzip', 'lzf' or None")
        self.path = Path(path)
        self.size, self.depth = int(size), int(depth)
        self.image_codec, self.jpeg_quality = image_codec, int(jpeg_quality)
        self._comp: dict[str, Any] = {}
        if compression == "gzip":
            self._comp = {"compression": "gzip", "compression_opts": int(compression_level)}
        elif compression == "lzf":
            self._comp = {"compression": "lzf"}
        self._ctx = atomic_path(self.path, suffix=".h5.tmp")
        tmp = self._ctx.__enter__()
        try:
            self._f = h5py.File(tmp, "w", libver=("v110", "latest"), track_order=False)
        except OSError as exc:
            self._ctx.__exit__(type(exc), exc, exc.__traceback__)
            raise VolumeStoreError(f"{self.path}: cannot create the volume store ({exc})") from exc
        self._n = 0
        self._image_sizes: list[int] = []
        self._closed = False
        self._ids: set[str] = set()
        self._create_datasets(compression)

    def _create_datasets(self, compression: str | None) -> None:
        f, s, dt = self._f, self.size, run_dtype(self.depth)
        f.attrs.update({"format": FORMAT_NAME, "format_version": FORMAT_VERSION, "size": s, "depth": self.depth,
                        "image_codec": self.image_codec, "compression": compression or "none",
                        "num_landmarks": NUM_LANDMARKS, "frame_columns": ",".join(FRAME_COLUMNS)})
        kw = {"track_times": False}
        f.create_dataset("sample_id", shape=(0,), maxshape=(None,), dtype=h5py.string_dtype(), chunks=(256,), **kw)
        for name in ("start", "stop"):
            f.create_dataset(name, shape=(0, s, s), maxshape=(None, s, s), dtype=dt, chunks=(1, s, s),
                             **self._comp, **kw)
        if self.image_codec == "raw":
            f.create_dataset("image", shape=(0, s, s, 3), maxshape=(None, s, s, 3), dtype=np.uint8,
                             chunks=(1, s, s, 3), **self._comp, **kw)
        else:
            f.create_dataset("image", shape=(0,), maxshape=(None,), dtype=h5py.vlen_dtype(np.uint8), chunks=(64,),
                             **kw)
        small = {"compression": "gzip", "compression_opts": 4, **kw}
        f.create_dataset("frame", shape=(0, len(FRAME_COLUMNS)), maxshape=(None, len(FRAME_COLUMNS)),
                         dtype=np.float64, chunks=(256, len(FRAME_COLUMNS)), **small)
        f["frame"].attrs["columns"] = ",".join(FRAME_COLUMNS)
        f.create_dataset("landmarks", shape=(0, NUM_LANDMARKS, 2), maxshape=(None, NUM_LANDMARKS, 2),
                         dtype=np.float32, chunks=(64, NUM_LANDMARKS, 2), **small)
        f.create_dataset("landmarks_3d", shape=(0, NUM_LANDMARKS, 3), maxshape=(None, NUM_LANDMARKS, 3),
                         dtype=np.float32, chunks=(64, NUM_LANDMARKS, 3), **small)
        f.create_dataset("meta", shape=(0,), maxshape=(None,), dtype=h5py.string_dtype(), chunks=(256,), **kw)

    @property
    def num_samples(self) -> int:
        """Samples added so far."""
        return self._n

    def add(self, sample: VolumeSample, image_bytes: bytes | None = None) -> int:
        """Append one sample.

        Args:
            sample: the sample; ``sample.image`` (H, W, 3) uint8 is encoded with the writer's codec unless
                ``image_bytes`` (already encoded with that codec, e.g. in a worker process) is given.
            image_bytes: pre-encoded image (JPEG / PNG codecs only).

        Returns:
            The row index of the sample.

        Raises:
            ValueError: on a duplicate sample id, maps of the wrong shape or depth, landmarks of the wrong shape,
                or a missing image.
        """
        if self._closed:
            raise ValueError(f"{self.path}: writer is closed")
        sid = str(sample.sample_id)
        if sid in self._ids:
            raise ValueError(f"{self.path}: duplicate sample id {sid!r}")
        enc = sample.encoded
        if enc.shape != (self.depth, self.size, self.size):
            raise ValueError(f"{sid}: volume shape {enc.shape} != store shape {(self.depth, self.size, self.size)}")
        f, i = self._f, self._n
        if self.image_codec == "raw":
            if sample.image is None or np.asarray(sample.image).shape != (self.size, self.size, 3):
                raise ValueError(f"{sid}: a ({self.size}, {self.size}, 3) uint8 image is required")
            img_payload: Any = np.asarray(sample.image, dtype=np.uint8)
        else:
            if image_bytes is None:
                if sample.image is None:
                    raise ValueError(f"{sid}: an image (or image_bytes) is required")
                image_bytes = encode_image(sample.image, self.image_codec, self.jpeg_quality)
            img_payload = np.frombuffer(image_bytes, dtype=np.uint8)
            self._image_sizes.append(len(image_bytes))
        lmk2 = _points_or_nan(sample.landmarks, 2, sid, "landmarks")
        lmk3 = _points_or_nan(sample.landmarks_3d, 3, sid, "landmarks_3d")
        fr = sample.frame
        if fr.size != self.size or fr.depth != self.depth:
            raise ValueError(f"{sid}: frame size/depth {fr.size}/{fr.depth} != store {self.size}/{self.depth}")
        for name in ("sample_id", "start", "stop", "image", "frame", "landmarks", "landmarks_3d", "meta"):
            f[name].resize(i + 1, axis=0)
        f["sample_id"][i] = sid
        f["start"][i] = enc.start
        f["stop"][i] = enc.stop
        f["image"][i] = img_payload
        f["frame"][i] = [getattr(fr, c) for c in FRAME_COLUMNS]
        f["landmarks"][i] = lmk2
        f["landmarks_3d"][i] = lmk3
        f["meta"][i] = json.dumps(sample.meta, sort_keys=True, default=_json_default, allow_nan=False)
        self._ids.add(sid)
        self._n += 1
        return i

    def _stored_bytes(self, names: Sequence[str]) -> np.ndarray:
        out = np.zeros(self._n, dtype=np.int64)
        for name in names:
            dset = self._f[name]
            for j in range(dset.id.get_num_chunks()):
                info = dset.id.get_chunk_info(j)
                row = info.chunk_offset[0]
                if 0 <= row < self._n:
                    out[row] += info.size
        return out

    def close(self) -> StoreSummary:
        """Finish the file, rename it onto ``path`` and return what was written.

        Raises:
            VolumeStoreError: if HDF5 fails to finish the file (the temporary file is then removed).
        """
        if self._closed:
            raise ValueError(f"{self.path}: writer is already closed")
        try:
            self._f.flush()
            vol_bytes = self._stored_bytes(("start", "stop"))
            if self.image_codec == "raw":
                img_bytes = self._stored_bytes(("image",))
            else:
                img_bytes = np.asarray(self._image_sizes, dtype=np.int64)
            kw = {"track_times": False}
            self._f.create_dataset("volume_bytes", data=vol_bytes, **kw)
            self._f.create_dataset("image_bytes", data=img_bytes, **kw)
            self._f.attrs["num_samples"] = self._n
            self._f.close()
        except Exception as exc:
            self.abort(exc)
            raise VolumeStoreError(f"{self.path}: failed to finish the volume store ({exc})") from exc
        self._closed = True
        self._ctx.__exit__(None, None, None)
        return StoreSummary(path=self.path, num_samples=self._n, volume_bytes=vol_bytes, image_bytes=img_bytes,
                            file_bytes=self.path.stat().st_size)

    def abort(self, exc: BaseException | None = None) -> None:
        """Discard the temporary file; ``path`` is left as it was."""
        if self._closed:
            return
        self._closed = True
        try:
            self._f.close()
        except Exception:  # noqa: BLE001 - the file is being thrown away
            pass
        err = exc if exc is not None else RuntimeError("aborted")
        self._ctx.__exit__(type(err), err, err.__traceback__)

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc is not None:
            self.abort(exc)
        elif not self._closed:
            self.close()


def _points_or_nan(points: np.ndarray | None, dims: int, sid: str, name: str) -> np.ndarray:
    if points is None:
        return np.full((NUM_LANDMARKS, dims), np.nan, dtype=np.float32)
    p = np.asarray(points, dtype=np.float32)
    if p.shape != (NUM_LANDMARKS, dims):
        raise ValueError(f"{sid}: {name} must be ({NUM_LANDMARKS}, {dims}), got {p.shape}")
    return p


def _json_default(o: Any) -> Any:
    if isinstance(o, Path):
        return str(o)
    if hasattr(o, "tolist"):
        return o.tolist()
    raise TypeError(f"cannot encode {type(o).__name__} as JSON")


# ---------------------------------------------------------------------------------------------------------------
# Reader
# ---------------------------------------------------------------------------------------------------------------

_REQUIRED = ("sample_id", "start", "stop", "image", "frame", "landmarks", "landmarks_3d", "meta")


class VolumeStore:
    """Read one or several volume store files (shards) as one indexed sequence of samples.

    At construction each file is opened once to read its sample ids and check its format (then closed); reads
    open files lazily and keep them open per process (a DataLoader worker that receives a pickled store opens its
    own handles; handles inherited across a fork are never reused). Samples are addressed by position (0 ..
    len - 1, over the files in the order given) or by sample id.

    Args:
        paths: one ``.h5`` file or a sequence of them.

    Raises:
        VolumeStoreError: naming the file when it is missing, truncated or corrupt, is not a faceforge volume store,
            lacks a dataset, disagrees with the other files in size/depth, or repeats a sample id.
    """

    def __init__(self, paths: str | os.PathLike | Sequence[str | os.PathLike]) -> None:
        if isinstance(paths, (str, os.PathLike)):
            paths = [paths]
        self.paths = [Path(p) for p in paths]
        if not self.paths:
            raise VolumeStoreError("no volume store files given")
        self._ids: list[str] = []
        self._file_of: list[int] = []
        self._row_of: list[int] = []
        self._index: dict[str, int] = {}
        self.size = self.depth = None
        self.image_codec: list[str] = []
        for j, path in enumerate(self.paths):
            with self._open(path) as f:
                self._check_format(f, path)
                ids = [s.decode() if isinstance(s, bytes) else str(s) for s in self._read(f, path, "sample_id")[()]]
                self.image_codec.append(str(f.attrs.get("image_codec", "jpeg")))
            for row, sid in enumerate(ids):
                if sid in self._index:
                    other = self.paths[self._file_of[self._index[sid]]]
                    raise VolumeStoreError(f"{path}: sample id {sid!r} also in {other}")
                self._index[sid] = len(self._ids)
                self._ids.append(sid)
                self._file_of.append(j)
                self._row_of.append(row)
        self._handles: dict[int, h5py.File] = {}
        self._pid = os.getpid()

    # -- file access ----------------------------------------------------------------------------------------
    @staticmethod
    def _open(path: Path) -> h5py.File:
        if not path.is_file():
            raise VolumeStoreError(f"{path}: volume store file not found")
        try:
            return h5py.File(path, "r")
        except OSError as exc:
            raise VolumeStoreError(f"{path}: cannot open the volume store (truncated or corrupt file?): {exc}") \
                from exc

    def _check_format(self, f: h5py.File, path: Path) -> None:
        if f.attrs.get("format") != FORMAT_NAME:
            raise VolumeStoreError(f"{path}: not a faceforge volume store (attribute 'format' is "
                                   f"{f.attrs.get('format')!r})")
        version = int(f.attrs.get("format_version", -1))
        if version != FORMAT_VERSION:
            raise VolumeStoreError(f"{path}: format_version {version} is not supported (expected {FORMAT_VERSION})")
        for name in _REQUIRED:
            if name not in f:
                raise VolumeStoreError(f"{path} [{name}]: missing dataset")
        size, depth = int(f.attrs["size"]), int(f.attrs["depth"])
        if self.size is None:
            self.size, self.depth = size, depth
        elif (size, depth) != (self.size, self.depth):
            raise VolumeStoreError(f"{path}: size/depth {size}/{depth} differ from {self.paths[0]} "
                                   f"({self.size}/{self.depth})")

    @staticmethod
    def _read(f: h5py.File, path: Path, name: str, row: int | None = None) -> Any:
        try:
            dset = f[name]
        except KeyError as exc:
            raise VolumeStoreError(f"{path} [{name}]: missing dataset") from exc
        if row is None:
            return dset
        try:
            return dset[row]
        except (OSError, ValueError, RuntimeError) as exc:
            raise VolumeStoreError(f"{path} [{name}][{row}]: cannot read (truncated or corrupt file?): {exc}") \
                from exc

    def _file(self, j: int) -> h5py.File:
        if self._pid != os.getpid():  # forked: never reuse the parent's HDF5 handles
            self._handles = {}
            self._pid = os.getpid()
        f = self._handles.get(j)
        if f is None:
            f = self._open(self.paths[j])
            self._handles[j] = f
        return f

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_handles"] = {}
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._pid = os.getpid()

    def close(self) -> None:
        """Close the open file handles of this process (reads reopen them)."""
        if self._pid == os.getpid():
            for f in self._handles.values():
                try:
                    f.close()
                except Exception:  # noqa: BLE001
                    pass
        self._handles = {}

    def __enter__(self) -> VolumeStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- indexing -------------------------------------------------------------------------------------------
    def __len__(self) -> int:
        return len(self._ids)

    @property
    def sample_ids(self) -> list[str]:
        """Sample ids in store order."""
        return list(self._ids)

    def __contains__(self, sample_id: object) -> bool:
        return sample_id in self._index

    def index_of(self, sample_id: str) -> int:
        """Position of a sample id.

        Raises:
            VolumeStoreError: if no file holds it.
        """
        try:
            return self._index[sample_id]
        except KeyError:
            names = ", ".join(str(p) for p in self.paths[:3]) + (" ..." if len(self.paths) > 3 else "")
            raise VolumeStoreError(f"{names}: no sample {sample_id!r}") from None

    def _resolve(self, key: int | str) -> int:
        if isinstance(key, str):
            return self.index_of(key)
        i = int(key)
        if i < 0:
            i += len(self._ids)
        if not 0 <= i < len(self._ids):
            raise VolumeStoreError(f"{self.paths[0]}: sample index {key} out of range [0, {len(self._ids)})")
        return i

    def _locate(self, key: int | str) -> tuple[h5py.File, Path, int]:
        i = self._resolve(key)
        j = self._file_of[i]
        return self._file(j), self.paths[j], self._row_of[i]

    # -- reads ----------------------------------------------------------------------------------------------
    def read_runs(self, key: int | str) -> tuple[np.ndarray, np.ndarray]:
        """``(start, stop)`` (H, W) uint8 maps of a sample (what a DataLoader should ship; decode on device)."""
        f, path, row = self._locate(key)
        return self._read(f, path, "start", row), self._read(f, path, "stop", row)

    def read_encoded(self, key: int | str) -> EncodedVolume:
        """The sample's runs as an :class:`EncodedVolume`.

        Raises:
            VolumeStoreError: naming the file and dataset on a read failure or inconsistent maps.
        """
        start, stop = self.read_runs(key)
        try:
            return EncodedVolume(start=start, stop=stop, depth=int(self.depth))
        except VolumeEncodingError as exc:
            _, path, row = self._locate(key)
            raise VolumeStoreError(f"{path} [stop][{row}]: corrupt runs ({exc})") from exc

    def read_volume(self, key: int | str, dtype: torch.dtype | None = None) -> torch.Tensor:
        """The dense (D, H, W) target (default float32), see :func:`decode_volume`."""
        return decode_volume(self.read_encoded(key), dtype=dtype)

    def read_image(self, key: int | str) -> np.ndarray:
        """The (H, W, 3) uint8 RGB crop.

        Raises:
            VolumeStoreError: if the stored bytes do not decode.
        """
        f, path, row = self._locate(key)
        data = self._read(f, path, "image", row)
        if self.image_codec[self._file_of[self._resolve(key)]] == "raw":
            return np.asarray(data, dtype=np.uint8)
        bgr = cv2.imdecode(np.asarray(data, dtype=np.uint8), cv2.IMREAD_COLOR)
        if bgr is None:
            raise VolumeStoreError(f"{path} [image][{row}]: image bytes do not decode")
        return np.ascontiguousarray(bgr[:, :, ::-1])

    def read_frame(self, key: int | str) -> VolumeFrame:
        """The sample's :class:`VolumeFrame`."""
        f, path, row = self._locate(key)
        vals = self._read(f, path, "frame", row)
        return VolumeFrame(**{c: float(v) for c, v in zip(FRAME_COLUMNS, vals, strict=True)}, size=int(self.size),
                           depth=int(self.depth))

    def read_landmarks(self, key: int | str) -> np.ndarray | None:
        """(68, 2) float32 landmarks in crop pixels, or None where unknown."""
        f, path, row = self._locate(key)
        p = np.asarray(self._read(f, path, "landmarks", row))
        return None if np.all(np.isnan(p)) else p

    def read_landmarks_3d(self, key: int | str) -> np.ndarray | None:
        """(68, 3) float32 model landmarks in volume coordinates (u, v, k), or None where unknown."""
        f, path, row = self._locate(key)
        p = np.asarray(self._read(f, path, "landmarks_3d", row))
        return None if np.all(np.isnan(p)) else p

    def read_meta(self, key: int | str) -> dict[str, Any]:
        """The per-sample JSON metadata."""
        f, path, row = self._locate(key)
        raw = self._read(f, path, "meta", row)
        try:
            return json.loads(raw.decode() if isinstance(raw, bytes) else raw)
        except (ValueError, UnicodeDecodeError) as exc:
            raise VolumeStoreError(f"{path} [meta][{row}]: not valid JSON ({exc})") from exc

    def stored_bytes(self, key: int | str) -> dict[str, int]:
        """``{"volume": bytes of start + stop chunks, "image": bytes of the image}`` as stored."""
        f, path, row = self._locate(key)
        return {"volume": int(self._read(f, path, "volume_bytes", row)),
                "image": int(self._read(f, path, "image_bytes", row))}

    def __getitem__(self, key: int | str) -> VolumeSample:
        """Everything stored for one sample (the volume still encoded)."""
        sid = self._ids[self._resolve(key)]
        return VolumeSample(sample_id=sid, encoded=self.read_encoded(key), frame=self.read_frame(key),
                            image=self.read_image(key), landmarks=self.read_landmarks(key),
                            landmarks_3d=self.read_landmarks_3d(key), meta=self.read_meta(key))
