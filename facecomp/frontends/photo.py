"""Photos on disk: plan outputs, read, run the pipeline over many files, write, summarise.

Nothing is lost: inputs are only read; an output that exists is refused unless ``overwrite``;
every write is atomic (a temporary file in the same folder, renamed into place); one bad file
does not stop a folder run. Output naming: ``-o FILE`` for one input, ``-o FOLDER`` for many
(same file names), or ``NAME.facecomp.EXT`` beside each input.
"""

from __future__ import annotations

import logging
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator

from ..errors import ConfigError, FaceCompError, OutputError
from ..io import (DEFAULT_MAX_PIXELS, IMAGE_EXTENSIONS, LoadedImage, atomic_path, list_images,
                  read_image, write_image)
from ..pipeline import FaceComp, PhotoResult

log = logging.getLogger(__name__)

OUTPUT_TAG = ".facecomp"
#: Video files that `facecomp photo` is sometimes given by mistake.
VIDEO_EXTENSIONS = frozenset({".mp4", ".mov", ".mkv", ".webm", ".avi", ".m4v", ".ts", ".m2ts",
                              ".mts", ".wmv", ".flv", ".3gp", ".mpg", ".mpeg"})
_WRITABLE = {".jpg", ".jpeg", ".png", ".webp", ".bmp", ".tif", ".tiff"}


@dataclass(frozen=True)
class Job:
    """One input and where its result goes (``error`` set when it cannot even be planned)."""

    src: Path
    dst: Path | None
    error: str | None = None
    make_folder: bool = False  # the output folder (-o) is created when the first file is written


@dataclass
class FileReport:
    src: Path
    dst: Path | None
    status: str  # "done" | "no faces" | "skipped" | "failed"
    n_faces: int = 0
    n_translated: int = 0
    n_small: int = 0
    message: str = ""
    timings: dict[str, float] = field(default_factory=dict)


@dataclass
class Summary:
    reports: list[FileReport] = field(default_factory=list)

    def count(self, status: str) -> int:
        return sum(r.status == status for r in self.reports)

    @property
    def exit_code(self) -> int:
        return 1 if self.count("failed") else 0


def default_output(src: Path) -> Path:
    suffix = src.suffix.lower() if src.suffix.lower() in _WRITABLE else ".png"
    return src.with_name(f"{src.stem}{OUTPUT_TAG}{suffix}")


def debug_path(dst: Path) -> Path:
    return dst.with_name(f"{dst.stem}.debug{dst.suffix}")


def plan_jobs(inputs: list[Path], output: Path | None, output_is_folder: bool = False
              ) -> list[Job]:
    """Expand folders and decide every output path; raises ConfigError for inconsistent -o.
    ``output_is_folder``: -o names a folder (to be created) even for one input, as a
    trailing slash says."""
    if not inputs:
        raise ConfigError("no input given; pass one or more image files or folders")
    sources: list[Job] = []
    many = len(inputs) > 1
    for p in inputs:
        if p.is_dir():
            many = True
            images = list_images(p)
            if not images:
                sources.append(Job(p, None, f"{p}: no images in this folder (looked for "
                                            f"{', '.join(sorted(IMAGE_EXTENSIONS))})"))
            sources += [Job(i, None) for i in images]
        elif p.exists() and p.suffix.lower() in VIDEO_EXTENSIONS:
            sources.append(Job(p, None, f"{p}: is a video; translate it with facecomp video"))
        elif p.exists():
            sources.append(Job(p, None))
        else:
            sources.append(Job(p, None, f"{p}: no such file or folder"))
    if output is not None and many and output.suffix.lower() in _WRITABLE and not output.is_dir():
        raise ConfigError(f"-o {output}: several inputs need an output folder, not a file name")
    if output is not None and output.exists() and not output.is_dir() and many:
        raise ConfigError(f"-o {output}: is a file; several inputs need an output folder")
    inputs_by_path = {j.src.resolve(): j.src for j in sources if not j.error}
    inputs_by_id = {}
    for j in sources:
        if not j.error:
            try:
                st = j.src.stat()
                inputs_by_id[(st.st_dev, st.st_ino)] = j.src
            except OSError:
                pass

    def input_at(path: Path) -> Path | None:
        """The input of this run that writing ``path`` would replace, if any."""
        hit = inputs_by_path.get(path.resolve())
        if hit is None:
            try:
                st = path.stat()
                hit = inputs_by_id.get((st.st_dev, st.st_ino))
            except OSError:
                pass
        return hit

    jobs, seen = [], {}
    for job in sources:
        if job.error:
            jobs.append(job)
            continue
        src = job.src
        if output is None:
            dst = default_output(src)
        elif many or output.is_dir() or output_is_folder:
            dst = output / (src.name if src.suffix.lower() in _WRITABLE else src.stem + ".png")
            job = Job(src, None, make_folder=not output.is_dir())
        else:
            if output.suffix.lower() not in _WRITABLE:
                raise ConfigError(f"-o {output}: unsupported output type; use one of "
                                  f"{', '.join(sorted(_WRITABLE))} or an existing folder")
            dst = output
            job = Job(src, None, make_folder=not output.parent.is_dir())
        key = dst.resolve()
        if key == src.resolve():
            jobs.append(Job(src, dst, f"{src}: the output would overwrite the input; choose "
                                      "another -o"))
            continue
        if len(debug_path(dst).name.encode()) > 255:
            jobs.append(Job(src, dst, f"{src}: the output name {dst.name[:40]}... is longer than "
                                      "the 255 bytes a file name may have; rename the input or "
                                      "choose another -o"))
            continue
        clash = input_at(dst) or input_at(debug_path(dst))
        if clash is not None:  # by path or by file identity (a hard link), never replaced
            jobs.append(Job(src, dst, f"{src}: its output {dst} would overwrite {clash}, an "
                                      "input of this run; choose another -o"))
            continue
        if key in seen:
            raise ConfigError(f"{src} and {seen[key]} would both be written to {dst}; "
                              "rename one or write them to separate folders")
        seen[key] = src
        jobs.append(Job(src, dst, make_folder=job.make_folder))
    return jobs


def run_photos(pipeline: FaceComp | Callable[[], FaceComp], jobs: list[Job], *, overwrite: bool = False,
               debug: bool = False, max_pixels: int = DEFAULT_MAX_PIXELS,
               on_report: Callable[[FileReport], None] | None = None,
               skip_existing: bool = False) -> Summary:
    """Process every job, streaming images through the pipeline; never raises for one file.

    ``pipeline`` may be a factory: it is then only called (the model only loaded) when at least
    one input can be processed. ``skip_existing``: an output that already exists is left as it
    is and counted as skipped (to continue an interrupted folder run), not as failed."""
    summary = Summary()

    def emit(report: FileReport) -> None:
        summary.reports.append(report)
        if on_report:
            on_report(report)

    loaded: list[tuple[Job, LoadedImage, float]] = []

    def images() -> Iterator:
        for job in jobs:
            if job.error:
                emit(FileReport(job.src, job.dst, "failed", message=job.error))
                continue
            assert job.dst is not None
            if job.dst.exists() and skip_existing and not overwrite:
                emit(FileReport(job.src, job.dst, "skipped", message="already exists; "
                                "skipped"))
                continue
            if job.dst.exists() and not overwrite:
                emit(FileReport(job.src, job.dst, "failed", message=f"{job.dst}: already "
                                "exists; pass `overwrite=True` to replace it, or `skip_existing=True` to "
                                "continue an interrupted run"))
                continue
            t0 = time.perf_counter()
            try:
                img = read_image(job.src, max_pixels=max_pixels)
            except FaceCompError as e:
                emit(FileReport(job.src, job.dst, "failed", message=str(e)))
                continue
            loaded.append((job, img, time.perf_counter() - t0))
            yield img.rgb

    if not isinstance(pipeline, FaceComp):
        if all(job.error for job in jobs):
            for job in jobs:
                emit(FileReport(job.src, job.dst, "failed", message=job.error or ""))
            return summary
        pipeline = pipeline()
    for result in pipeline.process_many(images()):
        job, img, t_decode = loaded.pop(0)
        ages = None
        if debug and result.faces:  # estimated age of each face before and after
            ages = (result.ages or pipeline.estimate_age(img.rgb, result.faces),
                    pipeline.estimate_age(result.image, result.faces))
        emit(_write(job, img, result, t_decode, overwrite, debug, ages))
    return summary


def _write(job: Job, img: LoadedImage, result: PhotoResult, t_decode: float, overwrite: bool,
           debug: bool, ages: tuple[list[float], list[float]] | None = None) -> FileReport:
    assert job.dst is not None
    n, done, small = len(result.faces), len(result.translated), len(result.skipped_small)
    timings = dict(result.timings, decode=t_decode)
    t0 = time.perf_counter()
    try:
        if job.make_folder:
            job.dst.parent.mkdir(parents=True, exist_ok=True)
        if done == 0 and job.src.suffix.lower() == job.dst.suffix.lower():
            with atomic_path(job.dst, overwrite=overwrite) as tmp:
                shutil.copyfile(job.src, tmp)  # nothing to change: an exact copy
        else:
            write_image(job.dst, result.image, img.alpha, like=img, overwrite=overwrite)
        if debug:
            from .debug import draw_debug

            write_image(debug_path(job.dst), draw_debug(result.image, result, ages), like=img,
                        overwrite=overwrite)
    except (OutputError, OSError) as e:
        msg = str(e) if isinstance(e, OutputError) else f"{job.dst}: cannot write ({e})"
        return FileReport(job.src, job.dst, "failed", n, 0, small, msg, timings)
    timings["encode"] = time.perf_counter() - t0
    if n == 0:
        return FileReport(job.src, job.dst, "no faces", message="no faces found; wrote a copy",
                          timings=timings)
    msg = f"{n} face{'s' if n != 1 else ''}, {done} translated"
    if small:
        msg += f", {small} smaller than `min_face` skipped"
    kept = [p for p in result.plans.values() if p.direction is None]
    if kept:
        msg += f", {len(kept)} left as they are ({kept[0].note})"
    if n - done - small - len(kept):
        msg += f", {n - done - small - len(kept)} not selected"
    if done == 0:
        msg += "; wrote a copy"
    if img.n_frames > 1:
        msg += (f"; only the first of its {img.n_frames} frames was translated (the output "
                "has one frame)")
    return FileReport(job.src, job.dst, "done" if done else "no faces", n, done, small, msg,
                      timings)
