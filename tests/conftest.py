"""Shared fixtures: real images, a real MTCNN detector (built once), tiny generators with known
behaviour, and model files made from them."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from facecomp import networks
from facecomp.checkpoint import ModelInfo, save_generator
from facecomp.geometry import FACECOMP_V1
from facecomp.io import read_image

# Tests pin exact pixels, so `auto` precision must not turn into bf16 on CPUs where bf16 is
# faster (the choice is made by a timing probe and would differ between machines). Tests of the
# bf16 path ask for it explicitly.
os.environ.setdefault("FACECOMP_CPU_BF16", "0")

ROOT = Path(__file__).resolve().parent.parent
SHARED_MEDIA = ROOT.parent / "shared" / "media"
SAMPLES = ROOT / "samples"


class Invert(nn.Module):
    """Inverts colours: x -> -x in [-1, 1]. A dummy parameter makes it a real checkpoint."""

    def __init__(self) -> None:
        super().__init__()
        self.scale = nn.Parameter(torch.tensor(-1.0))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.scale


class Identity(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.scale = nn.Parameter(torch.tensor(1.0))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.scale


class Shift(nn.Module):
    """Adds a constant to every pixel (clipped): a generator whose effect is known exactly."""

    def __init__(self, amount: float = 0.5) -> None:
        super().__init__()
        self.amount = nn.Parameter(torch.tensor(float(amount)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x + self.amount).clamp(-1, 1)


networks.register("test_invert", Invert)
networks.register("test_identity", Identity)
networks.register("test_shift", Shift)


def media(name: str) -> Path:
    """A file from ../shared/media, or skip the test cleanly when it is absent."""
    p = SHARED_MEDIA / name
    if not p.is_file():
        pytest.skip(f"{p} is not available")
    return p


def load_rgb(path: Path) -> np.ndarray:
    return read_image(path).rgb


@pytest.fixture(scope="session")
def detector():
    from facecomp.detect import MTCNNDetector

    return MTCNNDetector()


@pytest.fixture(scope="session")
def group_image() -> np.ndarray:
    """The repository's own redistributable group photo."""
    return load_rgb(SAMPLES / "group.jpg")


def make_info(arch: str, direction: str = "A2B", crop: int = 128, name: str = "testmodel",
              arch_args: dict | None = None, extra: dict | None = None) -> ModelInfo:
    return ModelInfo(name=name, architecture=arch, arch_args=arch_args or {}, crop_size=crop,
                     template=FACECOMP_V1, domains={"A": "plain", "B": "inverted"},
                     direction=direction, extra=extra or {})


@pytest.fixture
def invert_model(tmp_path: Path) -> Path:
    """An A2B 'invert' model file plus its B2A twin (identity) in one folder."""
    d = tmp_path / "models"
    d.mkdir()
    save_generator(d / "testmodel.A2B.safetensors", Invert(), make_info("test_invert", "A2B"))
    save_generator(d / "testmodel.B2A.safetensors", Identity(), make_info("test_identity", "B2A"))
    return d / "testmodel.A2B.safetensors"


def one_error_line(result, *needles: str) -> str:
    """The CLI result printed exactly one ``facecomp: error:`` line, containing every needle,
    and no traceback; returns that line."""
    assert "Traceback" not in result.output
    errors = [ln for ln in result.stderr.splitlines() if ln.startswith("facecomp: error:")]
    assert len(errors) == 1, result.output
    for n in needles:
        assert n in errors[0], errors[0]
    return errors[0]
