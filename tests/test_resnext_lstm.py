"""ResNeXt-LSTM video detector: shapes, gradients, freezing, padded clips, batch-first LSTM, offline weight loading."""
from __future__ import annotations

import copy
from pathlib import Path

import pytest
import torch
import torchvision
from torch import nn

from faceforge.models.resnext_lstm import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    PretrainedWeightsError,
    ResNeXtLSTM,
    find_cached_imagenet_weights,
    load_backbone_weights,
)

FEATURE_DIMS = {"resnet18": 512, "tiny": 64}


def _clips(b: int = 3, t: int = 4, size: int = 64, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.rand(b, t, 3, size, size, generator=g)


def _model(backbone: str = "tiny", seed: int = 0, **kwargs) -> ResNeXtLSTM:
    torch.manual_seed(seed)
    kwargs.setdefault("hidden_size", 32)
    return ResNeXtLSTM(backbone, **kwargs)


def _bn_stats(module: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in module.state_dict().items() if "running_" in k}


def _train_step(model: ResNeXtLSTM, clips: torch.Tensor) -> None:
    opt = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.1)
    model.train()
    loss = nn.functional.binary_cross_entropy_with_logits(model(clips), torch.tensor([1.0, 0.0, 1.0]))
    opt.zero_grad()
    loss.backward()
    opt.step()


# ----------------------------------------------------------------------------------------------------------------
# Shapes and gradients
# ----------------------------------------------------------------------------------------------------------------

@pytest.mark.parametrize(("backbone", "pooling", "bidirectional"), [
    ("resnet18", "mean", False), ("resnet18", "last", True),
    ("tiny", "mean", False), ("tiny", "last", False), ("tiny", "mean", True), ("tiny", "last", True)])
def test_output_and_feature_shapes(backbone: str, pooling: str, bidirectional: bool) -> None:
    model = _model(backbone, temporal_pooling=pooling, bidirectional=bidirectional).eval()
    clips = _clips()
    with torch.no_grad():
        out = model(clips)
        feats = model.frame_features(clips)
        pooled = model.sequence_features(clips)
    assert out.shape == (3,) and out.dtype == torch.float32
    assert model.feature_dim == FEATURE_DIMS[backbone]
    assert feats.shape == (3, 4, FEATURE_DIMS[backbone]) and feats.dtype == torch.float32
    assert pooled.shape == (3, 32 * (2 if bidirectional else 1))
    assert model.classifier.in_features == pooled.shape[1] and model.classifier.out_features == 1


def test_lstm_configuration() -> None:
    lstm = _model().lstm
    assert lstm.batch_first and lstm.bias and lstm.dropout == 0.0  # one layer: torch's LSTM dropout is a no-op
    assert lstm.weight_ih_l0.shape == (4 * 32, 64) and lstm.bias_ih_l0.shape == (4 * 32,)
    stacked = _model(num_layers=2, dropout=0.3)
    assert stacked.lstm.dropout == pytest.approx(0.3) and stacked.dropout.p == pytest.approx(0.3)


def test_forward_backward_reaches_every_parameter() -> None:
    model = _model("resnet18")
    model(_clips(size=32)).sum().backward()
    for name, p in model.named_parameters():
        assert p.grad is not None, name
    for p in [*model.lstm.parameters(), *model.classifier.parameters()]:
        assert p.grad.abs().sum() > 0


def test_normalisation_is_inside_the_model_and_not_in_state_dict() -> None:
    model = _model().eval()
    clips = _clips()
    mean = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
    with torch.no_grad():
        expected = model.backbone((clips.reshape(12, 3, 64, 64) - mean) / std).reshape(3, 4, -1)
        torch.testing.assert_close(model.frame_features(clips), expected)
    assert not any(k.startswith("pixel_") for k in model.state_dict())
    assert model.double().pixel_mean.dtype == torch.float64  # buffers follow .to()


def test_bf16_autocast_on_cpu_returns_float32() -> None:
    model = _model().eval()
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        out = model(_clips(), torch.tensor([4, 2, 3]))
    assert out.dtype == torch.float32 and torch.isfinite(out).all()


# ----------------------------------------------------------------------------------------------------------------
# Freezing
# ----------------------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("backbone", ["resnet18", "tiny"])
def test_freeze_backbone_keeps_weights_and_batchnorm_statistics(backbone: str) -> None:
    model = _model(backbone, freeze_backbone=True)
    before = copy.deepcopy(model.backbone.state_dict())
    head_before = model.classifier.weight.detach().clone()
    _train_step(model, _clips())
    assert model.training and not model.backbone.training
    assert all(not m.training for m in model.backbone.modules())
    assert all(p.grad is None and not p.requires_grad for p in model.backbone.parameters())
    for k, v in model.backbone.state_dict().items():
        assert torch.equal(v, before[k]), k  # weights and running_mean/var/num_batches_tracked untouched
    assert all(p.grad is not None for p in model.lstm.parameters())
    assert not torch.equal(model.classifier.weight, head_before)
    # eval() / train() round trip keeps the rule
    assert not model.eval().training and not model.train().backbone.training


def test_unfrozen_backbone_batchnorm_does_update() -> None:
    """The control of the test above: a trainable backbone changes its statistics in a train step."""
    model = _model("tiny")
    before = _bn_stats(model.backbone)
    _train_step(model, _clips())
    after = _bn_stats(model.backbone)
    assert any(not torch.equal(before[k], after[k]) for k in before)


def test_train_last_stage_leaves_layer4_trainable() -> None:
    model = _model("resnet18", freeze_backbone=True, train_last_stage=True)
    before = _bn_stats(model.backbone)
    _train_step(model, _clips(size=32))
    after = _bn_stats(model.backbone)
    for name, p in model.backbone.named_parameters():
        if name.startswith("layer4."):
            assert p.requires_grad and p.grad is not None and p.grad.abs().sum() > 0, name
        else:
            assert not p.requires_grad and p.grad is None, name
    assert model.backbone.layer4.training and not model.backbone.layer3.training and not model.backbone.bn1.training
    for k in before:
        changed = not torch.equal(before[k], after[k])
        assert changed == k.startswith("layer4."), k


def test_train_last_stage_needs_freezing() -> None:
    with pytest.raises(ValueError, match="freeze_backbone"):
        ResNeXtLSTM("tiny", train_last_stage=True)


# ----------------------------------------------------------------------------------------------------------------
# Variable-length clips
# ----------------------------------------------------------------------------------------------------------------

@pytest.mark.parametrize(("pooling", "bidirectional"), [("mean", False), ("last", False), ("mean", True),
                                                        ("last", True)])
def test_padding_frames_do_not_change_the_output(pooling: str, bidirectional: bool) -> None:
    model = _model(temporal_pooling=pooling, bidirectional=bidirectional, dropout=0.0).eval()
    clips = _clips(b=3, t=5)
    lengths = torch.tensor([5, 2, 3])
    garbage = clips.clone()
    garbage[1, 2:] = float("nan")
    garbage[2, 3:] = 1e6
    with torch.no_grad():
        out = model(clips, lengths)
        torch.testing.assert_close(model(garbage, lengths), out, rtol=0, atol=0)
        # each clip gives what it gives alone, unpadded
        alone = torch.cat([model(clips[i:i + 1, :n]) for i, n in enumerate(lengths.tolist())])
        torch.testing.assert_close(out, alone, rtol=1e-5, atol=1e-6)
        # padding changes the output when lengths are not given (the test can fail)
        assert not torch.allclose(model(clips), out)
        # full lengths equal no lengths
        torch.testing.assert_close(model(clips, torch.full((3,), 5)), model(clips))
        feats = model.frame_features(garbage, lengths)
    assert torch.isfinite(feats).all() and (feats[1, 2:] == 0).all()


def test_padding_frames_stay_out_of_batchnorm_in_training() -> None:
    """In train mode BatchNorm uses batch statistics: padded frames must not enter them."""
    model = _model("tiny", dropout=0.0).train()
    clips, lengths = _clips(b=3, t=5), torch.tensor([5, 2, 3])
    garbage = clips.clone()
    garbage[1, 2:] = 50.0
    garbage[2, 3:] = -7.0
    state = copy.deepcopy(model.state_dict())
    out = model(clips, lengths)
    model.load_state_dict(state)  # undo the running-statistics update
    torch.testing.assert_close(model(garbage, lengths), out)


def test_bad_lengths_raise() -> None:
    model = _model().eval()
    clips = _clips(b=2, t=3)
    for bad in (torch.tensor([0, 3]), torch.tensor([4, 1]), torch.tensor([2.0, 3.0]), torch.tensor([3]),
                [3, 3]):
        with pytest.raises(ValueError, match="lengths"):
            model(clips, bad)


def test_bad_clips_raise() -> None:
    model = _model().eval()
    with pytest.raises(ValueError, match=r"\(B, T, 3, H, W\)"):
        model(torch.rand(2, 3, 64, 64))
    with pytest.raises(ValueError, match=r"\(B, T, 3, H, W\)"):
        model(torch.rand(1, 2, 1, 64, 64))
    with pytest.raises(TypeError, match="float"):
        model(torch.zeros(1, 2, 3, 64, 64, dtype=torch.uint8))


# ----------------------------------------------------------------------------------------------------------------
# The LSTM runs over the frames of each clip, not across the batch
# ----------------------------------------------------------------------------------------------------------------

def _permutation_equivariant(model: ResNeXtLSTM, clips: torch.Tensor) -> bool:
    perm = torch.tensor([2, 0, 3, 1])
    with torch.no_grad():
        return torch.allclose(model(clips[perm]), model(clips)[perm], rtol=1e-5, atol=1e-6)


def test_permuting_clips_permutes_outputs() -> None:
    model = _model(dropout=0.0).eval()
    clips = _clips(b=4, t=4)
    assert _permutation_equivariant(model, clips)
    with torch.no_grad():  # and a clip's output does not depend on its batch mates
        torch.testing.assert_close(model(clips[1:2]), model(clips)[1:2], rtol=1e-5, atol=1e-6)
    # the reference's layout (an LSTM that is not batch_first reads (B, T, F) as (seq=B, batch=T)) mixes clips
    model.lstm.batch_first = False
    assert not _permutation_equivariant(model, clips)


# ----------------------------------------------------------------------------------------------------------------
# Pretrained backbone weights (local files only)
# ----------------------------------------------------------------------------------------------------------------

def test_pretrained_weights_load_from_a_torchvision_state_dict(tmp_path: Path) -> None:
    src = _model("resnet18", seed=1, dropout=0.0).eval()
    state = dict(src.backbone.state_dict())
    state["fc.weight"], state["fc.bias"] = torch.randn(1000, 512), torch.randn(1000)  # as in torchvision files
    path = tmp_path / "resnet18.pth"
    torch.save(state, path)
    dst = _model("resnet18", seed=2, dropout=0.0, pretrained_weights=path).eval()
    clips = _clips(b=2, t=3, size=32)
    with torch.no_grad():
        torch.testing.assert_close(dst.frame_features(clips), src.frame_features(clips), rtol=0, atol=0)
        assert not torch.allclose(dst(clips), src(clips))  # LSTM and head are still dst's own
        dst.lstm.load_state_dict(src.lstm.state_dict())
        dst.classifier.load_state_dict(src.classifier.state_dict())
        torch.testing.assert_close(dst(clips), src(clips), rtol=0, atol=0)
    # a file saved by torchvision's own builder has the same keys
    tv_path = tmp_path / "tv.pth"
    torch.save(torchvision.models.resnet18(weights=None).state_dict(), tv_path)
    _model("resnet18", pretrained_weights=tv_path)


def test_old_files_without_num_batches_tracked_load(tmp_path: Path) -> None:
    src = _model("tiny", seed=1)
    path = tmp_path / "old.pth"
    torch.save({k: v for k, v in src.backbone.state_dict().items() if not k.endswith("num_batches_tracked")}, path)
    dst = _model("tiny", seed=2)
    load_backbone_weights(dst.backbone, path)
    assert torch.equal(dst.backbone.layer1[0].weight, src.backbone.layer1[0].weight)


def test_bad_weight_files_raise_naming_the_file(tmp_path: Path) -> None:
    missing = tmp_path / "nowhere" / "resnext50_32x4d-7cdf4587.pth"
    with pytest.raises(PretrainedWeightsError, match="nowhere.*not found"):
        ResNeXtLSTM("tiny", pretrained_weights=missing)
    wrong_arch = tmp_path / "tiny.pth"
    torch.save(_model("tiny").backbone.state_dict(), wrong_arch)
    with pytest.raises(PretrainedWeightsError, match=r"tiny\.pth.*missing keys: .*unexpected keys"):
        _model("resnet18", pretrained_weights=wrong_arch)
    pickled = tmp_path / "module.pth"
    torch.save(nn.Linear(2, 2), pickled)  # a pickled object, refused by weights_only=True
    with pytest.raises(PretrainedWeightsError, match="module.pth.*weights_only"):
        _model("tiny", pretrained_weights=pickled)
    not_a_dict = tmp_path / "tensor.pth"
    torch.save(torch.zeros(3), not_a_dict)
    with pytest.raises(PretrainedWeightsError, match="tensor.pth.*not a state_dict"):
        _model("tiny", pretrained_weights=not_a_dict)
    wrong_shape = tmp_path / "shape.pth"
    state = _model("tiny").backbone.state_dict()
    state["layer1.0.weight"] = torch.zeros(8, 3, 5, 5)
    torch.save(state, wrong_shape)
    with pytest.raises(PretrainedWeightsError, match=r"shape.pth.*layer1\.0\.weight"):
        _model("tiny", pretrained_weights=wrong_shape)


def test_find_cached_imagenet_weights_only_looks(tmp_path: Path) -> None:
    assert find_cached_imagenet_weights("resnext50_32x4d", hub_dir=tmp_path) is None
    (tmp_path / "checkpoints").mkdir()
    cached = tmp_path / "checkpoints" / "resnext50_32x4d-7cdf4587.pth"  # torchvision's IMAGENET1K_V1 file name
    cached.write_bytes(b"")
    assert find_cached_imagenet_weights("resnext50_32x4d", hub_dir=tmp_path) == cached
    with pytest.raises(ValueError, match="tiny"):
        find_cached_imagenet_weights("tiny")


# ----------------------------------------------------------------------------------------------------------------
# The paper-size model
# ----------------------------------------------------------------------------------------------------------------

def test_full_resnext50_builds_offline_with_expected_sizes() -> None:
    model = ResNeXtLSTM()  # resnext50_32x4d, hidden 2048: built with weights=None, nothing downloaded
    reference = torchvision.models.resnext50_32x4d(weights=None)
    expected_backbone = sum(p.numel() for p in reference.parameters()) - sum(p.numel() for p in
                                                                            reference.fc.parameters())
    assert sum(p.numel() for p in model.backbone.parameters()) == expected_backbone == 22_979_904
    assert model.feature_dim == 2048
    # 4 gates x 2048 x (2048 input + 2048 hidden) weights + 2 bias vectors (the reference, bias-free: 33,554,432)
    assert sum(p.numel() for p in model.lstm.parameters()) == 4 * 2048 * 4096 + 2 * 4 * 2048 == 33_570_816
    assert sum(p.numel() for p in model.classifier.parameters()) == 2049
    assert model.dropout.p == pytest.approx(0.4)
    model.eval()
    with torch.no_grad():  # one short clip at the reference's 112x112 (about a second on 2 cores)
        out = model(_clips(b=1, t=2, size=112))
    assert out.shape == (1,) and torch.isfinite(out).all()


def test_checkpoint_round_trip_with_weights_only(tmp_path: Path) -> None:
    src = _model("tiny", seed=3, bidirectional=True).eval()
    path = tmp_path / "model.pt"
    torch.save(src.state_dict(), path)
    dst = _model("tiny", seed=4, bidirectional=True).eval()
    dst.load_state_dict(torch.load(path, weights_only=True))
    clips = _clips()
    with torch.no_grad():
        torch.testing.assert_close(dst(clips), src(clips), rtol=0, atol=0)
