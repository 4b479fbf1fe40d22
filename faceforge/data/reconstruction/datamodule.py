"""LightningDataModule for VRN volume regression over the output of volume generation.

:class:`VolumeDataModule` reads ``<volumes_dir>/volume_index.csv`` and the volume store shards it names (written by
:func:`faceforge.data.reconstruction.generation.generate_volumes` for 300W-LP / AFLW2000-3D, or by
:func:`faceforge.data.reconstruction.synthetic.build_synthetic_reconstruction` for ``data=synthetic_3d``) and
serves train / val / test :class:`VolumeDataset` loaders split by the index's ``split`` column. It knows nothing of
models. Batches (dicts, collated by PyTorch's default collate):

* ``image``: uint8 (B, 3, S, S) RGB crops (float conversion happens on the device, in the task);
* ``start``, ``stop``: (B, S, S) run maps of the target volumes (uint8 for D <= 255, else int16): the volume is
  ``start <= k < stop`` per column (74 kB per 192x192 sample instead of a 29.5 MB float volume through the
  loader). :meth:`VolumeDataModule.on_after_batch_transfer` decodes them on the device into ``volume`` float32
  (B, D, S, S) (:func:`faceforge.data.reconstruction.codec.decode_runs`), so tasks see ``volume``, never the run
  maps;
* ``landmarks``: float32 (B, 68, 2) crop pixels (NaN where unknown);
* ``frame``: float64 (B, 5) the crop's :class:`~faceforge.geometry.volume_frame.VolumeFrame` (scale, tx, ty,
  z_offset, depth_scale) mapping source-image pixels to the crop; NaN for augmented samples (a rotated or flipped
  crop has no such frame);
* ``depth``: int64 (B,) the volumes' depth levels D;
* ``yaw``: float32 (B,) radians from the label (NaN where unknown);
* ``index``: int64 (B,) position of the sample in its split (``sample_ids[split][index]`` is its id).

Training samples go through the thesis augmentation (:mod:`faceforge.data.reconstruction.augment`); validation and test
samples are served as stored.

:func:`faceforge.data.reconstruction.builders.build_w300lp_volumes` is the builder of ``data=w300lp`` /
``data=aflw2000``: it turns a 300W-LP tree or an AFLW2000-3D folder into volumes.
"""
from __future__ import annotations

import json
import logging
import warnings
from collections import Counter
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pytorch_lightning as pl
import torch
from torch.utils.data import DataLoader, Dataset

from faceforge.data.core.prepared import ensure_built
from faceforge.data.core.sampler import build_eval_loader, build_train_loader, split_key
from faceforge.data.reconstruction.augment import VolumeAugmentation
from faceforge.data.reconstruction.codec import decode_runs
from faceforge.data.reconstruction.errors import VolumeGenerationError
from faceforge.data.reconstruction.generation import REPORT_FILENAME
from faceforge.data.reconstruction.statistics import TrainStatistics, volume_train_statistics
from faceforge.data.reconstruction.store import VolumeStore
from faceforge.data.reconstruction.volume_index import INDEX_FILENAME, read_volume_index
from faceforge.errors import FaceforgeError
from faceforge.utils.seeding import VOLUME_AUGMENT, item_rng

__all__ = ["SPLITS", "SameSplitWarning", "VolumeDataError", "VolumeDataModule", "VolumeDataset"]

log = logging.getLogger(__name__)

SPLITS = ("train", "val", "test")
_FRAME_KEYS = ("frame_scale", "frame_tx", "frame_ty", "frame_z_offset", "frame_depth_scale")


class VolumeDataError(FaceforgeError, RuntimeError):
    """The volume data cannot be served: no index, an empty split, inconsistent stores; the message says what to
    do."""


class SameSplitWarning(UserWarning):
    """``same_split_for_all=True``: every split holds every sample, so validation/test numbers mean nothing."""


class VolumeDataset(Dataset):
    """Samples of one split: crop, run maps, landmarks, frame, yaw (see the module docstring for the fields).

    The :class:`~faceforge.data.reconstruction.store.VolumeStore` opens its files lazily in each process, so the dataset
    can be used with DataLoader workers.

    Args:
        store: the store holding the samples.
        rows: the index rows of this split (:func:`~faceforge.data.reconstruction.volume_index.read_volume_index`), in
            order.
        augment: the training augmentation, or None.
        seed: the run's seed. The augmentation of sample ``i`` in epoch ``e`` draws from
            ``item_rng(seed, VOLUME_AUGMENT, e, i)`` (:mod:`faceforge.utils.seeding`): epochs differ, and runs
            repeat with any number of DataLoader workers and across a resume. Keys are ``i`` (epoch
            :attr:`epoch`) or ``(e, i)`` pairs from :class:`~faceforge.data.core.sampler.EpochSampler`.

    Raises:
        VolumeDataError: if a row's sample is absent from the store.
    """

    def __init__(self, store: VolumeStore, rows: list[dict[str, Any]], augment: VolumeAugmentation | None = None,
                 seed: int = 0) -> None:
        self.store = store
        self.rows = rows
        self.augment = augment
        self.seed = int(seed)
        self.epoch = 0
        missing = [r["sample_id"] for r in rows if r["sample_id"] not in store]
        if missing:
            raise VolumeDataError(f"{len(missing)} samples of the index are missing from the volume stores "
                                  f"{[str(p) for p in store.paths[:3]]}, e.g. {missing[:3]}")
        self.positions = [store.index_of(r["sample_id"]) for r in rows]
        self.depth = int(store.depth)
        self.size = int(store.size)

    @property
    def sample_ids(self) -> list[str]:
        """Sample ids in dataset order."""
        return [r["sample_id"] for r in self.rows]

    def __len__(self) -> int:
        return len(self.rows)

    def set_epoch(self, epoch: int) -> None:
        """The epoch of bare-index keys (keys from :class:`~faceforge.data.core.sampler.EpochSampler` carry their
        own)."""
        self.epoch = int(epoch)

    def __getitem__(self, key: int | tuple[int, int]) -> dict[str, torch.Tensor]:
        epoch, i = split_key(key, self.epoch)
        row = self.rows[i]
        pos = self.positions[i]
        image = self.store.read_image(pos)
        start, stop = self.store.read_runs(pos)
        lmk = self.store.read_landmarks(pos)
        landmarks = np.full((68, 2), np.nan, dtype=np.float32) if lmk is None else np.asarray(lmk, np.float32)
        frame = np.array([row[k] for k in _FRAME_KEYS], dtype=np.float64)
        if self.augment is not None:
            rng = item_rng(self.seed, VOLUME_AUGMENT, epoch, i)
            aug = self.augment(image, start, stop, self.depth, rng, landmarks=landmarks)
            image, start, stop, landmarks = aug.image, aug.start, aug.stop, aug.landmarks
            frame = np.full(5, np.nan)
        run_dtype = np.uint8 if self.depth <= 255 else np.int16
        return {
            "image": torch.from_numpy(np.ascontiguousarray(np.asarray(image).transpose(2, 0, 1))),
            "start": torch.from_numpy(np.ascontiguousarray(start, dtype=run_dtype)),
            "stop": torch.from_numpy(np.ascontiguousarray(stop, dtype=run_dtype)),
            "landmarks": torch.from_numpy(np.ascontiguousarray(landmarks, dtype=np.float32)),
            "frame": torch.from_numpy(frame),
            "depth": torch.tensor(self.depth, dtype=torch.int64),
            "yaw": torch.tensor(float(row.get("yaw", float("nan"))), dtype=torch.float32),
            "index": torch.tensor(int(i), dtype=torch.int64),
        }


class VolumeDataModule(pl.LightningDataModule):
    """Train / val / test loaders of VRN samples (crop + volume runs + landmarks) from a volume index.

    Args:
        name: dataset name for logs and reports (``synthetic_3d``, ``w300lp``, ``aflw2000``).
        volumes_dir: folder holding ``volume_index.csv`` and the store shards it names.
        builder: called as ``builder(output_dir=Path(volumes_dir))`` by :meth:`prepare_data` when the index is
            absent; it must write the index (:func:`~faceforge.data.reconstruction.builders.build_w300lp_volumes`,
            the synthetic generator).
        batch_size: samples per batch.
        num_workers: DataLoader worker processes.
        pin_memory: pin host memory of batches (GPU training).
        persistent_workers: keep workers alive between epochs (only with ``num_workers > 0``).
        augment: the training augmentation as a primitive dict (:class:`VolumeAugmentation` arguments: the thesis
            ranges are ``{rotation_deg: 45, translation_px: 15, reference_size: 192, scale: [0.85, 1.15], flip_p:
            0.5, colour_scale: [0.6, 1.4]}``); None disables it.
        same_split_for_all: serve ALL samples in train, val and test (smoke tests on tiny data only; warns).
        max_samples: keep at most this many samples per split (the first ones, in index order); None keeps all.
        seed: seed of the training shuffle and of the augmentation draws.
        image_size, volume_depth: the data's shape (crop side in pixels, depth levels), checked against the stored
            volumes when given; the model configs read them (``${data.image_size}``) for their output shape, and
            ``volumes_dir`` / the builder use them. None: whatever is stored.
        network: older configs' and checkpoints' ``{"image_size": S, "volume_depth": D, ...}``; only those two
            keys are used, as ``image_size`` / ``volume_depth`` (the other network sizes now live in the model
            configs).
        root, model_dir, noneck_dir: where real volumes come from (the dataset folder, the morphable model and the
            no-neck topology): the ``data=w300lp`` / ``data=aflw2000`` configs hand them to the builder; here they
            are recorded in the report, and an existing index whose samples come from a folder other than ``root``
            is refused (two datasets never share a ``volumes_dir`` by accident).

    Attributes (after :meth:`setup`):
        store: the :class:`VolumeStore` over all shards.
        datasets: split -> :class:`VolumeDataset` (absent splits have none).
        sample_ids: split -> sample ids in dataset order (``batch["index"]`` indexes it).
        size, depth: crop side and depth levels of the stored volumes.
        report: JSON-able dict of what was read (counts per split, sizes, generation report summary).

    Raises:
        ValueError: on a bad batch size or max_samples.
        faceforge.data.reconstruction.augment.AugmentationConfigError: on a bad ``augment`` dict.
    """

    def __init__(self, name: str, volumes_dir: str, builder: Callable[..., Any] | None = None, batch_size: int = 8,
                 num_workers: int = 0, pin_memory: bool = False, persistent_workers: bool = False,
                 augment: Mapping[str, Any] | None = None, same_split_for_all: bool = False,
                 max_samples: int | None = None, seed: int = 0, image_size: int | None = None,
                 volume_depth: int | None = None, root: str | None = None, model_dir: str | None = None,
                 noneck_dir: str | None = None, network: Mapping[str, Any] | None = None) -> None:
        super().__init__()
        name, volumes_dir = str(name), str(volumes_dir)
        root, model_dir, noneck_dir = (None if v is None else str(v) for v in (root, model_dir, noneck_dir))
        augment = dict(augment) if augment is not None else None
        if network is not None:  # older configs: data.network.{image_size, volume_depth}
            image_size = network.get("image_size", image_size) if image_size is None else image_size
            volume_depth = network.get("volume_depth", volume_depth) if volume_depth is None else volume_depth
            network = None
        image_size = None if image_size is None else int(image_size)
        volume_depth = None if volume_depth is None else int(volume_depth)
        if int(batch_size) < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        if max_samples is not None and int(max_samples) < 1:
            raise ValueError(f"max_samples must be >= 1 or None, got {max_samples}")
        self.save_hyperparameters(ignore=["builder"], logger=False)
        self.name = name
        self.volumes_dir = Path(volumes_dir)
        self.builder = builder
        self.batch_size = int(batch_size)
        self.num_workers = int(num_workers)
        self.pin_memory = bool(pin_memory)
        self.persistent_workers = bool(persistent_workers)
        self.augmentation = VolumeAugmentation.from_config(augment)
        self.same_split_for_all = bool(same_split_for_all)
        self.max_samples = int(max_samples) if max_samples is not None else None
        self.seed = int(seed)
        self.image_size, self.volume_depth = image_size, volume_depth
        self.store: VolumeStore | None = None
        self.datasets: dict[str, VolumeDataset] = {}
        self.sample_ids: dict[str, list[str]] = {}
        self.size: int | None = None
        self.depth: int | None = None
        self.report: dict[str, Any] = {}
        self._is_setup = False
        self._train_statistics: TrainStatistics | None = None

    # ------------------------------------------------------------------ preparation
    @property
    def index_path(self) -> Path:
        """``<volumes_dir>/volume_index.csv``."""
        return self.volumes_dir / INDEX_FILENAME

    def _no_index_message(self) -> str:
        return (f"no volume index at {self.index_path}: dataset '{self.name}' has not been prepared. Generate the "
                f"volumes first, e.g. `faceforge-make-volumes --root ... --output {self.volumes_dir} --model-dir ... "
                f"--noneck-dir ...`, or use data=w300lp / data=aflw2000 with data.root, data.model_dir and "
                f"data.noneck_dir (they build the volumes), or data=synthetic_3d, which builds its own data")

    def prepare_data(self) -> None:
        """Make sure the volume index exists: call ``builder(output_dir=Path(volumes_dir))`` once if it is absent.

        Raises:
            VolumeDataError: the index is absent and there is no builder, the builder did not write it, or the
                folder was built with other settings (see :mod:`faceforge.data.core.prepared`).
        """
        ensure_built(self.volumes_dir, INDEX_FILENAME, self.builder, VolumeDataError, self._no_index_message(),
                     "data.volumes_dir")

    def _read_rows(self) -> list[dict[str, Any]]:
        if not self.index_path.is_file():
            raise VolumeDataError(self._no_index_message())
        try:
            return read_volume_index(self.index_path)
        except VolumeGenerationError as exc:
            raise VolumeDataError(str(exc)) from exc

    def has_split(self, name: str) -> bool:
        """Whether split ``name`` has samples (reads the index if :meth:`setup` has not run; False without one)."""
        if self._is_setup:
            return name in self.datasets
        if not self.index_path.is_file():
            return False
        rows = self._read_rows()
        return bool(rows) and (self.same_split_for_all or any(r["split"] == name for r in rows))

    # ------------------------------------------------------------------ setup
    def setup(self, stage: str | None = None) -> None:
        """Read the index, open the stores, check sizes and make the split datasets (idempotent).

        Raises:
            VolumeDataError: no index or an empty one, samples missing from the stores, or stores whose size /
                depth differ from ``image_size`` / ``volume_depth``.
            faceforge.data.reconstruction.store.VolumeStoreError: a missing or corrupt shard file.
        """
        if self._is_setup:
            return
        rows = self._read_rows()
        if not rows:
            raise VolumeDataError(f"{self.index_path} lists no samples (see {self.volumes_dir / REPORT_FILENAME} "
                                  f"for the skipped ones)")
        self._check_root(rows)
        files = list(dict.fromkeys(r["store_file"] for r in rows))
        self.store = VolumeStore([self.volumes_dir / f for f in files])
        self.size, self.depth = int(self.store.size), int(self.store.depth)
        want = (self.image_size, self.volume_depth)
        if (want[0] is not None and want[0] != self.size) or (want[1] is not None and want[1] != self.depth):
            raise VolumeDataError(
                f"{self.volumes_dir} holds {self.size}x{self.size} crops with {self.depth} depth levels but "
                f"the data config asks for image_size={want[0]}, volume_depth={want[1]}: point data.volumes_dir at "
                f"volumes of that size (or delete {self.index_path} to rebuild)")
        report: dict[str, Any] = {"dataset": self.name, "volumes_dir": str(self.volumes_dir),
                                  "source": {"root": self.hparams.root, "model_dir": self.hparams.model_dir,
                                             "noneck_dir": self.hparams.noneck_dir},
                                  "samples_in_index": len(rows), "size": self.size, "depth": self.depth,
                                  "store_files": files, "augment": self.augmentation.to_dict()
                                  if self.augmentation is not None else None,
                                  "same_split_for_all": self.same_split_for_all,
                                  "mesh_sources": dict(Counter(r["mesh_source"] for r in rows)),
                                  "landmarks_sources": dict(Counter(r["landmarks_source"] for r in rows))}
        gen_report = self.volumes_dir / REPORT_FILENAME
        if gen_report.is_file():
            try:
                gen = json.loads(gen_report.read_text(encoding="utf-8"))
                report["generation"] = {k: gen.get(k) for k in ("total", "stored", "skipped", "num_skipped",
                                                                  "clipped_samples", "mesh_sources")}
            except (OSError, ValueError):
                report["generation"] = None
        unknown = sorted({r["split"] for r in rows} - set(SPLITS))
        if unknown:
            warnings.warn(f"{self.index_path}: samples with splits {unknown} are not served", stacklevel=2)
        if self.same_split_for_all:
            warnings.warn(f"same_split_for_all=True: train, val and test ALL hold every sample of {self.index_path}; "
                          f"validation and test numbers are meaningless (smoke tests only)", SameSplitWarning,
                          stacklevel=2)
            by_split = {s: list(rows) for s in SPLITS}
        else:
            by_split = {s: [r for r in rows if r["split"] == s] for s in SPLITS}
        if self.max_samples is not None:
            by_split = {s: r[: self.max_samples] for s, r in by_split.items()}
        self.datasets = {}
        for split, split_rows in by_split.items():
            if split_rows:
                self.datasets[split] = VolumeDataset(self.store, split_rows,
                                                     augment=self.augmentation if split == "train" else None,
                                                     seed=self.seed)
        self.sample_ids = {s: d.sample_ids for s, d in self.datasets.items()}
        report["splits"] = {s: len(by_split[s]) for s in SPLITS}
        self.report = report
        self._is_setup = True
        log.info("volume data '%s' from %s: %s", self.name, self.volumes_dir, report["splits"])

    def _check_root(self, rows: list[dict[str, Any]]) -> None:
        root = self.hparams.root
        sources = [r["image_path"] for r in rows if r.get("image_path")]
        if root is None or not sources:
            return
        want = Path(root).resolve()
        first = Path(sources[0]).resolve()
        if want != first and want not in first.parents:
            raise VolumeDataError(f"{self.index_path} holds volumes made from {first.parent}, not from data.root={root}"
                                  f": point data.volumes_dir at another folder (or delete {self.volumes_dir} to "
                                  f"rebuild it)")

    # ------------------------------------------------------------------ loaders
    def _dataset(self, split: str) -> VolumeDataset:
        if not self._is_setup:
            raise VolumeDataError(f"VolumeDataModule('{self.name}') is not set up: call prepare_data() and setup() "
                                  f"first")
        if split not in self.datasets:
            hint = (" (a flat AFLW2000-3D-style folder is all 'test': evaluate it with evaluate.py; for a tiny smoke "
                    "test set data.same_split_for_all=true)")
            raise VolumeDataError(f"split '{split}' of {self.volumes_dir} has no samples, so there is no {split} "
                                  f"loader; splits: {self.report.get('splits')}{hint}")
        return self.datasets[split]

    def _loader(self, dataset: VolumeDataset, train: bool) -> DataLoader:
        if train:  # seeded per epoch, resumable mid-epoch (faceforge.data.core.sampler)
            return build_train_loader(dataset, self.batch_size, self.seed, num_workers=self.num_workers,
                                      pin_memory=self.pin_memory, persistent_workers=self.persistent_workers)
        # every sample once, in order; under DDP split across ranks without the padding repeats of Lightning's
        # DistributedSampler, so no sample counts twice in a metric
        return build_eval_loader(dataset, self.batch_size, num_workers=self.num_workers, pin_memory=self.pin_memory,
                                 persistent_workers=self.persistent_workers)

    def train_dataloader(self) -> DataLoader:
        """Shuffled, augmented training loader (drops the last partial batch when there is more than one)."""
        return self._loader(self._dataset("train"), train=True)

    def val_dataloader(self) -> DataLoader:
        """Validation loader, index order, no augmentation."""
        return self._loader(self._dataset("val"), train=False)

    def test_dataloader(self) -> DataLoader:
        """Test loader, index order, no augmentation."""
        return self._loader(self._dataset("test"), train=False)

    # ------------------------------------------------------------------ what a task may ask (faceforge.tasks.protocols)
    def item_names(self, split: str) -> list[str] | None:
        """Sample ids of ``split`` in dataset order (``batch["index"]`` indexes them); None for an absent split."""
        return self.sample_ids.get(split)

    def group_names(self) -> list[str] | None:
        """Volume data has no groups: None."""
        return None

    # ------------------------------------------------------------------ on the device
    def on_after_batch_transfer(self, batch: Any, dataloader_idx: int) -> Any:
        """Decode the target volumes on the batch's device (the GPU when training there): the run maps ``start`` /
        ``stop`` (B, S, S) and ``depth`` (B,) become ``volume`` float32 (B, D, S, S), 1 inside the face (voxels
        ``start <= k < stop``, :func:`faceforge.data.reconstruction.codec.decode_runs`), 0 outside. Tasks receive
        batches decoded; a batch without run maps passes unchanged.

        Raises:
            VolumeDataError: the samples of one batch have different depths.
        """
        if not (isinstance(batch, dict) and "start" in batch and "stop" in batch):
            return batch
        start, stop = batch.pop("start"), batch.pop("stop")
        depths = batch["depth"].reshape(-1) if "depth" in batch else None
        depth = int(depths[0]) if depths is not None and depths.numel() else int(self.depth or 0)
        if depths is not None and bool((depths != depth).any()):
            raise VolumeDataError(f"{self.volumes_dir}: one batch holds volumes of depths "
                                  f"{sorted(set(depths.tolist()))}")
        batch["volume"] = decode_runs(start, stop, depth, dtype=torch.float32)
        return batch

    # ------------------------------------------------------------------ the trivial baseline
    def train_statistics(self) -> TrainStatistics | None:
        """Mean occupancy and mean landmarks of the training split as stored (no augmentation), or None without a
        training split: the trivial baseline the task reports beside the model
        (:func:`faceforge.data.reconstruction.statistics.volume_train_statistics`). Computed once, then cached.

        Raises:
            VolumeDataError: if the module is not set up.
        """
        if "train" not in self.datasets:
            if not self._is_setup:
                raise VolumeDataError(f"VolumeDataModule('{self.name}') is not set up: call setup() first")
            return None
        if self._train_statistics is None:
            ds = self.datasets["train"]
            self._train_statistics = volume_train_statistics(ds.store.read_runs, ds.store.read_landmarks,
                                                             ds.positions, ds.depth, ds.size)
        return self._train_statistics
