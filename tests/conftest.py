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
    from facecomp.stages.detect import MTCNNDetector

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


#: the tiny network and schedule for command-line training tests
TINY_FLAGS = ["--size", "32", "--ngf", "4", "--n-blocks", "1", "--ndf", "8", "--n-layers-d",
              "2", "--n-epochs", "1", "--n-epochs-decay", "1", "--epoch-size", "2",
              "--workers", "0", "--precision", "fp32", "--name", "tiny"]


class CountingGenerator(torch.nn.Module):
    """Wraps a generator and records the batch sizes it was called with."""

    def __init__(self, inner: torch.nn.Module) -> None:
        super().__init__()
        self.inner, self.calls = inner, []

    def forward(self, x):
        self.calls.append(x.shape[0])
        return self.inner(x)


def make_clip(path: Path, frames: list[np.ndarray], fps: int = 25, audio: bool = True) -> None:
    """An H.264 clip of ``frames`` (RGB) at ``fps``, with a 440 Hz mono AAC tone unless
    ``audio`` is False."""
    import av

    with av.open(str(path), "w") as out:
        vs = out.add_stream("libx264", rate=fps)
        vs.width, vs.height = frames[0].shape[1], frames[0].shape[0]
        vs.pix_fmt = "yuv420p"
        vs.options = {"crf": "12", "preset": "ultrafast"}
        if audio:
            aus = out.add_stream("aac", rate=44100)
            aus.layout = "mono"
        for i, img in enumerate(frames):
            for p in vs.encode(av.VideoFrame.from_ndarray(img, format="rgb24")):
                out.mux(p)
        for p in vs.encode(None):
            out.mux(p)
        if audio:
            n = int(44100 * len(frames) / fps)
            tone = (0.3 * np.sin(2 * np.pi * 440 * np.arange(n) / 44100)).astype(np.float32)
            for k in range(0, n, 1024):
                chunk = tone[k:k + 1024][None]
                af = av.AudioFrame.from_ndarray(chunk, format="flt", layout="mono")
                af.sample_rate = 44100
                af.pts = k
                for p in aus.encode(af):
                    out.mux(p)
            for p in aus.encode(None):
                out.mux(p)


def moving_face_frames(n: int = 40, width: int = 320, height: int = 240) -> list[np.ndarray]:
    """``n`` frames of the sample astronaut's head growing and moving right over a flat
    background."""
    import cv2

    W, H = width, height
    face = load_rgb(SAMPLES / "portrait.jpg")[40:300, 110:340]  # the astronaut's head
    frames = []
    for k in range(n):
        s = 0.55 + 0.15 * k / n
        f = cv2.resize(face, None, fx=s, fy=s, interpolation=cv2.INTER_AREA)
        bg = np.full((H, W, 3), (90, 120, 150), np.uint8)
        x, y = 20 + 3 * k, 10
        h, w = min(f.shape[0], H - y), min(f.shape[1], W - x)
        bg[y:y + h, x:x + w] = f[:h, :w]
        frames.append(bg)
    return frames
