"""Tests of facecomp.io: every input is made here with numpy/Pillow, in tmp_path."""

from __future__ import annotations

import errno
import io
import logging
import os
import stat
import struct
import time
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageCms, ImageFile

from facecomp.errors import ConfigError, FaceCompError, InputError, OutputError
from facecomp.io import (DEFAULT_MAX_PIXELS, IMAGE_EXTENSIONS, LoadedImage, atomic_path,
                         decode_image, is_image_path, list_images, read_image, write_image)


def smooth_rgb(h: int = 48, w: int = 64, seed: int = 0) -> np.ndarray:
    """A photo-like image: gradients plus mild noise (compresses like a photo)."""
    y, x = np.mgrid[0:h, 0:w]
    noise = np.random.default_rng(seed).normal(0, 3, (h, w, 3))
    base = np.stack([x * 255 / w, y * 255 / h, (x + y) * 127 / (w + h) + 60], axis=2)
    return np.clip(base + noise, 0, 255).astype(np.uint8)


def noise_rgb(h: int = 24, w: int = 32, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


def encoded(im: Image.Image, fmt: str, **options: object) -> bytes:
    buf = io.BytesIO()
    im.save(buf, format=fmt, **options)
    return buf.getvalue()


def png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def assert_rgb(image: LoadedImage, h: int, w: int) -> None:
    assert image.rgb.shape == (h, w, 3) and image.rgb.dtype == np.uint8
    assert image.rgb.flags.c_contiguous


def assert_one_line(exc: FaceCompError, name: str) -> None:
    text = str(exc)
    assert "\n" not in text and name in text, text


# --- finding files ---------------------------------------------------------------------------


def test_is_image_path() -> None:
    assert IMAGE_EXTENSIONS == {".jpg", ".jpeg", ".png", ".webp", ".bmp", ".tif", ".tiff"}
    assert is_image_path(Path("a/B.JPG")) and is_image_path(Path("x.tiff"))
    assert not is_image_path(Path("notes.txt")) and not is_image_path(Path("jpg"))


def test_list_images(tmp_path: Path) -> None:
    for name in ["b.png", "a.JPG", "c.webp", ".hidden.png", "a.facecomp.png", "notes.txt"]:
        (tmp_path / name).write_bytes(b"x")
    (tmp_path / "sub.png").mkdir()
    assert list_images(tmp_path) == [tmp_path / "a.JPG", tmp_path / "b.png", tmp_path / "c.webp"]
    with pytest.raises(InputError, match="no such folder") as info:
        list_images(tmp_path / "nope")
    assert_one_line(info.value, "nope")


# --- reading: formats and modes --------------------------------------------------------------


@pytest.mark.parametrize("ext", [".png", ".bmp", ".tif"])
def test_lossless_round_trip_is_exact(tmp_path: Path, ext: str) -> None:
    rgb = noise_rgb()
    write_image(tmp_path / f"out{ext}", rgb)
    image = read_image(tmp_path / f"out{ext}")
    assert_rgb(image, 24, 32)
    assert np.array_equal(image.rgb, rgb)
    assert image.alpha is None and image.n_frames == 1 and image.path == tmp_path / f"out{ext}"
    assert image.format == {".png": "PNG", ".bmp": "BMP", ".tif": "TIFF"}[ext]


@pytest.mark.parametrize("ext", [".jpg", ".jpeg", ".webp"])
def test_lossy_round_trip_is_close(tmp_path: Path, ext: str) -> None:
    rgb = smooth_rgb()
    write_image(tmp_path / f"out{ext}", rgb, quality=95)
    image = read_image(tmp_path / f"out{ext}")
    assert_rgb(image, 48, 64)
    assert np.abs(image.rgb.astype(int) - rgb).mean() < 3.0


def test_jpeg_high_quality_is_444(tmp_path: Path) -> None:
    write_image(tmp_path / "hi.jpg", smooth_rgb(), quality=95)
    write_image(tmp_path / "lo.jpg", smooth_rgb(), quality=80)
    with Image.open(tmp_path / "hi.jpg") as hi, Image.open(tmp_path / "lo.jpg") as lo:
        luma = [im.layer[0][1:3] for im in (hi, lo)]  # type: ignore[attr-defined]
    assert luma == [(1, 1), (2, 2)]  # 4:4:4 and 4:2:0


@pytest.mark.parametrize("ext", [".png", ".tif", ".webp"])
def test_alpha_round_trip(tmp_path: Path, ext: str) -> None:
    rgb = smooth_rgb()
    alpha = np.tile(np.linspace(0, 255, 64).astype(np.uint8), (48, 1))
    write_image(tmp_path / f"a{ext}", rgb, alpha)
    image = read_image(tmp_path / f"a{ext}")
    assert image.alpha is not None and image.alpha.shape == (48, 64)
    assert image.alpha.dtype == np.uint8 and image.alpha.flags.c_contiguous
    if ext == ".webp":
        assert np.abs(image.alpha.astype(int) - alpha).max() <= 2
    else:
        assert np.array_equal(image.alpha, alpha) and np.array_equal(image.rgb, rgb)


def test_rgba_png_from_pillow_keeps_alpha(tmp_path: Path) -> None:
    rgba = np.dstack([noise_rgb(), noise_rgb(seed=1)[:, :, 0]])
    Image.fromarray(rgba).save(tmp_path / "rgba.png")
    image = read_image(tmp_path / "rgba.png")
    assert image.alpha is not None
    assert np.array_equal(image.rgb, rgba[:, :, :3]) and np.array_equal(image.alpha, rgba[:, :, 3])


def test_jpeg_drops_alpha_with_warning(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    alpha = np.full((48, 64), 255, np.uint8)
    with caplog.at_level(logging.WARNING, logger="facecomp.io"):
        write_image(tmp_path / "opaque.jpg", smooth_rgb(), alpha)
        assert not caplog.records  # an all-opaque alpha loses nothing
        alpha[0, 0] = 0
        write_image(tmp_path / "a.jpg", smooth_rgb(), alpha)
    assert "alpha" in caplog.text
    assert read_image(tmp_path / "a.jpg").alpha is None


def test_16bit_png_scales_by_257(tmp_path: Path) -> None:
    values = np.linspace(0, 65535, 1024).round().astype(np.uint16).reshape(4, 256)
    Image.fromarray(values).save(tmp_path / "g16.png")
    image = read_image(tmp_path / "g16.png")
    assert_rgb(image, 4, 256)
    assert np.abs(image.rgb[:, :, 0].astype(int) - np.round(values / 257)).max() <= 1
    assert image.rgb[0, 0, 0] == 0 and image.rgb[-1, -1, 0] == 255
    assert (image.rgb == image.rgb[:, :, :1]).all()


def test_grayscale_gives_three_equal_channels(tmp_path: Path) -> None:
    grey = noise_rgb()[:, :, 0]
    Image.fromarray(grey).save(tmp_path / "g.png")
    image = read_image(tmp_path / "g.png")
    assert_rgb(image, 24, 32)
    assert all(np.array_equal(image.rgb[:, :, c], grey) for c in range(3))


def test_palette_png(tmp_path: Path) -> None:
    rgb = np.zeros((8, 8, 3), np.uint8)
    rgb[:4] = (200, 10, 10)
    rgb[4:] = (10, 10, 200)
    Image.fromarray(rgb).quantize(4).save(tmp_path / "p.png")
    image = read_image(tmp_path / "p.png")
    assert np.array_equal(image.rgb, rgb) and image.alpha is None


def test_palette_png_with_transparency(tmp_path: Path) -> None:
    im = Image.new("P", (6, 4), 0)
    im.putpalette([255, 0, 0, 0, 255, 0] + [0] * 762)
    im.paste(1, (3, 0, 6, 4))
    im.save(tmp_path / "pt.png", transparency=1)
    image = read_image(tmp_path / "pt.png")
    assert image.alpha is not None
    assert (image.alpha[:, :3] == 255).all() and (image.alpha[:, 3:] == 0).all()
    assert tuple(image.rgb[0, 0]) == (255, 0, 0)


def test_cmyk_jpeg(tmp_path: Path) -> None:
    rgb = np.zeros((16, 48, 3), np.uint8)
    rgb[:, :16], rgb[:, 16:32], rgb[:, 32:] = (200, 30, 40), (20, 180, 60), (30, 60, 220)
    Image.fromarray(rgb).convert("CMYK").save(tmp_path / "c.jpg", quality=95)
    image = read_image(tmp_path / "c.jpg")
    assert_rgb(image, 16, 48)
    assert np.abs(image.rgb.astype(int) - rgb).mean() < 4.0


@pytest.mark.parametrize("mode", ["1", "LA", "I", "F", "YCbCr", "LAB"])
def test_other_modes_give_rgb(tmp_path: Path, mode: str) -> None:
    im = Image.fromarray(smooth_rgb(16, 16)).convert(mode)
    if mode in ("I", "F"):  # as Pillow reads them: 16-bit samples, and floats in [0, 1]
        im = Image.fromarray(np.asarray(im) * (257 if mode == "I" else 1 / 255))
    ext = ".png" if mode in ("1", "LA") else ".tif"
    im.save(tmp_path / f"m{ext}")
    image = read_image(tmp_path / f"m{ext}")
    assert_rgb(image, 16, 16)
    if mode != "1":
        assert np.abs(image.rgb.astype(int) - smooth_rgb(16, 16)).mean() < 60  # not black/white
    assert (image.alpha is not None) == (mode == "LA")


def test_exif_orientation_6_is_applied_and_reset(tmp_path: Path) -> None:
    rgb = np.zeros((20, 40, 3), np.uint8)
    rgb[:6, :6] = (255, 0, 0)  # mark the stored top-left corner
    exif = Image.Exif()
    exif[0x0112] = 6  # display = stored rotated 90 degrees clockwise
    exif[0x010F] = "facecomp-test"
    Image.fromarray(rgb).save(tmp_path / "o.jpg", exif=exif.tobytes(), quality=95)
    image = read_image(tmp_path / "o.jpg")
    assert_rgb(image, 40, 20)
    assert image.rgb[2, -3, 0] > 200 and image.rgb[2, 2, 0] < 50  # top-left went top-right
    assert image.exif is not None
    write_image(tmp_path / "out.jpg", image.rgb, like=image)
    with Image.open(tmp_path / "out.jpg") as out:
        assert out.size == (20, 40)
        assert out.getexif()[0x0112] == 1 and out.getexif()[0x010F] == "facecomp-test"
    again = read_image(tmp_path / "out.jpg")
    assert again.rgb.shape == (40, 20, 3)


def test_icc_profile_is_passed_through(tmp_path: Path) -> None:
    icc = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()
    Image.fromarray(smooth_rgb()).save(tmp_path / "icc.png", icc_profile=icc)
    image = read_image(tmp_path / "icc.png")
    assert image.icc_profile == icc
    for ext in (".jpg", ".png", ".webp", ".tif"):
        write_image(tmp_path / f"out{ext}", image.rgb, like=image)
        with Image.open(tmp_path / f"out{ext}") as out:
            assert out.info.get("icc_profile") == icc, ext


def test_animated_gif_loads_first_frame(tmp_path: Path) -> None:
    frames = [Image.fromarray(np.full((10, 12, 3), (v, 0, 255 - v), np.uint8))
              for v in (0, 128, 255)]
    frames[0].save(tmp_path / "a.gif", save_all=True, append_images=frames[1:], duration=40)
    image = read_image(tmp_path / "a.gif")
    assert_rgb(image, 10, 12)
    assert image.n_frames == 3 and image.format == "GIF"
    assert tuple(image.rgb[5, 5]) == (0, 0, 255)


def test_one_pixel(tmp_path: Path) -> None:
    Image.new("RGB", (1, 1), (1, 2, 3)).save(tmp_path / "1.png")
    image = read_image(tmp_path / "1.png")
    assert_rgb(image, 1, 1)
    assert tuple(image.rgb[0, 0]) == (1, 2, 3)


def test_decode_image_matches_read_image(tmp_path: Path) -> None:
    data = encoded(Image.fromarray(noise_rgb()), "PNG")
    (tmp_path / "x.png").write_bytes(data)
    image = decode_image(data, "x.png")
    assert image.path is None and image.format == "PNG"
    assert np.array_equal(image.rgb, read_image(tmp_path / "x.png").rgb)


# --- reading: refusals -----------------------------------------------------------------------


def bomb_png(width: int = 30000, height: int = 30000) -> bytes:
    """A valid PNG header claiming width x height, with almost no data."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", ihdr)
            + png_chunk(b"IDAT", zlib.compress(b"\0" * 64)) + png_chunk(b"IEND", b""))


def test_huge_header_is_refused_before_decoding(tmp_path: Path,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    def no_decoding(self: ImageFile.ImageFile) -> None:
        raise AssertionError("decoded a bomb")

    saved = Image.MAX_IMAGE_PIXELS
    monkeypatch.setattr(ImageFile.ImageFile, "load", no_decoding)
    (tmp_path / "bomb.png").write_bytes(bomb_png())
    start = time.perf_counter()
    with pytest.raises(InputError) as info:
        read_image(tmp_path / "bomb.png")
    assert time.perf_counter() - start < 1.0
    assert_one_line(info.value, "bomb.png")
    assert f"30000x30000 pixels is over the limit of {DEFAULT_MAX_PIXELS}" in str(info.value)
    assert "`max_pixels`" in str(info.value)
    assert Image.MAX_IMAGE_PIXELS == saved


def test_max_pixels_is_per_call(tmp_path: Path) -> None:
    saved = Image.MAX_IMAGE_PIXELS
    data = encoded(Image.fromarray(noise_rgb(40, 50)), "PNG")
    with pytest.raises(InputError, match="50x40 pixels is over the limit of 1999"):
        decode_image(data, "small.png", max_pixels=1999)
    assert decode_image(data, max_pixels=2000).rgb.shape == (40, 50, 3)
    assert Image.MAX_IMAGE_PIXELS == saved
    for bad in (0, -5, 1.5, True):
        with pytest.raises(ConfigError):
            decode_image(data, max_pixels=bad)  # type: ignore[arg-type]


def make_bad_input(tmp_path: Path, kind: str) -> Path:
    if kind == "missing":
        return tmp_path / "missing.jpg"
    if kind == "folder":
        (tmp_path / "folder.jpg").mkdir()
        return tmp_path / "folder.jpg"
    path = tmp_path / f"{kind}.jpg"
    if kind == "empty":
        path.write_bytes(b"")
    elif kind == "text":
        path.write_text("this is not a picture\n")
    elif kind == "truncated":
        data = encoded(Image.fromarray(noise_rgb(64, 64)), "JPEG", quality=90)
        path.write_bytes(data[: len(data) // 2])
    elif kind == "zero-size":  # a PNG header claiming a 0x5 image
        path.write_bytes(bomb_png(0, 5))
    return path


@pytest.mark.parametrize("kind, words", [
    ("missing", "no such file"), ("folder", "is a folder"), ("empty", "the file is empty"),
    ("text", "not an image Pillow can read"), ("truncated", "truncated or corrupt"),
    ("zero-size", "not an image Pillow can read")])
def test_bad_inputs_raise_one_line_input_error(tmp_path: Path, kind: str, words: str) -> None:
    path = make_bad_input(tmp_path, kind)
    with pytest.raises(InputError) as info:
        read_image(path)
    assert_one_line(info.value, path.name)
    assert words in str(info.value)
    if path.is_file():
        with pytest.raises(InputError) as info:
            decode_image(path.read_bytes(), path.name)
        assert_one_line(info.value, path.name)


def test_unreadable_file(tmp_path: Path) -> None:
    if os.geteuid() == 0:
        pytest.skip("root reads files whatever their permissions")
    path = tmp_path / "secret.png"
    Image.new("RGB", (2, 2)).save(path)
    path.chmod(0)
    with pytest.raises(InputError, match="permission denied") as info:
        read_image(path)
    assert_one_line(info.value, "secret.png")


# --- writing ---------------------------------------------------------------------------------


def test_write_image_validates_arguments(tmp_path: Path) -> None:
    rgb = noise_rgb()
    for bad in (rgb.astype(np.float32), rgb[:, :, 0], rgb[:, :, :2], np.zeros((0, 4, 3), np.uint8)):
        with pytest.raises(ValueError):
            write_image(tmp_path / "x.png", bad)
    with pytest.raises(ValueError):
        write_image(tmp_path / "x.png", rgb, np.zeros((3, 3), np.uint8))
    with pytest.raises(OutputError, match=r"\.png") as info:
        write_image(tmp_path / "x.gif", rgb)
    assert_one_line(info.value, "x.gif")
    with pytest.raises(ConfigError):
        write_image(tmp_path / "x.jpg", rgb, quality=0)
    assert list(tmp_path.iterdir()) == []


def test_write_image_non_contiguous_input(tmp_path: Path) -> None:
    rgb = noise_rgb(24, 64)[:, ::2]
    write_image(tmp_path / "s.png", rgb)
    assert np.array_equal(read_image(tmp_path / "s.png").rgb, rgb)


def test_write_image_refuses_existing_unless_overwrite(tmp_path: Path) -> None:
    out = tmp_path / "o.png"
    write_image(out, noise_rgb(seed=1))
    with pytest.raises(OutputError, match="already exists; pass `overwrite=True`") as info:
        write_image(out, noise_rgb(seed=2))
    assert_one_line(info.value, "o.png")
    assert np.array_equal(read_image(out).rgb, noise_rgb(seed=1))
    write_image(out, noise_rgb(seed=2), overwrite=True)
    assert np.array_equal(read_image(out).rgb, noise_rgb(seed=2))
    assert [p.name for p in tmp_path.iterdir()] == ["o.png"]


def test_new_files_get_normal_permissions(tmp_path: Path) -> None:
    umask = os.umask(0)
    os.umask(umask)
    write_image(tmp_path / "p.png", noise_rgb())
    assert stat.S_IMODE((tmp_path / "p.png").stat().st_mode) == 0o666 & ~umask


# --- atomic_path -----------------------------------------------------------------------------


def test_atomic_path_success_leaves_only_the_final_file(tmp_path: Path) -> None:
    final = tmp_path / "out.png"
    with atomic_path(final) as tmp:
        assert tmp.parent == tmp_path and tmp.name.startswith(".facecomp-tmp-")
        assert tmp.suffix == ".png" and not final.exists()
        tmp.write_bytes(b"data")
    assert final.read_bytes() == b"data"
    assert list(tmp_path.iterdir()) == [final]


def test_atomic_path_refuses_existing(tmp_path: Path) -> None:
    final = tmp_path / "out.png"
    final.write_bytes(b"old")
    with pytest.raises(OutputError, match="already exists") as info:
        with atomic_path(final):
            pass
    assert_one_line(info.value, "out.png")
    with atomic_path(final, overwrite=True) as tmp:
        tmp.write_bytes(b"new")
    assert final.read_bytes() == b"new" and list(tmp_path.iterdir()) == [final]


def test_atomic_path_cleans_up_on_exception(tmp_path: Path) -> None:
    with pytest.raises(RuntimeError, match="boom"):
        with atomic_path(tmp_path / "out.png") as tmp:
            tmp.write_bytes(b"half")
            raise RuntimeError("boom")
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("error, words", [
    (PermissionError(errno.EACCES, "Permission denied"), "cannot write here (permission denied)"),
    (OSError(errno.ENOSPC, "No space left on device"), "no space left on the device"),
    (OSError(errno.EIO, "Input/output error"), "cannot write (Input/output error)")])
def test_atomic_path_maps_os_errors_inside_the_block(tmp_path: Path, error: OSError,
                                                     words: str) -> None:
    with pytest.raises(OutputError) as info:
        with atomic_path(tmp_path / "out.jpg") as tmp:
            tmp.write_bytes(b"half")
            raise error
    assert_one_line(info.value, "out.jpg")
    assert words in str(info.value)
    assert list(tmp_path.iterdir()) == []


def test_atomic_path_missing_folder(tmp_path: Path) -> None:
    with pytest.raises(OutputError, match="does not exist") as info:
        write_image(tmp_path / "nope" / "out.png", noise_rgb())
    assert_one_line(info.value, "out.png")


def test_atomic_path_read_only_folder(tmp_path: Path) -> None:
    if os.geteuid() == 0:
        pytest.skip("root writes into read-only folders")
    folder = tmp_path / "ro"
    folder.mkdir()
    folder.chmod(0o500)
    try:
        with pytest.raises(OutputError, match="permission denied") as info:
            write_image(folder / "out.png", noise_rgb())
        assert_one_line(info.value, "out.png")
    finally:
        folder.chmod(0o700)


# --- fuzzing ---------------------------------------------------------------------------------

hypothesis = pytest.importorskip("hypothesis")
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

_SEEDS = [
    encoded(Image.fromarray(smooth_rgb(12, 16)), "PNG"),
    encoded(Image.fromarray(smooth_rgb(12, 16)), "JPEG", quality=80),
    encoded(Image.fromarray(np.dstack([smooth_rgb(8, 8), smooth_rgb(8, 8)[:, :, 0]])), "PNG"),
    encoded(Image.fromarray(smooth_rgb(8, 8)).quantize(8), "GIF"),
    encoded(Image.fromarray(smooth_rgb(8, 8)), "WEBP"),
    encoded(Image.fromarray(smooth_rgb(8, 8)), "TIFF"),
    encoded(Image.fromarray(smooth_rgb(8, 8)), "BMP"),
]


@st.composite
def mutated_images(draw: st.DrawFn) -> bytes:
    data = bytearray(draw(st.sampled_from(_SEEDS)))
    for _ in range(draw(st.integers(0, 8))):
        data[draw(st.integers(0, len(data) - 1))] = draw(st.integers(0, 255))
    return bytes(data[: draw(st.one_of(st.just(len(data)), st.integers(0, len(data))))])


def check_decodes_or_input_error(data: bytes) -> None:
    try:
        image = decode_image(data, "fuzz.bin", max_pixels=4_000_000)
    except InputError as exc:
        assert "\n" not in str(exc) and "fuzz.bin" in str(exc)
        return
    h, w = image.rgb.shape[:2]
    assert image.rgb.dtype == np.uint8 and image.rgb.shape == (h, w, 3) and h * w > 0
    assert image.rgb.flags.c_contiguous and image.n_frames >= 1
    assert image.alpha is None or image.alpha.shape == (h, w)


@settings(max_examples=150, deadline=None, database=None,
          suppress_health_check=[HealthCheck.too_slow])
@given(st.one_of(st.binary(max_size=512), mutated_images()))
def test_fuzz_decode_image(data: bytes) -> None:
    check_decodes_or_input_error(data)
