"""Losses of an autoencoder discriminator with BEGAN's equilibrium (Berthelot et al., "BEGAN: Boundary Equilibrium
Generative Adversarial Networks", 2017, arXiv 1703.10717, Sec. 3), as 3DFaceGAN uses them (Moschoglou et al.,
IJCV 2020, arXiv 1905.00307), plus a supervised reconstruction term against the ground-truth shape.

With ``D`` an autoencoder and ``L(v) = |v - D(v)|`` its L1 reconstruction error (BEGAN's eta = 1; the mean over
voxels here):

* discriminator: ``L_D = L(x) - k_t L(G(z))``;
* generator: ``L_G = L(G(z))`` (+ ``reconstruction_weight`` x a supervised loss, our addition for the
  image-to-shape generator: :func:`faceforge.losses.volumetric.volumetric_bce_loss` of the generator's logits
  against the ground-truth volume);
* equilibrium: ``k_{t+1} = clip(k_t + lambda_k (gamma L(x) - L(G(z))), 0, 1)``, ``k_0 = 0``;
* convergence measure: ``M = L(x) + |gamma L(x) - L(G(z))|``.

Constants: gamma 0.5, lambda_k 0.001, k_0 0 (BEGAN's common values).
"""
from __future__ import annotations

import torch
from torch import Tensor, nn

from faceforge.losses.volumetric import LossInputError

__all__ = ["BEGANEquilibrium", "autoencoder_loss", "began_convergence", "began_discriminator_loss",
           "began_generator_loss", "began_k_update"]


def autoencoder_loss(reconstruction: Tensor, inputs: Tensor) -> Tensor:
    """BEGAN's ``L(v) = |v - D(v)|`` (eta = 1): the mean absolute reconstruction error over every element.

    Args:
        reconstruction: the autoencoder's output ``D(v)``, (B, ...) float.
        inputs: ``v``, same shape (bool or float; bool is cast).

    Returns:
        0-d float tensor (>= 0).

    Raises:
        LossInputError: if the shapes differ or ``reconstruction`` is not floating point.
    """
    if tuple(reconstruction.shape) != tuple(inputs.shape):
        raise LossInputError(f"autoencoder_loss: reconstruction shape {tuple(reconstruction.shape)} differs from "
                             f"input shape {tuple(inputs.shape)}")
    if not reconstruction.is_floating_point():
        raise LossInputError(f"autoencoder_loss: reconstruction must be floating point, got {reconstruction.dtype}")
    return (reconstruction - inputs.to(reconstruction.dtype)).abs().mean()


def began_discriminator_loss(loss_real: Tensor, loss_fake: Tensor, k: Tensor | float) -> Tensor:
    """``L_D = L(x) - k_t L(G(z))`` (BEGAN Eq. in Sec. 3.4). ``k`` is treated as a constant (no gradient)."""
    k_t = k.detach() if isinstance(k, Tensor) else torch.as_tensor(float(k))
    return loss_real - k_t.to(loss_real) * loss_fake


def began_generator_loss(loss_fake: Tensor) -> Tensor:
    """``L_G = L(G(z))``: the discriminator's reconstruction error of generated shapes."""
    return loss_fake


def began_k_update(k: Tensor | float, loss_real: Tensor | float, loss_fake: Tensor | float, gamma: float = 0.5,
                   lambda_k: float = 1e-3) -> Tensor:
    """``k_{t+1} = clip(k_t + lambda_k (gamma L(x) - L(G(z))), 0, 1)`` (no gradient flows).

    Returns:
        0-d float tensor in [0, 1] (dtype / device of ``k`` when it is a tensor).
    """
    k_t = k.detach() if isinstance(k, Tensor) else torch.as_tensor(float(k))
    real = torch.as_tensor(loss_real).detach().to(k_t)
    fake = torch.as_tensor(loss_fake).detach().to(k_t)
    return (k_t + lambda_k * (gamma * real - fake)).clamp(0.0, 1.0)


def began_convergence(loss_real: Tensor | float, loss_fake: Tensor | float, gamma: float = 0.5) -> Tensor:
    """BEGAN's convergence measure ``M = L(x) + |gamma L(x) - L(G(z))|`` (lower is better; no gradient)."""
    real = torch.as_tensor(loss_real).detach()
    fake = torch.as_tensor(loss_fake).detach().to(real)
    return real + (gamma * real - fake).abs()


class BEGANEquilibrium(nn.Module):
    """The equilibrium state of a BEGAN: ``k`` as a buffer (saved in checkpoints), gamma and lambda_k.

    Under data parallelism every rank must hold the same ``k``: call :meth:`update` with losses already averaged
    over the ranks (the task all-reduces them), so that every rank computes the same new value.

    Args:
        gamma: diversity ratio ``E[L(G(z))] / E[L(x)]`` aimed at (0.5), in (0, 1].
        lambda_k: learning rate of ``k`` (0.001), >= 0.
        k_init: ``k_0`` (0), in [0, 1].

    Raises:
        LossInputError: on values outside those ranges.
    """

    k: Tensor

    def __init__(self, gamma: float = 0.5, lambda_k: float = 1e-3, k_init: float = 0.0) -> None:
        super().__init__()
        if not 0.0 < gamma <= 1.0:
            raise LossInputError(f"BEGANEquilibrium: gamma must be in (0, 1], got {gamma}")
        if not lambda_k >= 0.0:
            raise LossInputError(f"BEGANEquilibrium: lambda_k must be >= 0, got {lambda_k}")
        if not 0.0 <= k_init <= 1.0:
            raise LossInputError(f"BEGANEquilibrium: k_init must be in [0, 1], got {k_init}")
        self.gamma, self.lambda_k = float(gamma), float(lambda_k)
        self.register_buffer("k", torch.tensor(float(k_init), dtype=torch.float32))

    def discriminator_loss(self, loss_real: Tensor, loss_fake: Tensor) -> Tensor:
        """``L(x) - k_t L(G(z))`` with the current ``k``."""
        return began_discriminator_loss(loss_real, loss_fake, self.k)

    @torch.no_grad()
    def update(self, loss_real: Tensor | float, loss_fake: Tensor | float) -> Tensor:
        """Move ``k`` by the rule and return the convergence measure ``M`` (0-d tensor) of these losses."""
        self.k.copy_(began_k_update(self.k, loss_real, loss_fake, self.gamma, self.lambda_k))
        return began_convergence(loss_real, loss_fake, self.gamma)

    def extra_repr(self) -> str:
        return f"gamma={self.gamma}, lambda_k={self.lambda_k}, k={float(self.k):.6f}"
