"""Pieces shared by the loader benchmarks (bench_loader.py, bench_clip_loader.py)."""
from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import DataLoader

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from faceforge.data.detection.face_index import INDEX_FILENAME  # noqa: E402
from faceforge.data.detection.synthetic import build_synthetic_detection  # noqa: E402


def single_threaded() -> None:
    """One torch and one OpenCV thread per process, so that worker counts alone set the parallelism."""
    import cv2

    torch.set_num_threads(1)
    cv2.setNumThreads(1)


def train_transform() -> Any:
    """The project's train transform (conf/data/face_base.yaml), instantiated as Hydra would."""
    from hydra.utils import instantiate
    from omegaconf import OmegaConf

    cfg = OmegaConf.load(ROOT / "conf" / "data" / "face_base.yaml")
    return instantiate(cfg.train_transform)


def synthetic_faces(data_dir: Path, num_videos: int, frames_per_video: int, crop_size: int) -> Path:
    """The synthetic detection dataset of these sizes under ``data_dir`` (built once, reused after)."""
    faces = data_dir / f"n{num_videos}_f{frames_per_video}_s{crop_size}"
    if not (faces / INDEX_FILENAME).is_file():
        t0 = time.perf_counter()
        build_synthetic_detection(faces, num_videos=num_videos, frames_per_video=frames_per_video,
                                  image_size=crop_size)
        print(f"built synthetic dataset in {time.perf_counter() - t0:.1f} s: {faces}")
    return faces


def items_per_second(loader: DataLoader, epochs: int) -> float:
    """Items (images or clips) per second over ``epochs`` passes, each pass's first batch (worker start-up)
    excluded."""
    n, elapsed = 0, 0.0
    for _ in range(epochs):
        it = iter(loader)
        next(it)
        t0 = time.perf_counter()
        for batch in it:
            n += batch["image"].shape[0]
        elapsed += time.perf_counter() - t0
    return n / elapsed
