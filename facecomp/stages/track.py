"""Track: faces across video frames with stable ids and temporally smoothed landmarks.

Detections of a new frame are matched to the existing tracks greedily by box IoU (best pairs
first). Each track smooths its 5 landmarks with a One-Euro filter (Casiez et al., CHI 2012):
a low-pass filter whose cut-off rises with speed, so a still face is steady and a moving face
is followed without lag. Speeds are measured in face sizes per second, so the same settings
suit small and large faces. A track that misses a detection keeps its last landmarks for up to
``max_missed`` frames (the face stays translated through a detector blink); after that it ends.

Convention: times in seconds; points as in :mod:`facecomp.face`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from ..errors import ConfigError
from ..face import Face
from ..geometry import box_iou


@dataclass(frozen=True)
class TrackConfig:
    """min_cutoff (Hz): smoothing of a still face (lower: steadier); beta: how fast the cut-off
    rises with speed (higher: less lag); iou: the least box overlap that continues a track;
    max_missed: frames a track survives without a detection."""

    min_cutoff: float = 1.0
    beta: float = 2.0
    d_cutoff: float = 1.0
    iou: float = 0.3
    max_missed: int = 2

    def __post_init__(self) -> None:
        if self.min_cutoff <= 0 or self.beta < 0 or self.d_cutoff <= 0:
            raise ConfigError("smoothing needs min_cutoff > 0, beta >= 0 and d_cutoff > 0")
        if not 0.0 < self.iou <= 1.0:
            raise ConfigError(f"track IoU threshold must be within (0, 1], got {self.iou}")
        if self.max_missed < 0:
            raise ConfigError(f"max_missed must be >= 0, got {self.max_missed}")


def _alpha(cutoff: float, dt: float) -> float:
    tau = 1.0 / (2.0 * math.pi * cutoff)
    return 1.0 / (1.0 + tau / dt)


@dataclass
class OneEuroFilter:
    """One-Euro filter over an array of values; ``scale`` converts values to speed units."""

    min_cutoff: float
    beta: float
    d_cutoff: float
    x: np.ndarray | None = None
    dx: np.ndarray | None = None
    t: float | None = None

    def __call__(self, value: np.ndarray, t: float, scale: float = 1.0) -> np.ndarray:
        value = np.asarray(value, dtype=np.float64)
        if self.x is None or self.t is None or t <= self.t:
            self.x, self.dx, self.t = value.copy(), np.zeros_like(value), t
            return value.copy()
        dt = t - self.t
        dx = (value - self.x) / dt
        a_d = _alpha(self.d_cutoff, dt)
        self.dx = a_d * dx + (1.0 - a_d) * self.dx
        speed = float(np.abs(self.dx).max()) / max(scale, 1e-6)
        a = _alpha(self.min_cutoff + self.beta * speed, dt)
        self.x = a * value + (1.0 - a) * self.x
        self.t = t
        return self.x.copy()


@dataclass
class Track:
    id: int
    face: Face  # the latest face, with smoothed landmarks
    missed: int = 0
    filter: OneEuroFilter | None = field(default=None, repr=False)


class Tracker:
    """Feed it each frame's detections with the frame time; get the faces to translate."""

    def __init__(self, config: TrackConfig | None = None) -> None:
        self.config = config or TrackConfig()
        self.tracks: list[Track] = []
        self._next_id = 1

    def update(self, faces: list[Face], t: float) -> list[Track]:
        """Match, smooth, age: returns the live tracks (new ones included), ordered by id."""
        c = self.config
        pairs = sorted(((box_iou(tr.face.box, f.box), i, j) for i, tr in enumerate(self.tracks)
                        for j, f in enumerate(faces)), reverse=True)
        used_t, used_f = set(), set()
        for iou, i, j in pairs:
            if iou < c.iou:
                break
            if i in used_t or j in used_f:
                continue
            used_t.add(i)
            used_f.add(j)
            self._observe(self.tracks[i], faces[j], t)
        for i, tr in enumerate(self.tracks):
            if i not in used_t:
                tr.missed += 1
        self.tracks = [tr for tr in self.tracks if tr.missed <= c.max_missed]
        for j, f in enumerate(faces):
            if j not in used_f:
                tr = Track(self._next_id, f, filter=OneEuroFilter(c.min_cutoff, c.beta,
                                                                  c.d_cutoff))
                self._next_id += 1
                self._observe(tr, f, t)
                self.tracks.append(tr)
        return sorted(self.tracks, key=lambda tr: tr.id)

    def _observe(self, track: Track, face: Face, t: float) -> None:
        assert track.filter is not None
        smoothed = track.filter(face.landmarks, t, scale=max(face.size, 1.0))
        shift = smoothed - face.landmarks
        x1, y1, x2, y2 = face.box
        dx, dy = shift.mean(axis=0)
        track.face = Face(box=(x1 + dx, y1 + dy, x2 + dx, y2 + dy), score=face.score,
                          landmarks=smoothed)
        track.missed = 0
