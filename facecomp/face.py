"""The one record that flows through the stages: a detected face.

Convention: points are (x, y) in image pixels with pixel centres at integer coordinates (the
OpenCV convention); the box is (x1, y1, x2, y2) in the same frame. ``crop_from_image`` is the 2x3
similarity that maps image points to crop points; it is filled in by the aligner.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np


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
