"""ResNeXt-LSTM video-level deepfake detector (CNN frame features -> LSTM over frames -> one "fake" logit per clip).

The model of the public project "Deepfake detection using deep learning (ResNeXt and LSTM)" (Abhijit Jadhav et
al., GitHub ``abhijitjadhav1998/Deepfake_detection_using_deep_learning``, paper IJSRDV8I10860): a ResNeXt-50 32x4d
(Xie et al., CVPR 2017) turns every face crop of a clip into a 2048-d feature (global average pooling of its last
stage), an LSTM runs over the frames, and a linear layer classifies the sequence. Written from that description and
from reading its code; no code of it is used here.

Defaults of the reference project (what ``conf/model`` should set): 112x112 face crops, Adam with lr 1e-5 and weight
decay 1e-5, batch 4, sequence length 10 for training, and models released for 10, 20, 40, 60, 80 and 100 frames
(:data:`REFERENCE_SEQUENCE_LENGTHS`); the whole backbone is fine-tuned from ImageNet weights.

Conventions of this module (and the differences from the reference code, all by design):

* **Input** ``(B, T, 3, H, W)`` float RGB in [0, 1]. The ImageNet mean/std normalisation the backbone expects is done
  inside the model, with constant non-persistent buffers (so they follow ``.to(device)`` but stay out of the
  state_dict); the reference does it in its torchvision transform.
* **Output** one logit for "fake" per clip, ``(B,)`` float32 (train with BCE-with-logits). The reference has a
  2-class head ``Linear(2048, 2)`` trained with cross-entropy, class 0 = FAKE and class 1 = REAL (its app prints
  "REAL" for prediction 1). A 2-class head converts exactly: ``logit_fake = z_0 - z_1``.
* **The LSTM runs over the frames.** ``nn.LSTM(..., batch_first=True, bias=True)``. The reference builds
  ``nn.LSTM(latent_dim, hidden_dim, lstm_layers, bidirectional)``: the 4th positional argument of ``nn.LSTM`` is
  ``bias``, so it gets an LSTM *without biases* that is never bidirectional, and with the default
  ``batch_first=False`` it reads its ``(B, T, 2048)`` tensor as ``(seq_len=B, batch=T)``: the recurrence runs across
  the clips of the mini-batch, each frame index being an independent sequence. Its ``x_lstm[:, -1, :]`` then gives,
  for clip ``b``, the state after the last frames of clips ``0 .. b``: a clip's prediction never sees its own
  frames other than the last one, depends on the other clips of the batch and on their order, and at batch size 1
  (its inference app) is one LSTM step on the last frame. Here each clip is its own sequence; a test checks that
  permuting the clips of a batch permutes the outputs.
* **Dropout** ``p = dropout`` (0.4) on the pooled sequence feature, before the classifier. ``nn.LSTM``'s own
  ``dropout`` acts only *between* stacked layers, so it is a no-op with one layer (and torch warns): it is passed to
  the LSTM only when ``num_layers > 1``. The reference applies its ``Dropout(0.4)`` to the *logits*, after the
  linear layer, and defines a LeakyReLU it never uses.
* **Temporal pooling** ``"mean"`` (default: mean of the LSTM outputs over the valid frames) or ``"last"`` (the final
  hidden state of the top layer; both directions' final states when bidirectional). The reference uses the last
  step.
* **Variable-length clips**: ``forward(clips, lengths)`` with ``lengths`` ``(B,)`` int64 = valid frames per clip;
  frames ``t >= lengths[b]`` are padding and are ignored everywhere: they are not passed through the backbone (so
  their values, even NaN, cannot leak in, and they do not enter BatchNorm's batch statistics in training), the LSTM
  reads a ``pack_padded_sequence`` (so ``"last"`` is the state at each clip's own last frame, and the backward
  direction of a bidirectional LSTM starts there), and ``"mean"`` averages over valid steps only. The reference
  has fixed-length clips.
* **Weights are never downloaded.** The backbone is built with ``weights=None``; ImageNet weights are used only when
  ``pretrained_weights`` names a local torchvision state_dict (see :func:`find_cached_imagenet_weights` for the
  files torchvision may already have cached). The reference calls ``resnext50_32x4d(pretrained=True)``.
* **Options** the reference lacks: ``freeze_backbone`` (backbone parameters not trained, its BatchNorm kept in eval
  mode so its running statistics stay those of the weights), ``train_last_stage`` (with freezing, fine-tune only
  ``layer4``), small backbones (``"resnet18"``, ``"tiny"``) for tests and CPU runs.

Parameter counts (default configuration): backbone 22,979,904 (torchvision's ResNeXt-50 32x4d without its fc), LSTM
33,570,816 (the reference's bias-free LSTM: 33,554,432), classifier 2,049 (reference: 4,098); 56,552,769 in all.
"""
from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from urllib.parse import urlparse

import torch
import torchvision
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from faceforge.errors import FaceforgeError

__all__ = [
    "BACKBONES",
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "REFERENCE_INPUT_SIZE",
    "REFERENCE_SEQUENCE_LENGTHS",
    "PretrainedWeightsError",
    "ResNeXtLSTM",
    "TinyBackbone",
    "build_backbone",
    "find_cached_imagenet_weights",
    "load_backbone_weights",
]

IMAGENET_MEAN = (0.485, 0.456, 0.406)
"""Per-channel RGB mean of ImageNet, on [0, 1] pixels (torchvision's normalisation)."""
IMAGENET_STD = (0.229, 0.224, 0.225)
"""Per-channel RGB standard deviation of ImageNet, on [0, 1] pixels."""
REFERENCE_INPUT_SIZE = 112
"""Side of the square face crops of the reference project."""
REFERENCE_SEQUENCE_LENGTHS = (10, 20, 40, 60, 80, 100)
"""Clip lengths (frames) the reference project trained models for."""

_TORCHVISION_BACKBONES = {
    # name: (builder, weights enum class name, used only to know the cached file names; never passed to a builder)
    "resnext50_32x4d": (torchvision.models.resnext50_32x4d, "ResNeXt50_32X4D_Weights"),
    "resnet18": (torchvision.models.resnet18, "ResNet18_Weights"),
}
BACKBONES = (*_TORCHVISION_BACKBONES, "tiny")
"""Backbone names: ``"resnext50_32x4d"`` (2048-d, the reference), ``"resnet18"`` (512-d), ``"tiny"`` (64-d)."""
_POOLINGS = ("mean", "last")


class PretrainedWeightsError(FaceforgeError, ValueError):
    """A backbone weight file is missing, not loadable with ``torch.load(weights_only=True)``, not a state_dict, or
    does not fit the backbone (missing/unexpected keys, wrong shapes). The message always names the file."""


class TinyBackbone(nn.Module):
    """A few convolutions, for tests and quick CPU runs: four stages conv 3x3 stride 2 -> BatchNorm -> ReLU
    (3 -> 8 -> 16 -> 32 -> 64 channels), named ``layer1`` .. ``layer4`` like a ResNet's so that
    ``train_last_stage`` means the same thing, then global average pooling.

    Input ``(N, 3, H, W)`` float32 (normalised), output ``(N, 64)`` float32.
    """

    out_features = 64

    def __init__(self) -> None:
        super().__init__()
        widths = (3, 8, 16, 32, self.out_features)
        for i in range(4):
            self.add_module(f"layer{i + 1}", nn.Sequential(
                nn.Conv2d(widths[i], widths[i + 1], 3, stride=2, padding=1, bias=False),
                nn.BatchNorm2d(widths[i + 1]),
                nn.ReLU(inplace=True),
            ))
        self.avgpool = nn.AdaptiveAvgPool2d(1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(N, 3, H, W) float32 -> (N, 64) float32."""
        for i in range(4):
            x = getattr(self, f"layer{i + 1}")(x)
        return torch.flatten(self.avgpool(x), 1)


def build_backbone(name: str) -> tuple[nn.Module, int]:
    """Build a frame feature extractor with random weights (never downloads anything).

    torchvision ResNets are built with ``weights=None`` and their ``fc`` replaced by ``nn.Identity``, so the module
    ends with global average pooling and its state_dict keys are torchvision's, minus ``fc.*``.

    Args:
        name: one of :data:`BACKBONES`.

    Returns:
        ``(module, feature_dim)``: the module maps (N, 3, H, W) float32 normalised images to (N, feature_dim)
        float32 (2048 for resnext50_32x4d, 512 for resnet18, 64 for tiny).

    Raises:
        ValueError: unknown name.
    """
    if name == "tiny":
        return TinyBackbone(), TinyBackbone.out_features
    if name not in _TORCHVISION_BACKBONES:
        raise ValueError(f"unknown backbone {name!r}; expected one of {BACKBONES}")
    net = _TORCHVISION_BACKBONES[name][0](weights=None)
    feature_dim = net.fc.in_features
    net.fc = nn.Identity()
    return net, feature_dim


def find_cached_imagenet_weights(backbone: str, hub_dir: str | os.PathLike | None = None) -> Path | None:
    """Path of torchvision's ImageNet weight file for ``backbone`` if it is already in the torch hub cache.

    Looks for the file names of torchvision's ``IMAGENET1K_V1`` then ``IMAGENET1K_V2`` weights (V1 is what the
    reference's ``pretrained=True`` loads) under ``<hub_dir>/checkpoints/``. Only looks: never downloads.

    Args:
        backbone: a torchvision name of :data:`BACKBONES` (``"tiny"`` has no ImageNet weights).
        hub_dir: the torch hub directory; default ``torch.hub.get_dir()`` (``$TORCH_HOME/hub``).

    Returns:
        The first file found, or None.

    Raises:
        ValueError: unknown backbone or ``"tiny"``.
    """
    if backbone not in _TORCHVISION_BACKBONES:
        raise ValueError(f"no ImageNet weights for backbone {backbone!r}; expected one of "
                         f"{tuple(_TORCHVISION_BACKBONES)}")
    weights_enum = getattr(torchvision.models, _TORCHVISION_BACKBONES[backbone][1])
    folder = Path(hub_dir if hub_dir is not None else torch.hub.get_dir()) / "checkpoints"
    for name in ("IMAGENET1K_V1", "IMAGENET1K_V2"):
        member = getattr(weights_enum, name, None)
        if member is None:
            continue
        candidate = folder / Path(urlparse(member.url).path).name
        if candidate.is_file():
            return candidate
    return None


def _short(keys: list[str], n: int = 5) -> str:
    return ", ".join(keys[:n]) + (f", ... ({len(keys)} in all)" if len(keys) > n else "")


def load_backbone_weights(backbone: nn.Module, path: str | os.PathLike) -> None:
    """Load a torchvision-style state_dict file into a backbone from :func:`build_backbone`, strictly.

    The file is read with ``torch.load(path, map_location="cpu", weights_only=True)``. Keys ``fc.*`` (the ImageNet
    classifier) are ignored; every other backbone key must be present with the right shape, and no other key may
    be. Exception: BatchNorm ``num_batches_tracked`` counters absent from old files keep their current value.

    Args:
        backbone: the module to fill (in place).
        path: a local ``.pth`` file holding a state_dict (a mapping of names to tensors), e.g. torchvision's
            ``resnext50_32x4d-7cdf4587.pth``.

    Raises:
        PretrainedWeightsError: the file is missing, cannot be loaded with ``weights_only=True``, is not a
            state_dict, or its keys/shapes do not fit the backbone; the message names the file.
    """
    path = Path(path)
    if not path.is_file():
        raise PretrainedWeightsError(
            f"{path}: pretrained backbone weights not found (weights are never downloaded: point "
            "pretrained_weights at a local torchvision state_dict .pth file, see find_cached_imagenet_weights)")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # unpickling, zip and I/O errors all mean "not a loadable weight file"
        raise PretrainedWeightsError(f"{path}: cannot be loaded with torch.load(weights_only=True) as a state_dict: "
                                     f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}") from exc
    if not isinstance(obj, Mapping) or not all(isinstance(k, str) and isinstance(v, torch.Tensor)
                                               for k, v in obj.items()):
        raise PretrainedWeightsError(f"{path}: not a state_dict (a mapping of parameter names to tensors), got "
                                     f"{type(obj).__name__}")
    state = {k: v for k, v in obj.items() if not k.startswith("fc.")}
    expected = backbone.state_dict()
    missing = sorted(k for k in set(expected) - set(state) if not k.endswith("num_batches_tracked"))
    unexpected = sorted(set(state) - set(expected))
    if missing or unexpected:
        parts = ([f"missing keys: {_short(missing)}"] if missing else []) + (
            [f"unexpected keys: {_short(unexpected)}"] if unexpected else [])
        raise PretrainedWeightsError(f"{path}: does not fit the {type(backbone).__name__} backbone "
                                     f"({'; '.join(parts)})")
    wrong = [f"{k}: file {tuple(state[k].shape)}, model {tuple(expected[k].shape)}"
             for k in sorted(state) if tuple(state[k].shape) != tuple(expected[k].shape)]
    if wrong:
        raise PretrainedWeightsError(f"{path}: shape mismatch: {_short(wrong, 3)}")
    for k in set(expected) - set(state):  # only num_batches_tracked can be left
        state[k] = expected[k]
    backbone.load_state_dict(state, strict=True)


class ResNeXtLSTM(nn.Module):
    """CNN frame features -> LSTM over frames -> temporal pooling -> dropout -> Linear(., 1): a "fake" logit per clip.

    See the module docstring for the reference project and every difference from its code.

    Args:
        backbone: one of :data:`BACKBONES`; ``"resnext50_32x4d"`` (2048-d features) is the reference's.
        pretrained_weights: a local torchvision state_dict file loaded into the backbone (``fc.*`` ignored), or
            None for random initialisation. Never downloaded.
        hidden_size: LSTM hidden size (reference: 2048).
        num_layers: stacked LSTM layers (reference: 1).
        dropout: probability of the dropout on the pooled feature before the classifier (reference: 0.4, on the
            logits); also the LSTM's inter-layer dropout when ``num_layers > 1``.
        bidirectional: bidirectional LSTM (the classifier then reads ``2 * hidden_size`` features).
        freeze_backbone: backbone parameters get ``requires_grad=False`` and the backbone stays in eval mode (its
            BatchNorm uses and keeps its running statistics) even when the model is put in training mode.
        train_last_stage: with ``freeze_backbone``, leave the last stage (``layer4``) trainable and in training
            mode.
        temporal_pooling: ``"mean"`` over the LSTM outputs of the valid frames, or ``"last"`` hidden state.

    Raises:
        ValueError: unknown backbone or pooling, a non-positive size, dropout outside [0, 1), or
            ``train_last_stage`` without ``freeze_backbone``.
        PretrainedWeightsError: ``pretrained_weights`` missing or not fitting (see :func:`load_backbone_weights`).
    """

    def __init__(self, backbone: str = "resnext50_32x4d", pretrained_weights: str | os.PathLike | None = None,
                 hidden_size: int = 2048, num_layers: int = 1, dropout: float = 0.4, bidirectional: bool = False,
                 freeze_backbone: bool = False, train_last_stage: bool = False,
                 temporal_pooling: str = "mean") -> None:
        super().__init__()
        if temporal_pooling not in _POOLINGS:
            raise ValueError(f"temporal_pooling must be one of {_POOLINGS}, got {temporal_pooling!r}")
        if hidden_size < 1 or num_layers < 1:
            raise ValueError(f"hidden_size and num_layers must be >= 1, got {hidden_size} and {num_layers}")
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {dropout}")
        if train_last_stage and not freeze_backbone:
            raise ValueError("train_last_stage=True needs freeze_backbone=True (without freezing the whole backbone "
                             "trains already)")
        self.backbone_name = backbone
        self.temporal_pooling = temporal_pooling
        self.freeze_backbone = freeze_backbone
        self.train_last_stage = train_last_stage
        self.register_buffer("pixel_mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("pixel_std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1), persistent=False)
        self.backbone, self.feature_dim = build_backbone(backbone)
        if pretrained_weights is not None:
            load_backbone_weights(self.backbone, pretrained_weights)
        self.lstm = nn.LSTM(self.feature_dim, hidden_size, num_layers, bias=True, batch_first=True,
                            dropout=dropout if num_layers > 1 else 0.0, bidirectional=bidirectional)
        self.num_directions = 2 if bidirectional else 1
        self.dropout = nn.Dropout(dropout)
        self.classifier = nn.Linear(hidden_size * self.num_directions, 1)
        for module in self._frozen_modules():
            for p in module.parameters():
                p.requires_grad_(False)
        self.train()

    def _frozen_modules(self) -> list[nn.Module]:
        """The backbone parts that are frozen: none, the whole backbone, or all its children but ``layer4``."""
        if not self.freeze_backbone:
            return []
        if self.train_last_stage:
            return [m for name, m in self.backbone.named_children() if name != "layer4"]
        return [self.backbone]

    def train(self, mode: bool = True) -> ResNeXtLSTM:
        """Set training mode, keeping the frozen backbone parts (their BatchNorm) in eval mode.

        Args:
            mode: True for training, False for evaluation.

        Returns:
            self.
        """
        super().train(mode)
        if mode:
            for module in self._frozen_modules():
                module.eval()
        return self

    # ----------------------------------------------------------------------------------------------------------
    # Input checks
    # ----------------------------------------------------------------------------------------------------------

    def _check_clips(self, clips: torch.Tensor) -> None:
        if not isinstance(clips, torch.Tensor):
            raise TypeError(f"{type(self).__name__} expects a tensor of clips, got {type(clips).__name__}")
        if clips.ndim != 5 or clips.shape[2] != 3 or min(clips.shape) < 1:
            raise ValueError(f"{type(self).__name__} expects clips of shape (B, T, 3, H, W), got "
                             f"{tuple(clips.shape)}")
        if not clips.is_floating_point():
            raise TypeError(f"{type(self).__name__} expects float clips in [0, 1], got dtype {clips.dtype}")

    def _check_lengths(self, lengths: torch.Tensor | None, batch: int, frames: int) -> torch.Tensor | None:
        """Validate lengths; None when absent or when every clip is full (nothing to mask)."""
        if lengths is None:
            return None
        if not isinstance(lengths, torch.Tensor) or lengths.shape != (batch,) or lengths.is_floating_point() \
                or lengths.is_complex() or lengths.dtype == torch.bool:
            raise ValueError(f"lengths must be an integer tensor of shape ({batch},), got "
                             f"{type(lengths).__name__} {tuple(getattr(lengths, 'shape', ()))} "
                             f"{getattr(lengths, 'dtype', '')}")
        lengths = lengths.to(torch.int64)
        lo, hi = int(lengths.min()), int(lengths.max())
        if lo < 1 or hi > frames:
            raise ValueError(f"lengths must be in [1, T={frames}], got min {lo} and max {hi}")
        return None if lo == frames else lengths

    # ----------------------------------------------------------------------------------------------------------
    # Forward
    # ----------------------------------------------------------------------------------------------------------

    def _embed(self, frames: torch.Tensor) -> torch.Tensor:
        """(N, 3, H, W) float in [0, 1] -> (N, F) backbone features (ImageNet-normalised inside)."""
        x = (frames.to(self.pixel_mean.dtype) - self.pixel_mean) / self.pixel_std
        return self.backbone(x)

    def _frame_features(self, clips: torch.Tensor, lengths: torch.Tensor | None) -> torch.Tensor:
        b, t = clips.shape[:2]
        frames = clips.reshape(b * t, *clips.shape[2:])
        if lengths is None:
            feats = self._embed(frames)
            return feats.reshape(b, t, feats.shape[-1])
        valid = (torch.arange(t, device=lengths.device)[None, :] < lengths[:, None]).reshape(-1)
        index = valid.nonzero().squeeze(1).to(clips.device)
        feats = self._embed(frames.index_select(0, index))
        out = feats.new_zeros(b * t, feats.shape[-1]).index_copy(0, index, feats)
        return out.reshape(b, t, feats.shape[-1])

    def frame_features(self, clips: torch.Tensor, lengths: torch.Tensor | None = None) -> torch.Tensor:
        """Per-frame backbone features.

        Args:
            clips: (B, T, 3, H, W) float RGB in [0, 1] (ImageNet normalisation is applied inside).
            lengths: optional (B,) integer number of valid frames per clip; padding frames are not computed.

        Returns:
            (B, T, F) features (float32, or the autocast dtype), F = :attr:`feature_dim`; zero at padding frames.

        Raises:
            TypeError: clips not a float tensor.
            ValueError: wrong clip shape, or lengths of the wrong shape/dtype or outside [1, T].
        """
        self._check_clips(clips)
        return self._frame_features(clips, self._check_lengths(lengths, clips.shape[0], clips.shape[1]))

    def _final_hidden(self, h_n: torch.Tensor) -> torch.Tensor:
        """(layers * dirs, B, H) -> (B, dirs * H): the top layer's final state(s), forward direction first."""
        top = h_n[-self.num_directions:]
        return top.transpose(0, 1).reshape(h_n.shape[1], -1)

    def sequence_features(self, clips: torch.Tensor, lengths: torch.Tensor | None = None) -> torch.Tensor:
        """The pooled clip feature the classifier reads (before dropout).

        Args:
            clips: (B, T, 3, H, W) float RGB in [0, 1].
            lengths: optional (B,) integer valid frames per clip (see the module docstring).

        Returns:
            (B, num_directions * hidden_size) features (float32, or the autocast dtype).

        Raises:
            TypeError, ValueError: as :meth:`frame_features`.
        """
        self._check_clips(clips)
        b, t = clips.shape[:2]
        lengths = self._check_lengths(lengths, b, t)
        feats = self._frame_features(clips, lengths)
        if lengths is None:
            out, (h_n, _) = self.lstm(feats)
            return out.mean(dim=1) if self.temporal_pooling == "mean" else self._final_hidden(h_n)
        packed = pack_padded_sequence(feats, lengths.cpu(), batch_first=True, enforce_sorted=False)
        out_packed, (h_n, _) = self.lstm(packed)
        if self.temporal_pooling == "last":
            return self._final_hidden(h_n)  # h_n is at each clip's own last valid frame, in the input order
        out, _ = pad_packed_sequence(out_packed, batch_first=True, total_length=t)  # zeros past each length
        return out.sum(dim=1) / lengths.to(device=out.device, dtype=out.dtype)[:, None]

    def forward(self, clips: torch.Tensor, lengths: torch.Tensor | None = None) -> torch.Tensor:
        """Fake logits of clips.

        Args:
            clips: (B, T, 3, H, W) float RGB in [0, 1] (any H, W the backbone accepts; reference 112x112).
            lengths: optional (B,) integer number of valid frames per clip; frames ``t >= lengths[b]`` are
                padding and do not affect the output (see the module docstring).

        Returns:
            (B,) float32 logits for "fake" (``sigmoid`` gives P(fake)).

        Raises:
            TypeError: clips not a float tensor.
            ValueError: wrong clip shape, or lengths of the wrong shape/dtype or outside [1, T].
        """
        pooled = self.sequence_features(clips, lengths)
        return self.classifier(self.dropout(pooled)).squeeze(-1).float()
