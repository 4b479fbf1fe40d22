"""The channels-last memory format for GPU training (``trainer=gpu``, ``trainer=ddp``).

:class:`ChannelsLast` stores the 2-D convolution weights of the task's network in ``torch.channels_last`` (NHWC
strides; same shape, same values) once, when the run is set up, and gives every 4-D image batch
(``batch["image"]``, (B, 3, H, W)) the same strides before the task sees it. Where it helps: NVIDIA tensor cores
run bf16 / fp16 convolutions natively in NHWC, so with ``precision: bf16-mixed`` (conf/trainer/gpu.yaml, ddp.yaml)
cuDNN no longer transposes every activation to and from NCHW around each convolution. The PyTorch tutorial
"(beta) Channels Last Memory Format in PyTorch" (V. Fedyunin,
https://pytorch.org/tutorials/intermediate/memory_format_tutorial.html, section "Performance Gains") reports about
22 % faster ResNet-50 AMP training on a tensor-core GPU (V100) and 8-35 % over a set of torchvision models; not
measured here (no GPU run of this callback yet). The networks here that can gain are the 2-D conv nets: Meso-4 /
MesoInception-4, the VRN hourglasses, the ResNeXt backbone of ResNeXt-LSTM.

What it does not change: shapes, values and the mathematics. Memory format is a layout of the same tensor
(``x.shape`` is still (B, C, H, W); indexing, ``torch.flatten``, ``state_dict`` and checkpoints see the logical NCHW
order); only the summation order inside the kernels differs. In float64 a few training steps of Meso-4 and of a
small VRN give the same losses and weights to 1e-9 either way (``tests/test_channels_last.py``). In float32 on the
CPU, however, it is NOT a no-op to float tolerance once a network with batch norm trains: PyTorch's CPU batch norm
sums the batch statistics of a channels-last input less accurately (measured here on one BatchNorm2d over
(4, 8, 256, 256) activations against a float64 reference: 4e-3 absolute error, against 5e-7 in NCHW;
pytorch/pytorch#121651 reports such differences), and
max-pooling then routes some gradients to another pixel of a window, so the runs drift apart within a few steps
(Meso-4, Adam lr 1e-3, batches of 4: losses 1-3 % apart after 3 steps; the first forward pass, before any
update, agrees to 3e-5). That, and no speed to gain there, is why ``trainer=cpu`` does not enable it and the CPU
runs keep their bit-identity guarantees. How close a GPU run stays to its NCHW twin has not been measured (no GPU
here).

Clips: ResNeXt-LSTM takes 5-D clips (B, T, 3, H, W) and reshapes them to frames (B*T, 3, H, W) inside the network;
``channels_last`` is defined for 4-D tensors only, so clip batches are left as they are and only the network's
weights are converted. A convolution whose weight is channels-last returns a channels-last output whatever its
input's layout, so from the backbone's first convolution on the activations are NHWC anyway; the one transposition
left is that of the input frames.

Wiring: conf/callbacks/channels_last.yaml, put under ``callbacks.channels_last`` by the defaults lists of
conf/trainer/gpu.yaml and ddp.yaml (so it comes with those trainers, whatever ``callbacks=`` names); remove it from
a run with ``~callbacks.channels_last``.
"""
from __future__ import annotations

import logging
from collections.abc import MutableMapping
from typing import Any

import pytorch_lightning as pl
import torch
from pytorch_lightning.callbacks import Callback
from torch import nn

__all__ = ["ChannelsLast", "channels_last_weights", "to_channels_last"]

log = logging.getLogger(__name__)


def to_channels_last(module: nn.Module) -> int:
    """Store every 4-D convolution weight of ``module`` (``nn.Conv2d``, ``nn.ConvTranspose2d``) channels-last, in
    place.

    The parameters stay the same ``nn.Parameter`` objects (an optimiser built before or after still holds them);
    only their strides change, values and shapes do not. 3-D / 1-D convolutions, linear layers, norms and buffers
    are left as they are.

    Args:
        module: any network.

    Returns:
        The number of weights converted (0 for a network without 2-D convolutions).
    """
    converted = 0
    with torch.no_grad():
        for sub in module.modules():
            if not isinstance(sub, (nn.Conv2d, nn.ConvTranspose2d)):
                continue
            weight = sub.weight
            if not isinstance(weight, torch.Tensor) or weight.dim() != 4:
                continue
            # .to, not .contiguous: for 1x1 kernels only .to sets unambiguous NHWC strides (see the tutorial)
            weight.data = weight.data.to(memory_format=torch.channels_last)
            converted += 1
    return converted


def channels_last_weights(module: nn.Module) -> list[str]:
    """Names of the 4-D convolution weights of ``module`` that are NOT channels-last (empty: all are).

    Args:
        module: any network.

    Returns:
        Parameter names such as ``"net.conv1.weight"``, in module order.
    """
    names = []
    for prefix, sub in module.named_modules():
        if isinstance(sub, (nn.Conv2d, nn.ConvTranspose2d)) and sub.weight.dim() == 4 \
                and not sub.weight.is_contiguous(memory_format=torch.channels_last):
            names.append(f"{prefix}.weight" if prefix else "weight")
    return names


class ChannelsLast(Callback):
    """Channels-last convolution weights and image batches (see the module docstring for where it helps).

    At ``setup`` (every stage: fit, validate, test, predict; before the optimiser is built and before a checkpoint
    is restored, whose values ``load_state_dict`` copies into the channels-last weights) the task's 2-D convolution
    weights are converted with :func:`to_channels_last`. Before every training / validation / test / predict batch,
    ``batch[key]`` is made channels-last when it is a 4-D tensor (uint8 or float (B, 3, H, W) images); 5-D clips
    and other keys (e.g. VRN's (B, D, H, W) target volumes, which are no convolution input) are left alone. The
    batch mapping is updated in place (the task's step receives the same object); a batch that is not a mutable
    mapping is left as it is (logged once).

    Args:
        key: the batch entry holding the images (``"image"``, as in every faceforge data module).
        convert_batches: False to convert only the weights.
    """

    def __init__(self, key: str = "image", convert_batches: bool = True) -> None:
        self.key = str(key)
        self.convert_batches = bool(convert_batches)
        self.converted_weights = 0
        self._warned = False

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        """Convert the task's 2-D convolution weights (logged once per stage)."""
        self.converted_weights = to_channels_last(pl_module)
        log.info("channels_last: %d convolution weights stored channels-last (%s)", self.converted_weights, stage)

    def _convert(self, batch: Any) -> None:
        if not self.convert_batches:
            return
        if not isinstance(batch, MutableMapping):
            if not self._warned:
                log.info("channels_last: batches of type %s are left as they are (weights only)",
                         type(batch).__name__)
                self._warned = True
            return
        images = batch.get(self.key)
        if isinstance(images, torch.Tensor) and images.dim() == 4:
            batch[self.key] = images.to(memory_format=torch.channels_last)

    def on_train_batch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule, batch: Any,
                             batch_idx: int) -> None:
        """Make the training batch's images channels-last (in place)."""
        self._convert(batch)

    def on_validation_batch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule, batch: Any,
                                  batch_idx: int, dataloader_idx: int = 0) -> None:
        """Make the validation batch's images channels-last (in place)."""
        self._convert(batch)

    def on_test_batch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule, batch: Any,
                            batch_idx: int, dataloader_idx: int = 0) -> None:
        """Make the test batch's images channels-last (in place)."""
        self._convert(batch)

    def on_predict_batch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule, batch: Any,
                               batch_idx: int, dataloader_idx: int = 0) -> None:
        """Make the predict batch's images channels-last (in place)."""
        self._convert(batch)
