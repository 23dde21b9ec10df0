"""Every command-line default is the library's own default: each flag that sets a config field
starts at that field's default, so `facecomp photo` and `FaceComp(PhotoConfig())` do the same
thing. Read from the commands typer builds, not from a list kept by hand."""

from __future__ import annotations

import dataclasses
import enum

import pytest
import typer

from facecomp.training.age_train import AgeTrainConfig
from facecomp.stages.blend import BlendConfig
from facecomp.frontends.cli import app
from facecomp.stages.detect import DetectConfig
from facecomp.io import DEFAULT_MAX_PIXELS
from facecomp.pipeline import PhotoConfig
from facecomp.training.prepare import PrepareConfig
from facecomp.training.config import TrainConfig
from facecomp.stages.translate import TranslateConfig
from facecomp.frontends.video import VideoConfig


def _defaults(cls) -> dict:
    out = {}
    for f in dataclasses.fields(cls):
        if f.default is not dataclasses.MISSING:
            out[f.name] = f.default
        elif f.default_factory is not dataclasses.MISSING:
            out[f.name] = f.default_factory()
    return out


def _cli_defaults(command: str) -> dict:
    group = typer.main.get_command(app)
    cmd = group.commands[command]
    out = {}
    for p in cmd.params:
        if p.name in ("help",) or p.required:
            continue
        value = p.default
        out[p.name] = value.value if isinstance(value, enum.Enum) else value
    return out


#: flags whose config field has another name or lives deeper: command -> flag -> default
_PHOTO = {
    **{k: v for k, v in _defaults(PhotoConfig).items() if k in ("model", "direction", "min_face")},
    "age": None, "faces": "all",
    "min_score": DetectConfig().min_score, "detect_side": DetectConfig().max_side,
    "blend": BlendConfig().method, "color_match": BlendConfig().color_match,
    "mask_scale": BlendConfig().mask_scale, "feather": BlendConfig().feather,
    "strength": BlendConfig().strength, "keep_occluders": BlendConfig().keep_occluders,
    # --match-photo turns on all three of the blend's photo-matching steps
    "match_photo": BlendConfig().match_degradation and BlendConfig().keep_monochrome
    and BlendConfig().chroma_limit > 0,
    "device": TranslateConfig().device, "precision": TranslateConfig().precision,
    "batch_size": TranslateConfig().batch_size, "max_pixels": DEFAULT_MAX_PIXELS,
}


def test_the_pipeline_defaults_select_every_face():
    assert PhotoConfig().faces.mode == "all"


@pytest.mark.parametrize("command", ["photo", "video"])
def test_photo_and_video_flags_start_at_the_library_defaults(command):
    cli = _cli_defaults(command)
    expected = dict(_PHOTO)
    if command == "photo":
        expected["rotations"] = DetectConfig().rotations
    else:
        # video looks for upright faces only unless asked (a turned pass on every full
        # detection costs more than it finds in footage); the library's detector default
        # is for photos
        expected.pop("faces"), expected.pop("max_pixels")
        expected["rotations"] = "off"
        expected.update({k: v for k, v in _defaults(VideoConfig).items() if k in cli})
    checked = {k: (cli[k], v) for k, v in expected.items() if k in cli}
    assert set(checked) == set(expected), set(expected) - set(checked)
    wrong = {k: pair for k, pair in checked.items() if pair[0] != pair[1]}
    assert not wrong, wrong


@pytest.mark.parametrize("command, cls", [
    ("train", TrainConfig), ("prepare", PrepareConfig), ("train-age", AgeTrainConfig)])
def test_training_and_prepare_flags_start_at_their_configs_defaults(command, cls):
    cli = _cli_defaults(command)
    lib = _defaults(cls)
    shared = [k for k in cli if k in lib]  # each flag is named after its field
    assert len(shared) >= min(8, len(cli) // 2), shared  # the comparison covers the flags
    wrong = {}
    for flag in shared:
        a, b = cli[flag], lib[flag]
        b = b.value if isinstance(b, enum.Enum) else b
        if hasattr(b, "name") and isinstance(a, str):  # a Template: the flag gives its name
            b = b.name
        if isinstance(b, tuple) and isinstance(a, (list, tuple)):
            a = tuple(a)
        empty = (None, "", ())  # "no value" spelt as the flag's type and as the field's
        if a != b and not (a in empty and b in empty):
            wrong[flag] = (a, b)
    assert not wrong, wrong


def test_the_options_table_builds_the_default_config_and_names_its_mistakes():
    """`PhotoConfig.from_options` (what every front end calls) with nothing chosen is the
    library's default config; `match_photo` turns the three photo-matching steps off together;
    an unknown option is a one-line error that lists the real ones."""
    from facecomp.errors import ConfigError
    from facecomp.options import PIPELINE

    assert PhotoConfig.from_options() == PhotoConfig()
    raw = PhotoConfig.from_options(match_photo=False, detect_side=800, rotations="off", age="+20")
    assert (raw.blend.chroma_limit, raw.blend.keep_monochrome, raw.blend.match_degradation) == \
        (0.0, False, False)
    assert raw.detect.max_side == 800 and raw.detect.rotations == "off" and str(raw.age) == "+20"
    with pytest.raises(ConfigError, match="unknown option strenght; the options are direction"):
        PhotoConfig.from_options(strenght=1.5)
    assert set(PIPELINE) >= {"direction", "strength", "age", "faces", "rotations"}


def test_ranges_and_choices_are_checked_by_the_configs_from_the_same_table():
    """The table's range and choices are what the configs enforce, in the library's words
    (the CLI enforces the same ones before a config is made)."""
    from facecomp.errors import ConfigError

    with pytest.raises(ConfigError, match=r"^`mask_scale` must be within 0.3..1.6, got 2$"):
        BlendConfig(mask_scale=2)
    with pytest.raises(ConfigError, match=r"^`blend` must be one of feather, poisson, got 'soft'$"):
        BlendConfig(method="soft")
    with pytest.raises(ConfigError, match=r"^`detect_side` must be at least 64, got 10$"):
        DetectConfig(max_side=10)
    with pytest.raises(ConfigError, match=r"^`generate_every` must be within 1..30, got 31$"):
        VideoConfig(generate_every=31)
    with pytest.raises(ConfigError, match="`precision` must be one of auto, fp32, bf16, fp16"):
        TranslateConfig(precision="int8")
    TranslateConfig(batch_size=None)  # optional: None is allowed
