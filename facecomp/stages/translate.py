"""Translate: aligned crops -> translated crops, in batches, under ``torch.inference_mode()``.

Convention: crops enter and leave as (N, S, S, 3) RGB uint8; the generator sees float NCHW in
[-1, 1] (channels_last memory). Any ``nn.Module`` with that contract works, so tests can pass tiny
generators with known behaviour.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from ..device import cast_copy, resolve_device, resolve_dtype
from ..errors import ConfigError
from ..networks import inference_form
from ..options import PIPELINE, default


@dataclass(frozen=True)
class TranslateConfig:
    """device: auto|cpu|cuda[:N]; batch_size: crops per forward pass (None: 8 on the CPU, where
    larger batches fall out of the cache and run slower, 16 on a GPU); precision: see PRECISIONS.

    ``auto`` precision is bf16 (or fp16 where bf16 is unsupported) on CUDA; on the CPU it is bf16
    when :func:`facecomp.device.cpu_bf16_is_faster` finds bf16 convolutions clearly faster on this CPU, else fp32.
    """

    device: str = default("device")
    batch_size: int | None = default("batch_size")
    precision: str = default("precision")

    def __post_init__(self) -> None:
        PIPELINE["batch_size"].check(self.batch_size)
        PIPELINE["precision"].check(self.precision)
        if not (self.device in ("auto", "cpu") or self.device.startswith("cuda")):
            raise ConfigError(f"device must be auto, cpu or cuda, got {self.device!r}")


def to_tensor(crops: np.ndarray, device: torch.device) -> torch.Tensor:
    """(N, S, S, 3) uint8 -> float NCHW in [-1, 1], channels_last."""
    x = torch.from_numpy(np.ascontiguousarray(crops)).to(device)
    x = x.permute(0, 3, 1, 2).float().div_(127.5).sub_(1.0)
    return x.contiguous(memory_format=torch.channels_last)


def to_uint8(x: torch.Tensor) -> np.ndarray:
    """float NCHW in [-1, 1] -> (N, S, S, 3) uint8, rounded to nearest."""
    y = x.float().add(1.0).mul_(127.5).round_().clamp_(0, 255).to(torch.uint8)
    return y.permute(0, 2, 3, 1).contiguous().cpu().numpy()


class Translator:
    """Runs a generator over crops in batches of ``batch_size`` (the config's, or its default
    for the device)."""

    def __init__(self, generator: nn.Module, config: TranslateConfig | None = None) -> None:
        self.config = config or TranslateConfig()
        self.device = resolve_device(self.config.device)
        self.batch_size = self.config.batch_size or (8 if self.device.type == "cpu" else 16)
        self.dtype = resolve_dtype(self.config.precision, self.device)
        self.generator = generator.to(self.device).eval()
        self.generator = self.generator.to(memory_format=torch.channels_last)
        if self.device.type == "cpu":  # measured faster there; the GPU keeps the plain form
            self.generator = inference_form(self.generator).to(memory_format=torch.channels_last)
        # On the CPU, reduced precision means a bf16 copy of the weights rather than autocast:
        # autocast re-casts every weight on every call, which costs more than it saves there.
        self._cast_input = self.device.type == "cpu" and self.dtype != torch.float32
        if self._cast_input:
            self.generator = cast_copy(self.generator, self.dtype)

    def __call__(self, crops: np.ndarray) -> np.ndarray:
        crops = np.asarray(crops)
        if crops.ndim != 4 or crops.shape[-1] != 3 or crops.dtype != np.uint8:
            raise ValueError(f"expected (N, S, S, 3) uint8 crops, got {crops.shape} {crops.dtype}")
        out = np.empty_like(crops)
        bs = self.batch_size
        with torch.inference_mode(), self._autocast():
            for i in range(0, len(crops), bs):
                x = to_tensor(crops[i:i + bs], self.device)
                if self._cast_input:
                    x = x.to(self.dtype)
                out[i:i + bs] = to_uint8(self.generator(x))
        return out

    def _autocast(self) -> contextlib.AbstractContextManager:
        if self.dtype == torch.float32 or self._cast_input:
            return contextlib.nullcontext()
        return torch.autocast(device_type=self.device.type, dtype=self.dtype)
