"""Put an input and facecomp's output side by side (for the README and `make demo`).

    python scripts/before_after.py BEFORE AFTER OUT [--width 1600]
"""

from __future__ import annotations

import argparse

import cv2
import numpy as np

from facecomp.io import read_image, write_image


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("before")
    ap.add_argument("after")
    ap.add_argument("out")
    ap.add_argument("--width", type=int, default=1600)
    a = ap.parse_args()
    before, after = read_image(a.before).rgb, read_image(a.after).rgb
    pair = np.concatenate([before, np.full((before.shape[0], 8, 3), 255, np.uint8), after], 1)
    scale = min(1.0, a.width / pair.shape[1])
    if scale < 1.0:
        pair = cv2.resize(pair, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA)
    for text, x in (("before", 10), ("after", pair.shape[1] // 2 + 10)):
        cv2.putText(pair, text, (x, 34), cv2.FONT_HERSHEY_SIMPLEX, 1.0, (255, 255, 255), 3,
                    cv2.LINE_AA)
        cv2.putText(pair, text, (x, 34), cv2.FONT_HERSHEY_SIMPLEX, 1.0, (20, 20, 20), 1,
                    cv2.LINE_AA)
    write_image(a.out, np.ascontiguousarray(pair), quality=90, overwrite=True)


if __name__ == "__main__":
    main()
