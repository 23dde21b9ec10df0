"""The command line: a thin typer layer that turns flags into configs and calls the library.

Exit codes: 0 all done, 1 some inputs failed, 2 usage, configuration or model error, 130
interrupted. Errors are printed as one line, never as a traceback (``--debug-errors`` shows it).
"""

from __future__ import annotations

import logging
import sys
import time
from enum import Enum
from pathlib import Path
from typing import Annotated, Optional

import typer

from . import __version__
from .errors import ConfigError, FaceCompError, ModelError

EXIT_CODES = """Exit codes: 0 all inputs done (a photo without faces counts as done); 1 some
inputs failed (the others were still processed); 2 usage, configuration or model error."""

app = typer.Typer(
    name="facecomp", no_args_is_help=True, add_completion=False,
    pretty_exceptions_enable=False, rich_markup_mode=None,
    help="Change faces in group photos with a CycleGAN: detect every face, align it, translate "
         "it (e.g. young -> old) and paste it back seamlessly; the rest of the picture is left "
         "untouched.\n\n" + EXIT_CODES)


class Direction(str, Enum):
    A2B = "A2B"
    B2A = "B2A"


class Blend(str, Enum):
    poisson = "poisson"
    feather = "feather"


# Shared option aliases (reused by later commands such as `video`).
ModelOpt = Annotated[Optional[str], typer.Option(
    "--model", "-m", help="Model name (see `facecomp models`), .safetensors file or training run "
                          "folder. Default: the shipped default model.")]
DirectionOpt = Annotated[Direction, typer.Option(
    "--direction", "-d", case_sensitive=False,
    help="A2B translates domain A into B (for the age models: make older); B2A the reverse.")]
DeviceOpt = Annotated[str, typer.Option(
    "--device", help="auto (GPU when present), cpu, or cuda[:N].")]
BatchOpt = Annotated[int, typer.Option(
    "--batch-size", min=1, max=4096, help="Face crops per generator pass.")]
BlendOpt = Annotated[Blend, typer.Option(
    "--blend", case_sensitive=False,
    help="feather: soft-mask composite; poisson: gradient-domain cv2.seamlessClone.")]
MinFaceOpt = Annotated[int, typer.Option(
    "--min-face", min=0, help="Skip faces smaller than this many pixels (box side); they are "
                              "counted in the report.")]
FacesOpt = Annotated[str, typer.Option(
    "--faces", help="Which faces: all, largest, or numbers like 1,3 (left to right, as drawn "
                    "by --debug).")]
OverwriteOpt = Annotated[bool, typer.Option(
    "--overwrite", help="Replace outputs that already exist (inputs are never modified).")]


def _version(value: bool) -> None:
    if value:
        typer.echo(f"facecomp {__version__}")
        raise typer.Exit()


@app.callback()
def _main(
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Log details.")] = False,
    version: Annotated[bool, typer.Option("--version", callback=_version, is_eager=True,
                                          help="Show the version and exit.")] = False,
) -> None:
    logging.basicConfig(level=logging.INFO if verbose else logging.WARNING,
                        format="facecomp: %(levelname)s: %(message)s", stream=sys.stderr)


@app.command(epilog=EXIT_CODES)
def photo(
    inputs: Annotated[list[Path], typer.Argument(
        help="Image files (JPEG, PNG, WebP, BMP, TIFF) and/or folders of them.",
        show_default=False)],
    output: Annotated[Optional[Path], typer.Option(
        "--output", "-o", help="Output file (one input) or folder (several inputs). Default: "
                               "NAME.facecomp.EXT beside each input.")] = None,
    direction: DirectionOpt = Direction.A2B,
    model: ModelOpt = None,
    blend: BlendOpt = Blend.feather,
    color_match: Annotated[bool, typer.Option(
        "--color-match/--no-color-match",
        help="Match each translated face's colour (LAB mean/std) to the original face.")] = True,
    device: DeviceOpt = "auto",
    batch_size: BatchOpt = 16,
    min_face: MinFaceOpt = 16,
    faces: FacesOpt = "all",
    min_score: Annotated[float, typer.Option(
        "--min-score", min=0.0, max=1.0, help="Drop detections scoring below this.")] = 0.9,
    detect_side: Annotated[int, typer.Option(
        "--detect-side", min=64, help="Detect on a copy whose longer side is at most this many "
                                      "pixels (results map back to full resolution).")] = 2000,
    mask_scale: Annotated[float, typer.Option(
        "--mask-scale", min=0.3, max=1.6, help="Grow (>1) or erode (<1) the face mask.")] = 1.0,
    feather: Annotated[float, typer.Option(
        "--feather", min=0.0, max=1.0, help="Part of the mask radius that fades out (scales "
                                            "with face size).")] = 0.3,
    overwrite: OverwriteOpt = False,
    debug: Annotated[bool, typer.Option(
        "--debug", help="Also write NAME.debug.EXT with boxes, landmarks, face numbers and "
                        "mask outlines drawn.")] = False,
    max_pixels: Annotated[int, typer.Option(
        "--max-pixels", min=1, help="Refuse images with more pixels than this (protects "
                                    "against decompression bombs).")] = 200_000_000,
) -> None:
    """Translate every face in one or more photos and write new files.

    Example: facecomp photo group.jpg --direction A2B   (writes group.facecomp.jpg)
    """
    from .blend import BlendConfig
    from .detect import DetectConfig
    from .pipeline import FaceComp, FaceSelection, PhotoConfig
    from .photo import plan_jobs, run_photos
    from .translate import TranslateConfig

    def run() -> int:
        config = PhotoConfig(
            model=model, direction=direction.value, min_face=min_face,
            faces=FaceSelection.parse(faces),
            detect=DetectConfig(min_score=min_score, max_side=detect_side),
            blend=BlendConfig(method=blend.value, color_match=color_match,
                              mask_scale=mask_scale, feather=feather),
            translate=TranslateConfig(device=device, batch_size=batch_size))
        jobs = plan_jobs(list(inputs), output)

        def pipeline() -> FaceComp:
            fc = FaceComp(config)
            if fc.info is not None:
                _info(f"model {fc.info.name}: {fc.info.source} -> {fc.info.target} "
                      f"({direction.value}), device {fc.translator.device}")
            return fc
        t0 = time.perf_counter()
        total = len(jobs)
        done = [0]

        def report(r) -> None:
            done[0] += 1
            where = f" -> {r.dst}" if r.dst is not None and r.status != "failed" else ""
            prefix = f"[{done[0]}/{total}] " if total > 1 else ""
            if r.status == "failed":
                typer.echo(f"{prefix}facecomp: error: {r.message}", err=True)
            else:
                secs = sum(r.timings.values())
                _info(f"{prefix}{r.src}{where}: {r.message} ({secs:.1f} s)")
                logging.getLogger("facecomp").info(
                    "%s: %s", r.src.name, ", ".join(f"{k} {v:.3f} s" for k, v in r.timings.items()))

        summary = run_photos(pipeline, jobs, overwrite=overwrite, debug=debug,
                             max_pixels=max_pixels, on_report=report)
        if total > 1:
            _info(f"summary: {summary.count('done')} done, {summary.count('no faces')} without "
                  f"faces, {summary.count('failed')} failed, in "
                  f"{time.perf_counter() - t0:.1f} s")
        return summary.exit_code

    raise typer.Exit(_guard(run))


@app.command(epilog=EXIT_CODES)
def models(
    model: Annotated[Optional[str], typer.Option(
        "--model", "-m", help="Also show this model file or folder.")] = None,
) -> None:
    """List the models found ($FACECOMP_MODELS, then the shipped models) with their metadata."""
    from .checkpoint import list_models, read_info, search_path

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


def _info(message: str) -> None:
    typer.echo(message, err=True)


def _guard(run) -> int:
    """Run a command body; turn facecomp errors into one line and an exit code."""
    try:
        return run()
    except (ConfigError, ModelError) as e:
        typer.echo(f"facecomp: error: {e}", err=True)
        return 2
    except FaceCompError as e:
        typer.echo(f"facecomp: error: {e}", err=True)
        return 1
    except KeyboardInterrupt:
        typer.echo("facecomp: interrupted; no partial output was left behind", err=True)
        return 130


def main() -> None:
    app()
