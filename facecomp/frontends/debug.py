"""The --debug drawing: boxes, landmarks, face numbers and mask outlines over the output."""

from __future__ import annotations

import cv2
import numpy as np

from ..pipeline import PhotoResult

_GREEN, _GREY, _RED, _YELLOW = (40, 220, 60), (160, 160, 160), (230, 40, 40), (250, 220, 40)


def draw_debug(image: np.ndarray, result: PhotoResult,
               ages: tuple[list[float], list[float]] | None = None) -> np.ndarray:
    """A copy of ``image`` (RGB uint8) annotated with what the pipeline saw and did; ``ages``:
    each face's estimated age before and after, drawn under its box."""
    out = image.copy()
    h, w = out.shape[:2]
    thick = max(1, round(max(h, w) / 800))
    mask = result.changed_mask()
    if mask.any():
        contours, _ = cv2.findContours((mask > 0).astype(np.uint8), cv2.RETR_EXTERNAL,
                                       cv2.CHAIN_APPROX_SIMPLE)
        cv2.drawContours(out, contours, -1, _YELLOW, thick)
        inner, _ = cv2.findContours((mask >= 0.999).astype(np.uint8), cv2.RETR_EXTERNAL,
                                    cv2.CHAIN_APPROX_SIMPLE)
        cv2.drawContours(out, inner, -1, _YELLOW, 1)
    done = set(result.translated)
    for i, face in enumerate(result.faces):
        colour = _GREEN if i in done else _GREY
        x1, y1, x2, y2 = (round(v) for v in face.box)
        cv2.rectangle(out, (x1, y1), (x2, y2), colour, thick)
        r = max(1, round(face.size / 40))
        for x, y in face.landmarks:
            cv2.circle(out, (round(x), round(y)), r, _RED, -1)
        label = f"{i + 1}" + ("" if i in done else " skip")
        scale = max(0.4, face.size / 120)
        cv2.putText(out, label, (x1, max(12, y1 - 4)), cv2.FONT_HERSHEY_SIMPLEX, scale, colour,
                    thick, cv2.LINE_AA)
        under = f"{face.score:.2f}"
        if ages is not None:
            under += f" age {ages[0][i]:.0f}" + (f">{ages[1][i]:.0f}" if i in done else "")
        cv2.putText(out, under, (x1, min(h - 2, y2 + round(14 * scale))),
                    cv2.FONT_HERSHEY_SIMPLEX, scale * 0.6, colour, 1, cv2.LINE_AA)
    return out
