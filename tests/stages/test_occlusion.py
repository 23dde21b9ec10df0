"""The occlusion model with real faces and real OpenCV: what covers a face keeps its pixels
after translation while the rest of the face changes; clean faces are left to the generator."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from facecomp.stages.align import AlignConfig, align_faces
from facecomp.stages.blend import BlendConfig, face_mask
from facecomp.errors import ModelError
from facecomp.stages.occlusion import Occlusion, load_occlusion, shipped_occlusion

from ..conftest import Shift, load_rgb, media


@pytest.fixture(scope="module")
def occlusion():
    if not shipped_occlusion().is_file():
        pytest.skip("the occlusion model is not shipped in this checkout")
    return Occlusion.load()


def _object(img, box, texture, kind, rng):
    """Paste an occluder over the part of a face box: a phone (rounded box) or a microphone
    (a ball on a handle), filled with a texture from another photo. Returns the new image and
    the occluder's mask."""
    x0, y0, x1, y1 = (int(v) for v in box)
    w, h = x1 - x0, y1 - y0
    mask = np.zeros(img.shape[:2], np.uint8)
    if kind == "phone":
        cx = x0 + int(w * rng.uniform(0.55, 0.75))
        cv2.rectangle(mask, (cx, y0 + int(0.25 * h)), (cx + int(0.45 * w), y1 + int(0.3 * h)),
                      255, -1)
    else:
        c = (x0 + int(w * rng.uniform(0.35, 0.65)), y0 + int(0.85 * h))
        cv2.circle(mask, c, int(0.22 * w), 255, -1)
        cv2.line(mask, c, (c[0] + int(0.2 * w), y1 + h), 255, int(0.12 * w))
    th, tw = texture.shape[:2]
    tex = cv2.resize(texture, (img.shape[1], img.shape[0]))
    out = np.where(mask[..., None] > 0, tex, img)
    return out, mask > 0


def test_an_occluder_over_a_real_face_keeps_its_pixels_while_the_face_changes(detector,
                                                                              occlusion):
    from facecomp.pipeline import FaceComp, PhotoConfig

    img = load_rgb(media("group_14_poker_table.jpg"))
    texture = load_rgb(media("noface_01_landscape_lake.jpg"))  # a texture the model never saw
    faces = sorted(detector.detect(img), key=lambda f: -f.size)[:4]
    rng = np.random.default_rng(0)
    covered = np.zeros(img.shape[:2], bool)
    for k, f in enumerate(faces):
        img, m = _object(img, f.box, texture, ("phone", "mic")[k % 2], rng)
        covered |= m
    fc = FaceComp(PhotoConfig(blend=BlendConfig(color_match=False)), generator=Shift(0.35),
                  detector=detector, occlusion=occlusion)
    result = fc.process(img)
    # without the occlusion model the same occluders are painted over
    painted = FaceComp(PhotoConfig(blend=BlendConfig(color_match=False, keep_occluders=False)),
                       generator=Shift(0.35), detector=detector).process(img)
    face = painted.changed_mask() >= 0.999  # the solid face masks, occluders or not
    inner = cv2.erode(covered.astype(np.uint8), np.ones((7, 7), np.uint8)) > 0
    bare = cv2.erode((~covered).astype(np.uint8), np.ones((7, 7), np.uint8)) > 0
    diff = np.abs(result.image.astype(int) - img).max(axis=2)
    on_faces = inner & face
    assert on_faces.sum() > 1500
    assert (diff[on_faces] <= 1).mean() > 0.97  # the occluder is left as it was (+-1 level)
    assert diff[face & bare].mean() > 20  # the rest of the face changed
    painted_diff = np.abs(painted.image.astype(int) - img).max(axis=2)
    assert (painted_diff[on_faces] <= 1).mean() < 0.2


def test_clean_faces_are_left_to_the_generator(detector, occlusion):
    img = load_rgb(media("group_10_kids_border.jpg"))
    from facecomp.geometry import FACECOMP_TIGHT

    crops, _ = align_faces(img, detector.detect(img), AlignConfig(128, FACECOMP_TIGHT))
    keep = occlusion.keep_weights(crops, FACECOMP_TIGHT)
    solid = face_mask(128, FACECOMP_TIGHT) >= 0.999
    assert keep.shape == (len(crops), 128, 128) and keep.dtype == np.float32
    # the cup held near one girl's chin may be flagged; the faces themselves are kept
    assert np.median([(k[solid] > 0.5).mean() for k in keep]) > 0.95


def test_damaged_or_foreign_files_are_refused(tmp_path):
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(b"not a model")
    with pytest.raises(ModelError, match="not a readable"):
        load_occlusion(bad)
    with pytest.raises(ModelError, match="no such occlusion model"):
        load_occlusion(tmp_path / "missing.safetensors")
    from facecomp.stages.age import shipped_estimator

    with pytest.raises(ModelError, match="not a facecomp occlusion model"):
        load_occlusion(shipped_estimator())
