"""Training-loader throughput: a naive per-sample PNG loop versus FaceDataModule with the crop cache.

Reproduce (from the repository root)::

    .venv/bin/python benchmarks/bench_loader.py --num-workers 2 --batch-size 32 --epochs 3 --repeats 3

Both loaders run side by side in the same process, on the same crops (the train split of the default synthetic
dataset, 256 px PNGs, built once into ``--data-dir``), with the same albumentations train transform (the one of
``conf/data/face_base.yaml``), the same batch size, worker count, shuffling and torch/OpenCV thread settings:

(a) naive: ``PIL.Image.open`` + ``np.asarray`` + transform + ``torch.from_numpy`` per sample, batched by a
    DataLoader (what most detection repositories do);
(b) ours: ``FaceDataModule(cache_crops=True).train_dataloader()`` (crops read from the uint8 memmap cache).

The cache build (once per index) is timed separately. Timings interleave a/b ``--repeats`` times and report the
median images/s; the first batch of every pass (worker start-up) is excluded. The PNGs and the cache are in the
page cache for both (the dataset was just written), so this measures decoding, not the disk.
"""
from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from loader_common import items_per_second, single_threaded, synthetic_faces, train_transform

from faceforge.data.detection.datamodule import FaceDataModule
from faceforge.data.detection.face_index import FaceIndex


class NaiveDataset(Dataset):
    """Per-sample PIL decode + albumentations + tensor conversion (the reference loop)."""

    def __init__(self, index: FaceIndex, transform: Any) -> None:
        self.paths = [str(index.crop_file(i)) for i in range(len(index))]
        self.labels = index.columns["label"].astype(np.int64)
        self.transform = transform

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        img = np.asarray(Image.open(self.paths[i]).convert("RGB"))
        if self.transform is not None:
            img = self.transform(image=img)["image"]
        return {"image": torch.from_numpy(np.ascontiguousarray(img.transpose(2, 0, 1))),
                "label": torch.tensor(self.labels[i])}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data-dir", type=Path, default=Path(tempfile.gettempdir()) / "faceforge_bench_loader")
    p.add_argument("--num-videos", type=int, default=48)
    p.add_argument("--frames-per-video", type=int, default=8)
    p.add_argument("--image-size", type=int, default=256)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--num-workers", type=int, default=2)
    p.add_argument("--epochs", type=int, default=3, help="passes over the train split per timing")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--no-transform", action="store_true", help="time decoding alone (no augmentation)")
    a = p.parse_args()
    single_threaded()

    faces = synthetic_faces(a.data_dir, a.num_videos, a.frames_per_video, a.image_size)
    transform = None if a.no_transform else train_transform()

    dm = FaceDataModule("synthetic", str(faces), batch_size=a.batch_size, num_workers=a.num_workers,
                        train_transform=transform, image_size=a.image_size, cache_crops=True)
    for f in (faces / "cache").glob("crops_*"):
        f.unlink()  # time a fresh cache build
    t0 = time.perf_counter()
    dm.setup("fit")
    build_s = time.perf_counter() - t0
    ours = dm.train_dataloader()
    naive = DataLoader(NaiveDataset(dm.split_indexes["train"], transform), batch_size=a.batch_size, shuffle=True,
                       num_workers=a.num_workers, drop_last=ours.drop_last,
                       generator=torch.Generator().manual_seed(0))

    naive_r, ours_r = [], []
    for _ in range(a.repeats):
        naive_r.append(items_per_second(naive, a.epochs))
        ours_r.append(items_per_second(ours, a.epochs))
    n, o = statistics.median(naive_r), statistics.median(ours_r)
    print(f"train split: {len(dm.train_dataset)} crops at {a.image_size}px, batch {a.batch_size}, "
          f"{a.num_workers} workers, transform: {'none' if transform is None else 'conf/data/face_base.yaml'}")
    print(f"setup incl. crop cache build: {build_s:.2f} s ({dm.cache.path.stat().st_size / 2**20:.0f} MiB)")
    print(f"(a) naive PIL + albumentations : {n:8.1f} images/s  (runs: {', '.join(f'{v:.0f}' for v in naive_r)})")
    print(f"(b) FaceDataModule + crop cache: {o:8.1f} images/s  (runs: {', '.join(f'{v:.0f}' for v in ours_r)})")
    print(f"speed-up (b)/(a): {o / n:.2f}x (target >= 2x)")


if __name__ == "__main__":
    main()
