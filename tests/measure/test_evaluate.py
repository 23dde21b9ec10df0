"""facecomp evaluate: scores match explicit computations on generators with known behaviour."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from facecomp.stages.blend import face_mask
from facecomp.frontends.cli import app
from facecomp.errors import InputError
from facecomp.measure.evaluate import evaluate
from facecomp.geometry import FACECOMP_V1

from ..conftest import SAMPLES, one_error_line


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
                      device="cpu", identity=False)
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
                                 "--b", str(b), "--json", str(out), "--device", "cpu",
                                 "--no-identity"])
    assert r.exit_code == 0, r.output
    assert "cycle L1" in r.stdout and out.is_file() and '"identity_l1"' in out.read_text()
    r = CliRunner().invoke(app, ["evaluate", "--model", str(invert_model), "--a",
                                 str(tmp_path / "nope"), "--b", str(b)])
    assert r.exit_code == 1 and "no such folder" in r.stderr


def test_an_empty_folder_is_a_clear_error(tmp_path, invert_model):
    (tmp_path / "e").mkdir()
    with pytest.raises(InputError, match="no images"):
        evaluate(str(invert_model), tmp_path / "e", tmp_path / "e")


AGE_FIELDS = ("age_before", "age_after", "age_shift_mean", "age_shift_median", "moved_15",
              "same_person", "identity_distance", "chroma_p99", "texture_ratio")


def test_age_identity_colour_and_texture_figures(crops, invert_model):
    """B2A is the identity: no age shift, the same person, no chroma change, texture kept.
    A2B inverts: a clear chroma change, edges (and so texture energy) kept."""
    pytest.importorskip("dlib")
    a, b, x = crops
    report = evaluate(str(invert_model), a, b, device="cpu")
    s = report.b
    assert s.age_shift_mean == pytest.approx(0, abs=1e-6) and s.moved_15 == 0
    assert s.age_before == pytest.approx(s.age_after)
    assert s.same_person == 1.0 and s.identity_distance == pytest.approx(0, abs=1e-6)
    assert s.chroma_p99 == pytest.approx(0, abs=1e-3)
    assert s.texture_ratio == pytest.approx(1.0)
    assert report.a.chroma_p99 > 5  # inverted colours
    assert report.a.texture_ratio == pytest.approx(1.0, abs=0.02)  # inversion keeps edges
    assert np.isfinite(report.a.age_before) and np.isfinite(report.a.age_shift_median)


def test_json_carries_every_figure(crops, invert_model, tmp_path):
    pytest.importorskip("dlib")
    a, b, _ = crops
    out = tmp_path / "scores.json"
    r = CliRunner().invoke(app, ["evaluate", "--model", str(invert_model), "--a", str(a),
                                 "--b", str(b), "--json", str(out), "--device", "cpu"])
    assert r.exit_code == 0, r.output
    data = json.loads(out.read_text())
    for side in ("a", "b"):
        for k in AGE_FIELDS:
            assert k in data[side] and data[side][k] is not None, k
    assert "same person" in r.stdout and "moved >= 15" in r.stdout


def test_missing_eval_extra_is_one_line_exit_2(crops, invert_model, monkeypatch):
    import sys

    a, b, _ = crops
    monkeypatch.setitem(sys.modules, "dlib", None)  # import dlib now raises ImportError
    r = CliRunner().invoke(app, ["evaluate", "--model", str(invert_model), "--a", str(a),
                                 "--b", str(b), "--device", "cpu"])
    assert r.exit_code == 2
    one_error_line(r, "facecomp[eval]")
    r = CliRunner().invoke(app, ["evaluate", "--model", str(invert_model), "--a", str(a),
                                 "--b", str(b), "--device", "cpu", "--no-identity"])
    assert r.exit_code == 0, r.output


def test_existing_grid_and_json_are_not_replaced(crops, invert_model, tmp_path):
    a, b, _ = crops
    for flag in ("--grid", "--json"):
        keep = tmp_path / f"keep{flag[2:]}.png"
        keep.write_bytes(b"precious")
        r = CliRunner().invoke(app, ["evaluate", "--model", str(invert_model), "--a", str(a),
                                     "--b", str(b), flag, str(keep), "--no-identity"])
        assert r.exit_code == 1
        one_error_line(r, "already exists", "--overwrite")
        assert keep.read_bytes() == b"precious"
