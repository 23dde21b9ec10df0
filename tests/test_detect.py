"""Detection with the real MTCNN: face counts on real photos, hard negatives, large images."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
import torch

from facecomp.detect import DetectConfig, MTCNNDetector, order_faces
from facecomp.errors import ConfigError

from .conftest import load_rgb, media

# (file, expected faces, tolerance): expected = the clearly visible faces (see PROVENANCE.md).
GROUPS = [
    ("group_01_family_indoor.jpg", 7, 1),
    ("group_04_family_border.jpg", 6, 0),
    ("group_07_solvay1927_gray.jpg", 29, 3),
    ("group_10_kids_border.jpg", 9, 1),
    ("group_14_poker_table.jpg", 6, 0),
    ("group_20_staff_photo_100faces.jpg", 100, 8),
]


@pytest.mark.parametrize("name,expected,tol", GROUPS)
def test_finds_the_faces_of_real_group_photos(detector, name, expected, tol):
    faces = detector.detect(load_rgb(media(name)))
    assert abs(len(faces) - expected) <= tol, len(faces)
    assert all(f.score >= 0.9 for f in faces)


@pytest.mark.parametrize("name", ["noface_01_landscape_lake.jpg", "noface_05_dogs.jpg",
                                  "cartoon_04_creatures_nohuman.jpg"])
def test_finds_no_face_where_there_is_none(detector, name):
    assert detector.detect(load_rgb(media(name))) == []


def test_the_repository_sample_has_six_faces(detector, group_image):
    faces = detector.detect(group_image)
    assert len(faces) == 6
    xs = [f.centre[0] for f in faces]
    assert xs == sorted(xs)  # numbered left to right


def test_landmarks_are_plausible(detector, group_image):
    for f in detector.detect(group_image):
        le, re, nose, lm, rm = f.landmarks
        x1, y1, x2, y2 = f.box
        assert le[0] < re[0] and lm[0] < rm[0]
        assert max(le[1], re[1]) < nose[1] < min(lm[1], rm[1]) + 1
        assert np.all((f.landmarks >= [x1 - 2, y1 - 2]) & (f.landmarks <= [x2 + 2, y2 + 2]))


def test_large_photos_are_detected_on_a_downscaled_copy_and_mapped_back(group_image):
    full = MTCNNDetector(DetectConfig(max_side=4000)).detect(group_image)
    small = MTCNNDetector(DetectConfig(max_side=720)).detect(group_image)  # scale 0.5
    assert len(small) == len(full)
    for a, b in zip(full, small):
        # mapped back into full-resolution coordinates, within a few pixels (2x the noise)
        assert np.abs(a.landmarks - b.landmarks).max() < max(4.0, 0.06 * a.size)


def test_a_tiny_or_flat_image_has_no_faces(detector):
    assert detector.detect(np.zeros((1, 1, 3), np.uint8)) == []
    assert detector.detect(np.full((64, 48, 3), 128, np.uint8)) == []


def test_faces_upscaled_4x_are_still_found(detector):
    img = load_rgb(media("group_04_family_border.jpg"))
    big = cv2.resize(img, None, fx=4, fy=4, interpolation=cv2.INTER_LINEAR)  # 2400 px wide
    assert len(detector.detect(big)) == 6


def test_config_is_validated():
    with pytest.raises(ConfigError):
        DetectConfig(min_score=1.5)
    with pytest.raises(ConfigError):
        DetectConfig(max_side=10)


def test_order_faces_is_left_to_right():
    from facecomp.face import Face

    lm = np.zeros((5, 2))
    faces = [Face((50, 0, 60, 10), 1, lm), Face((0, 0, 10, 10), 1, lm), Face((20, 5, 30, 15), 1, lm)]
    assert [f.box[0] for f in order_faces(faces)] == [0, 20, 50]


def test_channels_last_nets_find_what_plain_mtcnn_finds(detector, group_image):
    """The detector runs MTCNN's nets channels_last for speed; the faces must not change."""
    from facenet_pytorch import MTCNN

    c = detector.config
    plain = MTCNN(keep_all=True, min_face_size=c.min_face_size, thresholds=list(c.thresholds),
                  post_process=False)
    boxes, probs, points = plain.detect(group_image, landmarks=True)
    assert detector._mtcnn.pnet.conv1.weight.is_contiguous(memory_format=torch.channels_last)
    ours = detector.detect(group_image)
    order = np.argsort([(b[0] + b[2]) / 2 for b in boxes])
    assert len(ours) == len(boxes) == 6
    for face, k in zip(ours, order):
        assert np.abs(np.array(face.box) - boxes[k]).max() < 1e-2
        assert np.abs(face.landmarks - points[k]).max() < 1e-2
        assert abs(face.score - probs[k]) < 1e-4
