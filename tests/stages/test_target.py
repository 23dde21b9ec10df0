"""Target ages: parsing, the calibration curve and its inversion, per-face planning, and the
round trip through a real photo with a generator and an estimator whose behaviour is known."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from facecomp.stages.align import AlignConfig, align_faces
from facecomp.stages.blend import BlendConfig, color_mask
from facecomp.checkpoint import load_generator, read_info, save_generator
from facecomp.frontends.cli import app
from facecomp.errors import ConfigError
from facecomp.measure.evaluate import calibrate_model
from facecomp.geometry import FACECOMP_V1
from facecomp.face import FaceSelection
from facecomp.pipeline import FaceComp, PhotoConfig
from facecomp.stages.target import AgeTarget, Calibration, plan_face

from ..conftest import Shift, make_info, one_error_line


class BrightnessAge:
    """A stand-in estimator: 'age' = mean brightness inside the face's solid mask, 0..100."""

    template = FACECOMP_V1

    def predict(self, crops: np.ndarray, template=None) -> np.ndarray:
        where = color_mask(crops.shape[1], FACECOMP_V1, BlendConfig())
        return crops[:, where].astype(np.float64).mean(axis=(1, 2)) / 2.55


# --- parsing -------------------------------------------------------------------------------


@pytest.mark.parametrize("text, value, relative", [("70", 70, False), ("+25", 25, True),
                                                   ("-15", -15, True), (" 45.5 ", 45.5, False)])
def test_age_targets_parse(text, value, relative):
    t = AgeTarget.parse(text)
    assert (t.value, t.relative) == (value, relative)


@pytest.mark.parametrize("text", ["old", "", "+", "0", "200", "+95", "70 years", "--5"])
def test_bad_age_targets_are_one_line_errors(text):
    with pytest.raises(ConfigError, match="age"):
        AgeTarget.parse(text)


def test_wanted_shift():
    assert AgeTarget.parse("60").wanted_shift(25) == 35
    assert AgeTarget.parse("60").wanted_shift(70) == -10
    assert AgeTarget.parse("-15").wanted_shift(70) == -15


# --- the curve ----------------------------------------------------------------------------


def test_calibration_inverts_and_clamps():
    cal = Calibration((0.0, 0.5, 1.0, 2.0), (0.0, 10.0, 16.0, 30.0), n=10)
    assert cal.sign == 1
    assert cal.strength_for(5) == pytest.approx(0.25)
    assert cal.strength_for(13) == pytest.approx(0.75)
    assert cal.strength_for(23) == pytest.approx(1.5)
    assert cal.strength_for(99) == 2.0  # beyond reach: the largest calibrated strength
    assert cal.strength_for(-5) == 0.0  # the other way: this generator cannot help
    for s in (0.0, 0.3, 0.8, 1.7):
        assert cal.strength_for(cal.shift_at(s)) == pytest.approx(s)


def test_a_noisy_dip_does_not_break_the_inversion():
    cal = Calibration((0.0, 0.5, 1.0, 1.5), (0.0, -8.0, -7.0, -20.0), n=10)  # younger, noisy
    assert cal.sign == -1
    strengths = [cal.strength_for(-w) for w in range(0, 21)]
    assert strengths == sorted(strengths) and strengths[-1] == 1.5


def test_plan_picks_the_direction_and_leaves_faces_at_the_target_alone():
    older = Calibration((0.0, 1.0, 2.0), (0.0, 20.0, 40.0), n=5)
    younger = Calibration((0.0, 1.0, 2.0), (0.0, -15.0, -30.0), n=5)
    cals = {"A2B": older, "B2A": younger}
    p = plan_face(25, AgeTarget.parse("45"), cals)
    assert (p.direction, p.strength) == ("A2B", pytest.approx(1.0))
    p = plan_face(70, AgeTarget.parse("55"), cals)
    assert (p.direction, p.strength) == ("B2A", pytest.approx(1.0))
    assert plan_face(45.4, AgeTarget.parse("45"), cals).direction is None
    p = plan_face(70, AgeTarget.parse("55"), {"A2B": older})
    assert p.direction is None and "younger" in p.note


# --- round trip on a real photo ------------------------------------------------------------


@pytest.fixture
def shift_model(tmp_path):
    """A2B brightens by 0.25 (in [-1, 1]: ~32 levels), B2A darkens by as much."""
    d = tmp_path / "models"
    d.mkdir()
    save_generator(d / "shift.A2B.safetensors", Shift(0.25), make_info("test_shift", "A2B",
                   name="shift"))
    save_generator(d / "shift.B2A.safetensors", Shift(-0.25), make_info("test_shift", "B2A",
                   name="shift"))
    return d


@pytest.fixture
def face_crops(tmp_path, group_image, detector):
    """Held-out crops of the sample photo's faces, in two prepare-style domain folders."""
    crops, _ = align_faces(group_image, detector.detect(group_image), AlignConfig(128))
    for name in ("a", "b"):
        (tmp_path / name / "holdout").mkdir(parents=True)
        for i, c in enumerate(crops):
            Image.fromarray(c).save(tmp_path / name / "holdout" / f"{i}.png")
    return tmp_path / "a", tmp_path / "b"


def test_calibration_round_trip_lands_faces_on_the_target(shift_model, face_crops, group_image,
                                                          detector):
    a, b = face_crops
    plain = BlendConfig(color_match=False)  # colour matching would undo a brightness change
    curves = calibrate_model(shift_model / "shift.A2B.safetensors", a, b, device="cpu",
                             estimator=BrightnessAge(), blend=plain)
    older = curves["A2B"][1]
    # ~32 levels of 255 at strength 1 is ~12.5 'years'; the curve is linear until clipping
    assert older.shift_at(1.0) == pytest.approx(12.5, abs=1.0)
    assert curves["B2A"][1].shift_at(1.0) == pytest.approx(-12.5, abs=1.0)
    info = read_info(shift_model / "shift.A2B.safetensors")  # stored in the file itself
    assert info.age_calibration == older
    assert load_generator(shift_model / "shift.A2B.safetensors")[0].amount.item() == 0.25

    est = BrightnessAge()
    for target, lo, hi in (("+6", 0, 1.0), ("-9", 0, 1.0)):
        fc = FaceComp(PhotoConfig(model=str(shift_model / "shift.A2B.safetensors"),
                                  age=AgeTarget.parse(target), blend=plain,
                                  age_per_face=False),  # the curve alone
                      detector=detector, estimator=est)
        r = fc.process(group_image)
        assert r.ages is not None and len(r.translated) == len(r.faces) == 6
        want = float(target)
        expected_dir = "A2B" if want > 0 else "B2A"
        assert {p.direction for p in r.plans.values()} == {expected_dir}
        for i, plan in r.plans.items():
            cal = fc.calibrations[expected_dir]
            assert plan.strength == pytest.approx(cal.strength_for(want))
        before = np.array(fc.estimate_age(group_image, r.faces))
        after = np.array(fc.estimate_age(r.image, r.faces))
        assert np.abs(after - before - want).max() < 1.5, (before, after)


def test_per_face_fitting_lands_each_face_nearest_its_target(shift_model, face_crops,
                                                             group_image, detector):
    """The per-face fit (the photo default) picks, for every face, the strength whose result
    reads nearest the target; with this generator every face lands within half a grid step
    (0.25 strength = ~3.1 'years') however far the curve's mean would have put it."""
    a, b = face_crops
    plain = BlendConfig(color_match=False)
    calibrate_model(shift_model / "shift.A2B.safetensors", a, b, device="cpu",
                    estimator=BrightnessAge(), blend=plain)
    est = BrightnessAge()
    fc = FaceComp(PhotoConfig(model=str(shift_model / "shift.A2B.safetensors"),
                              age=AgeTarget.parse("+10"), blend=plain), detector=detector,
                  estimator=est)
    r = fc.process(group_image)
    before = np.array(fc.estimate_age(group_image, r.faces))
    after = np.array(fc.estimate_age(r.image, r.faces))
    assert np.abs(after - before - 10).max() < 1.7, (before, after)
    assert all(p.expected is not None and abs(p.expected - p.target) < 1.7
               for p in r.plans.values())


def test_choose_strengths_is_monotone_in_the_goal():
    from facecomp.stages.target import choose_strengths

    rng = np.random.default_rng(0)
    crops = rng.integers(0, 200, (3, 32, 32, 3), dtype=np.uint8)
    translated = np.clip(crops.astype(int) + 50, 0, 255).astype(np.uint8)

    def predict(c):  # a non-monotone response: the estimate dips, then rises
        v = c.astype(float).mean(axis=(1, 2, 3))
        return 40 + 0.002 * (v - 120) ** 2
    mask = np.ones((32, 32), np.float32)
    picked = [choose_strengths(crops, translated, [g] * 3, predict, mask)[1]
              for g in range(20, 90, 5)]
    for i in range(3):
        seq = [p[i] for p in picked]
        assert seq == sorted(seq), seq


def test_a_model_without_calibration_refuses_a_target_age(invert_model):
    with pytest.raises(ConfigError, match="no age calibration"):
        FaceComp(PhotoConfig(model=str(invert_model), age=AgeTarget.parse("60")),
                 detector=object())


def test_age_and_strength_together_are_refused():
    with pytest.raises(ConfigError, match="strength"):
        PhotoConfig(age=AgeTarget.parse("60"), blend=BlendConfig(strength=1.5))


def test_cli_age_errors_are_one_line(tmp_path):
    img = tmp_path / "x.jpg"
    Image.fromarray(np.zeros((64, 64, 3), np.uint8)).save(img)
    r = CliRunner().invoke(app, ["photo", str(img), "--age", "ancient"])
    assert r.exit_code == 2
    one_error_line(r, "--age")


# --- age selection -------------------------------------------------------------------------


def test_faces_selected_by_age():
    sel = FaceSelection.parse("age>=20,age<40")
    faces = [object()] * 4
    assert sel.needs_ages and sel.select(faces, [15.0, 20.0, 39.9, 40.0]) == [1, 2]
    assert FaceSelection.parse("age<30").select(faces, [31, 29, 30, 5]) == [1, 3]
    with pytest.raises(ConfigError, match="age condition"):
        FaceSelection.parse("age=<3")


def test_age_selection_in_the_pipeline(group_image, detector, invert_model):
    fc = FaceComp(PhotoConfig(model=str(invert_model), faces=FaceSelection.parse("age<40")),
                  detector=detector, estimator=BrightnessAge())
    r = fc.process(group_image)
    ages = fc.estimate_age(group_image, r.faces)
    assert r.ages == pytest.approx(ages)
    assert r.translated == [i for i, a in enumerate(ages) if a < 40]
    cut = sorted(ages)[3]  # a threshold that splits the six faces
    r = FaceComp(PhotoConfig(model=str(invert_model), faces=FaceSelection.parse(f"age>{cut}")),
                 detector=detector, estimator=BrightnessAge()).process(group_image)
    assert len(r.translated) == 2 and all(ages[i] > cut for i in r.translated)
    r = FaceComp(PhotoConfig(model=str(invert_model), faces=FaceSelection.parse("age<0")),
                 detector=detector, estimator=BrightnessAge()).process(group_image)
    assert r.translated == [] and np.array_equal(r.image, group_image)


def test_calibrated_shipped_model_has_both_curves():
    from facecomp.checkpoint import resolve_model

    for d, sign in (("A2B", 1), ("B2A", -1)):
        cal = read_info(resolve_model(None, d)).age_calibration
        if cal is None:
            pytest.skip("the shipped model carries no age calibration")
        assert cal.sign == sign and abs(cal.shift_at(1.0)) > 5


def test_replace_keeps_info_frozen():
    info = make_info("test_shift")
    new = replace(info, extra={"age_calibration": Calibration((0.0, 1.0), (0.0, 5.0), 3)
                               .to_json()})
    assert new.age_calibration.shift_at(0.5) == pytest.approx(2.5)
    assert info.age_calibration is None
