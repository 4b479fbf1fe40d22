"""Statistics of a training split of volumes: the trivial baseline every 3D report shows beside the model.

The trivial predictor of volume regression answers every image with the same volume: the mean training volume
(per-voxel occupancy frequency over the unaugmented training samples), thresholded at 0.5 for IoU; and every face
with the same landmarks: their per-point mean over the training samples (crop pixels). A model that does not beat
it has learnt nothing about the input. :func:`volume_train_statistics` computes both from the stored run maps
without decoding a single volume: the occupancy of voxel ``(k, v, u)`` is the fraction of samples with
``start[v, u] <= k < stop[v, u]``, i.e. ``#{start <= k} - #{stop <= k}``, which cumulative histograms of the run
maps give in O(N S^2 + D S^2).
"""
from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

__all__ = ["TrainStatistics", "volume_train_statistics"]

#: Samples the statistics read at most (evenly spaced over the split): 300W-LP's 61k would take minutes to read,
#: while the mean of 10,000 differs from the full mean by well under one voxel on the IoU.
DEFAULT_MAX_SAMPLES = 10_000


@dataclass(frozen=True)
class TrainStatistics:
    """The trivial predictor's ingredients, from the training split.

    Attributes:
        mean_occupancy: (D, S, S) float32 in [0, 1], per-voxel occupancy frequency (z, y, x) of the training
            volumes as stored (no augmentation).
        mean_landmarks: (68, 2) float32 per-point mean of the training landmarks in crop pixels (x, y); NaN for a
            point no sample knows.
        num_samples: samples read.
        num_train: samples in the split.
    """

    mean_occupancy: np.ndarray
    mean_landmarks: np.ndarray
    num_samples: int
    num_train: int


def volume_train_statistics(read_runs: Callable[[int], tuple[np.ndarray, np.ndarray]],
                            read_landmarks: Callable[[int], np.ndarray | None], positions: Sequence[int],
                            depth: int, size: int, max_samples: int | None = DEFAULT_MAX_SAMPLES,
                            num_points: int = 68) -> TrainStatistics:
    """Mean occupancy and mean landmarks of the samples at ``positions`` (see the module docstring).

    Args:
        read_runs: ``position -> (start, stop)``, (S, S) integer run maps (voxel ``k`` of column ``(v, u)`` is
            filled iff ``start <= k < stop``).
        read_landmarks: ``position -> (68, 2)`` crop pixels, or None where unknown.
        positions: the training samples' positions in the store.
        depth: D, depth levels.
        size: S, crop and volume side, pixels.
        max_samples: read at most this many samples, evenly spaced over ``positions`` (None: all).
        num_points: landmarks per sample.

    Returns:
        :class:`TrainStatistics`.

    Raises:
        ValueError: no positions, or a run map whose shape is not (S, S) or whose values leave [0, D].
    """
    pos = list(positions)
    num_train = len(pos)
    if not pos:
        raise ValueError("volume_train_statistics: the training split is empty")
    if max_samples is not None and len(pos) > int(max_samples):
        pick = np.linspace(0, len(pos) - 1, int(max_samples)).round().astype(np.int64)
        pos = [pos[i] for i in pick]
    pixels = size * size
    flat = np.arange(pixels, dtype=np.int64)
    starts = np.zeros((depth + 1) * pixels, dtype=np.int64)
    stops = np.zeros((depth + 1) * pixels, dtype=np.int64)
    lmk_sum = np.zeros((num_points, 2), dtype=np.float64)
    lmk_n = np.zeros((num_points, 1), dtype=np.int64)
    for p in pos:
        start, stop = (np.asarray(m, dtype=np.int64) for m in read_runs(p))
        if start.shape != (size, size) or stop.shape != (size, size):
            raise ValueError(f"sample {p}: run maps of shape {start.shape} / {stop.shape}, expected ({size}, {size})")
        empty = stop <= start
        if (start.min() < 0) or (stop.max() > depth):
            raise ValueError(f"sample {p}: run maps leave the volume's {depth} depth levels")
        # an empty column contributes nothing: count it as [D, D)
        s0 = np.where(empty, depth, start).reshape(-1)
        s1 = np.where(empty, depth, stop).reshape(-1)
        starts += np.bincount(s0 * pixels + flat, minlength=starts.size)
        stops += np.bincount(s1 * pixels + flat, minlength=stops.size)
        lmk = read_landmarks(p)
        if lmk is not None:
            lmk = np.asarray(lmk, dtype=np.float64)[:num_points, :2]
            ok = np.isfinite(lmk).all(axis=1)
            lmk_sum[ok] += lmk[ok]
            lmk_n[ok] += 1
    # occupancy(k) = #{start <= k} - #{stop <= k}
    started = np.cumsum(starts.reshape(depth + 1, size, size), axis=0)[:depth]
    stopped = np.cumsum(stops.reshape(depth + 1, size, size), axis=0)[:depth]
    occupancy = ((started - stopped) / float(len(pos))).astype(np.float32)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean_lmk = np.where(lmk_n > 0, lmk_sum / np.maximum(lmk_n, 1), np.nan).astype(np.float32)
    return TrainStatistics(mean_occupancy=occupancy, mean_landmarks=mean_lmk, num_samples=len(pos),
                           num_train=num_train)
