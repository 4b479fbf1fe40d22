"""Finding 300W-LP / AFLW2000-3D samples: image + ``.mat`` 3DMM-fit pairs (Zhu et al., CVPR 2016).

:func:`find_300wlp_samples` lists the pairs of a 300W-LP tree (``AFW``, ``HELEN``, ``IBUG``, ``LFPW`` and their
``*_Flip`` mirrors) or of a flat AFLW2000-3D folder; :func:`split_of` assigns each sample its split (deterministic,
grouped by source face); :func:`label_skip_reason` names why a label could not be read
(:func:`faceforge.geometry.w300lp.read_300wlp_mat` reads the labels themselves).
"""
from __future__ import annotations

import hashlib
import os
import re
from dataclasses import dataclass
from pathlib import Path

from faceforge.data.reconstruction.errors import VolumeGenerationError

__all__ = ["IMAGE_SUFFIXES", "W300LPSample", "find_300wlp_samples", "label_skip_reason", "split_of"]

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")


@dataclass(frozen=True)
class W300LPSample:
    """One image + label pair to turn into a volume.

    Attributes:
        sample_id: the image path relative to the root without suffix, posix (``"IBUG/IBUG_image_008_1_0"``,
            ``"image00050"``); unique.
        image_path: the image file, or None when only the label was found.
        label_path: the ``.mat`` file, or None when only the image was found.
        subset: first folder under the root (``"IBUG"``, ``"IBUG_Flip"``), ``""`` for files in the root itself.
        flipped: the folder is a 300W-LP ``*_Flip`` folder (mirrored copies).
        group: the source face: subset without ``_Flip`` plus the name without its trailing pose-variant number
            (``"IBUG/IBUG_image_008_1"``); the name itself for flat folders. Splits are drawn per group.
    """

    sample_id: str
    image_path: str | None
    label_path: str | None
    subset: str = ""
    flipped: bool = False
    group: str = ""

    @property
    def flat(self) -> bool:
        """True for a file directly in the root (AFLW2000-3D style)."""
        return self.subset == ""


def find_300wlp_samples(root: str | os.PathLike) -> list[W300LPSample]:
    """Find image + ``.mat`` pairs in a 300W-LP tree or a flat folder.

    300W-LP: ``root/{AFW,HELEN,IBUG,LFPW}`` and their mirrored ``*_Flip`` copies hold ``NAME.jpg`` + ``NAME.mat``;
    any ``landmarks/`` folder (300W-LP's separate 2D landmark files) is ignored. AFLW2000-3D style: the pairs lie
    directly in ``root``. Both may be mixed; deeper folders are searched too. Images are ``.jpg``, ``.jpeg`` or
    ``.png`` (any case). An image without a label, or a label without an image, is returned with the missing
    path set to None so that generation skips and counts it.

    Args:
        root: the dataset folder.

    Returns:
        Samples sorted by ``sample_id``.

    Raises:
        VolumeGenerationError: if ``root`` is not a folder, or two images share a stem in one folder.
    """
    base = Path(root)
    if not base.is_dir():
        raise VolumeGenerationError(f"{base}: dataset root folder not found")
    found: dict[str, dict[str, Path]] = {}
    for dirpath, dirnames, filenames in os.walk(base):
        dirnames[:] = sorted(d for d in dirnames if d.lower() != "landmarks")
        folder = Path(dirpath)
        for name in sorted(filenames):
            p = folder / name
            suffix = p.suffix.lower()
            if suffix not in IMAGE_SUFFIXES and suffix != ".mat":
                continue
            rel = p.relative_to(base).with_suffix("").as_posix()
            kind = "label" if suffix == ".mat" else "image"
            entry = found.setdefault(rel, {})
            if kind in entry:
                raise VolumeGenerationError(f"{p}: two {kind} files with the stem {rel!r} ({entry[kind].name} and "
                                            f"{p.name})")
            entry[kind] = p
    samples = []
    for rel in sorted(found):
        entry = found[rel]
        parts = rel.split("/")
        subset = parts[0] if len(parts) > 1 else ""
        flipped = subset.lower().endswith("_flip")
        name = parts[-1]
        if subset:
            base_subset = subset[: -len("_flip")] if flipped else subset
            group = "/".join([base_subset, *parts[1:-1], re.sub(r"_\d+$", "", name)])
        else:
            group = name
        samples.append(W300LPSample(sample_id=rel, image_path=str(entry["image"]) if "image" in entry else None,
                                    label_path=str(entry["label"]) if "label" in entry else None, subset=subset,
                                    flipped=flipped, group=group))
    return samples


def split_of(sample: W300LPSample, val_fraction: float, flat_split: str) -> str:
    """The split of a sample: ``flat_split`` for a flat folder, else ``"val"`` for a deterministic
    ``val_fraction`` of source faces (SHA-1 of :attr:`W300LPSample.group`, so all poses and flips of a face share
    a split) and ``"train"`` for the rest."""
    if sample.flat:
        return flat_split
    h = int.from_bytes(hashlib.sha1(sample.group.encode()).digest()[:8], "big") / 2.0 ** 64
    return "val" if h < val_fraction else "train"


def label_skip_reason(msg: str) -> str:
    """The skip reason (a key of ``generation.SKIP_REASONS``) of a :class:`W300LPLabelError` message."""
    if "missing key" in msg:
        return "missing_key"
    if "NaN or inf" in msg:
        return "non_finite"
    if "file not found" in msg:
        return "missing_label"
    if "not a readable" in msg:
        return "unreadable_label"
    return "wrong_shape"
