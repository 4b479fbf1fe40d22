"""A 3DFaceGAN-style baseline over VRN volumes: an image-to-shape generator and an autoencoder discriminator.

Sources and choices
-------------------
* From **3DFaceGAN** (Moschoglou et al., "3DFaceGAN: Adversarial Nets for 3D Face Representation, Generation, and
  Translation", IJCV 128 (2020), arXiv 1905.00307): a GAN for 3D face shapes whose DISCRIMINATOR IS AN
  AUTOENCODER of the shape (it is scored by how well it reconstructs its input), and a generator used both to
  translate a given input to its face shape (here: a face image to its volume) and to generate new faces from a
  noise vector.
* From **BEGAN** (Berthelot et al., "BEGAN: Boundary Equilibrium Generative Adversarial Networks", 2017,
  arXiv 1703.10717), which 3DFaceGAN's discriminator follows: the discriminator's encoder / decoder layout (3x3
  convolutions with ELU, no batch normalisation, stride-2 convolutions down and nearest-neighbour upsampling up, a
  fully connected bottleneck of ``hidden_dim`` units between a ``base x base`` feature map and the vector), the
  noise decoder's layout (the same decoder), and the discriminator's output being a reconstruction of its input
  (its losses and the equilibrium variable k are in :mod:`faceforge.losses.began`).
* **Our choices** (the 3DFaceGAN paper works on UV maps of a registered mesh; its layer sizes are not used here):
  the shape is the VRN volume (``D x S x S`` occupancy, the representation of :mod:`faceforge.models.vrn`, the
  depth levels as channels), so that evaluation produces a volume and a mesh and the VRN metrics apply
  unchanged. The image-conditioned generator is an image-to-volume network with skip connections, the VRN
  hourglass trunk (:class:`faceforge.models.vrn.VRN`, reused as it is): a first version mapped the image through a
  128-value code and a BEGAN decoder, and on the embedded data it could not leave the mean training volume (test
  IoU 0.631 against the mean volume's 0.646) -- the vector bottleneck discards where the face sits in the crop,
  which the hourglass's skip connections keep. Unconditional generation (noise -> shape) has its own small BEGAN
  decoder from ``z ~ N(0, I)`` (our prior) at ``S / output_stride``, upsampled bilinearly; it learns from the
  adversarial loss alone. Both return volume LOGITS like the VRN networks (sigmoid in the loss and before
  thresholding); the discriminator takes and returns occupancy PROBABILITIES in [0, 1] (a sigmoid on its last
  layer), real shapes being the binary ground truth and fake ones ``sigmoid(generator logits)``, pooled to
  ``S / output_stride``; the channel widths, the number of levels and the latent sizes are ours (see the
  arguments).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from faceforge.models.vrn import VRN

__all__ = ["FaceGAN", "ShapeAutoencoder", "ShapeDecoder", "ShapeEncoder", "ShapeGenerator"]


def _conv_elu(in_channels: int, out_channels: int, stride: int = 1) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(in_channels, out_channels, 3, stride=stride, padding=1), nn.ELU(inplace=True))


def _check_sizes(size: int, levels: int, where: str) -> int:
    if levels < 1:
        raise ValueError(f"{where}: levels must be >= 1, got {levels}")
    if size < 2 ** levels or size % (2 ** levels):
        raise ValueError(f"{where}: size {size} must be a multiple of 2**levels = {2 ** levels}")
    return size // (2 ** levels)


def _inner_levels(levels: int, output_stride: int, where: str) -> int:
    """Levels left below ``S / output_stride``; ``output_stride`` must be a power of 2 below ``2**levels``."""
    if output_stride < 1 or output_stride & (output_stride - 1) or output_stride >= 2 ** levels:
        raise ValueError(f"{where}: output_stride must be a power of 2 below 2**levels = {2 ** levels}, got "
                         f"{output_stride}")
    return levels - (output_stride.bit_length() - 1)


def _upsample(x: torch.Tensor, size: int) -> torch.Tensor:
    if x.shape[-1] == size:
        return x
    return F.interpolate(x, size=(size, size), mode="bilinear", align_corners=True)


class ShapeEncoder(nn.Module):
    """BEGAN-style encoder: (B, in_channels, S, S) -> (B, latent_dim).

    ``conv3x3 + ELU`` to ``channels``, then ``levels`` times (stride-2 ``conv3x3 + ELU`` widening by ``channels``,
    ``conv3x3 + ELU``), and a fully connected layer from the flattened ``(levels + 1) * channels x base x base``
    map (``base = S / 2**levels``) to ``latent_dim`` (no activation). (BEGAN convolves twice before each
    downsampling; convolving after it is our choice: it costs a third as much at the input resolution.)

    Args:
        in_channels: 3 for RGB images, D for volumes.
        size: spatial input size S (a multiple of ``2**levels``).
        channels: width step (BEGAN's n).
        levels: stride-2 downsamplings.
        latent_dim: output size.

    Raises:
        ValueError: on sizes that do not fit.
    """

    def __init__(self, in_channels: int, size: int, channels: int = 32, levels: int = 3,
                 latent_dim: int = 128) -> None:
        super().__init__()
        self.base = _check_sizes(size, levels, "ShapeEncoder")
        self.in_channels, self.size = in_channels, size
        layers: list[nn.Module] = [_conv_elu(in_channels, channels)]
        width = channels
        for i in range(levels):
            layers += [_conv_elu(width, channels * (i + 2), stride=2), _conv_elu(channels * (i + 2),
                                                                               channels * (i + 2))]
            width = channels * (i + 2)
        self.features = nn.Sequential(*layers)
        self.fc = nn.Linear(width * self.base * self.base, latent_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, in_channels, S, S) float -> (B, latent_dim) float."""
        if x.ndim != 4 or x.shape[1] != self.in_channels or tuple(x.shape[-2:]) != (self.size, self.size):
            raise ValueError(f"ShapeEncoder expects (B, {self.in_channels}, {self.size}, {self.size}), got "
                             f"{tuple(x.shape)}")
        return self.fc(self.features(x).flatten(1))


class ShapeDecoder(nn.Module):
    """BEGAN-style decoder: (B, latent_dim) -> (B, out_channels, S, S), raw outputs (no final activation).

    A fully connected layer to ``channels x base x base`` (``base = S / 2**levels``), then ``levels`` times
    (``conv3x3 + ELU`` twice, nearest-neighbour upsampling x2), ``conv3x3 + ELU`` twice and a ``conv3x3`` to
    ``out_channels``.

    Args:
        latent_dim: input size.
        out_channels: D (volume depth levels).
        size: output spatial size S.
        channels: width (BEGAN's n).
        levels: x2 upsamplings.

    Raises:
        ValueError: on sizes that do not fit.
    """

    def __init__(self, latent_dim: int, out_channels: int, size: int, channels: int = 32, levels: int = 3) -> None:
        super().__init__()
        self.base = _check_sizes(size, levels, "ShapeDecoder")
        self.latent_dim, self.channels = latent_dim, channels
        self.fc = nn.Linear(latent_dim, channels * self.base * self.base)
        self.blocks = nn.ModuleList([nn.Sequential(_conv_elu(channels, channels), _conv_elu(channels, channels))
                                     for _ in range(levels)])
        self.head = nn.Sequential(_conv_elu(channels, channels), _conv_elu(channels, channels),
                                  nn.Conv2d(channels, out_channels, 3, padding=1))

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        """(B, latent_dim) float -> (B, out_channels, S, S) float (unbounded)."""
        if h.ndim != 2 or h.shape[1] != self.latent_dim:
            raise ValueError(f"ShapeDecoder expects (B, {self.latent_dim}), got {tuple(h.shape)}")
        x = self.fc(h).view(h.shape[0], self.channels, self.base, self.base)
        for block in self.blocks:
            x = F.interpolate(block(x), scale_factor=2, mode="nearest")
        return self.head(x)


class ShapeGenerator(nn.Module):
    """The generator: a face image, or a noise vector, to volume logits.

    * Conditional (3DFaceGAN's translation use; the network is our choice): ``image -> VRN trunk`` (a
      :class:`faceforge.models.vrn.VRN`: stem to S/4, ``stacks`` residual hourglasses with skip connections, a
      1x1 head to D channels, bilinear upsampling to S) ``-> (B, D, S, S) logits``.
    * Unconditional (3DFaceGAN's generation use): ``z ~ N(0, I)`` (B, latent_dim) ``->`` a BEGAN
      :class:`ShapeDecoder` at ``S / output_stride`` ``->`` bilinear upsampling (align_corners=True) ``->``
      (B, D, S, S) logits. A separate decoder is our choice: the image network has no vector code to replace.

    Args:
        image_size: S, side of the (square) input image and of the output volume (a multiple of 8 and of
            ``2**levels``).
        volume_depth: D.
        in_channels: image channels (3).
        features: channels of the VRN trunk.
        stacks: its residual hourglass stacks.
        depth: its hourglass depth.
        stem_channels: its stem's ``(c1, c2)``.
        latent_dim: size of the noise vector.
        noise_channels: width of the noise decoder.
        levels: x2 upsamplings of the noise decoder's layout (it works at ``S / output_stride``, so it upsamples
            ``levels - log2(output_stride)`` times from ``S / 2**levels``).
        output_stride: the noise decoder's output is S / output_stride (a power of 2 below ``2**levels``).

    Shapes:
        ``forward(images (B, in_channels, S, S) float in [0, 1])`` or ``forward(z=(B, latent_dim))`` ->
        (B, D, S, S) float LOGITS.

    Raises:
        ValueError: bad sizes, or neither / both of ``images`` and ``z`` given.
    """

    def __init__(self, image_size: int = 64, volume_depth: int = 64, in_channels: int = 3, features: int = 64,
                 stacks: int = 1, depth: int = 2, stem_channels: tuple[int, int] = (16, 32), latent_dim: int = 128,
                 noise_channels: int = 32, levels: int = 3, output_stride: int = 4) -> None:
        super().__init__()
        inner = _inner_levels(levels, output_stride, "ShapeGenerator")
        _check_sizes(image_size, levels, "ShapeGenerator")
        if image_size % 8:
            raise ValueError(f"ShapeGenerator: image_size {image_size} must be a multiple of 8 (the VRN trunk)")
        self.image_size, self.volume_depth, self.latent_dim = image_size, volume_depth, latent_dim
        self.in_channels = in_channels
        self.trunk = VRN(num_stacks=stacks, features=features, depth=depth, out_depth=volume_depth,
                         in_channels=in_channels, output_size=image_size, stem_channels=tuple(stem_channels))
        self.noise_decoder = ShapeDecoder(latent_dim, volume_depth, image_size // output_stride, noise_channels,
                                          inner)

    def forward(self, images: torch.Tensor | None = None, z: torch.Tensor | None = None) -> torch.Tensor:
        """Volume logits from images (conditional) or from noise codes (unconditional); see the class."""
        if (images is None) == (z is None):
            raise ValueError("ShapeGenerator needs exactly one of images and z")
        if images is not None:
            if images.ndim != 4 or tuple(images.shape[1:]) != (self.in_channels, self.image_size, self.image_size):
                raise ValueError(f"ShapeGenerator expects images (B, {self.in_channels}, {self.image_size}, "
                                 f"{self.image_size}), got {tuple(images.shape)}")
            return self.trunk(images)
        return _upsample(self.noise_decoder(z), self.image_size)


class ShapeAutoencoder(nn.Module):
    """The discriminator: an autoencoder of occupancy volumes (BEGAN / 3DFaceGAN).

    It works at ``s = S / output_stride``: :meth:`pool` averages a (B, D, S, S) volume over
    ``output_stride x output_stride`` blocks (an occupancy fraction per block, in [0, 1]), and
    ``forward: (B, D, s, s) -> ShapeEncoder -> h (hidden_dim) -> ShapeDecoder -> sigmoid -> (B, D, s, s)``
    reconstructs it. Its "score" of a shape ``v`` is ``autoencoder_loss(D(pool(v)), pool(v))``
    (:func:`faceforge.losses.began.autoencoder_loss`). Working below the full resolution is our choice (cost: the
    supervised loss of the generator carries the detail).

    Args:
        volume_size: S.
        volume_depth: D.
        channels: width.
        levels: downsamplings / upsamplings.
        hidden_dim: bottleneck size (BEGAN's h).
        output_stride: the autoencoder works at S / output_stride (a power of 2 below ``2**levels``).
    """

    def __init__(self, volume_size: int = 64, volume_depth: int = 64, channels: int = 32, levels: int = 3,
                 hidden_dim: int = 64, output_stride: int = 4) -> None:
        super().__init__()
        inner = _inner_levels(levels, output_stride, "ShapeAutoencoder")
        self.volume_size, self.volume_depth, self.output_stride = volume_size, volume_depth, output_stride
        _check_sizes(volume_size, levels, "ShapeAutoencoder")
        self.encoder = ShapeEncoder(volume_depth, volume_size // output_stride, channels, inner, hidden_dim)
        self.decoder = ShapeDecoder(hidden_dim, volume_depth, volume_size // output_stride, channels, inner)

    def pool(self, volume: torch.Tensor) -> torch.Tensor:
        """(B, D, S, S) occupancy in [0, 1] (bool accepted) -> (B, D, s, s) float block means, the input of
        :meth:`forward`.

        Raises:
            ValueError: on another shape.
        """
        expected = (self.volume_depth, self.volume_size, self.volume_size)
        if volume.ndim != 4 or tuple(volume.shape[1:]) != expected:
            raise ValueError(f"ShapeAutoencoder expects volumes (B, {', '.join(map(str, expected))}), got "
                             f"{tuple(volume.shape)}")
        volume = volume.float() if not volume.is_floating_point() else volume
        return F.avg_pool2d(volume, self.output_stride) if self.output_stride > 1 else volume

    def forward(self, pooled: torch.Tensor) -> torch.Tensor:
        """(B, D, s, s) float in [0, 1] (from :meth:`pool`) -> (B, D, s, s) float reconstruction in [0, 1]."""
        return torch.sigmoid(self.decoder(self.encoder(pooled)))


class FaceGAN(nn.Module):
    """The two players in one module (one checkpointed network): ``generator`` and ``discriminator``.

    Calling it runs the generator only (so it slots in where a VRN does): ``net(images)`` -> (B, D, S, S) volume
    logits; :meth:`sample` decodes noise. The task (:class:`faceforge.tasks.facegan.FaceGANTask`) trains both.

    Args:
        image_size: S (input image side = volume side; a multiple of 8 and of ``2**levels``).
        volume_depth: D.
        in_channels: image channels.
        generator_features, generator_stacks, generator_depth, generator_stem_channels: the generator's VRN trunk
            (trunk channels, residual hourglass stacks, hourglass depth, stem ``(c1, c2)``).
        noise_channels: width of the generator's noise decoder.
        discriminator_channels: width of the discriminator.
        levels: downsamplings / upsamplings of the BEGAN encoder / decoder layout (discriminator, noise decoder).
        latent_dim: noise size of unconditional sampling.
        hidden_dim: discriminator bottleneck.
        output_stride: the discriminator and the noise decoder work at S / output_stride.

    Shapes:
        (B, in_channels, S, S) float in [0, 1] -> (B, D, S, S) float LOGITS.

    Raises:
        ValueError: on sizes that do not fit.
    """

    def __init__(self, image_size: int = 64, volume_depth: int = 64, in_channels: int = 3,
                 generator_features: int = 64, generator_stacks: int = 1, generator_depth: int = 2,
                 generator_stem_channels: tuple[int, int] = (16, 32), noise_channels: int = 32,
                 discriminator_channels: int = 32, levels: int = 3, latent_dim: int = 128, hidden_dim: int = 64,
                 output_stride: int = 4) -> None:
        super().__init__()
        self.in_channels = in_channels
        self.generator = ShapeGenerator(image_size, volume_depth, in_channels, generator_features, generator_stacks,
                                        generator_depth, tuple(generator_stem_channels), latent_dim, noise_channels,
                                        levels, output_stride)
        self.discriminator = ShapeAutoencoder(image_size, volume_depth, discriminator_channels, levels, hidden_dim,
                                              output_stride)

    @property
    def latent_dim(self) -> int:
        """Size of the generator's code / noise vector."""
        return self.generator.latent_dim

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """(B, in_channels, S, S) float -> (B, D, S, S) volume logits (the generator, conditional)."""
        return self.generator(images)

    def sample(self, num: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """Unconditional generation: ``num`` new shapes decoded from ``z ~ N(0, I)``.

        Args:
            num: samples (>= 1).
            generator: torch random generator for z (None: the global one).

        Returns:
            (num, D, S, S) float volume LOGITS.
        """
        if num < 1:
            raise ValueError(f"num must be >= 1, got {num}")
        device = next(self.parameters()).device
        z = torch.randn(num, self.latent_dim, generator=generator, device="cpu").to(device)
        return self.generator(z=z)
