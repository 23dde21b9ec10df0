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
    """Instance normalisation (no affine, no running stats): an :class:`InstanceNorm`."""
    return InstanceNorm(channels)


class InstanceNorm(nn.GroupNorm):
    """Instance normalisation (no affine, no running stats), written as GroupNorm with one group
    per channel: the same function (equal to ``nn.InstanceNorm2d(affine=False)`` within float
    rounding, no parameters, so checkpoints are unchanged), but PyTorch's GroupNorm has a
    channels_last CPU kernel, while InstanceNorm copies channels_last input to contiguous and
    back; that copy was a fifth of the generator's time.

    One image under autograd on the CPU (the batch-1 passes of a training step) goes through
    batch normalisation's kernel instead: with one image its batch statistics are the
    instance's, and its channels_last backward is 3-4x faster than GroupNorm's (2-3.5 % off a
    128 px ResNet-9 training step). Inference keeps GroupNorm, whose forward is the faster one.
    """

    def __init__(self, channels: int) -> None:
        super().__init__(channels, channels, affine=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if (x.shape[0] == 1 and x.requires_grad and x.device.type == "cpu"
                and x.shape[2] * x.shape[3] > 1):
            return nn.functional.batch_norm(x, None, None, training=True, eps=self.eps)
        return super().forward(x)


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


class UpsampleConv(nn.Module):
    """``Upsample(x2, nearest)`` then a 3x3 convolution (padding 1), computed on the small input.

    Nearest upsampling repeats each pixel 2x2, so each of the four output phases (row and column
    parity) is a 2x2 convolution of the small input whose taps are sums of the 3x3 kernel's.
    One 2x2 convolution with 4x the output channels computes all four on the zero-padded small
    input, and four strided copies interleave them: the same function within float rounding,
    for 4/9 of the multiply-adds and without the upsampled tensor.
    """

    # the 3x3 taps that land on small-input offset p (rows of the 2x3 matrix) for parity a
    _TAPS = ((1.0, 0.0, 0.0), (0.0, 1.0, 1.0)), ((1.0, 1.0, 0.0), (0.0, 0.0, 1.0))

    def __init__(self, conv: nn.Conv2d) -> None:
        super().__init__()
        w = conv.weight.detach()
        o, i = w.shape[:2]
        taps = torch.tensor(self._TAPS, dtype=w.dtype, device=w.device)
        k = torch.einsum("apy,bqx,oiyx->aboipq", taps, taps, w).reshape(4 * o, i, 2, 2)
        self.conv = nn.Conv2d(i, 4 * o, 2, padding=1, bias=conv.bias is not None).to(w.device)
        with torch.no_grad():
            self.conv.weight.copy_(k)
            if conv.bias is not None:
                self.conv.bias.copy_(conv.bias.detach().repeat(4))
        self.out_channels = o

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, _, h, w = x.shape
        o = self.out_channels
        z = self.conv(x)  # (n, 4o, h+1, w+1): phase (a, b) of output (y, x) is z[.., y+a, x+b]
        out = torch.empty((n, o, 2 * h, 2 * w), dtype=z.dtype, device=z.device,
                          memory_format=torch.channels_last)
        for a in (0, 1):
            for b in (0, 1):
                k = 2 * a + b
                out[:, :, a::2, b::2] = z[:, k * o:(k + 1) * o, a:a + h, b:b + w]
        return out


class SpaceToDepthConv(nn.Module):
    """A stride-1 unpadded KxK convolution with few output channels, on a 2x2 space-to-depth view.

    oneDNN's CPU convolutions vectorise over output channels, 16 at a time, so the generator's
    final 3-channel convolution runs at a fifth of the machine's rate. The same function over
    a 2x2 space-to-depth view of ``x`` has 4x the input and output channels and a
    ceil((K+1)/2) kernel; ``pixel_shuffle`` puts the output back. More multiply-adds (zero
    taps), less time.
    """

    def __init__(self, conv: nn.Conv2d) -> None:
        super().__init__()
        w = conv.weight.detach()
        o, i, k, _ = w.shape
        kp = (k + 2) // 2
        big = torch.zeros(o, 2, 2, i, 2, 2, kp, kp, dtype=w.dtype, device=w.device)
        for a in (0, 1):  # output parity (rows); b: columns
            for q in (0, 1):  # input parity; p: tap of the new kernel
                for p in range(kp):
                    dy = 2 * p + q - a
                    if not 0 <= dy < k:
                        continue
                    for b in (0, 1):
                        for r in (0, 1):
                            for t in range(kp):
                                dx = 2 * t + r - b
                                if 0 <= dx < k:
                                    big[:, a, b, :, q, r, p, t] = w[:, :, dy, dx]
        self.conv = nn.Conv2d(4 * i, 4 * o, kp, bias=conv.bias is not None).to(w.device)
        with torch.no_grad():
            # input channels in _space_to_depth's order: (row parity, column parity, channel)
            self.conv.weight.copy_(big.permute(0, 1, 2, 4, 5, 3, 6, 7).reshape(4 * o, 4 * i,
                                                                               kp, kp))
            if conv.bias is not None:
                self.conv.bias.copy_(conv.bias.detach().repeat_interleave(4))
        self.kernel = k

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h, w = x.shape[2] - self.kernel + 1, x.shape[3] - self.kernel + 1
        if h % 2 or w % 2:
            raise ValueError(f"SpaceToDepthConv needs an even output size, got {h}x{w}")
        kp = self.conv.kernel_size[0]
        x = x[:, :, :h + 2 * (kp - 1), :w + 2 * (kp - 1)]  # the rows and columns it reads
        return nn.functional.pixel_shuffle(self.conv(_space_to_depth(x)), 2)


def _space_to_depth(x: torch.Tensor) -> torch.Tensor:
    """(N, C, H, W) -> (N, 4C, H/2, W/2), channels (row parity, column parity, C), returned
    channels_last. One copy that moves whole pixels (C contiguous values) when ``x`` is
    channels_last: 7x faster here than ``pixel_unshuffle``, whose channel order needs a
    transposing copy."""
    n, c, h, w = x.shape
    y = x.permute(0, 2, 3, 1).reshape(n, h // 2, 2, w // 2, 2, c)
    return y.permute(0, 1, 3, 2, 4, 5).reshape(n, h // 2, w // 2, 4 * c).permute(0, 3, 1, 2)


def inference_form(net: nn.Module) -> nn.Module:
    """A :class:`ResnetGenerator`'s layers rewritten for fast CPU inference, the same function
    within float rounding: resize-upsampling layers become :class:`UpsampleConv` and the final
    3-channel convolution a :class:`SpaceToDepthConv`. Other networks are returned as they are.
    Training keeps the plain form (its parameters are what checkpoints store)."""
    if not isinstance(net, ResnetGenerator):
        return net
    layers = list(net.model)
    out: list[nn.Module] = []
    k = 0
    while k < len(layers):
        m = layers[k]
        nxt = layers[k + 1] if k + 1 < len(layers) else None
        if (isinstance(m, nn.Upsample) and m.mode == "nearest" and m.scale_factor in (2, 2.0)
                and isinstance(nxt, nn.Conv2d) and nxt.kernel_size == (3, 3)
                and nxt.stride == (1, 1) and nxt.padding == (1, 1) and nxt.groups == 1):
            out.append(UpsampleConv(nxt))
            k += 2
            continue
        if (isinstance(m, nn.Conv2d) and m.out_channels < 16 and m.stride == (1, 1)
                and m.padding == (0, 0) and m.dilation == (1, 1) and m.groups == 1
                and m.kernel_size[0] == m.kernel_size[1] > 1):
            out.append(SpaceToDepthConv(m))
        else:
            out.append(m)
        k += 1
    return nn.Sequential(*out).eval()  # unchanged layers are shared, not copied


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


def init_weights(net: nn.Module) -> nn.Module:
    """The reference CycleGAN's 'normal' init, for training from scratch: N(0, 0.02) conv
    weights, zero biases; in place, returned."""
    for m in net.modules():
        if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d)):
            nn.init.normal_(m.weight, 0.0, 0.02)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
    return net
