"""The age estimator: shipped weights on fixed crops (golden), re-warping between templates,
save/load and hostile files, training on a handful of real UTKFace faces, and --age on real
faces with the shipped model."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from facecomp.stages.age import (AgeEstimator, AgeInfo, AgeNet, load_estimator, rewarp,
                                 save_estimator, score, shipped_estimator)
from facecomp.stages.align import AlignConfig, align_faces
from facecomp.frontends.cli import app
from facecomp.errors import ModelError
from facecomp.geometry import FACECOMP_TIGHT, FACECOMP_V1, estimate_similarity
from facecomp.io import read_image

from ..conftest import ROOT, SAMPLES, one_error_line

GOLDEN = ROOT / "tests" / "golden"
UTKFACE = ROOT.parent / "shared" / "datasets" / "utkface"


def _untile(strip: np.ndarray, size: int) -> np.ndarray:
    return np.stack([strip[:, i * size:(i + 1) * size] for i in range(strip.shape[1] // size)])


@pytest.fixture(scope="module")
def estimator() -> AgeEstimator:
    return AgeEstimator.load()


def test_shipped_estimator_gives_the_stored_ages(estimator):
    ages = json.loads((GOLDEN / "ages.json").read_text())
    import hashlib

    assert hashlib.sha256(shipped_estimator().read_bytes()).hexdigest() == ages["sha256"], (
        "the shipped estimator changed: run `make golden` if that was intended")
    crops = _untile(read_image(GOLDEN / "inputs.png").rgb, 128)
    older = _untile(read_image(GOLDEN / "A2B.png").rgb, 128)
    meta = json.loads((GOLDEN / "meta.json").read_text())
    assert meta["A2B"]["template"] == estimator.template.name
    np.testing.assert_allclose(estimator.predict(crops), ages["inputs"], atol=0.3)
    np.testing.assert_allclose(estimator.predict(older), ages["A2B"], atol=0.3)
    # the sample's adults read as adults (three of them in their 20s, three over 80), and the
    # default model makes the young ones clearly older
    before, after = np.array(ages["inputs"]), np.array(ages["A2B"])
    assert np.all((before >= 16) & (before <= 100))
    young = before < 50
    assert young.sum() == 3 and (after - before)[young].mean() > 10
    assert np.all(after - before > -2)


def test_shipped_estimator_metadata_has_the_model_card_figures(estimator):
    m = estimator.info.metrics
    assert m["mae"] < 8 and set(m["bands"]) >= {"18-30", "31-54", "55-80"}
    assert "non-commercial" in estimator.info.license
    assert estimator.info.template == FACECOMP_TIGHT and estimator.info.input_size == 80


def test_estimates_do_not_depend_on_the_crop_template(estimator, group_image, detector):
    """The same faces aligned with another template and size are re-warped to the estimator's
    framing: the ages agree with those of crops made directly in that framing."""
    faces = detector.detect(group_image)
    tight, _ = align_faces(group_image, faces, AlignConfig(128, FACECOMP_TIGHT))
    loose, _ = align_faces(group_image, faces, AlignConfig(256, FACECOMP_V1))
    a, b = estimator.predict(tight), estimator.predict(loose, FACECOMP_V1)
    assert np.abs(a - b).max() < 3.0, (a, b)


def test_rewarp_maps_template_landmarks_onto_each_other():
    """A crop with dots at one template's landmarks has them at the other's after rewarp."""
    crop = np.zeros((1, 256, 256, 3), np.uint8)
    for x, y in FACECOMP_V1.pixels(256):
        crop[0, round(y) - 2:round(y) + 3, round(x) - 2:round(x) + 3] = 255
    out = rewarp(crop, FACECOMP_V1, FACECOMP_TIGHT, 96)[0, :, :, 0].astype(float)
    for x, y in FACECOMP_TIGHT.pixels(96):
        ys, xs = np.mgrid[round(y) - 5:round(y) + 6, round(x) - 5:round(x) + 6]
        w = out[ys, xs]
        assert w.sum() > 0
        assert math.hypot((w * xs).sum() / w.sum() - x, (w * ys).sum() / w.sum() - y) < 0.6
    same = rewarp(crop, FACECOMP_V1, FACECOMP_V1, 64)
    assert same.shape == (1, 64, 64, 3)
    m = estimate_similarity(FACECOMP_V1.pixels(256), FACECOMP_TIGHT.pixels(96))
    assert m.shape == (2, 3)


def _tiny(tmp_path: Path, **kw) -> Path:
    torch.manual_seed(0)
    net = AgeNet(width=8)
    info = AgeInfo(arch_args={"width": 8, "min_age": 1, "max_age": 120}, input_size=64,
                   template=FACECOMP_TIGHT, label_range=(16, 116), **kw)
    path = tmp_path / "est.safetensors"
    save_estimator(path, net, info)
    return path


def test_save_load_round_trip(tmp_path):
    path = _tiny(tmp_path, metrics={"mae": 5.5})
    net, info = load_estimator(path)
    est = AgeEstimator(net, info)
    crops = np.random.default_rng(0).integers(0, 255, (3, 128, 128, 3), dtype=np.uint8)
    ages = est.predict(crops)
    assert ages.shape == (3,) and np.all((ages >= 1) & (ages <= 120))
    assert np.allclose(ages, AgeEstimator.load(path).predict(crops))
    assert "5.5" in AgeEstimator.load(path).name


def test_hostile_estimator_files_are_refused(tmp_path, invert_model):
    with pytest.raises(ModelError, match="not a facecomp age estimator"):
        load_estimator(invert_model)
    with pytest.raises(ModelError, match="no such"):
        load_estimator(tmp_path / "missing.safetensors")
    path = _tiny(tmp_path)
    from safetensors.torch import load_file, save_file

    tensors = load_file(str(path))
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as f:
        meta = f.metadata()
    bad = dict(tensors)
    bad["head.2.weight"] = torch.full_like(bad["head.2.weight"], float("nan"))
    save_file(bad, str(tmp_path / "nan.safetensors"), metadata=meta)
    with pytest.raises(ModelError, match="NaN"):
        load_estimator(tmp_path / "nan.safetensors")
    huge = json.loads(meta["info"])
    huge["arch_args"]["width"] = 20000
    save_file(tensors, str(tmp_path / "huge.safetensors"),
              metadata={**meta, "info": json.dumps(huge)})
    with pytest.raises(ModelError, match="damaged"):
        load_estimator(tmp_path / "huge.safetensors")


def test_score_reports_bands_and_bias():
    true = np.array([17, 25, 40, 60, 90], float)
    s = score(true + np.array([1, -2, 3, -4, -10]), true)
    assert s["mae"] == pytest.approx(4.0) and s["bias"] == pytest.approx(-2.4)
    assert s["bands"]["81+"] == {"n": 1, "mae": 10.0, "bias": -10.0}
    assert set(s["bands"]) == {"16-17", "18-30", "31-54", "55-80", "81+"}


def test_train_age_on_a_few_real_faces(tmp_path):
    """prepare + train-age end to end on 48 UTKFace images (tiny network, 2 epochs)."""
    if not UTKFACE.is_dir():
        pytest.skip(f"{UTKFACE} is not available")
    src = tmp_path / "src"
    src.mkdir()
    names = sorted(p.name for p in UTKFACE.glob("*.jpg"))[::350][:48]
    for n in names:
        (src / n).symlink_to(UTKFACE / n)
    runner = CliRunner()
    r = runner.invoke(app, ["prepare", str(src), str(tmp_path / "data"), "--size", "128",
                            "--template", "facecomp-tight", "--max-outside", "0.4",
                            "--holdout", "0.2", "--device", "cpu"])
    assert r.exit_code == 0, r.output
    r = runner.invoke(app, ["train-age", str(tmp_path / "data"), "--out", str(tmp_path / "run"),
                            "--epochs", "2", "--width", "8", "--batch-size", "16"])
    assert r.exit_code == 0, r.output
    assert "held-out MAE" in r.stderr
    stats = [json.loads(x) for x in (tmp_path / "run" / "stats.jsonl").read_text().splitlines()]
    assert [s["epoch"] for s in stats] == [1, 2]
    est = AgeEstimator.load(tmp_path / "run" / "age-estimator.safetensors")
    held = json.loads((tmp_path / "run" / "holdout_predictions.json").read_text())
    assert held and all(n.split("_")[0] == str(int(t)) for n, (t, _) in held.items())
    assert est.info.metrics["n"] == len(held)
    r = runner.invoke(app, ["train-age", str(tmp_path / "nothing"), "--out", str(tmp_path / "r")])
    assert r.exit_code == 1
    one_error_line(r, "no such folder")


def test_age_targets_move_real_faces_monotonically(group_image, detector, estimator):
    """With the shipped (calibrated) model: a larger target never gives a younger face."""
    from facecomp.pipeline import FaceComp, PhotoConfig
    from facecomp.stages.target import AgeTarget

    after = []
    for target in ("30", "50", "70"):
        try:
            fc = FaceComp(PhotoConfig(age=AgeTarget.parse(target)), detector=detector,
                          estimator=estimator)
        except Exception as e:  # an uncalibrated default model
            pytest.skip(str(e))
        r = fc.process(group_image)
        after.append(np.array(fc.estimate_age(r.image, r.faces)))
    before = np.array(fc.estimate_age(group_image, r.faces))
    assert np.all(after[1] >= after[0] - 1.0) and np.all(after[2] >= after[1] - 1.0), after
    young, old = before < 50, before > 70  # the sample has both
    assert young.any() and old.any()
    assert (after[2] - before)[young].mean() > 5  # --age 70 makes the young clearly older
    # --age 30 never makes the old read older, and makes some clearly younger (the shipped B2A
    # cannot make every face over 80 read younger: those are left nearly as they are; the paste
    # keeps each face's own fine detail, which costs the smoothing B2A some of its effect)
    assert np.all((after[0] - before)[old] < 1.0) and (after[0] - before)[old].min() < -4


def test_cli_debug_writes_ages(tmp_path):
    out = tmp_path / "out.jpg"
    r = CliRunner().invoke(app, ["photo", str(SAMPLES / "group.jpg"), "-o", str(out), "--debug",
                                 "--device", "cpu"])
    assert r.exit_code == 0, r.output
    assert (tmp_path / "out.debug.jpg").is_file()
