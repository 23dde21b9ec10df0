"""Translation: batching does not change pixels, conversions are exact, configs validated."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from facecomp.errors import ConfigError
from facecomp.networks import ResnetGenerator
from facecomp.stages.translate import TranslateConfig, Translator, to_tensor, to_uint8

from ..conftest import CountingGenerator, Invert


def _crops(n: int, size: int = 32, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (n, size, size, 3), dtype=np.uint8)


def test_uint8_tensor_conversion_round_trips_exactly():
    crops = _crops(3)
    x = to_tensor(crops, torch.device("cpu"))
    assert x.shape == (3, 3, 32, 32) and x.min() >= -1 and x.max() <= 1
    assert np.array_equal(to_uint8(x), crops)


def test_invert_generator_inverts():
    crops = _crops(5)
    out = Translator(Invert(), TranslateConfig(device="cpu"))(crops)
    assert np.array_equal(out.astype(int), 255 - crops.astype(int))


def test_batched_and_one_by_one_give_the_same_pixels():
    torch.manual_seed(0)
    gen = ResnetGenerator(ngf=8, n_blocks=2)
    crops = _crops(7, 64)
    batched = Translator(gen, TranslateConfig(device="cpu", batch_size=7))(crops)
    single = np.concatenate([Translator(gen, TranslateConfig(device="cpu", batch_size=1))(
        crops[i:i + 1]) for i in range(7)])
    diff = np.abs(batched.astype(int) - single.astype(int))
    assert diff.max() <= 1 and (diff == 0).mean() > 0.999  # float summation order only


def test_many_crops_go_through_in_chunks_of_the_batch_size():
    gen = CountingGenerator(Invert())
    out = Translator(gen, TranslateConfig(device="cpu", batch_size=8))(_crops(35))
    assert gen.calls == [8, 8, 8, 8, 3] and out.shape == (35, 32, 32, 3)
    gen = CountingGenerator(Invert())  # the CPU default: 8 (larger batches fall out of the cache)
    Translator(gen, TranslateConfig(device="cpu"))(_crops(20))
    assert gen.calls == [8, 8, 4]


def test_bf16_stays_close_to_fp32():
    torch.manual_seed(0)
    gen = ResnetGenerator(ngf=8, n_blocks=2)
    crops = _crops(2, 64)
    fp32 = Translator(gen, TranslateConfig(device="cpu", precision="fp32"))(crops)
    bf16 = Translator(gen, TranslateConfig(device="cpu", precision="bf16"))(crops)
    assert np.abs(fp32.astype(int) - bf16.astype(int)).mean() < 3


def test_config_and_input_validation():
    with pytest.raises(ConfigError):
        TranslateConfig(batch_size=0)
    with pytest.raises(ConfigError):
        TranslateConfig(precision="int4")
    with pytest.raises(ConfigError):
        TranslateConfig(device="tpu")
    if not torch.cuda.is_available():
        with pytest.raises(ConfigError, match="no CUDA GPU"):
            Translator(Invert(), TranslateConfig(device="cuda"))
    with pytest.raises(ValueError):
        Translator(Invert(), TranslateConfig(device="cpu"))(np.zeros((2, 8, 8), np.uint8))


@pytest.mark.parametrize("channels_last", [True, False])
@pytest.mark.parametrize("n", [3, 1])  # one image under autograd takes batch norm's kernel
def test_the_generator_norm_is_instance_norm(channels_last, n):
    from facecomp.networks import _norm

    x = torch.randn(n, 16, 12, 10) * 3 + 1
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    grad = torch.randn(n, 16, 12, 10)
    ours, theirs = x.clone().requires_grad_(True), x.clone().requires_grad_(True)
    y, ref = _norm(16)(ours), torch.nn.InstanceNorm2d(16, affine=False)(theirs)
    assert torch.allclose(y, ref, atol=1e-5)
    assert ("BatchNorm" in type(y.grad_fn).__name__) == (n == 1)
    (y * grad).sum().backward()
    (ref * grad).sum().backward()
    assert torch.allclose(ours.grad, theirs.grad, atol=1e-5)
    with torch.no_grad():
        assert torch.allclose(_norm(16)(x), ref, atol=1e-5)
    assert y.is_contiguous(memory_format=torch.channels_last) == channels_last
    assert list(_norm(16).state_dict()) == []  # no parameters: checkpoints are unaffected


def test_auto_precision_on_the_cpu_is_measured_once_and_remembered(tmp_path, monkeypatch):
    from facecomp import device

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    monkeypatch.delenv(device.CPU_BF16_ENV, raising=False)
    monkeypatch.setattr(torch.ops.mkldnn, "_is_mkldnn_bf16_supported", lambda: True)
    calls = []
    monkeypatch.setattr(device, "_measure_bf16_speedup", lambda: calls.append(1) or 1.9)
    device.cpu_bf16_is_faster.cache_clear()
    try:
        assert device.cpu_bf16_is_faster() is True
        assert device.resolve_dtype("auto", torch.device("cpu")) == torch.bfloat16
        device.cpu_bf16_is_faster.cache_clear()  # a new process: read from the cache file
        monkeypatch.setattr(device, "_measure_bf16_speedup", lambda: 0.5)
        assert device.cpu_bf16_is_faster() is True and calls == [1]
        device.cpu_bf16_is_faster.cache_clear()
        monkeypatch.setenv(device.CPU_BF16_ENV, "0")
        assert device.resolve_dtype("auto", torch.device("cpu")) == torch.float32
        assert device.resolve_dtype("fp32", torch.device("cpu")) == torch.float32
    finally:
        device.cpu_bf16_is_faster.cache_clear()
