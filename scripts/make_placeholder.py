"""Fit the PLACEHOLDER default model shipped until the trained young<->old model exists.

It is NOT an age model: A2B boosts fine skin detail (unsharp mask), B2A smooths skin (bilateral
filter). A small facecomp ResnetGenerator (ngf 16, 4 blocks, 128 px crops) is fitted to each
filter with an L1 loss on random crops of public-domain images that ship with scikit-image and of
samples/, so it is reproducible offline in about ten minutes on a 2-core CPU:

    .venv/bin/python scripts/make_placeholder.py            # writes models/placeholder.*
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import cv2
import numpy as np
import torch
from skimage import data

from facecomp.checkpoint import ModelInfo, save_generator
from facecomp.geometry import FACECOMP_V1
from facecomp.io import read_image
from facecomp.networks import ResnetGenerator
from facecomp.translate import to_tensor

ROOT = Path(__file__).resolve().parent.parent
SIZE, STEPS, BATCH = 128, 1500, 4
ARCH = {"ngf": 16, "n_blocks": 4}


def detail_boost(img: np.ndarray) -> np.ndarray:
    f = img.astype(np.float32)
    return np.clip(f + 1.2 * (f - cv2.GaussianBlur(f, (0, 0), 1.6)) + 0.5, 0, 255).astype(np.uint8)


def smooth(img: np.ndarray) -> np.ndarray:
    return cv2.bilateralFilter(img, d=9, sigmaColor=35, sigmaSpace=5)


def sources() -> list[np.ndarray]:
    imgs = [data.astronaut(), data.coffee(), data.chelsea(), data.rocket()]
    imgs += [read_image(p).rgb for p in sorted((ROOT / "samples").glob("*.jpg"))]
    return [np.ascontiguousarray(i[..., :3]) for i in imgs]


def batches(rng: np.random.Generator, imgs: list[np.ndarray]):
    while True:
        out = []
        for _ in range(BATCH):
            img = imgs[rng.integers(len(imgs))]
            s = rng.uniform(0.5, 1.5)
            small = cv2.resize(img, None, fx=s, fy=s, interpolation=cv2.INTER_AREA)
            if min(small.shape[:2]) < SIZE:
                small = cv2.resize(img, (max(SIZE, img.shape[1]), max(SIZE, img.shape[0])))
            y = rng.integers(small.shape[0] - SIZE + 1)
            x = rng.integers(small.shape[1] - SIZE + 1)
            out.append(small[y:y + SIZE, x:x + SIZE])
        yield np.stack(out)


def fit(target, seed: int) -> ResnetGenerator:
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    net = ResnetGenerator(**ARCH)
    opt = torch.optim.Adam(net.parameters(), lr=1e-3, betas=(0.5, 0.999))
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, STEPS)
    gen = batches(rng, sources())
    t0 = time.time()
    for step in range(STEPS):
        crops = next(gen)
        x = to_tensor(crops, torch.device("cpu"))
        y = to_tensor(np.stack([target(c) for c in crops]), torch.device("cpu"))
        loss = (net(x) - y).abs().mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
        if step % 100 == 0 or step == STEPS - 1:
            print(f"  step {step:4d}  L1 {loss.item():.4f}  {time.time() - t0:.0f} s", flush=True)
    return net.eval()


def main() -> None:
    out_dir = Path(sys.argv[1]) if len(sys.argv) > 1 else ROOT / "models"
    out_dir.mkdir(parents=True, exist_ok=True)
    domains = {"A": "smooth skin", "B": "detailed skin"}
    desc = ("PLACEHOLDER, not an age model: A2B boosts skin detail, B2A smooths it. Fitted in "
            "minutes by scripts/make_placeholder.py to exercise the pipeline until the trained "
            "young<->old model ships.")
    for direction, target, seed in (("A2B", detail_boost, 1), ("B2A", smooth, 2)):
        print(f"fitting {direction} ...", flush=True)
        net = fit(target, seed)
        info = ModelInfo(name="placeholder", architecture="resnet_generator", arch_args=ARCH,
                         crop_size=SIZE, template=FACECOMP_V1, domains=domains,
                         direction=direction, description=desc, license="MIT",
                         extra={"steps": STEPS, "batch": BATCH, "trainer": "make_placeholder.py"})
        save_generator(out_dir / f"placeholder.{direction}.safetensors", net, info,
                       dtype=torch.float16)
    print(f"wrote {out_dir}/placeholder.A2B.safetensors and .B2A.safetensors")


if __name__ == "__main__":
    main()
