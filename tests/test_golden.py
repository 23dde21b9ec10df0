"""Golden outputs of the shipped default model: an accidental change of the weights, of the
alignment or of the pre/post-processing fails here. Regenerate on purpose with
scripts/make_golden.py."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest

from facecomp.stages.align import AlignConfig, align_faces
from facecomp.checkpoint import load_generator, resolve_model
from facecomp.io import read_image
from facecomp.stages.translate import TranslateConfig, Translator

GOLDEN = Path(__file__).resolve().parent / "golden"
META = json.loads((GOLDEN / "meta.json").read_text())
SIZE = META["A2B"]["crop_size"]


def _strip(name: str) -> np.ndarray:
    s = read_image(GOLDEN / name).rgb
    return np.stack([s[:, i * SIZE:(i + 1) * SIZE] for i in range(s.shape[1] // SIZE)])


@pytest.mark.parametrize("direction", ["A2B", "B2A"])
def test_the_shipped_weights_are_the_golden_ones(direction):
    path = resolve_model(None, direction)
    assert path.name == META[direction]["file"]
    assert hashlib.sha256(path.read_bytes()).hexdigest() == META[direction]["sha256"], (
        "the shipped weights changed; if on purpose, run scripts/make_golden.py")


@pytest.mark.parametrize("direction", ["A2B", "B2A"])
def test_the_shipped_generator_reproduces_its_golden_outputs(direction):
    net, info = load_generator(resolve_model(None, direction))
    out = Translator(net, TranslateConfig(device="cpu", precision="fp32"))(_strip("inputs.png"))
    diff = np.abs(out.astype(int) - _strip(f"{direction}.png").astype(int))
    # PNG is lossless: CPU-to-CPU differences are float summation order only (GPU: a bit more)
    assert diff.mean() < 0.5 and diff.max() <= 8, (diff.mean(), diff.max())


def test_alignment_of_the_sample_still_gives_the_golden_inputs(detector):
    img = read_image(Path(__file__).resolve().parents[1] / "samples" / "group.jpg").rgb
    _, info = load_generator(resolve_model(None, "A2B"))
    crops, _ = align_faces(img, detector.detect(img), AlignConfig(info.crop_size, info.template))
    golden = _strip("inputs.png")
    assert crops.shape == golden.shape
    assert np.abs(crops.astype(int) - golden.astype(int)).mean() < 1.0


@pytest.mark.parametrize("direction", ["A2B", "B2A"])
def test_bf16_translation_of_the_shipped_model_stays_within_tolerance(direction):
    """bf16 (chosen automatically on CPUs where it is faster) against the fp32 golden outputs:
    a mean under 1.5 levels and no pixel more than 24 levels (of 255) off."""
    net, _ = load_generator(resolve_model(None, direction))
    out = Translator(net, TranslateConfig(device="cpu", precision="bf16"))(_strip("inputs.png"))
    diff = np.abs(out.astype(int) - _strip(f"{direction}.png").astype(int))
    assert diff.mean() < 1.5 and diff.max() <= 24, (diff.mean(), diff.max())
