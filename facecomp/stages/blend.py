"""Blend: translated crops -> pasted back into the image, seamlessly.

The face mask is built once in the crop frame from the template (an ellipse from forehead to chin
whose outer part fades out with a smoothstep) and warped into the image with the inverse of the
very affine that made the crop, so it follows the face and its feather scales with face size.
By default the *change* the generator made (translated - original crop) is warped back and added
to the full-resolution image, so a large face keeps its full-resolution detail wherever the
generator changed nothing.

``feather`` composites with the soft mask; ``poisson`` uses ``cv2.seamlessClone`` over the mask's
support, on a padded region so faces at the border never crash it (it falls back to feather with
a warning if OpenCV refuses). Either way every pixel where the mask is zero is left bit-identical.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from functools import lru_cache

import cv2
import numpy as np

from ..errors import ConfigError
from ..face import Face
from ..geometry import Template, compose, invert_affine, transform_points, translation
from ..options import PIPELINE, default

log = logging.getLogger(__name__)



@dataclass(frozen=True)
class BlendConfig:
    """method: feather|poisson. color_match: match the translated face's LAB mean/std to the
    original face's inside the mask. mask_scale: grows (>1) or erodes (<1) the face ellipse.
    feather: the fraction of the ellipse radius over which the mask fades to zero.
    keep_detail: add the generator's change to the full-resolution image (see module doc).
    strength: how much of the generator's change to apply: 0 none, 1 all (default), up to 2 to
    exaggerate it. chroma_limit: the most a pixel's colour may change (LAB a/b units; 0: no
    limit). keep_monochrome: greyscale faces stay grey and sepia/duotone ones keep their tone.
    match_degradation: low-pass the change so the face keeps its sharpness, blur, grain and noise
    (see :func:`finish_change`). keep_occluders: what lies over a face (hands, microphones,
    glasses frames, masks, hair strands) keeps its pixels (the pipeline passes the occlusion
    model's weights as ``keep``)."""

    method: str = default("blend")
    color_match: bool = default("color_match")
    mask_scale: float = default("mask_scale")
    feather: float = default("feather")
    keep_detail: bool = True
    strength: float = default("strength")
    chroma_limit: float = 10.0
    keep_monochrome: bool = True
    match_degradation: bool = True
    keep_occluders: bool = default("keep_occluders")

    def __post_init__(self) -> None:
        for option, value in (("blend", self.method), ("mask_scale", self.mask_scale),
                              ("feather", self.feather), ("strength", self.strength)):
            PIPELINE[option].check(value)
        if not 0.0 <= self.chroma_limit <= 100.0:
            raise ConfigError(f"chroma limit must be within 0..100 LAB units, got "
                              f"{self.chroma_limit}")


@dataclass(frozen=True, eq=False)
class Patch:
    """Where one face was pasted: the mask weights (float32 in [0, 1]) over image rows
    y0:y0+h and columns x0:x0+w. Pixels with weight 0 are untouched."""

    x0: int
    y0: int
    mask: np.ndarray

    def union_into(self, full: np.ndarray) -> None:
        """Max-accumulate this patch's mask into a full-image float mask."""
        h, w = self.mask.shape
        view = full[self.y0:self.y0 + h, self.x0:self.x0 + w]
        np.maximum(view, self.mask, out=view)


@lru_cache(maxsize=16)
def face_mask(crop_size: int, template: Template, mask_scale: float = 1.0,
              feather: float = 0.3) -> np.ndarray:
    """The soft face mask in the crop frame, (S, S) float32 in [0, 1], read-only.

    An ellipse from about one eye-to-mouth distance above the eyes down to the chin, as wide as
    the cheeks; weight 1 inside ``1 - feather`` of its radius, fading to exactly 0 at its edge
    and within the outer 8 % of the crop.
    """
    pts = template.pixels(crop_size)
    eyes, mouth = pts[:2].mean(axis=0), pts[3:].mean(axis=0)
    d = float(np.linalg.norm(mouth - eyes))  # eye-to-mouth distance
    axis = (mouth - eyes) / d  # "down" in the face frame
    centre = eyes + 0.375 * d * axis
    semi_down, semi_across = 1.4 * d * mask_scale, 1.0 * d * mask_scale
    across_axis = np.array([-axis[1], axis[0]])
    ys, xs = np.mgrid[0:crop_size, 0:crop_size].astype(np.float64)
    rel = np.stack([xs - centre[0], ys - centre[1]], axis=-1)
    along = rel @ axis
    across = rel @ across_axis
    r = np.sqrt((along / semi_down) ** 2 + (across / semi_across) ** 2)
    inner = 1.0 - feather
    t = np.clip((1.0 - r) / max(feather, 1e-6), 0.0, 1.0) if feather > 0 else (r < 1.0) * 1.0
    m = t * t * (3.0 - 2.0 * t)  # smoothstep: zero slope at both ends
    m[r <= inner] = 1.0
    # Fade to zero at the crop's edge too (a tight template's ellipse reaches past it, and a
    # mask cut off there would leave a seam).
    edge = np.minimum(np.minimum(xs, ys), np.minimum(crop_size - 1 - xs, crop_size - 1 - ys))
    e = np.clip(edge / (0.08 * crop_size), 0.0, 1.0)
    m = (m * e * e * (3.0 - 2.0 * e)).astype(np.float32)
    m.setflags(write=False)
    return m


@dataclass(frozen=True)
class ColorTransform:
    """A per-channel affine map in float LAB: ``lab * gain + offset`` (each (3,) float64)."""

    gain: np.ndarray
    offset: np.ndarray

    def blend(self, other: "ColorTransform", weight: float) -> "ColorTransform":
        """``weight`` of ``other`` mixed into this one (for smoothing over time)."""
        return ColorTransform(self.gain + weight * (other.gain - self.gain),
                              self.offset + weight * (other.offset - self.offset))


def _lab(rgb: np.ndarray) -> np.ndarray:
    # float LAB (from RGB in [0, 1]) so an unchanged face round-trips exactly
    return cv2.cvtColor(rgb.astype(np.float32) / 255.0, cv2.COLOR_RGB2LAB)


def color_transform(translated: np.ndarray, original: np.ndarray,
                    mask: np.ndarray) -> ColorTransform | None:
    """The map giving ``translated``'s LAB channels the mean/std of ``original``'s inside
    ``mask`` (std ratio clipped to 0.5..2); None when the mask is nearly empty. Both crops are
    (S, S, 3) RGB uint8; mask is (S, S) bool."""
    return _lab_transform(_lab(translated), original, mask)


def _lab_transform(lab_t: np.ndarray, original: np.ndarray,
                   mask: np.ndarray) -> ColorTransform | None:
    """:func:`color_transform` with the translated crop already in LAB."""
    w = mask.reshape(-1).astype(np.float32)
    n = float(w.sum())
    if n < 16:
        return None
    mu_t, sd_t = _masked_mean_std(lab_t, w, n)
    mu_o, sd_o = _masked_mean_std(_lab(original), w, n)
    gain = np.clip((sd_o + 1e-3) / (sd_t + 1e-3), 0.5, 2.0)
    return ColorTransform(gain, mu_o - mu_t * gain)


def _masked_mean_std(lab: np.ndarray, w: np.ndarray, n: float) -> tuple[np.ndarray, np.ndarray]:
    """Per-channel mean and std of the (S, S, 3) image where the 0/1 weights ``w`` (S*S,) are
    1, as two matrix-vector products (3.5x faster than indexing then mean/std)."""
    x = lab.reshape(-1, 3)
    mu = (w @ x).astype(np.float64) / n
    var = (w @ (x * x)).astype(np.float64) / n - mu * mu
    return mu, np.sqrt(np.maximum(var, 0.0))


def apply_color(translated: np.ndarray, transform: ColorTransform) -> np.ndarray:
    return _lab_to_rgb(_lab(translated), transform)


def _lab_to_rgb(lab: np.ndarray, transform: ColorTransform) -> np.ndarray:
    """:func:`apply_color` on a crop already in LAB."""
    lab = lab * transform.gain.astype(np.float32) + transform.offset.astype(np.float32)
    rgb = cv2.cvtColor(lab, cv2.COLOR_LAB2RGB)
    return np.clip(rgb * 255.0 + 0.5, 0, 255).astype(np.uint8)


def match_color(translated: np.ndarray, original: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Shift/scale ``translated``'s LAB channels so their mean/std inside ``mask`` match
    ``original``'s there. Both crops are (S, S, 3) RGB uint8; mask is (S, S) bool."""
    transform = color_transform(translated, original, mask)
    return translated if transform is None else apply_color(translated, transform)


def match_colors(translated: np.ndarray, originals: np.ndarray, template: Template,
                 config: BlendConfig) -> np.ndarray:
    """A batch of translated crops (N, S, S, 3) colour-matched to their originals and finished
    (:func:`finish_change`) as :func:`paste_face` will paste them at strength 1."""
    if len(translated) == 0:
        return translated
    where = color_mask(translated.shape[1], template, config)
    if config.color_match:
        translated = [match_color(t, o, where) for t, o in zip(translated, originals)]
    return np.stack([finish_change(t, o, where, config) for t, o in zip(translated, originals)])


@lru_cache(maxsize=16)
def _mask_box(crop_size: int, template: Template, mask_scale: float,
              feather: float) -> np.ndarray | None:
    """The corners of the box one pixel outside the mask's support, in the crop frame, (4, 2)
    read-only; None for an empty mask."""
    ys, xs = np.nonzero(face_mask(crop_size, template, mask_scale, feather))
    if len(xs) == 0:
        return None
    box = np.array([[xs.min() - 1, ys.min() - 1], [xs.max() + 1, ys.min() - 1],
                    [xs.max() + 1, ys.max() + 1], [xs.min() - 1, ys.max() + 1]], np.float64)
    box.setflags(write=False)
    return box


def color_mask(crop_size: int, template: Template, config: BlendConfig) -> np.ndarray:
    """Where colour statistics are taken: the solid part of the face mask, (S, S) bool."""
    return face_mask(crop_size, template, config.mask_scale, config.feather) > 0.5


def paste_faces(image: np.ndarray, faces: list[Face], translated: np.ndarray,
                originals: np.ndarray, template: Template, config: BlendConfig | None = None,
                colors: list[ColorTransform | None] | None = None,
                strengths: list[float] | None = None,
                keep: np.ndarray | None = None) -> tuple[np.ndarray, list[Patch]]:
    """Paste each translated crop back into a copy of ``image``; returns it and the patches.

    faces must carry ``crop_from_image``; translated and originals are (N, S, S, 3) uint8.
    colors: with colour matching on, a given transform per face replaces the one measured on
    the crops (video passes transforms smoothed over time). strengths: per face, replaces the
    config's strength (a target age gives each face its own). keep: (N, S, S) weights in
    [0, 1] multiplied into each face's mask (0 where an occluder covers the face).
    """
    config = config or BlendConfig()
    out = image.copy()
    patches = [paste_face(out, face, translated[i], originals[i], template, config,
                          None if colors is None else colors[i],
                          None if strengths is None else strengths[i],
                          None if keep is None else keep[i])
               for i, face in enumerate(faces)]
    return out, patches


def paste_face(out: np.ndarray, face: Face, translated: np.ndarray, original: np.ndarray,
               template: Template, config: BlendConfig,
               color: ColorTransform | None = None, strength: float | None = None,
               keep: np.ndarray | None = None) -> Patch:
    """Paste one translated crop into ``out`` in place; returns where it went. ``strength``
    replaces the config's (0..2); ``keep`` (S, S) multiplies the face mask."""
    if face.crop_from_image is None:
        raise ValueError("the face has no crop_from_image; align it first")
    size = translated.shape[0]
    mask_crop = face_mask(size, template, config.mask_scale, config.feather)
    if keep is not None:
        mask_crop = mask_crop * np.asarray(keep, np.float32)
    if config.color_match:
        lab = _lab(translated)  # once, for both measuring and applying
        if color is None:
            color = _lab_transform(lab, original, mask_crop > 0.5)
        if color is not None:
            translated = _lab_to_rgb(lab, color)
    strength = config.strength if strength is None else float(np.clip(strength, 0.0, 2.0))
    translated = finish_change(translated, original, mask_crop > 0.5, config, strength)
    image_from_crop = invert_affine(face.crop_from_image)

    # The region the mask covers, padded (it may reach past the image: a "virtual" region).
    box = _mask_box(size, template, config.mask_scale, config.feather)
    if box is None:
        return Patch(0, 0, np.zeros((0, 0), np.float32))
    corners = transform_points(image_from_crop, box)
    pad = 4
    vx0, vy0 = (np.floor(corners.min(axis=0)).astype(int) - pad)
    vx1, vy1 = (np.ceil(corners.max(axis=0)).astype(int) + pad + 1)
    h, w = out.shape[:2]
    ix0, iy0, ix1, iy1 = max(vx0, 0), max(vy0, 0), min(vx1, w), min(vy1, h)
    if ix0 >= ix1 or iy0 >= iy1:  # wholly outside the image
        return Patch(0, 0, np.zeros((0, 0), np.float32))
    rw, rh = vx1 - vx0, vy1 - vy0
    roi_from_crop = compose(translation(-vx0, -vy0), image_from_crop)

    m = cv2.warpAffine(np.ascontiguousarray(mask_crop), roi_from_crop, (rw, rh),
                       flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT, borderValue=0)
    m[m < 1e-3] = 0.0
    dst = cv2.copyMakeBorder(out[iy0:iy1, ix0:ix1], iy0 - vy0, vy1 - iy1, ix0 - vx0, vx1 - ix1,
                             cv2.BORDER_REPLICATE).astype(np.float32)
    delta = translated.astype(np.float32) - original.astype(np.float32)
    if strength != 1.0:
        delta *= strength
    if config.keep_detail:
        src = dst + cv2.warpAffine(delta, roi_from_crop, (rw, rh), flags=cv2.INTER_LINEAR,
                                   borderMode=cv2.BORDER_CONSTANT, borderValue=0)
    else:
        changed = np.clip(original.astype(np.float32) + delta, 0, 255)
        src = cv2.warpAffine(changed, roi_from_crop, (rw, rh), flags=cv2.INTER_LINEAR,
                             borderMode=cv2.BORDER_REPLICATE)
    src = np.clip(src, 0, 255)

    blended = _poisson(src, dst, m, face) if config.method == "poisson" else None
    if blended is None:
        blended = dst + m[..., None] * (src - dst)
    result = np.clip(blended + 0.5, 0, 255).astype(np.uint8)

    # Write back the in-image part, only where the mask is non-zero.
    sy, sx = slice(iy0 - vy0, iy1 - vy0), slice(ix0 - vx0, ix1 - vx0)
    m_in = m[sy, sx]
    target = out[iy0:iy1, ix0:ix1]
    keep = m_in > 0
    target[keep] = result[sy, sx][keep]
    return Patch(int(ix0), int(iy0), m_in)


#: How far (levels; 99th percentile inside the solid mask, smoothed) Poisson's result may leave
#: the range between the original and the translated face before the face falls back to
#: feather: where the change is large on the mask's edge (a hat, hair), the membrane that makes
#: the edge seamless carries that difference inwards as a dark or bright smear.
POISSON_MAX_SMEAR = 12.0


def _poisson(src: np.ndarray, dst: np.ndarray, m: np.ndarray, face: Face) -> np.ndarray | None:
    """seamlessClone of src into dst over the mask support, or None (with a warning) if refused
    or if it smears the mask's edge into the face (see POISSON_MAX_SMEAR)."""
    mask_u8 = np.where(m > 0, 255, 0).astype(np.uint8)
    mask_u8[[0, -1], :] = 0
    mask_u8[:, [0, -1]] = 0
    x, y, bw, bh = cv2.boundingRect(mask_u8)
    if bw < 3 or bh < 3:
        return None
    # With src and dst the same size, this centre makes OpenCV place src's box exactly on dst's.
    centre = (x + bw // 2, y + bh // 2)
    try:
        # OpenCV erodes and inverts the mask buffer it is given in place: hand it a copy.
        res = cv2.seamlessClone(src.astype(np.uint8), dst.astype(np.uint8), mask_u8.copy(),
                                centre, cv2.NORMAL_CLONE)
    except cv2.error as e:
        log.warning("Poisson blending failed for the face at %s (%s); used feather instead",
                    tuple(round(v) for v in face.box), str(e).strip().splitlines()[-1][:80])
        return None
    out = np.where(mask_u8[..., None] > 0, res.astype(np.float32), dst)
    solid = m >= 0.999
    if solid.sum() >= 16:
        below = np.maximum(np.minimum(src, dst) - out, 0.0)
        above = np.maximum(out - np.maximum(src, dst), 0.0)
        smear = cv2.GaussianBlur((below + above).mean(axis=2), (0, 0), 3.0)[solid]
        if float(np.percentile(smear, 99)) > POISSON_MAX_SMEAR:
            log.warning("Poisson blending would smear the edge of the face at %s into it (a "
                        "hat or hair over the mask's border?); used feather for it",
                        tuple(round(v) for v in face.box))
            return None
    return out


# --- Finishing: the change made to look as if the photo had taken it ------------------------

# Gaussian widths (crop pixels) tried for the change's low-pass, smallest first.
_SIGMAS = (0.0, 0.5, 0.8, 1.2, 1.7, 2.4, 3.4, 4.8)
_SHARPNESS_BAND = (0.78, 1.15)  # finished over original RMS fine detail
_TONE_BINS = 24


def is_grey(crop: np.ndarray) -> bool:
    """Whether every pixel of an RGB crop has equal channels (a greyscale photo)."""
    return bool(np.array_equal(crop[..., 0], crop[..., 1])
                and np.array_equal(crop[..., 1], crop[..., 2]))


def tone_curve(lab: np.ndarray, where: np.ndarray) -> np.ndarray | None:
    """For a monochrome (greyscale, sepia, duotone) crop, its colour as a function of
    lightness: (_TONE_BINS, 2) a/b per lightness bin; None when the crop has real colours
    (its a/b stray more than 3 units from the curve at the 95th percentile)."""
    L, ab = lab[where, 0], lab[where, 1:]
    if len(L) < 64:
        return None
    bins = np.clip((L / 100.0 * _TONE_BINS).astype(int), 0, _TONE_BINS - 1)
    counts = np.bincount(bins, minlength=_TONE_BINS).astype(np.float64)
    curve = np.stack([np.bincount(bins, ab[:, k], _TONE_BINS) for k in (0, 1)], axis=1)
    filled = counts > 0
    curve[filled] /= counts[filled, None]
    centres = (np.arange(_TONE_BINS) + 0.5) * 100.0 / _TONE_BINS
    for k in (0, 1):  # empty bins take their neighbours' colour
        curve[~filled, k] = np.interp(centres[~filled], centres[filled], curve[filled, k])
    resid = np.sqrt(((ab - curve[bins]) ** 2).sum(axis=1))
    return curve if float(np.percentile(resid, 95)) <= 3.0 else None


def _along_curve(L: np.ndarray, curve: np.ndarray) -> np.ndarray:
    centres = (np.arange(_TONE_BINS) + 0.5) * 100.0 / _TONE_BINS
    return np.stack([np.interp(L, centres, curve[:, k]) for k in (0, 1)], axis=-1)


def _grey(rgb: np.ndarray) -> np.ndarray:
    return rgb @ np.array([0.299, 0.587, 0.114], np.float32)


# Two fine-detail filters: the Laplacian (sharpness, texture) and Immerkaer's noise kernel,
# which cancels smooth content up to second order (grain, sensor noise).
_NOISE_KERNEL = np.array([[1, -2, 1], [-2, 4, -2], [1, -2, 1]], np.float32)


def _details(grey: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    return cv2.Laplacian(grey, cv2.CV_32F), cv2.filter2D(grey, cv2.CV_32F, _NOISE_KERNEL)


def change_blur(original: np.ndarray, delta: np.ndarray, where: np.ndarray,
                band: tuple[float, float] = _SHARPNESS_BAND) -> float:
    """The Gaussian width (crop pixels) to low-pass the change ``delta`` ((S, S, 3) float32)
    with, so the face's sharpness and noise (the RMS responses of a Laplacian and of
    Immerkaer's noise kernel to grey, inside ``where``) both stay within ``band`` times the
    original's: the smallest width that does, interpolated between the tried widths. A
    defocused face then stays soft (the generator's grain is filtered out), a sharp face keeps
    its own detail, and a noisy one its noise (which a clean generator output would otherwise
    subtract)."""
    d_o = _details(_grey(original.astype(np.float32)))
    e_o = [float(np.sqrt((d[where] ** 2).mean())) for d in d_o]
    if min(e_o) < 1e-3:
        return 0.0
    g = _grey(delta)
    lo, hi = np.log(band[0]), np.log(band[1])
    prev = None
    for s in _SIGMAS:
        d_c = _details(g if s == 0 else cv2.GaussianBlur(g, (0, 0), s))
        rs = [np.log(max(float(np.sqrt(((a + b)[where] ** 2).mean())), 1e-9) / e)
              for a, b, e in zip(d_o, d_c, e_o)]
        r = max(rs, key=abs)  # the measure furthest from the original's
        if lo <= min(rs) and max(rs) <= hi:
            if prev is None:
                return s
            s0, r0 = prev  # where the ratio crossed into the band
            edge = hi if r0 > hi else lo
            t = float(np.clip((r0 - edge) / (r0 - r), 0.0, 1.0)) if r0 != r else 1.0
            return s0 + t * (s - s0)
        prev = (s, r)
    return _SIGMAS[-1]


def finish_change(translated: np.ndarray, original: np.ndarray, where: np.ndarray,
                  config: "BlendConfig", strength: float = 1.0) -> np.ndarray:
    """The translated crop (S, S, 3) uint8, already colour-matched, made to belong to the
    photo: a greyscale face stays exactly grey and a monochrome (sepia, duotone) one keeps its
    tone curve; otherwise the colour change at each pixel is limited (softly) to
    ``config.chroma_limit`` LAB a/b units at ``strength``; and the change is low-passed so the
    face keeps the original's sharpness, grain and noise (:func:`change_blur`). ``where``
    (S, S) bool: the solid part of the face mask, where the statistics are taken."""
    if not (config.keep_monochrome or config.chroma_limit > 0 or config.match_degradation):
        return translated
    o = original.astype(np.float32)
    if config.keep_monochrome and is_grey(original):
        g = np.clip(_grey(translated.astype(np.float32)) + 0.5, 0, 255).astype(np.uint8)
        t = np.repeat(g[..., None], 3, axis=2).astype(np.float32)
    else:
        lab_t, lab_o = _lab(translated), _lab(original)
        curve = tone_curve(lab_o, where) if config.keep_monochrome else None
        if curve is not None:  # keep the photo's tone: colour follows lightness as before
            lab_t[..., 1:] = (lab_o[..., 1:] - _along_curve(lab_o[..., 0], curve)
                              + _along_curve(lab_t[..., 0], curve))
        elif config.chroma_limit > 0:
            d = lab_t[..., 1:] - lab_o[..., 1:]
            mag = np.sqrt((d * d).sum(axis=-1, keepdims=True))
            limit = config.chroma_limit / max(1.0, strength)
            # a soft knee: small changes pass, large ones approach the limit
            lab_t[..., 1:] = lab_o[..., 1:] + d * (limit * np.tanh(mag / limit)
                                                   / np.maximum(mag, 1e-6))
        t = np.clip(cv2.cvtColor(lab_t, cv2.COLOR_LAB2RGB) * 255.0, 0, 255)
    delta = t - o
    if config.match_degradation:
        s = change_blur(o, delta, where)
        if s > 0:
            delta = cv2.GaussianBlur(delta, (0, 0), s)
    return np.clip(o + delta + 0.5, 0, 255).astype(np.uint8)
