"""Where and in what precision the networks run: the device (``auto`` picks CUDA when present)
and the dtype (``auto`` measures whether bf16 pays on this CPU, once per CPU and torch version).
Inference (:mod:`facecomp.stages.translate`) and training (:mod:`facecomp.training.train`) both
ask here.
"""

from __future__ import annotations

import copy
import functools
import json
import os
import platform
import time
from pathlib import Path

import torch
from torch import nn

from .errors import ConfigError, OutputError
from .io import atomic_path


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
    conv16, x16 = cast_copy(conv, torch.bfloat16), x.to(torch.bfloat16)
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


def cast_copy(module: nn.Module, dtype: torch.dtype) -> nn.Module:
    """A copy in ``dtype``; the caller's module stays as it was."""
    return copy.deepcopy(module).to(dtype)
