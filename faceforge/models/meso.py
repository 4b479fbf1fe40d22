"""MesoNet: Meso-4 and MesoInception-4 (Afchar, Nozick, Yamagishi, Echizen, WIFS 2018).

"MesoNet: a Compact Facial Video Forgery Detection Network", arXiv:1809.00888, Section 3 and Fig. 3/4.
The layers follow the authors' released Keras models exactly (same layer order, 'same' padding, Keras BatchNorm
epsilon 1e-3 and momentum 0.99, dropout 0.5, Dense(16) + LeakyReLU(0.1) head), so that the authors' released weight
files load with :func:`from_keras_h5` and give the authors' outputs.

Conventions of this project (differences from the Keras original, by design):

* input is NCHW float32 in [0, 1], shape ``(B, 3, 256, 256)`` (Keras: NHWC);
* the output is a **logit for "fake"** of shape ``(B,)`` with no sigmoid (Keras: sigmoid P(real) of shape
  ``(B, 1)``, because ``flow_from_directory`` gives class 'df' index 0 and 'real' index 1). Loading Keras weights
  therefore negates the last Dense layer: ``logit_fake = -logit_real``, so ``sigmoid(logit_fake) = 1 - P(real)``.

Trainable parameters: Meso-4 27,977; MesoInception-4 28,615 (the paper's counts).
"""
from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn

from faceforge.errors import FaceforgeError

__all__ = [
    "MESONET_INPUT_SIZE",
    "KerasWeightsError",
    "Meso4",
    "MesoInception4",
    "ModelInputError",
    "from_keras_h5",
    "mesonet_preprocess",
]

MESONET_INPUT_SIZE = 256
"""Side of the square RGB input the MesoNet models expect (paper Section 3; the flattened features are 8x8x16)."""

_KERAS_BN_EPS = 1e-3
_TORCH_BN_MOMENTUM = 0.01  # Keras momentum 0.99 is the weight of the old running value; torch uses 1 - that.
_HEAD_ACTIVATIONS = ("leaky_relu", "relu", None)


class KerasWeightsError(FaceforgeError, ValueError):
    """A Keras HDF5 weight file is missing, not HDF5, of an unknown layout, or has arrays of the wrong shape.

    The message always names the file.
    """


def _check_head_activation(head_activation: str | None) -> None:
    if head_activation not in _HEAD_ACTIVATIONS:
        raise ValueError(f"head_activation must be one of {_HEAD_ACTIVATIONS}, got {head_activation!r}")


def _same_conv(in_ch: int, out_ch: int, kernel: int, dilation: int = 1) -> nn.Conv2d:
    """Stride-1 conv with Keras 'same' padding (symmetric for odd kernels: ``dilation * (kernel - 1) / 2``)."""
    return nn.Conv2d(in_ch, out_ch, kernel, padding=dilation * (kernel - 1) // 2, dilation=dilation, bias=True)


def _keras_bn(ch: int, momentum: float | None = _TORCH_BN_MOMENTUM) -> nn.BatchNorm2d:
    """BatchNorm with the Keras defaults (epsilon 1e-3, momentum 0.99 -> torch momentum 0.01)."""
    return nn.BatchNorm2d(ch, eps=_KERAS_BN_EPS, momentum=momentum)


class _MesoHead(nn.Module):
    """Flatten -> Dropout -> Dense(16) -> activation -> Dropout -> Dense(1).

    Args:
        in_features: flattened feature size (16 * 8 * 8 = 1024).
        head_activation: "leaky_relu" (the authors', slope ``negative_slope``), "relu" or None (identity).
        negative_slope: LeakyReLU slope (0.1 in the authors' code).
        dropout: dropout probability of both Dropout layers (0.5 in the authors' code).
    """

    def __init__(self, in_features: int, head_activation: str | None, negative_slope: float, dropout: float) -> None:
        super().__init__()
        _check_head_activation(head_activation)
        self.dropout1 = nn.Dropout(dropout)
        self.fc1 = nn.Linear(in_features, 16)
        if head_activation == "leaky_relu":
            self.act: nn.Module = nn.LeakyReLU(negative_slope)
        elif head_activation == "relu":
            self.act = nn.ReLU()
        else:
            self.act = nn.Identity()
        self.dropout2 = nn.Dropout(dropout)
        self.fc2 = nn.Linear(16, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C, H, W) float32 features -> (B,) float32 logits (flattened in torch's (c, h, w) order)."""
        x = torch.flatten(x, 1)
        x = self.fc2(self.dropout2(self.act(self.fc1(self.dropout1(x)))))
        return x.squeeze(-1)


class ModelInputError(FaceforgeError, ValueError):
    """A network got (or a run would feed it) input of a size it cannot take; the message says what to set."""


def _check_input(x: torch.Tensor, name: str) -> None:
    expected = (3, MESONET_INPUT_SIZE, MESONET_INPUT_SIZE)
    if x.ndim != 4 or tuple(x.shape[1:]) != expected:
        hint = (f"; MesoNet takes {MESONET_INPUT_SIZE}x{MESONET_INPUT_SIZE} crops: set data.image_size="
                f"{MESONET_INPUT_SIZE}" if x.ndim == 4 and x.shape[1] == 3 else "")
        raise ModelInputError(f"{name} expects input of shape (B, {', '.join(map(str, expected))}), got "
                              f"{tuple(x.shape)}{hint}")


class Meso4(nn.Module):
    """Meso-4 (Afchar et al. 2018, Section 3.1, Fig. 3).

    Four blocks conv -> ReLU -> BatchNorm -> max-pool: conv 3x3 (3->8), pool 2; conv 5x5 (8->8), pool 2;
    conv 5x5 (8->16), pool 2; conv 5x5 (16->16), pool 4; then Dropout(0.5), Dense(16), LeakyReLU(0.1),
    Dropout(0.5), Dense(1). 'same' padding everywhere; 27,977 trainable parameters.

    Args:
        head_activation: activation after Dense(16): "leaky_relu" (authors), "relu", or None (identity).
        negative_slope: slope of the LeakyReLU (authors: 0.1).
        dropout: probability of the two head Dropout layers (authors: 0.5).
        bn_momentum: torch BatchNorm momentum of the running statistics. The default 0.01 is Keras' 0.99; it
            takes hundreds of steps to forget the initial running variance of 1.0 (the first layer's true
            variance is orders of magnitude smaller), so short from-scratch runs evaluate badly with it: 0.1 or
            None (cumulative average) settle in a few epochs. Loading the authors' weights is unaffected.

    Raises:
        ValueError: unknown ``head_activation``.
    """

    #: side of the square input it takes (checked by train.py against ``data.image_size`` before training)
    input_size = MESONET_INPUT_SIZE

    def __init__(self, head_activation: str | None = "leaky_relu", negative_slope: float = 0.1,
                 dropout: float = 0.5, bn_momentum: float | None = _TORCH_BN_MOMENTUM) -> None:
        super().__init__()
        _check_head_activation(head_activation)
        self.head_activation = head_activation
        self.conv1, self.bn1 = _same_conv(3, 8, 3), _keras_bn(8, bn_momentum)
        self.conv2, self.bn2 = _same_conv(8, 8, 5), _keras_bn(8, bn_momentum)
        self.conv3, self.bn3 = _same_conv(8, 16, 5), _keras_bn(16, bn_momentum)
        self.conv4, self.bn4 = _same_conv(16, 16, 5), _keras_bn(16, bn_momentum)
        self.head = _MesoHead(16 * 8 * 8, head_activation, negative_slope, dropout)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """(B, 3, 256, 256) float32 in [0, 1] -> (B, 16, 8, 8) float32 features before the head."""
        x = F.max_pool2d(self.bn1(F.relu(self.conv1(x))), 2)
        x = F.max_pool2d(self.bn2(F.relu(self.conv2(x))), 2)
        x = F.max_pool2d(self.bn3(F.relu(self.conv3(x))), 2)
        return F.max_pool2d(self.bn4(F.relu(self.conv4(x))), 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Fake logits.

        Args:
            x: (B, 3, 256, 256) float32 RGB in [0, 1] (see :func:`mesonet_preprocess`).

        Returns:
            (B,) float32 logits for "fake" (``sigmoid`` gives P(fake)).

        Raises:
            ModelInputError: (a ValueError) wrong input shape.
        """
        _check_input(x, type(self).__name__)
        return self.head(self.features(x))


class InceptionLayer(nn.Module):
    """MesoInception block (Afchar et al. 2018, Section 3.2, Fig. 4), a variant of Inception (Szegedy et al.).

    Four parallel branches, each conv followed by ReLU, concatenated on channels in this order:
    1x1 (a); 1x1 (b) -> 3x3 (b); 1x1 (c) -> 3x3 dilation 2 (c); 1x1 (d) -> 3x3 dilation 3 (d).
    Output channels ``a + b + c + d``; spatial size unchanged ('same' padding).

    Args:
        in_ch: input channels.
        a, b, c, d: channels of the four branches.
    """

    def __init__(self, in_ch: int, a: int, b: int, c: int, d: int) -> None:
        super().__init__()
        self.b1_1x1 = _same_conv(in_ch, a, 1)
        self.b2_1x1 = _same_conv(in_ch, b, 1)
        self.b2_3x3 = _same_conv(b, b, 3)
        self.b3_1x1 = _same_conv(in_ch, c, 1)
        self.b3_3x3 = _same_conv(c, c, 3, dilation=2)
        self.b4_1x1 = _same_conv(in_ch, d, 1)
        self.b4_3x3 = _same_conv(d, d, 3, dilation=3)
        self.out_channels = a + b + c + d

    def keras_creation_order(self) -> list[nn.Conv2d]:
        """The convs in the order the authors' Keras code creates them (x1, x2 1x1, x2 3x3, x3 ..., x4 ...)."""
        return [self.b1_1x1, self.b2_1x1, self.b2_3x3, self.b3_1x1, self.b3_3x3, self.b4_1x1, self.b4_3x3]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, in_ch, H, W) float32 -> (B, a+b+c+d, H, W) float32."""
        x1 = F.relu(self.b1_1x1(x))
        x2 = F.relu(self.b2_3x3(F.relu(self.b2_1x1(x))))
        x3 = F.relu(self.b3_3x3(F.relu(self.b3_1x1(x))))
        x4 = F.relu(self.b4_3x3(F.relu(self.b4_1x1(x))))
        return torch.cat([x1, x2, x3, x4], dim=1)


class MesoInception4(nn.Module):
    """MesoInception-4 (Afchar et al. 2018, Section 3.2, Fig. 4).

    Inception(1,4,4,2) -> BN -> pool 2; Inception(2,4,4,2) -> BN -> pool 2; conv 5x5 (12->16) -> ReLU -> BN ->
    pool 2; conv 5x5 (16->16) -> ReLU -> BN -> pool 4; then the same head as :class:`Meso4`.
    28,615 trainable parameters.

    Args:
        head_activation: activation after Dense(16): "leaky_relu" (authors), "relu", or None (identity).
        negative_slope: slope of the LeakyReLU (authors: 0.1).
        dropout: probability of the two head Dropout layers (authors: 0.5).
        bn_momentum: torch BatchNorm momentum of the running statistics. The default 0.01 is Keras' 0.99; it
            takes hundreds of steps to forget the initial running variance of 1.0 (the first layer's true
            variance is orders of magnitude smaller), so short from-scratch runs evaluate badly with it: 0.1 or
            None (cumulative average) settle in a few epochs. Loading the authors' weights is unaffected.

    Raises:
        ValueError: unknown ``head_activation``.
    """

    #: side of the square input it takes (checked by train.py against ``data.image_size`` before training)
    input_size = MESONET_INPUT_SIZE

    def __init__(self, head_activation: str | None = "leaky_relu", negative_slope: float = 0.1,
                 dropout: float = 0.5, bn_momentum: float | None = _TORCH_BN_MOMENTUM) -> None:
        super().__init__()
        _check_head_activation(head_activation)
        self.head_activation = head_activation
        self.inc1 = InceptionLayer(3, 1, 4, 4, 2)
        self.bn1 = _keras_bn(self.inc1.out_channels, bn_momentum)
        self.inc2 = InceptionLayer(self.inc1.out_channels, 2, 4, 4, 2)
        self.bn2 = _keras_bn(self.inc2.out_channels, bn_momentum)
        self.conv3, self.bn3 = _same_conv(self.inc2.out_channels, 16, 5), _keras_bn(16, bn_momentum)
        self.conv4, self.bn4 = _same_conv(16, 16, 5), _keras_bn(16, bn_momentum)
        self.head = _MesoHead(16 * 8 * 8, head_activation, negative_slope, dropout)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """(B, 3, 256, 256) float32 in [0, 1] -> (B, 16, 8, 8) float32 features before the head."""
        x = F.max_pool2d(self.bn1(self.inc1(x)), 2)
        x = F.max_pool2d(self.bn2(self.inc2(x)), 2)
        x = F.max_pool2d(self.bn3(F.relu(self.conv3(x))), 2)
        return F.max_pool2d(self.bn4(F.relu(self.conv4(x))), 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Fake logits.

        Args:
            x: (B, 3, 256, 256) float32 RGB in [0, 1] (see :func:`mesonet_preprocess`).

        Returns:
            (B,) float32 logits for "fake".

        Raises:
            ModelInputError: (a ValueError) wrong input shape.
        """
        _check_input(x, type(self).__name__)
        return self.head(self.features(x))


# --------------------------------------------------------------------------------------------------------------
# Keras weight import
# --------------------------------------------------------------------------------------------------------------

_LAYER_RE = re.compile(r"^(conv2d|batch_normalization|dense|concatenate|leaky_re_lu)(?:_(\d+))?$")


def _decode(name: Any) -> str:
    return name.decode("utf-8") if isinstance(name, bytes) else str(name)


def _read_keras_layers(path: Path) -> dict[str, list[tuple[str, list[np.ndarray]]]]:
    """Read a Keras 2 ``save_weights`` HDF5 file into {kind: [(layer_name, [arrays in weight_names order])]}.

    Layers of each kind are sorted by their numeric suffix, i.e. the order in which Keras created them.
    """
    import h5py

    if not path.exists():
        raise KerasWeightsError(f"{path}: Keras weight file not found")
    if not path.is_file():
        raise KerasWeightsError(f"{path}: not a file")
    if not h5py.is_hdf5(path):
        raise KerasWeightsError(f"{path}: not an HDF5 file (expected a Keras 2 save_weights .h5)")
    layers: dict[str, list[tuple[int, str, list[np.ndarray]]]] = {}
    try:
        with h5py.File(path, "r") as f:
            root = f.get("model_weights", f)  # model.save() files nest the weights
            if "layer_names" not in root.attrs:
                raise KerasWeightsError(f"{path}: unknown layout: no 'layer_names' attribute (not a Keras 2 "
                                        "weight file)")
            for raw in root.attrs["layer_names"]:
                name = _decode(raw)
                m = _LAYER_RE.match(name)
                if m is None:
                    continue
                group = root[name]
                arrays = [np.asarray(group[_decode(w)], dtype=np.float32)
                          for w in group.attrs.get("weight_names", [])]
                layers.setdefault(m.group(1), []).append((int(m.group(2) or 0), name, arrays))
    except KerasWeightsError:
        raise
    except (OSError, KeyError) as exc:
        raise KerasWeightsError(f"{path}: cannot read Keras weights: {exc}") from exc
    return {kind: [(n, a) for _, n, a in sorted(v, key=lambda t: t[0])] for kind, v in layers.items()}


def _assign(path: Path, layer: str, what: str, param: torch.Tensor, value: np.ndarray) -> None:
    t = torch.from_numpy(np.ascontiguousarray(value))
    if tuple(t.shape) != tuple(param.shape):
        raise KerasWeightsError(f"{path}: shape mismatch in layer {layer!r} ({what}): file gives {tuple(t.shape)} "
                                f"after conversion, model expects {tuple(param.shape)}")
    with torch.no_grad():
        param.copy_(t)


def _expect_arrays(path: Path, layer: str, arrays: list[np.ndarray], n: int) -> None:
    if len(arrays) != n:
        raise KerasWeightsError(f"{path}: layer {layer!r} holds {len(arrays)} arrays, expected {n}")


def _load_conv(path: Path, layer: str, arrays: list[np.ndarray], conv: nn.Conv2d) -> None:
    _expect_arrays(path, layer, arrays, 2)
    kernel, bias = arrays
    if kernel.ndim != 4:
        raise KerasWeightsError(f"{path}: shape mismatch in layer {layer!r}: kernel {kernel.shape} is not 4-D")
    _assign(path, layer, "kernel (kh,kw,in,out)->(out,in,kh,kw)", conv.weight, kernel.transpose(3, 2, 0, 1))
    _assign(path, layer, "bias", conv.bias, bias)


def _load_bn(path: Path, layer: str, arrays: list[np.ndarray], bn: nn.BatchNorm2d) -> None:
    _expect_arrays(path, layer, arrays, 4)
    gamma, beta, mean, var = arrays  # Keras weight_names order: gamma, beta, moving_mean, moving_variance
    _assign(path, layer, "gamma", bn.weight, gamma)
    _assign(path, layer, "beta", bn.bias, beta)
    _assign(path, layer, "moving_mean", bn.running_mean, mean)
    _assign(path, layer, "moving_variance", bn.running_var, var)


def _load_head(path: Path, dense: list[tuple[str, list[np.ndarray]]], head: _MesoHead,
               feat_chw: tuple[int, int, int]) -> None:
    (name1, arr1), (name2, arr2) = dense
    _expect_arrays(path, name1, arr1, 2)
    _expect_arrays(path, name2, arr2, 2)
    k1, b1 = arr1
    c, h, w = feat_chw
    if k1.shape != (h * w * c, head.fc1.out_features):
        raise KerasWeightsError(f"{path}: shape mismatch in layer {name1!r}: kernel {k1.shape}, model expects "
                                f"{(h * w * c, head.fc1.out_features)}")
    # Keras flattens NHWC, so kernel rows run over (h, w, c); torch.flatten of NCHW runs over (c, h, w).
    k1 = k1.reshape(h, w, c, -1).transpose(2, 0, 1, 3).reshape(c * h * w, -1)
    _assign(path, name1, "kernel (in,out)->(out,in)", head.fc1.weight, k1.T)
    _assign(path, name1, "bias", head.fc1.bias, b1)
    # Keras outputs sigmoid(z) = P(real); our output is the fake logit -z, so negate the last layer.
    k2, b2 = arr2
    _assign(path, name2, "kernel (in,out)->(out,in), negated", head.fc2.weight, -k2.T)
    _assign(path, name2, "bias, negated", head.fc2.bias, -b2)


def from_keras_h5(path: str | os.PathLike, head_activation: str | None = "leaky_relu",
                  negative_slope: float = 0.1) -> Meso4 | MesoInception4:
    """Build a Meso-4 or MesoInception-4 from the authors' Keras 2 weight file (``model.save_weights`` HDF5).

    The kind is detected from the HDF5 layer names: 4 conv + 4 BN + 2 dense layers is Meso-4; 16 conv (two
    inception blocks of 7 plus 2) + 2 concatenate + 4 BN + 2 dense is MesoInception-4. Layers of a kind are matched
    in Keras creation order (their numeric suffix), so files saved from a session where other models were created
    first (``conv2d_5`` ... in ``Meso4_DF.h5``) load too. Conversions: conv kernels (kh, kw, in, out) ->
    (out, in, kh, kw); Dense kernels transposed; BN gamma/beta/moving_mean/moving_variance; the rows of the first
    Dense reordered from Keras' NHWC flatten order (h, w, c) to torch's (c, h, w).

    Output convention: the Keras models output ``sigmoid(z) = P(real)`` (class 'real' has index 1 in the authors'
    ``flow_from_directory``). The returned model outputs the fake logit ``-z``: the last Dense weight and bias are
    negated, so ``sigmoid(model(x)) = P(fake) = 1 - P_keras(real)`` exactly.

    Head activation: ``Meso4_DF.h5`` lists no ``leaky_re_lu`` layer (that layer has no weights, and the file was
    apparently saved from a graph without it), yet the authors' ``classifiers.py`` runs the head with
    LeakyReLU(0.1) when it loads this file, so the default "leaky_relu" is what the authors ran (and the project's
    design notes report that only it reproduces their printed outputs). With ``Meso4_DF.h5`` on the authors' four
    test crops all three options classify correctly (P(fake) of fakes/reals about 0.95/0.01 for leaky_relu,
    0.94/0.02 for relu, 0.99/0.00 for None), so these images alone do not single one out; pass "relu" or None to
    experiment.

    Args:
        path: the ``.h5`` file (e.g. ``Meso4_DF.h5``, ``MesoInception_DF.h5``).
        head_activation: "leaky_relu" (default, the authors' code), "relu", or None.
        negative_slope: LeakyReLU slope (authors: 0.1).

    Returns:
        The model in eval mode, on the CPU, float32.

    Raises:
        KerasWeightsError: (a ValueError) the file is missing, not HDF5, has an unknown layer layout, or an array
            has the wrong shape; the message names the file.
        ValueError: unknown ``head_activation``.
    """
    _check_head_activation(head_activation)
    path = Path(path)
    layers = _read_keras_layers(path)
    counts = {k: len(layers.get(k, [])) for k in ("conv2d", "batch_normalization", "dense", "concatenate")}
    if counts == {"conv2d": 4, "batch_normalization": 4, "dense": 2, "concatenate": 0}:
        model: Meso4 | MesoInception4 = Meso4(head_activation, negative_slope)
        convs = [model.conv1, model.conv2, model.conv3, model.conv4]
    elif counts == {"conv2d": 16, "batch_normalization": 4, "dense": 2, "concatenate": 2}:
        model = MesoInception4(head_activation, negative_slope)
        convs = [*model.inc1.keras_creation_order(), *model.inc2.keras_creation_order(), model.conv3, model.conv4]
    else:
        raise KerasWeightsError(f"{path}: unknown layer layout {counts}; expected Meso-4 (4 conv2d, 4 "
                                "batch_normalization, 2 dense) or MesoInception-4 (16 conv2d, 4 "
                                "batch_normalization, 2 dense, 2 concatenate)")
    for (name, arrays), conv in zip(layers["conv2d"], convs):
        _load_conv(path, name, arrays, conv)
    for (name, arrays), bn in zip(layers["batch_normalization"], [model.bn1, model.bn2, model.bn3, model.bn4]):
        _load_bn(path, name, arrays, bn)
    _load_head(path, layers["dense"], model.head, (16, 8, 8))
    return model.eval()


# --------------------------------------------------------------------------------------------------------------
# Preprocessing
# --------------------------------------------------------------------------------------------------------------

def mesonet_preprocess(image: Image.Image | np.ndarray) -> torch.Tensor:
    """The authors' input pipeline: RGB, PIL ``Image.NEAREST`` resize to 256x256, scale by 1/255.

    This is what Keras 2.1.5 ``ImageDataGenerator(rescale=1./255).flow_from_directory(target_size=(256, 256))``
    does (``load_img`` converts to RGB and resizes with PIL nearest; then ``x *= 1/255`` in float32). PIL's
    nearest rule differs from OpenCV's and torch's ``nearest`` and changes the outputs noticeably.

    Args:
        image: a PIL image of any mode PIL can convert to RGB (L, RGBA, P, ...), or a uint8 array of shape
            (H, W), (H, W, 1), (H, W, 3) RGB or (H, W, 4) RGBA.

    Returns:
        (3, 256, 256) float32 tensor in [0, 1].

    Raises:
        TypeError: not a PIL image or numpy array, or an array that is not uint8.
        ValueError: an array of unsupported shape.
    """
    if isinstance(image, np.ndarray):
        if image.dtype != np.uint8:
            raise TypeError(f"mesonet_preprocess expects a uint8 array, got dtype {image.dtype}")
        arr = image[..., 0] if image.ndim == 3 and image.shape[2] == 1 else image
        if not (arr.ndim == 2 or (arr.ndim == 3 and arr.shape[2] in (3, 4))):
            raise ValueError(f"mesonet_preprocess expects an array (H, W), (H, W, 1|3|4), got {image.shape}")
        pil = Image.fromarray(np.ascontiguousarray(arr))
    elif isinstance(image, Image.Image):
        pil = image
    else:
        raise TypeError(f"mesonet_preprocess expects a PIL image or numpy array, got {type(image).__name__}")
    if pil.mode != "RGB":
        pil = pil.convert("RGB")
    size = (MESONET_INPUT_SIZE, MESONET_INPUT_SIZE)
    if pil.size != size:
        pil = pil.resize(size, Image.NEAREST)
    x = np.asarray(pil, dtype=np.float32) * np.float32(1.0 / 255.0)
    return torch.from_numpy(np.ascontiguousarray(x.transpose(2, 0, 1)))
