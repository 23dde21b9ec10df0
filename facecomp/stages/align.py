"""Align: faces -> square crops in the canonical template frame, plus the affine that made them.

Each face's 5 landmarks are mapped onto the template with a least-squares similarity
(``crop_from_image``); the crop is that warp of the image. Where the crop reaches past the image
border the image is mirrored (so the network sees plausible context, never a crash). Faces much
larger than the crop are first shrunk with area averaging so the crop is not aliased.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from ..errors import ConfigError
from ..face import Face
from ..geometry import (FACECOMP_V1, Template, affine_scale, compose, crop_corners,
                        crop_from_landmarks, invert_affine, translation)


@dataclass(frozen=True)
class AlignConfig:
    """Crop size and template; both come from the model's metadata at inference."""

    crop_size: int = 128
    template: Template = FACECOMP_V1

    def __post_init__(self) -> None:
        if not 16 <= self.crop_size <= 2048:
            raise ConfigError(f"crop size must be within 16..2048 px, got {self.crop_size}")


def align_face(image: np.ndarray, face: Face, config: AlignConfig) -> tuple[np.ndarray, Face]:
    """One aligned crop (SxSx3 uint8) and the face with its ``crop_from_image`` filled in."""
    size = config.crop_size
    crop_from_image = crop_from_landmarks(face.landmarks, config.template, size)
    return warp_to_crop(image, crop_from_image, size), face.with_affine(crop_from_image)


def align_faces(image: np.ndarray, faces: list[Face],
                config: AlignConfig) -> tuple[np.ndarray, list[Face]]:
    """All crops of one image as an (N, S, S, 3) uint8 array, and the faces with affines."""
    s = config.crop_size
    crops = np.empty((len(faces), s, s, 3), dtype=np.uint8)
    out = []
    for i, face in enumerate(faces):
        crops[i], f = align_face(image, face, config)
        out.append(f)
    return crops, out


def warp_to_crop(image: np.ndarray, crop_from_image: np.ndarray, size: int) -> np.ndarray:
    """Warp ``image`` into a ``size`` square crop; area-averages first when shrinking > 2x."""
    scale = affine_scale(crop_from_image)
    if scale >= 0.5:
        return cv2.warpAffine(image, crop_from_image, (size, size), flags=cv2.INTER_LINEAR,
                              borderMode=cv2.BORDER_REFLECT_101)
    # Shrink only the region the crop covers, by area averaging, to about 2x the crop scale.
    h, w = image.shape[:2]
    corners = crop_corners(invert_affine(crop_from_image), size)
    pad = 2.0 / scale
    x0 = int(max(0, np.floor(corners[:, 0].min() - pad)))
    y0 = int(max(0, np.floor(corners[:, 1].min() - pad)))
    x1 = int(min(w, np.ceil(corners[:, 0].max() + pad)))
    y1 = int(min(h, np.ceil(corners[:, 1].max() + pad)))
    if x1 - x0 < 2 or y1 - y0 < 2:  # the crop lies (almost) wholly outside the image
        return cv2.warpAffine(image, crop_from_image, (size, size), flags=cv2.INTER_LINEAR,
                              borderMode=cv2.BORDER_REFLECT_101)
    roi = image[y0:y1, x0:x1]
    k = 2.0 * scale
    rw, rh = max(2, round((x1 - x0) * k)), max(2, round((y1 - y0) * k))
    small = cv2.resize(roi, (rw, rh), interpolation=cv2.INTER_AREA)
    # small-pixel -> roi-pixel -> image-pixel -> crop-pixel
    roi_from_small = np.array([[(x1 - x0) / rw, 0.0, 0.5 * (x1 - x0) / rw - 0.5],
                               [0.0, (y1 - y0) / rh, 0.5 * (y1 - y0) / rh - 0.5]])
    crop_from_small = compose(crop_from_image, compose(translation(x0, y0), roi_from_small))
    return cv2.warpAffine(small, crop_from_small, (size, size), flags=cv2.INTER_LINEAR,
                          borderMode=cv2.BORDER_REFLECT_101)
