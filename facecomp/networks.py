"""The networks, defined once and shared by inference and training.

ResnetGenerator is the CycleGAN generator (Zhu et al. 2017, appendix 7.2): c7s1-ngf, d(2ngf),
d(4ngf), n_blocks x R(4ngf), u(2ngf), u(ngf), c7s1-3, with reflection padding, InstanceNorm and a
final tanh. Its upsampling ``u`` is the reference's stride-2 transposed convolution
(``upsample="transpose"``) or, with ``upsample="resize"``, a nearest-neighbour x2 resize followed
by a 3x3 convolution (Odena et al. 2016, "Deconvolution and checkerboard artifacts"): every output
pixel then sees the same kernel, so the generator cannot paint the checkerboard texture that
transposed convolutions are prone to, for ~20 % more FLOPs. PatchDiscriminator is the 70x70
PatchGAN (C64-C128-C256-C512 for n_layers=3).

Convention: networks take and return float NCHW tensors in [-1, 1], RGB.

Architectures are built by name through :func:`build`, so a checkpoint that records
``architecture`` and ``arch_args`` can be rebuilt without pickle.
"""

from __future__ import annotations

from typing import Any, Callable

import torch
from torch import nn


def _norm(channels: int) -> nn.Module:
    """Instance normalisation (no affine, no running stats).

    Written as GroupNorm with one group per channel: the same function (equal to
    ``nn.InstanceNorm2d(affine=False)`` within float rounding, no parameters, so checkpoints are
    unchanged), but PyTorch's GroupNorm has a channels_last CPU kernel, while InstanceNorm copies
    channels_last input to contiguous and back; that copy was a fifth of the generator's time.
    """
    return nn.GroupNorm(channels, channels, affine=False)


#: ResnetGenerator's upsampling layers: the reference's transposed conv, or resize + conv.
UPSAMPLE_MODES = ("transpose", "resize")


class ResnetBlock(nn.Module):
    """Two reflection-padded 3x3 convolutions with InstanceNorm and a skip connection."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.block = nn.Sequential(
            nn.ReflectionPad2d(1), nn.Conv2d(dim, dim, 3), _norm(dim), nn.ReLU(True),
            nn.ReflectionPad2d(1), nn.Conv2d(dim, dim, 3), _norm(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.block(x)


class ResnetGenerator(nn.Module):
    """CycleGAN ResNet generator; input sides must be multiples of 4."""

    def __init__(self, in_channels: int = 3, out_channels: int = 3, ngf: int = 64,
                 n_blocks: int = 9, upsample: str = "transpose") -> None:
        super().__init__()
        if ngf < 1 or n_blocks < 0:
            raise ValueError(f"ngf must be >= 1 and n_blocks >= 0, got {ngf}, {n_blocks}")
        if upsample not in UPSAMPLE_MODES:
            raise ValueError(f"upsample must be one of {UPSAMPLE_MODES}, got {upsample!r}")
        layers: list[nn.Module] = [nn.ReflectionPad2d(3), nn.Conv2d(in_channels, ngf, 7),
                                   _norm(ngf), nn.ReLU(True)]
        for mult in (1, 2):  # two stride-2 downsamplings
            c = ngf * mult
            layers += [nn.Conv2d(c, 2 * c, 3, stride=2, padding=1), _norm(2 * c), nn.ReLU(True)]
        layers += [ResnetBlock(4 * ngf) for _ in range(n_blocks)]
        for mult in (4, 2):  # two stride-2 upsamplings
            c = ngf * mult
            if upsample == "transpose":
                layers += [nn.ConvTranspose2d(c, c // 2, 3, stride=2, padding=1,
                                              output_padding=1)]
            else:
                layers += [nn.Upsample(scale_factor=2, mode="nearest"),
                           nn.Conv2d(c, c // 2, 3, padding=1)]
            layers += [_norm(c // 2), nn.ReLU(True)]
        layers += [nn.ReflectionPad2d(3), nn.Conv2d(ngf, out_channels, 7), nn.Tanh()]
        self.model = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)


class PatchDiscriminator(nn.Module):
    """PatchGAN discriminator; with n_layers=3 each output judges a 70x70 input patch."""

    def __init__(self, in_channels: int = 3, ndf: int = 64, n_layers: int = 3) -> None:
        super().__init__()
        layers: list[nn.Module] = [nn.Conv2d(in_channels, ndf, 4, stride=2, padding=1),
                                   nn.LeakyReLU(0.2, True)]
        mult = 1
        for n in range(1, n_layers + 1):
            prev, mult = mult, min(2 ** n, 8)
            stride = 2 if n < n_layers else 1
            layers += [nn.Conv2d(ndf * prev, ndf * mult, 4, stride=stride, padding=1),
                       _norm(ndf * mult), nn.LeakyReLU(0.2, True)]
        layers += [nn.Conv2d(ndf * mult, 1, 4, stride=1, padding=1)]
        self.model = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)


ARCHITECTURES: dict[str, Callable[..., nn.Module]] = {
    "resnet_generator": ResnetGenerator,
    "patch_discriminator": PatchDiscriminator,
}


def register(name: str, factory: Callable[..., nn.Module]) -> None:
    """Make an architecture buildable by name (tests and plug-ins use this)."""
    ARCHITECTURES[name] = factory


def build(architecture: str, **arch_args: Any) -> nn.Module:
    """Build a network by its registered name; raises KeyError or TypeError on bad input."""
    if architecture not in ARCHITECTURES:
        raise KeyError(f"unknown architecture {architecture!r}; known: {sorted(ARCHITECTURES)}")
    return ARCHITECTURES[architecture](**arch_args)
