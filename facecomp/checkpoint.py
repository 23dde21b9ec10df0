"""Self-describing generator checkpoints (safetensors + metadata) and model discovery.

A model file holds one generator (one direction) and, in its safetensors metadata, everything
needed to use it: format version, architecture and its arguments, crop size, alignment template,
domain names and direction. Files are loaded without pickle. A *model name* groups the files of
both directions: ``--model aging --direction B2A`` finds the file whose metadata says
``name=aging, direction=B2A`` on the search path ($FACECOMP_MODELS, then the shipped models).
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from .errors import ConfigError, ModelError, OutputError
from .geometry import Template

if TYPE_CHECKING:  # torch loads only where weights are read or written: `facecomp models`
    import torch   # reads metadata alone
    from torch import nn

log = logging.getLogger(__name__)

FORMAT = "facecomp-generator"
FORMAT_VERSION = 1
DIRECTIONS = ("A2B", "B2A")
#: The model used when --model is not given.
DEFAULT_MODEL = "aging"
_PICKLE_SUFFIXES = {".pt", ".pth", ".ckpt", ".pkl", ".bin"}


@dataclass(frozen=True)
class ModelInfo:
    """The metadata stored with each generator."""

    name: str
    architecture: str
    arch_args: dict
    crop_size: int
    template: Template
    domains: dict[str, str]  # {"A": "young", "B": "old"}
    direction: str  # "A2B" or "B2A"
    description: str = ""
    license: str = ""
    extra: dict = field(default_factory=dict)  # training config, steps, ...

    def __post_init__(self) -> None:
        if self.direction not in DIRECTIONS:
            raise ValueError(f"direction must be A2B or B2A, got {self.direction!r}")

    @property
    def age_calibration(self):
        """The :class:`~facecomp.stages.target.Calibration` stored by ``facecomp calibrate``, or None."""
        from .stages.target import Calibration

        data = self.extra.get("age_calibration")
        if not isinstance(data, dict):
            return None
        try:
            return Calibration.from_json(data)
        except (KeyError, TypeError, ValueError):
            log.warning("model %s %s: damaged age calibration ignored", self.name, self.direction)
            return None

    @property
    def source(self) -> str:
        return self.domains.get(self.direction[0], self.direction[0])

    @property
    def target(self) -> str:
        return self.domains.get(self.direction[2], self.direction[2])

    def to_json(self) -> str:
        return json.dumps({
            "name": self.name, "architecture": self.architecture, "arch_args": self.arch_args,
            "crop_size": self.crop_size, "template": self.template.to_json(),
            "domains": self.domains, "direction": self.direction,
            "description": self.description, "license": self.license, "extra": self.extra,
        }, sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> "ModelInfo":
        d = json.loads(text)
        return cls(name=str(d["name"]), architecture=str(d["architecture"]),
                   arch_args=dict(d["arch_args"]), crop_size=int(d["crop_size"]),
                   template=Template.from_json(d["template"]), domains=dict(d["domains"]),
                   direction=str(d["direction"]), description=str(d.get("description", "")),
                   license=str(d.get("license", "")), extra=dict(d.get("extra", {})))


def save_generator(path: str | Path, generator: nn.Module, info: ModelInfo, *,
                   dtype: torch.dtype | None = None, overwrite: bool = True) -> None:
    """Write ``generator``'s weights (in ``dtype``, default float32) and ``info`` atomically as
    one safetensors file."""
    import torch

    dtype = dtype or torch.float32
    tensors = {k: v.detach().to("cpu", dtype if v.is_floating_point() else v.dtype).contiguous()
               for k, v in generator.state_dict().items()}
    meta = {"format": FORMAT, "format_version": str(FORMAT_VERSION), "info": info.to_json()}
    write_safetensors(path, tensors, meta, overwrite=overwrite)


def save_module(path: str | Path, net: nn.Module, fmt: str, version: int, info_json: str, *,
                dtype: torch.dtype | None = None, overwrite: bool = True) -> None:
    """Write a facecomp side model (age estimator, occlusion model): its weights (buffers
    included) in ``dtype`` (default float32) and its ``format``/``format_version``/``info``
    metadata."""
    import torch

    dtype = dtype or torch.float32
    tensors = {k: v.detach().to("cpu", dtype if v.is_floating_point() else v.dtype).contiguous()
               for k, v in net.state_dict().items()}
    meta = {"format": fmt, "format_version": str(version), "info": info_json}
    write_safetensors(path, tensors, meta, overwrite=overwrite)


def load_module(path: Path, fmt: str, version: int, what: str, parse_info, build,
                shipped: Path):
    """A side model written by :func:`save_module`: (net in eval mode, float32, CPU, info).

    ``parse_info(json) -> info`` and ``build(info) -> nn.Module`` come from its module; every
    failure is a one-line ModelError naming ``what`` ("age estimator", ...): missing file,
    another format or version, damaged metadata or file, weights of the wrong shapes, NaN."""
    import torch
    from safetensors import safe_open
    from safetensors.torch import load_file

    if not path.is_file():
        raise ModelError(f"{path}: no such {what} file" + (
            f"; the shipped {what} is missing from this installation, reinstall facecomp"
            if path == shipped else ""))
    try:
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
        if meta.get("format") != fmt:
            raise ModelError(f"{path}: not a facecomp {what} (format {meta.get('format')!r}, "
                             f"expected {fmt!r})")
        if meta.get("format_version") != str(version):
            raise ModelError(f"{path}: {what} format version {meta.get('format_version')}, "
                             f"this facecomp reads {version}")
        info = parse_info(meta["info"])
        net = build(info)
        tensors = load_file(str(path), device="cpu")
    except ModelError:
        raise
    except (KeyError, TypeError, ValueError, RecursionError, OverflowError) as e:
        raise ModelError(f"{path}: damaged {what} metadata ({e})") from None
    except Exception as e:  # safetensors' own errors for damaged files
        raise ModelError(f"{path}: not a readable safetensors file ({e})") from None
    expected = net.state_dict()
    if set(tensors) != set(expected) or any(tensors[k].shape != v.shape
                                            for k, v in expected.items()):
        raise ModelError(f"{path}: the weights do not fit {type(net).__name__} ({what})")
    if not all(torch.isfinite(t.float()).all() for t in tensors.values()):
        raise ModelError(f"{path}: the {what}'s weights hold NaN or infinite values")
    net.load_state_dict({k: v.float() for k, v in tensors.items()}, strict=True)
    return net.eval(), info


def write_safetensors(path: str | Path, tensors: dict, meta: dict, *,
                      overwrite: bool = True) -> None:
    """Write a safetensors file atomically; any failure (a full disk included: safetensors
    raises its own error type there) is a one-line OutputError and leaves no file behind."""
    from safetensors.torch import save_file

    from .io import atomic_path

    with atomic_path(path, overwrite=overwrite) as tmp:
        try:
            save_file(tensors, str(tmp), metadata=meta)
        except OSError:
            raise
        except Exception as e:
            raise OutputError(f"{path}: cannot write the model file ({_short(e)}); is the disk "
                              "full?") from None


def update_info(path: str | Path, info: ModelInfo) -> None:
    """Replace the metadata of a model file, keeping its tensors exactly (atomic rewrite)."""
    from safetensors.torch import load_file

    path = Path(path)
    read_info(path)  # a facecomp model file, readable
    tensors = load_file(str(path), device="cpu")
    meta = {"format": FORMAT, "format_version": str(FORMAT_VERSION), "info": info.to_json()}
    write_safetensors(path, tensors, meta)


def read_info(path: str | Path) -> ModelInfo:
    """The metadata of a model file, without reading its weights."""
    path = Path(path)
    _refuse_pickle(path)
    from safetensors import safe_open

    try:  # the header alone; "numpy" so that reading metadata does not import torch
        with safe_open(str(path), framework="numpy") as f:
            meta = f.metadata() or {}
    except FileNotFoundError:
        raise ModelError(f"{path}: no such model file") from None
    except IsADirectoryError:
        raise ModelError(f"{path}: is a folder, expected a .safetensors model file") from None
    except Exception as e:  # safetensors raises its own error types for damaged headers
        raise ModelError(f"{path}: not a readable safetensors file, it may be corrupt or "
                         f"truncated ({_short(e)})") from None
    if meta.get("format") != FORMAT:
        raise ModelError(f"{path}: safetensors file without facecomp metadata; expected a "
                         f"generator saved by facecomp (format {FORMAT!r})")
    version = meta.get("format_version", "?")
    if version != str(FORMAT_VERSION):
        raise ModelError(f"{path}: model format version {version}, this facecomp reads version "
                         f"{FORMAT_VERSION}; upgrade facecomp or re-export the model")
    try:
        info = ModelInfo.from_json(meta["info"])
    except (KeyError, ValueError, TypeError, OverflowError) as e:
        raise ModelError(f"{path}: damaged model metadata ({_short(e)})") from None
    except RecursionError:
        raise ModelError(f"{path}: damaged model metadata (nested too deeply)") from None
    problem = _check_info(info)
    if problem:
        raise ModelError(f"{path}: refused model metadata: {problem}")
    return info


#: Architecture arguments above this are refused before anything is allocated (the shipped
#: model uses ngf 32; the reference CycleGAN 64).
MAX_ARCH_ARG = 1024


def _check_info(info: ModelInfo) -> str | None:
    """Why this metadata cannot describe a usable model, or None."""
    if not 16 <= info.crop_size <= 2048:
        return f"crop_size {info.crop_size} is outside 16..2048"
    for k, v in info.arch_args.items():
        if isinstance(v, bool) or not isinstance(v, (int, float, str)):
            return f"arch_args {k}={v!r} is not a number or a name"
        if isinstance(v, (int, float)) and not (abs(v) <= MAX_ARCH_ARG and v == v):
            return f"arch_args {k}={v} is outside -{MAX_ARCH_ARG}..{MAX_ARCH_ARG}"
    return None


def load_generator(path: str | Path, device: str | torch.device = "cpu"
                   ) -> tuple[nn.Module, ModelInfo]:
    """Rebuild the generator a model file describes and load its weights (float32, eval mode)."""
    path = Path(path)
    info = read_info(path)
    import torch
    from safetensors import safe_open
    from safetensors.torch import load_file

    from .networks import build

    try:  # on the meta device first: shapes only, nothing allocated
        with torch.device("meta"):
            shape_net = build(info.architecture, **info.arch_args)
    except (KeyError, TypeError, ValueError, RuntimeError) as e:
        raise ModelError(f"{path}: cannot build architecture {info.architecture!r} with "
                         f"{info.arch_args} ({_short(e)})") from None
    try:
        with safe_open(str(path), framework="pt") as f:
            shapes = {k: tuple(f.get_slice(k).get_shape()) for k in f.keys()}
    except Exception as e:
        raise ModelError(f"{path}: the weights cannot be read, the file may be truncated "
                         f"({_short(e)})") from None
    expected = {k: tuple(v.shape) for k, v in shape_net.state_dict().items()}
    missing = sorted(set(expected) - set(shapes))
    unexpected = sorted(set(shapes) - set(expected))
    wrong = [f"{k} {shapes[k]} (expected {v})"
             for k, v in expected.items() if k in shapes and shapes[k] != v]
    if missing or unexpected or wrong:
        what = "; ".join(s for s in (
            f"missing {len(missing)} tensors, e.g. {missing[0]}" if missing else "",
            f"{len(unexpected)} unexpected, e.g. {unexpected[0]}" if unexpected else "",
            f"wrong shape: {wrong[0]}" if wrong else "") if s)
        raise ModelError(f"{path}: weights do not fit {info.architecture}({_args(info.arch_args)}):"
                         f" {what}")
    try:
        tensors = load_file(str(path), device="cpu")
    except Exception as e:
        raise ModelError(f"{path}: the weights cannot be read, the file may be truncated "
                         f"({_short(e)})") from None
    bad = next((k for k, v in tensors.items()
                if v.is_floating_point() and not torch.isfinite(v).all()), None)
    if bad is not None:
        raise ModelError(f"{path}: the weights hold NaN or infinite values (e.g. {bad}); the "
                         "model is damaged")
    net = build(info.architecture, **info.arch_args)
    net.load_state_dict({k: v.float() for k, v in tensors.items()}, strict=True)
    return net.to(device).eval(), info


# ---------------------------------------------------------------------------------------------
# Discovery


def shipped_models_dir() -> Path:
    """The models that ship with facecomp: inside the installed package, or the source tree's."""
    pkg = Path(__file__).resolve().parent
    installed = pkg / "_models"
    return installed if installed.is_dir() else pkg.parent / "models"


def search_path() -> list[Path]:
    """Folders searched for models by name: $FACECOMP_MODELS (os.pathsep-separated), shipped."""
    env = os.environ.get("FACECOMP_MODELS", "")
    dirs = [Path(p).expanduser() for p in env.split(os.pathsep) if p.strip()]
    return dirs + [shipped_models_dir()]


@dataclass(frozen=True)
class ModelEntry:
    path: Path
    info: ModelInfo


def list_models(dirs: list[Path] | None = None) -> list[ModelEntry]:
    """Every readable model file in ``dirs`` (default: the search path); bad files are skipped."""
    out: list[ModelEntry] = []
    for d in (search_path() if dirs is None else dirs):
        if not d.is_dir():
            if dirs is None:
                log.warning("$FACECOMP_MODELS folder %s does not exist; skipped", d)
            continue
        for p in sorted(d.glob("*.safetensors")):
            if not p.is_file():  # a FIFO, socket or folder named *.safetensors would hang or fail
                log.warning("skipping %s: not a regular file", p)
                continue
            try:
                out.append(ModelEntry(p, read_info(p)))
            except ModelError as e:
                if not _other_facecomp_file(p):
                    log.warning("skipping %s", e)
    return out


def _other_facecomp_file(path: Path) -> bool:
    """Whether ``path`` is a facecomp file that is not a generator (e.g. the age estimator)."""
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="numpy") as f:
            fmt = (f.metadata() or {}).get("format", "")
    except Exception:
        return False
    return fmt.startswith("facecomp-") and fmt != FORMAT


def resolve_model(spec: str | Path | None, direction: str) -> Path:
    """The model file for ``spec`` (a name, a file or a run folder) in ``direction``."""
    if direction not in DIRECTIONS:
        raise ConfigError(f"direction must be A2B or B2A, got {direction!r}")
    spec = DEFAULT_MODEL if spec is None or str(spec) == "" else spec
    path = Path(spec).expanduser()
    if path.is_file():
        _refuse_pickle(path)
        info = read_info(path)
        if info.direction == direction:
            return path
        for entry in list_models([path.parent]):
            if entry.info.name == info.name and entry.info.direction == direction:
                return entry.path
        raise ModelError(f"{path}: translates {info.direction} ({info.source} -> {info.target}); "
                         f"no {direction} file of model {info.name!r} beside it -- pass that file "
                         f"or use `direction` {info.direction}")
    if path.is_dir():
        found = [e for e in list_models([path]) if e.info.direction == direction]
        if not found:
            raise ModelError(f"{path}: no facecomp model file for direction {direction} in this "
                             "folder")
        return max(found, key=lambda e: e.path.stat().st_mtime).path
    if path.suffix or os.sep in str(spec):
        raise ModelError(f"{spec}: no such model file or folder")
    entries = list_models()
    for entry in entries:
        if entry.info.name == str(spec) and entry.info.direction == direction:
            return entry.path
    names = sorted({f"{e.info.name} ({e.info.direction})" for e in entries}) or ["none"]
    raise ModelError(f"no model named {str(spec)!r} for direction {direction}; available: "
                     f"{', '.join(names)} (see `facecomp models`)")


def _refuse_pickle(path: Path) -> None:
    if path.suffix.lower() in _PICKLE_SUFFIXES:
        raise ModelError(f"{path}: {path.suffix} checkpoints are pickles, which can run code when "
                         "loaded; facecomp only loads .safetensors model files")


def _short(e: Exception) -> str:
    text = str(e).strip().splitlines()
    return (text[0] if text else type(e).__name__)[:160]


def _args(d: dict) -> str:
    return ", ".join(f"{k}={v}" for k, v in sorted(d.items()))
