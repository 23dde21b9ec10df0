"""The generator's upsampling choice: resize + conv has no checkerboard; checkpoints of both load."""

from __future__ import annotations

import pytest
import torch

from facecomp.checkpoint import load_generator, save_generator
from facecomp.networks import ResnetGenerator, build, init_weights

from .conftest import make_info


def _smooth_input(side: int = 64) -> torch.Tensor:
    yy, xx = torch.meshgrid(torch.linspace(-1, 1, side), torch.linspace(-1, 1, side),
                            indexing="ij")
    return torch.stack([torch.sin(3 * xx + yy), torch.cos(2 * yy), xx * yy]).unsqueeze(0) * 0.8


def _checkerboard_share(y: torch.Tensor) -> float:
    """Share of the (interior, mean-free) output's spectral energy at the period-2 frequencies:
    the row and column through Nyquist, where a checkerboard pattern lives."""
    y = y[..., 8:-8, 8:-8]
    p = torch.fft.fft2(y - y.mean(dim=(-2, -1), keepdim=True)).abs() ** 2
    n = y.shape[-1] // 2
    return float((p[..., n, :].sum() + p[..., :, n].sum()) / p.sum())


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_resize_upsampling_paints_no_checkerboard_where_transposed_convs_do(seed):
    x = _smooth_input()
    shares = {}
    for mode in ("transpose", "resize"):
        torch.manual_seed(seed)  # the reference init, as training starts
        gen = init_weights(ResnetGenerator(ngf=8, n_blocks=2, upsample=mode)).eval()
        with torch.no_grad():
            shares[mode] = _checkerboard_share(gen(x))
    # measured: transpose 0.22-0.53, resize 0.002-0.004 (seeds 0-4)
    assert shares["transpose"] > 0.1, shares  # the measure does see a checkerboard ...
    assert shares["resize"] < 0.02, shares  # ... and resize + conv does not make one


def test_both_upsampling_modes_have_the_same_parameters_count_and_output_size():
    t, r = (ResnetGenerator(ngf=8, n_blocks=1, upsample=m) for m in ("transpose", "resize"))
    assert sum(p.numel() for p in t.parameters()) == sum(p.numel() for p in r.parameters())
    assert not any(isinstance(m, torch.nn.ConvTranspose2d) for m in r.modules())
    with torch.no_grad():
        assert r(torch.zeros(2, 3, 36, 44)).shape == (2, 3, 36, 44)
    with pytest.raises(ValueError, match="upsample must be one of"):
        ResnetGenerator(upsample="bilinear")


def test_a_resize_checkpoint_records_its_mode_and_round_trips(tmp_path):
    torch.manual_seed(0)
    gen = ResnetGenerator(ngf=8, n_blocks=2, upsample="resize").eval()
    args = {"ngf": 8, "n_blocks": 2, "upsample": "resize"}
    path = tmp_path / "r.A2B.safetensors"
    save_generator(path, gen, make_info("resnet_generator", "A2B", crop=64, arch_args=args))
    loaded, info = load_generator(path)
    assert info.arch_args == args and isinstance(build("resnet_generator", **args),
                                                 ResnetGenerator)
    x = torch.rand(1, 3, 64, 64) * 2 - 1
    with torch.no_grad():
        assert torch.equal(gen(x), loaded(x))


@pytest.mark.parametrize("upsample", ["resize", "transpose"])
@pytest.mark.parametrize("size", [64, 100])
def test_the_inference_form_computes_the_same_function(upsample, size):
    """Translator runs inference_form(generator) on the CPU: fewer multiply-adds (resize
    upsampling on the small input, the 3-channel output conv on a space-to-depth view), the
    same outputs within float rounding, the original's parameters untouched."""
    from facecomp.networks import SpaceToDepthConv, UpsampleConv, inference_form

    torch.manual_seed(0)
    net = ResnetGenerator(ngf=8, n_blocks=2, upsample=upsample).eval()
    for p in net.parameters():  # larger weights than the init: differences would show
        p.data.mul_(3)
    before = {k: v.clone() for k, v in net.state_dict().items()}
    fast = inference_form(net)
    kinds = [type(m) for m in fast]
    assert kinds.count(UpsampleConv) == (2 if upsample == "resize" else 0)
    assert isinstance(fast[-2], SpaceToDepthConv)  # the 3-channel output conv (before tanh)
    x = torch.rand(3, 3, size, size) * 2 - 1
    with torch.inference_mode():
        ref, out = net(x), fast(x)
        out_cl = fast.to(memory_format=torch.channels_last)(
            x.contiguous(memory_format=torch.channels_last))
    assert ref.shape == out.shape
    assert (ref - out).abs().max() < 1e-4 and (ref - out_cl).abs().max() < 1e-4
    assert ref.std() > 0.1  # a non-trivial function was compared
    assert all(torch.equal(v, net.state_dict()[k]) for k, v in before.items())
    assert inference_form(torch.nn.Conv2d(3, 3, 3)).__class__ is torch.nn.Conv2d
