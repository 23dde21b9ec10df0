"""Detect: image -> list of :class:`~facecomp.face.Face` records, with MTCNN (the nets and
weights of facenet-pytorch, :mod:`facecomp.stages.mtcnn`).

Large photos are detected on a copy whose
longer side is at most ``DetectConfig.max_side`` and the results are mapped back to full
resolution, so detection time stays roughly flat as megapixels grow. Faces are returned numbered
left to right (by box centre), the order used by ``--faces`` and the ``--debug`` drawing.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Protocol

import cv2
import numpy as np
import torch

from ..errors import ConfigError
from ..face import Face
from ..options import PIPELINE, default
from .mtcnn import PYRAMID_FACTOR, bbreg, crop_bounds, imresample, load_nets, nms, rerec

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class DetectConfig:
    """Detector settings (validated on construction).

    min_face_size: smallest face MTCNN looks for, in pixels of the image it runs on.
    min_score: faces scoring below this are dropped.
    thresholds: MTCNN's three stage thresholds (P-, R-, O-net).
    max_side: detect on a copy downscaled so its longer side is at most this many pixels.
    border_pad: black border added around the image, as a fraction of its shorter side, so
      faces cut by the border are found whole (0: none).
    large_faces: a coarse extra pass, on a small copy padded by half its size, finds close-up
      faces that the border cuts deeply.
    rotations: ``auto`` runs the coarse pass at 90, 180 and 270 degrees too (heads lying down,
      a photo shot sideways with no orientation tag) and a full pass at an angle where the
      coarse one finds more faces than upright, or, when nothing is found upright, at all three,
      keeping the angle with most faces if it has two or more (a turned group photo of small
      faces; a photo with no face then costs four passes);
      ``all`` runs full passes at all four angles; ``off`` only looks upright.
    """

    min_face_size: int = 15
    min_score: float = default("min_score")
    thresholds: tuple[float, float, float] = (0.6, 0.7, 0.7)
    max_side: int = default("detect_side")
    border_pad: float = 0.05
    large_faces: bool = True
    rotations: str = default("rotations")

    def __post_init__(self) -> None:
        if self.min_face_size < 6:
            raise ConfigError(f"detector min face size must be at least 6 px, got {self.min_face_size}")
        for option, value in (("min_score", self.min_score), ("detect_side", self.max_side),
                              ("rotations", self.rotations)):
            PIPELINE[option].check(value)
        if len(self.thresholds) != 3 or not all(0.0 <= t <= 1.0 for t in self.thresholds):
            raise ConfigError(f"thresholds must be three numbers within 0..1, got {self.thresholds}")
        if not 0.0 <= self.border_pad <= 0.5:
            raise ConfigError(f"detection border pad must be within 0..0.5 of the shorter side, "
                              f"got {self.border_pad}")


COARSE_SIDE = 256  # the coarse pass's copy: shorter side, px
COARSE_MIN_FACE = 36  # ... and the smallest face it looks for there (1/7 of that side)
COARSE_PNET_THRESHOLD = 0.8  # its first stage's threshold: fewer candidates than 0.6
NEAR_REACH = 1.0  # detect_near's window: box sides beyond a lost face's box on each side


class Detector(Protocol):
    """What the pipeline needs from a detector; tests can swap in a fake. A detector may also
    have ``refine(image, faces, passes) -> list[Face | None]`` (see
    :meth:`MTCNNDetector.refine`); video then follows faces between full detections."""

    def detect(self, image: np.ndarray) -> list[Face]:
        """Faces in an RGB uint8 HxWx3 image, numbered left to right."""
        ...


def order_faces(faces: list[Face]) -> list[Face]:
    """Left to right by box centre (ties: top to bottom)."""
    return sorted(faces, key=lambda f: (round(f.centre[0], 1), f.centre[1]))


class MTCNNDetector:
    """MTCNN behind the :class:`Detector` interface."""

    def __init__(self, config: DetectConfig | None = None, device: str = "cpu") -> None:
        self.config = config or DetectConfig()
        self.device = device
        self.nets = load_nets(device)
        self._facenet = None

    @property
    def _mtcnn(self):
        """facenet-pytorch's own MTCNN on this detector's nets, built on first use: off the CPU
        its detection loop is the one measured on a GPU (and tests compare with it)."""
        if self._facenet is None:
            from facenet_pytorch import MTCNN  # imports torchvision: only where it is needed

            c = self.config
            m = MTCNN(keep_all=True, min_face_size=c.min_face_size,
                      thresholds=list(c.thresholds), post_process=False,
                      device=next(self.nets.pnet.parameters()).device)
            m.pnet, m.rnet, m.onet = self.nets.pnet, self.nets.rnet, self.nets.onet
            self._facenet = m
        return self._facenet

    def detect(self, image: np.ndarray) -> list[Face]:
        small, scale = self._downscaled(image)
        if min(small.shape[:2]) < 12:  # MTCNN's smallest window
            return []
        small = np.ascontiguousarray(small)
        c = self.config
        found = self._full_pass(small, 0)
        extra: list[tuple] = []
        if c.large_faces or c.rotations != "off":
            angles = (0,) if c.rotations == "off" else (0, 1, 2, 3)
            copy = _coarse_copy(small)  # one downscaled copy serves every angle
            coarse = {k: self._coarse_pass(small, copy, k) for k in angles
                      if k == 0 and c.large_faces or k != 0}
            full_turns = [1, 2, 3] if c.rotations == "all" else []
            if c.rotations == "auto":
                upright = len(coarse.get(0, []))
                best = max((1, 2, 3), key=lambda k: len(coarse[k]))
                if len(coarse[best]) > upright:
                    full_turns = [best]
            for k in full_turns:
                extra += self._full_pass(small, k)
            if c.rotations == "auto" and not full_turns and not found and not upright:
                # nothing upright: perhaps a turned group photo of small faces. The angle with
                # most faces, if it has two or more (MTCNN takes a turned dog for a face at
                # p > 0.99, a whole group of them less readily)
                turned = max(([f for f in self._full_pass(small, k) if f[1] >= c.min_score]
                              for k in (1, 2, 3)), key=len)
                if len(turned) >= 2:
                    extra += turned
            extra += [f for k in coarse for f in coarse[k]]
        found = _merge(found, extra)
        faces = [f for f in (self._face(b, p, q, scale) for b, p, q in found) if f is not None]
        log.debug("detected %d faces on a %dx%d copy (scale %.3f)", len(faces),
                  small.shape[1], small.shape[0], scale)
        return order_faces(faces)

    def _full_pass(self, img: np.ndarray, turns: int) -> list[tuple]:
        """Detections (box, score, points) in ``img``'s frame from the full pyramid run on
        ``img`` turned ``turns`` x 90 degrees counter-clockwise, its levels padded with black
        (:meth:`_detect_face`)."""
        turned = np.ascontiguousarray(np.rot90(img, turns)) if turns else img
        found = self._pyramid(turned, pad=self.config.border_pad * min(img.shape[:2]))
        # facenet-pytorch stretches the crop of a face cut by the border, so its landmarks slide
        # towards the cut; measure those faces again on black-padded crops (the original MTCNN's
        # way), from the box found, twice, as refine() does
        cut = [k for k, (b, _, _) in enumerate(found) if _is_cut(turned.shape, b)]
        if cut:
            again = self._remeasure(turned, [found[k] for k in cut])
            for k, a in zip(cut, again):
                found[k] = a
        return [_unturn(f, turns, turned.shape) for f in found]

    def _coarse_pass(self, img: np.ndarray, small: np.ndarray, turns: int) -> list[tuple]:
        """Large faces only: the pyramid on ``small`` (:func:`_coarse_copy` of ``img``), turned
        and padded by half its size, with a stricter first stage; each face is then measured
        again by O-Net on ``img`` itself (turned the same way), whose full-resolution landmarks
        it keeps."""
        w = img.shape[1]
        turned = np.ascontiguousarray(np.rot90(small, turns)) if turns else small
        found = self._pyramid(turned, COARSE_MIN_FACE, pad=min(turned.shape[:2]) / 2,
                              first_threshold=COARSE_PNET_THRESHOLD)
        if not found:
            return []
        sx = w / small.shape[1]
        big = np.ascontiguousarray(np.rot90(img, turns)) if turns else img
        found = [(b * sx + (sx - 1) / 2, p, q * sx + (sx - 1) / 2) for b, p, q in found]
        for _ in range(2):  # full-resolution O-Net must accept each face
            found = [f for f in self._onet(big, [b for b, _, _ in found])
                     if f is not None and f[1] >= self.config.min_score]
        return [_unturn(f, turns, big.shape) for f in found]

    def _remeasure(self, img: np.ndarray, found: list[tuple]) -> list[tuple]:
        """Each detection measured again by O-Net on black-padded crops of ``img``, twice;
        one O-Net rejects keeps its previous measure."""
        again = list(found)
        for _ in range(2):
            again = [a if a is not None and a[1] >= self.config.min_score else prev
                     for a, prev in zip(self._onet(img, [b for b, _, _ in again]), again)]
        return again

    def _pyramid(self, img: np.ndarray, min_face_size: int | None = None, pad: float = 0.0,
                 first_threshold: float | None = None) -> list[tuple]:
        """MTCNN's three stages on one image: [(box (4,), score, points (5, 2))]; ``pad``
        pixels of black around it (see :meth:`_detect_face`)."""
        if min(img.shape[:2]) < 12:
            return []
        if self.device == "cpu":
            boxes, points = self._detect_face(img, min_face_size, pad, first_threshold)
        else:  # facenet-pytorch's own loop on a padded copy: the path measured on a GPU
            m = self._mtcnn
            p = int(np.ceil(pad))
            padded = cv2.copyMakeBorder(img, p, p, p, p, cv2.BORDER_CONSTANT, value=0) if p else img
            saved = m.min_face_size, list(m.thresholds)
            m.min_face_size = min_face_size or saved[0]
            if first_threshold is not None:
                m.thresholds = [first_threshold] + saved[1][1:]
            try:
                found_boxes, probs, found_points = m.detect(padded, landmarks=True)
            finally:
                m.min_face_size, m.thresholds = saved
            if found_boxes is None:
                return []
            found_boxes = np.asarray(found_boxes, np.float32) - p
            found_points = np.asarray(found_points, np.float32) - p
            boxes = np.concatenate([np.asarray(found_boxes, np.float32),
                                    np.asarray(probs, np.float32)[:, None]], axis=1)
            points = np.asarray(found_points, np.float32)
        return [(b[:4].astype(np.float64), float(b[4]), q.astype(np.float64))
                for b, q in zip(boxes, points)]

    @torch.inference_mode()
    def _detect_face(self, img: np.ndarray, min_face_size: int | None = None, border: float = 0.0,
                     first_threshold: float | None = None) -> tuple[np.ndarray, np.ndarray]:
        """facenet-pytorch's ``detect_face`` for one RGB image: (N, 5) boxes with scores and
        (N, 5, 2) landmarks, the same numbers to float rounding (test). The difference is
        speed: R-Net's and O-Net's inputs are cut and area-resampled in one call per crop size
        (:func:`_area_crops`) instead of one per candidate (thousands in a crowd), and the nets
        take them in cache-sized chunks (:meth:`_chunk`): 0.66 -> 0.42 s on the 100-face
        photo.

        ``border``: each pyramid level is padded with that many image pixels of black (at the
        level's scale) after it is resampled, so P-Net also tries windows that reach past the
        border, where a cut face lies, while every window inside the image sees exactly the
        pixels it saw without padding (padding the image itself would shift every level's
        sampling grid and change borderline detections anywhere in it). R-Net and O-Net cut
        their crops with black outside the image as they always do.
        """
        m = self.nets
        th = self.config.thresholds
        dev = next(m.pnet.parameters()).device
        h, w = img.shape[:2]
        pyramid = torch.as_tensor(img.copy(), device=dev).unsqueeze(0).permute(0, 3, 1, 2).float()
        scale = 12.0 / (min_face_size or self.config.min_face_size)
        side = min(h, w) * scale
        boxes_s, picks, offset = [], [], 0
        first = th[0] if first_threshold is None else first_threshold
        while side >= 12:  # stage 1: P-Net over the image pyramid
            im = imresample(pyramid, (int(h * scale + 1), int(w * scale + 1)))
            p = 2 * int(np.ceil(border * scale / 2))  # even: P-Net's stride keeps its grid
            if p:
                im = torch.nn.functional.pad(im, (p, p, p, p))  # black (0 before scaling)
            reg, probs = m.pnet(_net_input(im, dev))
            b = _windows(reg, probs[:, 1], scale, first, p // 2)
            boxes_s.append(b)
            picks.append(nms(b[:, :4], b[:, 4], 0.5) + offset)
            offset += b.shape[0]
            scale *= PYRAMID_FACTOR
            side *= PYRAMID_FACTOR
        if not boxes_s:  # smaller than one 12 px window at the smallest face size
            return np.zeros((0, 5), np.float32), np.zeros((0, 5, 2), np.float32)
        boxes = torch.cat(boxes_s)[torch.cat(picks)]
        boxes = boxes[nms(boxes[:, :4], boxes[:, 4], 0.7)]
        regw, regh = boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]
        boxes = torch.stack([boxes[:, 0] + boxes[:, 5] * regw, boxes[:, 1] + boxes[:, 6] * regh,
                             boxes[:, 2] + boxes[:, 7] * regw, boxes[:, 3] + boxes[:, 8] * regh,
                             boxes[:, 4]]).permute(1, 0)
        boxes = rerec(boxes)
        if len(boxes):  # stage 2: R-Net on 24x24 crops
            crops, keep = _area_crops(img, boxes, w, h, 24)
            boxes = boxes[keep.to(dev)]
        if len(boxes):
            reg, probs = _in_chunks(m.rnet, _net_input(crops, dev), self._chunk(24))
            score = probs[:, 1]
            ok = score > th[1]
            boxes = torch.cat((boxes[ok, :4], score[ok].unsqueeze(1)), dim=1)
            reg = reg[ok]
            pick = nms(boxes[:, :4], boxes[:, 4], 0.7)
            boxes = rerec(bbreg(boxes[pick], reg[pick]))
        points = np.zeros((0, 5, 2), np.float32)
        if len(boxes):  # stage 3: O-Net on 48x48 crops, landmarks
            crops, keep = _area_crops(img, boxes, w, h, 48)
            boxes = boxes[keep.to(dev)]
        if len(boxes):
            reg, pts, probs = _in_chunks(m.onet, _net_input(crops, dev), self._chunk(48))
            score = probs[:, 1]
            ok = score > th[2]
            boxes = torch.cat((boxes[ok, :4], score[ok].unsqueeze(1)), dim=1)
            pts = _landmarks(boxes, pts[ok])
            boxes = bbreg(boxes, reg[ok])
            pick = nms(boxes[:, :4], boxes[:, 4], 0.7, "min")
            boxes, points = boxes[pick], pts[pick].cpu().numpy()
        return boxes.cpu().numpy().reshape(-1, 5), points

    def refine(self, image: np.ndarray, faces: list[Face], passes: int = 1
               ) -> list[Face | None]:
        """Re-measure faces known from a nearby video frame, with O-Net alone.

        Each face's box is squared and cropped from ``image``; MTCNN's last stage gives a new
        score, box and landmarks. This is the full detector's final step run on the previous
        boxes instead of on R-Net's candidates, at a small fraction of the cost of the image
        pyramid; each further pass starts from the last pass's box (a face that moved a good
        part of its size needs two). A face that O-Net no longer accepts (its own threshold,
        ``thresholds[2]``: a face found at ``min_score`` keeps being followed down to it) comes
        back None.
        """
        if not faces:
            return []
        small, scale = self._downscaled(image)
        found: list[tuple | None] = [
            (((np.asarray(f.box, np.float64) + 0.5) * scale - 0.5), None, None) for f in faces]
        for _ in range(passes):
            live = [k for k, r in enumerate(found) if r is not None]
            for k, r in zip(live, self._onet(small, [found[k][0] for k in live])):
                found[k] = r
        # hysteresis: a face once found at min_score is kept while O-Net accepts it at all
        return [None if r is None or r[1] is None
                else self._face(*r, scale, min_score=self.config.thresholds[2]) for r in found]

    def detect_near(self, image: np.ndarray, faces: list[Face], reach: float = NEAR_REACH
                    ) -> list[Face]:
        """The full detector's three stages on a window around each of ``faces`` only.

        For a face that :meth:`refine` lost in a video (it moved too far, turned, blurred): the
        window spans ``reach`` box sides beyond the box on every side, and the pyramid there
        starts at half the face's size (a face does not shrink by half between frames), so one
        window costs a few per cent of a 1080p full pass. Faces found are in ``image``'s frame,
        at the config's ``min_score``; the same face found from two windows comes back once.
        Faces cut by the image border are measured as :meth:`detect` measures them.
        """
        if not faces:
            return []
        small, scale = self._downscaled(image)
        h, w = small.shape[:2]
        found: list[tuple] = []
        for f in faces:
            x1, y1, x2, y2 = (np.asarray(f.box, np.float64) + 0.5) * scale - 0.5
            side = max(x2 - x1, y2 - y1, 1.0)
            cx, cy, half = (x1 + x2) / 2, (y1 + y2) / 2, side * (0.5 + reach)
            wx0, wy0 = max(0, int(cx - half)), max(0, int(cy - half))
            wx1, wy1 = min(w, int(np.ceil(cx + half))), min(h, int(np.ceil(cy + half)))
            if min(wx1 - wx0, wy1 - wy0) < 12:
                continue
            window = np.ascontiguousarray(small[wy0:wy1, wx0:wx1])
            at_border = wx0 == 0 or wy0 == 0 or wx1 == w or wy1 == h
            least = max(self.config.min_face_size, int(side / 2))
            least = min(least, max(self.config.min_face_size, min(window.shape[:2]) - 1))
            there = self._pyramid(window, least, pad=side / 2 if at_border else 0.0)
            shift = np.array([wx0, wy0], np.float64)
            there = [(b + np.tile(shift, 2), p, q + shift) for b, p, q in there]
            cut = [k for k, (b, _, _) in enumerate(there) if _is_cut(small.shape, b)]
            if cut:  # measured on the whole image's black-padded crops, as detect() does
                for k, a in zip(cut, self._remeasure(small, [there[k] for k in cut])):
                    there[k] = a
            found = _merge(found, there)
        out = [g for g in (self._face(b, p, q, scale) for b, p, q in found) if g is not None]
        return order_faces(out)

    @torch.inference_mode()
    def _onet(self, small: np.ndarray, boxes: list[np.ndarray]) -> list[tuple | None]:
        """O-Net on each box of ``small``: (box, score, (5, 2) points) or None if rejected."""
        if not boxes:
            return []
        t = torch.tensor(np.stack([np.append(np.asarray(b[:4], np.float64), 0.0)
                                   for b in boxes]), dtype=torch.float32)
        t = rerec(t)
        # MTCNN's crop rows/columns [trunc(v1) - 1, trunc(v2)); parts outside the image are
        # black, as in the original MTCNN, so a face cut by the border keeps its square shape
        corners = t[:, :4].trunc().int().tolist()
        ok = [k for k, (x1, y1, x2, y2) in enumerate(corners)
              if _overlaps(small.shape, x1 - 1, y1 - 1, x2, y2)]
        out: list[tuple | None] = [None] * len(boxes)
        if not ok:
            return out
        crops = torch.cat([imresample(torch.from_numpy(_crop(small, x1 - 1, y1 - 1, x2, y2))
                                      .permute(2, 0, 1).unsqueeze(0).float(), (48, 48))
                           for x1, y1, x2, y2 in (corners[k] for k in ok)])
        dev = next(self.nets.onet.parameters()).device
        reg, points, probs = (v.cpu() for v in self.nets.onet(_net_input(crops, dev)))
        t = t[ok]
        score = probs[:, 1]
        points = _landmarks(t, points)
        t = bbreg(t, reg)
        for i, k in enumerate(ok):
            if float(score[i]) > self.config.thresholds[2]:
                out[k] = (t[i, :4].double().numpy(), float(score[i]),
                          points[i].double().numpy())
        return out

    def _chunk(self, side: int) -> int:
        """How many side x side crops R-Net or O-Net take at once. facenet-pytorch's 512 makes
        O-Net's first activations 138 MB, far beyond the CPU's caches; about 150,000 input
        pixels a chunk (65 O-Net, 260 R-Net crops) runs both nets 2x faster on the CPU, for the
        same numbers."""
        return 512 if self.device != "cpu" else max(1, 150_000 // (side * side))

    def _downscaled(self, image: np.ndarray) -> tuple[np.ndarray, float]:
        """The copy the detector runs on (longer side at most max_side) and its scale."""
        h, w = image.shape[:2]
        scale = min(1.0, self.config.max_side / max(h, w))
        if scale >= 1.0:
            return image, 1.0
        size = (max(1, round(w * scale)), max(1, round(h * scale)))
        small = cv2.resize(image, size, interpolation=cv2.INTER_AREA)
        return small, size[0] / w  # the scale actually applied (x), close to y's

    def _face(self, box, prob, pts, scale: float, min_score: float | None = None) -> Face | None:
        """A Face in the full image's frame, or None below ``min_score`` (the config's unless
        given) or with non-finite values."""
        if prob is None or prob < (self.config.min_score if min_score is None else min_score):
            return None
        box = np.asarray(box, dtype=np.float64)
        pts = np.asarray(pts, dtype=np.float64).reshape(5, 2)
        if not (np.all(np.isfinite(box)) and np.all(np.isfinite(pts))):
            return None
        face = Face(box=tuple(float(v) for v in box), score=float(prob), landmarks=pts)
        return face.from_resized(scale) if scale < 1.0 else face


def _coarse_copy(img: np.ndarray) -> np.ndarray:
    """``img`` area-downscaled so its shorter side is COARSE_SIDE (itself when smaller)."""
    h, w = img.shape[:2]
    s = min(1.0, COARSE_SIDE / min(h, w))
    if s >= 1.0:
        return img
    return cv2.resize(img, (max(1, round(w * s)), max(1, round(h * s))),
                      interpolation=cv2.INTER_AREA)


def _windows(reg: torch.Tensor, probs: torch.Tensor, scale: float, threshold: float,
             offset: int) -> torch.Tensor:
    """P-Net's accepted 12 px windows as boxes in the image's frame, (N, 9): x1, y1, x2, y2,
    score, four box corrections. ``offset``: output cells of
    padding before the image on each axis (P-Net's stride is 2 pixels), so window positions
    and their rounding match an unpadded level exactly (facenet-pytorch's
    ``generateBoundingBox`` with an offset)."""
    stride, cell = 2, 12
    reg = reg.permute(1, 0, 2, 3)
    mask = probs >= threshold
    where = mask.nonzero()
    score = probs[mask]
    reg = reg[:, mask].permute(1, 0)
    cells = where[:, 1:].type(reg.dtype).flip(1) - offset
    q1 = ((stride * cells + 1) / scale).floor()
    q2 = ((stride * cells + cell) / scale).floor()
    return torch.cat([q1, q2, score.unsqueeze(1), reg], dim=1)


def _turn_points(pts: np.ndarray, turns: int, shape: tuple[int, ...]) -> np.ndarray:
    """Points (x, y) of an image of ``shape`` in the frame of ``np.rot90(image, turns)``.

    Convention: one counter-clockwise quarter turn of an h x w image maps the pixel centre
    (x, y) to (y, w - 1 - x) in the w x h result."""
    pts = np.asarray(pts, np.float64).reshape(-1, 2)
    h, w = shape[:2]
    for _ in range(turns % 4):
        pts = np.stack([pts[:, 1], w - 1 - pts[:, 0]], axis=1)
        h, w = w, h
    return pts


def _unturn(found: tuple, turns: int, turned_shape: tuple[int, ...]) -> tuple:
    """A detection in the frame of an image turned ``turns`` quarter turns (of shape
    ``turned_shape``) brought back to the unturned image's frame."""
    if turns % 4 == 0:
        return found
    box, score, pts = found
    back = (4 - turns) % 4
    corners = np.array([[box[0], box[1]], [box[2], box[1]], [box[2], box[3]], [box[0], box[3]]])
    c = _turn_points(corners, back, turned_shape)
    return (np.array([c[:, 0].min(), c[:, 1].min(), c[:, 0].max(), c[:, 1].max()]), score,
            _turn_points(pts, back, turned_shape))


def _merge(found: list[tuple], extra: list[tuple], iou: float = 0.3) -> list[tuple]:
    """``found`` plus each detection of ``extra`` (best score first) that overlaps none kept
    by more than ``iou`` and whose centre lies in no kept box."""
    from ..geometry import box_iou

    kept = list(found)
    for f in sorted(extra, key=lambda f: -f[1]):
        b = f[0]
        cx, cy = (b[0] + b[2]) / 2, (b[1] + b[3]) / 2
        if all(box_iou(tuple(b), tuple(k[0])) <= iou
               and not (k[0][0] <= cx <= k[0][2] and k[0][1] <= cy <= k[0][3]) for k in kept):
            kept.append(f)
    return kept


def _is_cut(shape: tuple[int, ...], box: np.ndarray) -> bool:
    """Whether MTCNN's square crop around ``box`` reaches outside the image."""
    x1, y1, x2, y2 = (float(v) for v in box[:4])
    half = max(x2 - x1, y2 - y1) / 2
    cx, cy = (x1 + x2) / 2, (y1 + y2) / 2
    h, w = shape[:2]
    return cx - half < 1 or cy - half < 1 or cx + half > w or cy + half > h


def _overlaps(shape: tuple[int, ...], x0: int, y0: int, x1: int, y1: int) -> bool:
    """Whether the half-open box [x0, x1) x [y0, y1) is non-empty and meets the image."""
    h, w = shape[:2]
    return x1 > x0 and y1 > y0 and x1 > 0 and y1 > 0 and x0 < w and y0 < h


def _crop(image: np.ndarray, x0: int, y0: int, x1: int, y1: int) -> np.ndarray:
    """image[y0:y1, x0:x1] with the parts outside the image black."""
    h, w = image.shape[:2]
    out = np.zeros((y1 - y0, x1 - x0, image.shape[2]), image.dtype)
    sx0, sy0, sx1, sy1 = max(x0, 0), max(y0, 0), min(x1, w), min(y1, h)
    out[sy0 - y0:sy1 - y0, sx0 - x0:sx1 - x0] = image[sy0:sy1, sx0:sx1]
    return out


def _area_crops(img: np.ndarray, boxes: torch.Tensor, w: int, h: int,
                size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """MTCNN's crops of ``boxes`` (clipped to the image as facenet-pytorch's ``pad`` does),
    area-resampled to size x size: (K, 3, size, size) float and the (N,) bool mask of the boxes
    with a non-empty crop. Crops of one size are gathered and resampled together; area
    resampling sums whole uint8 pixels exactly in float32, so the numbers equal one call per
    crop."""
    y, ey, x, ex = crop_bounds(boxes, w, h)
    y0, x0 = y.astype(np.int64) - 1, x.astype(np.int64) - 1
    hs, ws = ey.astype(np.int64) - y0, ex.astype(np.int64) - x0
    keep = (hs > 0) & (ws > 0)
    groups: dict[tuple[int, int], list[int]] = {}
    for i, k in enumerate(np.flatnonzero(keep)):
        groups.setdefault((int(hs[k]), int(ws[k])), []).append(i)
    y0, x0 = y0[keep].tolist(), x0[keep].tolist()
    out = torch.empty((len(y0), 3, size, size))
    for (ch, cw), at in groups.items():
        crops = np.stack([img[y0[i]:y0[i] + ch, x0[i]:x0[i] + cw] for i in at])
        out[at] = imresample(torch.from_numpy(crops).permute(0, 3, 1, 2).float(), (size, size))
    return out, torch.from_numpy(keep)


def _net_input(crops: torch.Tensor, device: torch.device) -> torch.Tensor:
    """Crops in 0..255 scaled as MTCNN's nets take them, on their device."""
    return (crops.to(device) - 127.5) * 0.0078125


def _landmarks(boxes: torch.Tensor, pts: torch.Tensor) -> torch.Tensor:
    """O-Net's (N, 10) landmark outputs, relative to the boxes it saw, as (N, 5, 2) image
    points (facenet-pytorch's mapping)."""
    wb = boxes[:, 2] - boxes[:, 0] + 1
    hb = boxes[:, 3] - boxes[:, 1] + 1
    px = wb[:, None] * pts[:, :5] + boxes[:, :1] - 1
    py = hb[:, None] * pts[:, 5:] + boxes[:, 1:2] - 1
    return torch.stack((px, py), dim=2)


def _in_chunks(net: torch.nn.Module, x: torch.Tensor, chunk: int) -> tuple:
    """``net(x)`` in chunks of ``chunk``, as facenet-pytorch runs R-Net and O-Net (512 there)."""
    outs = [net(x[i:i + chunk]) for i in range(0, len(x), chunk)]
    return tuple(torch.cat(v) for v in zip(*outs))
