"""Target age: how much of a model's change each face gets so that it lands near an age.

A two-domain model (young <-> old) changes a face by a fixed amount; ``strength`` scales that
change when it is pasted (0 none, 1 the model's, up to 2). A :class:`Calibration` is the measured
curve strength -> mean estimated age shift of one generator on held-out crops of its source domain
(see :func:`calibrate`); it is stored in the model file's metadata by ``facecomp calibrate`` and
inverted per face: a face estimated at 28 with the target 60 gets the strength whose mean shift is
+32, clamped to the calibrated range. Faces older than an absolute target get the other
direction's generator, if the model has its calibration.

Convention: ages and shifts in years; strengths in 0..2 as in :class:`~facecomp.stages.blend.BlendConfig`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np

from ..errors import ConfigError

#: Strengths measured by :func:`calibrate` (the paste-back accepts 0..2).
CALIBRATION_STRENGTHS = (0.0, 0.25, 0.5, 0.75, 1.0, 1.25, 1.5, 1.75, 2.0)
#: Faces whose target is this close to their estimated age are left alone.
AGE_TOLERANCE = 1.0
_TARGET = re.compile(r"([+-]?)(\d{1,3}(?:\.\d+)?)", re.ASCII)


@dataclass(frozen=True)
class AgeTarget:
    """An absolute age (``70``) or a change relative to each face's estimated age (``+25``)."""

    value: float
    relative: bool = False

    def __post_init__(self) -> None:
        if self.relative and not -90 <= self.value <= 90:
            raise ConfigError(f"`age`: a relative target must be within -90..+90 years, got "
                              f"{self.value:+g}")
        if not self.relative and not 1 <= self.value <= 110:
            raise ConfigError(f"`age`: an absolute target must be within 1..110 years, got "
                              f"{self.value:g}")

    @classmethod
    def parse(cls, text: str | float | int) -> "AgeTarget":
        """``70`` (absolute), ``+25`` or ``-15`` (years relative to each face's age)."""
        if isinstance(text, (int, float)):
            return cls(float(text))
        m = _TARGET.fullmatch(str(text).strip())
        if m is None:
            raise ConfigError(f"`age` takes a target age like 70, or a change like +25 or -15, "
                              f"got {text!r}")
        value = float(m.group(2))
        if m.group(1):
            return cls(value if m.group(1) == "+" else -value, relative=True)
        return cls(value)

    def wanted_shift(self, age: float) -> float:
        """The change in years that brings a face estimated at ``age`` to the target."""
        return self.value if self.relative else self.value - age

    def __str__(self) -> str:
        return f"{self.value:+g}" if self.relative else f"{self.value:g}"


@dataclass(frozen=True)
class Calibration:
    """Mean estimated age shift (years) of one generator at each strength.

    ``shifts[i]`` is the mean over ``n`` held-out crops of ``age(paste(x, strength[i])) - age(x)``.
    """

    strengths: tuple[float, ...]
    shifts: tuple[float, ...]
    n: int
    source: str = ""  # what it was measured on
    estimator: str = ""  # which estimator measured it

    def __post_init__(self) -> None:
        s, d = np.asarray(self.strengths, float), np.asarray(self.shifts, float)
        if len(s) < 2 or s.shape != d.shape or not np.all(np.isfinite(d)) \
                or not np.all(np.diff(s) > 0) or s[0] < 0 or s[-1] > 2:
            raise ValueError("a calibration needs increasing strengths within 0..2 and one "
                             "finite shift per strength")

    @property
    def sign(self) -> float:
        """+1 if this generator makes faces older, -1 if younger, 0 if it does neither."""
        top = self.shifts[-1]
        return float(np.sign(top)) if abs(top) >= 1.0 else 0.0

    @property
    def max_shift(self) -> float:
        """The largest change (years, signed) this generator reaches in the calibrated range."""
        d = self._monotone()
        return float(d[-1])

    def _monotone(self) -> np.ndarray:
        # The running maximum of the shift in this generator's direction, so the curve can be
        # inverted even where noise makes the measurement dip.
        d = np.asarray(self.shifts, float) * (self.sign or 1.0)
        return np.maximum.accumulate(d) * (self.sign or 1.0)

    def shift_at(self, strength: float) -> float:
        return float(np.interp(strength, self.strengths, self._monotone()))

    def strength_for(self, shift: float) -> float:
        """The strength whose mean shift is ``shift`` (0 for a change in the other direction;
        the largest calibrated strength for a change beyond the curve's reach)."""
        if self.sign == 0 or shift * self.sign <= 0:
            return 0.0
        d = self._monotone() * self.sign
        s = np.asarray(self.strengths, float)
        want = shift * self.sign
        if want >= d[-1]:
            return float(s[-1])
        # the first segment that reaches ``want`` (d is non-decreasing)
        i = int(np.searchsorted(d, want, side="left"))
        if i == 0:
            return float(s[0])
        lo, hi = d[i - 1], d[i]
        t = 0.0 if hi <= lo else (want - lo) / (hi - lo)
        return float(s[i - 1] + t * (s[i] - s[i - 1]))

    def to_json(self) -> dict:
        return {"strengths": list(self.strengths), "shifts": [round(v, 3) for v in self.shifts],
                "n": self.n, "source": self.source, "estimator": self.estimator}

    @classmethod
    def from_json(cls, d: dict) -> "Calibration":
        return cls(tuple(float(v) for v in d["strengths"]), tuple(float(v) for v in d["shifts"]),
                   int(d["n"]), str(d.get("source", "")), str(d.get("estimator", "")))


@dataclass(frozen=True)
class FacePlan:
    """What one face gets: which generator (direction) and how much of its change."""

    direction: str | None  # None: left alone
    strength: float
    age: float  # the estimate it was planned from
    target: float  # where it should land
    note: str = ""
    expected: float | None = None  # the estimate of the result, when fitted per face


#: The largest strength a target age uses by default: beyond it the shipped model's change turns
#: into blotches and dark eyes more than into age (seen on the sample photo at 2).
MAX_AGE_STRENGTH = 1.5


def plan_face(age: float, target: AgeTarget, calibrations: dict[str, Calibration],
              max_strength: float = MAX_AGE_STRENGTH) -> FacePlan:
    """The direction and strength (at most ``max_strength``) that bring a face estimated at
    ``age`` nearest ``target``."""
    want = target.wanted_shift(age)
    goal = age + want
    if abs(want) < AGE_TOLERANCE:
        return FacePlan(None, 0.0, age, goal, "already at the target age")
    for direction, cal in sorted(calibrations.items()):
        if cal.sign != 0 and cal.sign * want > 0:
            return FacePlan(direction, min(cal.strength_for(want), max_strength), age, goal)
    way = "older" if want > 0 else "younger"
    return FacePlan(None, 0.0, age, goal, f"the model has no calibrated direction that makes "
                                          f"faces {way}")


def choose_strengths(crops: np.ndarray, translated: np.ndarray, goals: list[float],
                     predict, mask: np.ndarray, max_strength: float = MAX_AGE_STRENGTH,
                     steps: int = 7) -> tuple[list[float], list[float]]:
    """Per face, the strength whose result the estimator reads nearest its goal age.

    The calibration curve is a mean over many faces; a face can answer more or less (a very
    old face may not read younger at all). So each face's change is pasted in the crop at
    ``steps`` strengths from 0 to ``max_strength`` (through ``mask``, as the paste-back does),
    every candidate is estimated, and the one nearest the goal wins (the weaker one on a tie).
    Nearest-in-a-fixed-set is monotone: a higher goal never picks a younger-reading result.
    crops, translated: (N, S, S, 3) uint8, the translation colour-matched as it will be pasted;
    mask: (S, S) float weights, or (N, S, S) with one per face. Returns the strengths and the
    ages the estimator expects.
    """
    n = len(crops)
    if n == 0:
        return [], []
    grid = np.linspace(0.0, max_strength, steps)
    cands = np.stack([paste_strength(crops, translated, g, mask) for g in grid], axis=1)
    ages = np.asarray(predict(cands.reshape((-1,) + crops.shape[1:]))).reshape(n, steps)
    out_s, out_a = [], []
    for i in range(n):
        j = int(np.argmin(np.abs(ages[i] - goals[i]) + 1e-6 * np.arange(steps)))
        out_s.append(float(grid[j]))
        out_a.append(float(ages[i, j]))
    return out_s, out_a


def paste_strength(crops: np.ndarray, translated: np.ndarray, strength: float,
                   mask: np.ndarray | None = None) -> np.ndarray:
    """Crops with ``strength`` of the generator's change, as the paste-back applies it; with
    ``mask`` ((S, S) weights, or (N, S, S) per crop) only where the face mask puts it."""
    delta = translated.astype(np.float32) - crops.astype(np.float32)
    if mask is not None:
        delta *= mask.astype(np.float32)[..., None]
    return np.clip(crops.astype(np.float32) + strength * delta + 0.5, 0, 255).astype(np.uint8)


def calibrate(crops: np.ndarray, translated: np.ndarray, ages_before: np.ndarray,
              predict, strengths: tuple[float, ...] = CALIBRATION_STRENGTHS, *,
              source: str = "", estimator: str = "") -> Calibration:
    """The curve strength -> mean age shift for one generator.

    crops: held-out crops of the generator's source domain; translated: the generator's output
    for them, colour-matched as the photo path pastes it; predict: crops -> ages.
    """
    shifts = []
    for s in strengths:
        after = ages_before if s == 0 else predict(paste_strength(crops, translated, s))
        shifts.append(round(float(np.mean(after - ages_before)), 3))
    return Calibration(tuple(float(s) for s in strengths), tuple(shifts), len(crops), source,
                       estimator)
