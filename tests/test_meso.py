"""MesoNet models: architecture (parameter counts, shapes) and import of the authors' released Keras weights."""
from __future__ import annotations

from pathlib import Path

import h5py
import numpy as np
import pytest
import torch
from PIL import Image

from faceforge.models import KerasWeightsError, Meso4, MesoInception4, from_keras_h5, mesonet_preprocess


def _trainable(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


# ----------------------------------------------------------------------------------------------------------------
# Architecture
# ----------------------------------------------------------------------------------------------------------------

def test_parameter_counts_match_paper() -> None:
    assert _trainable(Meso4()) == 27_977
    assert _trainable(MesoInception4()) == 28_615
    # the head activation has no parameters, so every option keeps the count
    assert _trainable(Meso4(head_activation=None)) == 27_977
    assert _trainable(MesoInception4(head_activation="relu")) == 28_615


@pytest.mark.parametrize("cls", [Meso4, MesoInception4])
def test_forward_shape_dtype_and_backward(cls: type[torch.nn.Module]) -> None:
    torch.manual_seed(0)
    model = cls()
    x = torch.rand(2, 3, 256, 256)
    out = model(x)
    assert out.shape == (2,) and out.dtype == torch.float32
    out.sum().backward()
    assert all(p.grad is not None for p in model.parameters())
    model.eval()
    with torch.no_grad():
        single = model(x[:1])
    assert single.shape == (1,)
    # eval mode is deterministic (dropout off)
    with torch.no_grad():
        assert torch.equal(model(x[:1]), single)


@pytest.mark.parametrize("cls", [Meso4, MesoInception4])
def test_batchnorm_uses_keras_defaults(cls: type[torch.nn.Module]) -> None:
    bns = [m for m in cls().modules() if isinstance(m, torch.nn.BatchNorm2d)]
    assert len(bns) == 4
    assert all(bn.eps == pytest.approx(1e-3) and bn.momentum == pytest.approx(0.01) for bn in bns)


def test_wrong_input_shape_and_bad_head_raise() -> None:
    with pytest.raises(ValueError, match="256"):
        Meso4()(torch.rand(1, 3, 128, 128))
    with pytest.raises(ValueError, match="head_activation"):
        Meso4(head_activation="gelu")


def test_head_activation_options_change_the_function() -> None:
    torch.manual_seed(0)
    leaky = Meso4(head_activation="leaky_relu").eval()
    ident = Meso4(head_activation=None).eval()
    ident.load_state_dict(leaky.state_dict())
    h = torch.linspace(-2.0, 2.0, 16).reshape(1, 16)
    assert torch.allclose(leaky.head.act(h), torch.where(h > 0, h, 0.1 * h))
    assert torch.equal(ident.head.act(h), h)


# ----------------------------------------------------------------------------------------------------------------
# Preprocessing
# ----------------------------------------------------------------------------------------------------------------

def test_preprocess_uses_pil_nearest_and_scales() -> None:
    rng = np.random.default_rng(0)
    arr = rng.integers(0, 256, size=(100, 130, 3), dtype=np.uint8)
    x = mesonet_preprocess(arr)
    assert x.shape == (3, 256, 256) and x.dtype == torch.float32
    assert 0.0 <= float(x.min()) and float(x.max()) <= 1.0
    expected = np.asarray(Image.fromarray(arr).resize((256, 256), Image.NEAREST), dtype=np.float32) / 255.0
    np.testing.assert_allclose(x.permute(1, 2, 0).numpy(), expected, atol=1e-7)
    # every output value is one of the input values (nearest neighbour, no blending)
    assert set(np.unique((x.numpy() * 255).round().astype(np.uint8))) <= set(np.unique(arr))


def test_preprocess_converts_gray_and_rgba() -> None:
    gray = np.full((50, 50), 200, dtype=np.uint8)
    x = mesonet_preprocess(gray)
    assert x.shape == (3, 256, 256)
    assert torch.allclose(x, torch.full_like(x, 200 / 255))
    rgba = Image.new("RGBA", (300, 300), (10, 20, 30, 40))
    y = mesonet_preprocess(rgba)
    assert torch.allclose(y[:, 0, 0], torch.tensor([10, 20, 30]) / 255.0)
    with pytest.raises(TypeError):
        mesonet_preprocess(np.zeros((10, 10, 3), dtype=np.float32))
    with pytest.raises(ValueError):
        mesonet_preprocess(np.zeros((10, 10, 2), dtype=np.uint8))


# ----------------------------------------------------------------------------------------------------------------
# Authors' Keras weights
# ----------------------------------------------------------------------------------------------------------------

WEIGHTS = {"Meso4_DF.h5": Meso4, "MesoInception_DF.h5": MesoInception4}


def _test_images(fixtures_dir: Path) -> tuple[torch.Tensor, torch.Tensor]:
    """The authors' four test crops; labels in our convention (df -> 1 fake, real -> 0)."""
    root = fixtures_dir / "mesonet" / "test_images"
    paths = sorted(root.glob("df/*.jpg")) + sorted(root.glob("real/*.jpg"))
    assert len(paths) == 4
    x = torch.stack([mesonet_preprocess(Image.open(p)) for p in paths])
    y = torch.tensor([1 if p.parent.name == "df" else 0 for p in paths])
    return x, y


# An independent NumPy re-implementation of the Keras graph, in Keras' own NHWC layout and with the raw arrays of
# the HDF5 file (no transposes, NHWC flatten, sigmoid = P(real)). It checks every layout conversion of from_keras_h5.

def _np_conv_same(x: np.ndarray, kernel: np.ndarray, bias: np.ndarray, dilation: int = 1) -> np.ndarray:
    kh, kw = kernel.shape[:2]
    ph, pw = dilation * (kh - 1) // 2, dilation * (kw - 1) // 2
    h, w = x.shape[:2]
    xp = np.pad(x, ((ph, ph), (pw, pw), (0, 0)))
    out = np.zeros((h, w, kernel.shape[3]), dtype=np.float64)
    for i in range(kh):
        for j in range(kw):
            patch = xp[i * dilation:i * dilation + h, j * dilation:j * dilation + w]
            out += patch @ kernel[i, j]
    return out + bias


def _np_bn(x: np.ndarray, gamma, beta, mean, var) -> np.ndarray:
    return (x - mean) / np.sqrt(var + 1e-3) * gamma + beta


def _np_pool(x: np.ndarray, k: int) -> np.ndarray:
    h, w, c = x.shape
    return x.reshape(h // k, k, w // k, k, c).max(axis=(1, 3))


def _keras_layers(path: Path) -> dict[str, list[list[np.ndarray]]]:
    out: dict[str, list[tuple[int, list[np.ndarray]]]] = {}
    with h5py.File(path, "r") as f:
        for raw in f.attrs["layer_names"]:
            name = raw.decode()
            kind, _, num = name.rpartition("_")
            if kind in ("conv2d", "batch_normalization", "dense"):
                g = f[name]
                arrays = [np.asarray(g[w.decode()], dtype=np.float64) for w in g.attrs["weight_names"]]
                out.setdefault(kind, []).append((int(num), arrays))
    return {k: [a for _, a in sorted(v, key=lambda t: t[0])] for k, v in out.items()}


def _np_keras_p_real(path: Path, image_nhwc: np.ndarray, inception: bool) -> float:
    L = _keras_layers(path)

    def relu(t: np.ndarray) -> np.ndarray:
        return np.maximum(t, 0.0)

    conv, bn = iter(L["conv2d"]), iter(L["batch_normalization"])
    x = image_nhwc.astype(np.float64)

    def inception_block(x: np.ndarray) -> np.ndarray:
        x1 = relu(_np_conv_same(x, *next(conv)))
        x2 = relu(_np_conv_same(relu(_np_conv_same(x, *next(conv))), *next(conv)))
        x3 = relu(_np_conv_same(relu(_np_conv_same(x, *next(conv))), *next(conv), dilation=2))
        x4 = relu(_np_conv_same(relu(_np_conv_same(x, *next(conv))), *next(conv), dilation=3))
        return np.concatenate([x1, x2, x3, x4], axis=-1)

    blocks = ("inception", "inception", "conv", "conv") if inception else ("conv",) * 4
    for block, k in zip(blocks, (2, 2, 2, 4)):
        x = inception_block(x) if block == "inception" else relu(_np_conv_same(x, *next(conv)))
        x = _np_pool(_np_bn(x, *next(bn)), k)
    (k1, b1), (k2, b2) = L["dense"]
    h = x.reshape(-1) @ k1 + b1  # Keras flattens (h, w, c)
    h = np.where(h > 0, h, 0.1 * h)  # LeakyReLU(0.1) as in the authors' classifiers.py
    z = float((h @ k2 + b2)[0])
    return 1.0 / (1.0 + np.exp(-z))


@pytest.mark.fixtures
@pytest.mark.parametrize("fname", list(WEIGHTS))
def test_from_keras_h5_classifies_authors_test_images(fixtures_dir: Path, fname: str) -> None:
    model = from_keras_h5(fixtures_dir / "mesonet" / "weights" / fname)
    assert isinstance(model, WEIGHTS[fname])
    assert not model.training
    assert model.head_activation == "leaky_relu"  # the default reproduces the authors' code
    x, y = _test_images(fixtures_dir)
    with torch.no_grad():
        p_fake = torch.sigmoid(model(x))
    assert torch.all(p_fake[y == 1] > 0.5), p_fake
    assert torch.all(p_fake[y == 0] < 0.5), p_fake


@pytest.mark.fixtures
@pytest.mark.parametrize("fname", list(WEIGHTS))
def test_fake_logit_is_negated_keras_real_logit(fixtures_dir: Path, fname: str) -> None:
    """sigmoid(-our_logit) must equal the Keras model's sigmoid output P(real), computed independently in NHWC."""
    model = from_keras_h5(fixtures_dir / "mesonet" / "weights" / fname)
    x, _ = _test_images(fixtures_dir)
    with torch.no_grad():
        p_real_ours = torch.sigmoid(-model(x)).double().numpy()
    p_real_keras = np.array([
        _np_keras_p_real(fixtures_dir / "mesonet" / "weights" / fname, img.permute(1, 2, 0).numpy(),
                         inception=fname.startswith("MesoInception"))
        for img in x
    ])
    np.testing.assert_allclose(p_real_ours, p_real_keras, atol=1e-5)


@pytest.mark.fixtures
def test_loaded_batchnorm_and_head_are_the_file_values(fixtures_dir: Path) -> None:
    path = fixtures_dir / "mesonet" / "weights" / "Meso4_DF.h5"
    model = from_keras_h5(path)
    with h5py.File(path, "r") as f:
        var = np.asarray(f["batch_normalization_5/batch_normalization_5/moving_variance:0"])
        k_last = np.asarray(f["dense_4/dense_4/kernel:0"])
        b_last = np.asarray(f["dense_4/dense_4/bias:0"])
        k_first_conv = np.asarray(f["conv2d_5/conv2d_5/kernel:0"])
    np.testing.assert_array_equal(model.bn1.running_var.numpy(), var)
    np.testing.assert_array_equal(model.head.fc2.weight.detach().numpy(), -k_last.T)
    np.testing.assert_array_equal(model.head.fc2.bias.detach().numpy(), -b_last)
    # kernel[kh, kw, in, out] -> weight[out, in, kh, kw]
    assert model.conv1.weight[5, 2, 0, 1].item() == k_first_conv[0, 1, 2, 5]


@pytest.mark.fixtures
def test_head_activation_override(fixtures_dir: Path) -> None:
    model = from_keras_h5(fixtures_dir / "mesonet" / "weights" / "Meso4_DF.h5", head_activation=None)
    assert isinstance(model.head.act, torch.nn.Identity)


# ----------------------------------------------------------------------------------------------------------------
# Bad files
# ----------------------------------------------------------------------------------------------------------------

def test_missing_file_raises_naming_it(tmp_path: Path) -> None:
    path = tmp_path / "nope.h5"
    with pytest.raises(KerasWeightsError, match="nope.h5"):
        from_keras_h5(path)


def test_not_hdf5_raises(tmp_path: Path) -> None:
    path = tmp_path / "fake.h5"
    path.write_bytes(b"this is not an HDF5 file" * 10)
    with pytest.raises(KerasWeightsError, match="fake.h5.*not an HDF5"):
        from_keras_h5(path)
    assert issubclass(KerasWeightsError, ValueError)


def test_unknown_layout_raises(tmp_path: Path) -> None:
    path = tmp_path / "other.h5"
    with h5py.File(path, "w") as f:
        f.attrs["layer_names"] = np.array([b"input_1", b"conv2d_1", b"dense_1"])
        for name in ("input_1", "conv2d_1", "dense_1"):
            f.create_group(name).attrs["weight_names"] = np.array([], dtype="S1")
    with pytest.raises(KerasWeightsError, match="other.h5.*unknown layer layout"):
        from_keras_h5(path)
    empty = tmp_path / "empty.h5"
    with h5py.File(empty, "w"):
        pass
    with pytest.raises(KerasWeightsError, match="empty.h5.*layer_names"):
        from_keras_h5(empty)


def _write_meso4_like(path: Path, conv_shapes: list[tuple[int, ...]]) -> None:
    """A Keras-2-style weight file with the Meso-4 layout (random values, chosen kernel shapes)."""
    rng = np.random.default_rng(0)
    names: list[bytes] = [b"input_1"]

    with h5py.File(path, "w") as f:
        def layer(name: str, arrays: dict[str, np.ndarray]) -> None:
            names.append(name.encode())
            g = f.create_group(name)
            wn = [f"{name}/{k}".encode() for k in arrays]
            g.attrs["weight_names"] = np.array(wn)
            for k, v in arrays.items():
                g.create_dataset(f"{name}/{k}", data=v)

        for i, shape in enumerate(conv_shapes, start=1):
            out = shape[3]
            layer(f"conv2d_{i}", {"kernel:0": rng.normal(size=shape).astype(np.float32),
                                  "bias:0": np.zeros(out, np.float32)})
            layer(f"batch_normalization_{i}", {n: np.ones(out, np.float32) for n in
                                               ("gamma:0", "beta:0", "moving_mean:0", "moving_variance:0")})
        layer("dense_1", {"kernel:0": np.zeros((1024, 16), np.float32), "bias:0": np.zeros(16, np.float32)})
        layer("dense_2", {"kernel:0": np.zeros((16, 1), np.float32), "bias:0": np.zeros(1, np.float32)})
        f.attrs["layer_names"] = np.array(names)


def test_shape_mismatch_raises(tmp_path: Path) -> None:
    good = [(3, 3, 3, 8), (5, 5, 8, 8), (5, 5, 8, 16), (5, 5, 16, 16)]
    ok = tmp_path / "ok.h5"
    _write_meso4_like(ok, good)
    assert isinstance(from_keras_h5(ok), Meso4)  # the synthetic writer itself is a valid layout
    bad = tmp_path / "bad_shapes.h5"
    _write_meso4_like(bad, [(3, 3, 3, 8), (3, 3, 8, 8), (5, 5, 8, 16), (5, 5, 16, 16)])
    with pytest.raises(KerasWeightsError, match=r"bad_shapes.h5.*shape mismatch.*conv2d_2"):
        from_keras_h5(bad)
