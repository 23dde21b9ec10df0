"""Translate: aligned crops -> translated crops, in batches, under ``torch.inference_mode()``.

Convention: crops enter and leave as (N, S, S, 3) RGB uint8; the generator sees float NCHW in
[-1, 1] (channels_last memory). Any ``nn.Module`` with that contract works, so tests can pass tiny
generators with known behaviour.
"""

from __future__ import annotations

import contextlib
import copy
import functools
import json
import os
import platform
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from .errors import ConfigError, OutputError
from .io import atomic_path
from .networks import inference_form

PRECISIONS = ("auto", "fp32", "bf16", "fp16")


@dataclass(frozen=True)
class TranslateConfig:
    """device: auto|cpu|cuda[:N]; batch_size: crops per forward pass (None: 8 on the CPU, where
    larger batches fall out of the cache and run slower, 16 on a GPU); precision: see PRECISIONS.

    ``auto`` precision is bf16 (or fp16 where bf16 is unsupported) on CUDA; on the CPU it is bf16
    when :func:`cpu_bf16_is_faster` finds bf16 convolutions clearly faster on this CPU, else fp32.
    """

    device: str = "auto"
    batch_size: int | None = None
    precision: str = "auto"

    def __post_init__(self) -> None:
        if self.batch_size is not None and self.batch_size < 1:
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
        raise ConfigError("`device` cuda was asked for but no CUDA GPU is available; "
                          "use `device` cpu or auto")
    return torch.device(name)


def resolve_dtype(precision: str, device: torch.device) -> torch.dtype:
    if precision == "auto":
        if device.type == "cuda":
            return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        return torch.bfloat16 if cpu_bf16_is_faster() else torch.float32
    return {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}[precision]


CPU_BF16_ENV = "FACECOMP_CPU_BF16"


@functools.lru_cache(maxsize=None)
def cpu_bf16_is_faster() -> bool:
    """Whether bf16 convolutions beat fp32 by 1.25x or more on this CPU.

    CPUs differ: with native bf16 dot products (AVX512-BF16, AMX) oneDNN runs a channels_last
    bf16 convolution about twice as fast as fp32, while elsewhere bf16 can be slower (seen on a
    VM exposing AVX512-BF16). Flags alone do not tell, so a convolution shaped like the
    generator's residual blocks is timed in both dtypes, interleaved. The answer is kept per CPU
    and torch version in ``~/.cache/facecomp`` (the check costs 0.05-0.5 s); ``FACECOMP_CPU_BF16=1``
    or ``=0`` decides without measuring.
    """
    forced = os.environ.get(CPU_BF16_ENV, "").strip()
    if forced in ("0", "1"):
        return forced == "1"
    if not torch.backends.mkldnn.is_available() or not torch.ops.mkldnn._is_mkldnn_bf16_supported():
        return False
    key = f"{cpu_name()}|torch {torch.__version__}|threads {torch.get_num_threads()}"
    cache = _cache_dir() / "cpu_bf16.json"
    try:
        known = json.loads(cache.read_text())
    except (OSError, ValueError):
        known = {}
    if isinstance(known, dict) and isinstance(known.get(key), bool):
        return known[key]
    faster = _measure_bf16_speedup() >= 1.25
    try:
        cache.parent.mkdir(parents=True, exist_ok=True)
        with atomic_path(cache, overwrite=True) as tmp:
            tmp.write_text(json.dumps({**(known if isinstance(known, dict) else {}), key: faster}))
    except (OSError, OutputError):
        pass  # a read-only home only costs the measurement next time
    return faster


def _measure_bf16_speedup(rounds: int = 5) -> float:
    """fp32 time / bf16 time of a channels_last 3x3 convolution: the median over ``rounds`` of
    back-to-back pairs, so a preemption spoils one pair, not the answer."""
    conv = nn.Conv2d(128, 128, 3, padding=1, bias=False).eval()
    conv = conv.to(memory_format=torch.channels_last)
    x = torch.randn(4, 128, 32, 32).contiguous(memory_format=torch.channels_last)
    conv16, x16 = _cast_copy(conv, torch.bfloat16), x.to(torch.bfloat16)
    ratios = []
    with torch.inference_mode():
        conv(x), conv16(x16)  # warm-up: oneDNN builds its kernels on the first call
        for _ in range(rounds):
            t0 = time.perf_counter()
            conv(x)
            t1 = time.perf_counter()
            conv16(x16)
            ratios.append((t1 - t0) / max(time.perf_counter() - t1, 1e-9))
    return sorted(ratios)[len(ratios) // 2]


def cpu_name() -> str:
    """The CPU's model name (from /proc/cpuinfo where there is one)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "facecomp"


def _cast_copy(module: nn.Module, dtype: torch.dtype) -> nn.Module:
    """A copy in ``dtype``; the caller's module stays as it was."""
    return copy.deepcopy(module).to(dtype)


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
            self.generator = _cast_copy(self.generator, self.dtype)

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
