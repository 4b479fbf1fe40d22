"""Detection Datasets over the face index.

:class:`FaceCropDataset` yields one face crop per item with its label and group indices. Images stay ``uint8``
until the very end of the data pipeline: the albumentations ``transform`` receives and must return an RGB
``uint8`` ``(H, W, 3)`` NumPy array, and the item's ``image`` is that array as a ``uint8`` ``(3, H, W)`` tensor.
Conversion to float and normalisation happen later, ON THE DEVICE, in the Lightning task (a quarter of the
host-to-device bytes, and no float work in the workers). So the transform must not contain ``Normalize`` or
``ToTensorV2``.
"""
from __future__ import annotations

import mmap
import os
import warnings
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from faceforge.data.core.image_io import ImageReadError, ImageReadStats, read_rgb_image, resize_image
from faceforge.data.core.sampler import split_key
from faceforge.data.detection.crop_cache import CropCache
from faceforge.data.detection.face_index import FaceIndex
from faceforge.errors import FaceforgeError
from faceforge.utils.counters import EventCounter
from faceforge.utils.seeding import AUGMENT, derive_seed, seed_transform

#: Substitution warnings per process before further ones are only counted; file names a load report lists.
MAX_CROP_WARNINGS = 5

_warnings = EventCounter()  # substitutions met in this process


class TransformOutputError(FaceforgeError, TypeError):
    """The albumentations transform returned something other than an ``(H, W, 3)`` uint8 NumPy image."""


class CropDataError(FaceforgeError, RuntimeError):
    """No crop of a dataset can be read to stand in for an unreadable one (the message names the files)."""


class CropReadWarning(UserWarning):
    """A crop file could not be read while loading (no crop cache) and a readable crop was served instead."""


def _shared_counts(n: int) -> np.ndarray:
    """int32 ``(n,)`` zeros in anonymous shared memory: a forked DataLoader worker's writes are seen by the parent
    (a pickled copy, e.g. under the ``spawn`` start method, is a private array: its counts stay in that process)."""
    if n == 0:
        return np.zeros(0, dtype=np.int32)
    return np.frombuffer(mmap.mmap(-1, 4 * n), dtype=np.int32)


def lookup_indices(values: np.ndarray, lookup: Mapping[str, int], what: str) -> np.ndarray:
    """Map a string column to int64 indices through ``lookup`` (one dict access per distinct value).

    Args:
        values: 1-D string array (e.g. the ``video_id`` column).
        lookup: value -> index.
        what: column name for the error message.

    Returns:
        int64 array of the same length.

    Raises:
        KeyError: if a value is not in ``lookup`` (the message names the first few).
    """
    if len(values) == 0:
        return np.zeros(0, dtype=np.int64)
    uniq, inverse = np.unique(values, return_inverse=True)
    missing = [str(u) for u in uniq if str(u) not in lookup]
    if missing:
        raise KeyError(f"{len(missing)} {what} values are not in the lookup, e.g. {missing[:5]}")
    mapped = np.array([lookup[str(u)] for u in uniq], dtype=np.int64)
    return mapped[inverse.reshape(-1)]


class FaceCropDataset(Dataset):
    """One face crop per item, labelled 1 = fake, 0 = real.

    Per-row data is held in NumPy arrays (no Python object per row), so forked DataLoader workers keep memory
    flat on large indexes.

    Args:
        index: the rows of this dataset (e.g. one split of a face index).
        video_lookup: ``video_id`` -> video index (for video-level metrics); must contain every video of ``index``.
        method_lookup: ``method`` -> method index; must contain every method of ``index``.
        transform: albumentations transform called as ``transform(image=img)["image"]``; it receives an RGB
            uint8 ``(H, W, 3)`` array and must return one (no ``Normalize``/``ToTensorV2``: float conversion
            and normalisation are done on the device by the Lightning task). Before each call it is seeded with
            ``derive_seed(seed, AUGMENT, epoch, index)`` (:func:`~faceforge.utils.seeding.seed_transform`), so a
            sample's augmentation depends only on the seed, the epoch and the sample, in any process.
        cache: a :class:`~faceforge.data.detection.crop_cache.CropCache` (after ``ensure()``) that holds the crops of
            ``index``; pixels are then read from it instead of decoding files.
        image_size: without a cache, crops of another size are resized to ``image_size`` x ``image_size`` (the
            same resize the cache applies, so both paths give identical pixels); None keeps the stored size (a
            batch then needs equal sizes or a resizing transform). With a cache it must be None or equal the
            cache's size.
        interpolation: resize rule without a cache (see :func:`~faceforge.data.core.image_io.resize_image`).
        seed: the run's seed (augmentation draws).

    Unreadable crops (no cache; with a cache they were found and skipped when it was built): a crop that cannot be
    decoded is replaced by the nearest readable row (in index order) of the same video, else of the same label,
    else any; the item then carries that row's pixels, label and groups (its ``index`` too), while the
    augmentation stays seeded by the requested row, so the batch is the same in every run and with any
    ``num_workers``. It is warned (the first few per process, naming the file) and counted in shared memory, so
    that :meth:`load_report` in the main process also sees what forked DataLoader workers met.

    Keys: ``dataset[i]`` or ``dataset[(epoch, i)]`` (what :class:`~faceforge.data.core.sampler.EpochSampler` yields);
    a bare index uses :attr:`epoch` (0 unless :meth:`set_epoch` was called).

    Item (``__getitem__``) -> dict:
        ``image``: uint8 ``(3, H, W)``; ``label``: int64 0-d (1 fake); ``video_idx``: int64 0-d;
        ``method_idx``: int64 0-d; ``index``: int64 0-d, the row of ``index``.

    Raises:
        KeyError: at construction if a video_id or method is not in its lookup.
        ValueError: if ``image_size`` disagrees with the cache's.
        faceforge.data.detection.crop_cache.CropCacheError: if a crop is not in ``cache``.
        CropDataError: from ``__getitem__`` when a crop file cannot be read (no cache) and no other crop can.
        TransformOutputError: from ``__getitem__`` when the transform returns anything but an (H, W, 3) uint8
            array.
    """

    def __init__(self, index: FaceIndex, video_lookup: Mapping[str, int], method_lookup: Mapping[str, int],
                 transform: Callable[..., Any] | None = None, cache: CropCache | None = None,
                 image_size: int | None = None, interpolation: str = "area", seed: int = 0) -> None:
        if cache is not None and image_size is not None and int(image_size) != cache.image_size:
            raise ValueError(f"image_size={image_size} but the crop cache holds {cache.image_size}px crops")
        self.seed = int(seed)
        self.epoch = 0
        self.root = str(index.root)
        self.crop_paths = index.columns["crop_path"]  # compact StringColumn (no NumPy unicode copy per dataset)
        self.labels = np.asarray(index.columns["label"], dtype=np.int64)
        self.video_idx = lookup_indices(np.asarray(index.columns["video_id"]), video_lookup, "video_id")
        self.method_idx = lookup_indices(np.asarray(index.columns["method"]), method_lookup, "method")
        self.transform = transform
        self.cache = cache
        self.cache_rows = cache.rows_for(index) if cache is not None else None
        self.image_size = int(image_size) if image_size is not None else None
        self.interpolation = interpolation
        self.read_stats = ImageReadStats()
        self.unreadable = _shared_counts(len(self.labels))  # per row: times found unreadable
        self.substituted = _shared_counts(len(self.labels))  # per row: times it stood in for an unreadable row

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)  # the shared counters pickle as private copies (spawn, deepcopy)
        state["unreadable"] = np.array(self.unreadable)
        state["substituted"] = np.array(self.substituted)
        return state

    def __len__(self) -> int:
        return len(self.labels)

    def set_epoch(self, epoch: int) -> None:
        """The epoch of bare-index keys (keys from :class:`~faceforge.data.core.sampler.EpochSampler` carry their
        own)."""
        self.epoch = int(epoch)

    def load_image(self, i: int) -> np.ndarray:
        """Row ``i``'s crop as an RGB uint8 ``(H, W, 3)`` array, before the transform (from the cache if any).

        Raises:
            faceforge.data.core.image_io.ImageReadError: the crop file cannot be read (no cache).
        """
        if self.cache is not None:
            return self.cache.get(int(self.cache_rows[i]))  # type: ignore[index]
        img = read_rgb_image(os.path.join(self.root, str(self.crop_paths[i])), stats=self.read_stats)
        if self.image_size is not None:
            img = resize_image(img, self.image_size, self.interpolation)
        return img

    def _replacement_order(self, i: int) -> np.ndarray:
        """Rows to try in place of row ``i``: same video, then same label, then the rest; nearest first."""
        rows = np.arange(len(self))
        dist = np.abs(rows - i)
        tier = np.where(self.video_idx == self.video_idx[i], 0, np.where(self.labels == self.labels[i], 1, 2))
        order = np.lexsort((rows, dist, tier))
        return order[order != i]

    def load_readable(self, i: int) -> tuple[np.ndarray, int]:
        """Row ``i``'s crop, or when its file cannot be read the crop of the replacement row (see the class notes).

        Returns:
            ``(image, row)``: the RGB uint8 ``(H, W, 3)`` array and the row it comes from.

        Raises:
            CropDataError: no crop of the dataset can be read.
        """
        try:
            return self.load_image(i), i
        except ImageReadError as exc:
            self.unreadable[i] += 1
            first = exc
        for j in self._replacement_order(i).tolist():
            if self.unreadable[j]:
                continue
            try:
                img = self.load_image(j)
            except ImageReadError:
                self.unreadable[j] += 1
                continue
            self.substituted[j] += 1
            self._warn(first, i, j)
            return img, j
        raise CropDataError(f"{first}; and no other of the {len(self)} crops under {self.root} can be read to "
                            f"replace it: re-extract the faces")

    def _warn(self, exc: ImageReadError, i: int, j: int) -> None:
        n = _warnings.next()
        if n <= MAX_CROP_WARNINGS:
            more = " (further ones in this process are counted, not warned)" if n == MAX_CROP_WARNINGS else ""
            same = "video" if self.video_idx[j] == self.video_idx[i] else "label" if self.labels[j] == self.labels[i] \
                else "dataset"
            warnings.warn(f"{exc}; serving {self.crop_paths[j]} (same {same}) instead{more}", CropReadWarning,
                          stacklevel=3)

    def load_report(self) -> dict[str, Any]:
        """What loading met so far (no cache): ``unreadable_crops`` (distinct rows found unreadable),
        ``substituted_items`` (items served from a replacement row) and up to ``MAX_CROP_WARNINGS`` example files.
        Counts include forked DataLoader workers' (shared memory)."""
        bad = np.flatnonzero(self.unreadable)
        return {"unreadable_crops": int(len(bad)), "substituted_items": int(self.substituted.sum()),
                "unreadable_examples": [str(self.crop_paths[r]) for r in bad[:MAX_CROP_WARNINGS].tolist()]}

    def __getitem__(self, key: int | tuple[int, int]) -> dict[str, torch.Tensor]:
        epoch, i = split_key(key, self.epoch)
        if not 0 <= i < len(self):
            raise IndexError(f"index {i} out of range for a dataset of {len(self)} faces")
        img, row = self.load_readable(i)
        if self.transform is not None:
            seed_transform(self.transform, derive_seed(self.seed, AUGMENT, epoch, i))
            img = self.transform(image=img)["image"]
            if not (isinstance(img, np.ndarray) and img.dtype == np.uint8 and img.ndim == 3 and img.shape[2] == 3):
                desc = f"{type(img).__name__} {getattr(img, 'shape', '')} {getattr(img, 'dtype', '')}"
                raise TransformOutputError(
                    f"the transform must return an (H, W, 3) uint8 numpy image, got {desc}; float conversion and "
                    f"normalisation happen on the device in the task, so leave Normalize/ToTensorV2 out of it")
        image = torch.from_numpy(np.ascontiguousarray(img.transpose(2, 0, 1)))
        return {
            "image": image,
            "label": torch.tensor(self.labels[row], dtype=torch.int64),
            "video_idx": torch.tensor(self.video_idx[row], dtype=torch.int64),
            "method_idx": torch.tensor(self.method_idx[row], dtype=torch.int64),
            "index": torch.tensor(row, dtype=torch.int64),
        }

    @property
    def num_fake(self) -> int:
        """Number of fake (label 1) faces."""
        return int(self.labels.sum())

    @property
    def num_real(self) -> int:
        """Number of real (label 0) faces."""
        return int(len(self.labels) - self.labels.sum())
