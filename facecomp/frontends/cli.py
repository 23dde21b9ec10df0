"""The command line: a thin typer layer that turns flags into configs and calls the library.

Exit codes: 0 all done, 1 some inputs failed, 2 usage, configuration or model error, 130
interrupted. Errors are printed as one line, never as a traceback (``--debug-errors`` shows it).
"""

from __future__ import annotations

import functools
import inspect
import logging
import os
import re
import sys
import time
from enum import Enum
from pathlib import Path
from typing import Annotated, Optional

import typer
import typer.core

from .. import __version__
from ..errors import ConfigError, FaceCompError, ModelError
from ..options import AGE_TRAIN, PIPELINE, PREPARE, TRAIN, VIDEO, VIDEO_DEFAULTS

EXIT_CODES = """Exit codes: 0 done; 1 an input or output problem (see the message); 2 usage,
configuration or model error; 130 interrupted."""
_PHOTO_EXIT = """Exit codes: 0 all inputs done (a photo without faces counts as done); 1 some
inputs failed (the others were still processed); 2 usage, configuration or model error; 130
interrupted."""
_VIDEO_EXIT = """Exit codes: 0 the video (every video of a folder) was written; 1 an input cannot be
read or an output cannot be written (nothing is left there; the other videos of a folder still
run); 2 usage, configuration or model error; 130 interrupted."""
_PREPARE_EXIT = """Exit codes: 0 the run completed, even if some files failed (they are counted);
1 every file failed or no crop was written; 2 usage or configuration error; 130 interrupted
(re-run to continue)."""
_TRAIN_EXIT = """Exit codes: 0 training stopped at its end or at --max-steps; 1 a data, output or
divergence problem (the last checkpoint is kept); 2 usage, configuration or model error; 130
interrupted (--resume continues)."""

#: The library names its own parameters in its messages, in backticks (`overwrite=True`,
#: `crf`); the CLI shows them as its flags. The one place where the two are mapped.
_PARAM = re.compile(r"`([a-z][a-z0-9_]*)(=True)?`")


def _flags(text: str) -> str:
    """A library message with its parameter names as this CLI's flags."""
    return _PARAM.sub(lambda m: "--" + m.group(1).replace("_", "-"), text)


def _echo(message: object = "", **kwargs) -> None:
    """A library message (an error, a warning, a summary) on the command line; data the
    command prints (a model list, a config, figures) goes out through typer.echo as it is."""
    typer.echo(_flags(str(message)), **kwargs)


class _FlagFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        return _flags(super().format(record))


def _click_class(name: str) -> type:
    """A class of the click that typer runs on (vendored or not), found by name."""
    return next(c for c in typer.BadParameter.__mro__ if c.__name__ == name)


class _Commands(typer.core.TyperGroup):
    """Usage errors (a value out of range, a wrong choice, an unknown or missing option) as one
    ``facecomp: error:`` line with exit code 2, like every other error, instead of click's
    usage block."""

    def main(self, args=None, prog_name=None, complete_var=None, standalone_mode=True,
             **extra):
        if not standalone_mode:
            return super().main(args, prog_name, complete_var, standalone_mode=False, **extra)
        usage_error = _click_class("UsageError")
        try:
            rv = super().main(args, prog_name, complete_var, standalone_mode=False, **extra)
        except usage_error as e:
            if type(e).__name__ == "NoArgsIsHelpError" or e.ctx is None:
                e.show()  # the help itself, or an error before any command was chosen
            else:
                message = " ".join(e.format_message().split())
                typer.echo(f"facecomp: error: {message} (see `{e.ctx.command_path} --help`)",
                           err=True)
            sys.exit(e.exit_code)
        except _click_class("ClickException") as e:
            e.show()
            sys.exit(e.exit_code)
        except typer.Abort:
            typer.echo("Aborted.", err=True)
            sys.exit(1)
        sys.exit(rv if isinstance(rv, int) else 0)


app = typer.Typer(
    name="facecomp", cls=_Commands, no_args_is_help=True, add_completion=False,
    pretty_exceptions_enable=False, rich_markup_mode=None,
    help="Change faces in group photos with a CycleGAN: detect every face, align it, translate "
         "it (e.g. young -> old) and paste it back seamlessly; the rest of the picture is left "
         "untouched.\n\n" + EXIT_CODES + " Each command's --help lists its own.")


# Option aliases shared by several commands.
HeldOutAOpt = Annotated[Path, typer.Option(
    "--a", help="Aligned domain-A crops (uses DIR/holdout when `facecomp prepare` made one).",
    show_default=False)]
HeldOutBOpt = Annotated[Path, typer.Option("--b", help="Aligned domain-B crops (likewise).",
                                           show_default=False)]
OverwriteOpt = Annotated[bool, typer.Option(
    "--overwrite", help="Replace outputs that already exist (inputs are never modified).")]


#: Enum types for the table's choice options (case-insensitive choices in --help), one per
#: option, made on first use
_CHOICES: dict[str, type] = {}


def _choice_type(o) -> type:
    if o.name not in _CHOICES:
        _CHOICES[o.name] = Enum(o.name.title().replace("_", ""), {c: c for c in o.choices},
                                type=str)
    return _CHOICES[o.name]


def _from_table(o, default=None) -> inspect.Parameter:
    """One typer option from an entry of :mod:`facecomp.options`: its flags, help (with the
    library's parameter names shown as flags), range, choices and default."""
    kw: dict = {"help": _flags(o.help), "show_default": o.show_default}
    if o.low is not None:
        kw["min"] = o.low
    if o.high is not None:
        kw["max"] = o.high
    if o.metavar:
        kw["metavar"] = o.metavar
    kind = o.kind
    value = o.default if default is None else default
    if o.choices:
        kind = _choice_type(o)
        kw["case_sensitive"] = False
        value = None if value is None else kind(value)
    if o.optional:
        kind = Optional[kind]
    flags = o.flags or ("--" + o.name.replace("_", "-"),)
    return inspect.Parameter(o.name, inspect.Parameter.KEYWORD_ONLY, default=value,
                             annotation=Annotated[kind, typer.Option(*flags, **kw)])


def _with_options(*tables: dict, defaults: dict | None = None, leave_out: tuple[str, ...] = (),
                  after: str | None = None):
    """Add the options of ``tables`` (from :mod:`facecomp.options`: each declared there once,
    with its default and help) to a command, after its parameter ``after`` (or its own
    parameters); the command takes them as ``**options``, choices as plain strings."""
    def wrap(fn):
        own = [p for p in inspect.signature(fn, eval_str=True).parameters.values()
               if p.kind is not inspect.Parameter.VAR_KEYWORD]
        extra = [_from_table(o, (defaults or {}).get(o.name)) for table in tables
                 for o in table.values() if o.name not in leave_out]
        at = [p.name for p in own].index(after) + 1 if after else len(own)
        # keyword-only from there on, so the generated ones may sit between the command's own
        own = own[:at] + [p.replace(kind=inspect.Parameter.KEYWORD_ONLY) for p in own[at:]]

        @functools.wraps(fn)
        def command(*args, **kwargs):
            return fn(*args, **{k: v.value if isinstance(v, Enum) else v
                                for k, v in kwargs.items()})

        command.__signature__ = inspect.Signature(own[:at] + extra + own[at:])
        return command
    return wrap


# The pipeline's options that other commands take too, as the table declares them
ModelOpt = _from_table(PIPELINE["model"]).annotation
DeviceOpt = _from_table(PIPELINE["device"]).annotation
BatchOpt = _from_table(PIPELINE["batch_size"]).annotation


def _version(value: bool) -> None:
    if value:
        typer.echo(f"facecomp {__version__}")
        raise typer.Exit()


@app.callback()
def _main(
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Log details.")] = False,
    version: Annotated[bool, typer.Option("--version", callback=_version, is_eager=True,
                                          help="Show the version and exit.")] = False,
    threads: Annotated[Optional[int], typer.Option(
        "--threads", min=1, max=1024,
        help="CPU threads for the networks (default: one per core). On a machine busy with "
             "other work, 1 can be several times faster: the threads of each operation wait "
             "for one another.")] = None,
) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(_FlagFormatter("facecomp: %(levelname)s: %(message)s"))
    logging.basicConfig(level=logging.INFO if verbose else logging.WARNING, handlers=[handler])
    if threads is not None:
        import torch

        torch.set_num_threads(threads)


@app.command(epilog=_PHOTO_EXIT)
@_with_options(PIPELINE, after="output")
def photo(
    inputs: Annotated[list[Path], typer.Argument(
        help="Image files (JPEG, PNG, WebP, BMP, TIFF) and/or folders of them.",
        show_default=False)],
    output: Annotated[Optional[str], typer.Option(
        "--output", "-o", help="Output file (one input) or folder (several inputs, or a name "
                               "ending in /; created if missing). Default: NAME.facecomp.EXT "
                               "beside each input.")] = None,
    overwrite: OverwriteOpt = False,
    skip_existing: Annotated[bool, typer.Option(
        "--skip-existing", help="Leave outputs that already exist as they are and count them as "
                                "skipped: continues an interrupted folder run.")] = False,
    debug: Annotated[bool, typer.Option(
        "--debug", help="Also write NAME.debug.EXT with boxes, landmarks, face numbers, each "
                        "face's estimated age before and after, and mask outlines drawn.")
                     ] = False,
    max_pixels: Annotated[int, typer.Option(
        "--max-pixels", min=1, help="Refuse images with more pixels than this (protects "
                                    "against decompression bombs).")] = 200_000_000,
    **options,
) -> None:
    """Translate every face in one or more photos and write new files.

    Example: facecomp photo group.jpg --direction A2B   (writes group.facecomp.jpg)
    """
    from ..pipeline import FaceComp, PhotoConfig
    from .photo import plan_jobs, run_photos

    def run() -> int:
        config = PhotoConfig.from_options(**options)
        jobs = plan_jobs(list(inputs), Path(output) if output else None,
                         output_is_folder=bool(output) and output.endswith(("/", os.sep)))

        def pipeline() -> FaceComp:
            fc = FaceComp(config)
            if fc.info is not None and config.age is not None:
                _info(f"model {fc.info.name}: each face towards age {config.age}, device "
                      f"{fc.translator.device}")
            elif fc.info is not None:
                _info(f"model {fc.info.name}: {fc.info.source} -> {fc.info.target} "
                      f"({config.direction}), device {fc.translator.device}")
            return fc
        t0 = time.perf_counter()
        total = len(jobs)
        done = [0]

        def report(r) -> None:
            done[0] += 1
            where = f" -> {r.dst}" if r.dst is not None and r.status != "failed" else ""
            prefix = f"[{done[0]}/{total}] " if total > 1 else ""
            if r.status == "failed":
                _echo(f"{prefix}facecomp: error: {r.message}", err=True)
            else:
                secs = sum(r.timings.values())
                _info(f"{prefix}{r.src}{where}: {r.message} ({secs:.1f} s)")
                logging.getLogger("facecomp").info(
                    "%s: %s", r.src.name, ", ".join(f"{k} {v:.3f} s" for k, v in r.timings.items()))

        summary = run_photos(pipeline, jobs, overwrite=overwrite, debug=debug,
                             max_pixels=max_pixels, on_report=report,
                             skip_existing=skip_existing)
        if total > 1:
            skipped = summary.count("skipped")
            _info(f"summary: {summary.count('done')} done, {summary.count('no faces')} without "
                  f"faces, {summary.count('failed')} failed" +
                  (f", {skipped} skipped (already there)" if skipped else "") +
                  f", in {time.perf_counter() - t0:.1f} s")
        return summary.exit_code

    raise typer.Exit(_guard(run))


@app.command(epilog=_VIDEO_EXIT)
@_with_options(PIPELINE, VIDEO, defaults=VIDEO_DEFAULTS, leave_out=("faces",), after="output")
def video(
    src: Annotated[Path, typer.Argument(
        help="Input video (anything FFmpeg reads: MP4, MOV, MKV, WebM, AVI, TS/M2TS, GIF, ...) "
             "or a folder of videos (each is written to the -o folder, or beside itself).",
        show_default=False)],
    output: Annotated[Optional[str], typer.Option(
        "--output", "-o", help="Output video, its container by extension: .mp4 .m4v .mov .mkv "
                               "(H.264), .webm (VP9 and Opus), .avi (H.264 and MP3), .gif (a "
                               "palette per frame, no sound); or a folder (a name ending in /); "
                               "missing folders are created. Audio the container cannot hold "
                               "is re-encoded. Default: NAME.facecomp.mp4 beside the input.")
    ] = None,
    overwrite: OverwriteOpt = False,
    **options,
) -> None:
    """Translate every face of a video (or of each video in a folder), frame by frame, stable
    over time; audio is kept.

    Faces are tracked across frames and their landmarks smoothed, so pasted faces do not
    jitter. The output is written to a temporary file and renamed at the end.

    Example: facecomp video clip.mp4 -o clip-old.mp4 --direction A2B
    """
    from ..pipeline import FaceComp, PhotoConfig
    from .video import VideoConfig, default_output, translate_video

    def run() -> int:
        config = PhotoConfig.from_options(**{k: v for k, v in options.items() if k in PIPELINE})
        vconfig = VideoConfig(**{k: v for k, v in options.items() if k in VIDEO})
        from ..errors import InputError, OutputError
        from ..io import remove_orphaned_temporaries

        if src.is_dir():  # each video of the folder, like a folder of photos
            from .photo import VIDEO_EXTENSIONS

            kinds = VIDEO_EXTENSIONS | {".gif"}  # a GIF is an animation here, not a photo
            todo = sorted(p for p in src.iterdir() if p.is_file() and not p.name.startswith(".")
                          and p.suffix.lower() in kinds and ".facecomp." not in p.name)
            if not todo:
                raise InputError(f"{src}: no videos in this folder (looked for "
                                 f"{', '.join(sorted(kinds))})")
            folder = Path(output) if output else None
            if folder is not None and folder.exists() and not folder.is_dir():
                raise OutputError(f"{folder}: exists and is not a folder; with a folder as "
                                  "input, -o names the output folder")
            plans = [(p, (folder / default_output(p).name) if folder else default_output(p))
                     for p in todo]
        else:
            dst = Path(output) if output else default_output(src)
            if len(dst.name.encode()) <= 255 and output and (output.endswith(("/", os.sep))
                                                               or dst.is_dir()):
                dst = dst / default_output(src).name
            plans = [(src, dst)]
        for _, dst in plans:
            if len(dst.name.encode()) > 255:
                raise OutputError(f"{dst.name[:40]}...: the output name is longer than the 255 "
                                  "bytes a file name may have; choose a shorter -o")
        pipeline, failed = None, 0
        for i, (one, dst) in enumerate(plans):
            prefix = f"[{i + 1}/{len(plans)}] " if len(plans) > 1 else ""
            try:
                if dst.exists() and not overwrite:
                    raise OutputError(f"{dst}: already exists; pass --overwrite to replace it")
                try:
                    dst.parent.mkdir(parents=True, exist_ok=True)
                except OSError as e:
                    raise OutputError(f"{dst.parent}: cannot create the output folder "
                                      f"({e.strerror or e})") from None
                remove_orphaned_temporaries(dst.parent)  # left by a run killed with SIGKILL
                if pipeline is None:
                    pipeline = FaceComp(config)
                bar = _Bar("frames")
                try:
                    report = translate_video(one, dst, pipeline, vconfig, overwrite=overwrite,
                                             on_progress=bar.update)
                finally:
                    bar.close()
            except (InputError, OutputError) as e:
                if len(plans) == 1:
                    raise
                failed += 1
                _echo(f"{prefix}facecomp: error: {e}", err=True)
                continue
            tracks = f"{report.tracks} track" + ("" if report.tracks == 1 else "s")
            _info(f"{prefix}{one} -> {dst}: {report.frames} frames, {report.face_frames} faces "
                  f"in {tracks}, {report.seconds:.1f} s ({report.fps:.1f} fps)")
            logging.getLogger("facecomp").info(
                "time per stage: %s", ", ".join(f"{k} {v:.2f} s"
                                                for k, v in report.timings.items()))
        if len(plans) > 1:
            _info(f"summary: {len(plans) - failed} written, {failed} failed")
        return 1 if failed else 0

    raise typer.Exit(_guard(run))


class _Bar:
    """A rich progress bar on stderr: done / total, rate, ETA."""

    def __init__(self, unit: str) -> None:
        self.unit, self._progress, self._task, self._t0 = unit, None, None, time.perf_counter()

    def update(self, done: int, total: int) -> None:
        from rich.console import Console
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, \
            TimeRemainingColumn

        if self._progress is None:
            self._progress = Progress(TextColumn(self.unit), BarColumn(), MofNCompleteColumn(),
                                      TextColumn("{task.fields[rate]}"), TimeRemainingColumn(),
                                      console=Console(stderr=True))
            self._progress.start()
            self._task = self._progress.add_task(self.unit, total=total or None, rate="")
        rate = done / max(1e-9, time.perf_counter() - self._t0)
        self._progress.update(self._task, completed=done, total=total or None,
                              rate=f"{rate:.1f} {self.unit}/s")

    def close(self) -> None:
        if self._progress is not None:
            self._progress.stop()


@app.command(epilog=EXIT_CODES)
def models(
    model: Annotated[Optional[str], typer.Option(
        "--model", "-m", help="Also show this model file or folder.")] = None,
) -> None:
    """List the models found ($FACECOMP_MODELS, then the shipped models) with their metadata."""
    from ..checkpoint import list_models, read_info, search_path

    def run() -> int:
        entries = []
        if model:
            p = Path(model).expanduser()
            if p.is_file():
                entries.append((p, read_info(p)))
            elif p.is_dir():
                entries += [(e.path, e.info) for e in list_models([p])]
            else:
                raise ModelError(f"{model}: no such model file or folder")
        entries += [(e.path, e.info) for e in list_models()]
        if not entries:
            dirs = ", ".join(str(d) for d in search_path())
            typer.echo(f"no models found (searched {dirs})")
            return 0
        for path, info in entries:
            arch = ", ".join(f"{k}={v}" for k, v in sorted(info.arch_args.items()))
            typer.echo(f"{info.name}  {info.direction}: {info.source} -> {info.target}  "
                       f"crop {info.crop_size}px  {info.architecture}({arch})  "
                       f"template {info.template.name}")
            typer.echo(f"    {path}")
            if info.description:
                typer.echo(f"    {info.description}")
        return 0

    raise typer.Exit(_guard(run))


@app.command(epilog=_PREPARE_EXIT)
@_with_options(PREPARE)
def prepare(
    src: Annotated[Path, typer.Argument(
        help="Folder of raw face images (JPEG, PNG, WebP, BMP, TIFF).", show_default=False)],
    out: Annotated[Path, typer.Argument(
        help="Output folder (created): training crops in OUT/, held-out crops in OUT/holdout/, "
             "the manifest in OUT/prepare.jsonl.", show_default=False)],
    size: Annotated[int, typer.Option(
        "--size", "-s", min=16, max=2048,
        help="Crop side in pixels: the crop size of the model to be trained.",
        show_default=False)],
    **options,
) -> None:
    """Turn raw face images into aligned training crops, framed exactly as `photo` frames them.

    Re-running continues where a run stopped (see OUT/prepare.jsonl); into an OUT that holds
    no crops yet, a re-run may change the settings. Exits 0 when the run completed, even if some
    files failed (they are counted); 1 when every file failed or no crop was written (the
    message says why, e.g. the template that fits the images' framing).

    Example: facecomp prepare utkface/ crops/ --size 128 --age 18-30
    """
    from rich.console import Console
    from rich.progress import (BarColumn, MofNCompleteColumn, Progress, TextColumn,
                               TimeRemainingColumn)

    from ..training.prepare import PrepareConfig
    from ..training.prepare import prepare as run_prepare

    def run() -> int:
        from ..geometry import template_by_name

        try:
            tmpl = template_by_name(options["template"])
        except ValueError as e:
            raise ConfigError(f"--template: {e}") from None
        config = PrepareConfig(size=size, **{**options, "template": tmpl})
        console = Console(stderr=True)
        progress = Progress(TextColumn("prepare"), BarColumn(), MofNCompleteColumn(),
                            TextColumn("{task.fields[rate]}"), TimeRemainingColumn(),
                            console=console, disable=not console.is_terminal)
        task = progress.add_task("prepare", total=None, rate="")
        t0 = time.perf_counter()

        def on_progress(done: int, total: int) -> None:
            rate = done / max(1e-9, time.perf_counter() - t0) if done else 0.0
            progress.update(task, completed=done, total=total, rate=f"{rate:.1f} files/s")

        # While the bar is live, rich proxies sys.stderr; log lines go through it, above the bar.
        stderr = sys.stderr
        handlers = [h for h in logging.getLogger().handlers
                    if isinstance(h, logging.StreamHandler) and h.stream is stderr]
        with progress:
            for h in handlers:
                h.setStream(sys.stderr)
            try:
                report = run_prepare(src, out, config, on_progress=on_progress)
            finally:
                for h in handlers:
                    h.setStream(stderr)
        _info(report.summary())
        if report.nothing_written and not report.all_failed:
            _echo(f"facecomp: error: {report.nothing_written}", err=True)
            return 1
        return 1 if report.all_failed else 0

    raise typer.Exit(_guard(run))


@app.command(epilog=_TRAIN_EXIT, context_settings={"max_content_width": 100})
@_with_options(TRAIN)
def train(
    ctx: typer.Context,
    a: Annotated[Optional[Path], typer.Option("--a", help="Folder of aligned domain-A faces "
                                              "(from `facecomp prepare`).")] = None,
    b: Annotated[Optional[Path], typer.Option("--b", help="Folder of aligned domain-B faces.")
                 ] = None,
    out: Annotated[Optional[Path], typer.Option("--out", "-o", help="Run folder: checkpoints, "
                                                "config.json, stats.jsonl, samples/.")] = None,
    config: Annotated[Optional[Path], typer.Option(
        "--config", help="JSON file of options (names as in config.json); flags given on the "
                         "command line win.")] = None,
    resume: Annotated[bool, typer.Option("--resume", help="Continue the run in --out exactly "
                                         "where its last checkpoint left off.")] = False,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Print the resolved config as JSON "
                                          "and exit.")] = False,
    **options,
) -> None:
    """Train a CycleGAN on two folders of aligned faces (torchrun-ready for several GPUs).

    Example: facecomp train --a data/young --b data/old --out runs/age --schedule 64:5,128:5
    --n-epochs 5 --n-epochs-decay 5. Several GPUs: torchrun --nproc-per-node 4 -m facecomp
    train ... (one process per GPU; rank 0 logs and saves).
    """
    import json

    from ..training.config import TrainConfig, merge_config_file
    from ..training.data import data_template
    from ..training.train import train as run_training

    def run() -> int:
        values = {k: v for k, v in ctx.params.items()
                  if k not in ("config", "resume", "dry_run")}
        values = {k: (str(v) if isinstance(v, Path) else v) for k, v in values.items()}
        typed = {k for k in values if (src := ctx.get_parameter_source(k)) is not None
                 and src.name == "COMMANDLINE"}
        values = merge_config_file(values, config, typed)
        if values.get("out") is None:
            raise ConfigError("--out is required: the run folder")
        if not resume and (values.get("a") is None or values.get("b") is None):
            raise ConfigError("--a and --b are required: the two folders of aligned faces")
        values["a"], values["b"] = values.get("a") or "", values.get("b") or ""
        cfg = TrainConfig(**values)
        if dry_run and cfg.template == "auto" and Path(cfg.a).is_dir() and Path(cfg.b).is_dir():
            import dataclasses

            cfg = dataclasses.replace(cfg, template=data_template(cfg.a, cfg.b))
        if dry_run:
            typer.echo(json.dumps(cfg.to_json(), indent=2, sort_keys=True))
            return 0
        bar = _TrainBar()
        try:
            result = run_training(cfg, resume=resume, overrides=typed, on_tick=bar.update)
        finally:
            bar.close()
        _info(f"stopped at step {result.step} ({result.epoch} of {result.epochs} epochs "
              f"complete); generators: "
              f"{result.run_dir}/{result.name}.A2B.safetensors and .B2A.safetensors -- use them with "
              f"`facecomp photo --model {result.run_dir}`")
        return 0

    raise typer.Exit(_guard(run))


@app.command(epilog=EXIT_CODES)
def evaluate(
    model: ModelOpt = None,
    a: HeldOutAOpt = ...,
    b: HeldOutBOpt = ...,
    grid: Annotated[Optional[Path], typer.Option(
        "--grid", help="Write an image of input / translated / reconstructed triplets.")] = None,
    n_grid: Annotated[int, typer.Option("--n-grid", min=2, help="Faces in the grid (half from "
                                        "each domain).")] = 32,
    limit: Annotated[Optional[int], typer.Option("--limit", min=1, help="Score at most this "
                                                 "many faces per domain.")] = None,
    json_out: Annotated[Optional[Path], typer.Option("--json", help="Also write the scores as "
                                                     "JSON.")] = None,
    identity: Annotated[bool, typer.Option(
        "--identity/--no-identity", help="Measure whether translated faces are still the same "
                                         "person (dlib's descriptor; needs the eval extra: "
                                         "pip install 'facecomp[eval]').")] = True,
    overwrite: OverwriteOpt = False,
    device: DeviceOpt = "auto",
    batch_size: BatchOpt = None,
) -> None:
    """Score a model on held-out faces: cycle L1 both ways, identity L1, change in the face,
    estimated age before and after, same person, chroma change and texture.

    Example: facecomp evaluate --model runs/age --a data/young --b data/old --grid grid.jpg
    """
    from ..measure.evaluate import evaluate as run_evaluate
    from ..io import check_output

    def run() -> int:
        if json_out is not None:
            check_output(json_out, overwrite)
        report = run_evaluate(model, a, b, limit=limit, grid=grid, n_grid=n_grid, device=device,
                              batch_size=batch_size, identity=identity, overwrite=overwrite)
        typer.echo(report.summary())
        if grid is not None:
            typer.echo(f"grid: {grid}")
        if json_out is not None:
            from ..io import atomic_path

            with atomic_path(json_out, overwrite=overwrite) as tmp:
                tmp.write_text(report.to_json() + "\n")
        return 0

    raise typer.Exit(_guard(run))


@app.command(epilog=EXIT_CODES)
def calibrate(
    model: ModelOpt = None,
    a: HeldOutAOpt = ...,
    b: HeldOutBOpt = ...,
    limit: Annotated[Optional[int], typer.Option("--limit", min=1, help="Use at most this "
                                                 "many faces per domain.")] = None,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Measure and print the curves, "
                                          "but leave the model files as they are.")] = False,
    device: DeviceOpt = "auto",
    batch_size: BatchOpt = None,
) -> None:
    """Measure how many years each generator of a model moves faces at each --strength, and
    store that curve in the model files' metadata: what --age starts from (it picks each
    face's direction; in videos it also sets the strength).

    Example: facecomp calibrate --model runs/age --a data/young --b data/old
    """
    from ..measure.evaluate import calibrate_model

    def run() -> int:
        curves = calibrate_model(model, a, b, limit=limit, device=device,
                                 batch_size=batch_size, write=not dry_run)
        for direction, (path, cal) in curves.items():
            points = ", ".join(f"{s:g}: {d:+.1f}" for s, d in zip(cal.strengths, cal.shifts))
            typer.echo(f"{direction} ({cal.n} faces): strength -> mean age shift  {points}")
            typer.echo(f"    {'measured only' if dry_run else 'stored in'} {path}")
        return 0

    raise typer.Exit(_guard(run))


@app.command("train-age", epilog=_TRAIN_EXIT.replace(" (--resume continues)", ""))
@_with_options(AGE_TRAIN)
def train_age(
    data: Annotated[Path, typer.Argument(
        help="A `facecomp prepare` OUT folder of UTKFace-style crops AGE_GENDER_ID.png (all "
             "ages; its holdout/ is scored, never trained on).", show_default=False)],
    out: Annotated[Path, typer.Option("--out", "-o", help="Run folder: "
                                      "age-estimator.safetensors, stats.jsonl, config.json.",
                                      show_default=False)] = ...,
    **options,
) -> None:
    """Train the age estimator that `evaluate`, `calibrate` and --age use.

    Example: facecomp train-age data/all --out runs/age-estimator   (about 20-40 min on 2 cores)
    """
    from ..training.age_train import AgeTrainConfig
    from ..training.age_train import train_age as run_train

    def run() -> int:
        cfg = AgeTrainConfig(data=str(data), out=str(out), **options)

        def tick(epoch: int, total: int, line: dict) -> None:
            _info(f"epoch {epoch}/{total}: loss {line['loss']:.3f}, held-out MAE "
                  f"{line['holdout_mae']:.2f} years ({line['seconds']:.0f} s)")

        result = run_train(cfg, on_epoch=tick)
        bands = ", ".join(f"{k} {v['mae']:.1f}" for k, v in result.metrics["bands"].items())
        _info(f"held-out MAE {result.metrics['mae']:.2f} years ({bands}); "
              f"{result.path} in {result.seconds / 60:.1f} min")
        return 0

    raise typer.Exit(_guard(run))


class _TrainBar:
    """A progress bar with it/s, ETA and the main losses, on stderr."""

    def __init__(self) -> None:
        self._progress = None
        self._task = None

    def update(self, p) -> None:
        from rich.progress import (BarColumn, MofNCompleteColumn, Progress, TextColumn,
                                   TimeRemainingColumn)

        if self._progress is None:
            from rich.console import Console

            self._progress = Progress(
                TextColumn("epoch {task.fields[epoch]} {task.fields[size]}px"), BarColumn(),
                MofNCompleteColumn(), TextColumn("{task.fields[rate]:.2f} it/s"),
                TimeRemainingColumn(), TextColumn("{task.fields[losses]}"),
                console=Console(stderr=True), transient=False)
            self._progress.start()
            self._task = self._progress.add_task("train", total=p.total_steps,
                                                 completed=p.step - 1, epoch=0, size=0, rate=0.0,
                                                 losses="")
        losses = " ".join(f"{k} {p.losses[k]:.3f}" for k in ("G", "D_A", "D_B") if k in p.losses)
        self._progress.update(self._task, completed=p.step, epoch=p.epoch + 1, size=p.size,
                              rate=p.it_per_s, losses=losses)

    def close(self) -> None:
        if self._progress is not None:
            self._progress.stop()


def _info(message: str) -> None:
    _echo(message, err=True)


def _guard(run) -> int:
    """Run a command body; turn facecomp errors into one line and an exit code."""
    try:
        return run()
    except (ConfigError, ModelError) as e:
        _echo(f"facecomp: error: {e}", err=True)
        return 2
    except FaceCompError as e:
        _echo(f"facecomp: error: {e}", err=True)
        return 1
    except KeyboardInterrupt:
        _echo("facecomp: interrupted; no partial output was left behind", err=True)
        return 130
    except OSError as e:  # a filesystem error no stage turned into a message of its own
        where = f"{e.filename}: " if e.filename else ""
        _echo(f"facecomp: error: {where}{e.strerror or e}", err=True)
        return 1


def _threads_first(argv: list[str]) -> list[str]:
    """``--threads N`` is an option of ``facecomp`` itself; accept it after the subcommand too
    (``facecomp photo x.jpg --threads 1``) by moving it in front."""
    out, moved, i = [], [], 0
    while i < len(argv):
        a = argv[i]
        if a == "--threads" and i + 1 < len(argv) and out:
            moved += [a, argv[i + 1]]
            i += 2
            continue
        if a.startswith("--threads=") and out:
            moved.append(a)
        else:
            out.append(a)
        i += 1
    return moved + out


def main() -> None:
    import signal

    # SIGTERM (kill, a closed terminal session, a container stop) ends a run like Ctrl-C:
    # temporary outputs are removed and the exit code is 130.
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    app(args=_threads_first(sys.argv[1:]))
