"""Losses: volumetric sigmoid cross-entropy (VRN), landmark heatmap MSE (stacked hourglass) and the BEGAN
autoencoder-discriminator losses with the equilibrium variable k (3DFaceGAN baseline)."""
from __future__ import annotations

from faceforge.losses.began import (
    BEGANEquilibrium,
    autoencoder_loss,
    began_convergence,
    began_discriminator_loss,
    began_generator_loss,
    began_k_update,
)
from faceforge.losses.heatmap import HeatmapMSELoss, heatmap_mse_loss
from faceforge.losses.volumetric import LossInputError, VolumetricBCELoss, volumetric_bce_loss

__all__ = [
    "BEGANEquilibrium",
    "HeatmapMSELoss",
    "LossInputError",
    "VolumetricBCELoss",
    "autoencoder_loss",
    "began_convergence",
    "began_discriminator_loss",
    "began_generator_loss",
    "began_k_update",
    "heatmap_mse_loss",
    "volumetric_bce_loss",
]
