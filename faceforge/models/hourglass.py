"""Hourglass networks: the residual module, VRN's hourglass as released, and the textbook stacked hourglass.

* :class:`ResidualModule`: the pre-activation bottleneck of Newell et al., "Stacked Hourglass Networks for Human
  Pose Estimation", ECCV 2016 (Sec. 3.1, Fig. 4 left): BN-ReLU-1x1(out/2), BN-ReLU-3x3(out/2), BN-ReLU-1x1(out),
  plus an identity skip (or a 1x1 convolution when the channel count changes).
* :class:`VRNHourglass`: the hourglass of the released VRN model (Jackson et al., "Large Pose 3D Face
  Reconstruction from a Single Image via Direct Volumetric CNN Regression", ICCV 2017, as in the authors' Torch7
  ``vrn-unguided.t7``; see ``DESIGN.md`` "VRN as released"). Unlike the textbook hourglass, its levels nest at the
  SAME resolution and every lower branch pools only once, so it never goes below half the input resolution.
* :class:`Hourglass` / :class:`StackedHourglass`: the textbook recursive hourglass and the stacked landmark network
  (Newell et al. 2016, Sec. 3.1-3.4) with intermediate heatmap outputs, used for VRN-Guided's landmark network.
* :class:`HourglassStem`: the shared stem (conv 7x7/2, residual, max-pool, two residuals) that brings an image to a
  quarter of its resolution.

All modules are plain ``nn.Module`` objects; widths and depths are constructor arguments.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["Hourglass", "HourglassStem", "ResidualModule", "StackedHourglass", "VRNHourglass"]


def _upsample_nearest_to(x: torch.Tensor, ref: torch.Tensor) -> torch.Tensor:
    """Nearest-neighbour upsampling of ``x`` to ``ref``'s spatial size (exactly x2 for even sizes)."""
    return F.interpolate(x, size=ref.shape[-2:], mode="nearest")


class ResidualModule(nn.Module):
    """Pre-activation bottleneck residual module (Newell et al. 2016, Fig. 4 left).

    ``branch = BN-ReLU-conv1x1(in -> out/2) -> BN-ReLU-conv3x3(out/2) -> BN-ReLU-conv1x1(out/2 -> out)``;
    ``skip = identity`` if ``in == out`` else ``conv1x1(in -> out)``; output ``branch(x) + skip(x)``. All
    convolutions have biases (as in the Torch7 original).

    Args:
        in_channels: input channels.
        out_channels: output channels (even; the bottleneck has ``out_channels // 2``).

    Shapes:
        (B, in_channels, H, W) float -> (B, out_channels, H, W).
    """

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        if in_channels < 1 or out_channels < 2:
            raise ValueError(f"ResidualModule needs in_channels >= 1 and out_channels >= 2, got "
                             f"{in_channels}, {out_channels}")
        mid = out_channels // 2
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.branch = nn.Sequential(
            nn.BatchNorm2d(in_channels), nn.ReLU(inplace=True), nn.Conv2d(in_channels, mid, 1),
            nn.BatchNorm2d(mid), nn.ReLU(inplace=True), nn.Conv2d(mid, mid, 3, padding=1),
            nn.BatchNorm2d(mid), nn.ReLU(inplace=True), nn.Conv2d(mid, out_channels, 1),
        )
        self.skip: nn.Module = nn.Identity() if in_channels == out_channels else nn.Conv2d(in_channels,
                                                                                            out_channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Apply the module: (B, in, H, W) -> (B, out, H, W)."""
        return self.branch(x) + self.skip(x)


def _residuals(n: int, channels: int) -> nn.Sequential:
    return nn.Sequential(*[ResidualModule(channels, channels) for _ in range(n)])


class HourglassStem(nn.Module):
    """Stem shared by the stacked hourglass and VRN: image -> features at 1/4 resolution.

    ``conv7x7/2 (in -> c1) + BN + ReLU, Res(c1 -> c2), max-pool 2, Res(c2 -> c2), Res(c2 -> features)``
    (Newell et al. 2016, Sec. 3.1; the released VRN uses c1 = 64, c2 = 128, features = 256).

    Args:
        in_channels: image channels (3 for RGB; 3 + 68 for VRN-Guided).
        features: output channels.
        stem_channels: ``(c1, c2)``.

    Shapes:
        (B, in_channels, H, W) -> (B, features, H/4, W/4) (floor division for odd sizes).
    """

    def __init__(self, in_channels: int = 3, features: int = 256, stem_channels: tuple[int, int] = (64, 128)) -> None:
        super().__init__()
        c1, c2 = stem_channels
        self.conv = nn.Conv2d(in_channels, c1, 7, stride=2, padding=3)
        self.bn = nn.BatchNorm2d(c1)
        self.relu = nn.ReLU(inplace=True)
        self.res1 = ResidualModule(c1, c2)
        self.pool = nn.MaxPool2d(2, 2)
        self.res2 = ResidualModule(c2, c2)
        self.res3 = ResidualModule(c2, features)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, in_channels, H, W) -> (B, features, H/4, W/4)."""
        x = self.relu(self.bn(self.conv(x)))
        x = self.pool(self.res1(x))
        return self.res3(self.res2(x))


class VRNHourglass(nn.Module):
    """The hourglass of the released VRN (Jackson et al. 2017, authors' Torch7 model).

    Level ``n`` (``n = depth .. 1``), input ``x``::

        upper = level_{n-1}(Res x3 (x))        # level_0 = identity: the innermost runs 3 residuals only
        lower = up2(Res x6 (maxpool2(x)))      # Res x9 at the innermost level
        out   = Res(upper + lower)

    All levels run at the input resolution; each lower branch pools once (so never below H/2). At depth 4 that is
    4 * 3 + 3 * 6 + 9 + 4 = 43 residual modules, 258 BatchNorm layers.

    Args:
        depth: number of nested levels (>= 1).
        features: channels throughout.
        num_pre: residuals before the nested level (3 in the release).
        num_low: residuals of a lower branch (6).
        num_low_innermost: residuals of the innermost lower branch (9).

    Shapes:
        (B, features, H, W) -> (B, features, H, W); H, W even (the pooled branch is upsampled back to H, W).
    """

    def __init__(self, depth: int = 4, features: int = 256, num_pre: int = 3, num_low: int = 6,
                 num_low_innermost: int = 9) -> None:
        super().__init__()
        if depth < 1:
            raise ValueError(f"VRNHourglass depth must be >= 1, got {depth}")
        self.depth = depth
        self.features = features
        self.pre = _residuals(num_pre, features)
        self.inner: VRNHourglass | None = (
            VRNHourglass(depth - 1, features, num_pre, num_low, num_low_innermost) if depth > 1 else None)
        self.pool = nn.MaxPool2d(2, 2)
        self.low = _residuals(num_low if depth > 1 else num_low_innermost, features)
        self.post = ResidualModule(features, features)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, features, H, W) -> (B, features, H, W)."""
        upper = self.pre(x)
        if self.inner is not None:
            upper = self.inner(upper)
        lower = _upsample_nearest_to(self.low(self.pool(x)), upper)
        return self.post(upper + lower)


class Hourglass(nn.Module):
    """Textbook recursive hourglass (Newell et al. 2016, Sec. 3.1, Fig. 3).

    ``out = Res^r(x) + up2(low3(inner(low1(maxpool2(x)))))`` where ``low1``/``low3`` are ``r`` residuals and
    ``inner`` is the hourglass of depth ``depth - 1`` (``r`` residuals at the bottom). The resolution halves at
    each level, down to H / 2^depth.

    Args:
        depth: number of down-sampling levels (>= 1).
        features: channels throughout.
        num_residual: residual modules per step ``r`` (1 in the paper).

    Shapes:
        (B, features, H, W) -> (B, features, H, W); H, W divisible by 2^depth.
    """

    def __init__(self, depth: int = 4, features: int = 256, num_residual: int = 1) -> None:
        super().__init__()
        if depth < 1:
            raise ValueError(f"Hourglass depth must be >= 1, got {depth}")
        self.depth = depth
        self.up1 = _residuals(num_residual, features)
        self.pool = nn.MaxPool2d(2, 2)
        self.low1 = _residuals(num_residual, features)
        self.low2: nn.Module = (Hourglass(depth - 1, features, num_residual) if depth > 1
                                else _residuals(num_residual, features))
        self.low3 = _residuals(num_residual, features)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, features, H, W) -> (B, features, H, W)."""
        up1 = self.up1(x)
        low = self.low3(self.low2(self.low1(self.pool(x))))
        return up1 + _upsample_nearest_to(low, up1)


class StackedHourglass(nn.Module):
    """Stacked hourglass landmark network with intermediate supervision (Newell et al. 2016, Sec. 3.4).

    ``stem`` (:class:`HourglassStem`) then per stack: ``Hourglass -> Res -> conv1x1 + BN + ReLU (features) ->
    conv1x1 (num_points)`` heatmaps; between stacks the features and the heatmaps are mapped back by 1x1
    convolutions and added to the stack's input.

    Args:
        num_stacks: number of hourglasses (VRN-Guided uses 2).
        features: channels.
        depth: hourglass depth.
        num_points: heatmap channels (68 iBUG landmarks).
        in_channels: image channels.
        stem_channels: ``(c1, c2)`` of the stem.

    Shapes:
        (B, in_channels, H, W) -> list of ``num_stacks`` tensors (B, num_points, H/4, W/4) (raw regression
        outputs, trained with an MSE to Gaussian heatmaps); the last is the prediction.
    """

    def __init__(self, num_stacks: int = 2, features: int = 256, depth: int = 4, num_points: int = 68,
                 in_channels: int = 3, stem_channels: tuple[int, int] = (64, 128)) -> None:
        super().__init__()
        if num_stacks < 1:
            raise ValueError(f"num_stacks must be >= 1, got {num_stacks}")
        self.num_stacks = num_stacks
        self.num_points = num_points
        self.in_channels = in_channels
        self.stem = HourglassStem(in_channels, features, stem_channels)
        self.hourglasses = nn.ModuleList(Hourglass(depth, features) for _ in range(num_stacks))
        self.features = nn.ModuleList(
            nn.Sequential(ResidualModule(features, features), nn.Conv2d(features, features, 1),
                          nn.BatchNorm2d(features), nn.ReLU(inplace=True))
            for _ in range(num_stacks))
        self.heads = nn.ModuleList(nn.Conv2d(features, num_points, 1) for _ in range(num_stacks))
        self.merge_features = nn.ModuleList(nn.Conv2d(features, features, 1) for _ in range(num_stacks - 1))
        self.merge_heatmaps = nn.ModuleList(nn.Conv2d(num_points, features, 1) for _ in range(num_stacks - 1))

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        """(B, in_channels, H, W) -> list of (B, num_points, H/4, W/4), one per stack."""
        x = self.stem(x)
        outputs: list[torch.Tensor] = []
        for i in range(self.num_stacks):
            feat = self.features[i](self.hourglasses[i](x))
            heat = self.heads[i](feat)
            outputs.append(heat)
            if i < self.num_stacks - 1:
                x = x + self.merge_features[i](feat) + self.merge_heatmaps[i](heat)
        return outputs
