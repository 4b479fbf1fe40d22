"""Volumetric sigmoid cross-entropy (VRN, Eq. 1) and landmark heatmap MSE (stacked hourglass)."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from faceforge.losses import HeatmapMSELoss, LossInputError, VolumetricBCELoss, heatmap_mse_loss, volumetric_bce_loss
from faceforge.models.vrn import gaussian_heatmaps


def _batch(b: int = 2, d: int = 6, h: int = 5, w: int = 4, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(b, d, h, w, generator=g, dtype=torch.float64) * 3
    target = torch.rand(b, d, h, w, generator=g, dtype=torch.float64) > 0.6
    return logits, target


# ------------------------------------------------------------------------------------------------ volumetric BCE

def test_bce_mean_equals_torch_reference() -> None:
    logits, target = _batch()
    ref = F.binary_cross_entropy(torch.sigmoid(logits), target.double())
    assert torch.allclose(volumetric_bce_loss(logits, target), ref, rtol=1e-10, atol=1e-12)
    assert torch.allclose(VolumetricBCELoss()(logits, target), ref, rtol=1e-10, atol=1e-12)


def test_bce_sum_per_sample_is_eq1_literally() -> None:
    logits, target = _batch(b=3)
    p, t = torch.sigmoid(logits), target.double()
    eq1 = -(t * torch.log(p) + (1 - t) * torch.log(1 - p)).flatten(1).sum(1)  # sum over w, h, d per sample
    assert torch.allclose(volumetric_bce_loss(logits, target, "sum_per_sample"), eq1.mean(), rtol=1e-10)
    assert torch.allclose(volumetric_bce_loss(logits, target, "sum"), eq1.sum(), rtol=1e-10)
    none = volumetric_bce_loss(logits, target, "none")
    assert none.shape == logits.shape
    assert torch.allclose(none.flatten(1).sum(1), eq1, rtol=1e-10)


def test_bce_pos_weight_matches_torch() -> None:
    logits, target = _batch()
    ref = F.binary_cross_entropy_with_logits(logits, target.double(), pos_weight=torch.tensor(3.0).double())
    assert torch.allclose(volumetric_bce_loss(logits, target, pos_weight=3.0), ref, rtol=1e-10)


def test_bce_is_minimised_by_the_target() -> None:
    logits, target = _batch()
    sign = target.double() * 2 - 1
    random_loss = volumetric_bce_loss(logits, target)
    near = volumetric_bce_loss(sign * 5, target)
    nearer = volumetric_bce_loss(sign * 20, target)
    assert nearer < near < random_loss
    assert nearer < 1e-8
    # soft target: the loss as a function of each logit is stationary (zero gradient) at logit(t) and larger away
    soft = torch.rand(2, 4, 3, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(1)) * 0.9 + 0.05
    x = torch.logit(soft).requires_grad_(True)
    loss = volumetric_bce_loss(x, soft)
    loss.backward()
    assert x.grad is not None and x.grad.abs().max() < 1e-12
    for delta in (-0.5, 0.5):
        assert volumetric_bce_loss(x.detach() + delta, soft) > loss.detach()


def test_bce_mean_does_not_scale_with_volume_size() -> None:
    # same per-voxel statistics at two sizes: the mean loss (and so the useful lr) is the same; Eq. 1's sum is not
    small_t = torch.zeros(1, 10, 12, 12, dtype=torch.bool)
    small_t[:, :5] = True
    big_t = torch.zeros(1, 40, 48, 48, dtype=torch.bool)
    big_t[:, :20] = True
    small = volumetric_bce_loss(torch.full(small_t.shape, 0.3), small_t)
    big = volumetric_bce_loss(torch.full(big_t.shape, 0.3), big_t)
    assert torch.allclose(small, big, rtol=1e-5)
    ratio = (volumetric_bce_loss(torch.full(big_t.shape, 0.3), big_t, "sum_per_sample")
             / volumetric_bce_loss(torch.full(small_t.shape, 0.3), small_t, "sum_per_sample"))
    assert ratio == pytest.approx(big_t.numel() / small_t.numel(), rel=1e-4)


def test_bce_target_dtypes_and_errors() -> None:
    logits, target = _batch()
    ref = volumetric_bce_loss(logits, target)
    assert torch.allclose(volumetric_bce_loss(logits, target.to(torch.uint8)), ref)
    assert torch.allclose(volumetric_bce_loss(logits, target.double()), ref)
    with pytest.raises(LossInputError, match="0 and 1"):
        volumetric_bce_loss(logits, target.to(torch.uint8) * 255)
    with pytest.raises(LossInputError, match=r"\[0, 1\]"):
        volumetric_bce_loss(logits, target.double() * 2)
    with pytest.raises(LossInputError, match="differs"):
        volumetric_bce_loss(logits, target[:, :-1])
    with pytest.raises(LossInputError, match="B, D, H, W"):
        volumetric_bce_loss(logits[0], target[0])
    with pytest.raises(LossInputError, match="reduction"):
        volumetric_bce_loss(logits, target, "max")  # type: ignore[arg-type]
    with pytest.raises(LossInputError, match="pos_weight"):
        VolumetricBCELoss(pos_weight=0.0)


def test_bce_backward_through_float32_logits() -> None:
    logits = torch.randn(2, 8, 6, 6, requires_grad=True)
    target = torch.rand(2, 8, 6, 6) > 0.5
    loss = VolumetricBCELoss()(logits, target)
    loss.backward()
    assert loss.dtype == torch.float32 and logits.grad is not None
    # d(mean BCE)/dx = (sigmoid(x) - t) / N
    expected = (torch.sigmoid(logits.detach()) - target.float()) / logits.numel()
    assert torch.allclose(logits.grad, expected, atol=1e-9)


# ------------------------------------------------------------------------------------------------ heatmap MSE

def _heatmaps(seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    pts = torch.rand(2, 68, 2, generator=g) * 40 + 4
    return pts, gaussian_heatmaps(pts, 48, sigma=1.0)


def test_heatmap_loss_zero_at_target_and_sums_stacks() -> None:
    pts, target = _heatmaps()
    assert heatmap_mse_loss([target.clone(), target.clone()], target) == 0
    off = gaussian_heatmaps(pts + 2.0, 48)
    worse = gaussian_heatmaps(pts + 4.0, 48)
    ref = F.mse_loss(off, target) + F.mse_loss(worse, target)
    assert torch.allclose(heatmap_mse_loss([off, worse], target), ref)
    assert torch.allclose(HeatmapMSELoss("mean")([off, worse], target), ref / 2)
    assert F.mse_loss(off, target) < F.mse_loss(worse, target)  # further from the landmarks = larger loss
    # a single tensor (VRNMultitask's heatmaps) is one stack
    assert torch.allclose(heatmap_mse_loss(off, target), F.mse_loss(off, target))


def test_heatmap_loss_gradient_vanishes_at_target() -> None:
    _, target = _heatmaps()
    pred = target.clone().requires_grad_(True)
    heatmap_mse_loss([pred], target).backward()
    assert pred.grad is not None and pred.grad.abs().max() == 0


def test_heatmap_visibility_masks_points() -> None:
    pts, target = _heatmaps()
    moved = pts.clone()
    moved[0, 5] += 6.0  # only point 5 of sample 0 is wrong
    pred = gaussian_heatmaps(moved, 48)
    vis = torch.ones(2, 68)
    assert heatmap_mse_loss(pred, target, vis) > 0
    vis[0, 5] = 0
    assert heatmap_mse_loss(pred, target, vis) == 0
    # the mean is over the visible points' maps: one wrong map out of 2 * 68 visible ones
    full = heatmap_mse_loss(pred, target, torch.ones(2, 68))
    assert torch.allclose(full, F.mse_loss(pred, target))
    # nothing visible: 0, not NaN
    assert heatmap_mse_loss(pred, target, torch.zeros(2, 68)) == 0


def test_heatmap_loss_errors() -> None:
    _, target = _heatmaps()
    with pytest.raises(LossInputError, match="resolution"):
        heatmap_mse_loss([torch.zeros(2, 68, 24, 24)], target)
    with pytest.raises(LossInputError, match="non-empty"):
        heatmap_mse_loss([], target)
    with pytest.raises(LossInputError, match="visibility"):
        heatmap_mse_loss(target, target, torch.ones(2, 5))
    with pytest.raises(LossInputError, match="stack_reduction"):
        HeatmapMSELoss("max")  # type: ignore[arg-type]
