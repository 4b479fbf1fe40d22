"""Per-voxel sigmoid cross-entropy, the VRN training loss.

Jackson et al., "Large Pose 3D Face Reconstruction from a Single Image via Direct Volumetric CNN Regression"
(ICCV 2017), Sec. 3.3, Eq. 1, train every VRN variant with a sigmoid cross-entropy summed over the voxels:

    l1 = - sum_{w=1}^{W} sum_{h=1}^{H} sum_{d=1}^{D} [ V_whd log V^_whd + (1 - V_whd) log(1 - V^_whd) ]

with ``V`` the binary ground-truth volume and ``V^ = sigmoid(logits)`` the prediction. faceforge's networks return
LOGITS (``faceforge.models.vrn``), so the loss is computed from logits with
:func:`torch.nn.functional.binary_cross_entropy_with_logits` (log-sum-exp form, numerically stable for large
|logits|, no ``log(0)``).

Normalisation (mean vs sum)
---------------------------
Eq. 1 is a SUM over the W x H x D = 192 x 192 x 200 = 7,372,800 voxels of a sample. Its gradient therefore
scales with the volume size: a learning rate tuned at one resolution (or one batch size, if the batch is summed
too) is wrong at another by the ratio of voxel counts, and with plain SGD a sum over 7.4 M voxels calls for a
learning rate ~1e7 times smaller than a mean does. The paper trains with RMSProp (lr 1e-4), whose per-parameter
normalisation of the gradient hides most of that scale, but not all of it (its epsilon and any gradient clipping
see the raw scale), and Adam/SGD do not hide it at all.

faceforge's default is therefore ``reduction="mean"``: the mean over every voxel of every sample, i.e. Eq. 1
divided by ``B * D * H * W``. It has the same minimiser and the same gradient DIRECTION as Eq. 1; only the scale
differs, and that scale no longer depends on the volume or batch size, so a learning rate stays meaningful
across resolutions (tests use 40x48x48 volumes, the paper 200x192x192). ``reduction="sum_per_sample"`` gives
Eq. 1 literally (sum over voxels, mean over the batch), ``"sum"`` sums everything, ``"none"`` returns the
per-voxel losses.
"""
from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from faceforge.errors import FaceforgeError

__all__ = ["LossInputError", "VolumetricBCELoss", "volumetric_bce_loss"]

Reduction = Literal["mean", "sum_per_sample", "sum", "none"]
_REDUCTIONS = ("mean", "sum_per_sample", "sum", "none")


class LossInputError(FaceforgeError, ValueError):
    """A loss received tensors of the wrong shape, dtype or value range."""


def _target_as_float(target: Tensor, like: Tensor, name: str) -> Tensor:
    """Binary / soft target -> float tensor of ``like``'s dtype; checks the value range [0, 1]."""
    if target.dtype == torch.bool:
        return target.to(like.dtype)
    if not target.is_floating_point():
        if target.numel() and (int(target.min()) < 0 or int(target.max()) > 1):
            raise LossInputError(f"{name}: integer target must hold only 0 and 1, got range "
                                 f"[{int(target.min())}, {int(target.max())}] (a 0..255 volume must be "
                                 f"binarised or divided by 255 first)")
        return target.to(like.dtype)
    if target.numel():
        lo, hi = float(target.min()), float(target.max())
        if not (0.0 <= lo and hi <= 1.0):
            raise LossInputError(f"{name}: float target must lie in [0, 1], got range [{lo:.4g}, {hi:.4g}]")
    return target.to(like.dtype)


def volumetric_bce_loss(logits: Tensor, target: Tensor, reduction: Reduction = "mean",
                        pos_weight: float | None = None) -> Tensor:
    """Per-voxel sigmoid cross-entropy of volume logits (Jackson et al. 2017, Sec. 3.3, Eq. 1).

    ``loss_i = -[ t_i log sigmoid(x_i) + (1 - t_i) log(1 - sigmoid(x_i)) ]`` for every voxel ``i``, computed from
    the logits ``x`` in the numerically stable form. See the module docstring for the choice of normalisation.

    Args:
        logits: (B, D, H, W) float volume logits (the raw output of :class:`faceforge.models.vrn.VRN`).
        target: (B, D, H, W) ground-truth occupancy: bool, integer {0, 1}, or float in [0, 1] (soft targets are
            allowed and give the cross-entropy against that probability).
        reduction: ``"mean"`` (default: over all B*D*H*W voxels), ``"sum_per_sample"`` (Eq. 1: sum over the
            voxels of each sample, mean over the batch), ``"sum"`` (over everything) or ``"none"``.
        pos_weight: optional weight (> 0) of the occupied-voxel term ``t log sigmoid(x)`` (not in the paper;
            for class-imbalance experiments). None = 1.

    Returns:
        0-d float tensor (dtype of ``logits``), or (B, D, H, W) with ``reduction="none"``. The loss is minimised
        (value 0 for a binary target) as the logits go to +inf on occupied and -inf on empty voxels.

    Raises:
        LossInputError: if the shapes differ or are not 4-D, ``logits`` is not floating point, the target is out
            of range, or ``reduction`` / ``pos_weight`` is invalid.
    """
    if reduction not in _REDUCTIONS:
        raise LossInputError(f"volumetric_bce_loss: reduction must be one of {_REDUCTIONS}, got {reduction!r}")
    if logits.ndim != 4:
        raise LossInputError(f"volumetric_bce_loss: logits must be (B, D, H, W), got shape {tuple(logits.shape)}")
    if tuple(target.shape) != tuple(logits.shape):
        raise LossInputError(f"volumetric_bce_loss: target shape {tuple(target.shape)} differs from logits shape "
                             f"{tuple(logits.shape)}")
    if not logits.is_floating_point():
        raise LossInputError(f"volumetric_bce_loss: logits must be floating point, got {logits.dtype}")
    tgt = _target_as_float(target, logits, "volumetric_bce_loss")
    pw = None
    if pos_weight is not None:
        if not pos_weight > 0:
            raise LossInputError(f"volumetric_bce_loss: pos_weight must be > 0, got {pos_weight}")
        pw = torch.tensor(float(pos_weight), dtype=logits.dtype, device=logits.device)
    per_voxel = F.binary_cross_entropy_with_logits(logits, tgt, reduction="none", pos_weight=pw)
    if reduction == "none":
        return per_voxel
    if reduction == "mean":
        return per_voxel.mean()
    if reduction == "sum":
        return per_voxel.sum()
    return per_voxel.flatten(1).sum(dim=1).mean()  # sum_per_sample


class VolumetricBCELoss(nn.Module):
    """``nn.Module`` wrapper of :func:`volumetric_bce_loss` (Jackson et al. 2017, Eq. 1).

    Args:
        reduction: see :func:`volumetric_bce_loss` (default ``"mean"``).
        pos_weight: see :func:`volumetric_bce_loss`.

    Shapes:
        ``forward(logits (B, D, H, W) float, target (B, D, H, W) bool / {0,1} / [0,1])`` -> 0-d tensor.

    Raises:
        LossInputError: on an invalid ``reduction`` (at construction) or bad inputs (at call).
    """

    def __init__(self, reduction: Reduction = "mean", pos_weight: float | None = None) -> None:
        super().__init__()
        if reduction not in _REDUCTIONS:
            raise LossInputError(f"VolumetricBCELoss: reduction must be one of {_REDUCTIONS}, got {reduction!r}")
        if pos_weight is not None and not pos_weight > 0:
            raise LossInputError(f"VolumetricBCELoss: pos_weight must be > 0, got {pos_weight}")
        self.reduction: Reduction = reduction
        self.pos_weight = pos_weight

    def forward(self, logits: Tensor, target: Tensor) -> Tensor:
        """Loss of a batch; see :func:`volumetric_bce_loss`."""
        return volumetric_bce_loss(logits, target, self.reduction, self.pos_weight)

    def extra_repr(self) -> str:
        return f"reduction={self.reduction!r}, pos_weight={self.pos_weight}"
