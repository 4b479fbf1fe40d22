"""Losses: volumetric sigmoid cross-entropy (VRN) and landmark heatmap MSE (stacked hourglass)."""
from __future__ import annotations

from faceforge.losses.heatmap import HeatmapMSELoss, heatmap_mse_loss
from faceforge.losses.volumetric import LossInputError, VolumetricBCELoss, volumetric_bce_loss

__all__ = [
    "HeatmapMSELoss",
    "LossInputError",
    "VolumetricBCELoss",
    "heatmap_mse_loss",
    "volumetric_bce_loss",
]
