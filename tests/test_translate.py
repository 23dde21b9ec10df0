"""Translation: batching does not change pixels, conversions are exact, configs validated."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from facecomp.errors import ConfigError
from facecomp.networks import ResnetGenerator
from facecomp.translate import TranslateConfig, Translator, to_tensor, to_uint8

from .conftest import Invert


class Counting(torch.nn.Module):
    """Wraps a generator and records the batch sizes it was called with."""

    def __init__(self, inner: torch.nn.Module) -> None:
        super().__init__()
        self.inner, self.calls = inner, []

    def forward(self, x):
        self.calls.append(x.shape[0])
        return self.inner(x)


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
    gen = Counting(Invert())
    out = Translator(gen, TranslateConfig(device="cpu", batch_size=8))(_crops(35))
    assert gen.calls == [8, 8, 8, 8, 3] and out.shape == (35, 32, 32, 3)


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
