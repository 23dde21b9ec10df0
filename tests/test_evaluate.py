"""facecomp evaluate: scores match explicit computations on generators with known behaviour."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from facecomp.blend import face_mask
from facecomp.cli import app
from facecomp.errors import InputError
from facecomp.evaluate import evaluate
from facecomp.geometry import FACECOMP_V1

from .conftest import SAMPLES


@pytest.fixture
def crops(tmp_path) -> tuple[Path, Path, np.ndarray]:
    img = np.asarray(Image.open(SAMPLES / "group.jpg").convert("RGB"))
    a, b = tmp_path / "a", tmp_path / "b"
    (a / "holdout").mkdir(parents=True)
    b.mkdir()
    held = []
    for i in range(5):
        crop = np.ascontiguousarray(img[100 + 60 * i:228 + 60 * i, 200:328])
        Image.fromarray(crop).save(a / "holdout" / f"{i}.png")  # A: held-out crops are used
        Image.fromarray(crop).save(b / f"{i}.png")
        held.append(crop)
    Image.fromarray(np.zeros((128, 128, 3), np.uint8)).save(a / "train_only.png")
    return a, b, np.stack(held)


def test_scores_of_an_invert_and_identity_pair(crops, invert_model, tmp_path):
    """A2B inverts, B2A is the identity: every score has a known value."""
    a, b, x = crops
    report = evaluate(str(invert_model), a, b, grid=tmp_path / "grid.jpg", n_grid=4,
                      device="cpu")
    inv = 255 - x.astype(np.float32)
    full = np.abs(inv - x).mean()
    mask = face_mask(128, FACECOMP_V1) >= 0.5
    assert report.a.n == 5 and report.a.folder.endswith("holdout")
    assert report.a.cycle_l1 == pytest.approx(full, abs=0.01)  # B2A(A2B(a)) = inverted a
    assert report.a.identity_l1 == pytest.approx(0, abs=0.01)  # B2A(a) = a
    assert report.a.change_in_face == pytest.approx(np.abs(inv - x)[:, mask].mean(), abs=0.01)
    assert report.b.cycle_l1 == pytest.approx(full, abs=0.01)  # A2B(B2A(b)) = inverted b
    assert report.b.identity_l1 == pytest.approx(full, abs=0.01)  # A2B(b) = inverted b
    assert report.b.change_in_face == pytest.approx(0, abs=0.01)
    grid = Image.open(tmp_path / "grid.jpg")
    assert grid.size[0] > 3 * 128 and grid.size[1] >= 128


def test_cli_prints_scores_and_writes_json(crops, invert_model, tmp_path):
    a, b, _ = crops
    out = tmp_path / "scores.json"
    r = CliRunner().invoke(app, ["evaluate", "--model", str(invert_model), "--a", str(a),
                                 "--b", str(b), "--json", str(out), "--device", "cpu"])
    assert r.exit_code == 0, r.output
    assert "cycle L1" in r.stdout and out.is_file() and '"identity_l1"' in out.read_text()
    r = CliRunner().invoke(app, ["evaluate", "--model", str(invert_model), "--a",
                                 str(tmp_path / "nope"), "--b", str(b)])
    assert r.exit_code == 1 and "no such folder" in r.stderr


def test_an_empty_folder_is_a_clear_error(tmp_path, invert_model):
    (tmp_path / "e").mkdir()
    with pytest.raises(InputError, match="no images"):
        evaluate(str(invert_model), tmp_path / "e", tmp_path / "e")
