"""``volume_index.csv``: one row per stored VRN volume, written last by a generation run, and its readers.

:data:`INDEX_COLUMNS` lists the columns; :func:`write_volume_index` writes the file atomically,
:func:`read_volume_index` reads it back typed, :func:`open_volume_store` opens the shard files it names.
"""
from __future__ import annotations

import csv
import io
import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np

from faceforge.data.core.records import unsafe_relative_paths
from faceforge.data.reconstruction.errors import VolumeGenerationError
from faceforge.data.reconstruction.store import VolumeStore
from faceforge.utils.atomic import atomic_write_text

__all__ = ["INDEX_COLUMNS", "INDEX_FILENAME", "open_volume_store", "read_volume_index", "write_volume_index"]

INDEX_FILENAME = "volume_index.csv"

#: (column, meaning) of ``volume_index.csv``.
INDEX_COLUMNS: tuple[tuple[str, str], ...] = (
    ("sample_id", "unique id: path of the image relative to the root, without suffix (posix)"),
    ("split", "train, val or test"),
    ("subset", "first folder under the root (AFW, AFW_Flip, HELEN, ...); '' for a flat folder"),
    ("flipped", "1 for the mirrored 300W-LP copies (*_Flip folders), else 0"),
    ("group", "source face (subset without _Flip + name without the pose-variant suffix): the split unit"),
    ("image_path", "source image, as found"),
    ("label_path", "source .mat, as found"),
    ("pitch", "radians (Pose_Para[0])"),
    ("yaw", "radians (Pose_Para[1])"),
    ("roll", "radians (Pose_Para[2])"),
    ("frame_scale", "VolumeFrame.scale: crop pixels per source pixel"),
    ("frame_tx", "VolumeFrame.tx, crop pixels"),
    ("frame_ty", "VolumeFrame.ty, crop pixels"),
    ("frame_z_offset", "VolumeFrame.z_offset, depth levels"),
    ("frame_depth_scale", "VolumeFrame.depth_scale"),
    ("size", "crop side (192)"),
    ("depth", "depth levels (200)"),
    ("mesh_source", "dense, landmark_warp or mean (see face_mesh_from_label)"),
    ("landmarks_source", "pt2d (300W-LP), pt3d_68 (AFLW2000-3D) or model (projected fit)"),
    ("landmarks", "136 space-separated floats: the 68 landmarks as x y pairs in crop pixels"),
    ("filled_columns", "non-empty columns of the volume"),
    ("clipped_front", "columns whose surface was deeper than the volume (top cut off)"),
    ("clipped_back", "columns behind k = 0 (left empty)"),
    ("vertices_outside", "face vertices outside the crop"),
    ("store_file", "volume store (.h5) holding the sample, relative to the output folder"),
    ("store_row", "row of the sample in that file"),
    ("volume_bytes", "stored bytes of the volume (compressed start + stop maps)"),
    ("image_bytes", "stored bytes of the crop image"),
)
_COLUMN_NAMES = tuple(c for c, _ in INDEX_COLUMNS)
_INT_COLUMNS = {"flipped", "size", "depth", "filled_columns", "clipped_front", "clipped_back", "vertices_outside",
                "store_row", "volume_bytes", "image_bytes"}
_FLOAT_COLUMNS = {"pitch", "yaw", "roll", "frame_scale", "frame_tx", "frame_ty", "frame_z_offset",
                  "frame_depth_scale"}


def _format_cell(v: Any) -> str:
    if isinstance(v, (float, np.floating)):
        return repr(float(v))
    if isinstance(v, (bool, np.bool_)):
        return str(int(v))
    return "" if v is None else str(v)


def write_volume_index(path: Path, rows: Iterable[dict[str, Any]]) -> None:
    """Write ``rows`` (dicts keyed by :data:`INDEX_COLUMNS`) as ``volume_index.csv`` at ``path``, atomically."""
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(_COLUMN_NAMES)
    for row in rows:
        writer.writerow([_format_cell(row.get(c)) for c in _COLUMN_NAMES])
    atomic_write_text(path, buf.getvalue())


def read_volume_index(output: str | os.PathLike) -> list[dict[str, Any]]:
    """Read ``volume_index.csv`` of a generation run.

    Args:
        output: the output folder (or the CSV file itself).

    Returns:
        One dict per row with typed values: ints and floats for the numeric columns, ``landmarks`` as a (68, 2)
        float64 array (crop pixels).

    Raises:
        VolumeGenerationError: naming the file if it is missing, lacks columns, holds a malformed value, or names a
            ``store_file`` outside its folder (absolute, ``..``).
    """
    path = Path(output)
    if path.is_dir():
        path = path / INDEX_FILENAME
    if not path.is_file():
        raise VolumeGenerationError(f"{path}: volume index not found")
    with open(path, newline="", encoding="utf-8") as fh:
        reader = csv.DictReader(fh)
        missing = [c for c in _COLUMN_NAMES if c not in (reader.fieldnames or [])]
        if missing:
            raise VolumeGenerationError(f"{path}: missing columns {missing}")
        rows = []
        for i, raw in enumerate(reader):
            row: dict[str, Any] = dict(raw)
            try:
                for c in _INT_COLUMNS:
                    row[c] = int(raw[c])
                for c in _FLOAT_COLUMNS:
                    row[c] = float(raw[c])
                row["landmarks"] = np.array(raw["landmarks"].split(), dtype=np.float64).reshape(-1, 2)
            except ValueError as exc:
                raise VolumeGenerationError(f"{path}: row {i + 1}: malformed value ({exc})") from exc
            rows.append(row)
    bad = unsafe_relative_paths(dict.fromkeys(r["store_file"] for r in rows))
    if bad:
        raise VolumeGenerationError(f"{path}: store_file {bad[0]!r} is not a relative path inside {path.parent} (an "
                                    f"absolute path or a '..' component); the index is refused, nothing was opened")
    return rows


def open_volume_store(output: str | os.PathLike) -> VolumeStore:
    """A :class:`VolumeStore` over the shard files of a generation run (in index order).

    Args:
        output: the output folder.

    Returns:
        VolumeStore whose sample order is the index order.

    Raises:
        VolumeGenerationError: if the index is missing or empty.
        faceforge.data.reconstruction.store.VolumeStoreError: if a shard file is missing or corrupt.
    """
    out = Path(output)
    rows = read_volume_index(out)
    if not rows:
        raise VolumeGenerationError(f"{out / INDEX_FILENAME}: the index is empty")
    files = list(dict.fromkeys(r["store_file"] for r in rows))
    return VolumeStore([out / f for f in files])
