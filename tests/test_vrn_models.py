"""Tests of the hourglass networks and the VRN family (Jackson et al., ICCV 2017).

The paper-size VRN is only built (cheap) for the parameter / BatchNorm counts of the authors' released Torch7
model, plus one inference pass; everything else runs small variants (features 32, 64x64 inputs).
"""
from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from faceforge.models.hourglass import Hourglass, ResidualModule, StackedHourglass, VRNHourglass
from faceforge.models.vrn import VRN, VRNGuided, VRNMultitask, gaussian_heatmaps

SMALL = {"features": 32, "depth": 2, "out_depth": 16, "output_size": 64, "stem_channels": (16, 32)}


def _count_params(m: nn.Module) -> int:
    return sum(p.numel() for p in m.parameters() if p.requires_grad)


def _count(m: nn.Module, kind: type) -> int:
    return sum(isinstance(x, kind) for x in m.modules())


def _pool_output_sizes(model: nn.Module, x: torch.Tensor, **kwargs) -> tuple[list[int], object]:
    """Run ``model(x)`` once (no grad) and return the spatial sizes of all max-pool outputs and the output."""
    sizes: list[int] = []
    hooks = [mod.register_forward_hook(lambda _m, _i, out: sizes.append(out.shape[-1]))
             for mod in model.modules() if isinstance(mod, nn.MaxPool2d)]
    try:
        with torch.no_grad():
            out = model(x, **kwargs)
    finally:
        for h in hooks:
            h.remove()
    return sizes, out


# --------------------------------------------------------------------------------------------------------------
# Paper size: the released model's counts
# --------------------------------------------------------------------------------------------------------------

def test_paper_vrn_matches_released_counts() -> None:
    model = VRN()  # num_stacks=2, features=256, depth=4, out_depth=200, output_size=192
    assert _count_params(model) == 19_184_968
    assert _count(model, nn.BatchNorm2d) == 273
    hourglass = model.stacks[0].hourglass
    assert _count(hourglass, ResidualModule) == 43


def test_paper_vrn_forward_volume_and_resolutions() -> None:
    """One inference pass at paper size (~5 s on 2 CPU cores)."""
    torch.manual_seed(0)
    model = VRN().eval()
    x = torch.randn(1, 3, 192, 192)
    low: list[torch.Tensor] = []
    hook = model.head.out.register_forward_hook(lambda _m, _i, out: low.append(out))
    try:
        sizes, y = _pool_output_sizes(model, x)
    finally:
        hook.remove()
    # stem pool 96 -> 48; hourglass pools 48 -> 24 only: never below 24x24
    assert min(sizes) == 24 and sizes[0] == 48
    assert y.shape == (1, 200, 192, 192)
    # the volume is the 200x48x48 prediction upsampled with align_corners=True: corners coincide
    pred = low[0]
    assert pred.shape == (1, 200, 48, 48)
    torch.testing.assert_close(y[..., 0, 0], pred[..., 0, 0])
    torch.testing.assert_close(y[..., -1, -1], pred[..., -1, -1])
    torch.testing.assert_close(y, F.interpolate(pred, size=(192, 192), mode="bilinear", align_corners=True))


# --------------------------------------------------------------------------------------------------------------
# Building blocks
# --------------------------------------------------------------------------------------------------------------

def test_residual_module_skip() -> None:
    same, change = ResidualModule(32, 32), ResidualModule(16, 32)
    assert isinstance(same.skip, nn.Identity) and isinstance(change.skip, nn.Conv2d)
    x = torch.randn(2, 32, 8, 8)
    # with the last convolution zeroed the branch contributes nothing: identity skip
    nn.init.zeros_(same.branch[-1].weight)
    nn.init.zeros_(same.branch[-1].bias)
    torch.testing.assert_close(same(x), x)
    assert change(torch.randn(2, 16, 8, 8)).shape == (2, 32, 8, 8)


def test_vrn_hourglass_stays_at_half_resolution() -> None:
    for depth in (1, 2, 3):
        hg = VRNHourglass(depth=depth, features=16)
        assert _count(hg, ResidualModule) == 10 * (depth - 1) + 13
        x = torch.randn(2, 16, 12, 12)
        sizes, y = _pool_output_sizes(hg, x)
        assert set(sizes) == {6}
        assert y.shape == x.shape


def test_textbook_hourglass_goes_down_by_depth() -> None:
    hg = Hourglass(depth=3, features=16)
    x = torch.randn(2, 16, 32, 32)
    sizes, y = _pool_output_sizes(hg, x)
    assert sorted(set(sizes)) == [4, 8, 16]
    assert y.shape == x.shape


def test_stacked_hourglass_outputs_per_stack() -> None:
    net = StackedHourglass(num_stacks=3, features=32, depth=2, num_points=68, stem_channels=(16, 32))
    outs = net(torch.randn(2, 3, 64, 64))
    assert len(outs) == 3 and all(o.shape == (2, 68, 16, 16) for o in outs)


# --------------------------------------------------------------------------------------------------------------
# Small variants: forward + backward
# --------------------------------------------------------------------------------------------------------------

def _assert_all_grads(module: nn.Module) -> None:
    missing = [n for n, p in module.named_parameters() if p.grad is None or not torch.isfinite(p.grad).all()]
    assert not missing, f"parameters without a finite gradient: {missing[:5]}"


def test_small_vrn_forward_backward() -> None:
    torch.manual_seed(0)
    model = VRN(num_stacks=2, **SMALL)
    x = torch.randn(2, 3, 64, 64)
    logits = model(x)
    assert logits.shape == (2, 16, 64, 64)
    assert logits.min() < 0 < logits.max()  # logits, not probabilities
    target = (torch.rand_like(logits) > 0.5).float()
    F.binary_cross_entropy_with_logits(logits, target).backward()
    _assert_all_grads(model)
    with pytest.raises(ValueError, match=r"\(B, 3, H, W\)"):
        model(torch.randn(2, 4, 64, 64))


def test_small_vrn_output_size_none_upsamples_x4() -> None:
    model = VRN(num_stacks=1, **{**SMALL, "output_size": None}).eval()
    with torch.no_grad():
        assert model(torch.randn(1, 3, 48, 48)).shape == (1, 16, 48, 48)


def _small_guided() -> VRNGuided:
    landmarks = StackedHourglass(num_stacks=2, features=32, depth=2, num_points=68, stem_channels=(16, 32))
    return VRNGuided(landmarks, VRN(num_stacks=1, in_channels=3 + 68, **SMALL))


def test_small_vrn_guided_predicted_heatmaps() -> None:
    torch.manual_seed(0)
    model = _small_guided()
    out = model(torch.randn(2, 3, 64, 64))
    assert out.volume.shape == (2, 16, 64, 64)
    assert len(out.heatmaps) == 2 and all(h.shape == (2, 68, 16, 16) for h in out.heatmaps)
    loss = out.volume.sigmoid().mean() + sum(h.pow(2).mean() for h in out.heatmaps)
    loss.backward()
    _assert_all_grads(model)


def test_small_vrn_guided_given_heatmaps_skip_landmark_net() -> None:
    torch.manual_seed(0)
    model = _small_guided()
    image = torch.randn(2, 3, 64, 64)
    points = torch.rand(2, 68, 2) * 63
    out = model(image, landmark_heatmaps=gaussian_heatmaps(points, 64))
    assert out.volume.shape == (2, 16, 64, 64) and out.heatmaps is None
    out.volume.mean().backward()
    assert all(p.grad is None for p in model.landmark_net.parameters())
    _assert_all_grads(model.vrn)
    # the heatmaps are an input: other heatmaps give another volume
    model.eval()
    with torch.no_grad():
        a = model(image, landmark_heatmaps=gaussian_heatmaps(points, 64)).volume
        b = model(image, landmark_heatmaps=torch.zeros(2, 68, 64, 64)).volume
    assert not torch.allclose(a, b)
    with pytest.raises(ValueError, match="landmark_heatmaps"):
        model(image, landmark_heatmaps=torch.zeros(2, 68, 16, 16))


def test_vrn_guided_rejects_wrong_channels() -> None:
    landmarks = StackedHourglass(num_stacks=1, features=16, depth=1, stem_channels=(8, 16))
    with pytest.raises(ValueError, match="in_channels"):
        VRNGuided(landmarks, VRN(num_stacks=1, in_channels=3, **SMALL))


def test_small_vrn_multitask_forward_backward() -> None:
    torch.manual_seed(0)
    model = VRNMultitask(shared_stacks=1, branch_stacks=1, **SMALL)
    out = model(torch.randn(2, 3, 64, 64))
    assert out.volume.shape == (2, 16, 64, 64)
    assert out.heatmaps.shape == (2, 68, 16, 16)
    target = gaussian_heatmaps(torch.rand(2, 68, 2) * 15, 16)
    loss = F.binary_cross_entropy_with_logits(out.volume, torch.ones_like(out.volume)) + F.mse_loss(
        out.heatmaps, target)
    loss.backward()
    _assert_all_grads(model)


# --------------------------------------------------------------------------------------------------------------
# Heatmaps
# --------------------------------------------------------------------------------------------------------------

def test_gaussian_heatmaps_peak_at_points() -> None:
    points = torch.tensor([[[3.0, 5.0], [10.0, 0.0], [0.0, 15.0]], [[7.0, 7.0], [4.4, 9.6], [15.0, 2.0]]])
    maps = gaussian_heatmaps(points, (16, 16), sigma=1.0)
    assert maps.shape == (2, 3, 16, 16)
    flat = maps.flatten(2).argmax(-1)
    rows, cols = flat // 16, flat % 16
    torch.testing.assert_close(cols, points[..., 0].round().long())
    torch.testing.assert_close(rows, points[..., 1].round().long())
    assert maps[0, 0, 5, 3] == pytest.approx(1.0)  # integer point: value 1 on its pixel (row y, column x)
    assert maps[0, 0, 5, 4] == pytest.approx(math.exp(-0.5), rel=1e-6)  # one sigma away
    assert maps[0, 0, 5, 5] == pytest.approx(math.exp(-2.0), rel=1e-6)
    assert maps.max() <= 1.0 and maps.min() >= 0.0


def test_gaussian_heatmaps_missing_points_and_unbatched() -> None:
    points = torch.tensor([[2.0, 2.0], [float("nan"), 3.0], [4.0, float("inf")]])
    maps = gaussian_heatmaps(points, 8, sigma=2.0)
    assert maps.shape == (3, 8, 8)
    assert maps[0].max() == pytest.approx(1.0)
    assert torch.count_nonzero(maps[1:]) == 0
    with pytest.raises(ValueError, match="sigma"):
        gaussian_heatmaps(points, 8, sigma=0.0)
