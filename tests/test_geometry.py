"""Geometry and alignment: similarity estimation, round trips, template placement, scale."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from facecomp.stages.align import AlignConfig, align_face
from facecomp.geometry import (FACECOMP_V1, compose, crop_corners, estimate_similarity,
                               invert_affine, transform_points)

from .conftest import load_rgb, media


def _similarity(angle_deg: float, scale: float, tx: float, ty: float) -> np.ndarray:
    a = np.deg2rad(angle_deg)
    return np.array([[scale * np.cos(a), -scale * np.sin(a), tx],
                     [scale * np.sin(a), scale * np.cos(a), ty]])


@pytest.mark.parametrize("angle,scale", [(0, 1), (17, 2.5), (-40, 0.3), (179, 1.1)])
def test_estimate_similarity_recovers_a_known_transform(angle, scale):
    rng = np.random.default_rng(0)
    src = rng.uniform(0, 100, (5, 2))
    m = _similarity(angle, scale, 12.5, -7.25)
    est = estimate_similarity(src, transform_points(m, src))
    np.testing.assert_allclose(est, m, atol=1e-9)


def test_inverse_and_compose_round_trip():
    m = _similarity(23, 1.7, 5, 9)
    pts = np.array([[0.0, 0.0], [10, 3], [-4, 8]])
    np.testing.assert_allclose(transform_points(invert_affine(m), transform_points(m, pts)), pts,
                               atol=1e-12)
    np.testing.assert_allclose(compose(invert_affine(m), m), [[1, 0, 0], [0, 1, 0]], atol=1e-12)


def test_estimate_similarity_rejects_degenerate_points():
    with pytest.raises(ValueError):
        estimate_similarity(np.zeros((5, 2)), np.ones((5, 2)))


def test_template_is_inside_the_crop_with_room_for_hair_and_chin():
    pts = FACECOMP_V1.pixels(128)
    assert pts[:2, 1].mean() == pytest.approx(0.40 * 128 - 0.5, abs=0.5)  # eyes at 40 %
    assert pts[3:, 1].mean() < 0.70 * 128  # mouth leaves room for the chin
    assert 0.2 < (pts[1, 0] - pts[0, 0]) / 128 < 0.26  # eye distance


def test_align_maps_landmarks_onto_the_template_and_back(detector, group_image):
    faces = detector.detect(group_image)
    assert faces
    cfg = AlignConfig(128)
    for face in faces:
        _, aligned = align_face(group_image, face, cfg)
        in_crop = transform_points(aligned.crop_from_image, face.landmarks)
        # A similarity cannot fit 5 points exactly; all must land near the template ...
        assert np.abs(in_crop - FACECOMP_V1.pixels(128)).max() < 0.1 * 128
        # ... and the inverse maps them back to the image within 1 px (here: 1e-6).
        back = transform_points(invert_affine(aligned.crop_from_image), in_crop)
        assert np.abs(back - face.landmarks).max() < 1.0


def test_detector_on_the_crop_finds_landmarks_on_the_template(detector, group_image):
    """Align a face, detect again in the crop: the landmarks sit on the template (few px)."""
    face = max(detector.detect(group_image), key=lambda f: f.size)
    crop, _ = align_face(group_image, face, AlignConfig(256))
    again = detector.detect(crop)
    assert len(again) >= 1
    best = max(again, key=lambda f: f.size)
    err = np.linalg.norm(best.landmarks - FACECOMP_V1.pixels(256), axis=1)
    assert err.max() < 0.04 * 256, err


def test_crops_of_the_same_face_at_two_scales_agree(detector):
    img = load_rgb(media("group_14_poker_table.jpg"))
    big = cv2.resize(img, None, fx=2.0, fy=2.0, interpolation=cv2.INTER_CUBIC)
    f_small = max(detector.detect(img), key=lambda f: f.size)
    cfg = AlignConfig(128)
    # Same landmarks mapped into the 2x image (pixel-centre convention) -> same crop.
    f_big = f_small.from_resized(0.5)
    c_small, _ = align_face(img, f_small, cfg)
    c_big, _ = align_face(big, f_big, cfg)
    diff = np.abs(c_small.astype(int) - c_big.astype(int))
    assert diff.mean() < 4.0, diff.mean()
    # Independent detections at both scales give crops that agree closely too.
    f_big_det = min(detector.detect(big),
                    key=lambda f: np.abs(f.landmarks - f_big.landmarks).max())
    c_big_det, _ = align_face(big, f_big_det, cfg)
    assert np.abs(c_small.astype(int) - c_big_det.astype(int)).mean() < 12.0


def test_a_face_cut_by_the_border_aligns_without_crashing(detector):
    img = load_rgb(media("group_04_family_border.jpg"))
    faces = detector.detect(img)
    left = min(faces, key=lambda f: f.box[0])
    crop, aligned = align_face(img, left, AlignConfig(128))
    corners = crop_corners(invert_affine(aligned.crop_from_image), 128)
    assert corners[:, 0].min() < -10  # this face's crop reaches past the left border
    assert crop.shape == (128, 128, 3) and crop.std() > 10


def test_large_faces_are_area_averaged_not_aliased():
    """A fine stripe pattern shrunk 8x should average to grey, not alias into stripes."""
    stripes = np.zeros((1024, 1024, 3), np.uint8)
    stripes[:, ::2] = 255
    lm = FACECOMP_V1.pixels(128) * 8 + 3.5  # the template at 8x scale
    from facecomp.face import Face

    face = Face(box=(0, 0, 1024, 1024), score=1.0, landmarks=lm)
    crop, _ = align_face(stripes, face, AlignConfig(128))
    assert abs(crop.mean() - 127.5) < 3 and crop.std() < 6
