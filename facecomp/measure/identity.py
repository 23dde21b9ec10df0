"""Identity: is a translated face still the same person? dlib's face-recognition descriptor.

The descriptor is dlib's ResNet model (``dlib_face_recognition_resnet_model_v1``, 99.38 % on
LFW), whose weights ship inside the PyPI package ``face_recognition_models``; ``dlib-bin``
runs it. Both are the optional extra ``facecomp[eval]``; nothing is downloaded at run time.
Two faces are the same person when the Euclidean distance of their 128-d descriptors is below
dlib's documented threshold, 0.6.

dlib aligns faces its own way (its 5-point shape predictor, then ``get_face_chip``), so each
aligned crop is upscaled 2x and given mirrored margins, the shape predictor runs in a box placed
from the crop's template landmarks where dlib's frontal detector would put it (measured on UTKFace:
centred 0.08 eye-to-mouth distances above the eyes-mouth midpoint, 2.03 of them wide), and the
descriptor is computed on dlib's own chip. Input and translated crop go through the same steps.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import cv2
import numpy as np

from ..errors import ConfigError
from ..geometry import Template

#: dlib's documented same-person threshold on the descriptor distance.
SAME_PERSON_THRESHOLD = 0.6
EXTRA_HINT = "install the evaluation extra: pip install 'facecomp[eval]'"


def _models_dir() -> Path:
    # face_recognition_models' __init__ imports pkg_resources, which new setuptools lack:
    # find its folder without importing it.
    spec = importlib.util.find_spec("face_recognition_models")
    if spec is None or not spec.submodule_search_locations:
        raise ConfigError(f"the identity measure needs face_recognition_models; {EXTRA_HINT}")
    return Path(list(spec.submodule_search_locations)[0]) / "models"


class IdentityModel:
    """128-d face descriptors of aligned crops and the distances between them."""

    def __init__(self) -> None:
        try:
            import dlib
        except ImportError:
            raise ConfigError(f"the identity measure needs dlib; {EXTRA_HINT}") from None
        d = _models_dir()
        self._dlib = dlib
        self._shape = dlib.shape_predictor(str(d / "shape_predictor_5_face_landmarks.dat"))
        self._rec = dlib.face_recognition_model_v1(
            str(d / "dlib_face_recognition_resnet_model_v1.dat"))

    def descriptors(self, crops: np.ndarray, template: Template) -> np.ndarray:
        """(N, 128) float64 descriptors of (N, S, S, 3) uint8 crops aligned with ``template``."""
        crops = np.asarray(crops)
        n, s = crops.shape[0], crops.shape[1]
        scale = 256.0 / s
        pad = 64
        pts = (template.pixels(s) + 0.5) * scale - 0.5 + pad
        eyes, mouth = pts[:2].mean(axis=0), pts[3:].mean(axis=0)
        em = float(np.linalg.norm(mouth - eyes))
        cx, cy = (eyes + mouth) / 2 + np.array([0.0, -0.08 * em])
        half = 1.015 * em
        rect = self._dlib.rectangle(int(round(cx - half)), int(round(cy - half)),
                                    int(round(cx + half)), int(round(cy + half)))
        out = np.empty((n, 128))
        for i in range(n):
            big = cv2.resize(crops[i], (256, 256), interpolation=cv2.INTER_CUBIC)
            img = np.ascontiguousarray(cv2.copyMakeBorder(big, pad, pad, pad, pad,
                                                          cv2.BORDER_REFLECT_101))
            shape = self._shape(img, rect)
            out[i] = np.asarray(self._rec.compute_face_descriptor(img, shape))
        return out

    def distances(self, a: np.ndarray, b: np.ndarray, template: Template) -> np.ndarray:
        """(N,) descriptor distances between crops ``a[i]`` and ``b[i]``."""
        return np.linalg.norm(self.descriptors(a, template) - self.descriptors(b, template),
                              axis=1)
