"""300W-LP / AFLW2000-3D -> VRN training volumes (parallel, resumable, atomic, with a report).

For every image + 3DMM fit (``NAME.jpg`` + ``NAME.mat``; Zhu et al., CVPR 2016) this builds what VRN (Jackson et
al., ICCV 2017, Sec. 3.1) trains on:

1. the label (:func:`faceforge.geometry.w300lp.read_300wlp_mat`) and the face mesh
   (:func:`faceforge.data.reconstruction.mesh.face_mesh_from_label`),
   posed into the image with :func:`faceforge.geometry.projection.project_300wlp`;
2. a square crop around the projected no-neck mesh scaled to 192x192
   (:func:`faceforge.geometry.voxelize.crop_frame_from_points`), applied to both the image and the mesh;
3. the 200x192x192 volume "filled from the face surface backwards" with the mouth capped
   (:func:`faceforge.geometry.voxelize.face_columns`), checked and encoded as one run per column
   (:func:`faceforge.data.reconstruction.codec.encode_volume`);
4. the 192x192 crop (JPEG by default), the frame, the 68 landmarks in crop pixels and the model's 68 landmarks in
   volume coordinates, all stored with the volume in HDF5
   (:class:`faceforge.data.reconstruction.store.VolumeStoreWriter`).

What the mesh can represent depends on the morphable model (``"dense"`` fits, the ``"landmark_warp"``-ed mean, or
the ``"mean"``: :mod:`faceforge.data.reconstruction.mesh`). Samples are found by
:func:`faceforge.data.reconstruction.w300lp.find_300wlp_samples`; the index is
:mod:`faceforge.data.reconstruction.volume_index`; :mod:`faceforge.data.reconstruction.builders` loads the model and
topology and is what ``data=w300lp`` and ``faceforge-make-volumes`` run.

Outputs in ``output/``:

* ``shards/part-NNNNN-DIGEST.h5``: volume stores of up to ``shard_size`` samples each, and
  ``shards/part-NNNNN-DIGEST.json``: that shard's record (its sample ids, index rows, skipped samples). The digest
  covers the shard's sample ids, the configuration and the model, so a shard is reused only for the same inputs.
* ``volume_index.csv``: one row per stored sample
  (:data:`faceforge.data.reconstruction.volume_index.INDEX_COLUMNS`), in sample-id order, written last.
* ``volume_report.json``: counts, skipped samples with reasons, bytes per sample, clipping, timing.

Resumable: a shard is complete when its record exists (written after its ``.h5`` was renamed into place) and its
``.h5`` has the recorded size; a rerun skips complete shards and regenerates the others, so an interrupted run
continues where it stopped and a rerun of a finished one writes the same index. Skipped samples are recorded too
(``redo_skipped=True`` retries them); a shard that recorded an ``internal_error`` (a bug, not bad input) is always
regenerated. Every file is written to a temporary name and renamed (atomic). Parallel: samples are processed by
the shared runner (:func:`faceforge.data.core.runner.run_parallel`: spawned workers that exit when this process
dies, a progress bar); only the main process writes files. One run per output folder at a time.

Splits: samples in the sub-folders of a 300W-LP tree are ``"train"``, except a deterministic ``val_fraction`` of
source faces (grouped over pose variants and flips, so a face never straddles splits) that are ``"val"``; samples
directly in the root folder (an AFLW2000-3D style flat folder) get ``flat_split`` (``"test"``).
"""
from __future__ import annotations

import hashlib
import itertools
import json
import logging
import math
import os
import time
import traceback
from collections import Counter
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from faceforge.data.core.image_io import ImageReadError, read_rgb_image
from faceforge.data.core.prepared import PREPARE_REPORT, make_report
from faceforge.data.core.runner import run_parallel
from faceforge.data.detection.face_index import format_landmarks
from faceforge.data.reconstruction.codec import DENSE_BYTES_PER_SAMPLE, EncodedVolume
from faceforge.data.reconstruction.errors import VolumeGenerationError
from faceforge.data.reconstruction.mesh import MESH_MODES, face_mesh_from_label
from faceforge.data.reconstruction.store import VolumeSample, VolumeStoreWriter, encode_image
from faceforge.data.reconstruction.volume_index import INDEX_FILENAME, write_volume_index
from faceforge.data.reconstruction.w300lp import W300LPSample, label_skip_reason, split_of
from faceforge.geometry.morphable_model import MorphableModel, MorphableModelError
from faceforge.geometry.projection import ProjectionError, project_300wlp
from faceforge.geometry.volume_frame import VOLUME_DEPTH, VOLUME_SIZE, VolumeFrame
from faceforge.geometry.voxelize import (
    DEFAULT_MARGIN,
    DEFAULT_Z_MARGIN,
    FaceTopology,
    VoxelizationError,
    crop_frame_from_points,
    crop_image_to_frame,
    face_columns,
    topology_from_triangles,
)
from faceforge.geometry.w300lp import W300LPLabelError, read_300wlp_mat
from faceforge.utils.atomic import atomic_write_json

__all__ = [
    "REPORT_FILENAME",
    "SKIP_REASONS",
    "VolumeGenerationConfig",
    "VolumeReport",
    "generate_volumes",
]

log = logging.getLogger(__name__)

REPORT_FILENAME = "volume_report.json"
SHARD_DIR = "shards"
#: Version of the generation algorithm; part of every shard digest (bump it when the volumes it makes change, so
#: that reruns regenerate instead of reusing shards made by older code).
GENERATOR_VERSION = 1
_INNER = slice(17, 68)  # the 51 inner iBUG points (300W-LP's jaw follows the visible outline)

#: Why a sample can be skipped (the keys of :attr:`VolumeReport.skipped`).
SKIP_REASONS: dict[str, str] = {
    "missing_label": "image without its .mat label",
    "missing_image": ".mat label without its image",
    "missing_key": "the .mat lacks a required key (Pose_Para, Shape_Para, Exp_Para)",
    "wrong_shape": "a .mat array has the wrong shape or type",
    "non_finite": "a .mat array holds NaN or inf",
    "unreadable_label": "the .mat file cannot be read",
    "unreadable_image": "the image is missing, truncated or not an image",
    "image_size_mismatch": "the image size differs from the labels' frame (expected_image_size)",
    "model_error": "the morphable model cannot build this mesh",
    "face_outside_image": "the posed face does not lie in the image",
    "fit_mismatch": "the label's 3DMM fit is far from the label's own annotated landmarks (a bad fit)",
    "empty_volume": "the voxelised face covers no pixel of the crop",
    "internal_error": "an unexpected error (a bug): see the detail",
}


# ---------------------------------------------------------------------------------------------------------------
# Configuration and report
# ---------------------------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class VolumeGenerationConfig:
    """How volumes are made (all of it enters the shard digests: change it and shards are regenerated).

    Attributes:
        size: crop side (192, VRN).
        depth: depth levels (200, VRN).
        margin: crop margin per side as a fraction of the face box's longer side (0.1).
        z_margin: depth level of the face's rear-most vertex (2).
        depth_scale: depth levels per crop pixel (1: isotropic voxels).
        mesh: ``"auto"`` (dense if the model has dense bases, else landmark_warp if it has 68-point bases, else
            mean), ``"dense"``, ``"landmark_warp"`` or ``"mean"`` (see :func:`face_mesh_from_label`).
        expected_image_size: ``(height, width)`` the labels' pose refers to ((450, 450) for 300W-LP and
            AFLW2000-3D); an image of another size is skipped. None: accept any size (the pose's y flip then uses
            the image's own height).
        max_landmark_nme: skip a sample whose fit's 51 inner landmarks are farther than this from the label's
            annotated ones (``pt2d`` / ``pt3d_68``; mean distance / sqrt of the annotation box area): a fit that
            does not describe the annotated face. None disables the check. Released 300W-LP / AFLW2000-3D fits
            are within a few percent. (It compares the label with itself: an image paired with the wrong label
            cannot be detected this way.)
        image_codec: ``"jpeg"``, ``"png"`` or ``"raw"`` for the stored crops.
        jpeg_quality: JPEG quality of the crops (95).
        compression: ``"gzip"``, ``"lzf"`` or None for the maps.
        compression_level: gzip level (4).
        shard_size: samples per shard file (the unit of resumption).
        val_fraction: fraction of 300W-LP source faces put in the ``"val"`` split.
        flat_split: split of samples in a flat folder (AFLW2000-3D: ``"test"``).
    """

    size: int = VOLUME_SIZE
    depth: int = VOLUME_DEPTH
    margin: float = DEFAULT_MARGIN
    z_margin: float = DEFAULT_Z_MARGIN
    depth_scale: float = 1.0
    mesh: str = "auto"
    expected_image_size: tuple[int, int] | None = (450, 450)
    max_landmark_nme: float | None = 0.25
    image_codec: str = "jpeg"
    jpeg_quality: int = 95
    compression: str | None = "gzip"
    compression_level: int = 4
    shard_size: int = 500
    val_fraction: float = 0.02
    flat_split: str = "test"

    def __post_init__(self) -> None:
        if self.mesh not in MESH_MODES:
            raise VolumeGenerationError(f"mesh must be one of {MESH_MODES}, got {self.mesh!r}")
        if self.shard_size < 1:
            raise VolumeGenerationError(f"shard_size must be >= 1, got {self.shard_size}")
        if not 0.0 <= self.val_fraction <= 1.0:
            raise VolumeGenerationError(f"val_fraction must lie in [0, 1], got {self.val_fraction}")
        if self.flat_split not in ("train", "val", "test"):
            raise VolumeGenerationError(f"flat_split must be train, val or test, got {self.flat_split!r}")
        if self.expected_image_size is not None:
            object.__setattr__(self, "expected_image_size", tuple(int(x) for x in self.expected_image_size))

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-able dict."""
        d = asdict(self)
        d["expected_image_size"] = list(self.expected_image_size) if self.expected_image_size else None
        return d


@dataclass
class VolumeReport:
    """What a generation run did.

    Attributes:
        output: the output folder.
        total: samples in the run (stored + skipped).
        stored: samples with a stored volume (rows of the index).
        generated: samples processed by this run (the rest came from shards of earlier runs).
        reused: samples taken from complete shards of earlier runs.
        skipped: reason -> count (reasons: :data:`SKIP_REASONS`).
        skipped_samples: ``{"sample_id", "reason", "detail"}`` for every skipped sample.
        volume_bytes_per_sample: mean stored bytes of a volume (compressed runs).
        volume_bytes_max: largest stored volume.
        image_bytes_per_sample: mean stored bytes of a crop image.
        file_bytes_per_sample: size of all shard files / stored samples (everything included).
        dense_bytes_per_sample: bytes of the dense uint8 volume (D * H * W).
        clipped_samples: samples with at least one clipped column.
        clipped_columns: clipped columns over all samples (front and back).
        mesh_sources: mesh mode -> count.
        splits: split -> count.
        seconds: wall time of this run.
        shards: shard files of this run (relative paths).
        stale_shards: shard files in the output folder that this run's plan does not use (left in place).
        config: the configuration.
        model: description and digest of the morphable model and topology.
    """

    output: str
    total: int = 0
    stored: int = 0
    generated: int = 0
    reused: int = 0
    skipped: dict[str, int] = field(default_factory=dict)
    skipped_samples: list[dict[str, str]] = field(default_factory=list)
    volume_bytes_per_sample: float = float("nan")
    volume_bytes_max: int = 0
    image_bytes_per_sample: float = float("nan")
    file_bytes_per_sample: float = float("nan")
    dense_bytes_per_sample: int = DENSE_BYTES_PER_SAMPLE
    clipped_samples: int = 0
    clipped_columns: int = 0
    mesh_sources: dict[str, int] = field(default_factory=dict)
    splits: dict[str, int] = field(default_factory=dict)
    seconds: float = 0.0
    shards: list[str] = field(default_factory=list)
    stale_shards: list[str] = field(default_factory=list)
    config: dict[str, Any] = field(default_factory=dict)
    model: dict[str, Any] = field(default_factory=dict)

    @property
    def num_skipped(self) -> int:
        """Total skipped samples."""
        return int(sum(self.skipped.values()))

    @property
    def dense_to_stored_ratio(self) -> float:
        """Dense uint8 bytes / stored volume bytes (how many times smaller the storage is)."""
        return self.dense_bytes_per_sample / self.volume_bytes_per_sample if self.stored else float("nan")

    def to_dict(self) -> dict[str, Any]:
        """JSON-able dict (NaN becomes null when written with atomic_write_json)."""
        d = asdict(self)
        d["num_skipped"] = self.num_skipped
        d["dense_to_stored_ratio"] = self.dense_to_stored_ratio
        return d

    def summary(self) -> str:
        """A few human-readable lines."""
        lines = [(f"{self.output}: {self.stored}/{self.total} samples stored ({self.generated} processed now, "
                  f"{self.reused} reused), {self.num_skipped} skipped in {self.seconds:.1f} s")]
        if self.stored:
            lines.append(f"  volume {self.volume_bytes_per_sample:.0f} B/sample (max {self.volume_bytes_max}; dense "
                         f"uint8 {self.dense_bytes_per_sample} B: {self.dense_to_stored_ratio:.0f}x smaller), image "
                         f"{self.image_bytes_per_sample:.0f} B, all files {self.file_bytes_per_sample:.0f} B/sample")
        for reason, n in sorted(self.skipped.items()):
            lines.append(f"  skipped {reason}: {n}")
        if self.clipped_samples:
            lines.append(f"  {self.clipped_samples} samples have clipped columns ({self.clipped_columns} columns)")
        if self.stale_shards:
            lines.append(f"  {len(self.stale_shards)} stale shard file(s) left in {SHARD_DIR}/ (not in the index)")
        return "\n".join(lines)


# ---------------------------------------------------------------------------------------------------------------
# One sample (runs in the workers)
# ---------------------------------------------------------------------------------------------------------------

_WORKER: dict[str, Any] = {}


def _init_worker(model: MorphableModel, topology: FaceTopology, config: VolumeGenerationConfig,
                 limit_threads: bool = True) -> None:
    if limit_threads:
        import cv2

        cv2.setNumThreads(1)
    _WORKER.update(model=model, topology=topology, config=config)


def _skip(sample: W300LPSample, reason: str, detail: str) -> dict[str, Any]:
    return {"ok": False, "sample_id": sample.sample_id, "reason": reason, "detail": detail}


def _process_task(task: tuple[tuple[int, int], W300LPSample, str]) -> dict[str, Any]:
    _, sample, split = task
    try:
        return _process_sample(sample, split, _WORKER["model"], _WORKER["topology"], _WORKER["config"])
    except Exception as exc:  # noqa: BLE001 - a bug must be reported, not kill the run
        tb = traceback.format_exception(type(exc), exc, exc.__traceback__)
        return _skip(sample, "internal_error", f"{type(exc).__name__}: {exc} | {''.join(tb[-3:]).strip()}")


def _nme(pred: np.ndarray, gt: np.ndarray) -> float:
    wh = gt.max(axis=0) - gt.min(axis=0)
    return float(np.linalg.norm(pred - gt, axis=1).mean() / max(math.sqrt(max(wh[0] * wh[1], 0.0)), 1e-9))


def _process_sample(sample: W300LPSample, split: str, model: MorphableModel, topology: FaceTopology,
                    cfg: VolumeGenerationConfig) -> dict[str, Any]:
    if sample.label_path is None:
        return _skip(sample, "missing_label", f"{sample.image_path}: no .mat label beside the image")
    if sample.image_path is None:
        return _skip(sample, "missing_image", f"{sample.label_path}: no image beside the label")
    try:
        label = read_300wlp_mat(sample.label_path)
    except W300LPLabelError as exc:
        return _skip(sample, label_skip_reason(str(exc)), str(exc))
    try:
        image = read_rgb_image(sample.image_path)
    except ImageReadError as exc:
        return _skip(sample, "unreadable_image", str(exc))
    h, w = image.shape[:2]
    if cfg.expected_image_size is not None and (h, w) != tuple(cfg.expected_image_size):
        eh, ew = cfg.expected_image_size
        return _skip(sample, "image_size_mismatch", f"{sample.image_path}: image is {w}x{h}, the labels' frame is "
                                                    f"{ew}x{eh}")
    frame_h = cfg.expected_image_size[0] if cfg.expected_image_size is not None else h
    try:
        verts_model, mesh_source = face_mesh_from_label(label, model, cfg.mesh)
        verts = project_300wlp(verts_model, label.pose_para, frame_h)
    except (MorphableModelError, ProjectionError) as exc:
        return _skip(sample, "model_error", f"{sample.label_path}: {exc}")
    lmk_img = verts[model.landmark_indices]  # (68, 3) the mesh's own landmarks, consistent with the volume
    gt = label.landmarks_2d
    if gt is not None and cfg.max_landmark_nme is not None:
        err = _nme(lmk_img[_INNER, :2], gt[_INNER])
        if not err <= cfg.max_landmark_nme:
            return _skip(sample, "fit_mismatch", f"{sample.label_path}: inner-landmark NME of the fit vs the "
                                                 f"annotation is {err:.3f} > {cfg.max_landmark_nme}")
    all_verts, tris = topology.closed_mesh(verts)
    try:
        frame = crop_frame_from_points(verts[topology.vertex_indices], (h, w), margin=cfg.margin, size=cfg.size,
                                       depth=cfg.depth, z_margin=cfg.z_margin, depth_scale=cfg.depth_scale)
    except VoxelizationError as exc:
        return _skip(sample, "face_outside_image", f"{sample.label_path}: {exc}")
    cols = face_columns(all_verts, tris, frame)
    if cols.filled_columns == 0:
        return _skip(sample, "empty_volume", f"{sample.label_path}: the face covers no pixel of the crop")
    # The height map is the volume (one run [0, height) per column by construction): encode it directly rather
    # than materialising 7.4 MB and scanning it (encode_volume(voxelize_face(...)) gives the same maps).
    encoded = EncodedVolume.from_heights(cols.height, cfg.depth)
    crop = crop_image_to_frame(image, frame)
    image_bytes = encode_image(crop, cfg.image_codec, cfg.jpeg_quality) if cfg.image_codec != "raw" else None
    if gt is not None:
        lmk_source = "pt2d" if label.pt2d is not None else "pt3d_68"
        lmk2d = gt
    else:
        lmk_source, lmk2d = "model", lmk_img[:, :2]
    lmk_crop = frame.image_to_volume(np.c_[lmk2d, np.zeros(len(lmk2d))])[:, :2]
    lmk_3d = frame.image_to_volume(lmk_img)
    pitch, yaw, roll = label.pitch_yaw_roll
    meta = {"sample_id": sample.sample_id, "image_path": sample.image_path, "label_path": sample.label_path,
            "subset": sample.subset, "flipped": bool(sample.flipped), "group": sample.group, "split": split,
            "pose_para": [float(x) for x in label.pose_para], "mesh_source": mesh_source,
            "landmarks_source": lmk_source}
    row = {"sample_id": sample.sample_id, "split": split, "subset": sample.subset, "flipped": int(sample.flipped),
           "group": sample.group, "image_path": sample.image_path, "label_path": sample.label_path,
           "pitch": pitch, "yaw": yaw, "roll": roll, "frame_scale": frame.scale, "frame_tx": frame.tx,
           "frame_ty": frame.ty, "frame_z_offset": frame.z_offset, "frame_depth_scale": frame.depth_scale,
           "size": frame.size, "depth": frame.depth, "mesh_source": mesh_source, "landmarks_source": lmk_source,
           "landmarks": format_landmarks(lmk_crop), "filled_columns": cols.filled_columns,
           "clipped_front": cols.clipped_front, "clipped_back": cols.clipped_back,
           "vertices_outside": cols.vertices_outside}
    return {"ok": True, "sample_id": sample.sample_id, "start": encoded.start, "stop": encoded.stop,
            "depth": encoded.depth, "frame": frame.to_dict(), "image": crop if image_bytes is None else None,
            "image_bytes": image_bytes, "landmarks": lmk_crop.astype(np.float32),
            "landmarks_3d": lmk_3d.astype(np.float32), "meta": meta, "row": row}


# ---------------------------------------------------------------------------------------------------------------
# The run
# ---------------------------------------------------------------------------------------------------------------

def _digest(*parts: bytes | str) -> str:
    h = hashlib.sha1()
    for p in parts:
        h.update(p.encode() if isinstance(p, str) else p)
        h.update(b"\0")
    return h.hexdigest()


def _model_digest(model: MorphableModel, topology: FaceTopology) -> str:
    arrays = [model.mean, model.triangles, model.landmark_indices, topology.triangles, *topology.hole_loops]
    for name in ("shape_basis", "exp_basis", "landmark_mean", "landmark_shape_basis", "landmark_exp_basis"):
        a = getattr(model, name)
        arrays.append(np.zeros(0) if a is None else a)
    return _digest(*(np.ascontiguousarray(a).tobytes() + str(a.shape).encode() for a in arrays))


@dataclass
class _Shard:
    index: int
    name: str
    samples: list[W300LPSample]
    splits: list[str]

    @property
    def h5(self) -> str:
        return f"{SHARD_DIR}/{self.name}.h5"

    @property
    def record(self) -> str:
        return f"{SHARD_DIR}/{self.name}.json"


def _load_record(out: Path, shard: _Shard, redo_skipped: bool) -> dict[str, Any] | None:
    path = out / shard.record
    if not path.is_file():
        return None
    try:
        rec = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        log.warning("%s: unreadable shard record, regenerating the shard", path)
        return None
    if rec.get("sample_ids") != [s.sample_id for s in shard.samples]:
        return None
    if rec.get("rows"):
        h5 = out / shard.h5
        if not h5.is_file() or h5.stat().st_size != rec.get("file_bytes"):
            log.warning("%s: shard file missing or of another size than recorded, regenerating the shard", h5)
            return None
    if redo_skipped and rec.get("skipped"):
        return None
    if any(s.get("reason") == "internal_error" for s in rec.get("skipped", ())):
        # An internal error is a bug (or a passing failure), not a property of the input: retry it, so that a
        # fixed faceforge does not report the same failure on every rerun.
        log.info("%s: retrying the shard, it recorded internal errors", path)
        return None
    return rec


def _write_shard(out: Path, shard: _Shard, results: list[dict[str, Any]], cfg: VolumeGenerationConfig,
                 config_digest: str) -> dict[str, Any]:
    rows, skipped = [], []
    ok = [r for r in results if r["ok"]]
    for r in results:
        if not r["ok"]:
            skipped.append({"sample_id": r["sample_id"], "reason": r["reason"], "detail": r["detail"]})
    file_bytes = 0
    if ok:
        with VolumeStoreWriter(out / shard.h5, size=cfg.size, depth=cfg.depth, compression=cfg.compression,
                               compression_level=cfg.compression_level, image_codec=cfg.image_codec,
                               jpeg_quality=cfg.jpeg_quality) as writer:
            for r in ok:
                sample = VolumeSample(sample_id=r["sample_id"],
                                      encoded=EncodedVolume(start=r["start"], stop=r["stop"], depth=r["depth"]),
                                      frame=VolumeFrame.from_dict(r["frame"]), image=r["image"],
                                      landmarks=r["landmarks"], landmarks_3d=r["landmarks_3d"], meta=r["meta"])
                row_i = writer.add(sample, image_bytes=r["image_bytes"])
                rows.append({**r["row"], "store_file": shard.h5, "store_row": row_i})
            summary = writer.close()
        for row, vb, ib in zip(rows, summary.volume_bytes, summary.image_bytes, strict=True):
            row["volume_bytes"], row["image_bytes"] = int(vb), int(ib)
        file_bytes = summary.file_bytes
    elif (out / shard.h5).exists():  # a stale file from an interrupted run of the same shard
        (out / shard.h5).unlink()
    record = {"name": shard.name, "config_digest": config_digest,
              "sample_ids": [s.sample_id for s in shard.samples], "rows": rows, "skipped": skipped,
              "file_bytes": file_bytes}
    atomic_write_json(out / shard.record, record)
    return record


def generate_volumes(samples: Sequence[W300LPSample], output: str | os.PathLike, model: MorphableModel,
                     topology: FaceTopology | None = None, workers: int = 1,
                     config: VolumeGenerationConfig | None = None, redo_skipped: bool = False,
                     progress: bool = False) -> VolumeReport:
    """Turn image + label pairs into stored VRN volumes, with an index and a report.

    See the module docstring for the outputs, resumption, splits and what the model can represent. Bad samples
    (missing or malformed labels, NaN parameters, unreadable images, images of another size than the labels'
    frame, faces outside the image) are skipped, counted by reason in the report and listed with a detail; the run
    goes on.

    Args:
        samples: from :func:`faceforge.data.reconstruction.w300lp.find_300wlp_samples` (sample ids must be unique).
        output: output folder (created).
        model: the morphable model (its vertex order must match the topology's).
        topology: the triangles to voxelise, e.g.
            :func:`faceforge.geometry.voxelize.load_noneck_topology` (no ears, no neck, mouth capped); None uses
            the model's own triangles with holes capped (a 53,215-vertex BFM then keeps its neck and ears).
        workers: processes (1: in this process).
        config: how volumes are made (:class:`VolumeGenerationConfig`).
        redo_skipped: also regenerate complete shards that recorded skipped samples (after fixing inputs).
        progress: show a tqdm progress bar of the samples to process (stderr).

    Returns:
        VolumeReport (also written to ``output/volume_report.json``).

    Raises:
        VolumeGenerationError: for duplicate sample ids, a topology that does not fit the model, or workers < 1.
    """
    t0 = time.perf_counter()
    cfg = config or VolumeGenerationConfig()
    if workers < 1:
        raise VolumeGenerationError(f"workers must be >= 1, got {workers}")
    out = Path(output)
    (out / SHARD_DIR).mkdir(parents=True, exist_ok=True)
    for leftover in (out / SHARD_DIR).glob(".part-*"):  # temporary files of a run that was killed
        leftover.unlink(missing_ok=True)
    if topology is None:
        topology = topology_from_triangles(model.triangles, model.num_vertices, source=f"model ({model.source})")
    if topology.num_vertices != model.num_vertices:
        raise VolumeGenerationError(f"topology {topology.source!r} indexes {topology.num_vertices} vertices, the "
                                    f"model has {model.num_vertices}")
    ordered = sorted(samples, key=lambda s: s.sample_id)
    ids = [s.sample_id for s in ordered]
    dup = [a for a, b in itertools.pairwise(ids) if a == b]
    if dup:
        raise VolumeGenerationError(f"duplicate sample id {dup[0]!r}")

    model_digest = _model_digest(model, topology)
    config_digest = _digest(f"generator-v{GENERATOR_VERSION}", json.dumps(cfg.to_dict(), sort_keys=True),
                            model_digest)
    shards = []
    for j in range(0, len(ordered), cfg.shard_size):
        chunk = ordered[j: j + cfg.shard_size]
        name = f"part-{j // cfg.shard_size:05d}-{_digest(config_digest, *(s.sample_id for s in chunk))[:10]}"
        shards.append(_Shard(index=j // cfg.shard_size, name=name, samples=chunk,
                             splits=[split_of(s, cfg.val_fraction, cfg.flat_split) for s in chunk]))

    records: dict[int, dict[str, Any]] = {}
    for shard in shards:
        rec = _load_record(out, shard, redo_skipped)
        if rec is not None:
            records[shard.index] = rec
    reused = sum(len(shards[i].samples) for i in records)
    pending = [s for s in shards if s.index not in records]
    total_pending = sum(len(s.samples) for s in pending)
    log.info("%d samples in %d shards: %d reused, %d to process with %d worker(s)", len(ordered), len(shards),
             reused, total_pending, workers)

    done = 0
    if pending:
        buffers: dict[int, list[dict[str, Any] | None]] = {s.index: [None] * len(s.samples) for s in pending}
        remaining = {s.index: len(s.samples) for s in pending}
        by_index = {s.index: s for s in pending}

        def collect(key: tuple[int, int], result: dict[str, Any]) -> None:
            nonlocal done
            j, k = key
            buffers[j][k] = result
            remaining[j] -= 1
            if remaining[j] == 0:
                records[j] = _write_shard(out, by_index[j], buffers.pop(j), cfg, config_digest)  # type: ignore[arg-type]
                done += len(by_index[j].samples)
                log.debug("shard %s written (%d/%d samples)", by_index[j].name, done, total_pending)

        def failed(item: tuple[tuple[int, int], W300LPSample, str], exc: BaseException) -> None:
            # _process_task reports its own exceptions; this is a worker that died (e.g. killed for memory)
            collect(item[0], _skip(item[1], "internal_error", f"worker failed: {type(exc).__name__}: {exc}"))

        items = [((shard.index, k), s, shard.splits[k]) for shard in pending for k, s in enumerate(shard.samples)]
        try:
            run_parallel(items, _process_task, workers=workers, initializer=_init_worker,
                         initargs=(model, topology, cfg, workers > 1 and len(items) > 1),
                         on_result=lambda item, result: collect(item[0], result), on_error=failed,
                         progress="volumes" if progress else False)
        finally:
            _WORKER.clear()  # the model, when the samples ran in this process

    # -- index and report ------------------------------------------------------------------------------------
    rows = [row for shard in shards for row in records[shard.index]["rows"]]
    skipped = [s for shard in shards for s in records[shard.index]["skipped"]]
    write_volume_index(out / INDEX_FILENAME, rows)
    plan_files = {f"{s.name}{ext}" for s in shards for ext in (".h5", ".json")}
    stale = sorted(f"{SHARD_DIR}/{p.name}" for p in (out / SHARD_DIR).iterdir()
                   if p.name.startswith("part-") and p.suffix in (".h5", ".json") and p.name not in plan_files)
    vol = np.array([r["volume_bytes"] for r in rows], dtype=np.float64)
    img = np.array([r["image_bytes"] for r in rows], dtype=np.float64)
    file_bytes = sum(int(records[s.index].get("file_bytes", 0)) for s in shards)
    clipped = [r["clipped_front"] + r["clipped_back"] for r in rows]
    report = VolumeReport(
        output=str(out), total=len(ordered), stored=len(rows), generated=total_pending, reused=reused,
        skipped=dict(sorted(Counter(s["reason"] for s in skipped).items())), skipped_samples=skipped,
        volume_bytes_per_sample=float(vol.mean()) if rows else float("nan"),
        volume_bytes_max=int(vol.max()) if rows else 0,
        image_bytes_per_sample=float(img.mean()) if rows else float("nan"),
        file_bytes_per_sample=file_bytes / len(rows) if rows else float("nan"),
        dense_bytes_per_sample=int(cfg.depth * cfg.size * cfg.size),
        clipped_samples=int(sum(c > 0 for c in clipped)), clipped_columns=int(sum(clipped)),
        mesh_sources=dict(sorted(Counter(r["mesh_source"] for r in rows).items())),
        splits=dict(sorted(Counter(r["split"] for r in rows).items())),
        seconds=time.perf_counter() - t0, shards=[s.h5 for s in shards if records[s.index]["rows"]],
        stale_shards=stale, config=cfg.to_dict(),
        model={"model": model.source, "topology": topology.source, "num_vertices": model.num_vertices,
               "num_triangles": int(topology.triangles.shape[0]), "holes_capped": len(topology.hole_loops),
               "digest": model_digest})
    atomic_write_json(out / REPORT_FILENAME, report.to_dict())
    # the prepared-dataset contract's report (faceforge.data.core.prepared): train.py prints it and keeps a copy
    atomic_write_json(out / PREPARE_REPORT, make_report(
        "faceforge.data.reconstruction.generation.generate_volumes",
        {"samples": report.total, "stored": report.stored, "skipped": report.num_skipped,
         "reused": report.reused},
        [{"kind": str(sk["reason"]), "item": str(sk["sample_id"]), "reason": str(sk.get("detail", ""))}
         for sk in skipped], summary=report.summary().splitlines(), details_file=REPORT_FILENAME))
    return report


