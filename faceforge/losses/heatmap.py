"""Landmark heatmap loss: MSE on Gaussian heatmaps with intermediate supervision.

Stacked-hourglass training (Newell, Yang and Deng, "Stacked Hourglass Networks for Human Pose Estimation", ECCV
2016, Sec. 3.4 and 4) regresses one heatmap per landmark, a 2D Gaussian (sigma 1 px) centred on the landmark
(:func:`faceforge.models.vrn.gaussian_heatmaps`), with a mean-squared-error loss, and applies that loss to the
output of EVERY stack against the same ground truth ("intermediate supervision"); the per-stack losses are added.
The landmark networks of VRN - Guided and the landmark branch of VRN - Multitask (Jackson et al., ICCV 2017, Sec.
3.2) are trained the same way.

Per stack the loss is the mean over batch, points and pixels of ``(pred - target)^2`` (Torch7's ``nn.MSECriterion``
with size averaging, as the hourglass code used); with a visibility mask, invisible points are left out and the
mean is over the visible points' pixels only. The stacks are summed (``stack_reduction="sum"``, Newell et al.) or
averaged (``"mean"``: the scale then does not change with the number of stacks).
"""
from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import torch
from torch import Tensor, nn

from faceforge.losses.volumetric import LossInputError

__all__ = ["HeatmapMSELoss", "heatmap_mse_loss"]

StackReduction = Literal["sum", "mean"]


def _as_stack_list(preds: Tensor | Sequence[Tensor]) -> list[Tensor]:
    if isinstance(preds, Tensor):
        return [preds]
    stacks = list(preds)
    if not stacks or not all(isinstance(p, Tensor) for p in stacks):
        raise LossInputError("heatmap_mse_loss: preds must be a tensor or a non-empty sequence of tensors "
                             "(one (B, K, H, W) heatmap tensor per stack)")
    return stacks


def heatmap_mse_loss(preds: Tensor | Sequence[Tensor], target: Tensor, visibility: Tensor | None = None,
                     stack_reduction: StackReduction = "sum") -> Tensor:
    """MSE between predicted and ground-truth landmark heatmaps, summed over stacks (Newell et al. 2016).

    Args:
        preds: (B, K, H, W) float heatmaps, or a sequence of them (one per hourglass stack, e.g. the list returned
            by :class:`faceforge.models.hourglass.StackedHourglass` or ``GuidedOutput.heatmaps``; the single tensor
            ``MultitaskOutput.heatmaps`` is also accepted). Every stack is compared with the same target.
        target: (B, K, H, W) float ground-truth heatmaps at the SAME resolution as the predictions (build them
            with :func:`faceforge.models.vrn.gaussian_heatmaps` in the heatmap's pixel frame; no silent resizing).
        visibility: optional (B, K) bool / {0, 1} / float weights per point; 0 leaves a point out.
        stack_reduction: ``"sum"`` (default, Newell et al.) or ``"mean"`` over the stacks.

    Returns:
        0-d float tensor. With a visibility mask and no visible point at all, 0 (with a gradient path, so that
        the step is a no-op rather than NaN).

    Raises:
        LossInputError: on mismatching shapes, a non-4-D tensor, non-float predictions or a bad reduction.
    """
    if stack_reduction not in ("sum", "mean"):
        raise LossInputError(f"heatmap_mse_loss: stack_reduction must be 'sum' or 'mean', got {stack_reduction!r}")
    stacks = _as_stack_list(preds)
    if target.ndim != 4:
        raise LossInputError(f"heatmap_mse_loss: target must be (B, K, H, W), got shape {tuple(target.shape)}")
    for i, p in enumerate(stacks):
        if tuple(p.shape) != tuple(target.shape):
            raise LossInputError(f"heatmap_mse_loss: stack {i} has shape {tuple(p.shape)}, target has "
                                 f"{tuple(target.shape)} (build the target at the prediction's resolution)")
        if not p.is_floating_point():
            raise LossInputError(f"heatmap_mse_loss: stack {i} must be floating point, got {p.dtype}")
    b, k = target.shape[:2]
    weights: Tensor | None = None
    if visibility is not None:
        if tuple(visibility.shape) != (b, k):
            raise LossInputError(f"heatmap_mse_loss: visibility must be (B, K) = {(b, k)}, got "
                                 f"{tuple(visibility.shape)}")
        weights = visibility.to(device=stacks[0].device, dtype=stacks[0].dtype)
    losses = []
    for p in stacks:
        sq = (p - target.to(p.dtype)) ** 2  # (B, K, H, W)
        if weights is None:
            losses.append(sq.mean())
        else:
            per_point = sq.mean(dim=(2, 3))  # (B, K): mean over the pixels of each map
            losses.append((per_point * weights).sum() / weights.sum().clamp_min(torch.finfo(p.dtype).tiny))
    total = torch.stack(losses).sum()
    return total / len(losses) if stack_reduction == "mean" else total


class HeatmapMSELoss(nn.Module):
    """``nn.Module`` wrapper of :func:`heatmap_mse_loss` (Newell et al. 2016, intermediate supervision).

    Args:
        stack_reduction: ``"sum"`` (default) or ``"mean"`` over the stacks.

    Shapes:
        ``forward(preds (B, K, H, W) or [per-stack (B, K, H, W)], target (B, K, H, W), visibility (B, K) or
        None)`` -> 0-d tensor.
    """

    def __init__(self, stack_reduction: StackReduction = "sum") -> None:
        super().__init__()
        if stack_reduction not in ("sum", "mean"):
            raise LossInputError(f"HeatmapMSELoss: stack_reduction must be 'sum' or 'mean', got "
                                 f"{stack_reduction!r}")
        self.stack_reduction: StackReduction = stack_reduction

    def forward(self, preds: Tensor | Sequence[Tensor], target: Tensor,
                visibility: Tensor | None = None) -> Tensor:
        """Loss of a batch; see :func:`heatmap_mse_loss`."""
        return heatmap_mse_loss(preds, target, visibility, self.stack_reduction)

    def extra_repr(self) -> str:
        return f"stack_reduction={self.stack_reduction!r}"
