"""Tracking: stable ids across frames, missed detections bridged, One-Euro smoothing that
steadies a still face (>= 3x less frame-to-frame motion) without lagging a moving one."""

from __future__ import annotations

import numpy as np
import pytest

from facecomp.errors import ConfigError
from facecomp.face import Face
from facecomp.geometry import FACECOMP_V1
from facecomp.geometry import box_iou
from facecomp.stages.track import OneEuroFilter, TrackConfig, Tracker

FPS = 30.0


def face_at(cx: float, cy: float, size: float = 100.0, noise: np.ndarray | None = None) -> Face:
    lm = (FACECOMP_V1.pixels(128) - 64) * size / 128 + [cx, cy]
    if noise is not None:
        lm = lm + noise
    half = size / 2
    return Face(box=(cx - half, cy - half, cx + half, cy + half), score=0.99, landmarks=lm)


def _motion(seq: list[np.ndarray]) -> float:
    return float(np.mean([np.abs(b - a).mean() for a, b in zip(seq, seq[1:])]))


def test_a_still_face_with_detector_noise_is_steadied_at_least_3x():
    rng = np.random.default_rng(0)
    tracker = Tracker()
    raw, smooth = [], []
    for k in range(90):
        f = face_at(300, 200, noise=rng.normal(0, 1.5, (5, 2)))
        tracks = tracker.update([f], k / FPS)
        raw.append(f.landmarks)
        smooth.append(tracks[0].face.landmarks)
    assert _motion(raw[10:]) >= 3 * _motion(smooth[10:]), (_motion(raw), _motion(smooth))


def test_a_moving_face_is_followed_with_little_lag():
    tracker = Tracker()
    for k in range(60):  # 1.5 face sizes per second to the right
        cx = 100 + 150 * k / FPS
        tracks = tracker.update([face_at(cx, 200)], k / FPS)
    lag = np.abs(tracks[0].face.landmarks - face_at(cx, 200).landmarks).max()
    assert lag < 8.0, lag  # < 8 % of the face size at this speed
    assert len(tracks) == 1 and tracks[0].id == 1


def test_ids_are_stable_and_new_faces_get_new_ids():
    tracker = Tracker()
    ids = []
    for k in range(10):
        faces = [face_at(100 + 3 * k, 200), face_at(400 - 3 * k, 220)]
        if k >= 5:
            faces.append(face_at(700, 300, 60))
        ids.append([(tr.id, round(tr.face.centre[0])) for tr in tracker.update(faces, k / FPS)])
    assert [i for i, _ in ids[0]] == [1, 2]
    assert [i for i, _ in ids[-1]] == [1, 2, 3]
    assert ids[-1][0][1] < ids[-1][1][1]  # track 1 is still the left face


def test_a_missed_detection_keeps_the_track_for_max_missed_frames():
    tracker = Tracker(TrackConfig(max_missed=2))
    tracker.update([face_at(300, 200)], 0.0)
    for k, expected in ((1, 1), (2, 1), (3, 0)):
        tracks = tracker.update([], k / FPS)
        assert len(tracks) == expected
    tracks = tracker.update([face_at(300, 200)], 4 / FPS)
    assert tracks[0].id == 2  # the old track ended; this is a new one


def test_one_euro_passes_the_first_value_and_handles_repeated_times():
    f = OneEuroFilter(1.0, 0.0, 1.0)
    x = np.array([1.0, 2.0])
    assert np.array_equal(f(x, 0.0), x)
    assert np.array_equal(f(x + 5, 0.0), x + 5)  # no time passed: restart, never divide by 0


def test_box_iou_and_config():
    assert box_iou((0, 0, 10, 10), (0, 0, 10, 10)) == 1.0
    assert box_iou((0, 0, 10, 10), (5, 0, 15, 10)) == pytest.approx(1 / 3)
    assert box_iou((0, 0, 10, 10), (20, 20, 30, 30)) == 0.0
    with pytest.raises(ConfigError):
        TrackConfig(iou=0)
