"""facecomp prepare: real MTCNN on real photos, label filters, the holdout split, resuming, the
manifest, bad files and the CLI."""

from __future__ import annotations

import json
import random
import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest
from typer.testing import CliRunner

from facecomp.stages.align import AlignConfig, align_face
from facecomp.frontends.cli import app
from facecomp.errors import ConfigError, InputError
from facecomp.geometry import FACECOMP_V1, transform_points
from facecomp.io import read_image, write_image
from facecomp.training.dataset import (MANIFEST_NAME, AgeRange, Label, holdout_key, is_holdout,
                                       parse_label, read_manifest)
from facecomp.training.prepare import PrepareConfig, prepare

from ..conftest import SAMPLES, load_rgb, media, one_error_line

runner = CliRunner()
PORTRAIT = SAMPLES / "portrait.jpg"


class Counting:
    """The real detector, counting its calls."""

    def __init__(self, detector) -> None:
        self.detector, self.calls = detector, 0

    def detect(self, image):
        self.calls += 1
        return self.detector.detect(image)


def _folder(root: Path, files: dict[str, Path | bytes]) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    for name, what in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        if isinstance(what, bytes):
            (root / name).write_bytes(what)
        else:
            shutil.copy(what, root / name)
    return root


def _names(folder: Path) -> set[str]:
    return {p.name for p in folder.glob("*.png")}


# ---------------------------------------------------------------------------------------------
# Alignment: the crops are framed like the inference crops


def test_keep_all_writes_one_template_aligned_crop_per_face(detector, tmp_path):
    photo = media("group_14_poker_table.jpg")
    src = _folder(tmp_path / "src", {"poker.jpg": photo})
    size = 128
    report = prepare(src, tmp_path / "out", PrepareConfig(size=size, keep="all", holdout=0.0),
                     detector=detector)
    assert (report.seen, report.written, report.failed) == (1, 6, 0)
    assert _names(tmp_path / "out") == {f"poker_{k}.png" for k in range(1, 7)}

    image = load_rgb(photo)
    template = FACECOMP_V1.pixels(size)
    for k, face in enumerate(detector.detect(image), 1):  # numbered left to right, as the files
        crop = read_image(tmp_path / "out" / f"poker_{k}.png").rgb
        assert crop.shape == (size, size, 3)
        # what the aligner promised: the face's landmarks mapped by its crop affine
        _, aligned = align_face(image, face, AlignConfig(size, FACECOMP_V1))
        expected = transform_points(aligned.crop_from_image, face.landmarks)
        found = min(detector.detect(crop),
                    key=lambda f: np.hypot(*(np.array(f.centre) - size / 2)))
        # the crop holds that face where promised (re-detection noise only) ...
        assert np.abs(found.landmarks - expected).max() < 0.05 * size
        # ... and on the template: a 5-point similarity leaves a residual on turned faces, so
        # individual points may be ~6 % off; the eye centre and the mean are tight.
        err = np.linalg.norm(found.landmarks - template, axis=1)
        assert err.mean() < 0.06 * size and err.max() < 0.1 * size, err
        assert np.linalg.norm(found.landmarks[:2].mean(0) - template[:2].mean(0)) < 0.03 * size


def test_faces_too_small_or_too_tightly_cropped_are_skipped_and_looked_at_again(detector,
                                                                                  tmp_path):
    rgb = load_rgb(PORTRAIT)
    x1, y1, x2, y2 = (int(round(v)) for v in detector.detect(rgb)[0].box)
    tight = tmp_path / "tight.png"
    face = np.ascontiguousarray(rgb[y1:y2, x1:x2])  # cropped like UTKFace: no hair, no chin
    write_image(tight, cv2.resize(face, None, fx=3, fy=3, interpolation=cv2.INTER_CUBIC))
    src = _folder(tmp_path / "src", {"portrait.jpg": PORTRAIT, "tight.png": tight})
    out = tmp_path / "out"
    # the portrait's face (~115 px) is too small, the tight one (~350 px) is out of frame
    r = prepare(src, out, PrepareConfig(size=64, holdout=0.0, min_face=200), detector=detector)
    assert (r.written, r.too_small, r.out_of_frame) == (0, 1, 1)
    assert {n: m["status"] for n, m in read_manifest(out).items()} == {
        "portrait.jpg": "too_small", "tight.png": "out_of_frame"}
    # other face filters: those sources are done again; --max-outside 1 keeps the tight one
    r = prepare(src, out, PrepareConfig(size=64, holdout=0.0, max_outside=1.0),
                detector=detector)
    assert (r.written, r.already_done, r.too_small, r.out_of_frame) == (2, 0, 0, 0)
    assert _names(out) == {"portrait.png", "tight.png"}


# ---------------------------------------------------------------------------------------------
# Label filters (names only) and the holdout split


@pytest.mark.parametrize("name,label", [
    ("23_1_20170116174525125.jpg", Label(23, "female")),
    ("100_0_20170112213500903.jpg", Label(100, "male")),
    ("23_1_20170116174525125.chip.jpg", None),   # extra suffix
    ("24_0_20170116220224657 .jpg", None),       # stray space (a real UTKFace name)
    ("25_1_2_20170116174525125.jpg", None),      # extra field
    ("23_2_20170116174525125.jpg", None),        # gender not 0/1
    ("portrait.jpg", None),
])
def test_utkface_names_parse_or_are_unlabelled(name, label):
    assert parse_label(name) == label


@pytest.mark.parametrize("text,low,high", [("18-30", 18, 30), ("60-", 60, None), ("25", 25, 25),
                                           (" 18 - 30 ", 18, 30)])
def test_age_ranges(text, low, high):
    r = AgeRange.parse(text)
    assert (r.low, r.high) == (low, high)
    assert low in r and (high is None or high in r) and low - 1 not in r
    assert (high is None) == (1000 in r)


@pytest.mark.parametrize("text", ["30-18", "abc", "", "-30", "18-30-40", "1.5"])
def test_bad_age_ranges_are_config_errors(text):
    with pytest.raises(ConfigError, match="`age`"):
        PrepareConfig(age=text)


def test_label_filters_keep_only_matching_names_and_never_decode_the_others(detector, tmp_path):
    files = {"23_1_20170116174525125.jpg": PORTRAIT,   # female 23
             "30_1_20170116174525126.jpg": PORTRAIT,   # female 30 (inclusive)
             "18_0_20170116174525127.jpg": PORTRAIT,   # male 18
             "31_1_20170116174525128.jpg": PORTRAIT,   # female 31
             "65_0_20170116174525129.jpg": PORTRAIT,   # male 65
             "60_1_20170116174525130.jpg": PORTRAIT,   # female 60
             "29_1_20170116174525131.jpg.chip.jpg": PORTRAIT,  # malformed: unlabelled
             "70_1_20170116174525132.jpg": b"not decoded: filtered out by name",
             "notes.txt": b"not an image"}
    src = _folder(tmp_path / "src", files)
    young = prepare(src, tmp_path / "young", PrepareConfig(size=64, age="18-30", gender="female",
                                                           holdout=0.0), detector=detector)
    assert _names(tmp_path / "young") == {"23_1_20170116174525125.png",
                                          "30_1_20170116174525126.png"}
    assert (young.seen, young.filtered_out, young.written, young.failed) == (8, 6, 2, 0)

    old = prepare(src, tmp_path / "old", PrepareConfig(size=64, age="60-", holdout=0.5),
                  detector=detector)
    assert (old.seen, old.filtered_out, old.written, old.failed) == (8, 5, 2, 1)
    kept = {"65_0_20170116174525129", "60_1_20170116174525130"}
    for stem in kept:  # each in the split its name picks
        where = tmp_path / "old" / ("holdout" if is_holdout(stem + ".jpg", 0.5) else "")
        assert (where / f"{stem}.png").is_file()
    assert old.holdout == sum(is_holdout(s + ".jpg", 0.5) for s in kept)


def test_holdout_split_depends_on_the_name_only_and_has_the_asked_size():
    names = [f"{20 + i % 50}_{i % 2}_2017{i:09d}.jpg" for i in range(2000)]
    picked = {n for n in names if is_holdout(n, 0.05)}
    assert 60 <= len(picked) <= 140  # 100 expected; binomial sd ~10
    assert 850 <= sum(is_holdout(n, 0.5) for n in names) <= 1150
    shuffled = random.Random(0).sample(names, len(names))
    assert {n for n in shuffled if is_holdout(n, 0.05)} == picked           # order
    assert {n for n in shuffled[:500] if is_holdout(n, 0.05)} == picked & set(shuffled[:500])
    assert all(is_holdout(f"sub/dir/{n}", 0.05) == (n in picked) for n in names[:200])  # folder
    assert not any(is_holdout(n, 0.0) for n in names)
    assert 0.0 <= min(map(holdout_key, names)) and max(map(holdout_key, names)) < 1.0


# ---------------------------------------------------------------------------------------------
# Resuming, the manifest, bad files


def test_rerun_skips_what_is_done_and_another_size_is_refused(detector, tmp_path):
    src = _folder(tmp_path / "src", {"a.jpg": PORTRAIT, "group.jpg": SAMPLES / "group.jpg",
                                     "b.png": b"broken"})
    out = tmp_path / "out"
    cfg = PrepareConfig(size=64, keep="all", holdout=0.3)
    first = prepare(src, out, cfg, detector=detector)
    assert first.written >= 6 and first.failed == 1
    crops = sorted(out.rglob("*.png"))
    assert len(crops) == first.written
    mtimes = {p: p.stat().st_mtime_ns for p in crops}

    counting = Counting(detector)
    again = prepare(src, out, cfg, detector=counting)
    assert again.already_done == 2 and again.written == 0
    assert again.failed == 1  # failed files are tried again
    assert counting.calls == 0
    assert {p: p.stat().st_mtime_ns for p in sorted(out.rglob("*.png"))} == mtimes

    with pytest.raises(ConfigError, match="`size` 64.*`size` 96.*another OUT"):
        prepare(src, out, PrepareConfig(size=96, keep="all"), detector=detector)
    with pytest.raises(ConfigError, match="`keep`"):
        prepare(src, out, PrepareConfig(size=64, keep="largest"), detector=detector)


def test_a_killed_run_resumes_and_leaves_nothing_half_written(detector, tmp_path):
    src = _folder(tmp_path / "src", {"a.jpg": PORTRAIT, "b.jpg": PORTRAIT})
    out = tmp_path / "out"
    cfg = PrepareConfig(size=64, holdout=0.0)
    prepare(src, out, cfg, detector=detector)
    manifest = out / MANIFEST_NAME
    lines = manifest.read_text().splitlines()
    # as if killed while writing b's line and while writing a crop
    manifest.write_text(lines[0] + "\n" + lines[1][:25])
    (out / ".facecomp-tmp-0123456789abcdef.png").write_bytes(b"half a png")
    r = prepare(src, out, cfg, detector=detector)
    assert (r.already_done, r.written) == (1, 1)
    assert not list(out.glob(".facecomp-tmp-*"))
    lines = manifest.read_text().splitlines()
    assert lines[1] == lines[1][:25]  # the cut line stays, ignored; b's record follows it
    records = [json.loads(line) for line in (lines[0], lines[2])]
    assert [(m["name"], m["status"]) for m in records] == [("a.jpg", "written"),
                                                            ("b.jpg", "written")]
    assert all(m["size"] == 64 and m["template"] == FACECOMP_V1.name for m in records)
    assert read_manifest(out).keys() == {"a.jpg", "b.jpg"}


def test_no_face_and_corrupt_files_are_counted_not_fatal(detector, tmp_path):
    data = PORTRAIT.read_bytes()
    src = _folder(tmp_path / "src", {"dogs.jpg": media("noface_05_dogs.jpg"),
                                     "cut.jpg": data[:len(data) // 3], "text.jpg": b"hello",
                                     "empty.png": b"", "face.jpg": PORTRAIT})
    r = prepare(src, tmp_path / "out", PrepareConfig(size=64, holdout=0.0), detector=detector)
    assert (r.seen, r.no_face, r.failed, r.written, r.all_failed) == (5, 1, 3, 1, False)
    statuses = {n: m["status"] for n, m in read_manifest(tmp_path / "out").items()}
    assert statuses == {"cut.jpg": "failed", "dogs.jpg": "no_face", "empty.png": "failed",
                        "face.jpg": "written", "text.jpg": "failed"}
    # a no-face source is done: not detected again
    counting = Counting(detector)
    again = prepare(src, tmp_path / "out", PrepareConfig(size=64, holdout=0.0), detector=counting)
    assert again.already_done == 2 and counting.calls == 0


def test_recursion_limit_and_crop_name_clashes(detector, tmp_path):
    src = _folder(tmp_path / "src", {"a.jpg": PORTRAIT, "sub/a.png": PORTRAIT,
                                     "sub/b.jpg": PORTRAIT, ".hidden/c.jpg": PORTRAIT})
    cfg = PrepareConfig(size=64, holdout=0.0, recursive=True)
    r = prepare(src, tmp_path / "out", PrepareConfig(size=64, holdout=0.0, limit=1),
                detector=detector)
    assert (r.seen, r.written) == (1, 1)  # not recursive: a.jpg only
    r = prepare(src, tmp_path / "out", cfg, detector=detector)
    assert (r.seen, r.already_done, r.written, r.failed) == (3, 1, 1, 1)  # sub/a.png clashes
    assert _names(tmp_path / "out") == {"a.png", "b.png"}
    assert "a.jpg" in read_manifest(tmp_path / "out")["sub/a.png"]["reason"]


def test_folder_problems_are_one_line_errors(tmp_path):
    with pytest.raises(InputError, match="no such folder"):
        prepare(tmp_path / "missing", tmp_path / "out", PrepareConfig())
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputError, match="no images"):
        prepare(tmp_path / "empty", tmp_path / "out", PrepareConfig())
    src = _folder(tmp_path / "src", {"a.jpg": PORTRAIT})
    for out in (src, src / "crops"):
        with pytest.raises(ConfigError, match="inside SRC"):
            prepare(src, out, PrepareConfig())
    mine = _folder(tmp_path / "mine", {"holiday.png": PORTRAIT})
    with pytest.raises(ConfigError, match="holds images but no prepare.jsonl"):
        prepare(src, mine, PrepareConfig())


@pytest.mark.parametrize("field,value", [("size", 8), ("keep", "first"), ("min_face", -1),
                                         ("holdout", 1.0), ("holdout", -0.1), ("gender", "x"),
                                         ("format", "gif"), ("limit", -1), ("device", "tpu"),
                                         ("max_outside", 2.0)])
def test_config_is_validated(field, value):
    with pytest.raises(ConfigError):
        PrepareConfig(**{field: value})


# ---------------------------------------------------------------------------------------------
# The CLI


def _run(*args):
    return runner.invoke(app, ["prepare", *(str(a) for a in args)])


def test_cli_happy_path_prints_one_summary_line(tmp_path):
    src = _folder(tmp_path / "src", {"a.jpg": PORTRAIT, "b.jpg": b"broken"})
    r = _run(src, tmp_path / "out", "--size", "64", "--holdout", "0", "--format", "jpg",
             "--device", "cpu")
    assert r.exit_code == 0, r.output
    summary = [line for line in r.stderr.splitlines() if line.startswith("prepare:")]
    assert len(summary) == 1
    assert "1 crops written (0 to holdout) from 2 of 2 files" in summary[0]
    assert "1 failed" in summary[0]
    assert read_image(tmp_path / "out" / "a.jpg").rgb.shape == (64, 64, 3)


def test_cli_exit_1_for_input_problems(tmp_path):
    r = _run(tmp_path / "nope", tmp_path / "out", "--size", "64")
    assert r.exit_code == 1
    one_error_line(r, str(tmp_path / "nope"), "no such folder")
    src = _folder(tmp_path / "src", {"a.jpg": b"broken", "b.png": b""})
    r = _run(src, tmp_path / "out", "--size", "64")
    assert r.exit_code == 1  # every file failed
    assert "0 crops written" in r.stderr and "2 failed" in r.stderr


@pytest.mark.parametrize("args,needle", [
    (["--age", "30-18"], "--age"), (["--age", "abc"], "--age"), (["--gender", "other"], "--gender"),
    (["--keep", "first"], "--keep"), (["--holdout", "1.5"], "--holdout")])
def test_cli_exit_2_for_option_problems(tmp_path, args, needle):
    src = _folder(tmp_path / "src", {"a.jpg": PORTRAIT})
    r = _run(src, tmp_path / "out", "--size", "64", *args)
    assert r.exit_code == 2
    one_error_line(r, needle)
    assert not (tmp_path / "out").exists()


def test_cli_exit_2_for_out_inside_src_and_a_missing_size(tmp_path):
    src = _folder(tmp_path / "src", {"a.jpg": PORTRAIT})
    r = _run(src, src / "out", "--size", "64")
    assert r.exit_code == 2
    one_error_line(r, "inside SRC")
    assert _run(src, tmp_path / "out").exit_code == 2  # --size is required


def test_a_run_that_writes_nothing_exits_1_and_names_the_template_that_fits(detector,
                                                                              tmp_path):
    """UTKFace-like tight crops with the default (loose) template: no crop fits, so the run
    says which template does and exits 1; a re-run into that OUT may switch template."""
    rgb = load_rgb(PORTRAIT)
    x1, y1, x2, y2 = (int(round(v)) for v in detector.detect(rgb)[0].box)
    tight = tmp_path / "tight.png"
    face = np.ascontiguousarray(rgb[y1:y2, x1:x2])
    write_image(tight, cv2.resize(face, None, fx=3, fy=3, interpolation=cv2.INTER_CUBIC))
    src = _folder(tmp_path / "src", {"tight.png": tight})
    out = tmp_path / "out"
    r = CliRunner().invoke(app, ["prepare", str(src), str(out), "--size", "64", "--holdout",
                                 "0", "--device", "cpu"])
    assert r.exit_code == 1
    one_error_line(r, "wrote no crops", "--template facecomp-tight")
    r = CliRunner().invoke(app, ["prepare", str(src), str(out), "--size", "64", "--holdout",
                                 "0", "--device", "cpu", "--template", "facecomp-tight",
                                 "--max-outside", "1"])
    assert r.exit_code == 0, r.output
    assert _names(out) == {"tight.png"}
    recs = read_manifest(out)
    assert recs["tight.png"]["template"] == "facecomp-tight"
    # once crops exist, the settings are fixed for that OUT
    r = CliRunner().invoke(app, ["prepare", str(src), str(out), "--size", "64", "--device",
                                 "cpu"])
    assert r.exit_code == 2
    one_error_line(r, "holds crops made with")
