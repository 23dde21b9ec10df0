"""Blending with real OpenCV: only masked regions change, identity round trip, no seams,
faces at the border with Poisson."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from facecomp.stages.align import AlignConfig, align_faces
from facecomp.stages.blend import BlendConfig, face_mask, paste_faces
from facecomp.errors import ConfigError
from facecomp.geometry import FACECOMP_V1

from ..conftest import load_rgb, media

CFG = AlignConfig(128)


def _aligned(detector, img):
    faces = detector.detect(img)
    crops, aligned = align_faces(img, faces, CFG)
    return crops, aligned


def _union(img, patches):
    full = np.zeros(img.shape[:2], np.float32)
    for p in patches:
        p.union_into(full)
    return full


def test_face_mask_is_one_in_the_middle_and_zero_at_the_crop_edge():
    m = face_mask(128, FACECOMP_V1)
    assert m.dtype == np.float32 and m.shape == (128, 128)
    eyes_mouth = FACECOMP_V1.pixels(128)
    for x, y in eyes_mouth.round().astype(int):
        assert m[y, x] == 1.0  # the eyes, nose and mouth are fully inside
    assert m[0].max() == 0 and m[-1].max() == 0 and m[:, 0].max() == 0 and m[:, -1].max() == 0
    assert 0.2 < (m > 0).mean() < 0.6


@pytest.mark.parametrize("method", ["feather", "poisson"])
def test_inverted_faces_change_only_inside_the_masks(detector, group_image, method):
    crops, aligned = _aligned(detector, group_image)
    out, patches = paste_faces(group_image, aligned, 255 - crops, crops, FACECOMP_V1,
                               BlendConfig(method=method, color_match=False))
    mask = _union(group_image, patches)
    diff = np.abs(out.astype(int) - group_image.astype(int)).max(axis=2)
    assert np.array_equal(out[mask == 0], group_image[mask == 0])  # bit-identical outside
    core = mask >= 0.999
    assert diff[core].mean() > 40  # and clearly changed inside
    assert len(patches) == len(aligned) == 6


@pytest.mark.parametrize("method", ["feather", "poisson"])
@pytest.mark.parametrize("keep_detail", [True, False])
def test_identity_translation_returns_the_input(detector, group_image, method, keep_detail):
    crops, aligned = _aligned(detector, group_image)
    out, patches = paste_faces(group_image, aligned, crops.copy(), crops, FACECOMP_V1,
                               BlendConfig(method=method, keep_detail=keep_detail))
    inside = _union(group_image, patches) > 0
    diff = np.abs(out.astype(int) - group_image.astype(int))[inside]
    if keep_detail:  # only the change is pasted: none here (Poisson's solver rounds by <= 2)
        assert diff.max() <= (1 if method == "feather" else 2) and diff.mean() < 1.0
    else:  # the whole face is resampled through the 128 px crop and back: blurs big faces
        assert diff.mean() < 8


def test_strength_scales_the_change(detector, group_image):
    crops, aligned = _aligned(detector, group_image)
    changed = {}
    for k in (0.0, 0.5, 1.0):
        out, _ = paste_faces(group_image, aligned, 255 - crops, crops, FACECOMP_V1,
                             BlendConfig(color_match=False, strength=k))
        changed[k] = np.abs(out.astype(float) - group_image.astype(float)).mean()
    assert changed[0.0] == 0.0  # strength 0: the photo comes back unchanged
    assert changed[0.5] == pytest.approx(changed[1.0] / 2, rel=0.05)
    with pytest.raises(ConfigError):
        BlendConfig(strength=2.5)


def _ring_gradient(img, mask):
    g = img.astype(np.float32).mean(axis=2)
    gx = cv2.Sobel(g, cv2.CV_32F, 1, 0)
    gy = cv2.Sobel(g, cv2.CV_32F, 0, 1)
    mag = np.hypot(gx, gy)
    support = (mask > 0).astype(np.uint8)
    outer = cv2.dilate(support, np.ones((5, 5), np.uint8)) - support  # just outside
    ring = ((mask > 0) & (mask < 0.15)) | (outer > 0)
    return mag[ring].mean()


@pytest.mark.parametrize("method", ["feather", "poisson"])
def test_no_seam_along_the_mask_border(detector, group_image, method):
    """Gradient magnitude along the mask's outer border matches the input's (inverted faces
    are the worst case); a hard-edged paste fails the same check."""
    crops, aligned = _aligned(detector, group_image)
    out, patches = paste_faces(group_image, aligned, 255 - crops, crops, FACECOMP_V1,
                               BlendConfig(method=method, color_match=False))
    mask = _union(group_image, patches)
    g_in, g_out = _ring_gradient(group_image, mask), _ring_gradient(out, mask)
    assert g_out < 1.35 * g_in + 2, (g_in, g_out)
    hard, _ = paste_faces(group_image, aligned, 255 - crops, crops, FACECOMP_V1,
                          BlendConfig(method="feather", color_match=False, feather=0.0))
    g_hard = _ring_gradient(hard, mask)
    assert g_hard > 1.35 * g_in + 2, (g_in, g_hard)  # the check does catch a seam


def test_poisson_on_faces_cut_by_the_border(detector):
    img = load_rgb(media("group_04_family_border.jpg"))
    crops, aligned = _aligned(detector, img)
    out, patches = paste_faces(img, aligned, 255 - crops, crops, FACECOMP_V1,
                               BlendConfig(method="poisson", color_match=False))
    mask = _union(img, patches)
    left = min(range(len(aligned)), key=lambda i: aligned[i].box[0])
    p = patches[left]
    assert aligned[left].box[0] < 0.2 * aligned[left].size and p.x0 == 0  # its padded
    # region was clipped by the border ...
    h, w = p.mask.shape
    region = (slice(p.y0, p.y0 + h), slice(p.x0, p.x0 + w))
    changed = np.abs(out[region].astype(int) - img[region].astype(int)).max(axis=2)
    assert changed[p.mask >= 0.999].mean() > 30  # ... and that face really changed
    assert np.array_equal(out[mask == 0], img[mask == 0])


def test_a_face_half_outside_the_image(detector):
    """Cut a photo through a face's middle: its left half is outside; Poisson still works and
    nothing outside the mask changes."""
    from facecomp.face import Face

    img = load_rgb(media("group_14_poker_table.jpg"))
    f = max(detector.detect(img), key=lambda f: f.size)
    x1 = int(f.centre[0])
    cut = np.ascontiguousarray(img[:, x1:])
    moved = Face(box=(f.box[0] - x1, f.box[1], f.box[2] - x1, f.box[3]), score=f.score,
                 landmarks=f.landmarks - [x1, 0])
    crops, aligned = align_faces(cut, [moved], CFG)
    out, patches = paste_faces(cut, aligned, 255 - crops, crops, FACECOMP_V1,
                               BlendConfig(method="poisson", color_match=False))
    mask = _union(cut, patches)
    assert patches[0].x0 == 0 and mask[:, 0].max() > 0
    assert np.array_equal(out[mask == 0], cut[mask == 0])
    assert np.abs(out.astype(int) - cut.astype(int))[mask >= 0.999].mean() > 30


def test_color_match_keeps_the_original_face_colour(detector, group_image):
    crops, aligned = _aligned(detector, group_image)
    tinted = np.clip(crops.astype(int) + [60, -30, -30], 0, 255).astype(np.uint8)
    on, p_on = paste_faces(group_image, aligned, tinted, crops, FACECOMP_V1,
                           BlendConfig(color_match=True))
    off, _ = paste_faces(group_image, aligned, tinted, crops, FACECOMP_V1,
                         BlendConfig(color_match=False, chroma_limit=0))
    core = _union(group_image, p_on) >= 0.999
    err_on = np.abs(on[core].mean(0) - group_image[core].mean(0)).max()
    err_off = np.abs(off[core].mean(0) - group_image[core].mean(0)).max()
    assert err_on < 6 < 25 < err_off


def test_blend_config_is_validated():
    with pytest.raises(ConfigError):
        BlendConfig(method="average")
    with pytest.raises(ConfigError):
        BlendConfig(mask_scale=3.0)


def test_the_mask_fits_inside_the_crop_for_every_template():
    from facecomp.geometry import TEMPLATES

    for template in TEMPLATES.values():
        for scale in (1.0, 1.6):
            m = face_mask(128, template, scale)
            border = np.concatenate([m[0], m[-1], m[:, 0], m[:, -1]])
            assert border.max() == 0, (template.name, scale)  # it fades out inside the crop
            pts = template.pixels(128).round().astype(int)
            assert all(m[y, x] == 1.0 for x, y in pts), template.name
