"""Training options: `TrainConfig` (every hyper-parameter of a run, with the reference
implementation's names), the progressive-size schedule and the merge of a ``--config`` file.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from pathlib import Path

from ..errors import ConfigError
from ..geometry import TEMPLATES
from ..networks import UPSAMPLE_MODES
from ..options import PRECISIONS, TRAIN


# ---------------------------------------------------------------------------------------------
# Configuration


def parse_schedule(text: str) -> tuple[tuple[int, int], ...]:
    """``"64:10,96:10,128:20"`` -> ((64, 10), (96, 10), (128, 20)): crop size : epochs."""
    out = []
    for part in (p.strip() for p in text.split(",") if p.strip()):
        try:
            size, epochs = (int(v) for v in part.split(":"))
        except ValueError:
            raise ConfigError(f"`schedule` takes SIZE:EPOCHS pairs like 64:10,128:20, got "
                              f"{part!r}") from None
        out.append((size, epochs))
    return tuple(out)


@dataclass(frozen=True)
class TrainConfig:
    """Every hyper-parameter of a run, with the reference implementation's names; each one's
    default and meaning are declared once, in :data:`facecomp.options.TRAIN`."""

    a: str
    b: str
    out: str
    name: str = TRAIN["name"].default
    domain_a: str = TRAIN["domain_a"].default
    domain_b: str = TRAIN["domain_b"].default
    size: int = TRAIN["size"].default
    template: str = TRAIN["template"].default
    schedule: tuple[tuple[int, int], ...] = ()  # progressive: (size, epochs), ...
    n_epochs: int = TRAIN["n_epochs"].default
    n_epochs_decay: int = TRAIN["n_epochs_decay"].default
    epoch_size: int = TRAIN["epoch_size"].default
    batch_size: int = TRAIN["batch_size"].default
    lr: float = TRAIN["lr"].default
    beta1: float = TRAIN["beta1"].default
    lambda_cycle: float = TRAIN["lambda_cycle"].default
    lambda_identity: float = TRAIN["lambda_identity"].default
    pool_size: int = TRAIN["pool_size"].default
    ngf: int = TRAIN["ngf"].default
    n_blocks: int = TRAIN["n_blocks"].default
    upsample: str = TRAIN["upsample"].default
    ndf: int = TRAIN["ndf"].default
    n_layers_d: int = TRAIN["n_layers_d"].default
    flip: bool = TRAIN["flip"].default
    scale_jitter: float = TRAIN["scale_jitter"].default
    seed: int = TRAIN["seed"].default
    precision: str = TRAIN["precision"].default
    channels_last: bool = TRAIN["channels_last"].default
    compile: bool = TRAIN["compile"].default
    device: str = TRAIN["device"].default
    workers: int = TRAIN["workers"].default
    log_every: int = TRAIN["log_every"].default
    sample_every: int = TRAIN["sample_every"].default
    save_every: int = TRAIN["save_every"].default
    max_steps: int = TRAIN["max_steps"].default

    def __post_init__(self) -> None:
        if isinstance(self.schedule, str):
            object.__setattr__(self, "schedule", parse_schedule(self.schedule))
        object.__setattr__(self, "schedule",
                           tuple(tuple(int(v) for v in p) for p in self.schedule))
        for size in [self.size] + [s for s, _ in self.schedule]:
            if size < 32 or size % 4:
                raise ConfigError(f"crop sizes must be multiples of 4 and at least 32, got {size}")
        if any(e < 1 for _, e in self.schedule):
            raise ConfigError("every `schedule` stage needs at least 1 epoch")
        if self.schedule and sum(e for _, e in self.schedule) != self.total_epochs:
            raise ConfigError(
                f"`schedule` covers {sum(e for _, e in self.schedule)} epochs but `n_epochs` + "
                f"`n_epochs_decay` is {self.total_epochs}; make them equal")
        checks = [(self.n_epochs >= 0 and self.n_epochs_decay >= 0 and self.total_epochs > 0,
                   "`n_epochs` and `n_epochs_decay` must be >= 0 with a positive sum"),
                  (self.batch_size >= 1, "`batch_size` must be at least 1"),
                  (self.lr > 0 and 0 <= self.beta1 < 1, "`lr` must be > 0 and `beta1` in [0, 1)"),
                  (self.lambda_cycle >= 0 and self.lambda_identity >= 0, "lambdas must be >= 0"),
                  (self.pool_size >= 0, "`pool_size` must be >= 0"),
                  (self.ngf >= 1 and self.ndf >= 1 and self.n_blocks >= 0 and
                   self.n_layers_d >= 1, "`ngf`, `ndf`, `n_layers_d` >= 1 and `n_blocks` >= 0"),
                  (0 <= self.scale_jitter <= 1, "`scale_jitter` must be within 0..1"),
                  (self.upsample in UPSAMPLE_MODES,
                   f"`upsample` must be one of {', '.join(UPSAMPLE_MODES)}"),
                  (self.precision in PRECISIONS, f"`precision` must be one of {PRECISIONS}"),
                  (self.template == "auto" or self.template in TEMPLATES,
                   f"`template` must be auto or one of {', '.join(TEMPLATES)}"),
                  (self.workers >= 0 and self.epoch_size >= 0 and self.max_steps >= 0,
                   "`workers`, `epoch_size` and `max_steps` must be >= 0"),
                  (min(self.log_every, self.sample_every, self.save_every) >= 1,
                   "`log_every`, `sample_every` and `save_every` must be >= 1")]
        for ok, message in checks:
            if not ok:
                raise ConfigError(message)

    @property
    def total_epochs(self) -> int:
        return self.n_epochs + self.n_epochs_decay

    def size_at(self, epoch: int) -> int:
        left = epoch
        for size, epochs in self.schedule:
            if left < epochs:
                return size
            left -= epochs
        return self.schedule[-1][0] if self.schedule else self.size

    @property
    def final_size(self) -> int:
        return self.size_at(self.total_epochs - 1)

    def to_json(self) -> dict:
        d = dataclasses.asdict(self)
        d["schedule"] = [list(p) for p in self.schedule]
        return d

    @classmethod
    def from_json(cls, d: dict) -> "TrainConfig":
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ConfigError(f"unknown training options in config: {', '.join(unknown)}")
        # Runs saved before `upsample` existed used the reference's transposed convolutions.
        d = {"upsample": "transpose", **d}
        return cls(**{**d, "schedule": tuple(tuple(p) for p in d.get("schedule", ()))})


def merge_config_file(values: dict, path: str | Path | None, given: set[str]) -> dict:
    """``values`` (every option, at its default unless given) with the options of the JSON
    file ``path`` (the field names, ``-`` or ``_``) laid over them, except those in ``given``:
    options the caller set explicitly win over the file, the file over the defaults."""
    if path is None:
        return dict(values)
    try:
        from_file = json.loads(Path(path).read_text())
    except (OSError, ValueError) as e:
        raise ConfigError(f"`config` {path}: cannot read it as JSON ({e})") from None
    if not isinstance(from_file, dict):
        raise ConfigError(f"`config` {path}: expected a JSON object of options, got "
                          f"{type(from_file).__name__}")
    merged = dict(values)
    for k, v in from_file.items():
        key = k.replace("-", "_")
        if key not in values:
            raise ConfigError(f"`config` {path}: unknown option {k!r}")
        if key not in given:
            merged[key] = v
    return merged
