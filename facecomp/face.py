"""The one record that flows through the stages, a detected face, and the choice of which faces
to change (:class:`FaceSelection`).

Convention: points are (x, y) in image pixels with pixel centres at integer coordinates (the
OpenCV convention); the box is (x1, y1, x2, y2) in the same frame. ``crop_from_image`` is the 2x3
similarity that maps image points to crop points; it is filled in by the aligner.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass, replace

import numpy as np

from .errors import ConfigError

log = logging.getLogger(__name__)


@dataclass(frozen=True, eq=False)
class Face:
    """A detected face: box, detector score, 5 landmarks and, once aligned, its crop affine.

    landmarks: (5, 2) float64 -- left eye, right eye, nose tip, left and right mouth corner
    (left/right as seen in the image).
    """

    box: tuple[float, float, float, float]
    score: float
    landmarks: np.ndarray
    crop_from_image: np.ndarray | None = None

    def __post_init__(self) -> None:
        pts = np.asarray(self.landmarks, dtype=np.float64).reshape(5, 2)
        pts.setflags(write=False)
        object.__setattr__(self, "landmarks", pts)
        if self.crop_from_image is not None:
            m = np.asarray(self.crop_from_image, dtype=np.float64).reshape(2, 3)
            m.setflags(write=False)
            object.__setattr__(self, "crop_from_image", m)

    @property
    def size(self) -> float:
        """Face size in pixels: the longer side of the box."""
        x1, y1, x2, y2 = self.box
        return float(max(x2 - x1, y2 - y1))

    @property
    def centre(self) -> tuple[float, float]:
        x1, y1, x2, y2 = self.box
        return ((x1 + x2) / 2.0, (y1 + y2) / 2.0)

    def with_affine(self, crop_from_image: np.ndarray) -> "Face":
        return replace(self, crop_from_image=crop_from_image)

    def from_resized(self, scale: float) -> "Face":
        """This face, found in a copy of the image resized by ``scale``, in the original's frame."""

        def f(v: np.ndarray) -> np.ndarray:
            return (v + 0.5) / scale - 0.5

        b = f(np.asarray(self.box, dtype=np.float64))
        return Face(box=tuple(float(v) for v in b), score=self.score,
                    landmarks=f(self.landmarks))


_AGE_CONDITION = re.compile(r"age\s*(<=|>=|<|>)\s*(\d{1,3}(?:\.\d+)?)", re.ASCII)
_COMPARE = {"<": lambda a, b: a < b, "<=": lambda a, b: a <= b, ">": lambda a, b: a > b,
            ">=": lambda a, b: a >= b}


@dataclass(frozen=True)
class FaceSelection:
    """Which detected faces to translate: ``all``, ``largest``, 1-based indices (left to
    right, as numbered in the --debug image), or faces whose estimated age meets every condition
    (``age<40``, ``age>=20,age<40``)."""

    mode: str = "all"
    indices: tuple[int, ...] = ()
    ages: tuple[tuple[str, float], ...] = ()  # (operator, years), all must hold

    @property
    def needs_ages(self) -> bool:
        return self.mode == "age"

    @classmethod
    def parse(cls, text: str) -> "FaceSelection":
        t = text.strip().lower()
        if t in ("all", "largest"):
            return cls(t)
        if t.startswith("age"):
            conds = []
            for part in t.split(","):
                m = _AGE_CONDITION.fullmatch(part.strip())
                if m is None:
                    raise ConfigError(f"`faces`: an age condition looks like age<40, age>=60 "
                                      f"or age>=20,age<40, got {text!r}")
                conds.append((m.group(1), float(m.group(2))))
            return cls("age", ages=tuple(conds))
        try:
            idx = tuple(sorted({int(v) for v in t.split(",") if v.strip()}))
        except ValueError:
            idx = ()
        if not idx or min(idx) < 1:
            raise ConfigError(f"`faces` takes all, largest or face numbers like 1,3 (from 1), "
                              f"got {text!r}")
        return cls("indices", idx)

    def select(self, faces: list[Face], ages: list[float] | None = None) -> list[int]:
        """Indices of the chosen faces; an age selection needs each face's estimated age."""
        if not faces:
            return []
        if self.mode == "all":
            return list(range(len(faces)))
        if self.mode == "largest":
            return [int(np.argmax([f.size for f in faces]))]
        if self.mode == "age":
            if ages is None or len(ages) != len(faces):
                raise ValueError("an age selection needs one estimated age per face")
            return [i for i, a in enumerate(ages)
                    if all(_COMPARE[op](a, v) for op, v in self.ages)]
        missing = [i for i in self.indices if i > len(faces)]
        if missing:
            log.warning("face number%s %s not found: the image has %d face%s",
                        "s" if len(missing) > 1 else "", ",".join(map(str, missing)), len(faces),
                        "" if len(faces) == 1 else "s")
        return [i - 1 for i in self.indices if i <= len(faces)]
