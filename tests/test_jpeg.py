"""JPEG in, JPEG out: blocks under no changed pixel keep their DCT coefficients (and decode
bit-identical), the source's quantisation tables, chroma subsampling and markers are kept."""

from __future__ import annotations


import numpy as np
import pytest
from PIL import Image, ImageCms

from facecomp.io import read_image, write_image

from .conftest import Shift, media

jpeglib = pytest.importorskip("jpeglib")


def _dilate(mask, r):
    import cv2

    return cv2.dilate(mask.astype(np.uint8), np.ones((2 * r + 1, 2 * r + 1), np.uint8)) > 0


def _change(rgb, boxes):
    out = rgb.copy()
    for x0, y0, x1, y1 in boxes:
        out[y0:y1, x0:x1] = np.clip(out[y0:y1, x0:x1].astype(int) + 25, 0, 255)
    changed = np.any(out != rgb, axis=2)
    return out, changed


def _decode(path):
    return np.array(Image.open(path).convert("RGB"))


def test_unchanged_blocks_keep_their_coefficients_and_decode_bit_identical(tmp_path):
    src_path = media("group_14_poker_table.jpg")  # 4:2:0, its own quantisation tables
    src = read_image(src_path)
    new, changed = _change(src.rgb, [(300, 200, 420, 340), (803, 150, 901, 262)])
    out = tmp_path / "out.jpg"
    write_image(out, new, like=src)
    a, b = jpeglib.read_dct(str(src_path)), jpeglib.read_dct(str(out))
    assert np.array_equal(a.qt, b.qt) and np.array_equal(a.samp_factor, b.samp_factor)
    assert np.array_equal(a.quant_tbl_no, b.quant_tbl_no)
    # luma blocks with no changed pixel: the very same coefficients
    rows, cols = a.Y.shape[:2]
    grid = np.zeros((rows * 8, cols * 8), bool)
    grid[:changed.shape[0], :changed.shape[1]] = changed
    touched = grid.reshape(rows, 8, cols, 8).any(axis=(1, 3))
    assert np.array_equal(a.Y[~touched], b.Y[~touched]) and touched.mean() < 0.05
    # decoded: every pixel away from the change (its 16 px chroma blocks and their rim) is
    # bit-identical; the changed region carries the change
    got = _decode(out)
    far = ~_dilate(changed, 17)
    assert np.array_equal(got[far], src.rgb[far])
    outside = ~changed
    assert (got[outside] == src.rgb[outside]).all(axis=1).mean() > 0.995
    assert np.abs(got[changed].astype(int) - new[changed]).mean() < 3
    # for contrast: Pillow's own encode at quality 95 changes most of the background
    fresh = tmp_path / "fresh.jpg"
    write_image(fresh, new, like=src, keep_jpeg_blocks=False)
    assert (_decode(fresh)[far] == src.rgb[far]).all(axis=1).mean() < 0.8


def test_an_unchanged_photo_is_copied_block_for_block(tmp_path):
    src_path = media("group_04_family_border.jpg")
    src = read_image(src_path)
    out = tmp_path / "same.jpg"
    write_image(out, src.rgb, like=src)
    a, b = jpeglib.read_dct(str(src_path)), jpeglib.read_dct(str(out))
    assert all(np.array_equal(getattr(a, c), getattr(b, c)) for c in ("Y", "Cb", "Cr"))
    assert np.array_equal(_decode(out), src.rgb)


def test_exif_icc_and_comments_are_kept(tmp_path):
    rgb = np.array(Image.open(media("group_04_family_border.jpg")).convert("RGB"))
    icc = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()
    exif = Image.Exif()
    exif[0x010F] = "FaceCompTestCamera"  # Make
    exif[0x0112] = 1
    src_path = tmp_path / "src.jpg"
    xmp = b'<x:xmpmeta xmlns:x="adobe:ns:meta/">facecomp test</x:xmpmeta>'
    Image.fromarray(rgb).save(src_path, quality=80, subsampling=2, exif=exif.tobytes(),
                              icc_profile=icc, comment=b"kept", xmp=xmp)
    src = read_image(src_path)
    new, _ = _change(src.rgb, [(100, 100, 200, 200)])
    out = tmp_path / "out.jpg"
    write_image(out, new, like=src)
    with Image.open(out) as im:
        assert im.getexif().get(0x010F) == "FaceCompTestCamera"
        assert im.info.get("icc_profile") == icc and im.info.get("comment") == b"kept"
        assert im.info.get("xmp") == xmp
        assert im.layer[1][1:3] == (1, 1) and im.layer[0][1:3] == (2, 2)  # still 4:2:0


def test_a_greyscale_jpeg_stays_one_channel_and_keeps_its_blocks(tmp_path):
    src_path = media("group_07_solvay1927_gray.jpg")
    src = read_image(src_path)
    assert src.mode == "L"
    new, changed = _change(src.rgb, [(200, 150, 260, 220)])
    out = tmp_path / "out.jpg"
    write_image(out, new, like=src)
    with Image.open(out) as im:
        assert im.mode == "L"
    got = np.array(Image.open(out))
    far = ~_dilate(changed, 9)
    assert np.array_equal(got[far], src.rgb[..., 0][far])
    assert np.abs(got[changed].astype(int) - new[..., 0][changed]).mean() < 3


def test_a_turned_source_is_encoded_afresh_upright(tmp_path, caplog):
    src = read_image(media("portrait_01_exif_rot90_hands.jpg"))
    assert src.orientation == 6
    small = tmp_path / "turned.jpg"  # a smaller copy with the same EXIF turn
    with Image.open(media("portrait_01_exif_rot90_hands.jpg")) as im:
        exif = im.getexif()
        im.resize((im.width // 8, im.height // 8)).save(small, exif=exif.tobytes(), quality=85)
    src = read_image(small)
    out = tmp_path / "out.jpg"
    with caplog.at_level("INFO", logger="facecomp.io"):
        write_image(out, src.rgb, like=src)
    assert "encoded again" in caplog.text and "orientation" in caplog.text
    with Image.open(out) as im:
        assert im.getexif().get(0x0112, 1) == 1 and im.size == (src.rgb.shape[1], src.rgb.shape[0])


def test_the_photo_command_leaves_a_jpeg_background_untouched(tmp_path, detector):
    from facecomp.frontends.photo import plan_jobs, run_photos
    from facecomp.pipeline import FaceComp, PhotoConfig

    src_path = media("group_14_poker_table.jpg")
    out = tmp_path / "out.jpg"
    from facecomp.stages.blend import BlendConfig

    fc = FaceComp(PhotoConfig(blend=BlendConfig(color_match=False)), generator=Shift(0.4),
                  detector=detector)
    summary = run_photos(fc, plan_jobs([src_path], out))
    assert summary.count("done") == 1
    src = read_image(src_path).rgb
    result = fc.process(src)
    touched = result.changed_mask() > 0
    got = _decode(out)
    far = ~_dilate(touched, 17)
    assert np.array_equal(got[far], src[far])
    assert (got[~touched] == src[~touched]).all(axis=1).mean() > 0.99
    assert np.abs(got[touched].astype(int) - src[touched]).mean() > 5
