"""Options declared once: name, type, default, range and help of the photo and video pipeline
(:data:`PIPELINE`, :data:`VIDEO`) and of training (:data:`TRAIN`). The config dataclasses take
their defaults from here, ``PhotoConfig.from_options`` turns option values into a config, and
the front ends build their controls from the same tables (the CLI its flags, a web page its
widgets), so no default or help text is written twice.

Plain data, no imports beyond the standard library: the CLI reads it at start-up. Help texts name
other options in backticks (`` `strength` ``); the CLI shows them as its flags.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

from .errors import ConfigError

PRECISIONS = ("auto", "fp32", "bf16", "fp16")
BLENDS = ("feather", "poisson")
ROTATIONS = ("auto", "all", "off")
CODECS = ("auto", "h264", "h265", "vp9", "av1", "gif")


@dataclass(frozen=True)
class Option:
    """One option. ``kind``: its Python type (``str``, ``int``, ``float``, ``bool``); ``optional``:
    None is allowed (and is the default when ``default`` is None); ``low``/``high``: inclusive
    range; ``choices``: the allowed strings (matched case-insensitively); ``flags``: the CLI's
    spelling when it is not ``--name-with-dashes`` (e.g. a short form, or ``--on/--off`` for a
    bool); ``metavar``: the CLI's placeholder."""

    name: str
    kind: type
    default: Any
    help: str
    optional: bool = False
    low: float | None = None
    high: float | None = None
    choices: tuple[str, ...] = ()
    flags: tuple[str, ...] = ()
    metavar: str | None = None
    show_default: bool = True

    def check(self, value: Any) -> None:
        """A :class:`ConfigError` naming this option unless ``value`` is allowed."""
        if value is None and self.optional:
            return
        if self.choices and value not in self.choices:
            raise ConfigError(f"`{self.name}` must be one of {', '.join(self.choices)}, got "
                              f"{value!r}")
        low, high = self.low, self.high
        if (low is not None and value < low) or (high is not None and value > high):
            bound = (f"within {low:g}..{high:g}" if low is not None and high is not None
                     else f"at least {low:g}" if low is not None else f"at most {high:g}")
            raise ConfigError(f"`{self.name}` must be {bound}, got {value}")


def _table(*options: Option) -> dict[str, Option]:
    return {o.name: o for o in options}


#: Where the networks run; the same option in every command that runs one.
_DEVICE = Option("device", str, "auto", "auto (GPU when present), cpu, or cuda[:N].")


#: Options of every command that changes faces (photo, video, and later the web page and batch).
PIPELINE = _table(
    Option("direction", str, "A2B", "A2B translates domain A into B (for the age models: make "
           "older); B2A the reverse.", choices=("A2B", "B2A"), flags=("--direction", "-d")),
    Option("model", str, None, "Model name (see `facecomp models`), .safetensors file or "
           "training run folder. Default: the shipped default model.", optional=True,
           flags=("--model", "-m")),
    Option("blend", str, "feather", "feather: soft-mask composite; poisson: gradient-domain "
           "cv2.seamlessClone.", choices=BLENDS),
    Option("color_match", bool, True, "Match each translated face's colour (LAB mean/std) to "
           "the original face.", flags=("--color-match/--no-color-match",)),
    _DEVICE,
    Option("precision", str, "auto", "Generator arithmetic: auto (bf16/fp16 on a GPU; on the "
           "CPU bf16 where a quick check finds it faster, else fp32), fp32, bf16, fp16.",
           choices=PRECISIONS),
    Option("batch_size", int, None, "Face crops per generator pass (default: 8 on the CPU, 16 "
           "on a GPU). Larger is not faster on a CPU: beyond ~12 crops the activations leave "
           "its caches.", optional=True, low=1, high=4096),
    Option("min_face", int, 16, "Skip faces smaller than this many pixels (box side); they are "
           "counted in the report.", low=0),
    Option("faces", str, "all", "Which faces: all, largest, numbers like 1,3 (left to right, "
           "as drawn by `debug`), or by estimated age: age<40, age>=60, age>=20,age<40."),
    Option("min_score", float, 0.9, "Drop detections scoring below this.", low=0.0, high=1.0),
    Option("detect_side", int, 2000, "Detect on a copy whose longer side is at most this many "
           "pixels (results map back to full resolution).", low=64),
    Option("mask_scale", float, 1.0, "Grow (>1) or erode (<1) the face mask.", low=0.3,
           high=1.6),
    Option("feather", float, 0.3, "Part of the mask radius that fades out (scales with face "
           "size).", low=0.0, high=1.0),
    Option("strength", float, 1.0, "How much of the model's change to apply: 0 none, 1 all, up "
           "to 2 to exaggerate it.", low=0.0, high=2.0),
    Option("age", str, None, "Target age: 70 (absolute) or +25 / -15 (years relative to each "
           "face's estimated age). Each face gets the direction and amount of change that bring "
           "it there, from the model's age calibration (`facecomp calibrate`); replaces "
           "`direction` and `strength`.", optional=True, show_default=False),
    Option("match_photo", bool, True, "Make each face's change belong to the photo: it keeps "
           "the face's own sharpness, blur, grain and noise, greyscale faces stay grey (sepia "
           "keeps its tone) and a pixel's colour change is capped near 10 CIELAB a/b units. "
           "`raw_change` pastes the model's change as it is.",
           flags=("--match-photo/--raw-change",)),
    Option("keep_occluders", bool, True, "Keep what lies over a face (hands, microphones, cups, "
           "glasses frames, masks, hair strands) as it is, found by the shipped occlusion "
           "model; `paint_occluders` changes the whole face ellipse.",
           flags=("--keep-occluders/--paint-occluders",)),
    Option("rotations", str, "auto", "Find turned heads too: auto (a cheap coarse look at "
           "90/180/270 degrees, a full one where it finds more faces), all (full passes at all "
           "four angles), off.", choices=ROTATIONS),
)

#: Where video differs from photos: it looks for upright faces only unless asked (a turned
#: pass on every full detection costs more than it finds in footage).
VIDEO_DEFAULTS = {"rotations": "off"}

#: Options of video only.
VIDEO = _table(
    Option("detect_every", int, 5, "Look for new faces with the full detector every K frames. "
           "Faces already found are followed from frame to frame by its fast last stage; a "
           "face lost that way is looked for at once around where it was. 1: the full "
           "detector on every frame (slowest).", low=1),
    Option("start", float, 0.0, "Start at this time (seconds).", low=0.0),
    Option("end", float, None, "Stop at this time (seconds).", optional=True),
    Option("codec", str, "auto", "Video codec; auto: the container's usual one. MP4 holds "
           "h264/h265/av1, MOV h264/h265, MKV h264/h265/vp9/av1, WebM vp9/av1, AVI h264, GIF "
           "gif.", choices=CODECS),
    Option("crf", int, 18, "Quality on x264's scale (lower: better, bigger); mapped for VP9 "
           "and AV1.", low=0, high=51),
    Option("preset", str, "medium", "Speed preset, x264's names (ultrafast .. veryslow); "
           "mapped for VP9 and AV1."),
    Option("steady", float, 0.25, "Time constant of each face's running average of the "
           "model's change, where the face itself stays the same, so blotches do not come and "
           "go between frames; a face that moves, speaks or blinks takes its new change at "
           "once. 0: each frame's change as the model gives it.", low=0.0, high=10.0,
           metavar="SECONDS"),
    Option("generate_every", int, 2, "With `steady`, run the model on each face at least every "
           "K frames; in between, a frame where the face stayed the same takes its last "
           "change, moved with the face (up to K times less model time). A face that moves, "
           "speaks or blinks runs the model at once. 1: the model on every frame.", low=1,
           high=30, metavar="K"),
)


#: Options of `facecomp train` (the fields of ``TrainConfig``, with the reference
#: implementation's names).
TRAIN = _table(
    Option("name", str, "cyclegan", "Model name written into the checkpoints."),
    Option("domain_a", str, "A", "Name of domain A, e.g. young."),
    Option("domain_b", str, "B", "Name of domain B, e.g. old."),
    Option("size", int, 128, "Crop size in pixels (without `schedule`)."),
    Option("template", str, "auto", "Alignment template of the crops; auto: the one `facecomp "
           "prepare` recorded in the folders (else facecomp-v1)."),
    Option("schedule", str, "", "Progressive sizes as SIZE:EPOCHS,... e.g. 64:10,96:10,128:20 "
           "(weights carry across sizes)."),
    Option("n_epochs", int, 100, "Epochs at the initial learning rate."),
    Option("n_epochs_decay", int, 100, "Epochs of linear decay to zero."),
    Option("epoch_size", int, 0, "Samples per epoch (0: the larger domain)."),
    Option("batch_size", int, 1, "Images per domain per step."),
    Option("lr", float, 0.0002, "Adam learning rate."),
    Option("beta1", float, 0.5, "Adam beta1."),
    Option("lambda_cycle", float, 10.0, "Weight of the cycle loss."),
    Option("lambda_identity", float, 0.5, "Identity loss weight, relative to `lambda_cycle`."),
    Option("pool_size", int, 50, "Image pool size (0: no pool)."),
    Option("ngf", int, 64, "Generator width."),
    Option("n_blocks", int, 9, "Generator residual blocks."),
    Option("upsample", str, "resize", "Generator upsampling: resize (nearest x2 + 3x3 conv, no "
           "checkerboard texture) or transpose (the reference's transposed conv, ~20 % cheaper)."),
    Option("ndf", int, 64, "Discriminator width."),
    Option("n_layers_d", int, 3, "Discriminator layers (3: 70x70 PatchGAN)."),
    Option("flip", bool, True, "Random horizontal flips.", flags=("--flip/--no-flip",)),
    Option("scale_jitter", float, 0.12, "Random upscale (fraction) before the random crop."),
    Option("seed", int, 0, "Random seed (CPU runs repeat exactly)."),
    Option("precision", str, "auto", "auto (bf16 on CUDA, fp32 on the CPU), fp32, bf16, or fp16 "
           "(with loss scaling)."),
    Option("channels_last", bool, True, "Train in the channels_last memory format (faster "
           "convolutions on CPUs and GPUs).", flags=("--channels-last/--no-channels-last",)),
    Option("compile", bool, False, "torch.compile the generators.", flags=("--compile",)),
    _DEVICE,
    Option("workers", int, 2, "DataLoader worker processes."),
    Option("log_every", int, 50, "Steps between stats.jsonl lines."),
    Option("sample_every", int, 500, "Steps between sample grids."),
    Option("save_every", int, 1000, "Steps between checkpoints."),
    Option("max_steps", int, 0, "Stop after this many steps in total (0: train to the end); "
           "resume later with `resume`. Applies to this invocation only."),
)


#: Options of `facecomp prepare` besides SRC, OUT and the crop size (the fields of
#: ``PrepareConfig``).
PREPARE = _table(
    Option("keep", str, "largest", "largest: one crop per image (NAME.png); all: every face "
           "(NAME_K.png, K numbered left to right from 1).", choices=("largest", "all")),
    replace(PIPELINE["min_face"], default=48),  # smaller faces make poor training data
    Option("max_outside", float, 0.25, "Skip faces whose crop would take more than this part "
           "of its area from mirror padding past the image border (1 keeps all).", low=0.0,
           high=1.0),
    Option("holdout", float, 0.05, "Part of the source files whose crops go to OUT/holdout/, "
           "picked by a hash of the file name (0 disables).", low=0.0, high=1.0),
    Option("age", str, None, "Only UTKFace-style names AGE_GENDER_ID.jpg with AGE in this "
           "range: 18-30 (inclusive), 60- (60 and over), 25.", optional=True),
    Option("gender", str, None, "Only UTKFace-style names of this gender: female or male.",
           optional=True),
    Option("format", str, "png", "png, or jpg (quality 95).", choices=("png", "jpg")),
    Option("recursive", bool, False, "Also read the sub-folders of SRC.",
           flags=("--recursive", "-r")),
    Option("limit", int, None, "Process at most this many source files (after the filters, "
           "not counting files done by earlier runs).", optional=True, low=0),
    Option("template", str, "facecomp-v1", "Alignment template: facecomp-v1 (face with hair "
           "and chin) or facecomp-tight (face only, for tightly cropped data sets)."),
    _DEVICE,
)

#: Options of `facecomp train-age` besides DATA and the run folder (``AgeTrainConfig``).
AGE_TRAIN = _table(
    Option("epochs", int, 16, "Passes over the data.", low=1, high=1000),
    Option("width", int, 32, "Network width.", low=4, high=256),
    Option("input_size", int, 80, "Input side (px).", low=16, high=256),
    Option("batch_size", int, 128, "Crops per step.", low=1, high=4096),
    Option("lr", float, 3e-3, "Peak AdamW learning rate (one-cycle)."),
    Option("seed", int, 0, "Random seed."),
    Option("limit", int, 0, "Use at most this many training crops (0: all).", low=0),
)


def default(name: str) -> Any:
    """The default of a pipeline or video option."""
    return (PIPELINE.get(name) or VIDEO[name]).default
