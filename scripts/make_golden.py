"""Regenerate tests/golden/: the shipped default model's outputs on fixed aligned crops.

Run it only when the shipped weights or the pre/post-processing change ON PURPOSE:

    .venv/bin/python scripts/make_golden.py

It aligns the faces of samples/group.jpg with the default model's template and crop size
(inputs.png), runs both generators through facecomp's Translator (A2B.png, B2A.png) and records
the model files' sha256 (meta.json), and the shipped age estimator's ages of the inputs and of
their A2B translations (ages.json). tests/test_golden.py and tests/test_age.py compare against
these.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np

from facecomp.stages.age import AgeEstimator, shipped_estimator
from facecomp.stages.align import AlignConfig, align_faces
from facecomp.checkpoint import load_generator, resolve_model
from facecomp.stages.detect import MTCNNDetector
from facecomp.io import read_image, write_image
from facecomp.stages.translate import TranslateConfig, Translator

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "tests" / "golden"


def golden_inputs(template, crop_size: int) -> np.ndarray:
    img = read_image(ROOT / "samples" / "group.jpg").rgb
    crops, _ = align_faces(img, MTCNNDetector().detect(img), AlignConfig(crop_size, template))
    return crops


def tile(crops: np.ndarray) -> np.ndarray:
    return np.concatenate(list(crops), axis=1)


def untile(strip: np.ndarray, size: int) -> np.ndarray:
    return np.stack([strip[:, i * size:(i + 1) * size] for i in range(strip.shape[1] // size)])


def main() -> None:
    meta = {}
    crops = None
    for direction in ("A2B", "B2A"):
        path = resolve_model(None, direction)
        net, info = load_generator(path)
        if crops is None:
            crops = golden_inputs(info.template, info.crop_size)
            write_image(OUT / "inputs.png", tile(crops), overwrite=True)
        out = Translator(net, TranslateConfig(device="cpu", precision="fp32"))(crops)
        write_image(OUT / f"{direction}.png", tile(out), overwrite=True)
        meta[direction] = {"file": path.name, "sha256": hashlib.sha256(path.read_bytes())
                           .hexdigest(), "crop_size": info.crop_size,
                           "template": info.template.name}
    (OUT / "meta.json").write_text(json.dumps(meta, indent=2) + "\n")
    # The shipped age estimator on the same crops and on their A2B translations.
    est_path = shipped_estimator()
    est = AgeEstimator.load(est_path)
    older = untile(read_image(OUT / "A2B.png").rgb, crops.shape[1])
    ages = {"file": est_path.name, "sha256": hashlib.sha256(est_path.read_bytes()).hexdigest(),
            "inputs": [round(float(a), 3) for a in est.predict(crops, info.template)],
            "A2B": [round(float(a), 3) for a in est.predict(older, info.template)]}
    (OUT / "ages.json").write_text(json.dumps(ages, indent=2) + "\n")
    print(f"wrote {OUT}: {len(crops)} faces")


if __name__ == "__main__":
    main()
