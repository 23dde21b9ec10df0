"""The steady change (facecomp.stages.steady) and the flicker measure (facecomp.measure.flicker) on arrays:
flicker over a still face is averaged away, a real change of the input is taken at once, a
face that moves carries its change along; the measure tells a steady filter from blotches that
come and go, with head motion compensated."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from facecomp.measure.flicker import flicker
from facecomp.stages.steady import SteadyChange

from ..conftest import SAMPLES, load_rgb

S = 128


@pytest.fixture(scope="module")
def crop() -> np.ndarray:
    face = load_rgb(SAMPLES / "portrait.jpg")[40:300, 110:340]
    return cv2.resize(face, (S, S), interpolation=cv2.INTER_AREA)


def blotches(rng: np.random.Generator, amount: float = 12.0) -> np.ndarray:
    """A fresh low-frequency pattern (levels), as a generator's blotches that come and go."""
    small = rng.normal(0, amount, (6, 6, 3)).astype(np.float32)
    return cv2.resize(small, (S, S), interpolation=cv2.INTER_CUBIC)


def translated_of(crop: np.ndarray, extra: np.ndarray) -> np.ndarray:
    """A consistent change (darker by 20 levels) plus ``extra``."""
    return np.clip(crop.astype(np.float32) - 20 + extra, 0, 255).astype(np.uint8)


def test_flicker_over_a_still_face_is_averaged_and_the_steady_change_kept(crop):
    rng = np.random.default_rng(0)
    steady = SteadyChange(0.25)
    raw, kept = [], []
    for k in range(60):
        out = translated_of(crop, blotches(rng))
        raw.append(out.astype(np.float32) - crop)
        kept.append(steady(1, crop, out, k / 30).astype(np.float32) - crop)
    raw_jump = np.mean([np.abs(b - a).mean() for a, b in zip(raw[20:], raw[21:])])
    kept_jump = np.mean([np.abs(b - a).mean() for a, b in zip(kept[20:], kept[21:])])
    assert kept_jump < 0.3 * raw_jump, (raw_jump, kept_jump)
    # the consistent part of the change is what remains
    consistent = translated_of(crop, 0).astype(np.float32) - crop
    assert np.abs(np.mean(kept[20:], axis=0) - consistent).mean() < 1.5
    assert np.abs(kept[-1] - consistent).mean() < 0.5 * np.abs(raw[-1] - consistent).mean()


def test_a_real_change_of_the_input_is_taken_at_once(crop):
    """Where the input crop itself changes (an eye closing, a hand), the new change is used at
    once: no lag and no ghost of the old change."""
    steady = SteadyChange(0.5)
    for k in range(10):
        steady(1, crop, translated_of(crop, 0), k / 30)
    moved = crop.copy()
    moved[40:80, 30:100] = 255 - moved[40:80, 30:100]  # the input changes in a patch
    change = np.zeros((S, S, 3), np.float32)
    change[40:80, 30:100] = 30  # and there the generator does something else
    out = steady(1, moved, translated_of(moved, change), 10 / 30).astype(np.float32) - moved
    inner = out[46:74, 36:94]
    wanted = np.clip(moved[46:74, 36:94].astype(np.float32) + 10, 0, 255) - moved[46:74, 36:94]
    assert np.abs(inner - wanted).mean() < 2.0
    # elsewhere the steady change goes on
    consistent = translated_of(moved, 0).astype(np.float32) - moved
    assert np.abs(out[100:120, 20:110] - consistent[100:120, 20:110]).mean() < 1.0


def test_a_moving_face_carries_its_change_along(crop):
    """The change follows the crop's content (residual motion in the aligned crop): a shift of
    a few pixels a frame leaves no trail of the last frame's change, and the flicker is still
    averaged away while the face moves."""
    steady = SteadyChange(0.5)
    rng = np.random.default_rng(1)
    base = cv2.resize(load_rgb(SAMPLES / "portrait.jpg")[40:300, 110:340], (S + 40, S + 40),
                      interpolation=cv2.INTER_AREA)
    mark = np.zeros((S + 40, S + 40, 3), np.float32)
    mark[60:90, 60:90] = 40  # a change fixed to the face's content
    kept, raw = [], []
    for k in range(16):
        x = 2 * k
        view = base[20:20 + S, x:x + S]
        want = translated_of(view, mark[20:20 + S, x:x + S]).astype(np.float32) - view
        out = translated_of(view, mark[20:20 + S, x:x + S] + blotches(rng, 8.0))
        got = steady(1, view, out, k / 30).astype(np.float32) - view
        inner = (slice(10, -10), slice(10, -30))
        kept.append(np.abs(got - want)[inner].mean())
        raw.append(np.abs(out.astype(np.float32) - view - want)[inner].mean())
    assert max(kept[4:]) < 3.0, kept
    assert np.mean(kept[4:]) < 0.6 * np.mean(raw[4:]), (kept, raw)


def test_a_new_direction_a_gap_and_an_ended_track_start_afresh(crop):
    steady = SteadyChange(0.25)
    for k in range(5):
        steady(7, crop, translated_of(crop, 0), k / 30)
    other = np.clip(crop.astype(np.int16) + 25, 0, 255).astype(np.uint8)
    assert np.array_equal(steady(7, crop, other, 5 / 30, "B2A"), other)  # direction changed
    assert np.array_equal(steady(7, crop, translated_of(crop, 0), 20.0, "B2A"),
                          translated_of(crop, 0))  # seen again after a gap
    steady.keep_only(set())
    assert np.array_equal(steady(7, crop, other, 20.05, "B2A"), other)  # forgotten
    assert np.array_equal(SteadyChange(0)(7, crop, other, 0.0), other)  # off


def moving_clip(n: int, change) -> tuple[list[np.ndarray], list[np.ndarray], list]:
    """A face moving 3 px a frame over a plain background, and each frame with ``change(k)``
    (levels, face-fixed) added inside the face."""
    face = cv2.resize(load_rgb(SAMPLES / "portrait.jpg")[40:300, 110:340], (120, 135),
                      interpolation=cv2.INTER_AREA)
    inputs, outputs, boxes = [], [], []
    for k in range(n):
        frame = np.full((240, 320, 3), (90, 120, 150), np.uint8)
        x, y = 40 + 3 * k, 50
        frame[y:y + 135, x:x + 120] = face
        out = frame.astype(np.float32)
        out[y:y + 135, x:x + 120] += change(k)
        inputs.append(frame)
        outputs.append(np.clip(out + 0.5, 0, 255).astype(np.uint8))
        boxes.append([(x + 10.0, y + 10.0, x + 110.0, y + 125.0)])
    return inputs, outputs, boxes


def test_the_measure_tells_blotches_that_come_and_go_from_a_steady_change():
    rng = np.random.default_rng(0)
    fixed = cv2.resize(rng.normal(0, 12, (6, 6, 3)).astype(np.float32), (120, 135),
                       interpolation=cv2.INTER_CUBIC)
    fresh = [cv2.resize(rng.normal(0, 12, (6, 6, 3)).astype(np.float32), (120, 135),
                        interpolation=cv2.INTER_CUBIC) for _ in range(20)]
    steady = flicker(*moving_clip(20, lambda k: fixed - 15))
    blotchy = flicker(*moving_clip(20, lambda k: fresh[k] - 15))
    assert steady.frames == blotchy.frames == 19
    # the head moves 3 px a frame: the flow carries the face-fixed change along
    assert steady.flicker < 0.05, steady
    assert blotchy.flicker > 0.3, blotchy
    assert steady.change == pytest.approx(blotchy.change, rel=0.3)


def test_a_face_that_stays_the_same_reuses_its_change_every_other_frame(crop):
    """With ``every=2`` the generator runs on every other frame of a face that only moves;
    the frames between take the last change moved with the face, fine band included, close to
    what the generator would give; a face that changed runs the generator at once."""
    base = cv2.resize(load_rgb(SAMPLES / "portrait.jpg")[40:300, 110:340], (S + 40, S + 40),
                      interpolation=cv2.INTER_AREA)
    rng = np.random.default_rng(2)
    grain = rng.normal(0, 6, (S + 40, S + 40, 3)).astype(np.float32)  # face-fixed fine change
    reuse, every1 = SteadyChange(0.25, every=2), SteadyChange(0.25)
    plans, errors = [], []
    for k in range(12):
        view = base[20:20 + S, 2 * k:2 * k + S]
        out = translated_of(view, grain[20:20 + S, 2 * k:2 * k + S])
        step = reuse.plan(1, view, k / 30)
        plans.append(step.generate)
        got = reuse.apply(step, out if step.generate else None)
        want = every1(1, view, out, k / 30)
        errors.append(np.abs(got.astype(np.float32) - want)[10:-10, 10:-10].mean())
        if not step.generate:
            with pytest.raises(ValueError):
                SteadyChange(0.25, every=2).apply(step, None)  # no change to carry there
    assert plans == [True, False] * 6, plans
    assert max(errors) < 3.0, np.round(errors, 2)  # grain is 6 levels: it moved with the face
    # the input changes over a patch (a hand, a mouth): the generator runs at once
    view = base[20:20 + S, 24:24 + S].copy()
    view[30:70, 30:90] = 255 - view[30:70, 30:90]
    assert reuse.plan(1, view, 12 / 30).generate
    # every frame without reuse, or with the steady change off
    assert all(SteadyChange(0.25).plan(2, crop, k / 30).generate for k in range(4))
    assert all(SteadyChange(0, every=3).plan(3, crop, k / 30).generate for k in range(4))
