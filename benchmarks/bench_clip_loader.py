"""Clip-loader throughput: a naive loader that decodes each clip's T crop files one by one versus FaceDataModule's
clip loader (FaceClipDataset over the uint8 crop cache).

Reproduce (from the repository root)::

    .venv/bin/python benchmarks/bench_clip_loader.py --num-workers 2 --batch-size 4 --clip-length 10 --repeats 3

Both loaders run side by side in the same process, on the same train split (synthetic videos of
``--frames-per-video`` frames with ``--crop-size`` px PNG crops, as face extraction stores them, built once into
``--data-dir``), serve the same clips (``T = --clip-length`` frames per video picked with the same
:func:`faceforge.data.detection.clips.clip_positions` rule, evenly spaced with a random offset) at the same size
(``--image-size``, the ResNeXt-LSTM's 112 px by default), with the same batch size, worker count, shuffling,
albumentations train transform (conf/data/face_base.yaml, applied with one set of parameters per clip via
``images=``) and torch/OpenCV thread settings:

(a) naive: per clip, ``PIL.Image.open(path).convert("RGB")`` for each of its T crop files, PIL bilinear resize to
    the served size, stack, transform, ``torch.from_numpy``;
(b) ours: ``FaceDataModule(clip_length=T, cache_crops=True).train_dataloader()`` (crops read from the memmap cache,
    already at the served size).

The cache build (once per index and size) is timed separately. Timings interleave a/b ``--repeats`` times and
report the median clips/s; the first batch of every pass (worker start-up) is excluded. The PNGs and the cache are
in the page cache for both (the dataset was just written), so this measures decoding and resizing, not the disk.

Measured on 2 shared CPU cores (load ~2), 96 synthetic videos x 32 frames (train split: 56 clips), 256 px PNG
crops served at 112 px, T = 10, batch 4, 2 workers, ``--epochs 6 --repeats 3`` (median clips/s):

=====================  ===========  ==================  ========
transform              (a) naive    (b) cache + clips   (b)/(a)
=====================  ===========  ==================  ========
face_base.yaml         100 clips/s  498 clips/s         5.0x
none                   117 clips/s  860 clips/s         7.4x
=====================  ===========  ==================  ========

The crop-cache build for this split (3 s, 110 MiB at 112 px) is paid once per index and size.
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

from faceforge.data.detection.clips import FaceClipDataset, clip_positions
from faceforge.data.detection.datamodule import FaceDataModule


class NaiveClipDataset(Dataset):
    """Per clip: T PIL decodes from disk + PIL resize + stack + transform (the reference loop).

    Uses the frame lists of a :class:`FaceClipDataset` (so both loaders serve the same videos and frames) but none
    of its loading code.
    """

    def __init__(self, clips: FaceClipDataset, index_root: Path, crop_paths: np.ndarray, size: int,
                 transform: Any) -> None:
        self.paths = [str(index_root / p) for p in crop_paths[clips.frame_rows].tolist()]
        self.offsets = clips.offsets
        self.labels = clips.video_labels
        self.clip_length = clips.clip_length
        self.size = size
        self.transform = transform

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, v: int) -> dict[str, torch.Tensor]:
        start, end = int(self.offsets[v]), int(self.offsets[v + 1])
        pos = clip_positions(end - start, self.clip_length, "evenly", float(np.random.random()))
        frames = []
        for p in pos.tolist():
            with Image.open(self.paths[start + p]) as im:
                frames.append(np.asarray(im.convert("RGB").resize((self.size, self.size), Image.BILINEAR)))
        clip = np.stack(frames)
        if self.transform is not None:
            clip = self.transform(images=clip)["images"]
        return {"image": torch.from_numpy(np.ascontiguousarray(clip.transpose(0, 3, 1, 2))),
                "lengths": torch.tensor(len(pos)), "label": torch.tensor(self.labels[v])}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data-dir", type=Path, default=Path(tempfile.gettempdir()) / "faceforge_bench_clips")
    p.add_argument("--num-videos", type=int, default=96)
    p.add_argument("--frames-per-video", type=int, default=32)
    p.add_argument("--crop-size", type=int, default=256, help="side of the stored PNG crops")
    p.add_argument("--image-size", type=int, default=112, help="side of the served frames")
    p.add_argument("--clip-length", type=int, default=10)
    p.add_argument("--batch-size", type=int, default=4)
    p.add_argument("--num-workers", type=int, default=2)
    p.add_argument("--epochs", type=int, default=2, help="passes over the train split per timing")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--no-transform", action="store_true", help="time decoding alone (no augmentation)")
    a = p.parse_args()
    single_threaded()

    faces = synthetic_faces(a.data_dir, a.num_videos, a.frames_per_video, a.crop_size)
    transform = None if a.no_transform else train_transform()

    dm = FaceDataModule("synthetic", str(faces), batch_size=a.batch_size, num_workers=a.num_workers,
                        train_transform=transform, image_size=a.image_size, cache_crops=True,
                        clip_length=a.clip_length)
    for f in (faces / "cache").glob(f"crops_{a.image_size}px_*"):
        f.unlink()  # time a fresh cache build
    t0 = time.perf_counter()
    dm.setup("fit")
    build_s = time.perf_counter() - t0
    ours = dm.train_dataloader()
    train = dm.split_indexes["train"]
    naive = DataLoader(NaiveClipDataset(dm.train_dataset, train.root, train.columns["crop_path"], a.image_size,
                                        transform),
                       batch_size=a.batch_size, shuffle=True, num_workers=a.num_workers, drop_last=ours.drop_last,
                       generator=torch.Generator().manual_seed(0))

    naive_r, ours_r = [], []
    for _ in range(a.repeats):
        naive_r.append(items_per_second(naive, a.epochs))
        ours_r.append(items_per_second(ours, a.epochs))
    n, o = statistics.median(naive_r), statistics.median(ours_r)
    t = a.clip_length
    print(f"command: {' '.join(sys.argv)}")
    print(f"train split: {len(dm.train_dataset)} clips of {t} frames from {a.frames_per_video}-frame videos, "
          f"{a.crop_size}px crops served at {a.image_size}px, batch {a.batch_size}, {a.num_workers} workers, "
          f"transform: {'none' if transform is None else 'conf/data/face_base.yaml'}")
    print(f"setup incl. crop cache build: {build_s:.2f} s ({dm.cache.path.stat().st_size / 2**20:.0f} MiB)")
    print(f"(a) naive: T PIL decodes per clip  : {n:8.1f} clips/s = {n * t:7.0f} frames/s "
          f"(runs: {', '.join(f'{v:.1f}' for v in naive_r)})")
    print(f"(b) FaceDataModule clips + cache    : {o:8.1f} clips/s = {o * t:7.0f} frames/s "
          f"(runs: {', '.join(f'{v:.1f}' for v in ours_r)})")
    print(f"speed-up (b)/(a): {o / n:.2f}x")


if __name__ == "__main__":
    main()
