"""The run-length codec of VRN training volumes: one run of filled voxels per column.

A VRN target volume (Jackson et al., ICCV 2017, Sec. 3.1; the frame of :mod:`faceforge.geometry.volume_frame`,
``(D, H, W) = (200, 192, 192)`` indexed ``[k, v, u]``) is "filled from the face surface backwards"
(:mod:`faceforge.geometry.voxelize`): each column ``(v, u)`` holds ONE run of filled voxels (from ``k = 0`` up to
the visible surface, or nothing). So the volume is exactly two (H, W) maps:

* ``start[v, u]``: first filled level, and ``stop[v, u]``: one past the last (``start == stop``: empty column),

``volume[k, v, u] = start[v, u] <= k < stop[v, u]``. For D <= 255 both are uint8: 2 x 36,864 bytes instead of the
7,372,800 bytes of the dense uint8 volume (1/100) before compression; gzip brings a generated face to about
4-8 kB, ~1/1400 of the dense volume (``start`` is all zeros for generated volumes and compresses to almost
nothing). For comparison, gzip on the dense uint8 volume gives ~88 kB but decodes ~6x slower
(``benchmarks/bench_volume_storage.py``). :func:`encode_volume` refuses a volume with a column that is not a
single run (:class:`VolumeEncodingError`): a stored volume is never silently different from the one given.

Decoding is one broadcast comparison against ``arange(D)`` (:func:`decode_volume`, :func:`decode_runs`). For
training, the cheapest design is to let the DataLoader ship the two uint8 maps (74 kB per sample) and decode on
the accelerator with :func:`decode_runs` (batched, any device), instead of shipping a 29.5 MB float32 volume per
sample through worker shared memory and the host-to-device copy. ``benchmarks/bench_volume_storage.py`` measures
both against dense uint8 HDF5 reads.

Augmentation on the maps: in-plane rotation, scaling, translation and horizontal flips of the image act on the
volume column-wise, so they can be applied to ``start`` / ``stop`` directly (warp both maps with the image's 2D
transform using nearest-neighbour sampling; for a scale factor ``a`` also scale the depths, ``stop' = round(a *
stop)`` with ``start`` = 0 kept, to keep voxels isotropic, and clip to D; a flip is ``maps[:, ::-1]``). A rotation
about the viewing axis keeps each column's depths, so it is exact on the maps. The result is again one run per
column, so it stays encodable and decodes with the same code; update the sample's :class:`VolumeFrame` and
landmarks with the same transform.

The HDF5 files holding these maps are :mod:`faceforge.data.reconstruction.store`.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from faceforge.errors import FaceforgeError
from faceforge.geometry.volume_frame import VOLUME_DEPTH, VOLUME_SIZE

if TYPE_CHECKING:  # torch is imported lazily: generation workers never need it
    import torch

__all__ = [
    "DENSE_BYTES_PER_SAMPLE",
    "EncodedVolume",
    "VolumeEncodingError",
    "decode_runs",
    "decode_volume",
    "decode_volume_numpy",
    "encode_volume",
    "run_dtype",
]

#: Bytes of one dense uint8 VRN volume (200 x 192 x 192), the baseline storage is compared with.
DENSE_BYTES_PER_SAMPLE = VOLUME_DEPTH * VOLUME_SIZE * VOLUME_SIZE


class VolumeEncodingError(FaceforgeError, ValueError):
    """A volume cannot be stored as one run per column (or its maps are malformed)."""


# ---------------------------------------------------------------------------------------------------------------
# Encoding
# ---------------------------------------------------------------------------------------------------------------

def run_dtype(depth: int) -> np.dtype:
    """dtype of the run maps for ``depth`` levels: uint8 up to 255 levels, else uint16."""
    return np.dtype(np.uint8) if depth <= 255 else np.dtype(np.uint16)


@dataclass(frozen=True, eq=False)
class EncodedVolume:
    """A binary volume with one run of filled voxels per column.

    ``volume[k, v, u] = start[v, u] <= k < stop[v, u]``.

    Attributes:
        start: (H, W) uint8 (uint16 if D > 255), first filled level of each column.
        stop: (H, W) same dtype, one past the last filled level (``start == stop``: empty column).
        depth: D, the number of levels.

    Raises:
        VolumeEncodingError: at construction, if the maps differ in shape, are not 2-D integer arrays, or violate
            ``0 <= start <= stop <= depth``.
    """

    start: np.ndarray
    stop: np.ndarray
    depth: int = VOLUME_DEPTH

    def __post_init__(self) -> None:
        start, stop = np.asarray(self.start), np.asarray(self.stop)
        if start.ndim != 2 or start.shape != stop.shape:
            raise VolumeEncodingError(f"start and stop must be (H, W) maps of one shape, got {start.shape} and "
                                      f"{stop.shape}")
        for name, arr in (("start", start), ("stop", stop)):
            if not np.issubdtype(arr.dtype, np.integer):
                raise VolumeEncodingError(f"{name} must be an integer map, got {arr.dtype}")
        depth = int(self.depth)
        if depth <= 0 or depth > 65535:
            raise VolumeEncodingError(f"depth must lie in [1, 65535], got {depth}")
        if start.size and (start.min() < 0 or np.any(start > stop) or stop.max() > depth):
            raise VolumeEncodingError(f"runs must satisfy 0 <= start <= stop <= depth ({depth})")
        dt = run_dtype(depth)
        object.__setattr__(self, "start", np.ascontiguousarray(start, dtype=dt))
        object.__setattr__(self, "stop", np.ascontiguousarray(stop, dtype=dt))
        object.__setattr__(self, "depth", depth)

    @classmethod
    def from_heights(cls, heights: np.ndarray, depth: int = VOLUME_DEPTH) -> EncodedVolume:
        """Runs ``[0, heights)`` (a height map, as :class:`faceforge.geometry.voxelize.FaceColumns` has)."""
        h = np.asarray(heights)
        return cls(start=np.zeros(h.shape, dtype=run_dtype(depth)), stop=h, depth=depth)

    @property
    def shape(self) -> tuple[int, int, int]:
        """(D, H, W) of the decoded volume."""
        return (self.depth, *self.start.shape)

    @property
    def nbytes(self) -> int:
        """Uncompressed bytes of the two maps."""
        return int(self.start.nbytes + self.stop.nbytes)

    @property
    def mask(self) -> np.ndarray:
        """(H, W) bool, non-empty columns."""
        return self.stop > self.start

    @property
    def filled_voxels(self) -> int:
        """Number of filled voxels."""
        return int((self.stop.astype(np.int64) - self.start).sum())

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, EncodedVolume):
            return NotImplemented
        return (self.depth == other.depth and np.array_equal(self.start, other.start)
                and np.array_equal(self.stop, other.stop))

    __hash__ = None  # type: ignore[assignment]


def encode_volume(volume: Any) -> EncodedVolume:
    """Encode a binary volume as one run per column.

    Args:
        volume: (D, H, W) array (NumPy, or anything ``np.asarray`` accepts, e.g. a CPU torch tensor) of bool, or
            of numbers that are all 0 or 1.

    Returns:
        EncodedVolume that decodes to exactly ``volume``.

    Raises:
        VolumeEncodingError: if the volume is not 3-D, holds values other than 0/1, or has a column whose filled
            voxels are not one contiguous run (the message gives the number of such columns and the first one).
    """
    vol = np.asarray(volume)
    if vol.ndim != 3:
        raise VolumeEncodingError(f"volume must be (D, H, W), got shape {vol.shape}")
    if vol.dtype != np.bool_:
        if not np.all((vol == 0) | (vol == 1)):
            raise VolumeEncodingError(f"volume must be binary (0/1), got values other than 0 and 1 "
                                      f"(dtype {vol.dtype})")
        vol = vol != 0
    depth = vol.shape[0]
    if depth == 0:
        raise VolumeEncodingError("volume has no depth levels")
    # One pass over the levels with row-wise operations (axis-0 reductions of a (D, H, W) bool array are slow):
    # count the filled voxels, the rising edges (0 -> 1 along k) and the levels at or after the first filled one.
    rows = np.ascontiguousarray(vol).view(np.uint8).reshape(depth, -1)
    count = rows[0].astype(np.int32)
    rises = rows[0].astype(np.int32)
    seen = rows[0].copy()
    seen_levels = seen.astype(np.int32)
    for k in range(1, depth):
        row = rows[k]
        count += row
        rises += row > rows[k - 1]
        seen |= row
        seen_levels += seen
    bad = rises > 1
    if np.any(bad):
        v, u = np.unravel_index(int(np.flatnonzero(bad)[0]), vol.shape[1:])
        raise VolumeEncodingError(f"{int(bad.sum())} column(s) are not a single run of filled voxels (first at "
                                  f"v={v}, u={u}: {int(rises[bad][0])} separate runs, "
                                  f"{int(count[bad][0])} filled voxels); cannot store this volume as one run per "
                                  "column")
    nonempty = count > 0
    first = depth - seen_levels
    start = np.where(nonempty, first, 0).reshape(vol.shape[1:])
    stop = np.where(nonempty, first + count, 0).reshape(vol.shape[1:])
    return EncodedVolume(start=start, stop=stop, depth=depth)


# ---------------------------------------------------------------------------------------------------------------
# Decoding
# ---------------------------------------------------------------------------------------------------------------

def _torch():
    import torch

    return torch


def _numpy_dtype(dtype: torch.dtype) -> np.dtype | None:
    torch = _torch()
    table = {torch.float32: np.float32, torch.float64: np.float64, torch.float16: np.float16,
             torch.uint8: np.uint8, torch.bool: np.bool_, torch.int8: np.int8, torch.int16: np.int16,
             torch.int32: np.int32, torch.int64: np.int64}
    return np.dtype(table[dtype]) if dtype in table else None


def _mask(start: np.ndarray, stop: np.ndarray, depth: int) -> np.ndarray:
    """(..., D, H, W) bool: ``start <= k < stop`` (one comparison when start is all 0, the generated case)."""
    k = np.arange(depth, dtype=np.int32 if depth > 255 else np.uint8).reshape(depth, 1, 1)
    s1 = np.expand_dims(stop, -3)
    if not start.any():
        return k < s1
    return (k >= np.expand_dims(start, -3)) & (k < s1)


def decode_volume_numpy(encoded: EncodedVolume, dtype: Any = np.bool_, out: np.ndarray | None = None) -> np.ndarray:
    """Decode to a dense NumPy volume.

    Args:
        encoded: the runs.
        dtype: output dtype (bool, uint8, float32, ...).
        out: optional preallocated (D, H, W) array to write into (saves the allocation; its dtype wins).

    Returns:
        (D, H, W) array: 1 (True) inside the runs, 0 elsewhere.

    Raises:
        ValueError: if ``out`` has the wrong shape.
    """
    mask = _mask(encoded.start, encoded.stop, encoded.depth)
    if out is None:
        return mask if np.dtype(dtype) == np.bool_ else mask.astype(dtype)
    if out.shape != encoded.shape:
        raise ValueError(f"out must have shape {encoded.shape}, got {out.shape}")
    np.copyto(out, mask, casting="unsafe")
    return out


def decode_volume(encoded: EncodedVolume, dtype: torch.dtype | None = None, device: Any = None,
                  out: torch.Tensor | None = None) -> torch.Tensor:
    """Decode to the dense training target (VRN's sigmoid cross-entropy target, 1 inside the face).

    On the CPU the comparison and the cast run in NumPy (faster than torch's CPU kernels for this) and the result
    is wrapped without a further copy; on another device it runs there (:func:`decode_runs`).

    Args:
        encoded: the runs.
        dtype: torch dtype of the result (default ``torch.float32``).
        device: target device (default CPU).
        out: optional preallocated (D, H, W) tensor to write into (its dtype and device win).

    Returns:
        (D, H, W) tensor, 1 inside the runs and 0 elsewhere.

    Raises:
        ValueError: if ``out`` has the wrong shape.
    """
    torch = _torch()
    dtype = torch.float32 if dtype is None else dtype
    if out is not None:
        if tuple(out.shape) != encoded.shape:
            raise ValueError(f"out must have shape {encoded.shape}, got {tuple(out.shape)}")
        return decode_runs(torch.from_numpy(encoded.start), torch.from_numpy(encoded.stop), encoded.depth, out=out)
    dev = torch.device("cpu") if device is None else torch.device(device)
    if dev.type != "cpu":
        return decode_runs(torch.from_numpy(encoded.start).to(dev), torch.from_numpy(encoded.stop).to(dev),
                           encoded.depth, dtype=dtype)
    return _from_mask(_mask(encoded.start, encoded.stop, encoded.depth), dtype)


def _from_mask(mask: np.ndarray, dtype: torch.dtype) -> torch.Tensor:
    """A torch tensor of ``dtype`` from a bool mask (NumPy's cast where it has the dtype: faster on CPU)."""
    torch = _torch()
    if dtype == torch.bool:
        return torch.from_numpy(mask)
    np_dtype = _numpy_dtype(dtype)
    if np_dtype is not None:
        return torch.from_numpy(mask.astype(np_dtype))
    return torch.from_numpy(mask.view(np.uint8)).to(dtype)  # e.g. bfloat16


def decode_runs(start: torch.Tensor, stop: torch.Tensor, depth: int, dtype: torch.dtype | None = None,
                out: torch.Tensor | None = None) -> torch.Tensor:
    """Batched decoding of run maps on any device (e.g. on the GPU inside the training step).

    Args:
        start: (..., H, W) integer tensor (uint8 / int16 / ...), first filled level per column.
        stop: (..., H, W) integer tensor, one past the last filled level.
        depth: D.
        dtype: result dtype (default ``torch.float32``); ignored when ``out`` is given.
        out: optional (..., D, H, W) tensor to write into.

    Returns:
        (..., D, H, W) tensor on the maps' device: 1 where ``start <= k < stop``, else 0.

    Raises:
        ValueError: if the maps differ in shape or ``out`` has the wrong shape.
    """
    torch = _torch()
    if start.shape != stop.shape or start.dim() < 2:
        raise ValueError(f"start and stop must be (..., H, W) of one shape, got {tuple(start.shape)} and "
                         f"{tuple(stop.shape)}")
    shape = (*start.shape[:-2], depth, *start.shape[-2:])
    if out is not None and tuple(out.shape) != shape:
        raise ValueError(f"out must have shape {shape}, got {tuple(out.shape)}")
    if start.device.type == "cpu" and (out is None or out.device.type == "cpu"):
        mask = _mask(start.numpy(), stop.numpy(), depth)
        if out is None:
            return _from_mask(mask, dtype or torch.float32)
        if out.is_contiguous() and _numpy_dtype(out.dtype) is not None:
            np.copyto(out.numpy(), mask, casting="unsafe")
            return out
        return out.copy_(torch.from_numpy(mask))
    k = torch.arange(depth, device=start.device, dtype=torch.int32).view(depth, 1, 1)
    mask = (k >= start.unsqueeze(-3).to(torch.int32)) & (k < stop.unsqueeze(-3).to(torch.int32))
    if out is not None:
        return out.copy_(mask)
    return mask.to(dtype or torch.float32)
