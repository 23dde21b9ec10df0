"""Reliability: hostile and odd inputs give a correct result or a one-line error naming the
file; nothing is lost; killed training resumes cleanly. Inputs are generated here (no
downloads); items already proven elsewhere say where (checkpoint corruption and pickle:
test_checkpoint.py; NaN losses: test_train.py; loader fuzzing: test_io.py)."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import struct
import subprocess
import sys
import time
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from facecomp.frontends.cli import app
from facecomp.io import read_image

from .conftest import SAMPLES, media, one_error_line

runner = CliRunner()


def _group(width: int = 720) -> Image.Image:
    im = Image.open(SAMPLES / "group.jpg").convert("RGB")
    return im.resize((width, round(im.height * width / im.width)), Image.LANCZOS)


def _photo(path: Path, model: Path, *extra: str):
    return runner.invoke(app, ["photo", str(path), "--model", str(model), *extra])


def _png_bomb(path: Path, w: int = 30000, h: int = 30000) -> None:
    """A valid PNG header announcing w x h pixels, with almost no data behind it."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(
            ">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    ihdr = struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) +
                     chunk(b"IDAT", zlib.compress(b"\x00" * 64)) + chunk(b"IEND", b""))


# --- inputs that must fail with one line naming the file (exit 1) ---------------------------

def _missing(d: Path) -> Path:
    return d / "missing.jpg"


def _empty_folder(d: Path) -> Path:
    (d / "nothing").mkdir()
    (d / "nothing" / "readme.txt").write_text("no images here")
    return d / "nothing"


def _zero_bytes(d: Path) -> Path:
    (d / "zero.jpg").write_bytes(b"")
    return d / "zero.jpg"


def _truncated(d: Path) -> Path:
    data = (SAMPLES / "group.jpg").read_bytes()
    (d / "cut.jpg").write_bytes(data[: len(data) // 2])
    return d / "cut.jpg"


def _text(d: Path) -> Path:
    (d / "letter.jpg").write_text("Dear user, this is not a JPEG.")
    return d / "letter.jpg"


def _bomb(d: Path) -> Path:
    _png_bomb(d / "bomb.png")
    return d / "bomb.png"


@pytest.mark.parametrize("make,needle", [
    (_missing, "no such file"), (_empty_folder, "no images in this folder"),
    (_zero_bytes, "empty"), (_truncated, "truncated or corrupt"), (_text, "not an image"),
    (_bomb, "over the limit"),
])
def test_bad_photo_inputs_fail_with_one_line(tmp_path, invert_model, make, needle):
    path = make(tmp_path)
    t0 = time.perf_counter()
    r = _photo(path, invert_model)
    assert r.exit_code == 1
    one_error_line(r, path.name, needle)
    assert time.perf_counter() - t0 < 30  # the bomb is refused before it is decoded


# --- odd but valid inputs: a correct result ---------------------------------------------

def test_png_with_alpha_keeps_its_alpha(tmp_path, invert_model):
    rgba = _group().convert("RGBA")
    alpha = np.tile(np.linspace(40, 255, rgba.width).astype(np.uint8), (rgba.height, 1))
    rgba.putalpha(Image.fromarray(alpha))
    src = tmp_path / "alpha.png"
    rgba.save(src)
    r = _photo(src, invert_model)
    assert r.exit_code == 0 and "6 faces, 6 translated" in r.stderr
    out = Image.open(tmp_path / "alpha.facecomp.png")
    assert out.mode == "RGBA" and np.array_equal(np.asarray(out)[..., 3], alpha)


@pytest.mark.parametrize("kind", ["16bit", "gray", "cmyk", "palette"])
def test_other_pixel_formats_are_processed(tmp_path, invert_model, kind):
    im = _group()
    if kind == "16bit":
        src = tmp_path / "deep.png"
        Image.fromarray((np.asarray(im.convert("L")).astype(np.uint16) * 257)).save(src)
    elif kind == "gray":
        src = tmp_path / "gray.jpg"
        im.convert("L").save(src, quality=95)
    elif kind == "cmyk":
        src = tmp_path / "cmyk.jpg"
        im.convert("CMYK").save(src, quality=95)
    else:
        src = tmp_path / "palette.png"
        im.convert("P", palette=Image.ADAPTIVE, colors=256).save(src)
    r = _photo(src, invert_model)
    assert r.exit_code == 0, r.output
    assert "6 faces, 6 translated" in r.stderr, r.stderr
    out = read_image(next(tmp_path.glob("*.facecomp.*")))
    assert out.rgb.shape[:2] == (im.height, im.width)


def test_exif_rotated_photo_is_processed_upright(tmp_path, invert_model):
    im = _group()
    sideways = im.transpose(Image.Transpose.ROTATE_90)  # what a camera stores ...
    exif = Image.Exif()
    exif[0x0112] = 6  # ... and the tag that tells viewers to turn it back
    src = tmp_path / "phone.jpg"
    sideways.save(src, exif=exif, quality=95)
    r = _photo(src, invert_model)
    assert r.exit_code == 0 and "6 faces, 6 translated" in r.stderr
    out = Image.open(tmp_path / "phone.facecomp.jpg")
    assert out.size == im.size  # written upright
    assert out.getexif().get(0x0112, 1) == 1


def test_animated_gif_uses_its_first_frame(tmp_path, invert_model):
    first, second = _group(480), Image.new("RGB", (480, 320), (20, 20, 20))
    src = tmp_path / "anim.gif"
    first.save(src, save_all=True, append_images=[second], duration=200)
    r = _photo(src, invert_model)
    assert r.exit_code == 0 and "translated" in r.stderr
    assert (tmp_path / "anim.facecomp.png").is_file()


def test_a_one_pixel_image_is_copied(tmp_path, invert_model):
    src = tmp_path / "dot.png"
    Image.new("RGB", (1, 1), (200, 10, 10)).save(src)
    r = _photo(src, invert_model)
    assert r.exit_code == 0 and "no faces" in r.stderr
    assert (tmp_path / "dot.facecomp.png").read_bytes() == src.read_bytes()


@pytest.mark.parametrize("blend", ["feather", "poisson"])
def test_a_face_cut_by_every_border(tmp_path, invert_model, detector, blend):
    img = np.asarray(_group(1440))
    f = max(detector.detect(img), key=lambda f: f.size)
    x1, y1, x2, y2 = (int(v) for v in f.box)
    mx, my = (x2 - x1) // 6, (y2 - y1) // 6  # cut through cheeks, forehead and chin
    src = tmp_path / "tight.png"
    Image.fromarray(img[y1 + my:y2 - my, x1 + mx:x2 - mx]).save(src)
    r = _photo(src, invert_model, "--blend", blend, "--min-score", "0.8")
    assert r.exit_code == 0, r.output
    assert "1 face" in r.stderr or "no faces" in r.stderr  # found, or honestly not found


def test_a_photo_with_100_small_faces(tmp_path, invert_model):
    src = media("group_20_staff_photo_100faces.jpg")
    out = tmp_path / "staff.jpg"
    r = runner.invoke(app, ["photo", str(src), "-o", str(out), "--model", str(invert_model),
                            "--min-face", "0"])
    assert r.exit_code == 0 and "100 faces, 100 translated" in r.stderr, r.stderr


# --- nothing lost -------------------------------------------------------------------------

def test_a_batch_never_modifies_inputs_and_reports_failures(tmp_path, invert_model):
    folder = tmp_path / "shoot"
    folder.mkdir()
    _group().save(folder / "a.jpg")
    _text(folder)
    _zero_bytes(folder)
    before = {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in folder.iterdir()}
    r = runner.invoke(app, ["photo", str(folder), "-o", str(tmp_path / "out"), "--model",
                            str(invert_model)])
    assert r.exit_code == 1 and "1 done, 0 without faces, 2 failed" in r.stderr
    after = {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in folder.iterdir()}
    assert after == before and sorted(os.listdir(tmp_path / "out")) == ["a.jpg"]


def test_an_unwritable_output_location_is_one_line(tmp_path, invert_model):
    src = tmp_path / "a.jpg"
    _group(320).save(src)
    blocker = tmp_path / "file"
    blocker.write_text("a file where a folder should be")
    r = _photo(src, invert_model, "-o", str(blocker / "out.jpg"))
    assert r.exit_code == 1
    one_error_line(r, "out.jpg")


def test_a_corrupt_model_file_is_one_line_and_exit_2(tmp_path, invert_model):
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(invert_model.read_bytes()[:40])
    src = tmp_path / "a.jpg"
    _group(320).save(src)
    r = _photo(src, bad)
    assert r.exit_code == 2
    one_error_line(r, "bad.safetensors")


# --- video --------------------------------------------------------------------------------

def test_a_video_with_a_corrupt_middle_skips_the_damaged_packet(tmp_path, invert_model, caplog):
    av = pytest.importorskip("av")
    from .conftest import make_clip, moving_face_frames

    clip = tmp_path / "clip.mp4"
    make_clip(clip, moving_face_frames(40), audio=False)
    data = bytearray(clip.read_bytes())
    mid = len(data) // 2
    data[mid:mid + 4000] = np.random.default_rng(1).integers(0, 256, 4000, np.uint8).tobytes()
    bad = tmp_path / "damaged.mp4"
    bad.write_bytes(bytes(data))
    out = tmp_path / "out.mp4"
    r = runner.invoke(app, ["video", str(bad), "-o", str(out), "--model", str(invert_model),
                            "--preset", "ultrafast"])
    # FFmpeg's decoder refuses one packet (ffmpeg itself decodes 39 of the 40 frames): it is
    # skipped and said in one line, every frame after it is translated, timing kept
    assert r.exit_code == 0, r.output
    lines = [ln for ln in caplog.text.splitlines() if "damaged" in ln]
    assert len(lines) == 1 and "1 damaged video packet skipped" in lines[0], caplog.text
    assert "Traceback" not in r.output + caplog.text
    with av.open(str(out)) as c:
        frames = list(c.decode(video=0))
        assert len(frames) == 39, len(frames)
        assert abs(float(frames[-1].time) - 39 / 25) < 0.05, frames[-1].time


def test_a_file_without_a_video_stream(tmp_path, invert_model):
    av = pytest.importorskip("av")
    sound = tmp_path / "sound.m4a"
    with av.open(str(sound), "w") as out:
        s = out.add_stream("aac", rate=44100)
        s.layout = "mono"
        frame = av.AudioFrame.from_ndarray(np.zeros((1, 1024), np.float32), format="flt",
                                           layout="mono")
        frame.sample_rate, frame.pts = 44100, 0
        for p in list(s.encode(frame)) + list(s.encode(None)):
            out.mux(p)
    r = runner.invoke(app, ["video", str(sound), "-o", str(tmp_path / "o.mp4"), "--model",
                            str(invert_model)])
    assert r.exit_code == 1
    one_error_line(r, "sound.m4a", "no video stream")
    assert not (tmp_path / "o.mp4").exists()


# --- training killed at random moments ---------------------------------------------------

def test_training_killed_at_random_moments_resumes_cleanly(tmp_path):
    """SIGKILL a real training process at several moments (saving every step, so kills land
    during saves too); every resume must load and the run must finish with one stats line per
    step and readable generators."""
    from .conftest import TINY_FLAGS

    a, b = tmp_path / "a", tmp_path / "b"
    a.mkdir()
    b.mkdir()
    img = np.asarray(_group(320))
    for i in range(4):
        Image.fromarray(img[40 * i:40 * i + 40, :40]).save(a / f"{i}.png")
        Image.fromarray(255 - img[40 * i:40 * i + 40, :40]).save(b / f"{i}.png")
    run = tmp_path / "run"
    steps = 40
    base = [sys.executable, "-m", "facecomp", "train", "--out", str(run)]
    first = base + ["--a", str(a), "--b", str(b), *TINY_FLAGS, "--epoch-size", "10",
                    "--n-epochs", "2", "--n-epochs-decay", "2", "--save-every", "1",
                    "--log-every", "1"]
    rng = np.random.default_rng(7)

    def logged() -> int:
        stats = run / "stats.jsonl"
        return len(stats.read_text().splitlines()) if stats.exists() else 0

    for attempt in range(3):
        cmd = first if not (run / "train_state.pt").exists() else base + ["--resume"]
        before = logged()
        p = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.time() + 120
        while time.time() < deadline and logged() <= before and p.poll() is None:
            time.sleep(0.02)  # until this attempt has made progress ...
        time.sleep(float(rng.uniform(0.0, 0.6)))  # ... then kill it anywhere, saves included
        p.send_signal(signal.SIGKILL)
        p.wait()
    cmd = base + ["--resume"] if (run / "train_state.pt").exists() else first
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    lines = [json.loads(ln) for ln in (run / "stats.jsonl").read_text().splitlines()]
    assert [ln["step"] for ln in lines] == list(range(1, steps + 1))
    from facecomp.checkpoint import load_generator

    for d in ("A2B", "B2A"):
        net, info = load_generator(run / f"tiny.{d}.safetensors")
        assert info.extra["step"] == steps
    assert not list(run.glob(".facecomp-tmp-*"))


# --- data loss: an output never replaces an input of the same run ---------------------------

def _digests(*folders: Path) -> dict[str, str]:
    return {str(p): hashlib.sha256(p.read_bytes()).hexdigest()
            for f in folders for p in sorted(f.rglob("*")) if p.is_file()}


def test_an_output_never_overwrites_another_input_of_the_run(tmp_path, invert_model):
    d1, d2 = tmp_path / "d1", tmp_path / "d2"
    d1.mkdir()
    d2.mkdir()
    _group(320).save(d1 / "a.jpg")
    _group(300).save(d2 / "a.jpg")
    _group(280).save(d2 / "b.jpg")
    before = _digests(d1, d2)
    # photo d1 d2 -o d2 --overwrite: d1/a.jpg's result would land on the input d2/a.jpg
    r = runner.invoke(app, ["photo", str(d1), str(d2), "-o", str(d2), "--overwrite", "--model",
                            str(invert_model)])
    assert r.exit_code == 1
    assert "an input of this run" in r.stderr and "Traceback" not in r.output
    after = _digests(d1, d2)
    assert all(after[k] == v for k, v in before.items())  # every input as it was
    # photo x.jpg x.facecomp.jpg --overwrite: the first result is the second input
    x = tmp_path / "x.jpg"
    _group(320).save(x)
    second = tmp_path / "x.facecomp.jpg"
    _group(300).save(second)
    keep = hashlib.sha256(second.read_bytes()).hexdigest()
    r = runner.invoke(app, ["photo", str(x), str(second), "--overwrite", "--model",
                            str(invert_model)])
    assert r.exit_code == 1 and "an input of this run" in r.stderr
    assert hashlib.sha256(second.read_bytes()).hexdigest() == keep
    # a hard link of an input, as an output path, is the same file
    os.link(x, tmp_path / "link.jpg")
    keep_x = hashlib.sha256(x.read_bytes()).hexdigest()
    r = runner.invoke(app, ["photo", str(x), str(d1 / "a.jpg"), "-o", str(tmp_path / "o"),
                            "--model", str(invert_model)])
    assert r.exit_code == 0, r.output
    from facecomp.frontends.photo import plan_jobs

    jobs = plan_jobs([tmp_path / "link.jpg", d2 / "b.jpg"], None)
    assert all(j.error is None for j in jobs)
    (tmp_path / "y.jpg").write_bytes(x.read_bytes())
    os.link(x, tmp_path / "y.facecomp.jpg")  # y's default output is a link to the input x
    jobs = plan_jobs([x, tmp_path / "y.jpg"], None)
    assert jobs[1].error and "an input of this run" in jobs[1].error
    assert hashlib.sha256(x.read_bytes()).hexdigest() == keep_x


def test_an_output_name_over_255_bytes_fails_that_file_only(tmp_path, invert_model):
    folder = tmp_path / "in"
    folder.mkdir()
    long = folder / ("é" * 120 + ".jpg")  # 244 bytes: the input exists, NAME.facecomp.jpg can't
    _group(320).save(long)
    _group(300).save(folder / "short.jpg")
    r = runner.invoke(app, ["photo", str(long), str(folder / "short.jpg"), "--model",
                            str(invert_model)])
    assert r.exit_code == 1 and "Traceback" not in r.output
    assert "255 bytes" in r.stderr and "1 done" in r.stderr
    assert (folder / "short.facecomp.jpg").is_file()
    r = runner.invoke(app, ["video", str(long), "-o", str(tmp_path / ("v" * 300 + ".mp4"))])
    assert r.exit_code == 1
    one_error_line(r, "255 bytes")


def test_a_multi_frame_image_says_only_its_first_frame_was_translated(tmp_path, invert_model):
    src = tmp_path / "anim.gif"
    _group(480).save(src, save_all=True, append_images=[Image.new("RGB", (480, 320))],
                     duration=200)
    r = _photo(src, invert_model)
    assert r.exit_code == 0 and "only the first of its 2 frames" in r.stderr


def test_sigterm_ends_a_video_like_ctrl_c_and_sigkill_leftovers_are_swept(tmp_path):
    src = media("video_03_selfie_vertical_glasses.mp4")
    out = tmp_path / "out" / "clip.mp4"  # the folder is created
    cmd = [sys.executable, "-m", "facecomp", "--threads", "1", "video", str(src), "-o",
           str(out), "--device", "cpu", "--preset", "ultrafast"]

    def started(p) -> bool:
        deadline = time.time() + 120
        while time.time() < deadline and p.poll() is None:
            if out.parent.is_dir() and list(out.parent.glob(".facecomp-tmp-*")):
                time.sleep(0.5)
                return True
            time.sleep(0.05)
        return False

    p = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    assert started(p), p.communicate()[1]
    p.send_signal(signal.SIGTERM)
    _, err = p.communicate(timeout=60)
    assert p.returncode == 130 and "interrupted" in err and "Traceback" not in err
    assert not out.exists() and not list(out.parent.glob(".facecomp-tmp-*"))
    p = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    assert started(p)
    p.send_signal(signal.SIGKILL)
    p.wait()
    assert list(out.parent.glob(".facecomp-tmp-*"))  # SIGKILL cannot clean up ...
    r = runner.invoke(app, ["video", str(src), "-o", str(out), "--device", "cpu", "--preset",
                            "ultrafast", "--end", "0.2"])
    assert r.exit_code == 0, r.output
    assert out.is_file() and not list(out.parent.glob(".facecomp-tmp-*"))  # ... the next run does
