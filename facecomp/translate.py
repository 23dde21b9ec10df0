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

from .errors import ConfigError

PRECISIONS = ("auto", "fp32", "bf16", "fp16")


@dataclass(frozen=True)
class TranslateConfig:
    """device: auto|cpu|cuda[:N]; batch_size: crops per forward pass; precision: see PRECISIONS.

    ``auto`` precision is fp32 on the CPU and bf16 (or fp16 where bf16 is unsupported) on CUDA.
    """

    device: str = "auto"
    batch_size: int = 16
    precision: str = "auto"

    def __post_init__(self) -> None:
        if self.batch_size < 1:
            raise ConfigError(f"batch size must be at least 1, got {self.batch_size}")
        if self.precision not in PRECISIONS:
            raise ConfigError(f"precision must be one of {', '.join(PRECISIONS)}, "
                              f"got {self.precision!r}")
        if not (self.device in ("auto", "cpu") or self.device.startswith("cuda")):
            raise ConfigError(f"device must be auto, cpu or cuda, got {self.device!r}")


def resolve_device(name: str) -> torch.device:
    """``auto`` picks CUDA when present; asking for CUDA without one is a config error."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError("--device cuda was asked for but no CUDA GPU is available; "
                          "use --device cpu or auto")
    return torch.device(name)


def resolve_dtype(precision: str, device: torch.device) -> torch.dtype:
    if precision == "auto":
        if device.type != "cuda":
            return torch.float32
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}[precision]


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
    """Runs a generator over crops in batches of ``config.batch_size``."""

    def __init__(self, generator: nn.Module, config: TranslateConfig | None = None) -> None:
        self.config = config or TranslateConfig()
        self.device = resolve_device(self.config.device)
        self.dtype = resolve_dtype(self.config.precision, self.device)
        self.generator = generator.to(self.device).eval()
        self.generator = self.generator.to(memory_format=torch.channels_last)

    def __call__(self, crops: np.ndarray) -> np.ndarray:
        crops = np.asarray(crops)
        if crops.ndim != 4 or crops.shape[-1] != 3 or crops.dtype != np.uint8:
            raise ValueError(f"expected (N, S, S, 3) uint8 crops, got {crops.shape} {crops.dtype}")
        out = np.empty_like(crops)
        bs = self.config.batch_size
        with torch.inference_mode(), self._autocast():
            for i in range(0, len(crops), bs):
                out[i:i + bs] = to_uint8(self.generator(to_tensor(crops[i:i + bs], self.device)))
        return out

    def _autocast(self) -> contextlib.AbstractContextManager:
        if self.dtype == torch.float32:
            return contextlib.nullcontext()
        return torch.autocast(device_type=self.device.type, dtype=self.dtype)
