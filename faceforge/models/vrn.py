"""Volumetric Regression Networks (Jackson et al., "Large Pose 3D Face Reconstruction from a Single Image via
Direct Volumetric CNN Regression", ICCV 2017).

* :class:`VRN`: VRN (unguided), built exactly as the authors' released Torch7 model (``DESIGN.md``, "VRN as
  released"): at the defaults it has 19,184,968 trainable parameters and 273 BatchNorm layers, so the released
  ``vrn-unguided.t7`` weights can be imported. A 192x192 RGB image gives 200 x 192 x 192 logits (z, y, x): a
  200 x 48 x 48 prediction upsampled bilinearly (align_corners=True).
* :class:`VRNGuided`: VRN - Guided (Sec. 3.2): a stacked-hourglass landmark network predicts 68 heatmaps that are
  stacked with the RGB image as the input (3 + 68 channels) of a reconstruction VRN. In training the
  ground-truth heatmaps are given instead (Jackson's thesis); at test time the predicted ones are used.
* :class:`VRNMultitask`: VRN - Multitask (Sec. 3.2): a shared trunk forks into a volume branch and a 68-heatmap
  branch.
* :func:`gaussian_heatmaps`: 2D Gaussian landmark heatmaps (targets and VRN-Guided inputs).

Every network returns LOGITS: the sigmoid of the paper's sigmoid cross-entropy loss (Sec. 3.3, Eq. 1) belongs in
the loss (``binary_cross_entropy_with_logits``, numerically stable) and, at inference, before thresholding.
"""
from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from faceforge.models.hourglass import HourglassStem, StackedHourglass, VRNHourglass

__all__ = [
    "VRN",
    "GuidedOutput",
    "MultitaskOutput",
    "VRNGuided",
    "VRNMultitask",
    "VRNStack",
    "decode_heatmaps",
    "gaussian_heatmaps",
    "image_to_heatmap_points",
]


def _conv_bn_relu(in_channels: int, out_channels: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(in_channels, out_channels, 1), nn.BatchNorm2d(out_channels), nn.ReLU(inplace=True))


class VRNStack(nn.Module):
    """One residual stack of the released VRN: ``x + body(x)``.

    ``body = VRNHourglass -> (conv1x1 + BN + ReLU) -> (conv1x1 + BN + ReLU)``.

    Args:
        features: channels.
        depth: hourglass depth.

    Shapes:
        (B, features, H, W) -> (B, features, H, W).
    """

    def __init__(self, features: int = 256, depth: int = 4) -> None:
        super().__init__()
        self.hourglass = VRNHourglass(depth, features)
        self.lin1 = _conv_bn_relu(features, features)
        self.lin2 = _conv_bn_relu(features, features)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, features, H, W) -> (B, features, H, W)."""
        return x + self.lin2(self.lin1(self.hourglass(x)))


class _VolumeHead(nn.Module):
    """conv1x1 + BN + ReLU, conv1x1 to ``out_channels``, bilinear upsampling (align_corners=True)."""

    def __init__(self, features: int, out_channels: int, output_size: int | None) -> None:
        super().__init__()
        self.lin = _conv_bn_relu(features, features)
        self.out = nn.Conv2d(features, out_channels, 1)
        self.output_size = output_size

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.out(self.lin(x))
        size = (self.output_size, self.output_size) if self.output_size else (4 * x.shape[-2], 4 * x.shape[-1])
        return F.interpolate(x, size=size, mode="bilinear", align_corners=True)


class VRN(nn.Module):
    """VRN (unguided), as released by the authors (Jackson et al., ICCV 2017, Sec. 3.1-3.2; Torch7 model).

    ``HourglassStem`` (conv 7x7/2 (in -> 64) + BN + ReLU, Res(64 -> 128), max-pool 2, Res(128 -> 128),
    Res(128 -> features)) -> ``num_stacks`` residual :class:`VRNStack` s -> head (conv1x1 + BN + ReLU, conv1x1 to
    ``out_depth``) -> bilinear upsampling (align_corners=True) to ``output_size``.

    Args:
        num_stacks: residual hourglass stacks (2 in the release).
        features: channels of the trunk (256).
        depth: hourglass depth (4).
        out_depth: output channels = volume depth z (200).
        in_channels: input channels (3 RGB; 71 for VRN-Guided's reconstruction network).
        output_size: spatial size of the output volume (192 = 4 x 48 for 192 inputs); None upsamples x4.
        stem_channels: ``(c1, c2)`` of the stem ((64, 128) in the release).

    Shapes:
        (B, in_channels, H, W) float -> (B, out_depth, output_size, output_size) float LOGITS (apply a sigmoid for
        occupancy probabilities). H, W divisible by 8 (the trunk at H/4 pools once more).
    """

    def __init__(self, num_stacks: int = 2, features: int = 256, depth: int = 4, out_depth: int = 200,
                 in_channels: int = 3, output_size: int | None = 192,
                 stem_channels: tuple[int, int] = (64, 128)) -> None:
        super().__init__()
        if num_stacks < 1:
            raise ValueError(f"num_stacks must be >= 1, got {num_stacks}")
        self.in_channels = in_channels
        self.out_depth = out_depth
        self.output_size = output_size
        self.stem = HourglassStem(in_channels, features, stem_channels)
        self.stacks = nn.Sequential(*[VRNStack(features, depth) for _ in range(num_stacks)])
        self.head = _VolumeHead(features, out_depth, output_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, in_channels, H, W) -> (B, out_depth, output_size, output_size) logits."""
        if x.ndim != 4 or x.shape[1] != self.in_channels:
            raise ValueError(f"VRN expects (B, {self.in_channels}, H, W), got {tuple(x.shape)}")
        return self.head(self.stacks(self.stem(x)))


class GuidedOutput(NamedTuple):
    """Output of :class:`VRNGuided`.

    Attributes:
        volume: (B, out_depth, S, S) volume logits.
        heatmaps: the landmark network's per-stack heatmaps (B, 68, H/4, W/4), or None when heatmaps were given.
    """

    volume: torch.Tensor
    heatmaps: list[torch.Tensor] | None


class VRNGuided(nn.Module):
    """VRN - Guided (Jackson et al., ICCV 2017, Sec. 3.2).

    A landmark network (a :class:`~faceforge.models.hourglass.StackedHourglass`, 2 stacks in the paper) predicts
    68 heatmaps at a quarter of the image resolution; 68 guide heatmaps at the image resolution are stacked with
    the image as the input of the reconstruction network (a :class:`VRN` with ``in_channels = image channels +
    68``). Per Jackson's thesis the reconstruction network is trained with ground-truth guides
    (:func:`gaussian_heatmaps` of the true landmarks, sigma ``guide_sigma`` = 1 px at the image resolution), given
    through ``landmark_heatmaps``; at test time the guides are predicted.

    A predicted guide has exactly the form of a ground-truth one: the landmarks are decoded from the last
    heatmap stack (:func:`decode_heatmaps`, sub-pixel arg-max, in image pixels) and rendered as Gaussians of
    sigma ``guide_sigma`` at the image resolution. (Upsampling the quarter-resolution heatmaps instead gives blobs
    four times wider with other peak values: a reconstruction network trained on sharp ground-truth guides then
    sees inputs it never met, and scored below the mean training volume on the embedded data.) The decoding is an
    arg-max, so no gradient reaches the landmark network through the guide: it learns from the heatmap loss, as
    in the paper, where it is trained on its own.

    Args:
        landmark_net: network mapping (B, C, H, W) images to a list of (B, 68, h, w) heatmaps (last = prediction).
        vrn: reconstruction network whose ``in_channels`` is C + the landmark network's ``num_points``.
        guide_sigma: standard deviation of the guide Gaussians, pixels at the image resolution (1).

    Raises:
        ValueError: if the channel counts do not fit.
    """

    def __init__(self, landmark_net: StackedHourglass, vrn: VRN, guide_sigma: float = 1.0) -> None:
        super().__init__()
        if not guide_sigma > 0:
            raise ValueError(f"VRNGuided: guide_sigma must be > 0, got {guide_sigma}")
        num_points = int(getattr(landmark_net, "num_points", 68))
        image_channels = int(getattr(landmark_net, "in_channels", vrn.in_channels - num_points))
        if vrn.in_channels != image_channels + num_points:
            raise ValueError(f"VRNGuided: the reconstruction VRN needs in_channels = {image_channels} + "
                             f"{num_points} = {image_channels + num_points}, got {vrn.in_channels}")
        self.landmark_net = landmark_net
        self.vrn = vrn
        self.num_points = num_points
        self.image_channels = image_channels
        self.guide_sigma = float(guide_sigma)

    def guide_from_heatmaps(self, heatmaps: torch.Tensor, image_size: tuple[int, int]) -> torch.Tensor:
        """Guide heatmaps (B, K, H, W) at the image resolution from predicted (B, K, h, w) heatmaps.

        The landmarks are decoded with :func:`decode_heatmaps` (image pixels) and rendered with
        :func:`gaussian_heatmaps` (sigma ``guide_sigma``): the same form as a ground-truth guide.
        """
        points = decode_heatmaps(heatmaps, image_size)
        return gaussian_heatmaps(points, image_size, sigma=self.guide_sigma).to(heatmaps.dtype)

    def forward(self, image: torch.Tensor, landmark_heatmaps: torch.Tensor | None = None) -> GuidedOutput:
        """Reconstruct a volume, guided by given or predicted landmark heatmaps.

        Args:
            image: (B, C, H, W) float image batch.
            landmark_heatmaps: (B, 68, H, W) float heatmaps at the image resolution (ground truth in training),
                or None to predict them with the landmark network.

        Returns:
            GuidedOutput(volume logits (B, out_depth, S, S), predicted heatmaps list or None).

        Raises:
            ValueError: if the given heatmaps do not match the image's batch and size.
        """
        if image.ndim != 4 or image.shape[1] != self.image_channels:
            raise ValueError(f"VRNGuided expects images (B, {self.image_channels}, H, W), got {tuple(image.shape)}")
        predicted: list[torch.Tensor] | None = None
        if landmark_heatmaps is None:
            predicted = self.landmark_net(image)
            heat = self.guide_from_heatmaps(predicted[-1], (int(image.shape[-2]), int(image.shape[-1])))
        else:
            expected = (image.shape[0], self.num_points, *image.shape[-2:])
            if tuple(landmark_heatmaps.shape) != expected:
                raise ValueError(f"landmark_heatmaps must be {expected} (batch, points, image H, W), got "
                                 f"{tuple(landmark_heatmaps.shape)}")
            heat = landmark_heatmaps.to(image.dtype)
        return GuidedOutput(self.vrn(torch.cat([image, heat], dim=1)), predicted)


class MultitaskOutput(NamedTuple):
    """Output of :class:`VRNMultitask`.

    Attributes:
        volume: (B, out_depth, S, S) volume logits.
        heatmaps: (B, num_points, H/4, W/4) landmark heatmaps (raw regression outputs).
    """

    volume: torch.Tensor
    heatmaps: torch.Tensor


class VRNMultitask(nn.Module):
    """VRN - Multitask (Jackson et al., ICCV 2017, Sec. 3.2, Fig. 3).

    A shared trunk (stem + ``shared_stacks`` :class:`VRNStack` s; one hourglass in the paper) forks into a volume
    branch (``branch_stacks`` stacks + the VRN volume head) and a landmark branch (``branch_stacks`` stacks +
    conv1x1 + BN + ReLU + conv1x1 to ``num_points`` heatmaps at the trunk resolution H/4). Both branches use the
    released-VRN hourglass.

    Args:
        shared_stacks: stacks of the shared trunk.
        branch_stacks: stacks of each branch.
        features: channels.
        depth: hourglass depth.
        out_depth: volume depth (200).
        num_points: landmark heatmaps (68).
        in_channels: image channels.
        output_size: spatial size of the volume (None: 4 x trunk size).
        stem_channels: ``(c1, c2)`` of the stem.

    Shapes:
        (B, in_channels, H, W) -> MultitaskOutput(volume (B, out_depth, S, S) logits, heatmaps (B, num_points,
        H/4, W/4)).
    """

    def __init__(self, shared_stacks: int = 1, branch_stacks: int = 1, features: int = 256, depth: int = 4,
                 out_depth: int = 200, num_points: int = 68, in_channels: int = 3, output_size: int | None = 192,
                 stem_channels: tuple[int, int] = (64, 128)) -> None:
        super().__init__()
        if shared_stacks < 0 or branch_stacks < 1:
            raise ValueError(f"need shared_stacks >= 0 and branch_stacks >= 1, got {shared_stacks}, "
                             f"{branch_stacks}")
        self.in_channels = in_channels
        self.num_points = num_points
        self.stem = HourglassStem(in_channels, features, stem_channels)
        self.shared = nn.Sequential(*[VRNStack(features, depth) for _ in range(shared_stacks)])
        self.volume_branch = nn.Sequential(*[VRNStack(features, depth) for _ in range(branch_stacks)])
        self.volume_head = _VolumeHead(features, out_depth, output_size)
        self.landmark_branch = nn.Sequential(*[VRNStack(features, depth) for _ in range(branch_stacks)])
        self.landmark_head = nn.Sequential(_conv_bn_relu(features, features), nn.Conv2d(features, num_points, 1))

    def forward(self, x: torch.Tensor) -> MultitaskOutput:
        """(B, in_channels, H, W) -> MultitaskOutput(volume logits, heatmaps)."""
        if x.ndim != 4 or x.shape[1] != self.in_channels:
            raise ValueError(f"VRNMultitask expects (B, {self.in_channels}, H, W), got {tuple(x.shape)}")
        trunk = self.shared(self.stem(x))
        volume = self.volume_head(self.volume_branch(trunk))
        heatmaps = self.landmark_head(self.landmark_branch(trunk))
        return MultitaskOutput(volume, heatmaps)


def gaussian_heatmaps(points: torch.Tensor, size: int | tuple[int, int], sigma: float = 1.0) -> torch.Tensor:
    """Unnormalised 2D Gaussian heatmaps centred on landmarks.

    ``H[b, k, i, j] = exp(-((j - x_bk)^2 + (i - y_bk)^2) / (2 sigma^2))``: pixel ``(row i, column j)`` has its centre
    at coordinates ``(x = j, y = i)``, so a point with integer coordinates peaks (value 1) exactly on that pixel.
    Points with a non-finite coordinate (invisible / missing) give all-zero maps. Points must already be in the
    heatmap's pixel frame (scale image coordinates by ``heatmap_size / image_size`` first).

    Args:
        points: (B, K, 2) or (K, 2) float pixel coordinates (x, y).
        size: heatmap size ``S`` or ``(H, W)``.
        sigma: standard deviation in pixels (> 0; 1 in VRN-Guided).

    Returns:
        (B, K, H, W) (or (K, H, W)) heatmaps in [0, 1], dtype of ``points`` if floating else float32.

    Raises:
        ValueError: on a bad shape or sigma.
    """
    if sigma <= 0:
        raise ValueError(f"sigma must be > 0, got {sigma}")
    squeeze = points.ndim == 2
    pts = points.unsqueeze(0) if squeeze else points
    if pts.ndim != 3 or pts.shape[-1] != 2:
        raise ValueError(f"points must be (B, K, 2) or (K, 2), got {tuple(points.shape)}")
    h, w = (size, size) if isinstance(size, int) else (int(size[0]), int(size[1]))
    dtype = pts.dtype if pts.is_floating_point() else torch.float32
    pts = pts.to(dtype)
    valid = torch.isfinite(pts).all(dim=-1)  # (B, K)
    safe = torch.where(valid.unsqueeze(-1), pts, torch.zeros_like(pts))
    xs = torch.arange(w, dtype=dtype, device=pts.device)
    ys = torch.arange(h, dtype=dtype, device=pts.device)
    gx = torch.exp(-((xs.view(1, 1, w) - safe[..., 0:1]) ** 2) / (2 * sigma ** 2))  # (B, K, W)
    gy = torch.exp(-((ys.view(1, 1, h) - safe[..., 1:2]) ** 2) / (2 * sigma ** 2))  # (B, K, H)
    maps = gy.unsqueeze(-1) * gx.unsqueeze(-2)  # separable Gaussian: (B, K, H, W)
    maps = maps * valid.to(dtype)[..., None, None]
    return maps.squeeze(0) if squeeze else maps


def image_to_heatmap_points(points: torch.Tensor, image_size: tuple[int, int],
                            heatmap_size: tuple[int, int]) -> torch.Tensor:
    """Map (..., 2) image pixel coordinates to a heatmap's pixel frame (pixel centres at integers on both sides).

    ``x_h = (x + 0.5) * w / W - 0.5`` (and the same for y): pixel ``j`` of a heatmap ``r = W / w`` times smaller
    covers image pixels ``r j .. r j + r - 1``, whose centre is ``r j + (r - 1) / 2``.
    """
    sy = heatmap_size[0] / image_size[0]
    sx = heatmap_size[1] / image_size[1]
    scale = torch.tensor([sx, sy], dtype=points.dtype, device=points.device)
    return (points + 0.5) * scale - 0.5


def decode_heatmaps(heatmaps: torch.Tensor, image_size: tuple[int, int] | None = None) -> torch.Tensor:
    """Landmark positions from heatmaps: arg-max, refined by a parabola through the two neighbours per axis.

    The sub-pixel offset along x is ``0.5 (h[x-1] - h[x+1]) / (h[x-1] - 2 h[x] + h[x+1])`` clamped to +-0.5 (0 at
    the border or where the curvature is not negative); the same along y.

    Args:
        heatmaps: (B, K, h, w) float heatmaps.
        image_size: ``(H, W)`` of the image the heatmaps belong to; if given, the points are mapped to its pixels
            (inverse of :func:`image_to_heatmap_points`), else they stay in heatmap pixels.

    Returns:
        (B, K, 2) float32 points (x, y).

    Raises:
        ValueError: if ``heatmaps`` is not 4-D.
    """
    if heatmaps.ndim != 4:
        raise ValueError(f"heatmaps must be (B, K, h, w), got {tuple(heatmaps.shape)}")
    hm = heatmaps.detach().float()
    b, k, h, w = hm.shape
    flat = hm.reshape(b, k, h * w)
    idx = flat.argmax(dim=-1)
    iy, ix = idx // w, idx % w

    def at(yy: torch.Tensor, xx: torch.Tensor) -> torch.Tensor:
        return flat.gather(-1, (yy.clamp(0, h - 1) * w + xx.clamp(0, w - 1)).unsqueeze(-1)).squeeze(-1)

    centre = at(iy, ix)

    def offset(minus: torch.Tensor, plus: torch.Tensor, inside: torch.Tensor) -> torch.Tensor:
        denom = minus - 2.0 * centre + plus
        ok = inside & (denom < -1e-12)
        off = torch.where(ok, 0.5 * (minus - plus) / torch.where(ok, denom, torch.ones_like(denom)),
                          torch.zeros_like(denom))
        return off.clamp(-0.5, 0.5)

    dx = offset(at(iy, ix - 1), at(iy, ix + 1), (ix > 0) & (ix < w - 1))
    dy = offset(at(iy - 1, ix), at(iy + 1, ix), (iy > 0) & (iy < h - 1))
    pts = torch.stack([ix.float() + dx, iy.float() + dy], dim=-1)
    if image_size is not None:
        scale = torch.tensor([image_size[1] / w, image_size[0] / h], dtype=pts.dtype, device=pts.device)
        pts = (pts + 0.5) * scale - 0.5
    return pts
