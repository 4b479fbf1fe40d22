"""Explicit, seeded frame sampling.

Which frames of a video are used matters for reproducibility (DeepfakeBench reads the first N frames, so its
numbers depend on the opening seconds only). Three modes:

* ``evenly`` (default): ``n`` frames spread over the whole video: the centres of ``n`` equal segments,
  ``floor((k + 0.5) * num_frames / n)`` for ``k = 0..n-1``. Deterministic; ``seed`` is not used.
* ``stride``: every ``stride``-th frame, ``n`` of them, from a seeded start (a strided clip placed at random in
  the video); if ``(n - 1) * stride + 1`` exceeds the video, the start is drawn in ``[0, stride)`` and all
  strided frames that fit are taken (fewer than ``n``).
* ``contiguous``: a run of ``n`` consecutive frames at a seeded start (clips for temporal models).

Seeded draws use ``numpy.random.default_rng`` seeded with a stable hash (SHA-256) of ``(seed, key)``; pass the
video id as ``key`` so each video gets its own, reproducible draw. A video with fewer than ``n`` frames yields all
its frames in every mode.
"""
from __future__ import annotations

import hashlib

import numpy as np

__all__ = ["SAMPLING_MODES", "sample_frame_indices", "seeded_rng"]

SAMPLING_MODES: tuple[str, ...] = ("evenly", "stride", "contiguous")


def seeded_rng(seed: int, key: str = "") -> np.random.Generator:
    """A NumPy generator seeded by SHA-256 of ``(seed, key)``: the same on every machine and run."""
    digest = hashlib.sha256(f"{int(seed)}\x00{key}".encode()).digest()
    return np.random.default_rng(int.from_bytes(digest[:8], "little"))


def sample_frame_indices(num_frames: int, n: int, mode: str = "evenly", stride: int = 1, seed: int = 0,
                         key: str = "") -> np.ndarray:
    """Choose which frames of a video to use.

    Args:
        num_frames: number of frames in the video (0 or less gives an empty result).
        n: number of frames wanted (>= 1).
        mode: ``evenly``, ``stride`` or ``contiguous`` (see the module docstring).
        stride: step between frames for ``stride`` mode (>= 1).
        seed: seed of the draw (``stride``/``contiguous``).
        key: per-video key mixed into the seed (e.g. the video id).

    Returns:
        (k,) int64 array of sorted unique frame indices in ``[0, num_frames)``, ``k = min(n, num_frames)``
        (fewer in ``stride`` mode when the strided clip does not fit).

    Raises:
        ValueError: if ``n < 1``, ``stride < 1`` or ``mode`` is unknown.
    """
    if mode not in SAMPLING_MODES:
        raise ValueError(f"unknown sampling mode {mode!r}; choose one of {list(SAMPLING_MODES)}")
    if n < 1:
        raise ValueError(f"number of frames to sample must be >= 1, got {n}")
    if stride < 1:
        raise ValueError(f"stride must be >= 1, got {stride}")
    num_frames = int(num_frames)
    if num_frames <= 0:
        return np.zeros(0, dtype=np.int64)
    if num_frames <= n:
        return np.arange(num_frames, dtype=np.int64)
    if mode == "evenly":
        idx = np.floor((np.arange(n, dtype=np.float64) + 0.5) * num_frames / n).astype(np.int64)
        return np.unique(np.clip(idx, 0, num_frames - 1))
    rng = seeded_rng(seed, key)
    if mode == "contiguous":
        start = int(rng.integers(0, num_frames - n + 1))
        return np.arange(start, start + n, dtype=np.int64)
    span = (n - 1) * stride + 1
    if span <= num_frames:
        start = int(rng.integers(0, num_frames - span + 1))
        return start + stride * np.arange(n, dtype=np.int64)
    start = int(rng.integers(0, min(stride, num_frames)))
    return np.arange(start, num_frames, stride, dtype=np.int64)[:n]
