"""Pure geometry: the canonical face template and 2x3 affine helpers.

Convention: points are (x, y) with pixel centres at integer coordinates, as in OpenCV's
``warpAffine``. A matrix named ``b_from_a`` maps points of frame ``a`` into frame ``b``; matrices are
never edited in place. Template points are stored normalised to the crop side, in [0, 1], with
0 and 1 at the outer edges of the crop, so one template serves every crop size.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

# The widely used 5-point template of 112x112 face recognition crops (ArcFace), normalised.
_ARCFACE_112 = np.array(
    [[38.2946, 51.6963], [73.5318, 51.5014], [56.0252, 71.7366],
     [41.5493, 92.3655], [70.7299, 92.2041]], dtype=np.float64) / 112.0


@dataclass(frozen=True)
class Template:
    """A canonical 5-point face layout, normalised to the crop side (see module docstring)."""

    name: str
    points: tuple[tuple[float, float], ...]

    def __post_init__(self) -> None:
        pts = np.asarray(self.points, dtype=np.float64)
        if pts.shape != (5, 2) or not np.all(np.isfinite(pts)):
            raise ValueError(f"a template needs 5 finite (x, y) points, got shape {pts.shape}")
        eyes = float(np.hypot(*(pts[1] - pts[0])))
        if not 0.02 <= eyes <= 2.0 or np.abs(pts).max() > 10:
            raise ValueError("a template's eyes must be apart, by 0.02 to 2 crop sides, and its "
                             "points within 10 crop sides")

    def pixels(self, crop_size: int) -> np.ndarray:
        """Template points in pixel coordinates of a ``crop_size`` square crop, shape (5, 2)."""
        return np.asarray(self.points, dtype=np.float64) * crop_size - 0.5

    def to_json(self) -> dict:
        return {"name": self.name, "points": [list(p) for p in self.points]}

    @classmethod
    def from_json(cls, data: dict) -> "Template":
        return cls(name=str(data["name"]), points=tuple(tuple(float(v) for v in p)
                                                        for p in data["points"]))


def _with_margin(points: np.ndarray, zoom: float, eye_y: float) -> tuple[tuple[float, float], ...]:
    """Shrink a tight template by ``zoom`` about its eye centre and put the eyes at ``eye_y``."""
    eye_centre = points[:2].mean(axis=0)
    out = (points - eye_centre) * zoom + np.array([0.5, eye_y])
    return tuple((float(x), float(y)) for x, y in out)


#: The default template: the ArcFace layout shrunk to 72 % with the eyes at 40 % of the height,
#: so the crop keeps the hair above the forehead and the chin (eye distance is 23 % of the side).
FACECOMP_V1 = Template("facecomp-v1", _with_margin(_ARCFACE_112, zoom=0.72, eye_y=0.40))

#: A face-only layout for data sets cropped tightly around the face (e.g. UTKFace's 200 px
#: crops): the ArcFace layout enlarged 1.3x with the eyes at 36 % (eye distance 41 % of the side).
FACECOMP_TIGHT = Template("facecomp-tight", _with_margin(_ARCFACE_112, zoom=1.3, eye_y=0.36))

TEMPLATES: dict[str, Template] = {t.name: t for t in (FACECOMP_V1, FACECOMP_TIGHT)}


def template_by_name(name: str) -> Template:
    """A built-in template by name; raises ValueError naming the known ones."""
    try:
        return TEMPLATES[name]
    except KeyError:
        raise ValueError(f"unknown template {name!r}; known: {', '.join(TEMPLATES)}") from None


def transform_points(b_from_a: np.ndarray, points: np.ndarray) -> np.ndarray:
    """Apply a 2x3 affine to (N, 2) points."""
    pts = np.asarray(points, dtype=np.float64).reshape(-1, 2)
    m = np.asarray(b_from_a, dtype=np.float64)
    return pts @ m[:, :2].T + m[:, 2]


def invert_affine(b_from_a: np.ndarray) -> np.ndarray:
    """The inverse of a 2x3 affine (``a_from_b``)."""
    m = np.asarray(b_from_a, dtype=np.float64)
    lin_inv = np.linalg.inv(m[:, :2])
    return np.hstack([lin_inv, -lin_inv @ m[:, 2:3]])


def compose(c_from_b: np.ndarray, b_from_a: np.ndarray) -> np.ndarray:
    """``c_from_a``: first ``b_from_a``, then ``c_from_b``."""
    m1 = np.vstack([np.asarray(b_from_a, dtype=np.float64), [0.0, 0.0, 1.0]])
    m2 = np.vstack([np.asarray(c_from_b, dtype=np.float64), [0.0, 0.0, 1.0]])
    return (m2 @ m1)[:2]


def translation(dx: float, dy: float) -> np.ndarray:
    return np.array([[1.0, 0.0, dx], [0.0, 1.0, dy]])


def scaling(s: float) -> np.ndarray:
    """Resize by ``s`` in the pixel-centre convention: x' = (x + 0.5) * s - 0.5."""
    return np.array([[s, 0.0, 0.5 * s - 0.5], [0.0, s, 0.5 * s - 0.5]])


def affine_scale(b_from_a: np.ndarray) -> float:
    """The mean linear scale of an affine (sqrt of |det|): frame b pixels per frame a pixel."""
    m = np.asarray(b_from_a, dtype=np.float64)
    return float(np.sqrt(abs(np.linalg.det(m[:, :2]))))


def estimate_similarity(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """Least-squares similarity (rotation, uniform scale, translation) mapping src onto dst.

    Umeyama's closed form, without reflection. Returns ``dst_from_src`` (2x3).
    """
    src = np.asarray(src, dtype=np.float64).reshape(-1, 2)
    dst = np.asarray(dst, dtype=np.float64).reshape(-1, 2)
    if src.shape != dst.shape or len(src) < 2:
        raise ValueError("estimate_similarity needs two equal sets of at least 2 points")
    mu_s, mu_d = src.mean(axis=0), dst.mean(axis=0)
    s0, d0 = src - mu_s, dst - mu_d
    var_s = (s0 ** 2).sum() / len(src)
    if var_s <= 1e-12:
        raise ValueError("the source points coincide; no similarity is defined")
    cov = d0.T @ s0 / len(src)
    u, sig, vt = np.linalg.svd(cov)
    d = np.ones(2)
    if np.linalg.det(u) * np.linalg.det(vt) < 0:
        d[1] = -1.0
    rot = u @ np.diag(d) @ vt
    scale = (sig * d).sum() / var_s
    lin = scale * rot
    return np.hstack([lin, (mu_d - lin @ mu_s)[:, None]])


def crop_from_landmarks(landmarks: np.ndarray, template: Template, crop_size: int) -> np.ndarray:
    """The similarity that maps a face's 5 image landmarks onto the template in a crop."""
    return estimate_similarity(landmarks, template.pixels(crop_size))


def crop_corners(image_from_crop: np.ndarray, crop_size: int) -> np.ndarray:
    """The crop's four outer corners (pixel edges, not centres) in image coordinates, (4, 2)."""
    lo, hi = -0.5, crop_size - 0.5
    corners = np.array([[lo, lo], [hi, lo], [hi, hi], [lo, hi]])
    return transform_points(image_from_crop, corners)


def box_iou(a: tuple[float, ...], b: tuple[float, ...]) -> float:
    """Intersection over union of two (x1, y1, x2, y2) boxes; 0 when both are empty."""
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0
