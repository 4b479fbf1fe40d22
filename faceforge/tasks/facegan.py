"""3DFaceGAN-style baseline task: an image-to-volume generator trained against an autoencoder discriminator with
BEGAN's equilibrium (Moschoglou et al., IJCV 2020, arXiv 1905.00307; Berthelot et al. 2017, arXiv 1703.10717).

The network is a :class:`faceforge.models.facegan.FaceGAN` (``generator`` + ``discriminator``, plain
``nn.Module`` s). The task trains the two players with MANUAL optimisation, one optimiser each -- by default the
discriminator's is BEGAN's (Adam, lr 1e-4, betas (0.5, 0.999)) and the generator's the VRN networks' setting on
this data (RMSprop, lr 1e-3; our choice: the generator is a VRN trunk with a supervised loss, and at BEGAN's lr
it learns far too slowly for a CPU run) -- per training batch:

1. the generator maps the batch's images to volume logits ``G(x)``; it also decodes ``noise_samples`` noise codes
   ``z ~ N(0, I)`` (drawn from torch's global generator, which
   :class:`faceforge.runs.callbacks.StepSeeder` reseeds before every batch from the run's seed: the same seed gives
   the same run on CPU);
2. discriminator step (only the discriminator's parameters move): ``L_D = L(y) - k_t L(fake)``, with ``y`` the
   ground-truth volume, ``fake`` the generated occupancies ``sigmoid(G(.))`` (detached), both pooled to the
   discriminator's working resolution (:meth:`faceforge.models.facegan.ShapeAutoencoder.pool`), and ``L`` the
   autoencoder's L1 reconstruction error (:mod:`faceforge.losses.began`);
3. generator step (only the generator's parameters move): ``L_G = adversarial_weight L(fake) +
   reconstruction_weight BCE(G(x), y)`` (the supervised term: :func:`faceforge.losses.volumetric.
   volumetric_bce_loss`, our addition for the image-conditioned generator);
4. ``k`` (a buffer of :class:`faceforge.losses.began.BEGANEquilibrium`, in checkpoints) moves by
   ``lambda_k (gamma L(y) - L(fake))`` clipped to [0, 1], and ``M = L(y) + |gamma L(y) - L(fake)|`` is logged.
   Under DDP both losses are first averaged over the ranks, so every rank applies the same update to ``k``.

Logged: ``train/d_loss``, ``train/g_loss``, ``train/loss_real``, ``train/loss_fake``, ``train/reconstruction_loss``,
``train/k``, ``train/M``. Validation, test, the metrics (``val/iou``, ``test/iou``, the trivial baseline
``*/baseline_iou`` from the data module's training statistics), the sample meshes and the ``evaluate.py`` outputs
are those of :class:`faceforge.tasks.reconstruction.VolumeRegressionTask`, which this task extends: the
generator's logits are scored exactly as a VRN's. After each validation epoch ``num_noise_meshes`` shapes decoded
from fixed noise codes (seed ``noise_seed``) are also saved as ``meshes/epoch_NNN/noise_NN.<fmt>``
(unconditional generation; :meth:`FaceGANTask.sample` draws new ones).
"""
from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from faceforge.losses.began import BEGANEquilibrium, autoencoder_loss
from faceforge.losses.volumetric import volumetric_bce_loss
from faceforge.tasks.detection import images_to_float
from faceforge.tasks.optim import build_optimizer
from faceforge.tasks.reconstruction import ReconstructionOutput, ReconstructionTaskError, VolumeRegressionTask

__all__ = ["DEFAULT_GAN_OPTIMIZER", "DEFAULT_GENERATOR_OPTIMIZER", "FaceGANTask"]

log = logging.getLogger(__name__)

#: BEGAN's optimiser: Adam, lr 1e-4, beta1 0.5 (the discriminator's default).
DEFAULT_GAN_OPTIMIZER: Mapping[str, Any] = {"_target_": "torch.optim.Adam", "lr": 1.0e-4, "betas": [0.5, 0.999]}
#: The generator's default: the VRN configs' optimiser on the embedded data (RMSprop, lr 1e-3; our choice).
DEFAULT_GENERATOR_OPTIMIZER: Mapping[str, Any] = {"_target_": "torch.optim.RMSprop", "lr": 1.0e-3}


class FaceGANTask(VolumeRegressionTask):
    """LightningModule training a :class:`~faceforge.models.facegan.FaceGAN` (see the module docstring).

    Args:
        net: a FaceGAN (a module with ``generator`` and ``discriminator``; calling it runs the generator).
        variant: the label of reports and tables; must be ``"facegan"``.
        reconstruction_weight: weight of the supervised volumetric BCE in the generator's loss (>= 0).
        adversarial_weight: weight of ``L(G(.))`` in the generator's loss (>= 0; BEGAN: 1).
        gamma: BEGAN's diversity ratio (0.5).
        lambda_k: learning rate of k (0.001).
        k_init: k_0 (0).
        noise_samples: noise codes decoded per training batch besides the batch's images (fakes for the
            discriminator, adversarial loss for the generator), so that the noise decoder learns unconditional
            generation; 0 trains the conditional generator only.
        optimizer: primitive spec of the generator's optimiser (:func:`faceforge.tasks.optim.build_optimizer`;
            None or default: :data:`DEFAULT_GENERATOR_OPTIMIZER`, RMSprop lr 1e-3).
        discriminator_optimizer: the discriminator's (None: :data:`DEFAULT_GAN_OPTIMIZER`, BEGAN's Adam lr 1e-4,
            betas (0.5, 0.999)).
        iou_threshold, num_val_meshes, mesh_format, loss_reduction, monitor, monitor_mode, net_spec, input: as
            :class:`~faceforge.tasks.reconstruction.VolumeRegressionTask` (``loss_reduction`` is the supervised
            BCE's).
        num_noise_meshes: shapes decoded from noise and saved as meshes per validation epoch (0 for none).
        noise_seed: seed of those noise codes (the same codes every epoch).
        mesh_nme, mesh_frame: as for :class:`~faceforge.tasks.reconstruction.VolumeRegressionTask` (test-time mesh
            NME; the frame of the written meshes).

    Raises:
        ReconstructionTaskError: a network without generator / discriminator, another variant, negative weights
            (and the errors of VolumeRegressionTask and BEGANEquilibrium).
    """

    def __init__(self, net: nn.Module, variant: str = "facegan", reconstruction_weight: float = 1.0,
                 adversarial_weight: float = 1.0, gamma: float = 0.5, lambda_k: float = 1e-3, k_init: float = 0.0,
                 noise_samples: int = 4, optimizer: Mapping[str, Any] | None = DEFAULT_GENERATOR_OPTIMIZER,
                 discriminator_optimizer: Mapping[str, Any] | None = None, iou_threshold: float = 0.5,
                 num_val_meshes: int = 2, mesh_format: str = "glb", loss_reduction: str = "mean",
                 monitor: str = "val/iou", monitor_mode: str = "max", num_noise_meshes: int = 2,
                 noise_seed: int = 0, net_spec: str | None = None,
                 input: Mapping[str, Any] | None = None,  # the config's model.input block
                 mesh_nme: bool = True, mesh_frame: str = "display") -> None:
        if variant != "facegan":
            raise ReconstructionTaskError(f"FaceGANTask: variant must be 'facegan', got {variant!r}")
        if not (hasattr(net, "generator") and hasattr(net, "discriminator")):
            raise ReconstructionTaskError(f"FaceGANTask needs a FaceGAN network (generator + discriminator), got "
                                          f"{type(net).__name__}")
        if reconstruction_weight < 0 or adversarial_weight < 0:
            raise ReconstructionTaskError(f"FaceGANTask: weights must be >= 0, got reconstruction_weight="
                                          f"{reconstruction_weight}, adversarial_weight={adversarial_weight}")
        optimizer = dict(optimizer) if optimizer is not None else dict(DEFAULT_GENERATOR_OPTIMIZER)
        discriminator_optimizer = dict(discriminator_optimizer) if discriminator_optimizer is not None else None
        super().__init__(net=net, variant="vrn", optimizer=optimizer, scheduler=None, iou_threshold=iou_threshold,
                         num_val_meshes=num_val_meshes, mesh_format=mesh_format, loss_reduction=loss_reduction,
                         monitor=monitor, monitor_mode=monitor_mode, net_spec=net_spec, input=input,
                         mesh_nme=mesh_nme, mesh_frame=mesh_frame)
        input = dict(input) if input is not None else None  # a plain dict hyperparameter
        # this class's own arguments only (they rebuild it from a checkpoint, faceforge.tasks.checkpointing): the
        # parent's save_hyperparameters recorded its own (variant "vrn", scheduler, ...), which Lightning would merge
        self.hparams.clear()
        self.save_hyperparameters(ignore=["net"])
        self.automatic_optimization = False
        self.equilibrium = BEGANEquilibrium(gamma, lambda_k, k_init)

    # ------------------------------------------------------------------ generation
    def forward(self, images: torch.Tensor, landmark_heatmaps: torch.Tensor | None = None) -> ReconstructionOutput:
        """Volume logits (B, D, S, S) of the generator for images uint8 (B, 3, S, S) or float in [0, 1]
        (``landmark_heatmaps`` is not used)."""
        return ReconstructionOutput(self.net(images_to_float(images)), None)

    @torch.no_grad()
    def sample(self, num: int, seed: int | None = None) -> torch.Tensor:
        """Unconditional generation: ``num`` new face shapes decoded from ``z ~ N(0, I)``.

        Args:
            num: samples (>= 1).
            seed: seed of the noise (a private generator: the global one is untouched); None uses the global one.

        Returns:
            (num, D, S, S) float occupancy probabilities in [0, 1] (threshold at ``iou_threshold`` for a volume;
            :func:`faceforge.geometry.volume_mesh.volume_to_mesh` for a mesh).
        """
        gen = torch.Generator().manual_seed(int(seed)) if seed is not None else None
        return torch.sigmoid(self.net.sample(num, generator=gen))

    # ------------------------------------------------------------------ training
    def _synced_mean(self, value: torch.Tensor) -> torch.Tensor:
        """The mean of a detached scalar over the ranks (itself on one device)."""
        value = value.detach()
        trainer = getattr(self, "_trainer", None)
        if trainer is None:
            return value
        return trainer.strategy.reduce(value, reduce_op="mean")

    def training_step(self, batch: Mapping[str, torch.Tensor], batch_idx: int) -> torch.Tensor:
        """One discriminator step and one generator step on ``batch`` (see the module docstring); returns L_G."""
        opt_g, opt_d = self.optimizers()
        hp = self.hparams
        gen, disc = self.net.generator, self.net.discriminator
        x = images_to_float(batch["image"])
        bs = x.shape[0]
        logits = gen(x)
        target = self._target(batch, logits)
        fakes = [torch.sigmoid(logits)]
        if int(hp.noise_samples) > 0:
            z = torch.randn(int(hp.noise_samples), self.net.latent_dim, device="cpu").to(x.device)
            fakes.append(torch.sigmoid(gen(z=z)))
        fake = torch.cat(fakes)

        real, fake = disc.pool(target), disc.pool(fake)  # the discriminator's working resolution

        self.toggle_optimizer(opt_d)
        loss_real = autoencoder_loss(disc(real), real)
        fake_d = fake.detach()
        loss_d = self.equilibrium.discriminator_loss(loss_real, autoencoder_loss(disc(fake_d), fake_d))
        opt_d.zero_grad()
        self.manual_backward(loss_d)
        opt_d.step()
        self.untoggle_optimizer(opt_d)

        self.toggle_optimizer(opt_g)
        loss_fake = autoencoder_loss(disc(fake), fake)
        rec = volumetric_bce_loss(logits, target, reduction=hp.loss_reduction)
        loss_g = float(hp.adversarial_weight) * loss_fake + float(hp.reconstruction_weight) * rec
        opt_g.zero_grad()
        self.manual_backward(loss_g)
        opt_g.step()
        self.untoggle_optimizer(opt_g)

        convergence = self.equilibrium.update(self._synced_mean(loss_real), self._synced_mean(loss_fake))
        log_kw = {"on_step": True, "on_epoch": True, "batch_size": bs}
        self.log("train/g_loss", loss_g.detach(), prog_bar=True, sync_dist=True, **log_kw)
        self.log("train/d_loss", loss_d.detach(), sync_dist=True, **log_kw)
        self.log("train/loss_real", loss_real.detach(), sync_dist=True, **log_kw)
        self.log("train/loss_fake", loss_fake.detach(), sync_dist=True, **log_kw)
        self.log("train/reconstruction_loss", rec.detach(), sync_dist=True, **log_kw)
        self.log("train/k", self.equilibrium.k.clone(), prog_bar=True, **log_kw)  # equal on every rank
        self.log("train/M", convergence, **log_kw)  # from rank-averaged losses
        return loss_g.detach()

    def configure_optimizers(self) -> Any:
        """Two optimisers, generator first: built from ``optimizer`` and ``discriminator_optimizer`` (None: BEGAN's
        Adam)."""
        spec_g = self.hparams.optimizer
        spec_d = self.hparams.discriminator_optimizer or dict(DEFAULT_GAN_OPTIMIZER)
        return [build_optimizer(self.net.generator.parameters(), spec_g),
                build_optimizer(self.net.discriminator.parameters(), spec_d)]

    # ------------------------------------------------------------------ meshes of unconditional samples
    def on_validation_epoch_end(self) -> None:
        """The VRN task's metrics and meshes, then the meshes of ``num_noise_meshes`` shapes decoded from noise."""
        super().on_validation_epoch_end()
        n = int(self.hparams.num_noise_meshes)
        if n > 0 and self.trainer.is_global_zero and not self.trainer.sanity_checking:
            self.mesh_paths = [*self.mesh_paths, *self._save_noise_meshes(n, f"epoch_{self.current_epoch:03d}")]

    def _save_noise_meshes(self, num: int, folder: str) -> list[Path]:
        from faceforge.geometry.volume_mesh import VolumeMeshError, export_mesh

        probs = self.sample(num, seed=int(self.hparams.noise_seed)).float().cpu().numpy()
        root = Path(self.trainer.default_root_dir) / "meshes" / folder
        paths: list[Path] = []
        for i in range(num):
            try:
                paths.append(export_mesh(self._display_mesh(np.asarray(probs[i]), None),
                                         root / f"noise_{i:02d}.{self.hparams.mesh_format}"))
            except VolumeMeshError as exc:  # e.g. an empty sample early in training
                log.warning("no mesh for noise sample %d (%s): %s", i, folder, exc)
        return paths
