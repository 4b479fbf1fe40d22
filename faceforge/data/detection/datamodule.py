"""LightningDataModule for frame-level and clip-level (video) deepfake detection over a face index.

:class:`FaceDataModule` reads ``<faces_dir>/face_index.parquet`` (written by face extraction, or by the synthetic
generator for ``data=synthetic``), checks the crops, filters and subsamples rows, packs the crops into a
:class:`~faceforge.data.detection.crop_cache.CropCache` and serves train / val / test loaders split by the index's
``split`` column. It knows nothing of models.

* Frames (``clip_length=None``, the default): :class:`FaceCropDataset`; batches are dicts of ``image`` (uint8
  ``(B, 3, S, S)``: float conversion and normalisation are done on the device by the task), ``label``,
  ``video_idx``, ``method_idx`` and ``index`` (int64 ``(B,)``).
* Clips (``clip_length=T``): :class:`~faceforge.data.detection.clips.FaceClipDataset` over the same index and cache (one
  item = ``clips_per_video`` clips of ``T`` faces of a video, see :mod:`faceforge.data.detection.clips` for sampling,
  short
  videos and unreadable crops); batches add ``lengths`` (int64 ``(B,)``, valid frames) and ``frame_index``
  (int64 ``(B, T)``), and ``image`` is uint8 ``(B, T, 3, S, S)``.
"""
from __future__ import annotations

import json
import logging
import os
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytorch_lightning as pl
import torch
from torch.utils.data import DataLoader

from faceforge.data.core.prepared import ensure_built
from faceforge.data.core.sampler import build_eval_loader, build_train_loader
from faceforge.data.detection.clips import CLIP_SAMPLINGS, FaceClipDataset
from faceforge.data.detection.crop_cache import CropSource
from faceforge.data.detection.crop_store import CROP_STORES, make_crop_store
from faceforge.data.detection.face_index import INDEX_FILENAMES, META_FILENAME, SPLITS, FaceIndex, find_index_file
from faceforge.data.detection.frames import FaceCropDataset
from faceforge.errors import FaceforgeError

log = logging.getLogger(__name__)

#: How many missing / unreadable file names a warning and the report list.
MAX_EXAMPLES = 5


class FaceDataError(FaceforgeError, RuntimeError):
    """The face data cannot be served: no index, an empty split, an unknown method; the message says what to do."""


class SameSplitWarning(UserWarning):
    """``same_split_for_all=True``: every split holds every row, so validation/test numbers mean nothing."""


#: The face extraction settings a checkpoint keeps (``datamodule_hyper_parameters["extraction"]``): the keywords of
#: :func:`~faceforge.data.detection.extraction.extract.extract_dataset` that decide which frames are read and how a
#: face becomes a crop (``conf/data/video_base.yaml``, ``builder``).
EXTRACTION_SETTINGS = ("num_frames", "sampling", "stride", "seed", "margin", "size", "image_format", "detector")


def recorded_extraction(builder: Callable[..., Any] | None) -> dict[str, Any] | None:
    """The face extraction settings of a data module's builder, as primitive values for its checkpoints.

    Args:
        builder: a ``functools.partial`` of face extraction (Hydra's ``_partial_: true``), or any other builder.

    Returns:
        ``{key: value}`` for the keys of :data:`EXTRACTION_SETTINGS` the builder sets (``detector`` as a plain dict),
        or None for a builder that does not extract faces from videos (the synthetic set's renderer, None).
    """
    keywords = getattr(builder, "keywords", None)
    if not isinstance(keywords, dict) or "num_frames" not in keywords or "margin" not in keywords:
        return None
    from omegaconf import DictConfig, ListConfig, OmegaConf

    out: dict[str, Any] = {}
    for key in EXTRACTION_SETTINGS:
        if key in keywords:
            value = keywords[key]
            if isinstance(value, (DictConfig, ListConfig)):
                value = OmegaConf.to_container(value, resolve=True)
            out[key] = value
    return out


class FaceDataModule(pl.LightningDataModule):
    """Train / val / test loaders of face crops (or clips of them) from a face index.

    Args:
        name: dataset name for logs and reports (``ffpp``, ``synthetic``, ...).
        faces_dir: folder holding ``face_index.parquet`` (or a legacy ``face_index.csv``) and the crops it names.
        builder: called as ``builder(output_dir=Path(faces_dir))`` by :meth:`prepare_data` when the index is
            absent; it must write the index (face extraction for real datasets, the synthetic generator for
            ``data=synthetic``).
        root: the official dataset folder the faces come from (video datasets). When given, an existing index
            whose ``face_index.meta.json`` records another root is refused, so two datasets never share a
            ``faces_dir`` by accident.
        batch_size: faces per batch.
        num_workers: DataLoader worker processes.
        pin_memory: pin host memory of batches (for GPU training).
        persistent_workers: keep workers alive between epochs (used only when ``num_workers > 0``).
        train_transform: albumentations transform for training (uint8 HWC RGB in and out; see
            :class:`~faceforge.data.detection.frames.FaceCropDataset`).
        eval_transform: albumentations transform for validation and test.
        balance_classes: sample training faces with replacement (``len(train)`` draws per epoch, seeded by
            ``(seed, epoch)``) with weights 1 / class count, so that real and fake faces have equal expected
            frequency.
        methods: keep only these manipulation methods (``original`` is always kept); None keeps all.
        same_split_for_all: use ALL rows for train, val and test (smoke tests on tiny data only; warns loudly).
        max_faces_per_video: keep at most this many faces per video, evenly spaced in (frame, face rank) order.
        cache_crops: pack the crops into a store built once in ``<faces_dir>/cache/`` (see ``crop_store``); False
            decodes crop files on the fly.
        crop_store: ``"memmap"`` (decoded uint8 crops, :class:`~faceforge.data.detection.crop_cache.CropCache`;
            196 KB per crop at 256 px, refused when the disk is too small) or ``"encoded"`` (the encoded crop files
            in a few shard files, decoded on read: about their size on disk,
            :class:`~faceforge.data.detection.crop_store.EncodedCropStore`).
        image_size: side of the square images served, pixels (crops of another size are resized, see
            :func:`~faceforge.data.core.image_io.resize_image`).
        seed: seed of the training order (per epoch), of the augmentation and of the training clips' frame draws
            (per epoch and sample).
        clip_length: None (default) serves single face crops; an int ``T`` serves clips of ``T`` faces per video
            (:class:`~faceforge.data.detection.clips.FaceClipDataset`; only the most confident face of each frame is
            used,
            ``max_faces_per_video`` then limits the frames a clip is drawn from).
        clip_sampling: ``"evenly"`` (``T`` frames evenly spaced over the video, seeded jitter in training,
            segment centres for val/test) or ``"contiguous"`` (a run of ``T`` consecutive extracted frames).
        clips_per_video: clips per video and epoch (val/test: spread deterministically over the video; the
            video-level metrics average their scores).

    Hyperparameters (``hparams``, kept in checkpoints as ``datamodule_hyper_parameters``): the arguments above but
    the builder and the transforms, plus ``extraction``: the builder's face extraction settings
    (:func:`recorded_extraction`; None for the synthetic set), which ``faceforge predict`` follows.

    Attributes (after :meth:`setup`):
        video_ids: sorted unique ``video_id`` of the WHOLE index (before any filtering); ``video_idx`` indexes it.
        method_names: sorted unique ``method`` of the whole index; ``method_idx`` indexes it.
        video_lookup, method_lookup: the inverse dicts.
        train_dataset, val_dataset, test_dataset: :class:`FaceCropDataset`, or
            :class:`~faceforge.data.detection.clips.FaceClipDataset` with ``clip_length`` (``test_dataset`` may be
            None).
        split_indexes: split name -> :class:`FaceIndex` of the rows served.
        cache: the :class:`CropCache` or None.
        report: JSON-able dict of what was read, skipped and why (the train script logs it); with clips,
            ``report["clips"][split]`` holds each clip dataset's counts (short videos padded, unreadable frames
            substituted, videos left out).

    Raises:
        ValueError: at construction, for ``batch_size``, ``max_faces_per_video``, ``clip_length`` or
            ``clips_per_video`` below 1, or an unknown ``clip_sampling``.
        FaceDataError: from :meth:`prepare_data` / :meth:`setup` when the index is absent and there is no builder,
            from :meth:`setup` when ``train`` or ``val`` is empty or ``methods`` names an unknown method, from
            :meth:`test_dataloader` when there is no test split.
    """

    def __init__(self, name: str, faces_dir: str, builder: Callable[..., Any] | None = None,
                 root: str | None = None, batch_size: int = 32, num_workers: int = 0, pin_memory: bool = False,
                 persistent_workers: bool = False, train_transform: Callable[..., Any] | None = None,
                 eval_transform: Callable[..., Any] | None = None, balance_classes: bool = False,
                 methods: list[str] | None = None, same_split_for_all: bool = False,
                 max_faces_per_video: int | None = None, cache_crops: bool = True, image_size: int = 256,
                 seed: int = 0, clip_length: int | None = None, clip_sampling: str = "evenly",
                 clips_per_video: int = 1, crop_store: str = "memmap") -> None:
        super().__init__()
        # primitive copies (Hydra passes ListConfig / str paths): checkpoints must load with weights_only=True
        name = str(name)
        faces_dir = str(faces_dir)
        root = str(root) if root is not None else None
        methods = [str(m) for m in methods] if methods is not None else None
        max_faces_per_video = int(max_faces_per_video) if max_faces_per_video is not None else None
        clip_length = int(clip_length) if clip_length is not None else None
        clip_sampling = str(clip_sampling)
        clips_per_video = int(clips_per_video)
        crop_store = str(crop_store)
        if crop_store not in CROP_STORES:
            raise ValueError(f"crop_store must be one of {CROP_STORES}, got {crop_store!r}")
        if clip_length is not None and clip_length < 1:
            raise ValueError(f"clip_length must be >= 1 or None (frames), got {clip_length}")
        if clips_per_video < 1:
            raise ValueError(f"clips_per_video must be >= 1, got {clips_per_video}")
        if clip_sampling not in CLIP_SAMPLINGS:
            raise ValueError(f"clip_sampling must be one of {CLIP_SAMPLINGS}, got {clip_sampling!r}")
        if int(batch_size) < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        if max_faces_per_video is not None and max_faces_per_video < 1:
            raise ValueError(f"max_faces_per_video must be >= 1 or None, got {max_faces_per_video}")
        self.save_hyperparameters(ignore=["builder", "train_transform", "eval_transform"], logger=False)
        # how the faces were extracted (primitive values), kept in checkpoints so that inference does the same
        self.hparams["extraction"] = recorded_extraction(builder)
        self.name = name
        self.faces_dir = Path(faces_dir)
        self.builder = builder
        self.root = Path(root) if root is not None else None
        self.batch_size = int(batch_size)
        self.num_workers = int(num_workers)
        self.pin_memory = bool(pin_memory)
        self.persistent_workers = bool(persistent_workers)
        self.train_transform = train_transform
        self.eval_transform = eval_transform
        self.balance_classes = bool(balance_classes)
        self.methods = methods
        self.same_split_for_all = bool(same_split_for_all)
        self.max_faces_per_video = max_faces_per_video
        self.cache_crops = bool(cache_crops)
        self.crop_store = crop_store
        self.image_size = int(image_size)
        self.seed = int(seed)
        self.clip_length = clip_length
        self.clip_sampling = clip_sampling
        self.clips_per_video = clips_per_video

        self.video_ids: list[str] = []
        self.method_names: list[str] = []
        self.video_lookup: dict[str, int] = {}
        self.method_lookup: dict[str, int] = {}
        self.train_dataset: FaceCropDataset | FaceClipDataset | None = None
        self.val_dataset: FaceCropDataset | FaceClipDataset | None = None
        self.test_dataset: FaceCropDataset | FaceClipDataset | None = None
        self.split_indexes: dict[str, FaceIndex] = {}
        self.cache: CropSource | None = None
        self.report: dict[str, Any] = {}
        self._is_setup = False

    # ------------------------------------------------------------------ preparation
    @property
    def index_path(self) -> Path:
        """``<faces_dir>/face_index.parquet`` (or a legacy ``face_index.csv`` a folder prepared earlier holds)."""
        return find_index_file(self.faces_dir)

    def _no_index_message(self) -> str:
        return (f"no face index at {self.index_path}: dataset '{self.name}' has not been prepared. Extract the faces "
                f"first, e.g. `faceforge-extract-faces` with the dataset root and --output {self.faces_dir} (see "
                f"`faceforge-extract-faces --help`), or use data=synthetic, which builds its own data")

    def prepare_data(self) -> None:
        """Make sure the face index exists: call ``builder(output_dir=Path(faces_dir))`` once if it is absent.

        Runs in one process per node (Lightning's rule). Does nothing when the index is already there, except
        refusing a folder built with other builder settings than this run's (see :mod:`faceforge.data.core.prepared`).

        Raises:
            FaceDataError: the index is absent and there is no builder, the builder did not write it, or the folder
                was built with other settings.
        """
        if self.index_path.is_file():
            self._check_root()
        ensure_built(self.faces_dir, INDEX_FILENAMES, self.builder, FaceDataError, self._no_index_message(),
                     "data.faces_dir")

    def _check_root(self) -> None:
        """Refuse an index extracted from another dataset root than ``root`` (when both are known)."""
        if self.root is None:
            return
        meta_path = self.faces_dir / META_FILENAME
        try:
            recorded = json.loads(meta_path.read_text(encoding="utf-8")).get("root")
        except (OSError, ValueError):
            return
        if recorded and Path(recorded).resolve() != self.root.resolve():
            raise FaceDataError(f"{self.faces_dir} holds faces extracted from {recorded}, not from {self.root}: "
                                f"point data.faces_dir to another folder for this dataset")

    def has_split(self, split: str) -> bool:
        """Whether ``split`` has rows (after :meth:`setup`; before it, True so that callers still try)."""
        if not self._is_setup:
            return True
        dataset = {"train": self.train_dataset, "val": self.val_dataset, "test": self.test_dataset}.get(split)
        return dataset is not None and len(dataset) > 0

    # ------------------------------------------------------------------ setup
    def setup(self, stage: str | None = None) -> None:
        """Read the index, check and filter rows, build the crop cache, and make the split datasets.

        Idempotent: later calls (e.g. ``stage="test"`` after ``"fit"``) reuse the first result.

        Raises:
            FaceDataError: no index (call :meth:`prepare_data` / extract faces), an empty train or val split, or
                ``methods`` naming a method absent from the index.
            faceforge.data.detection.face_index.FaceIndexError: malformed index file.
            faceforge.data.detection.crop_cache.CropCacheError: the cache cannot be written (e.g. disk full).
        """
        if self._is_setup:
            return
        if not self.index_path.is_file():
            raise FaceDataError(self._no_index_message())
        full = FaceIndex.read(self.index_path)
        report: dict[str, Any] = {"dataset": self.name, "faces_dir": str(self.faces_dir),
                                  "faces_in_index": len(full),
                                  "videos_in_index": len(np.unique(full.columns["video_id"]))}
        self.report = report  # filled in as we go, so a failed setup still shows how far it got
        self.video_ids = sorted(set(full.columns["video_id"].tolist()))
        self.method_names = sorted(set(full.columns["method"].tolist()))
        self.video_lookup = {v: i for i, v in enumerate(self.video_ids)}
        self.method_lookup = {m: i for i, m in enumerate(self.method_names)}

        index = full
        # rows whose split is not train/val/test are never served: count them
        bad_split = ~np.isin(index.columns["split"], SPLITS)
        report["unknown_split_rows"] = int(bad_split.sum())
        if bad_split.any():
            values = sorted(set(index.columns["split"][bad_split].tolist()))[:MAX_EXAMPLES]
            warnings.warn(f"{self.index_path}: {int(bad_split.sum())} rows have a split other than {SPLITS} "
                          f"({values}); they are not used", stacklevel=2)
            if not self.same_split_for_all:
                index = index.select(~bad_split)

        # crop files that do not exist: skipped and counted
        root = str(index.root)
        exists = np.fromiter((os.path.isfile(os.path.join(root, p)) for p in index.columns["crop_path"].tolist()),
                             dtype=bool, count=len(index))
        missing = index.columns["crop_path"][~exists].tolist()
        report["missing_crops"] = len(missing)
        report["missing_examples"] = missing[:MAX_EXAMPLES]
        if missing:
            warnings.warn(f"{len(missing)} of {len(index)} crops listed in {self.index_path} do not exist and are "
                          f"skipped, e.g. {missing[:MAX_EXAMPLES]}", stacklevel=2)
            index = index.select(exists)

        # methods filter ("original" is always kept)
        if self.methods is not None:
            unknown = sorted(set(self.methods) - set(self.method_names))
            if unknown:
                raise FaceDataError(f"methods {unknown} are not in {self.index_path}; it has {self.method_names}")
            keep = np.isin(index.columns["method"], list(self.methods) + ["original"])
            report["filtered_by_method"] = int((~keep).sum())
            index = index.select(keep)
        else:
            report["filtered_by_method"] = 0

        # clips use the most confident face of each frame only
        if self.clip_length is not None:
            first = index.columns["face_rank"] == 0
            report["clip_other_faces"] = int((~first).sum())
            index = index.select(first)

        # at most max_faces_per_video faces per video, evenly spaced
        if self.max_faces_per_video is not None:
            keep_rows = _subsample_per_video(index, self.max_faces_per_video)
            report["subsampled_away"] = int(len(index) - len(keep_rows))
            index = index.select(keep_rows)
        else:
            report["subsampled_away"] = 0

        # the crop cache (decodes every crop once: unreadable crops are found here, skipped and counted; clips
        # keep their rows and substitute a readable neighbour, see faceforge.data.detection.clips)
        self.cache = None
        report["unreadable_crops"] = 0
        report["unreadable_examples"] = []
        if self.cache_crops and len(index):
            cache = make_crop_store(self.crop_store, index, image_size=self.image_size).ensure()
            if cache.errors:
                bad = sorted(cache.errors)
                examples = [f"{index.columns['crop_path'][r]}: {cache.errors[r]}" for r in bad[:MAX_EXAMPLES]]
                report["unreadable_crops"] = len(bad)
                report["unreadable_examples"] = examples
                what = ("replaced in clips by the nearest readable frame of their video" if self.clip_length
                        else "skipped")
                warnings.warn(f"{len(bad)} crops under {self.faces_dir} cannot be read and are {what}, e.g. "
                              f"{examples}", stacklevel=2)
                if self.clip_length is None:
                    index = index.select(cache.valid)
            report["image_conversions"] = cache.read_stats.to_dict()
            report["cache"] = {"path": str(cache.path), "kind": self.crop_store, "built_now": cache.built}
            self.cache = cache
        else:
            report["cache"] = None

        # splits
        if self.same_split_for_all:
            warnings.warn("same_split_for_all=True: train, val and test ALL hold every row of "
                          f"{self.index_path}; validation and test numbers are meaningless (smoke tests only)",
                          SameSplitWarning, stacklevel=2)
            self.split_indexes = {s: index for s in SPLITS}
        else:
            self.split_indexes = {s: index.where(split=s) for s in SPLITS}
        for s in ("train", "val"):
            if len(self.split_indexes[s]) == 0:
                raise FaceDataError(f"split '{s}' of {self.faces_dir} has no faces after filtering ({_why(report)}); "
                                    f"check the index's split column, `methods` and missing crops")
        report["same_split_for_all"] = self.same_split_for_all
        report["splits"] = {s: _split_summary(ix) for s, ix in self.split_indexes.items()}
        if len(self.split_indexes["train"]) and len(np.unique(self.split_indexes["train"].columns["label"])) < 2:
            warnings.warn(f"the train split of {self.faces_dir} holds only one class "
                          f"({report['splits']['train']}); a detector cannot learn from it", stacklevel=2)

        def make(split: str, transform: Any) -> FaceCropDataset | FaceClipDataset:
            size = None if self.cache is not None else self.image_size
            if self.clip_length is None:
                return FaceCropDataset(self.split_indexes[split], self.video_lookup, self.method_lookup,
                                       transform=transform, cache=self.cache, image_size=size, seed=self.seed)
            return FaceClipDataset(self.split_indexes[split], self.video_lookup, self.method_lookup,
                                   clip_length=self.clip_length, sampling=self.clip_sampling,
                                   clips_per_video=self.clips_per_video, train=split == "train", seed=self.seed,
                                   transform=transform, cache=self.cache, image_size=size)

        self.train_dataset = make("train", self.train_transform)
        self.val_dataset = make("val", self.eval_transform)
        self.test_dataset = make("test", self.eval_transform) if len(self.split_indexes["test"]) else None
        if self.clip_length is not None:
            datasets = {"train": self.train_dataset, "val": self.val_dataset, "test": self.test_dataset}
            report["clips"] = {s: ds.report for s, ds in datasets.items() if ds is not None}
            for s in ("train", "val"):
                if len(datasets[s]) == 0:  # type: ignore[arg-type]
                    raise FaceDataError(f"split '{s}' of {self.faces_dir} has no video with a readable face crop "
                                        f"({report['clips'][s]})")
            if self.test_dataset is not None and len(self.test_dataset) == 0:
                self.test_dataset = None
        self.report = report
        self._is_setup = True
        log.info("face data '%s' from %s: %s", self.name, self.faces_dir, report["splits"])

    def load_report(self) -> dict[str, Any]:
        """Crops found unreadable while loading (``cache_crops=false``; with the cache they are found, skipped
        and counted in :attr:`report` at :meth:`setup`): per split, see
        :meth:`~faceforge.data.detection.frames.FaceCropDataset.load_report`. Empty before setup, with the cache, or
        with clips (their counts are in ``report["clips"]``).

        Returns:
            ``{split: {"unreadable_crops", "substituted_items", "unreadable_examples"}}``.
        """
        if not self._is_setup or self.cache is not None:
            return {}
        datasets = {"train": self.train_dataset, "val": self.val_dataset, "test": self.test_dataset}
        return {s: ds.load_report() for s, ds in datasets.items() if isinstance(ds, FaceCropDataset)}

    # ------------------------------------------------------------------ loaders
    def _loader(self, dataset: FaceCropDataset | FaceClipDataset, train: bool) -> DataLoader:
        if train:
            weights = _balanced_weights(dataset.labels) if self.balance_classes else None
            return build_train_loader(dataset, self.batch_size, self.seed, num_workers=self.num_workers,
                                      pin_memory=self.pin_memory, persistent_workers=self.persistent_workers,
                                      weights=weights)
        # every sample once, in order; under DDP split across ranks without the padding repeats of Lightning's
        # DistributedSampler, so no sample counts twice in a metric
        return build_eval_loader(dataset, self.batch_size, num_workers=self.num_workers, pin_memory=self.pin_memory,
                                 persistent_workers=self.persistent_workers)

    def _require(self, dataset: FaceCropDataset | FaceClipDataset | None,
                 split: str) -> FaceCropDataset | FaceClipDataset:
        if not self._is_setup:
            raise FaceDataError(f"FaceDataModule('{self.name}') is not set up: call prepare_data() and setup() first")
        if dataset is None:
            raise FaceDataError(f"split '{split}' of {self.faces_dir} has no faces, so there is no {split} loader")
        return dataset

    def train_dataloader(self) -> DataLoader:
        """Shuffled (or class-balanced) training loader; drops the last partial batch if there is more than one.

        A :class:`~faceforge.data.core.sampler.ResumableDataLoader` over an
        :class:`~faceforge.data.core.sampler.EpochSampler`:
        epoch ``e``'s order and every sample's augmentation (and clip offsets) are functions of ``(seed, e, index)``,
        the same with any ``num_workers``, and a run stopped mid-epoch resumes at the next batch.
        """
        return self._loader(self._require(self.train_dataset, "train"), train=True)

    def val_dataloader(self) -> DataLoader:
        """Validation loader, in index order."""
        return self._loader(self._require(self.val_dataset, "val"), train=False)

    def test_dataloader(self) -> DataLoader:
        """Test loader, in index order.

        Raises:
            FaceDataError: if the index has no test rows.
        """
        return self._loader(self._require(self.test_dataset, "test"), train=False)

    # ------------------------------------------------------------------ what a task may ask (faceforge.tasks.protocols)
    def item_names(self, split: str) -> list[str] | None:
        """Video ids that batches' ``video_idx`` indexes (the whole index's, the same for every split); None
        before :meth:`setup`."""
        return list(self.video_ids) or None

    def group_names(self) -> list[str] | None:
        """Manipulation methods (``real`` included) that batches' ``method_idx`` indexes; None before
        :meth:`setup`."""
        return list(self.method_names) or None

    def train_statistics(self) -> None:
        """Face data offers no training statistics: None."""
        return None


def _subsample_per_video(index: FaceIndex, k: int) -> np.ndarray:
    """Row positions keeping at most ``k`` rows per video, evenly spaced in (frame_index, face_rank) order."""
    cols = index.columns
    order = np.lexsort((cols["face_rank"], cols["frame_index"], cols["video_id"]))
    vids = cols["video_id"][order]
    starts = np.flatnonzero(np.r_[True, vids[1:] != vids[:-1]]) if len(vids) else np.zeros(0, dtype=np.int64)
    ends = np.r_[starts[1:], len(vids)]
    keep: list[np.ndarray] = []
    for s, e in zip(starts.tolist(), ends.tolist()):
        n = e - s
        if n <= k:
            keep.append(order[s:e])
        else:
            pick = np.unique(np.round(np.linspace(0, n - 1, k)).astype(np.int64))
            keep.append(order[s + pick])
    rows = np.concatenate(keep) if keep else np.zeros(0, dtype=np.int64)
    return np.sort(rows)


def _balanced_weights(labels: np.ndarray) -> torch.Tensor:
    """Per-sample weights 1 / count(label): each label present gets equal total weight."""
    labels = np.asarray(labels, dtype=np.int64)
    counts = np.bincount(labels, minlength=2).astype(np.float64)
    w = 1.0 / counts[labels]
    return torch.as_tensor(w, dtype=torch.double)


def _split_summary(index: FaceIndex) -> dict[str, int]:
    labels = index.columns["label"]
    return {"faces": len(index), "videos": len(np.unique(index.columns["video_id"])),
            "fake_faces": int((labels == 1).sum()), "real_faces": int((labels == 0).sum())}


def _why(report: dict[str, Any]) -> str:
    keys = ("faces_in_index", "missing_crops", "filtered_by_method", "subsampled_away", "unreadable_crops",
            "unknown_split_rows")
    return ", ".join(f"{k}={report.get(k, 0)}" for k in keys)
