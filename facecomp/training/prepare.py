"""Prepare: raw face images -> aligned training crops, framed exactly as at inference.

Each source image is read with :func:`~facecomp.io.read_image`, its faces are found by the same
:class:`~facecomp.stages.detect.MTCNNDetector` and aligned by the same :func:`~facecomp.stages.align.align_face`
(``AlignConfig(size, template)``) that ``facecomp photo`` uses, so a model trained on these crops
sees faces framed as it will see them at inference. Layout of the output folder ``OUT``::

    OUT/<stem>.png            training crops (--keep largest)
    OUT/<stem>_<k>.png        the k-th face, left to right, detector numbering (--keep all)
    OUT/holdout/...           crops of the sources picked by :func:`is_holdout` (fixed samples)
    OUT/prepare.jsonl         the manifest: one JSON line per source file

Runs resume: the manifest is appended and flushed after every source file, and a later run skips
the sources it records as done: ``written`` and ``no_face`` ones, and ``too_small`` and
``out_of_frame`` ones unless --min-face or --max-outside changed; ``failed`` sources are tried
again. A later run into the same OUT must use the same size, template and --keep. Crops are
written atomically; temporary files left by a killed run are removed. One bad file never stops
a run: it is counted as failed and logged.

Faces are skipped when smaller than ``min_face`` or when more than ``max_outside`` of their crop
would lie past the image border: the aligner mirror-pads there, and images cropped tightly
around the face (e.g. UTKFace's "aligned & cropped" set) would give crops that are mostly
mirrored copies of the face instead of hair and chin.

Label filters understand UTKFace-style names ``AGE_GENDER_ID.ext`` (GENDER 0 = male, 1 = female);
a name that does not have exactly that form is unlabelled. Filtering looks at names only, so
skipped files are never decoded.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import cv2
import numpy as np

from ..device import resolve_device
from ..errors import ConfigError, FaceCompError, InputError, OutputError
from ..face import FaceSelection
from ..geometry import FACECOMP_V1, Template, crop_corners, invert_affine
from ..io import (DEFAULT_MAX_PIXELS, IMAGE_EXTENSIONS, list_images, read_image,
                  remove_stale_temporaries, write_image)
from ..options import PREPARE
from ..stages.align import AlignConfig, align_face
from ..stages.detect import DetectConfig, Detector, MTCNNDetector
from ..stages.translate import TranslateConfig
from .dataset import (GENDERS, HOLDOUT_DIR, MANIFEST_NAME, AgeRange, is_holdout, parse_label,
                      parse_manifest, read_manifest)

log = logging.getLogger(__name__)

KEEP_MODES = ("largest", "all")
FORMATS = {"png": ".png", "jpg": ".jpg"}
JPEG_QUALITY = 95



# ---------------------------------------------------------------------------------------------
# Configuration and report


@dataclass(frozen=True)
class PrepareConfig:
    """How raw images become training crops (validated on construction).

    size, template: the crop, as the model to be trained will be configured (AlignConfig).
    keep: ``largest`` face per image, or ``all`` faces.
    min_face: faces whose box is smaller than this many pixels are skipped (poor training data).
    max_outside: faces whose crop would take more than this fraction of its area from the
        aligner's mirror padding (the crop reaches past the image border) are skipped.
    holdout: fraction of source files whose crops go to ``OUT/holdout`` (0 disables).
    age, gender: label filters on UTKFace-style names (a string like "18-30" is parsed).
    format: ``png`` or ``jpg`` (quality 95). recursive: also read sub-folders of SRC.
    limit: process at most this many source files (after filtering and skipping done ones).
    device: the detector's device, auto|cpu|cuda[:N].
    """

    size: int = 128
    template: Template = FACECOMP_V1  # options.PREPARE["template"] names it
    keep: str = PREPARE["keep"].default
    min_face: int = PREPARE["min_face"].default
    max_outside: float = PREPARE["max_outside"].default
    holdout: float = PREPARE["holdout"].default
    age: AgeRange | None = PREPARE["age"].default
    gender: str | None = PREPARE["gender"].default
    format: str = PREPARE["format"].default
    recursive: bool = PREPARE["recursive"].default
    limit: int | None = PREPARE["limit"].default
    device: str = PREPARE["device"].default
    detect: DetectConfig = field(default_factory=DetectConfig)
    max_pixels: int = DEFAULT_MAX_PIXELS

    def __post_init__(self) -> None:
        if isinstance(self.age, str):
            object.__setattr__(self, "age", AgeRange.parse(self.age))
        AlignConfig(self.size, self.template)  # validates the crop size
        TranslateConfig(device=self.device)    # validates the device name, as for `photo`
        if self.keep not in KEEP_MODES:
            raise ConfigError(f"`keep` must be largest or all, got {self.keep!r}")
        if self.min_face < 0:
            raise ConfigError(f"`min_face` must be 0 or more pixels, got {self.min_face}")
        if not 0.0 <= self.max_outside <= 1.0:
            raise ConfigError(f"`max_outside` must be within 0..1, got {self.max_outside}")
        if not 0.0 <= self.holdout < 1.0:
            raise ConfigError(f"`holdout` must be at least 0 and below 1, got {self.holdout}")
        if self.gender is not None and self.gender not in GENDERS:
            raise ConfigError(f"`gender` must be female or male, got {self.gender!r}")
        if self.format not in FORMATS:
            raise ConfigError(f"`format` must be png or jpg, got {self.format!r}")
        if self.limit is not None and self.limit < 0:
            raise ConfigError(f"`limit` must be 0 or more files, got {self.limit}")

    @property
    def align(self) -> AlignConfig:
        return AlignConfig(self.size, self.template)

    @property
    def filtering(self) -> bool:
        return self.age is not None or self.gender is not None

    def accepts(self, name: str) -> bool:
        """Whether the label filters keep the file ``name`` (all names pass without filters)."""
        if not self.filtering:
            return True
        label = parse_label(name)
        return (label is not None and (self.age is None or label.age in self.age)
                and (self.gender is None or label.gender == self.gender))

    def settings(self) -> dict[str, Any]:
        """What every manifest line records; a later run into the same OUT must match it."""
        return {"size": self.size, "template": self.template.name, "keep": self.keep}

    def thresholds(self) -> dict[str, Any]:
        """The face filters, also recorded: a face skipped under others is looked at again."""
        return {"min_face": self.min_face, "max_outside": self.max_outside}

    def is_done(self, record: dict[str, Any]) -> bool:
        """Whether a manifest record means its source needs no work in this run."""
        status = record.get("status")
        if status in ("too_small", "out_of_frame"):
            return all(record.get(k) == v for k, v in self.thresholds().items())
        return status in ("written", "no_face")


@dataclass
class PrepareReport:
    """Counts of one run. Files are source files; ``written`` and ``holdout`` count crops;
    ``too_small`` and ``out_of_frame`` count faces skipped."""

    seen: int = 0          # image files found in SRC
    written: int = 0       # crops written (training and holdout)
    already_done: int = 0  # files skipped: done by an earlier run (see the manifest)
    no_face: int = 0       # files in which the detector found no face
    too_small: int = 0     # faces smaller than min_face
    out_of_frame: int = 0  # faces whose crop reaches too far past the image border
    filtered_out: int = 0  # files skipped by the label filters (unlabelled ones included)
    failed: int = 0        # files that could not be read, detected or written
    holdout: int = 0       # crops written to OUT/holdout
    remaining: int = 0     # files left for a later run by ``limit``
    processed: int = 0     # files processed by this run
    seconds: float = 0.0
    nothing_written: str | None = None  # why OUT holds no crop at all after this run, if so

    @property
    def all_failed(self) -> bool:
        """True when files failed and none was done, now or before."""
        return self.failed > 0 and self.processed == self.failed and self.already_done == 0

    def summary(self) -> str:
        """The report as one line."""
        rate = self.processed / self.seconds if self.seconds > 0 else 0.0
        parts = [f"{self.already_done} files already done", f"{self.no_face} without a face",
                 f"{self.too_small} faces too small", f"{self.out_of_frame} faces out of frame",
                 f"{self.filtered_out} filtered out", f"{self.failed} failed"]
        if self.remaining:
            parts.append(f"{self.remaining} left by `limit`")
        return (f"prepare: {self.written} crops written ({self.holdout} to holdout) from "
                f"{self.processed} of {self.seen} files in {self.seconds:.1f} s "
                f"({rate:.1f} files/s); " + ", ".join(parts))


# ---------------------------------------------------------------------------------------------
# The run


@dataclass(frozen=True)
class _Item:
    """A source to process: its path, its manifest name (relative to SRC) and, when another
    source already owns its crop names, why it cannot be written."""

    path: Path
    name: str
    conflict: str | None = None


def prepare(src: Path, out: Path, config: PrepareConfig, detector: Detector | None = None,
            on_progress: Callable[[int, int], None] | None = None) -> PrepareReport:
    """Turn the images in ``src`` into aligned crops in ``out``; see the module docstring.

    ``on_progress(done, total)`` is called with 0 first and after each file processed by this
    run. Raises :class:`InputError` for a missing or empty ``src``, :class:`ConfigError` for
    overlapping folders or an ``out`` prepared with other settings, :class:`OutputError` when
    ``out`` cannot be created; problems with single files are counted, never raised.
    """
    t0 = time.perf_counter()
    src, out = Path(src), Path(out)
    paths = find_images(src, config.recursive)
    _check_folders(src, out)
    device = str(resolve_device(config.device)) if detector is None else ""
    detectors = [detector] if detector is not None else []

    def get_detector() -> Detector:  # built on first use: a run may have nothing to detect
        if not detectors:
            detectors.append(MTCNNDetector(config.detect, device=device))
        return detectors[0]

    report = PrepareReport(seen=len(paths))
    with _open_manifest(out, config) as manifest:
        items = _plan(src, paths, config, manifest.done, report)
        if on_progress:
            on_progress(0, len(items))
        for i, item in enumerate(items):
            manifest.append(_prepare_one(item, out, config, get_detector, report))
            report.processed += 1
            if on_progress:
                on_progress(i + 1, len(items))
    report.seconds = time.perf_counter() - t0
    hint = _framing_hint(config)
    if report.out_of_frame:
        log.warning("%d faces were skipped because more than %.0f%% of their crop would be "
                    "mirror padding: their images are cropped too tightly for template %s (%s)",
                    report.out_of_frame, 100 * config.max_outside, config.template.name, hint)
    if report.processed and not report.written and not any(
            r.get("status") == "written" for r in read_manifest(out).values()):
        why = (f"{report.out_of_frame} faces out of frame: {hint}" if report.out_of_frame else
               f"{report.no_face} without a face, {report.too_small} faces too small, "
               f"{report.failed} failed")
        report.nothing_written = f"prepare wrote no crops from {report.processed} files ({why})"
    return report


def _framing_hint(config: PrepareConfig) -> str:
    if config.template.name != "facecomp-tight":
        return ("for images cropped tightly around the face, like UTKFace's, use `template` "
                "facecomp-tight `max_outside` 0.4; `max_outside` 1 keeps every face")
    return "`max_outside` 1 keeps every face"


def find_images(src: Path, recursive: bool = False) -> list[Path]:
    """Image files in ``src`` (and its non-hidden sub-folders if ``recursive``), sorted."""
    paths = list_images(src)  # raises InputError for a missing folder or a file
    if recursive:
        for folder, dirs, _ in os.walk(src):
            dirs[:] = sorted(d for d in dirs if not d.startswith("."))
            if Path(folder) != src:
                paths += list_images(Path(folder))
    if not paths:
        raise InputError(f"{src}: no images in this folder (looked for "
                         f"{', '.join(sorted(IMAGE_EXTENSIONS))})")
    return sorted(paths, key=lambda p: p.relative_to(src).as_posix())


def outside_fraction(crop_from_image: np.ndarray, image_shape: tuple[int, ...],
                     size: int) -> float:
    """The part of a ``size`` crop's area that lies outside the image (mirror-padded), 0..1."""
    h, w = image_shape[:2]
    crop = crop_corners(invert_affine(crop_from_image), size).astype(np.float32)
    frame = np.array([[-0.5, -0.5], [w - 0.5, -0.5], [w - 0.5, h - 0.5], [-0.5, h - 0.5]],
                     np.float32)
    inside, _ = cv2.intersectConvexConvex(crop, frame)
    return float(np.clip(1.0 - inside / cv2.contourArea(crop), 0.0, 1.0))


def _check_folders(src: Path, out: Path) -> None:
    s, o = src.resolve(), out.resolve()
    if o == s or s in o.parents:
        raise ConfigError(f"OUT {out} is inside SRC {src}; choose an output folder outside the "
                          "source folder")
    if o in s.parents:
        raise ConfigError(f"SRC {src} is inside OUT {out}; choose an output folder that does "
                          "not hold the source images")
    if out.exists() and not out.is_dir():
        raise ConfigError(f"OUT {out} is a file; give a folder for the crops")


def _plan(src: Path, paths: list[Path], config: PrepareConfig, done: dict[str, dict],
          report: PrepareReport) -> list[_Item]:
    """Filter, skip done sources, find crop-name conflicts, apply the limit."""
    owner = {Path(name).stem.casefold(): name for name in done}  # crop names already taken
    items = []
    for path in paths:
        name = path.relative_to(src).as_posix()
        if not config.accepts(path.name):
            report.filtered_out += 1
        elif name in done:
            report.already_done += 1
        else:
            first = owner.setdefault(path.stem.casefold(), name)
            conflict = None if first == name else (
                f"{path}: its crops would have the names of those of {first}; rename one of them")
            items.append(_Item(path, name, conflict))
    if config.limit is not None and len(items) > config.limit:
        report.remaining = len(items) - config.limit
        items = items[:config.limit]
    return items


def _prepare_one(item: _Item, out: Path, config: PrepareConfig,
                 get_detector: Callable[[], Detector], report: PrepareReport) -> dict[str, Any]:
    """Process one source; returns its manifest record and updates ``report``."""
    record: dict[str, Any] = {"name": item.name, "status": "failed", "outputs": [],
                              **config.settings(), **config.thresholds()}

    def failed(message: str) -> dict[str, Any]:
        log.warning("%s", message)
        report.failed += 1
        return dict(record, reason=message)

    if item.conflict:
        return failed(item.conflict)
    try:
        rgb = read_image(item.path, max_pixels=config.max_pixels).rgb
    except FaceCompError as e:
        return failed(str(e))
    detector = get_detector()
    try:
        faces = detector.detect(rgb)
    except MemoryError:
        raise
    except Exception as e:  # a detector crash on one odd image must not end a long run
        reason = " ".join(str(e).split())[:200]
        return failed(f"{item.path}: face detection failed ({type(e).__name__}: {reason})")
    folder = out / HOLDOUT_DIR if is_holdout(item.path.name, config.holdout) else out
    n_small = n_outside = 0
    for i in FaceSelection(config.keep).select(faces):
        face = faces[i]
        if face.size < config.min_face:
            n_small += 1
            continue
        crop, aligned = align_face(rgb, face, config.align)
        if outside_fraction(aligned.crop_from_image, rgb.shape, config.size) > config.max_outside:
            n_outside += 1
            continue
        suffix = f"_{i + 1}" if config.keep == "all" else ""
        dst = folder / f"{item.path.stem}{suffix}{FORMATS[config.format]}"
        try:
            # Only this source has these names (see _plan): one left by a killed run is replaced.
            write_image(dst, crop, quality=JPEG_QUALITY, overwrite=True)
        except OutputError as e:
            report.too_small += n_small
            report.out_of_frame += n_outside
            return failed(str(e))
        record["outputs"].append(dst.relative_to(out).as_posix())
        report.written += 1
        report.holdout += int(folder != out)
    report.too_small += n_small
    report.out_of_frame += n_outside
    if record["outputs"]:
        status = "written"
    elif not faces:
        status = "no_face"
        report.no_face += 1
    else:
        status = "too_small" if n_small else "out_of_frame"
    log.info("%s: %d faces, %s", item.name, len(faces), status)
    return dict(record, status=status, faces=len(faces))


# ---------------------------------------------------------------------------------------------
# The manifest


@dataclass
class _Manifest:
    fp: IO[str]
    done: dict[str, dict]

    def append(self, record: dict[str, Any]) -> None:
        """One line, flushed and synced, so a killed run loses at most the file in progress."""
        try:
            self.fp.write(json.dumps(record, ensure_ascii=False) + "\n")
            self.fp.flush()
            os.fsync(self.fp.fileno())
        except OSError as e:
            raise OutputError(f"{self.fp.name}: cannot write the manifest "
                              f"({e.strerror or e})") from e


@contextlib.contextmanager
def _open_manifest(out: Path, config: PrepareConfig) -> Iterator[_Manifest]:
    """Create ``out``, lock and read its manifest, check its settings, clean up leftovers."""
    path = out / MANIFEST_NAME
    if not path.exists() and out.is_dir() and (
            list_images(out) or ((out / HOLDOUT_DIR).is_dir() and list_images(out / HOLDOUT_DIR))):
        raise ConfigError(f"OUT {out} holds images but no {MANIFEST_NAME}; choose a new or "
                          "empty output folder")
    try:
        (out / HOLDOUT_DIR).mkdir(parents=True, exist_ok=True)
        fp = open(path, "a+", encoding="utf-8", errors="replace")
    except OSError as e:
        raise OutputError(f"{out}: cannot create the output folder or its manifest "
                          f"({e.strerror or e}); choose another OUT") from e
    with fp:
        _lock(fp, out)
        fp.seek(0)
        text = fp.read()
        records = parse_manifest(text, path)
        if records and not any(r.get("status") == "written" for r in records.values()) and \
                any(r.get(k) != v for r in records.values() for k, v in config.settings().items()):
            # OUT holds no crops: a re-run may change the settings (e.g. the template)
            log.info("%s holds no crops; starting afresh with the new settings", out)
            fp.seek(0)
            fp.truncate()
            text, records = "", {}
        _check_settings(records, config, out)
        if text and not text.endswith("\n"):
            fp.write("\n")  # after a line cut short by a killed run
        _remove_temporaries(out)
        done = {name: rec for name, rec in records.items() if config.is_done(rec)}
        yield _Manifest(fp, done)


def _lock(fp: IO[str], out: Path) -> None:
    """Refuse a second run on the same OUT at once (their manifests would interleave)."""
    try:
        import fcntl
    except ImportError:  # not POSIX: no locking
        return
    try:
        fcntl.flock(fp.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as e:
        raise OutputError(f"OUT {out} is in use by another prepare run; wait for it or choose "
                          "another OUT") from e


def _check_settings(records: dict[str, dict], config: PrepareConfig, out: Path) -> None:
    want = config.settings()
    for rec in records.values():
        diff = [k for k, v in want.items() if rec.get(k) != v]
        if diff:
            made = ", ".join(f"`{k}` {rec.get(k)}" for k in diff)
            asked = ", ".join(f"`{k}` {want[k]}" for k in diff)
            raise ConfigError(f"OUT {out} holds crops made with {made}, not {asked}; choose "
                              "another OUT for these settings")


def _remove_temporaries(out: Path) -> None:
    """Temporary files of crops being written when a run was killed (training globs see them)."""
    for folder in (out, out / HOLDOUT_DIR):
        remove_stale_temporaries(folder)
