"""The trivial 3D baseline: mean training occupancy from run maps, mean landmarks, and the task reporting it.

What matters: the occupancy computed from run maps equals the mean of the decoded volumes exactly (empty columns
and runs that do not start at 0 included); unknown landmarks do not pull the mean; the task keeps the baseline in
its checkpoints and still loads checkpoints written before it existed.
"""
from __future__ import annotations

import numpy as np
import pytest
import torch

from faceforge.data.reconstruction.codec import decode_runs
from faceforge.data.reconstruction.statistics import volume_train_statistics


def random_runs(rng: np.random.Generator, n: int, size: int, depth: int) -> tuple[np.ndarray, np.ndarray]:
    start = rng.integers(0, depth // 2, size=(n, size, size))
    stop = start + rng.integers(0, depth // 2 + 1, size=(n, size, size))
    stop[:, 0, :] = start[:, 0, :]  # a row of empty columns
    return start.astype(np.uint8), stop.astype(np.uint8)


def test_mean_occupancy_equals_the_mean_of_decoded_volumes() -> None:
    rng = np.random.default_rng(0)
    n, size, depth = 7, 6, 10
    start, stop = random_runs(rng, n, size, depth)
    lmk = rng.uniform(0, size, size=(n, 68, 2)).astype(np.float32)
    lmk[2] = np.nan  # a sample without landmarks
    lmk[3, 5] = np.nan  # one unknown point
    stats = volume_train_statistics(lambda i: (start[i], stop[i]), lambda i: None if i == 2 else lmk[i],
                                    range(n), depth, size)
    decoded = decode_runs(torch.from_numpy(start), torch.from_numpy(stop), depth).numpy()
    np.testing.assert_allclose(stats.mean_occupancy, decoded.mean(axis=0), atol=1e-6)
    assert stats.mean_occupancy.shape == (depth, size, size) and stats.mean_occupancy.dtype == np.float32
    keep = [i for i in range(n) if i != 2]
    np.testing.assert_allclose(stats.mean_landmarks[0], lmk[keep, 0].mean(axis=0), rtol=1e-5)
    np.testing.assert_allclose(stats.mean_landmarks[5], lmk[[i for i in keep if i != 3], 5].mean(axis=0), rtol=1e-5)
    assert stats.num_samples == n and stats.num_train == n


def test_max_samples_reads_evenly_spaced_samples() -> None:
    rng = np.random.default_rng(1)
    start, stop = random_runs(rng, 9, 4, 8)
    read: list[int] = []

    def runs(i: int) -> tuple[np.ndarray, np.ndarray]:
        read.append(i)
        return start[i], stop[i]

    stats = volume_train_statistics(runs, lambda i: None, range(9), 8, 4, max_samples=3)
    assert read == [0, 4, 8] and stats.num_samples == 3 and stats.num_train == 9
    assert np.isnan(stats.mean_landmarks).all()


def test_bad_run_maps_and_an_empty_split_are_errors() -> None:
    with pytest.raises(ValueError, match="empty"):
        volume_train_statistics(lambda i: None, lambda i: None, [], 8, 4)
    bad = np.full((4, 4), 9, dtype=np.uint8)
    with pytest.raises(ValueError, match="depth levels"):
        volume_train_statistics(lambda i: (np.zeros((4, 4), np.uint8), bad), lambda i: None, [0], 8, 4)
    with pytest.raises(ValueError, match="shape"):
        volume_train_statistics(lambda i: (np.zeros((3, 4), np.uint8), np.zeros((3, 4), np.uint8)),
                                lambda i: None, [0], 8, 4)
