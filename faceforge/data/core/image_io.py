"""Reading face-crop images as RGB uint8 arrays, with bad input reported instead of crashing deep in PIL.

:func:`read_rgb_image` is the one place the detection data code decodes an image file. Every image comes back
as an ``(H, W, 3)`` ``uint8`` RGB array, whatever its stored mode; each conversion it had to make is reported
(an :class:`ImageConversionWarning` naming the file, throttled to a few per kind and process, and a count in an
:class:`ImageReadStats` the caller passes in). Files that cannot be decoded raise :class:`ImageReadError`, whose
message names the file and the reason.

Conversions (kind names as counted in :class:`ImageReadStats`):

=================  ===========================================================================================
kind               what is done
=================  ===========================================================================================
``grayscale``      ``L`` (8-bit gray) or ``1`` (bilevel): the gray channel is replicated to R, G and B.
``gray16``         ``I;16*`` / ``I`` (16/32-bit integer gray): scaled to 8 bits by ``round(v / 257)`` (clipped
                   to [0, 65535] first), then replicated to 3 channels.
``alpha``          ``RGBA``, ``LA``, ``PA``, ``RGBa``, ``La``: the alpha channel is dropped by compositing the
                   colour onto BLACK: ``out = round(rgb * alpha / 255)``. A fully opaque alpha (255 everywhere)
                   therefore leaves the pixels unchanged; transparent pixels become black, which is what a face
                   crop pasted on an empty canvas should look like (the colour stored under alpha 0 is arbitrary).
``palette``        ``P``: the palette is expanded to RGB (palette transparency, if any, is composited onto black
                   as for ``alpha``, and counted as ``palette``).
``colorspace``     ``CMYK``, ``YCbCr``, ``LAB``, ``HSV``: converted to RGB by PIL.
=================  ===========================================================================================

Floating-point images (mode ``F``) and anything PIL cannot identify raise :class:`ImageReadError`. EXIF orientation
tags are NOT applied (face crops written by this project carry none; the stored pixel grid is returned as is).
"""
from __future__ import annotations

import io
import threading
import warnings
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cv2
import numpy as np
from PIL import Image, UnidentifiedImageError

from faceforge.errors import FaceforgeError

#: Warnings per conversion kind and process before further ones are only counted.
MAX_WARNINGS_PER_KIND = 5

INTERPOLATIONS = ("area", "linear", "cubic", "nearest")

_warn_lock = threading.Lock()
_warned: Counter[str] = Counter()


class ImageReadError(FaceforgeError, OSError):
    """An image file is missing, unreadable, truncated or of an unsupported kind.

    Attributes:
        path: the file.
        reason: what is wrong, in words.
    """

    def __init__(self, path: str | Path, reason: str) -> None:
        self.path = str(path)
        self.reason = reason
        super().__init__(f"cannot read image {self.path}: {reason}")

    def __reduce__(self) -> tuple[Any, ...]:  # picklable across DataLoader workers
        return (type(self), (self.path, self.reason))


class ImageConversionWarning(UserWarning):
    """An image was not stored as 8-bit RGB and was converted (the message names the file and the conversion)."""


@dataclass
class ImageReadStats:
    """Counts of the conversions :func:`read_rgb_image` made, with the first few file names per kind.

    Counts are per process: a DataLoader worker's counts stay in that worker. The DataModule reads every crop
    once in the main process when it builds the crop cache, so its report holds the counts for the whole index.

    Attributes:
        conversions: kind (``grayscale``, ``gray16``, ``alpha``, ``palette``, ``colorspace``) -> number of files.
        examples: kind -> up to ``max_examples`` file names.
        max_examples: how many names to keep per kind.
    """

    conversions: Counter = field(default_factory=Counter)
    examples: dict[str, list[str]] = field(default_factory=dict)
    max_examples: int = 5

    def record(self, kind: str, path: str | Path) -> None:
        """Count one conversion of ``kind`` for ``path``."""
        self.conversions[kind] += 1
        names = self.examples.setdefault(kind, [])
        if len(names) < self.max_examples:
            names.append(str(path))

    def merge(self, other: ImageReadStats) -> None:
        """Add ``other``'s counts and examples to this object."""
        for kind, n in other.conversions.items():
            self.conversions[kind] += n
            names = self.examples.setdefault(kind, [])
            for name in other.examples.get(kind, []):
                if len(names) < self.max_examples:
                    names.append(name)

    @property
    def total(self) -> int:
        """Number of converted files."""
        return int(sum(self.conversions.values()))

    def to_dict(self) -> dict[str, Any]:
        """JSON-able summary: ``{"converted": total, "conversions": {...}, "examples": {...}}``."""
        return {"converted": self.total, "conversions": dict(sorted(self.conversions.items())),
                "examples": {k: list(v) for k, v in sorted(self.examples.items())}}


def read_rgb_image(path: str | Path, stats: ImageReadStats | None = None, data: bytes | None = None) -> np.ndarray:
    """Decode an image file into an RGB uint8 array.

    Args:
        path: image file (any format PIL reads: PNG, JPEG, BMP, WebP, TIFF, ...).
        stats: if given, each conversion made is counted in it (see the module docstring for the kinds).
        data: the file's encoded bytes, already read (e.g. from a store of encoded crops): decoded instead of
            opening ``path``, which then only names the image in messages.

    Returns:
        ``(H, W, 3)`` ``uint8`` array, RGB order, C-contiguous.

    Raises:
        ImageReadError: the file is missing, is not a file, cannot be identified as an image, is truncated or
            corrupt, is a floating-point image, or is too large for PIL's decompression-bomb limit. The message
            names the file and the reason.

    Warns:
        ImageConversionWarning: when the file was not 8-bit RGB (the first :data:`MAX_WARNINGS_PER_KIND` per kind
            and process; later ones are only counted in ``stats``).
    """
    path = Path(path)
    if data is None and not path.exists():
        raise ImageReadError(path, "file does not exist")
    if data is None and not path.is_file():
        raise ImageReadError(path, "not a regular file")
    try:
        with Image.open(path if data is None else io.BytesIO(data)) as im:
            im.load()
            arr, kind = _to_rgb(im, path)
    except ImageReadError:
        raise
    except UnidentifiedImageError:
        raise ImageReadError(path, "not a recognised image format (empty or corrupt file?)") from None
    except Image.DecompressionBombError as exc:
        raise ImageReadError(path, f"image too large ({exc})") from None
    except (OSError, SyntaxError, ValueError, EOFError) as exc:
        reason = str(exc) or type(exc).__name__
        if "truncated" in reason:
            reason = f"truncated or incomplete file ({reason})"
        raise ImageReadError(path, reason) from None
    if kind is not None:
        if stats is not None:
            stats.record(kind, path)
        _warn_conversion(kind, path)
    return arr


def _to_rgb(im: Image.Image, path: Path) -> tuple[np.ndarray, str | None]:
    """Convert a loaded PIL image to (H, W, 3) uint8 RGB; returns the array and the conversion kind (or None)."""
    mode = im.mode
    if mode == "RGB":
        return np.ascontiguousarray(np.asarray(im, dtype=np.uint8)), None
    if mode in ("L", "1"):
        gray = np.asarray(im.convert("L"), dtype=np.uint8)
        return np.ascontiguousarray(np.repeat(gray[:, :, None], 3, axis=2)), "grayscale"
    if mode.startswith("I;16") or mode == "I":
        v = np.asarray(im, dtype=np.int64) if mode == "I" else np.asarray(im.convert("I"), dtype=np.int64)
        gray = np.rint(np.clip(v, 0, 65535) / 257.0).astype(np.uint8)
        return np.ascontiguousarray(np.repeat(gray[:, :, None], 3, axis=2)), "gray16"
    if mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        return _composite_on_black(im.convert("RGBA")), "alpha"
    if mode == "P":
        if "transparency" in im.info:
            return _composite_on_black(im.convert("RGBA")), "palette"
        return np.ascontiguousarray(np.asarray(im.convert("RGB"), dtype=np.uint8)), "palette"
    if mode in ("CMYK", "YCbCr", "LAB", "HSV"):
        return np.ascontiguousarray(np.asarray(im.convert("RGB"), dtype=np.uint8)), "colorspace"
    raise ImageReadError(path, f"unsupported image mode {mode!r} (floating-point or multi-band image)")


def _composite_on_black(rgba: Image.Image) -> np.ndarray:
    a = np.asarray(rgba, dtype=np.uint16)
    out = (a[:, :, :3] * a[:, :, 3:4] + 127) // 255  # round(rgb * alpha / 255)
    return np.ascontiguousarray(out.astype(np.uint8))


def _warn_conversion(kind: str, path: Path) -> None:
    with _warn_lock:
        _warned[kind] += 1
        n = _warned[kind]
    if n <= MAX_WARNINGS_PER_KIND:
        more = (f" (further '{kind}' conversions in this process are counted but not warned)"
                if n == MAX_WARNINGS_PER_KIND else "")
        warnings.warn(f"{path}: image converted to 8-bit RGB ({_DESCRIPTIONS[kind]}){more}",
                      ImageConversionWarning, stacklevel=3)


_DESCRIPTIONS = {
    "grayscale": "grayscale replicated to 3 channels",
    "gray16": "16-bit grayscale scaled to 8 bits and replicated to 3 channels",
    "alpha": "alpha channel dropped by compositing onto black",
    "palette": "palette expanded to RGB",
    "colorspace": "colour space converted to RGB",
}


def resize_image(image: np.ndarray, size: int | tuple[int, int], interpolation: str = "area") -> np.ndarray:
    """Resize an RGB uint8 image to a fixed size (aspect ratio NOT kept: a non-square crop is stretched).

    Stretching rather than padding is what the MesoNet authors' pipeline (Keras ``target_size``) does, and face
    extraction writes square crops anyway, so it matters only for crops from elsewhere.

    Args:
        image: ``(H, W, 3)`` uint8.
        size: output side ``S`` (square) or ``(height, width)``.
        interpolation: ``"area"`` (OpenCV INTER_AREA: pixel-area averaging when shrinking, bilinear when
            enlarging; the default), ``"linear"``, ``"cubic"`` (OpenCV), or ``"nearest"`` (PIL ``NEAREST``, the
            pixel-centre rule of the MesoNet authors' preprocessing, see DESIGN.md).

    Returns:
        ``(S, S, 3)`` (or ``(height, width, 3)``) uint8, C-contiguous; the input itself when already that size.

    Raises:
        ValueError: for an unknown ``interpolation`` or an image that is not (H, W, 3) uint8.
    """
    h, w = (size, size) if isinstance(size, int) else (int(size[0]), int(size[1]))
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise ValueError(f"resize_image expects an (H, W, 3) uint8 image, got {image.shape} {image.dtype}")
    if image.shape[:2] == (h, w):
        return image
    if interpolation == "nearest":
        return np.ascontiguousarray(np.asarray(Image.fromarray(image).resize((w, h), Image.NEAREST)))
    flags = {"area": cv2.INTER_AREA, "linear": cv2.INTER_LINEAR, "cubic": cv2.INTER_CUBIC}
    if interpolation not in flags:
        raise ValueError(f"unknown interpolation {interpolation!r}; choose one of {INTERPOLATIONS}")
    return np.ascontiguousarray(cv2.resize(image, (w, h), interpolation=flags[interpolation]))
