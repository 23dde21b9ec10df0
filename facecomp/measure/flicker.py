"""How much a video's change flickers: the instrument behind ``--steady`` (see docs/flicker.md).

For input frames I_t and output frames O_t the change is d_t = O_t - I_t. Where the face only
moves, the change on frame t should be the change of frame t-1 carried along that motion; what
is left over is flicker:

    jump_t = lowpass(d_t - warp(d_{t-1}, flow of the input from t-1 to t))
    flicker = sum over t >= 1 of mean |jump_t| / sum over t >= 1 of mean |d_t|, inside the faces

The flow is the input's own (DIS optical flow, computed around each face), so head motion is
compensated and only a change that comes and goes counts. The low-pass is a Gaussian whose width
is a fixed share of the face (``SIGMA_SHARE`` of its box width): blotches, not grain, and the
same at any resolution. A filter that treats every frame alike scores near 0 where the flow is
right (a gamma curve: 0.004 on the shared selfie clip, 0.02 on the street clip, where faces are
small and blurred by motion; an unsharp mask, all edges: 0.012 and 0.16); a generator whose
blotches come and go scores near 1. Figures and their command: docs/flicker.md.
Pure NumPy/OpenCV: it reads frames and masks, it does not know where they came from.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Iterable, Iterator, Sequence

import cv2
import numpy as np

#: The low-pass's Gaussian sigma as a share of the face box's width.
SIGMA_SHARE = 1 / 48
#: How far around each face box the flow is computed (share of its size, each side).
FLOW_MARGIN = 0.25


@dataclass
class FlickerReport:
    """flicker: sum of mean |jump| over sum of mean |d| (see the module); frames: pairs of
    frames measured; faces: face-frames measured; change: mean |d| inside a face (levels; a
    change near 0 makes the ratio meaningless); per_frame: each pair's mean |jump| / mean |d|."""

    flicker: float = 0.0
    frames: int = 0
    faces: int = 0
    change: float = 0.0
    per_frame: list[float] = field(default_factory=list)

    def as_dict(self) -> dict:
        return {"flicker": round(self.flicker, 4), "frames": self.frames, "faces": self.faces,
                "change": round(self.change, 3)}


Box = tuple[float, float, float, float]


def flicker(inputs: Iterable[np.ndarray], outputs: Iterable[np.ndarray],
            boxes: Iterable[Sequence[Box]], sigma_share: float = SIGMA_SHARE) -> FlickerReport:
    """The flicker of ``outputs`` against ``inputs`` (RGB uint8 frames of one size, in order),
    inside the faces given per frame as boxes (x1, y1, x2, y2; the filled ellipse inscribed
    in each box is the face)."""
    dis = cv2.DISOpticalFlow_create(cv2.DISOPTICAL_FLOW_PRESET_MEDIUM)
    jump_sum = change_sum = 0.0
    report = FlickerReport()
    prev_gray = prev_d = None
    for rgb_in, rgb_out, frame_boxes in zip(inputs, outputs, boxes):
        if rgb_in.shape != rgb_out.shape:
            raise ValueError(f"input and output frames differ in size: {rgb_in.shape} and "
                             f"{rgb_out.shape}")
        gray = cv2.cvtColor(rgb_in, cv2.COLOR_RGB2GRAY)
        d = rgb_out.astype(np.float32) - rgb_in.astype(np.float32)
        if prev_gray is not None and frame_boxes:
            j_num = d_num = 0.0
            n = 0
            for box in frame_boxes:
                got = _face_terms(gray, prev_gray, d, prev_d, box, dis, sigma_share)
                j_num, d_num = j_num + got[0], d_num + got[1]
                n += got[1] > 0
            if d_num > 0:
                jump_sum += j_num
                change_sum += d_num
                report.frames += 1
                report.faces += n
                report.per_frame.append(j_num / d_num)
        prev_gray, prev_d = gray, d
    report.flicker = jump_sum / change_sum if change_sum > 0 else 0.0
    report.change = change_sum / max(report.faces, 1)
    return report


def _face_terms(gray: np.ndarray, prev_gray: np.ndarray, d: np.ndarray, prev_d: np.ndarray,
                box: Box, dis, sigma_share: float) -> tuple[float, float]:
    """mean |jump| and mean |d| (levels, over the face's ellipse and the 3 channels) of one face."""
    h, w = gray.shape
    x1, y1, x2, y2 = box
    bw, bh = x2 - x1, y2 - y1
    if bw < 4 or bh < 4:
        return 0.0, 0.0
    mx, my = FLOW_MARGIN * bw, FLOW_MARGIN * bh
    rx0, ry0 = max(int(x1 - mx), 0), max(int(y1 - my), 0)
    rx1, ry1 = min(int(np.ceil(x2 + mx)), w), min(int(np.ceil(y2 + my)), h)
    if rx1 - rx0 < 8 or ry1 - ry0 < 8:
        return 0.0, 0.0
    roi = (slice(ry0, ry1), slice(rx0, rx1))
    # flow from frame t to t-1: where each pixel of frame t was on frame t-1
    flow = dis.calc(np.ascontiguousarray(gray[roi]), np.ascontiguousarray(prev_gray[roi]), None)
    gy, gx = np.mgrid[ry0:ry1, rx0:rx1].astype(np.float32)
    carried = cv2.remap(prev_d, gx + flow[..., 0], gy + flow[..., 1], cv2.INTER_LINEAR,
                        borderMode=cv2.BORDER_REPLICATE)
    sigma = max(sigma_share * bw, 0.5)
    jump = cv2.GaussianBlur(d[roi] - carried, (0, 0), sigma)
    mask = np.zeros(gray[roi].shape, np.uint8)
    centre = ((x1 + x2) / 2 - rx0, (y1 + y2) / 2 - ry0)
    cv2.ellipse(mask, (centre, (bw, bh), 0.0), 1, -1)
    inside = mask.astype(bool)
    n = int(inside.sum())
    if n == 0:
        return 0.0, 0.0
    return float(np.abs(jump[inside]).mean()), float(np.abs(d[roi][inside]).mean())


def detected_boxes(frames: Iterable[np.ndarray], detector) -> Iterator[list[Box]]:
    """Each frame's face boxes from ``detector`` (anything with ``detect(rgb) -> [Face]``)."""
    for rgb in frames:
        yield [tuple(float(v) for v in f.box) for f in detector.detect(rgb)]
