"""Clips of face crops for video-level detectors (ResNeXt-LSTM): ``T`` faces of one video per item.

:class:`FaceClipDataset` serves clips over the same :class:`~faceforge.data.detection.face_index.FaceIndex` and
:class:`~faceforge.data.detection.crop_cache.CropCache` as the frame-level
:class:`~faceforge.data.detection.frames.FaceCropDataset`
(the :class:`~faceforge.data.detection.datamodule.FaceDataModule` switches to it when ``clip_length`` is set).

What a clip is made of (documented behaviour, checked by ``tests/test_clips.py``):

* **Frames** are the index rows of a video with ``face_rank == 0`` (the most confident face of each extracted
  frame; other faces of a frame are not used and are counted), in ``frame_index`` order. Frames in which face
  extraction found no face have no row, so a clip steps over them; a video without any face never enters the
  index (face extraction counts it in its report).
* **Sampling** among a video's ``n`` frames, ``T = clip_length``, clip ``k`` of ``K = clips_per_video``:

  - ``"evenly"``: positions ``floor((j + u) * n / T)``, ``j = 0 .. T-1``: one frame in each of ``T`` equal segments
    at the same relative offset ``u`` in [0, 1), so the spacing stays regular (what a recurrent model needs).
  - ``"contiguous"``: ``T`` consecutive frames from ``start = min(n - T, floor(u * (n - T + 1)))``.

  Training (``train=True``) draws ``u`` uniformly for every item from a generator seeded with ``(seed, epoch,
  item)`` (:func:`~faceforge.utils.seeding.derive_seed`: the same clips in any DataLoader worker and after a
  resume, new clips every epoch; the epoch comes with the key from
  :class:`~faceforge.data.core.sampler.EpochSampler`, or from :meth:`FaceClipDataset.set_epoch`); evaluation uses
  ``u = (k + 0.5) / K``: deterministic, segment centres / a centred run for ``K = 1``, spread over the video
  for ``K > 1``. "Consecutive" means consecutive *extracted* frames: extraction samples ``num_frames`` frames per
  video (evenly by default), so extract with ``sampling=contiguous`` for clips of consecutive video frames.
* **Short videos** (``n < T``): all ``n`` frames, then the last one repeated to length ``T``; the item's ``lengths``
  is ``n`` so that the model ignores the padding (:class:`~faceforge.models.resnext_lstm.ResNeXtLSTM` masks it).
  Counted in :attr:`FaceClipDataset.report` (``short_videos``). All ``K`` clips of a short video are the same.
* **Unreadable crops**: with a cache, every crop was decoded once when the cache was built, so unreadable rows are
  known up front: a clip position that falls on one gets the nearest readable frame of the same video (earlier
  one on a tie), counted in ``report`` (``unreadable_frames``, ``videos_with_unreadable_frames``); a video whose
  crops are ALL unreadable is left out and counted (``videos_all_unreadable``, with examples). Without a cache the
  same substitution happens when a crop fails to decode in ``__getitem__`` (counted per process in
  :attr:`FaceClipDataset.load_stats`, with a throttled :class:`ClipFrameWarning`); a video found to have no
  readable crop at all then raises :class:`ClipDataError` naming the video and the files (never a crash inside a
  collate function).

Memory stays flat on long datasets: the per-video frame lists are one CSR structure of NumPy arrays (frame rows
sorted by video then frame, plus ``V + 1`` offsets), with no Python object per video or per frame, so forked
DataLoader workers share the pages instead of copying them (reference counts are never touched).

Items (``__getitem__``) are dicts: ``image`` uint8 ``(T, 3, H, W)``; ``lengths`` int64 0-d (valid frames, 1..T);
``label`` int64 0-d (1 = fake); ``video_idx``, ``method_idx`` int64 0-d; ``index`` int64 0-d (the item number:
video ``index // clips_per_video`` of the dataset, clip ``index % clips_per_video``); ``frame_index`` int64
``(T,)`` (the source-video frame served at each position, after substitution; padding repeats the last). The
default collate stacks them (all clips have the same ``T``, ``H``, ``W``). As for frames, images stay uint8: the
task converts on the device.
"""
from __future__ import annotations

import os
import warnings
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from faceforge.data.core.image_io import ImageReadError, ImageReadStats, read_rgb_image, resize_image
from faceforge.data.core.sampler import split_key
from faceforge.data.detection.crop_cache import CropCache
from faceforge.data.detection.face_index import FaceIndex
from faceforge.data.detection.frames import TransformOutputError, lookup_indices
from faceforge.errors import FaceforgeError
from faceforge.utils.counters import EventCounter
from faceforge.utils.seeding import AUGMENT, CLIP, derive_seed, item_rng, seed_transform

__all__ = [
    "CLIP_SAMPLINGS",
    "ClipDataError",
    "ClipFrameWarning",
    "ClipLoadStats",
    "FaceClipDataset",
    "clip_positions",
]

CLIP_SAMPLINGS = ("evenly", "contiguous")
#: How many file names / video ids reports and warnings list.
MAX_EXAMPLES = 5
#: Substitution warnings per process before further ones are only counted.
MAX_WARNINGS = 5

_warnings = EventCounter()  # substitutions met in this process


class ClipDataError(FaceforgeError, RuntimeError):
    """A clip cannot be served: bad clip settings, or (without a crop cache) a video none of whose crops can be
    read. The message names the video and the files."""


class ClipFrameWarning(UserWarning):
    """A crop of a clip could not be read and was replaced by the nearest readable frame of its video."""


@dataclass
class ClipLoadStats:
    """What ``__getitem__`` had to repair in this process (DataLoader workers keep their own counts).

    Attributes:
        substituted_frames: clip positions whose crop could not be read and got a neighbour's.
        unreadable_files: crop files found unreadable while loading (without a cache), up to ``MAX_EXAMPLES``
            examples in ``examples``.
        examples: ``"path: reason"`` strings.
    """

    substituted_frames: int = 0
    unreadable_files: int = 0
    examples: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        """JSON-able copy."""
        return {"substituted_frames": self.substituted_frames, "unreadable_files": self.unreadable_files,
                "examples": list(self.examples)}


def clip_positions(n: int, clip_length: int, sampling: str, offset: float) -> np.ndarray:
    """Positions of a clip's frames among a video's ``n`` usable frames (see the module docstring).

    Args:
        n: usable frames of the video (>= 1).
        clip_length: ``T`` (>= 1).
        sampling: ``"evenly"`` or ``"contiguous"``.
        offset: ``u`` in [0, 1): where in each segment (evenly) or where in the range of starts (contiguous).

    Returns:
        int64 ``(min(n, T),)`` strictly increasing positions in ``[0, n)`` (all ``n`` positions when ``n <= T``).

    Raises:
        ValueError: unknown sampling, ``n < 1``, ``clip_length < 1`` or ``offset`` outside [0, 1).
    """
    if sampling not in CLIP_SAMPLINGS:
        raise ValueError(f"unknown clip sampling {sampling!r}; choose one of {CLIP_SAMPLINGS}")
    if n < 1 or clip_length < 1:
        raise ValueError(f"need n >= 1 and clip_length >= 1, got n={n}, clip_length={clip_length}")
    if not 0.0 <= offset < 1.0:
        raise ValueError(f"offset must be in [0, 1), got {offset}")
    if n <= clip_length:
        return np.arange(n, dtype=np.int64)
    if sampling == "evenly":
        pos = np.floor((np.arange(clip_length) + offset) * (n / clip_length)).astype(np.int64)
        return np.minimum(pos, n - 1)
    start = min(n - clip_length, int(np.floor(offset * (n - clip_length + 1))))
    return start + np.arange(clip_length, dtype=np.int64)


class FaceClipDataset(Dataset):
    """Clips of ``clip_length`` face crops per item (see the module docstring for every rule).

    Args:
        index: the rows of this dataset (e.g. one split of a face index); rows with ``face_rank != 0`` are
            ignored (and counted).
        video_lookup: ``video_id`` -> video index (for video-level metrics); must contain every video of ``index``.
        method_lookup: ``method`` -> method index; must contain every method of ``index``.
        clip_length: frames per clip ``T`` (>= 1); the reference ResNeXt-LSTM uses 10, 20, 40, 60, 80 or 100.
        sampling: ``"evenly"`` (default) or ``"contiguous"``.
        clips_per_video: clips ``K`` per video and epoch (>= 1); ``len(dataset) = videos * K``.
        train: draw a random offset per item (seeded) instead of the deterministic evaluation offsets.
        seed: the run's seed (training offsets and augmentation draws).
        transform: albumentations transform called as ``transform(images=frames)["images"]`` on the clip's
            ``(T, H, W, 3)`` uint8 RGB stack, so that every frame gets the SAME random parameters (per-frame
            augmentation would add a flicker that real videos do not have); it must return the same kind of
            stack (no ``Normalize`` / ``ToTensorV2``). Seeded per item from ``(seed, epoch, item)`` like
            :class:`~faceforge.data.detection.frames.FaceCropDataset`'s.
        cache: a :class:`~faceforge.data.detection.crop_cache.CropCache` (after ``ensure()``) holding the crops of
            ``index``;
            pixels are then read from it, and its unreadable rows are substituted up front.
        image_size: without a cache, crops are resized to ``image_size`` (the cache's rule); None keeps the stored
            size. With a cache it must be None or equal the cache's size.
        interpolation: resize rule without a cache (see :func:`~faceforge.data.core.image_io.resize_image`).

    Attributes:
        offsets: int64 ``(V + 1,)`` CSR offsets: video ``v``'s frames are entries ``offsets[v]:offsets[v + 1]`` of
            the per-frame arrays ``frame_rows`` (row in ``index``), ``frame_index``, ``readable`` (and
            ``cache_rows`` or ``crop_paths``).
        video_labels, video_idx, video_method_idx: int64 ``(V,)`` per video.
        report: JSON-able counts (videos, clips, short videos, frames per video, ignored and unreadable rows,
            skipped videos with examples).
        load_stats: :class:`ClipLoadStats` of this process.
        read_stats: image conversions made while decoding crops without a cache (this process).

    Raises:
        ValueError: ``clip_length`` or ``clips_per_video`` < 1, unknown ``sampling``, ``image_size`` disagreeing
            with the cache's.
        KeyError: a video_id or method not in its lookup.
        faceforge.data.detection.crop_cache.CropCacheError: a crop of ``index`` is not in ``cache``.
        ClipDataError: from ``__getitem__`` without a cache, when no crop of the item's video can be read.
        TransformOutputError: from ``__getitem__`` when the transform returns anything but a ``(T, H, W, 3)``
            uint8 array.
    """

    def __init__(self, index: FaceIndex, video_lookup: Mapping[str, int], method_lookup: Mapping[str, int],
                 clip_length: int, sampling: str = "evenly", clips_per_video: int = 1, train: bool = False,
                 seed: int = 0, transform: Callable[..., Any] | None = None, cache: CropCache | None = None,
                 image_size: int | None = None, interpolation: str = "area") -> None:
        clip_length, clips_per_video = int(clip_length), int(clips_per_video)
        if clip_length < 1 or clips_per_video < 1:
            raise ValueError(f"clip_length and clips_per_video must be >= 1, got {clip_length} and "
                             f"{clips_per_video}")
        if sampling not in CLIP_SAMPLINGS:
            raise ValueError(f"unknown clip sampling {sampling!r}; choose one of {CLIP_SAMPLINGS}")
        if cache is not None and image_size is not None and int(image_size) != cache.image_size:
            raise ValueError(f"image_size={image_size} but the crop cache holds {cache.image_size}px crops")
        self.clip_length = clip_length
        self.sampling = sampling
        self.clips_per_video = clips_per_video
        self.train = bool(train)
        self.seed = int(seed)
        self.transform = transform
        self.cache = cache
        self.image_size = int(image_size) if image_size is not None else None
        self.interpolation = interpolation
        self.root = str(index.root)
        self.load_stats = ClipLoadStats()
        self.read_stats = ImageReadStats()
        self.epoch = 0
        self._bad_rows: dict[int, str] = {}  # CSR entries found unreadable while loading (no cache)

        cols = index.columns
        first = np.flatnonzero(cols["face_rank"] == 0)
        video_of_row = lookup_indices(np.asarray(cols["video_id"]), video_lookup, "video_id")
        method_of_row = lookup_indices(np.asarray(cols["method"]), method_lookup, "method")
        order = np.lexsort((cols["frame_index"][first], video_of_row[first]))
        rows = first[order].astype(np.int64)
        vids = video_of_row[rows]
        starts = np.flatnonzero(np.r_[True, vids[1:] != vids[:-1]]) if len(rows) else np.zeros(0, np.int64)
        counts = np.diff(np.r_[starts, len(rows)]).astype(np.int64)

        all_cache_rows = cache.rows_for(index) if cache is not None else None
        readable = (cache.valid[all_cache_rows[rows]] if cache is not None
                    else np.ones(len(rows), dtype=bool))
        readable_per_video = np.add.reduceat(readable.astype(np.int64), starts) if len(rows) else counts
        keep_video = readable_per_video > 0
        skipped = [str(index.columns["video_id"][rows[s]]) for s in starts[~keep_video][:MAX_EXAMPLES]]
        keep_rows = np.repeat(keep_video, counts)

        self.frame_rows = rows[keep_rows]
        self.frame_index = np.asarray(cols["frame_index"][self.frame_rows], dtype=np.int64)
        self.readable = readable[keep_rows]
        self.cache_rows = all_cache_rows[self.frame_rows] if all_cache_rows is not None else None
        self.crop_paths = cols["crop_path"][self.frame_rows] if cache is None else None  # compact StringColumn
        kept_counts = counts[keep_video]
        self.offsets = np.r_[0, np.cumsum(kept_counts)].astype(np.int64)
        heads = self.frame_rows[self.offsets[:-1]]
        self.video_labels = np.asarray(cols["label"][heads], dtype=np.int64)
        self.video_idx = video_of_row[heads].astype(np.int64)
        self.video_method_idx = method_of_row[heads].astype(np.int64)

        unreadable = ~self.readable
        per_video_bad = (np.add.reduceat(unreadable.astype(np.int64), self.offsets[:-1])
                         if len(self.frame_rows) else np.zeros(0, np.int64))
        self.report: dict[str, Any] = {
            "videos": len(kept_counts),
            "clips": int(len(kept_counts) * clips_per_video),
            "clip_length": clip_length, "sampling": sampling, "clips_per_video": clips_per_video,
            "short_videos": int((kept_counts < clip_length).sum()),
            "frames_per_video": ({"min": int(kept_counts.min()), "median": float(np.median(kept_counts)),
                                  "max": int(kept_counts.max())} if len(kept_counts) else None),
            "ignored_other_faces": int(len(index) - len(first)),
            "unreadable_frames": int(unreadable.sum()),
            "videos_with_unreadable_frames": int((per_video_bad > 0).sum()),
            "videos_all_unreadable": int((~keep_video).sum()),
            "skipped_examples": skipped,
        }
        if (~keep_video).any():
            warnings.warn(f"{int((~keep_video).sum())} videos under {self.root} have no readable face crop and are "
                          f"left out of the clips, e.g. {skipped}", ClipFrameWarning, stacklevel=2)

    # ------------------------------------------------------------------ sizes
    def __len__(self) -> int:
        return int(len(self.video_labels) * self.clips_per_video)

    @property
    def num_videos(self) -> int:
        """Videos served (those with at least one readable crop)."""
        return len(self.video_labels)

    @property
    def labels(self) -> np.ndarray:
        """int64 ``(len(self),)`` label of every item (1 = fake), e.g. for a class-balancing sampler."""
        return np.repeat(self.video_labels, self.clips_per_video)

    @property
    def num_fake(self) -> int:
        """Number of fake clips."""
        return int(self.video_labels.sum() * self.clips_per_video)

    @property
    def num_real(self) -> int:
        """Number of real clips."""
        return len(self) - self.num_fake

    def video_frames(self, v: int) -> np.ndarray:
        """``frame_index`` of video ``v``'s usable frames (a view of the CSR array), int64."""
        return self.frame_index[self.offsets[v]:self.offsets[v + 1]]

    # ------------------------------------------------------------------ sampling
    def set_epoch(self, epoch: int) -> None:
        """The epoch of bare-index keys (keys from :class:`~faceforge.data.core.sampler.EpochSampler` carry their
        own)."""
        self.epoch = int(epoch)

    def _offset(self, i: int, k: int, epoch: int) -> float:
        if not self.train:
            return (k + 0.5) / self.clips_per_video
        return float(item_rng(self.seed, CLIP, epoch, i).random())

    def clip_entries(self, i: int, epoch: int | None = None) -> tuple[np.ndarray, int]:
        """CSR entries of item ``i``'s frames (in epoch ``epoch``, default :attr:`epoch`) before substitution of
        unreadable crops.

        Returns:
            ``(entries, length)``: int64 ``(T,)`` entries into the per-frame arrays (padding repeats the last) and
            the number of valid frames.
        """
        v, k = divmod(int(i), self.clips_per_video)
        start, end = int(self.offsets[v]), int(self.offsets[v + 1])
        epoch = self.epoch if epoch is None else int(epoch)
        pos = clip_positions(end - start, self.clip_length, self.sampling, self._offset(int(i), k, epoch))
        length = len(pos)
        if length < self.clip_length:
            pos = np.r_[pos, np.full(self.clip_length - length, pos[-1], dtype=np.int64)]
        return start + pos, length

    def _nearest_readable(self, entry: int, start: int, end: int) -> int | None:
        """The readable entry of the same video nearest to ``entry`` (earlier on a tie), or None."""
        ok = self.readable[start:end].copy()
        for bad in self._bad_rows:
            if start <= bad < end:
                ok[bad - start] = False
        cand = np.flatnonzero(ok)
        if len(cand) == 0:
            return None
        return int(start + cand[np.argmin(np.abs(cand - (entry - start)))])

    # ------------------------------------------------------------------ loading
    def _read(self, entry: int) -> np.ndarray:
        if self.cache is not None:
            return self.cache.get(int(self.cache_rows[entry]))  # type: ignore[index]
        img = read_rgb_image(os.path.join(self.root, str(self.crop_paths[entry])),  # type: ignore[index]
                             stats=self.read_stats)
        if self.image_size is not None:
            img = resize_image(img, self.image_size, self.interpolation)
        return img

    def load_clip(self, i: int, epoch: int | None = None) -> tuple[np.ndarray, int, np.ndarray]:
        """Item ``i``'s frames (in epoch ``epoch``, default :attr:`epoch`) before the transform.

        Returns:
            ``(frames, length, frame_index)``: uint8 ``(T, H, W, 3)`` RGB, valid frames, int64 ``(T,)`` source
            frame of each position (after substitution of unreadable crops).

        Raises:
            ClipDataError: no crop of the video can be read (without a cache).
        """
        entries, length = self.clip_entries(i, epoch)
        v = int(i) // self.clips_per_video
        start, end = int(self.offsets[v]), int(self.offsets[v + 1])
        frames: dict[int, np.ndarray] = {}
        resolved = np.empty_like(entries)
        for j, e in enumerate(entries.tolist()):
            target = e
            while True:
                if not self.readable[target] or target in self._bad_rows:
                    near = self._nearest_readable(e, start, end)
                    if near is None:
                        raise ClipDataError(self._no_readable_message(v, start, end))
                    target = near
                if target in frames:
                    break
                try:
                    frames[target] = self._read(target)
                    break
                except ImageReadError as exc:
                    self._bad_rows[target] = exc.reason
                    self.load_stats.unreadable_files += 1
                    if len(self.load_stats.examples) < MAX_EXAMPLES:
                        self.load_stats.examples.append(f"{exc.path}: {exc.reason}")
            if target != e and j < length:
                self.load_stats.substituted_frames += 1
                if self.cache is None:
                    self._warn_substitution(v, e, target)
            resolved[j] = target
        stack = np.stack([frames[int(t)] for t in resolved.tolist()])
        return stack, length, self.frame_index[resolved]

    def _no_readable_message(self, v: int, start: int, end: int) -> str:
        names = [f"{self.crop_paths[e]}: {self._bad_rows.get(e, 'unreadable')}"  # type: ignore[index]
                 for e in range(start, min(end, start + MAX_EXAMPLES))] if self.crop_paths is not None else []
        return (f"video index {int(self.video_idx[v])} under {self.root}: none of its {end - start} face crops can "
                f"be read ({names}); remove the video from the face index or re-extract it")

    def _warn_substitution(self, v: int, entry: int, target: int) -> None:
        n = _warnings.next()
        if n <= MAX_WARNINGS:
            more = " (further substitutions in this process are counted, not warned)" if n == MAX_WARNINGS else ""
            warnings.warn(f"{self.root}/{self.crop_paths[entry]} cannot be read "  # type: ignore[index]
                          f"({self._bad_rows.get(entry, 'unreadable')}); the clip uses frame "
                          f"{int(self.frame_index[target])} of the same video instead{more}", ClipFrameWarning,
                          stacklevel=3)

    def __getitem__(self, key: int | tuple[int, int]) -> dict[str, torch.Tensor]:
        epoch, i = split_key(key, self.epoch)
        if not 0 <= i < len(self):
            raise IndexError(f"index {i} out of range for a dataset of {len(self)} clips")
        frames, length, frame_index = self.load_clip(i, epoch)
        if self.transform is not None:
            seed_transform(self.transform, derive_seed(self.seed, AUGMENT, epoch, i))
            out = self.transform(images=frames)["images"]
            if not (isinstance(out, np.ndarray) and out.dtype == np.uint8 and out.ndim == 4
                    and out.shape[0] == self.clip_length and out.shape[3] == 3):
                desc = f"{type(out).__name__} {getattr(out, 'shape', '')} {getattr(out, 'dtype', '')}"
                raise TransformOutputError(
                    f"the clip transform must return a (T={self.clip_length}, H, W, 3) uint8 numpy stack, got "
                    f"{desc}; float conversion and normalisation happen on the device in the task, so leave "
                    f"Normalize/ToTensorV2 out of it")
            frames = out
        v = i // self.clips_per_video
        return {
            "image": torch.from_numpy(np.ascontiguousarray(frames.transpose(0, 3, 1, 2))),
            "lengths": torch.tensor(length, dtype=torch.int64),
            "label": torch.tensor(self.video_labels[v], dtype=torch.int64),
            "video_idx": torch.tensor(self.video_idx[v], dtype=torch.int64),
            "method_idx": torch.tensor(self.video_method_idx[v], dtype=torch.int64),
            "index": torch.tensor(i, dtype=torch.int64),
            "frame_index": torch.from_numpy(np.ascontiguousarray(frame_index, dtype=np.int64)),
        }
