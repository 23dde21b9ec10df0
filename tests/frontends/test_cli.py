"""The command line, in process (typer's CliRunner) and once as a real subprocess."""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import typer
from typer.testing import CliRunner

from facecomp.frontends.cli import app
from facecomp.io import read_image

from ..conftest import SAMPLES, one_error_line

runner = CliRunner()


def _run(*args: str):
    return runner.invoke(app, [str(a) for a in args])


def _sha(p: Path) -> str:
    return hashlib.sha256(p.read_bytes()).hexdigest()


@pytest.fixture
def photo(tmp_path) -> Path:
    p = tmp_path / "in" / "group.jpg"
    p.parent.mkdir()
    shutil.copy(SAMPLES / "group.jpg", p)
    return p


def test_photo_writes_beside_the_input_and_never_touches_it(photo, invert_model):
    before = _sha(photo)
    r = _run("photo", photo, "--model", invert_model)
    assert r.exit_code == 0, r.output
    out = photo.with_name("group.facecomp.jpg")
    assert out.is_file() and _sha(photo) == before
    assert "6 faces, 6 translated" in r.stderr
    a, b = read_image(photo).rgb, read_image(out).rgb
    assert a.shape == b.shape and np.abs(a.astype(int) - b.astype(int)).mean() > 3
    # a second run refuses to overwrite, --overwrite replaces
    r = _run("photo", photo, "--model", invert_model)
    assert r.exit_code == 1
    one_error_line(r, "already exists", "--overwrite")
    assert _run("photo", photo, "--model", invert_model, "--overwrite").exit_code == 0
    assert not list(photo.parent.glob(".facecomp-tmp-*"))


def test_output_file_debug_and_direction(photo, invert_model, tmp_path):
    out = tmp_path / "out.png"
    r = _run("photo", photo, "-o", out, "--model", invert_model, "--debug", "-d", "B2A")
    assert r.exit_code == 0, r.output
    assert out.is_file() and (tmp_path / "out.debug.png").is_file()
    # B2A of this test model is the identity: the output equals the input closely
    a, b = read_image(photo).rgb, read_image(out).rgb
    assert np.abs(a.astype(int) - b.astype(int)).mean() < 1


def test_folder_run_continues_past_bad_files(tmp_path, invert_model):
    src = tmp_path / "photos"
    src.mkdir()
    shutil.copy(SAMPLES / "group.jpg", src / "a.jpg")
    shutil.copy(SAMPLES / "portrait.jpg", src / "b.jpg")
    (src / "c.jpg").write_text("this is not an image")
    (src / "notes.txt").write_text("ignored: not an image extension")
    (src / "d.png").write_bytes(b"")
    Image = __import__("PIL.Image", fromlist=["Image"])
    Image.fromarray(np.full((120, 160, 3), 200, np.uint8)).save(src / "e.png")
    out = tmp_path / "out"
    r = _run("photo", src, "-o", out, "--model", invert_model)
    assert r.exit_code == 1, r.output
    assert sorted(p.name for p in out.iterdir()) == ["a.jpg", "b.jpg", "e.png"]
    assert "2 done, 1 without faces, 2 failed" in r.stderr
    assert "c.jpg: not an image" in r.stderr and "d.png: the file is empty" in r.stderr
    assert (out / "e.png").read_bytes() == (src / "e.png").read_bytes()  # no faces: a copy


@pytest.mark.parametrize("make,needle", [
    (lambda d: d / "missing.jpg", "no such file"),
    (lambda d: (d / "t.jpg").write_text("hello") and d / "t.jpg", "not an image"),
    (lambda d: (d / "empty").mkdir() or d / "empty", "no images in this folder"),
])
def test_bad_inputs_give_one_line_and_exit_1(tmp_path, invert_model, make, needle):
    path = make(tmp_path)
    r = _run("photo", path, "--model", invert_model)
    assert r.exit_code == 1
    one_error_line(r, str(path), needle)


def test_output_equal_to_input_is_refused(photo, invert_model):
    before = _sha(photo)
    r = _run("photo", photo, "-o", photo, "--model", invert_model, "--overwrite")
    assert r.exit_code == 1
    one_error_line(r, "overwrite the input")
    assert _sha(photo) == before


@pytest.mark.parametrize("args,needle", [
    (["--faces", "first"], "--faces"),
    (["--model", "no-such-model"], "no model named"),
    (["--device", "tpu"], "device"),
])
def test_usage_and_model_errors_exit_2(photo, args, needle):
    r = _run("photo", photo, *args)
    assert r.exit_code == 2
    one_error_line(r, needle)


def test_several_inputs_need_an_output_folder(photo, tmp_path, invert_model):
    r = _run("photo", photo, photo, "-o", tmp_path / "x.jpg", "--model", invert_model)
    assert r.exit_code == 2
    one_error_line(r, "output folder")


def test_help_explains_exit_codes_and_options():
    r = _run("photo", "--help")
    assert r.exit_code == 0
    for word in ("Exit codes", "--direction", "--blend", "--min-face", "--faces", "--overwrite",
                 "--debug", "--batch-size", "--device"):
        assert word in r.output
    assert _run("--version").output.startswith("facecomp ")


def test_models_lists_the_shipped_model():
    r = _run("models")
    assert r.exit_code == 0
    from facecomp.checkpoint import DEFAULT_MODEL

    assert f"{DEFAULT_MODEL}  A2B" in r.output and f"{DEFAULT_MODEL}  B2A" in r.output


def test_real_process_prints_one_line_and_no_traceback(tmp_path):
    r = subprocess.run([sys.executable, "-m", "facecomp", "photo", str(tmp_path / "nope.jpg")],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 1
    assert r.stderr.strip().splitlines() == [f"facecomp: error: {tmp_path / 'nope.jpg'}: no such "
                                             "file or folder"]


def test_threads_option_sets_the_cpu_thread_count():
    import torch

    before = torch.get_num_threads()
    try:
        r = _run("--threads", "1", "models")
        assert r.exit_code == 0, r.output
        assert torch.get_num_threads() == 1
        assert _run("--threads", "0", "models").exit_code == 2
    finally:
        torch.set_num_threads(before)


# --- first use: what a new user types -----------------------------------------------------


def test_threads_works_after_the_subcommand_too():
    from facecomp.frontends.cli import _threads_first

    assert _threads_first(["photo", "x.jpg", "--threads", "1"]) == ["--threads", "1", "photo",
                                                                  "x.jpg"]
    assert _threads_first(["--threads", "2", "photo"]) == ["--threads", "2", "photo"]
    assert _threads_first(["video", "--threads=1", "a.mp4"]) == ["--threads=1", "video", "a.mp4"]


def test_each_subcommand_lists_its_own_exit_codes():
    runner = CliRunner()
    train_help = runner.invoke(app, ["train", "--help"]).stdout
    assert "photo without faces" not in train_help and "--max-steps" in train_help
    prep = runner.invoke(app, ["prepare", "--help"]).stdout
    assert "no crop was written" in prep and "1 only if" not in prep
    assert "without faces counts as done" in runner.invoke(app, ["photo", "--help"]).stdout


def test_photo_points_videos_to_facecomp_video_and_video_says_a_folder_has_none(tmp_path):
    clip = tmp_path / "clip.mp4"
    clip.write_bytes(b"\x00" * 64)
    r = CliRunner().invoke(app, ["photo", str(clip)])
    assert r.exit_code == 1
    one_error_line(r, "facecomp video")
    r = CliRunner().invoke(app, ["video", str(tmp_path)])  # its one video is not one
    assert r.exit_code == 1
    one_error_line(r, "clip.mp4", "not a video")
    empty = tmp_path / "empty"
    empty.mkdir()
    r = CliRunner().invoke(app, ["video", str(empty)])
    assert r.exit_code == 1
    one_error_line(r, "no videos in this folder")


def test_a_trailing_slash_makes_o_a_new_folder(tmp_path, invert_model):
    out = str(tmp_path / "new") + "/"
    r = CliRunner().invoke(app, ["photo", str(SAMPLES / "group.jpg"), "-o", out, "--model",
                                 str(invert_model)])
    assert r.exit_code == 0, r.output
    assert (tmp_path / "new" / "group.jpg").is_file()


def test_skip_existing_continues_an_interrupted_folder_run(tmp_path, invert_model):
    src = tmp_path / "in"
    src.mkdir()
    for n in ("a.jpg", "b.jpg"):
        (src / n).write_bytes((SAMPLES / "group.jpg").read_bytes())
    out = tmp_path / "out"
    out.mkdir()
    (out / "a.jpg").write_bytes(b"done before the interruption")
    r = CliRunner().invoke(app, ["photo", str(src / "a.jpg"), "-o", str(out / "a.jpg"),
                                 "--model", str(invert_model)])
    assert r.exit_code == 1 and "--skip-existing" in r.stderr
    r = CliRunner().invoke(app, ["photo", str(src), "-o", str(out), "--model", str(invert_model),
                                 "--skip-existing"])
    assert r.exit_code == 0, r.output
    assert "1 done" in r.stderr and "1 skipped" in r.stderr
    assert (out / "a.jpg").read_bytes() == b"done before the interruption"
    assert (out / "b.jpg").stat().st_size > 1000


def test_face_numbers_beyond_the_photo_warn(group_image, detector, invert_model, caplog):
    from facecomp.face import FaceSelection
    from facecomp.pipeline import FaceComp, PhotoConfig

    fc = FaceComp(PhotoConfig(model=str(invert_model), faces=FaceSelection.parse("2,9")),
                  detector=detector)
    r = fc.process(group_image)
    assert r.translated == [1] and "9 not found: the image has 6 faces" in caplog.text


def test_orphaned_temporaries_of_killed_runs_are_removed_and_live_ones_kept(tmp_path):
    import subprocess
    import sys

    from facecomp.io import remove_orphaned_temporaries

    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True).stdout.strip()
    (tmp_path / f".facecomp-tmp-{dead}-00ff.mp4").write_bytes(b"killed half way")
    live = tmp_path / f".facecomp-tmp-{os.getpid()}-11ee.mp4"
    live.write_bytes(b"still being written")
    assert remove_orphaned_temporaries(tmp_path) == 1
    assert [p.name for p in tmp_path.iterdir()] == [live.name]


def test_video_flag_defaults_are_the_librarys_own():
    """The CLI stays light (it does not import facecomp.frontends.video to start), so its video defaults
    are written out; this keeps them equal to VideoConfig's."""
    from facecomp.frontends.video import VideoConfig

    params = {p.name: p.default for p in typer.main.get_command(app).commands["video"].params}
    c = VideoConfig()
    for name in ("detect_every", "start", "end", "crf", "preset", "steady", "codec",
                 "generate_every"):
        assert getattr(params[name], "value", params[name]) == getattr(c, name), name


def test_the_library_names_its_parameters_and_the_cli_its_flags(photo, invert_model, tmp_path):
    """One mapping, in the CLI: the Python API's errors name its own parameters, the same
    errors on the command line name the flags."""
    from facecomp import PhotoConfig, write_image
    from facecomp.frontends.cli import _flags
    from facecomp.errors import ConfigError, OutputError
    from facecomp.frontends.video import VideoConfig

    out = tmp_path / "o.png"
    write_image(out, np.zeros((4, 4, 3), np.uint8))
    with pytest.raises(OutputError, match=r"pass `overwrite=True` to replace it") as e:
        write_image(out, np.zeros((4, 4, 3), np.uint8))
    assert "--" not in str(e.value)
    for make, name in ((lambda: PhotoConfig(min_face=-1), "`min_face`"),
                       (lambda: VideoConfig(crf=99), "`crf`"),
                       (lambda: VideoConfig(generate_every=0), "`generate_every`")):
        with pytest.raises(ConfigError) as e:
            make()
        assert name in str(e.value) and "--" not in str(e.value), str(e.value)
    assert _flags("pass `overwrite=True` or `skip_existing=True`; `min_face` 16; "
                  "`facecomp calibrate`") == ("pass --overwrite or --skip-existing; --min-face "
                                              "16; `facecomp calibrate`")
    done = tmp_path / "done.jpg"
    assert _run("photo", photo, "-o", done, "--model", invert_model).exit_code == 0
    r = _run("photo", photo, "-o", done, "--model", invert_model)
    assert r.exit_code == 1
    one_error_line(r, "pass --overwrite to replace it")
    assert "`" not in r.output


@pytest.mark.parametrize("args, needle", [
    (["photo", "x.jpg", "--strength", "5"], "--strength"),
    (["photo", "x.jpg", "--blend", "soft"], "--blend"),
    (["photo", "x.jpg", "--no-such-flag"], "--no-such-flag"),
    (["video"], "Missing argument"),
    (["bogus"], "bogus"),
])
def test_usage_errors_are_one_line_too(args, needle):
    """A value out of range, a wrong choice, an unknown flag or command and a missing argument
    are one `facecomp: error:` line naming the flag, with exit code 2, like every other error."""
    r = CliRunner().invoke(app, args)
    assert r.exit_code == 2, r.output
    line = one_error_line(r, needle)
    assert "--help" in line and "Usage:" not in r.output
