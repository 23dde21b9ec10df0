"""Copy a training run's generators into models/ as fp16 safetensors with shipping metadata.

    .venv/bin/python scripts/ship_model.py RUN_DIR [--name aging] [--out models]

Reads RUN_DIR/NAME.{A2B,B2A}.safetensors (written by `facecomp train`), keeps their metadata
(architecture, crop size, template, domains, direction, training step and config), adds the
description and licence of the shipped model, and writes NAME.{A2B,B2A}.safetensors in fp16
(half the size; facecomp computes in fp32 or bf16 whatever the storage).
"""

from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path

import torch

from facecomp.checkpoint import load_generator, save_generator

ROOT = Path(__file__).resolve().parent.parent
DESCRIPTION = {
    "A2B": "makes faces look older (trained on UTKFace ages 18-30 -> 55-80)",
    "B2A": "makes faces look younger (trained on UTKFace ages 55-80 -> 18-30)",
}
LICENSE = ("weights: non-commercial research use only (trained on UTKFace, whose images are "
           "licensed for non-commercial research); see models/aging.md")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("run", type=Path)
    ap.add_argument("--name", default="aging")
    ap.add_argument("--out", type=Path, default=ROOT / "models")
    args = ap.parse_args()
    for direction in ("A2B", "B2A"):
        net, info = load_generator(args.run / f"{args.name}.{direction}.safetensors")
        info = dataclasses.replace(info, description=DESCRIPTION[direction], license=LICENSE)
        dst = args.out / f"{args.name}.{direction}.safetensors"
        save_generator(dst, net, info, dtype=torch.float16, overwrite=True)
        print(f"{dst}: step {info.extra.get('step')}, {info.crop_size} px, "
              f"{sum(p.numel() for p in net.parameters()) / 1e6:.2f} M parameters")


if __name__ == "__main__":
    main()
