"""Volume regression task: VRN, VRN - Guided and VRN - Multitask (Jackson et al., "Large Pose 3D Face
Reconstruction from a Single Image via Direct Volumetric CNN Regression", ICCV 2017).

The task owns the losses, the metrics, the optimisation and the meshes; the wrapped network is a plain
``nn.Module`` from :mod:`faceforge.models.vrn` returning LOGITS:

* ``variant="vrn"``: :class:`~faceforge.models.vrn.VRN`, ``net(images) -> (B, D, S, S)`` volume logits;
* ``variant="guided"``: :class:`~faceforge.models.vrn.VRNGuided`. As in Jackson's thesis, the reconstruction
  network is trained with GROUND-TRUTH landmark heatmaps stacked with the image (Gaussians of sigma
  ``heatmap_sigma`` px at the image resolution, :func:`~faceforge.models.vrn.gaussian_heatmaps`), while its
  landmark network is trained on the same images with the heatmap loss; at validation and test the PREDICTED
  heatmaps guide the reconstruction (``net(images)``);
* ``variant="multitask"``: :class:`~faceforge.models.vrn.VRNMultitask`, one trunk, volume + 68 heatmaps.

Batches come from :class:`faceforge.data.reconstruction.datamodule.VolumeDataModule`: ``image`` uint8 (B, 3, S, S)
(scaled to [0, 1] here, on the device), the target ``volume`` float (B, D, S, S) in {0, 1} (decoded from the
stored run maps on the device by the data module's ``on_after_batch_transfer``), ``depth`` (B,), ``landmarks``
(B, 68, 2) crop pixels (NaN unknown), ``frame`` (B, 5) (crop <- source-image similarity, NaN when unknown),
``yaw`` (B,) radians and ``index`` (B,).

Loss (Sec. 3.3): per-voxel sigmoid cross-entropy (:func:`~faceforge.losses.volumetric.volumetric_bce_loss`, the
mean over voxels by default: see that module for why) plus ``heatmap_weight`` times the heatmap MSE with
intermediate supervision (:func:`~faceforge.losses.heatmap.heatmap_mse_loss`; targets are Gaussians of sigma
``heatmap_sigma`` at the heatmaps' resolution, H/4). Optimiser: RMSProp, lr 1e-4, divided by 10 after 40 epochs
(the paper's schedule) unless configured otherwise.

Metrics: ``val/iou`` and ``test/iou`` (volumetric IoU of ``sigmoid > iou_threshold``,
:class:`~faceforge.metrics.reconstruction.VolumetricIoU`); for the variants with heatmaps ``val/nme`` and
``test/nme`` (68-landmark NME, 3DDFA's AFLW2000-3D protocol, :class:`~faceforge.metrics.reconstruction.
LandmarkNME`), with the test NME also per absolute-yaw bin [0, 30], (30, 60], (60, 90] degrees and balanced.
Landmarks are read from the last heatmap stack (arg-max refined to sub-pixel by a parabola through the
neighbours, :func:`heatmap_landmarks`), mapped to crop pixels, and then to source-image pixels through the
sample's frame when it has one (the NME is invariant to that similarity; predictions are written in source pixels).

Meshes: after each validation epoch ``num_val_meshes`` predicted volumes of the first validation batch become
meshes (marching cubes at ``iou_threshold``, vertex colours from the crop,
:func:`~faceforge.geometry.volume_mesh.volume_to_mesh`) written to ``<run dir>/meshes/epoch_NNN/`` (and their
ground truth once to ``meshes/gt/``) and logged to W&B as ``wandb.Object3D`` when a WandbLogger is attached; after
testing, the same for the first test batch in ``meshes/test/``. Meshes are written for viewing: crop pixels,
centred, x right, y UP, z towards the viewer (``(u - c, c - v, k - D/2)``, ``c = (S - 1) / 2``; faces wound
outwards), or with ``mesh_frame="vrn_authors"`` in the released VRN's frame (``raw2obj.py``: ``(u, v, k / 2)``,
y down, voxels, z halved, not centred; :func:`~faceforge.geometry.volume_mesh.to_mesh_frame`). Iso-levels: ours
is ``iou_threshold`` (0.5) on ``sigmoid(logits)``; the authors' script meshes its 0..255 byte volume at 10
(p ~ 0.04), so compare meshes extracted at the same level (see :mod:`faceforge.geometry.volume_mesh`).

Mesh NME (``mesh_nme=True``, the default; Jackson et al. 2017, Sec. 5, :func:`~faceforge.metrics.reconstruction.
mesh_nme`): at test time every sample's predicted mesh (marching cubes of ``sigmoid(logits)`` at
``iou_threshold``) is compared with its ground truth's mesh (marching cubes of the target volume, same level),
both in VOLUME VOXELS ``(u, v, k)``: ICP (at most :data:`MESH_NME_ICP_ITERATIONS` iterations, from the
identity) pairs each ground-truth vertex with its nearest predicted vertex, the pairs are aligned in z only, and
the mean distance is divided by the outer interocular distance of the ground truth in voxels: from the batch's
``landmarks_3d`` (B, 68, 3) volume coordinates when the data provides them; otherwise from the 2D landmarks
(crop pixels mapped to voxel columns) with z read from the ground-truth volume's front surface at each eye
corner (the highest occupied depth level + 0.5, where the surface sits at level 0.5), or the 2D distance when
an eye corner's column is empty. Samples without ground-truth eye corners, or with an empty predicted /
ground-truth volume, get NaN (skipped in the mean, counted by ``n_mesh_nme``). Only the ground truth's face region
counts, as in the paper: the vertices of its visible surface (:func:`visible_surface_points`; the closed volume
mesh's flat back and rim walls are not face), each paired with the nearest vertex of the whole predicted mesh.
The trivial baseline's mesh NME (the mean training volume's mesh against each ground truth) is ``baseline_mesh_nme``.
Per-sample values are rounded to :data:`MESH_NME_DECIMALS` decimals (see there: DDP reproducibility).
Costs a marching cubes and an ICP per sample (tens of milliseconds at 64^3); switch it off with
``mesh_nme=False`` for paper-size test sets.
"""
from __future__ import annotations

import logging
import math
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import pytorch_lightning as pl
import torch
from torch import nn

from faceforge.errors import FaceforgeError
from faceforge.losses.heatmap import heatmap_mse_loss
from faceforge.losses.volumetric import volumetric_bce_loss
from faceforge.metrics.reconstruction import (
    OUTER_EYE_CORNERS,
    LandmarkNME,
    VolumetricIoU,
    landmark_nme,
    mesh_nme,
    outer_interocular_distance,
    volumetric_iou,
    yaw_bin_masks,
)
from faceforge.metrics.rows import SampleRows
from faceforge.models.vrn import decode_heatmaps, gaussian_heatmaps, image_to_heatmap_points
from faceforge.tasks.checkpointing import FaceforgeCheckpointMixin
from faceforge.tasks.detection import images_to_float
from faceforge.tasks.optim import configure_optimization
from faceforge.tasks.protocols import TaskData, TrainStatistics, task_data

__all__ = [
    "RECONSTRUCTION_COLUMNS",
    "VARIANTS",
    "ReconstructionOutput",
    "ReconstructionTaskError",
    "TaskData",
    "TrainStatistics",
    "VolumeRegressionTask",
    "crop_to_source",
    "heatmap_landmarks",
    "image_to_heatmap_points",
    "interocular_voxels",
]

log = logging.getLogger(__name__)

VARIANTS = ("vrn", "guided", "multitask")
#: Absolute-yaw bins (degrees) of the test report (3DDFA's AFLW2000-3D protocol).
YAW_BINS = ((0, 30), (30, 60), (60, 90))
#: (report key, column title) of the reconstruction results table.
RECONSTRUCTION_COLUMNS: tuple[tuple[str, str], ...] = (
    ("iou", "IoU"), ("baseline_iou", "IoU trivial"), ("nme", "NME"), ("baseline_nme", "NME trivial"),
    ("nme_0_30", "NME [0,30]"), ("nme_30_60", "NME (30,60]"),
    ("nme_60_90", "NME (60,90]"), ("nme_balanced", "NME mean"), ("mesh_nme", "Mesh NME"),
    ("baseline_mesh_nme", "Mesh NME trivial"), ("n", "N"),
)
#: ICP iteration cap of the test-time mesh NME (both meshes share the voxel frame: ICP starts at the identity and
#: converges in a few iterations).
MESH_NME_ICP_ITERATIONS = 20
#: Decimals the per-sample mesh NME is rounded to. The float32 logits of one sample differ at rounding level with
#: the batch it was computed in (e.g. 1 process vs 2 DDP ranks), and the marching-cubes surface carries that into
#: the ~1e-9 digits of the NME; rounding keeps the reported numbers the same (IoU is immune: it thresholds).
MESH_NME_DECIMALS = 6
#: Voxels below a column's front surface within which a ground-truth mesh vertex still counts as visible surface
#: (:func:`visible_surface_points`).
FRONT_SURFACE_TOLERANCE = 1.0
DEFAULT_OPTIMIZER = {"_target_": "torch.optim.RMSprop", "lr": 1.0e-4}
DEFAULT_SCHEDULER = {"_target_": "torch.optim.lr_scheduler.MultiStepLR", "milestones": [40], "gamma": 0.1}


class ReconstructionTaskError(FaceforgeError, ValueError):
    """The task's configuration does not fit the network, or a batch does not fit the network's output."""


class ReconstructionOutput(NamedTuple):
    """What :meth:`VolumeRegressionTask.forward` returns.

    Attributes:
        volume: (B, D, S, S) volume logits.
        heatmaps: the landmark heatmaps (a list of per-stack (B, 68, h, w) tensors, or one such tensor), or None.
    """

    volume: torch.Tensor
    heatmaps: list[torch.Tensor] | torch.Tensor | None


def heatmap_landmarks(heatmaps: torch.Tensor, image_size: tuple[int, int] | None = None) -> torch.Tensor:
    """Landmark positions (B, K, 2) from (B, K, h, w) heatmaps (:func:`faceforge.models.vrn.decode_heatmaps`).

    Raises:
        ReconstructionTaskError: if ``heatmaps`` is not 4-D.
    """
    try:
        return decode_heatmaps(heatmaps, image_size)
    except ValueError as exc:
        raise ReconstructionTaskError(str(exc)) from exc


def crop_to_source(points: torch.Tensor, frame: torch.Tensor) -> torch.Tensor:
    """Map (B, K, 2) crop pixels to source-image pixels with per-sample frames ``(scale, tx, ty, ...)`` (B, >=3).

    ``x = (u - tx) / scale``, ``y = (v - ty) / scale`` (:meth:`faceforge.geometry.volume_frame.VolumeFrame.
    volume_to_image`); samples whose frame is not finite keep their crop coordinates.
    """
    f = frame.to(points.dtype)
    ok = torch.isfinite(f[:, :3]).all(dim=1) & (f[:, 0] > 0)
    s = torch.where(ok, f[:, 0], torch.ones_like(f[:, 0]))[:, None, None]
    t = torch.where(ok[:, None], f[:, 1:3], torch.zeros_like(f[:, 1:3]))[:, None, :]
    return (points - t) / s


def _format_points(points: np.ndarray) -> str:
    """(K, 2) points as space-separated ``x y`` values with two decimals (the predictions CSV's ``landmarks``)."""
    return " ".join(f"{v:.2f}" for v in np.asarray(points, dtype=np.float64).reshape(-1))


def _samples_seen(metric: VolumetricIoU) -> int:
    """Samples a volumetric-IoU metric has seen on ALL ranks (its count state summed across processes under DDP; the
    local count alone would differ from rank to rank)."""
    if metric._to_sync and torch.distributed.is_available() and torch.distributed.is_initialized():
        with metric.sync_context(should_sync=True):
            return int(metric.n_samples)
    return int(metric.n_samples)


def interocular_voxels(landmarks: np.ndarray, target: np.ndarray, image_size: tuple[int, int],
                       landmarks_3d: np.ndarray | None = None) -> float:
    """Outer interocular distance of one ground-truth face in VOLUME VOXELS (the mesh NME's normaliser).

    With ``landmarks_3d`` (68, 3) volume coordinates ``(u, v, k)`` whose eye corners are finite it is their 3D
    distance (:func:`~faceforge.metrics.reconstruction.outer_interocular_distance`). Otherwise the 2D eye corners
    (points 37 and 46, 1-based) are mapped from crop pixels to voxel columns (``u = (x + 0.5) W / w_img - 0.5``,
    the same for v; the identity when the crop and the volume have the same side) and each gets the depth of the
    ground-truth volume's front surface in its column: the highest occupied level + 0.5 (where marching cubes at
    0.5 puts the surface); if either column is empty the 2D distance in voxels is used.

    Args:
        landmarks: (68, 2) crop pixels (x right, y down; NaN unknown).
        target: (D, H, W) ground-truth occupancy indexed ``[k, v, u]`` (> 0.5 occupied).
        image_size: ``(h_img, w_img)`` of the crop the landmarks are in.
        landmarks_3d: optional (68, 3) volume coordinates.

    Returns:
        The distance (float, voxels), or NaN when the eye corners are unknown (or coincide).
    """
    if landmarks_3d is not None:
        p3 = np.asarray(landmarks_3d, dtype=np.float64)
        if p3.shape == (68, 3) and np.isfinite(p3[list(OUTER_EYE_CORNERS)]).all():
            d = float(outer_interocular_distance(p3))
            return d if d > 0 else float("nan")
    pts = np.asarray(landmarks, dtype=np.float64)
    if pts.shape != (68, 2) or not np.isfinite(pts[list(OUTER_EYE_CORNERS)]).all():
        return float("nan")
    depth, height, width = target.shape
    sy, sx = height / float(image_size[0]), width / float(image_size[1])
    corners = []
    for i in OUTER_EYE_CORNERS:
        u, v = (pts[i, 0] + 0.5) * sx - 0.5, (pts[i, 1] + 0.5) * sy - 0.5
        col = target[:, int(np.clip(round(v), 0, height - 1)), int(np.clip(round(u), 0, width - 1))] > 0.5
        k = float(np.flatnonzero(col)[-1]) + 0.5 if col.any() else float("nan")
        corners.append((u, v, k))
    a, b = np.array(corners)
    d = float(np.linalg.norm((a - b) if np.isfinite([a[2], b[2]]).all() else (a - b)[:2]))
    return d if d > 0 else float("nan")


def _mesh_points(volume: np.ndarray, iso_level: float) -> np.ndarray | None:
    """Marching-cubes vertices (V, 3) of a (D, H, W) volume in voxels ``(u, v, k)``, or None if it has no surface."""
    from faceforge.geometry.volume_mesh import VolumeMeshError, volume_to_mesh

    try:
        return np.asarray(volume_to_mesh(volume, iso_level=iso_level).vertices, dtype=np.float64)
    except VolumeMeshError:
        return None


def visible_surface_points(points: np.ndarray, target: np.ndarray,
                           tolerance: float = FRONT_SURFACE_TOLERANCE) -> np.ndarray:
    """The vertices of a ground-truth volume's mesh that lie on the face's visible surface (its "face region").

    A VRN volume is filled on and behind the visible face surface (voxel ``(k, v, u)`` occupied for
    ``0 <= k < height[v, u]``), so its closed marching-cubes mesh also has a flat back and side walls that are
    not face. Jackson et al. (ICCV 2017, Sec. 5) measure the error over the ground-truth vertices of the face
    region, so those are dropped: a vertex ``(u, v, k)`` is kept when ``k >= front - tolerance``, ``front`` the
    LOWEST front surface (highest occupied level + 0.5) among the occupied columns next to it
    (``floor``/``ceil`` of ``u`` and ``v``). The lowest, so that the step walls between neighbouring columns of a
    steep surface (the side of the nose, a turned cheek) stay; the rim wall where the face meets empty columns and
    the back are dropped.

    Args:
        points: (V, 3) float64 mesh vertices ``(u, v, k)`` in voxels (marching cubes of ``target``).
        target: (D, H, W) ground-truth occupancy indexed ``[k, v, u]`` (> 0.5 occupied).
        tolerance: voxels below the front surface still kept (1.0: the marching-cubes vertices of the top face
            of a column sit at ``front``).

    Returns:
        (V', 3) float64, the kept vertices (V' may be 0).
    """
    occ = np.asarray(target) > 0.5
    depth, height, width = occ.shape
    filled = occ.any(axis=0)
    front = np.where(filled, depth - np.argmax(occ[::-1], axis=0) - 0.5, np.inf)  # (H, W), inf: empty column
    pts = np.asarray(points, dtype=np.float64)
    lowest = np.full(len(pts), np.inf)
    for fu in (np.floor, np.ceil):
        for fv in (np.floor, np.ceil):
            u = np.clip(fu(pts[:, 0]).astype(np.int64), 0, width - 1)
            v = np.clip(fv(pts[:, 1]).astype(np.int64), 0, height - 1)
            lowest = np.minimum(lowest, front[v, u])
    return pts[np.isfinite(lowest) & (pts[:, 2] >= lowest - tolerance)]


def _check_mesh_frame(mesh_frame: str) -> str:
    from faceforge.geometry.volume_mesh import MESH_FRAMES

    if mesh_frame not in MESH_FRAMES:
        raise ReconstructionTaskError(f"mesh_frame must be one of {', '.join(MESH_FRAMES)}, got {mesh_frame!r}")
    return mesh_frame


def _safe_name(sample_id: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", sample_id.replace("/", "__"))


class VolumeRegressionTask(FaceforgeCheckpointMixin, pl.LightningModule):
    """LightningModule for VRN volume regression (unguided, guided, multitask).

    Args:
        net: the network (:class:`~faceforge.models.vrn.VRN`, :class:`~faceforge.models.vrn.VRNGuided` or
            :class:`~faceforge.models.vrn.VRNMultitask`, matching ``variant``).
        variant: ``"vrn"``, ``"guided"`` or ``"multitask"``.
        heatmap_weight: weight of the heatmap loss (guided, multitask).
        heatmap_sigma: sigma (pixels) of the Gaussian landmark heatmaps: the guided inputs at the image resolution
            and the loss targets at the heatmap resolution (1, as in the paper).
        optimizer: primitive optimiser spec (default RMSProp, lr 1e-4: Jackson et al. 2017, Sec. 4); None is the
            same default.
        scheduler: primitive scheduler spec (default: lr x 0.1 after epoch 40, the paper's schedule) or None for a
            constant learning rate.
        iou_threshold: occupancy threshold on the sigmoid for IoU and for the meshes' iso-surface.
        num_val_meshes: meshes saved (and logged to W&B) per validation epoch and after testing; 0 for none.
        mesh_format: ``"glb"`` (default; vertex colours, viewable in W&B), ``"obj"`` or ``"ply"``.
        loss_reduction: reduction of the volume loss (``"mean"`` default; ``"sum_per_sample"`` is Eq. 1 literally).
        monitor: the validation metric checkpoints are chosen on (``val/iou``).
        monitor_mode: ``max`` or ``min``.
        net_spec: YAML of the network's Hydra config (set by ``train.py``; stored in checkpoints).
        input: the data shape the network was built for, as primitives (``model.input``: ``{"image_size": S,
            "volume_depth": D}``); ``evaluate.py`` serves data of that shape (see
            :func:`faceforge.runs.input_needs.apply_input_needs`). Recorded in checkpoints; None for older ones.
        mesh_nme: compute the per-sample mesh NME (and the trivial baseline's) at test time (module docstring);
            default True, False for large test sets where the per-sample marching cubes + ICP is too slow.
        mesh_frame: frame of the saved meshes: ``"display"`` (default: centred, y up) or ``"vrn_authors"`` (the
            released VRN's ``raw2obj.py`` frame: ``(u, v, k / 2)`` voxels, y down;
            :func:`~faceforge.geometry.volume_mesh.to_mesh_frame`). ``evaluate.py`` takes
            ``+model.mesh_frame=vrn_authors`` / ``+model.mesh_nme=false`` to override a checkpoint's.

    Raises:
        ReconstructionTaskError: unknown variant, mesh format or mesh frame, or a network that does not fit the
            variant.
    """

    def __init__(self, net: nn.Module, variant: str = "vrn", heatmap_weight: float = 1.0, heatmap_sigma: float = 1.0,
                 optimizer: Mapping[str, Any] | None = DEFAULT_OPTIMIZER,
                 scheduler: Mapping[str, Any] | None = DEFAULT_SCHEDULER,
                 iou_threshold: float = 0.5, num_val_meshes: int = 2, mesh_format: str = "glb",
                 loss_reduction: str = "mean", monitor: str = "val/iou", monitor_mode: str = "max",
                 net_spec: str | None = None,
                 input: Mapping[str, Any] | None = None,  # the config's model.input block
                 mesh_nme: bool = True, mesh_frame: str = "display") -> None:
        super().__init__()
        _check_mesh_frame(mesh_frame)
        if variant not in VARIANTS:
            raise ReconstructionTaskError(f"variant must be one of {VARIANTS}, got {variant!r}")
        if mesh_format not in ("glb", "obj", "ply"):
            raise ReconstructionTaskError(f"mesh_format must be 'glb', 'obj' or 'ply', got {mesh_format!r}")
        if variant == "guided" and not hasattr(net, "landmark_net"):
            raise ReconstructionTaskError(f"variant 'guided' needs a VRNGuided network (with a landmark_net), got "
                                          f"{type(net).__name__}")
        if variant == "multitask" and not hasattr(net, "landmark_head"):
            raise ReconstructionTaskError(f"variant 'multitask' needs a VRNMultitask network, got "
                                          f"{type(net).__name__}")
        if variant == "vrn" and (hasattr(net, "landmark_net") or hasattr(net, "landmark_head")):
            raise ReconstructionTaskError(f"variant 'vrn' needs a plain VRN, got {type(net).__name__}: set "
                                          f"model.variant to 'guided' or 'multitask'")
        optimizer = dict(optimizer) if optimizer is not None else dict(DEFAULT_OPTIMIZER)
        scheduler = dict(scheduler) if scheduler is not None else None
        if scheduler is not None and "milestones" in scheduler:
            scheduler["milestones"] = [int(m) for m in scheduler["milestones"]]
        input = dict(input) if input is not None else None  # a plain dict hyperparameter
        self.save_hyperparameters(ignore=["net"])
        self.net = net
        self.val_iou = VolumetricIoU(threshold=iou_threshold)
        self.test_iou = VolumetricIoU(threshold=iou_threshold)
        self.val_nme = LandmarkNME(yaw_bins=YAW_BINS)
        self.test_nme = LandmarkNME(yaw_bins=YAW_BINS)
        #: filled at the end of a test epoch: the report (IoU, NME overall and per yaw bin)
        self.test_report: dict[str, Any] | None = None
        #: filled at the end of a test epoch: per-sample index, iou, nme, yaw and predicted landmarks
        self.test_outputs: dict[str, np.ndarray] | None = None
        #: meshes written by the last validation / test epoch
        self.mesh_paths: list[Path] = []
        self._mesh_samples: list[dict[str, Any]] = []
        # per-sample test rows as torchmetrics cat states: gathered from every rank under DDP, in dataset order
        self.test_rows = SampleRows(("iou", "nme", "yaw", "landmarks", "mesh_nme", "baseline_mesh_nme"))
        self._baseline_points: np.ndarray | None = None  # the baseline's mesh vertices, once per test epoch
        # The trivial baseline (the mean training volume thresholded at 0.5, the mean training landmarks in crop
        # pixels): set from the data module's training split when fitting, kept in checkpoints, so every
        # validation, test and evaluate.py report shows it beside the model. Empty until known.
        self.register_buffer("baseline_volume", torch.zeros(0, dtype=torch.bool))
        self.register_buffer("baseline_landmarks", torch.zeros(0, 2, dtype=torch.float32))
        self.val_baseline_iou = VolumetricIoU(threshold=0.5)
        self.test_baseline_iou = VolumetricIoU(threshold=0.5)
        self.val_baseline_nme = LandmarkNME(yaw_bins=YAW_BINS)
        self.test_baseline_nme = LandmarkNME(yaw_bins=YAW_BINS)

    # ------------------------------------------------------------------ the trivial baseline
    def set_baseline(self, mean_occupancy: np.ndarray | torch.Tensor,
                     mean_landmarks: np.ndarray | torch.Tensor | None = None) -> None:
        """Set the trivial predictor: ``mean_occupancy`` (D, S, S) in [0, 1] (thresholded at 0.5 here) and
        ``mean_landmarks`` (68, 2) crop pixels (NaN where unknown), both of the training split.

        Raises:
            ReconstructionTaskError: if ``mean_occupancy`` is not 3-D or ``mean_landmarks`` not (K, 2).
        """
        occ = torch.as_tensor(np.asarray(mean_occupancy, dtype=np.float32))
        if occ.ndim != 3:
            raise ReconstructionTaskError(f"mean_occupancy must be (D, S, S), got {tuple(occ.shape)}")
        self.baseline_volume = (occ > 0.5).to(self.baseline_volume.device)
        if mean_landmarks is not None:
            lmk = torch.as_tensor(np.asarray(mean_landmarks, dtype=np.float32))
            if lmk.ndim != 2 or lmk.shape[1] != 2:
                raise ReconstructionTaskError(f"mean_landmarks must be (K, 2), got {tuple(lmk.shape)}")
            self.baseline_landmarks = lmk.to(self.baseline_landmarks.device)

    def on_fit_start(self) -> None:
        """Take the trivial baseline from the data module's training split (``train_statistics()`` of
        :class:`~faceforge.tasks.protocols.TaskData`) when it offers one."""
        data = task_data(getattr(self.trainer, "datamodule", None))
        stats = data.train_statistics() if data is not None else None
        if stats is not None:
            self.set_baseline(stats.mean_occupancy, stats.mean_landmarks)

    def _load_from_state_dict(self, state_dict: dict[str, Any], prefix: str, *args: Any, **kwargs: Any) -> None:
        # the baseline buffers take the stored shapes (they are empty in a fresh task); checkpoints written before
        # the baseline existed load without it
        for name in ("baseline_volume", "baseline_landmarks"):
            key = prefix + name
            if key in state_dict:
                setattr(self, name, torch.empty_like(state_dict[key], device=getattr(self, name).device))
            else:
                state_dict[key] = getattr(self, name)
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    @property
    def has_landmarks(self) -> bool:
        """Whether the variant predicts landmark heatmaps."""
        return self.hparams.variant in ("guided", "multitask")

    # ------------------------------------------------------------------ forward
    def forward(self, images: torch.Tensor, landmark_heatmaps: torch.Tensor | None = None) -> ReconstructionOutput:
        """Volume logits (and heatmaps) for images uint8 (B, 3, H, W) or float in [0, 1].

        Args:
            images: the batch.
            landmark_heatmaps: guided only: (B, 68, H, W) heatmaps to guide with (ground truth in training);
                None predicts them.
        """
        x = images_to_float(images)
        variant = self.hparams.variant
        if variant == "vrn":
            return ReconstructionOutput(self.net(x), None)
        if variant == "guided":
            out = self.net(x, landmark_heatmaps)
            return ReconstructionOutput(out.volume, out.heatmaps)
        out = self.net(x)
        return ReconstructionOutput(out.volume, out.heatmaps)

    # ------------------------------------------------------------------ targets and losses
    def _target(self, batch: Mapping[str, torch.Tensor], logits: torch.Tensor) -> torch.Tensor:
        """The batch's decoded target ``volume`` (B, D, S, S) in the logits' dtype.

        Raises:
            ReconstructionTaskError: the batch has no decoded ``volume`` (it did not come through the data
                module's ``on_after_batch_transfer``), or its shape differs from the network's output.
        """
        if "volume" not in batch:
            raise ReconstructionTaskError(
                f"the batch has no decoded 'volume' (keys {sorted(batch)}): volume batches are decoded by the data "
                f"module's on_after_batch_transfer (VolumeDataModule) before they reach the task")
        volume = batch["volume"]
        data_shape = tuple(volume.shape[1:])
        if tuple(logits.shape[1:]) != data_shape:
            raise ReconstructionTaskError(
                f"the network predicts volumes of shape (D, S, S) = {tuple(logits.shape[1:])} but the data's volumes "
                f"are {data_shape}: make model.net's out_depth / output_size (${{data.volume_depth}} / "
                f"${{data.image_size}} in the model configs) match the data")
        return volume.to(logits.dtype)

    def _heatmap_target(self, landmarks: torch.Tensor, image_size: tuple[int, int],
                        heatmap_size: tuple[int, int]) -> torch.Tensor:
        pts = image_to_heatmap_points(landmarks.float(), image_size, heatmap_size)
        return gaussian_heatmaps(pts, heatmap_size, sigma=float(self.hparams.heatmap_sigma))

    def _run(self, batch: Mapping[str, torch.Tensor], training: bool) -> dict[str, Any]:
        images = batch["image"]
        h, w = images.shape[-2:]
        landmarks = batch["landmarks"].float()
        heat_preds: list[torch.Tensor] | torch.Tensor | None
        if self.hparams.variant == "guided" and training:
            # Jackson's thesis: ground-truth heatmaps guide the reconstruction network in training; the landmark
            # network learns from the same images with the heatmap loss.
            x = images_to_float(images)
            guide = gaussian_heatmaps(landmarks, (h, w), sigma=float(self.hparams.heatmap_sigma)).to(x.dtype)
            logits = self.net(x, guide).volume
            heat_preds = self.net.landmark_net(x)
        else:
            logits, heat_preds = self(images)
        target = self._target(batch, logits)
        volume_loss = volumetric_bce_loss(logits, target, reduction=self.hparams.loss_reduction)
        heat_loss = None
        last_heat = None
        if heat_preds is not None and self.has_landmarks:
            stacks = heat_preds if isinstance(heat_preds, (list, tuple)) else [heat_preds]
            last_heat = stacks[-1]
            target_heat = self._heatmap_target(landmarks, (h, w), tuple(last_heat.shape[-2:]))
            visible = torch.isfinite(landmarks).all(dim=-1)
            heat_loss = heatmap_mse_loss(list(stacks), target_heat.to(last_heat.dtype), visibility=visible)
        loss = volume_loss if heat_loss is None else volume_loss + float(self.hparams.heatmap_weight) * heat_loss
        return {"loss": loss, "volume_loss": volume_loss, "heatmap_loss": heat_loss, "logits": logits,
                "target": target, "heatmaps": last_heat}

    # ------------------------------------------------------------------ steps
    def training_step(self, batch: Mapping[str, torch.Tensor], batch_idx: int) -> torch.Tensor:
        out = self._run(batch, training=True)
        bs = batch["image"].shape[0]
        self.log("train/loss", out["loss"], on_step=True, on_epoch=True, prog_bar=True, batch_size=bs, sync_dist=True)
        self.log("train/volume_loss", out["volume_loss"], on_step=False, on_epoch=True, batch_size=bs, sync_dist=True)
        if out["heatmap_loss"] is not None:
            self.log("train/heatmap_loss", out["heatmap_loss"], on_step=False, on_epoch=True, batch_size=bs,
                     sync_dist=True)
        return out["loss"]

    def _landmark_predictions(self, batch: Mapping[str, torch.Tensor],
                              heatmaps: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None:
        """(pred (B, 68, 2), gt (B, 68, 2)) in source pixels where the frame is known, and the valid-row mask."""
        if heatmaps is None:
            return None
        size = tuple(batch["image"].shape[-2:])
        pred = heatmap_landmarks(heatmaps, size)  # type: ignore[arg-type]
        gt = batch["landmarks"].float()
        frame = batch["frame"]
        valid = torch.isfinite(gt).all(dim=-1).all(dim=-1)
        return crop_to_source(pred, frame), crop_to_source(gt, frame), valid

    def _eval_step(self, batch: Mapping[str, torch.Tensor], batch_idx: int, stage: str) -> None:
        out = self._run(batch, training=False)
        bs = batch["image"].shape[0]
        self.log(f"{stage}/loss", out["loss"], on_step=False, on_epoch=True, batch_size=bs, sync_dist=True)
        iou_metric = self.val_iou if stage == "val" else self.test_iou
        nme_metric = self.val_nme if stage == "val" else self.test_nme
        logits, target = out["logits"].float(), out["target"]
        iou_metric.update(logits, target)
        lm = self._landmark_predictions(batch, out["heatmaps"])
        yaw = batch["yaw"].double() if "yaw" in batch else None
        if lm is not None:
            pred, gt, valid = lm
            if bool(valid.any()):
                nme_metric.update(pred[valid], gt[valid], None if yaw is None else yaw[valid])
        self._update_baseline(batch, target, yaw, stage)
        if stage == "test":
            per_iou = volumetric_iou(logits, target, threshold=float(self.hparams.iou_threshold))
            nme = torch.full((bs,), float("nan"), dtype=torch.float64, device=logits.device)
            pred_pts = torch.full((bs, 68, 2), float("nan"), dtype=torch.float32, device=logits.device)
            if lm is not None:
                pred, gt, valid = lm
                pred_pts = pred.float()
                if bool(valid.any()):
                    nme[valid] = landmark_nme(pred[valid], gt[valid]).to(nme.device)
            yaw_col = yaw if yaw is not None else torch.full((bs,), float("nan"), dtype=torch.float64,
                                                              device=logits.device)
            mesh_col, base_col = self._mesh_nmes(batch, logits, target)
            self.test_rows.update(index=batch["index"], iou=per_iou.float(), nme=nme, yaw=yaw_col.double(),
                                  landmarks=pred_pts, mesh_nme=mesh_col.to(logits.device),
                                  baseline_mesh_nme=base_col.to(logits.device))
        if batch_idx == 0 and int(self.hparams.num_val_meshes) > 0 and not self.trainer.sanity_checking:
            k = min(int(self.hparams.num_val_meshes), bs)
            probs = torch.sigmoid(logits[:k]).cpu().numpy()
            images = batch["image"][:k].permute(0, 2, 3, 1).cpu().numpy()
            self._mesh_samples = [{"probs": probs[i], "target": target[i].cpu().numpy(), "image": images[i],
                                   "index": int(batch["index"][i])} for i in range(k)]

    @property
    def mesh_nme_enabled(self) -> bool:
        """Whether the test step computes mesh NMEs (``mesh_nme`` hyperparameter; True when absent, e.g. for a
        subclass that records only its own arguments)."""
        return bool(self.hparams.get("mesh_nme", True))

    @property
    def mesh_frame(self) -> str:
        """The frame meshes are saved in (``mesh_frame`` hyperparameter, ``"display"`` when absent)."""
        return _check_mesh_frame(str(self.hparams.get("mesh_frame", "display")))

    def _mesh_nmes(self, batch: Mapping[str, torch.Tensor], logits: torch.Tensor,
                   target: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-sample mesh NME of the prediction and of the trivial baseline, (B,) float64 each (NaN where not
        computable or ``mesh_nme`` is off; rounded to :data:`MESH_NME_DECIMALS` decimals); see the module docstring
        for the protocol."""
        bs = logits.shape[0]
        pred_col = torch.full((bs,), float("nan"), dtype=torch.float64)
        base_col = torch.full((bs,), float("nan"), dtype=torch.float64)
        if not self.mesh_nme_enabled:
            return pred_col, base_col
        iso = float(self.hparams.iou_threshold)
        probs = torch.sigmoid(logits.detach().float()).cpu().numpy()
        targets = target.detach().float().cpu().numpy()
        landmarks = batch["landmarks"].detach().float().cpu().numpy()
        lm3d = batch.get("landmarks_3d")
        lm3d = lm3d.detach().float().cpu().numpy() if isinstance(lm3d, torch.Tensor) else None
        image_size = (int(batch["image"].shape[-2]), int(batch["image"].shape[-1]))
        base = self.baseline_volume
        if self._baseline_points is None and base.numel() and tuple(base.shape) == tuple(target.shape[1:]):
            self._baseline_points = _mesh_points(base.cpu().numpy(), 0.5)
        for i in range(bs):
            d = interocular_voxels(landmarks[i], targets[i], image_size, None if lm3d is None else lm3d[i])
            if not math.isfinite(d):
                continue
            gt_pts = _mesh_points(targets[i], 0.5)
            if gt_pts is not None:
                gt_pts = visible_surface_points(gt_pts, targets[i])
            if gt_pts is None or len(gt_pts) == 0:
                continue
            pred_pts = _mesh_points(probs[i], iso)
            if pred_pts is not None:
                pred_col[i] = round(mesh_nme(pred_pts, gt_pts, d, icp_iterations=MESH_NME_ICP_ITERATIONS),
                                    MESH_NME_DECIMALS)
            if self._baseline_points is not None:
                base_col[i] = round(mesh_nme(self._baseline_points, gt_pts, d,
                                             icp_iterations=MESH_NME_ICP_ITERATIONS), MESH_NME_DECIMALS)
        return pred_col, base_col

    def _update_baseline(self, batch: Mapping[str, torch.Tensor], target: torch.Tensor, yaw: torch.Tensor | None,
                         stage: str) -> None:
        """Score the trivial predictor on this batch (when it is known and fits the data's volume shape)."""
        base = self.baseline_volume
        if base.numel() and tuple(base.shape) == tuple(target.shape[1:]):
            metric = self.val_baseline_iou if stage == "val" else self.test_baseline_iou
            metric.update(base.unsqueeze(0).expand_as(target), target)
        mean_lmk = self.baseline_landmarks
        gt = batch["landmarks"].float()
        if (self.has_landmarks and mean_lmk.numel() and tuple(mean_lmk.shape) == tuple(gt.shape[1:])
                and torch.isfinite(mean_lmk).all()):
            valid = torch.isfinite(gt).all(dim=-1).all(dim=-1)
            if bool(valid.any()):
                pred = mean_lmk.to(gt.dtype).unsqueeze(0).expand_as(gt)
                frame = batch["frame"]
                metric = self.val_baseline_nme if stage == "val" else self.test_baseline_nme
                metric.update(crop_to_source(pred, frame)[valid], crop_to_source(gt, frame)[valid],
                              None if yaw is None else yaw[valid])

    def validation_step(self, batch: Mapping[str, torch.Tensor], batch_idx: int) -> None:
        self._eval_step(batch, batch_idx, "val")

    def test_step(self, batch: Mapping[str, torch.Tensor], batch_idx: int) -> None:
        self._eval_step(batch, batch_idx, "test")

    # ------------------------------------------------------------------ epoch ends
    def on_validation_epoch_start(self) -> None:
        self._mesh_samples = []

    def on_test_epoch_start(self) -> None:
        self._mesh_samples = []
        self._baseline_points = None
        self.test_rows.reset()

    def _nme_values(self, metric: LandmarkNME) -> dict[str, float]:
        raw = metric.compute()
        metric.reset()
        return {k: float(v) for k, v in raw.items()}

    def on_validation_epoch_end(self) -> None:
        if _samples_seen(self.val_iou) > 0:
            self.log("val/iou", self.val_iou.compute(), prog_bar=True)
        self.val_iou.reset()
        if self.has_landmarks and self.val_nme.update_called:
            nme = self._nme_values(self.val_nme)
            if not math.isnan(nme["nme"]):
                self.log("val/nme", nme["nme"], prog_bar=True)
        self.val_nme.reset()
        if _samples_seen(self.val_baseline_iou) > 0:
            self.log("val/baseline_iou", self.val_baseline_iou.compute())
        self.val_baseline_iou.reset()
        if self.has_landmarks and self.val_baseline_nme.update_called:
            nme = self._nme_values(self.val_baseline_nme)
            if not math.isnan(nme["nme"]):
                self.log("val/baseline_nme", nme["nme"])
        self.val_baseline_nme.reset()
        if self._mesh_samples and self.trainer.is_global_zero and not self.trainer.sanity_checking:
            self.mesh_paths = self._save_meshes(f"epoch_{self.current_epoch:03d}", "val")
            self._log_meshes_to_wandb("val/meshes", self.mesh_paths)
        self._mesh_samples = []

    def on_test_epoch_end(self) -> None:
        report: dict[str, Any] = {"variant": self.hparams.variant, "iou_threshold": float(self.hparams.iou_threshold)}
        n = _samples_seen(self.test_iou)
        report["iou"] = float(self.test_iou.compute()) if n else float("nan")
        report["n"] = n
        self.test_iou.reset()
        if self.has_landmarks:
            nme = self._nme_values(self.test_nme) if self.test_nme.update_called else {}
            for key, value in nme.items():
                report["n_landmarks" if key == "n" else key] = int(value) if key.startswith("n_") or key == "n" \
                    else value
        self.test_nme.reset()
        if _samples_seen(self.test_baseline_iou) > 0:
            report["baseline_iou"] = float(self.test_baseline_iou.compute())
        self.test_baseline_iou.reset()
        if self.has_landmarks and self.test_baseline_nme.update_called:
            report["baseline_nme"] = self._nme_values(self.test_baseline_nme)["nme"]
        self.test_baseline_nme.reset()
        gathered = self.test_rows.compute() if self.test_rows.update_called else {}
        self.test_rows.reset()
        if gathered:
            outputs = {k: v.detach().cpu().numpy() for k, v in gathered.items()}
            # 1-D even for one test sample (the gathered rows of a single sample are 0-d)
            yaw_deg = torch.as_tensor(np.atleast_1d(np.abs(np.degrees(outputs["yaw"].astype(np.float64)))))
            iou = np.atleast_1d(outputs["iou"])
            for (lo, hi), sel in zip(YAW_BINS, yaw_bin_masks(yaw_deg, YAW_BINS)):  # the NME's bins, edges included
                sel = sel.numpy()
                report[f"iou_{lo}_{hi}"] = float(iou[sel].mean()) if sel.any() else float("nan")
            if self.mesh_nme_enabled:
                for key in ("mesh_nme", "baseline_mesh_nme"):
                    values = outputs[key].astype(np.float64)
                    finite = values[np.isfinite(values)]
                    report[key] = float(finite.mean()) if finite.size else float("nan")
                    report[f"n_{key}"] = int(finite.size)
            self.test_outputs = outputs
        flat = {f"test/{k}": float(v) for k, v in report.items()
                if isinstance(v, (int, float)) and k not in ("iou_threshold",) and not math.isnan(float(v))}
        if flat:
            self.log_dict(flat)
        self.test_report = report
        if self._mesh_samples and self.trainer.is_global_zero:
            self.mesh_paths = self._save_meshes("test", "test")
            self._log_meshes_to_wandb("test/meshes", self.mesh_paths)
        self._mesh_samples = []

    # ------------------------------------------------------------------ meshes
    def _sample_id(self, split: str, index: int) -> str:
        data = task_data(getattr(self.trainer, "datamodule", None))
        names = data.item_names(split) if data is not None else None
        if names is not None and 0 <= index < len(names):
            return str(names[index])
        return f"{split}_{index:06d}"

    def _display_mesh(self, volume: np.ndarray, image: np.ndarray | None) -> Any:
        """The mesh of a (D, S, S) volume at ``iou_threshold``, coloured by the crop, in ``mesh_frame``."""
        from faceforge.geometry.volume_mesh import to_mesh_frame, volume_to_mesh

        mesh = volume_to_mesh(volume, iso_level=float(self.hparams.iou_threshold), image=image)
        return to_mesh_frame(mesh, self.mesh_frame, tuple(volume.shape))

    def _save_meshes(self, folder: str, split: str) -> list[Path]:
        """Export the kept samples' predicted meshes (and ground truth once) under ``<run dir>/meshes/``."""
        from faceforge.geometry.volume_mesh import VolumeMeshError, export_mesh

        root = Path(self.trainer.default_root_dir) / "meshes"
        fmt = self.hparams.mesh_format
        paths: list[Path] = []
        for sample in self._mesh_samples:
            name = _safe_name(self._sample_id(split, sample["index"]))
            try:
                paths.append(export_mesh(self._display_mesh(sample["probs"], sample["image"]),
                                         root / folder / f"{name}.{fmt}"))
            except VolumeMeshError as exc:  # e.g. an empty prediction early in training
                log.warning("no mesh for %s (%s): %s", name, folder, exc)
            gt_path = root / "gt" / f"{name}.{fmt}"
            if not gt_path.exists():
                try:
                    export_mesh(self._display_mesh(sample["target"], sample["image"]), gt_path)
                except VolumeMeshError as exc:
                    log.warning("no ground-truth mesh for %s: %s", name, exc)
        return paths

    def _log_meshes_to_wandb(self, key: str, paths: list[Path]) -> None:
        if not paths:
            return
        from pytorch_lightning.loggers import WandbLogger

        for logger in self.loggers:
            if isinstance(logger, WandbLogger):
                import wandb

                logger.experiment.log({key: [wandb.Object3D(str(p)) for p in paths],
                                       "trainer/global_step": self.global_step})

    # ------------------------------------------------------------------ evaluation outputs
    def result_table(self, report: Mapping[str, Any], dataset: str) -> tuple[list[dict[str, Any]], Any]:
        """Rows and (key, title) columns of the results table for a test report (used by evaluate.py)."""
        row = {"dataset": dataset, "subset": "all", "level": self.hparams.variant}
        row.update({k: v for k, v in report.items() if k not in ("variant",)})
        return [row], RECONSTRUCTION_COLUMNS

    def write_test_outputs(self, output_dir: str | Path, datamodule: TaskData | Any) -> list[Path]:
        """Write ``reconstruction_predictions.csv`` (one row per test sample) into ``output_dir``.

        Columns: ``sample_id``, ``yaw_deg``, ``iou``, ``nme`` (empty where the variant has no landmarks or the
        sample no ground truth), ``mesh_nme`` and ``baseline_mesh_nme`` (empty where not computed) and
        ``landmarks`` (136 predicted x y values in source-image pixels where the frame
        is known, else crop pixels; empty without landmarks). Returns the paths written: the CSV and the test
        meshes saved by the test epoch (``<run dir>/meshes/test/``); nothing without test outputs.
        """
        import csv
        import io

        from faceforge.utils.atomic import atomic_write_text

        out = self.test_outputs
        if not out or len(out["index"]) == 0:
            return []
        data = task_data(datamodule)
        ids = data.item_names("test") if data is not None else None
        buf = io.StringIO()
        writer = csv.writer(buf, lineterminator="\n")
        writer.writerow(["sample_id", "yaw_deg", "iou", "nme", "mesh_nme", "baseline_mesh_nme", "landmarks"])
        nan = np.full(len(out["index"]), np.nan)
        for j, i in enumerate(out["index"].tolist()):
            sid = ids[i] if ids is not None and 0 <= i < len(ids) else f"test_{i:06d}"
            nme, yaw = float(out["nme"][j]), float(out["yaw"][j])
            lmk = out["landmarks"][j]
            mesh_cells = ["" if math.isnan(v) else f"{v:.6f}"
                          for v in (float(out.get("mesh_nme", nan)[j]), float(out.get("baseline_mesh_nme", nan)[j]))]
            writer.writerow([sid, "" if math.isnan(yaw) else f"{math.degrees(yaw):.3f}", f"{float(out['iou'][j]):.6f}",
                             "" if math.isnan(nme) else f"{nme:.6f}", *mesh_cells,
                             "" if not np.isfinite(lmk).all() else _format_points(lmk)])
        path = Path(output_dir) / "reconstruction_predictions.csv"
        atomic_write_text(path, buf.getvalue())
        return [path, *[p for p in self.mesh_paths if p.exists()]]

    # ------------------------------------------------------------------ optimisation
    def configure_optimizers(self) -> Any:
        return configure_optimization(self.parameters(), self.hparams.optimizer, self.hparams.scheduler)

