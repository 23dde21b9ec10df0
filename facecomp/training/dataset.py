"""The data-folder contract: what `facecomp prepare` writes and `train`, `train-age` and
`evaluate` read.

A data folder holds aligned crops, a ``holdout/`` subfolder with the crops held out of training
(chosen by a hash of each source file's name alone, :func:`is_holdout`, so the split does not
depend on order or on which other files exist) and a manifest, ``prepare.jsonl``: one JSON record
per source file (``name``, ``status`` in :data:`STATUSES`, ...), appended as prepare goes, the
last record of a name winning. UTKFace-style names (``AGE_GENDER_ID.jpg``) carry labels
(:func:`parse_label`).
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
import unicodedata
from dataclasses import dataclass
from pathlib import Path

from ..errors import ConfigError, InputError
from ..io import list_images

log = logging.getLogger(__name__)

MANIFEST_NAME = "prepare.jsonl"
HOLDOUT_DIR = "holdout"
#: Manifest statuses (see :meth:`facecomp.training.prepare.PrepareConfig.is_done` for which need no
#: further work).
STATUSES = ("written", "no_face", "too_small", "out_of_frame", "failed")
GENDERS = ("male", "female")  # UTKFace codes 0 and 1

_LABELLED_NAME = re.compile(r"(\d{1,3})_([01])_(\d+)", re.ASCII)
_AGE_RANGE = re.compile(r"(\d{1,3})(?:(-)(\d{1,3})?)?", re.ASCII)


# ---------------------------------------------------------------------------------------------
# Labels, filters and the holdout split


@dataclass(frozen=True)
class Label:
    """What a UTKFace-style file name says about the face: age in years and gender."""

    age: int
    gender: str  # "male" | "female"


def parse_label(name: str) -> Label | None:
    """The label of ``AGE_GENDER_ID.ext`` (e.g. ``23_1_20170116174525125.jpg``), else None."""
    m = _LABELLED_NAME.fullmatch(Path(name).stem)
    if m is None:
        return None
    return Label(age=int(m.group(1)), gender=GENDERS[int(m.group(2))])


@dataclass(frozen=True)
class AgeRange:
    """An inclusive age range in years; ``high`` None means open-ended (``60-``)."""

    low: int
    high: int | None = None

    def __post_init__(self) -> None:
        if self.low < 0:
            raise ConfigError(f"`age` {self}: ages cannot be negative")
        if self.high is not None and self.high < self.low:
            raise ConfigError(f"`age` {self}: the range is reversed; write it low to high, "
                              f"like {self.high}-{self.low}")

    @classmethod
    def parse(cls, text: str) -> "AgeRange":
        """``18-30`` (inclusive), ``60-`` (60 and over) or ``25`` (exactly 25)."""
        m = _AGE_RANGE.fullmatch(text.replace(" ", ""))
        if m is None:
            raise ConfigError(f"`age` takes a range like 18-30, 60- (60 and over) or 25, "
                              f"got {text!r}")
        low = int(m.group(1))
        high = None if m.group(2) and m.group(3) is None else int(m.group(3) or low)
        return cls(low, high)

    def __contains__(self, age: int) -> bool:
        return self.low <= age and (self.high is None or age <= self.high)

    def __str__(self) -> str:
        return f"{self.low}-{'' if self.high is None else self.high}"


def holdout_key(name: str) -> float:
    """A stable number in [0, 1) from a file name alone (NFC-normalised, UTF-8, SHA-256)."""
    data = unicodedata.normalize("NFC", Path(name).name).encode("utf-8")
    return int(hashlib.sha256(data).hexdigest()[:8], 16) / 2 ** 32


def is_holdout(name: str, fraction: float) -> bool:
    """Whether the source file ``name`` belongs to the holdout split of about ``fraction``.

    Depends on the name only: not on file order, folder or which other files exist.
    """
    return holdout_key(name) < fraction


# ---------------------------------------------------------------------------------------------
# The manifest


def holdout_images(folder: Path) -> list[Path]:
    """The held-out crops `prepare` wrote beside ``folder``'s training crops ([] if none)."""
    held = Path(folder) / HOLDOUT_DIR
    return list_images(held) if held.is_dir() else []


def read_manifest(out: Path) -> dict[str, dict]:
    """The last record of each source in ``out``'s manifest ({} if none); bad lines skipped."""
    path = Path(out) / MANIFEST_NAME
    try:
        with open(path, encoding="utf-8", errors="replace") as fp:
            return parse_manifest(fp.read(), path)
    except FileNotFoundError:
        return {}
    except OSError as e:
        raise InputError(f"{path}: cannot read ({e.strerror or e})") from e


def parse_manifest(text: str, path: Path) -> dict[str, dict]:
    records: dict[str, dict] = {}
    for n, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            rec = json.loads(line)
            if not (isinstance(rec, dict) and isinstance(rec.get("name"), str)
                    and rec.get("status") in STATUSES):
                raise ValueError("not a prepare record")
        except ValueError:
            # e.g. the last line of a run killed while writing it: that source is redone
            log.warning("%s: line %d is not a prepare record; ignored", path, n)
            continue
        records[rec["name"]] = rec
    return records
