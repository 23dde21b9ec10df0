"""Detection with the real MTCNN: face counts on real photos, hard negatives, large images."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
import torch

from facecomp.stages.detect import DetectConfig, MTCNNDetector, _is_cut, order_faces
from facecomp.errors import ConfigError

from ..conftest import load_rgb, media

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
    noise = np.random.default_rng(0).integers(0, 256, (14, 200, 3), dtype=np.uint8)
    assert detector.detect(noise) == []  # no pyramid level at all (facenet-pytorch raised)


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
    assert detector.nets.pnet.conv1.weight.is_contiguous(memory_format=torch.channels_last)
    ours = detector.detect(group_image)
    order = np.argsort([(b[0] + b[2]) / 2 for b in boxes])
    assert len(ours) == len(boxes) == 6
    inside = [k for k in order if not _is_cut(group_image.shape, boxes[k])]
    assert len(inside) == 5  # the sixth is cut by the border: re-measured, see below
    for face, k in zip(ours, order):
        if k not in inside:
            continue
        assert np.abs(np.array(face.box) - boxes[k]).max() < 1e-2
        assert np.abs(face.landmarks - points[k]).max() < 1e-2
        assert abs(face.score - probs[k]) < 1e-4


@pytest.mark.parametrize("name", [None, "group_20_staff_photo_100faces.jpg"])
def test_own_detect_face_gives_facenets_numbers(detector, group_image, name):
    """_detect_face batches R-Net's and O-Net's crops by size and runs the nets in smaller
    chunks; the faces must not change. The 100-face photo sends 2,600 crops through R-Net, so
    several chunks; oneDNN may then round differently in the last bit, nothing more."""
    img = group_image if name is None else np.ascontiguousarray(load_rgb(media(name)))
    boxes, points = detector._detect_face(img)
    ref_boxes, ref_probs, ref_points = detector._mtcnn.detect(img, landmarks=True)
    ref = np.concatenate([ref_boxes.astype(np.float32), ref_probs.astype(np.float32)[:, None],
                          ref_points.astype(np.float32).reshape(-1, 10)], axis=1)
    ours = np.concatenate([boxes, points.reshape(-1, 10)], axis=1)
    assert len(ours) == len(ref) >= 6
    key = lambda a: a[np.lexsort(a[:, :2].T)]  # noqa: E731 - facenet orders ties differently
    diff = np.abs(key(ours) - key(ref))
    assert diff[:, 4].max() < 1e-5  # scores
    assert np.delete(diff, 4, axis=1).max() < 1e-3  # pixels
    # off the CPU the detector calls facenet-pytorch's own loop; both branches agree (exactly
    # without the border padding, which that loop does on the whole image instead of per level)
    plain = DetectConfig(border_pad=0, large_faces=False, rotations="off")
    ours_d, other = MTCNNDetector(plain), MTCNNDetector(plain)
    other.device = "elsewhere"  # takes that branch while the nets stay on the CPU
    mine, theirs = ours_d.detect(img), other.detect(img)
    assert len(mine) == len(theirs) >= 6
    for a, b in zip(mine, theirs):
        assert np.abs(np.subtract(a.box, b.box)).max() < 1e-3
        assert np.abs(a.landmarks - b.landmarks).max() < 1e-3


def _shifted(image: np.ndarray, dx: float, dy: float) -> np.ndarray:
    m = np.float32([[1, 0, dx], [0, 1, dy]])
    return cv2.warpAffine(image, m, image.shape[1::-1], borderMode=cv2.BORDER_REPLICATE)


@pytest.mark.parametrize("max_side", [2000, 720])  # 720: refined on a downscaled copy
def test_refine_follows_faces_that_moved_as_full_detection_sees_them(group_image, max_side):
    """refine (O-Net on last frame's boxes) agrees with a full detection of the new frame."""
    det = MTCNNDetector(DetectConfig(max_side=max_side))
    image = cv2.copyMakeBorder(group_image, 40, 40, 40, 40, cv2.BORDER_CONSTANT, value=(128,) * 3)
    before = det.detect(image)
    moved = _shifted(image, 7.0, -5.0)
    full = det.detect(moved)
    refined = det.refine(moved, before, passes=2)  # as FaceComp.refine
    assert [r.box for r in refined] == [r.box for r in det.refine(moved, det.refine(moved,
                                                                                  before))]
    assert len(refined) == len(full) == 6 and all(f is not None for f in refined)
    for a, b, r in zip(before, full, refined):
        assert r.score >= 0.9
        # where the full detector puts them, to within its own noise (a few % of the face)
        assert np.abs(r.landmarks - b.landmarks).max() < max(2.5, 0.05 * b.size)
        # and clearly moved with the image: 7 px right, 5 px up
        shift = (r.landmarks - a.landmarks).mean(axis=0)
        px = max(1.0, max(image.shape) / max_side)  # one pixel of the copy detected on
        assert np.abs(shift - [7.0, -5.0]).max() < 1.5 * px, shift


def test_refine_drops_faces_that_left(detector, group_image):
    faces = detector.detect(group_image)
    blank = np.full_like(group_image, 127)
    assert detector.refine(blank, faces) == [None] * len(faces)
    assert detector.refine(group_image, []) == []
    # a box entirely outside the image
    from facecomp.face import Face

    out = Face((-500.0, -500.0, -400.0, -400.0), 0.99, np.full((5, 2), -450.0))
    assert detector.refine(group_image, [out]) == [None]


@pytest.mark.parametrize("max_side", [2000, 720])
def test_detect_near_finds_a_face_that_jumped_where_refine_loses_it(group_image, max_side):
    """Faces that moved 45 % of their size between frames: O-Net on the old boxes loses most,
    the full detector's stages in a window around each old box find them where a full
    detection of the new frame does; windows with no face there find nothing; a face cut by the border is
    found from a window that reaches past it."""
    det = MTCNNDetector(DetectConfig(max_side=max_side))
    image = cv2.copyMakeBorder(group_image, 60, 60, 60, 60, cv2.BORDER_CONSTANT, value=(128,) * 3)
    before = det.detect(image)
    size = np.median([f.size for f in before])
    dx, dy = 0.4 * size, -0.2 * size
    moved = _shifted(image, dx, dy)
    full = det.detect(moved)
    near = det.detect_near(moved, before)
    assert len(near) == len(full) == len(before) == 6
    for b, n in zip(full, near):  # where the full detector puts them, to within its own noise
        assert np.abs(n.landmarks - b.landmarks).max() < max(2.5, 0.05 * b.size)
    for a, n in zip(before, near):
        assert np.abs(n.landmarks - a.landmarks - [dx, dy]).max() < 0.05 * a.size
    assert sum(f is None for f in det.refine(moved, before, passes=2)) >= 3  # what it buys
    blank = np.full_like(image, 127)
    assert det.detect_near(blank, before) == []
    assert det.detect_near(moved, []) == []
    # the leftmost face pushed 30 % out of the image: found, cut, from its old box
    left = min(before, key=lambda f: f.box[0])
    cut = int(left.box[0] + 0.3 * (left.box[2] - left.box[0]))
    part = np.ascontiguousarray(image[:, cut:])
    off = np.array([cut, 0])
    from facecomp.face import Face

    old = Face(tuple(np.asarray(left.box) - np.tile(off, 2)), left.score, left.landmarks - off)
    found = det.detect_near(part, [old])
    assert len(found) == 1, [g.box for g in found]
    x1, _, x2, _ = found[0].box
    assert x1 < 0 and abs(x2 - old.box[2]) < 0.3 * left.size, found[0].box  # cut, same face


def test_faces_cut_by_the_border_keep_their_landmarks(detector, group_image):
    """A face cut by the image border is measured on a black-padded square crop (the original
    MTCNN's way): its landmarks stay where they were in the uncut photo. facenet-pytorch's
    stretched crops put them ~20 % of the face size off."""
    errors = []
    for f in detector.detect(group_image):
        x1, _, x2, _ = f.box
        for keep_right in (True, False):
            cut = int(x1 + 0.1 * (x2 - x1)) if keep_right else int(x2 - 0.1 * (x2 - x1))
            if not 0 < cut < group_image.shape[1]:
                continue
            part = np.ascontiguousarray(group_image[:, cut:] if keep_right
                                        else group_image[:, :cut])
            off = np.array([cut if keep_right else 0, 0])
            near = [g for g in detector.detect(part)
                    if np.linalg.norm(np.array(g.centre) + off - f.centre) < 0.3 * f.size]
            if near:
                errors.append(np.linalg.norm(near[0].landmarks + off - f.landmarks, axis=1).max()
                              / f.size)
    assert len(errors) >= 8, errors
    assert np.median(errors) < 0.06 and np.percentile(errors, 75) < 0.1, np.round(errors, 3)


# --- faces the plain pyramid misses: cut by the border, very large, turned ----------------

PLAIN = DetectConfig(border_pad=0, large_faces=False, rotations="off")


def _counts():
    import json
    from pathlib import Path

    return json.loads((Path(__file__).parents[1] / "data" / "face_counts.json").read_text())["photos"]


def _found(faces, xy, tol):
    return any(abs(f.centre[0] - xy[0]) <= tol and abs(f.centre[1] - xy[1]) <= tol + 0.5 * f.size
               for f in faces)


def test_faces_cut_by_the_top_border_are_found(detector):
    img = load_rgb(media("group_15_masked_crowd_hands.jpg"))
    marked = _counts()["group_15_masked_crowd_hands.jpg"]["border"]
    faces = detector.detect(img)
    assert all(_found(faces, xy, 30) for xy in marked)
    plain = MTCNNDetector(PLAIN).detect(img)
    assert sum(_found(plain, xy, 30) for xy in marked) < len(marked)  # what the padding buys
    assert len(faces) >= len(plain)


def test_padding_leaves_the_faces_inside_the_image_exactly_as_they_were(detector):
    img = load_rgb(media("group_20_staff_photo_100faces.jpg"))
    h, w = img.shape[:2]
    plain = MTCNNDetector(PLAIN).detect(img)
    padded = detector.detect(img)
    inside = [f for f in plain if min(f.box[0], f.box[1], w - f.box[2], h - f.box[3]) > f.size]
    boxes = {tuple(np.round(f.box, 3)) for f in padded}
    assert len(inside) > 80 and all(tuple(np.round(f.box, 3)) in boxes for f in inside)


def test_a_face_cut_deeply_by_the_corner_is_found(detector):
    img = load_rgb(media("group_04_family_border.jpg"))
    face = max(detector.detect(img), key=lambda f: f.size)
    (cx, cy), s = face.centre, face.size
    x0, y0 = int(cx - 0.2 * s), int(cy - 0.2 * s)  # its centre 0.2 face sizes from the corner
    cut = np.ascontiguousarray(img[y0:y0 + int(2.5 * s), x0:x0 + int(3 * s)])
    assert _found(detector.detect(cut), (cx - x0, cy - y0), 0.3 * s)
    assert not _found(MTCNNDetector(PLAIN).detect(cut), (cx - x0, cy - y0), 0.3 * s)


@pytest.mark.parametrize("turns", [1, 2, 3])
def test_a_photo_shot_sideways_or_upside_down_has_its_faces_found_upright(detector, turns):
    from facecomp.stages.align import AlignConfig, align_faces

    img = np.ascontiguousarray(np.rot90(load_rgb(media("group_14_poker_table.jpg")), turns))
    assert len(MTCNNDetector(PLAIN).detect(img)) <= 1
    faces = detector.detect(img)
    assert len(faces) >= 5
    # the landmarks are the faces' own: aligned crops come out upright (eyes above the mouth)
    crops, aligned = align_faces(img, faces, AlignConfig(128))
    for f in aligned:
        from facecomp.geometry import transform_points

        pts = transform_points(f.crop_from_image, f.landmarks)
        assert pts[:2, 1].max() < pts[3:, 1].min() and pts[0, 0] < pts[1, 0]


def test_turn_points_round_trips():
    from facecomp.stages.detect import _turn_points

    img = np.arange(5 * 7).reshape(5, 7)
    pts = np.array([[0, 0], [6, 4], [2, 3]], np.float64)
    for k in range(4):
        turned = np.rot90(img, k)
        q = _turn_points(pts, k, img.shape)
        assert [turned[int(y), int(x)] for x, y in q] == [img[int(y), int(x)] for x, y in pts]
        back = _turn_points(q, (4 - k) % 4, turned.shape)
        assert np.allclose(back, pts)


def test_recall_on_the_hand_counted_photos_is_at_least_the_plain_detectors(detector):
    counts = _counts()
    for name in ("group_04_family_border.jpg", "group_10_kids_border.jpg",
                 "group_14_poker_table.jpg"):
        img = load_rgb(media(name))
        n = counts[name]["faces"]
        assert len(detector.detect(img)) >= min(n, len(MTCNNDetector(PLAIN).detect(img)))


def test_a_turned_group_photo_of_small_faces_is_found(detector):
    img = np.ascontiguousarray(np.rot90(load_rgb(media("group_07_solvay1927_gray.jpg")), 1))
    assert MTCNNDetector(PLAIN).detect(img) == []
    assert len(detector.detect(img)) >= 24  # of 29; 28 upright


@pytest.mark.parametrize("method", ["union", "min"])
def test_own_nms_keeps_what_torchvision_and_facenet_keep(method):
    """The detector's NMS (no torchvision import at run time) keeps the same boxes, in the
    same order, as torchvision's (union) and facenet-pytorch's (min), on clusters of windows
    like P-Net's, with exact ties, empty boxes and a lone box."""
    from facenet_pytorch.models.utils.detect_face import batched_nms_numpy
    from torchvision.ops import nms as torchvision_nms

    from facecomp.stages.mtcnn import nms

    rng = np.random.default_rng(3)
    centres = rng.uniform(0, 400, (30, 2))
    xy = np.repeat(centres, 40, axis=0) + rng.normal(0, 6, (1200, 2))
    side = rng.uniform(8, 40, (1200, 1))
    boxes = np.concatenate([xy, xy + side], 1).astype(np.float32)
    boxes[::97, 2:] = boxes[::97, :2]  # empty boxes
    boxes = np.concatenate([boxes, [[900, 900, 930, 930]]]).astype(np.float32)
    scores = rng.uniform(0.6, 1.0, len(boxes)).astype(np.float32)
    if method == "union":  # many exact ties, which torchvision breaks in input order too
        scores = scores.round(2)
    b, s = torch.from_numpy(boxes), torch.from_numpy(scores)
    for thr in (0.3, 0.5, 0.7):
        ours = nms(b, s, thr, method)
        if method == "union":
            theirs = torchvision_nms(b, s, thr)
            assert torch.equal(ours, theirs)
        else:  # facenet's NMS returns the kept boxes in its own order: compare the sets
            theirs = batched_nms_numpy(b, s, torch.zeros(len(b), dtype=torch.long), thr, "Min")
            assert sorted(ours.tolist()) == sorted(theirs.tolist())
        assert len(ours) < len(b) and (len(b) - 1) in ours.tolist()
