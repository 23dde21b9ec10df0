#!/usr/bin/env python3
"""Build the redistributable sample photos in ``samples/``.

The samples are montages made *only* from public-domain / CC0 portraits that
ship inside registry packages (see ``samples/PROVENANCE.md``):

* ``skimage.data.astronaut()``  - scikit-image, NASA photo of Eileen Collins
  (public domain)
* ``skimage.data.camera()``     - scikit-image, photo by Lav Varshney (CC0)
* ``matplotlib/mpl-data/sample_data/grace_hopper.jpg`` - matplotlib, US Navy
  photo of Grace Hopper (public domain)

Nothing is downloaded by this script; it runs offline.

How to run (from the repository root)::

    # 1. once, fetch the matplotlib wheel (only its grace_hopper.jpg is read;
    #    matplotlib is not installed).  This is the only step that needs PyPI.
    .venv/bin/pip download --no-deps matplotlib==3.11.2 -d /tmp/mpl

    # 2. build samples/group.jpg and samples/portrait.jpg, and check every
    #    intended face with facenet-pytorch's MTCNN (exit status 1 on failure)
    .venv/bin/python scripts/make_sample.py \
        --mpl-wheel '/tmp/mpl/matplotlib-3.11.2-*.whl' --verify

Options: ``--grace-hopper PATH`` instead of ``--mpl-wheel`` (an already
extracted ``grace_hopper.jpg``; with neither, an installed matplotlib's copy
is used if there is one); ``--out DIR`` (default: samples/); ``--preview
FILE.png`` (a PNG copy of group.jpg for viewing).  Other matplotlib versions
ship the same grace_hopper.jpg; the script warns if a source file's sha256
differs from the one the committed samples were made from.

Requirements: numpy, Pillow, scipy and scikit-image (its wheel ships
astronaut.png and camera.png; no data download happens); facenet-pytorch only
for ``--verify``.  Made with Pillow 13.0.0, numpy 2.4.6, scipy 1.17.1,
scikit-image 0.26.0; with those versions the output is byte-identical on every
run (fixed RNG seed, nothing else random).
"""

from __future__ import annotations

import argparse
import glob
import hashlib
import io
import math
import sys
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

ROOT = Path(__file__).resolve().parent.parent
HOPPER_IN_WHEEL = "matplotlib/mpl-data/sample_data/grace_hopper.jpg"
# sha256 of the source files the committed samples were made from
SOURCE_SHA256 = {
    "hopper": "a8ca6d734765703b09728ab47fe59f473d93ae3967fc24c7c0288c3c7adb7130",
    "astronaut": "88431cd9653ccd539741b555fb0a46b61558b301d4110412b5bc28b5e3ea6cb5",
    "camera": "b0793d2adda0fa6ae899c03989482bff9a42d3d5690fc7e3648f2795d730c23a",
}


def check_sha(name: str, data: bytes) -> None:
    got = hashlib.sha256(data).hexdigest()
    if got != SOURCE_SHA256[name]:
        print(f"warning: {name} source differs from the one samples/ was made from "
              f"(sha256 {got})", file=sys.stderr)

CANVAS = (1440, 960)
SEED = 20240611
JPEG_QUALITY = 92


# --------------------------------------------------------------------------
# source images
# --------------------------------------------------------------------------

def load_grace_hopper(mpl_wheel: str | None, path: str | None) -> Image.Image:
    if path:
        data = Path(path).read_bytes()
    elif mpl_wheel:
        matches = sorted(glob.glob(mpl_wheel)) or [mpl_wheel]
        with zipfile.ZipFile(matches[-1]) as zf:
            data = zf.read(HOPPER_IN_WHEEL)
    else:  # fall back to an installed matplotlib, if any
        try:
            from matplotlib import cbook

            data = Path(cbook.get_sample_data("grace_hopper.jpg", asfileobj=False)).read_bytes()
        except Exception as exc:  # depends on the environment
            sys.exit("grace_hopper.jpg not found: pass --mpl-wheel WHEEL or "
                     f"--grace-hopper PATH ({exc})")
    check_sha("hopper", data)
    return Image.open(io.BytesIO(data)).convert("RGB")


def load_skimage(name: str) -> Image.Image:
    import skimage

    # astronaut.png / camera.png ship inside the scikit-image wheel (no download);
    # this is the same file that skimage.data.astronaut() / camera() read.
    data = (Path(skimage.__file__).parent / "data" / f"{name}.png").read_bytes()
    check_sha(name, data)
    return Image.open(io.BytesIO(data)).convert("RGB")


def load_sources(args) -> dict[str, Image.Image]:
    return {
        "astronaut": load_skimage("astronaut"),
        "camera": load_skimage("camera"),
        "hopper": load_grace_hopper(args.mpl_wheel, args.grace_hopper),
    }


# Face centres in the *source* images (centre of the MTCNN box measured on the
# untouched originals: astronaut (181,62,267,172); camera (199,118,254,192);
# grace_hopper (174,119,355,340)).  Used to place tiles and for --verify.
FACE_CENTRE = {
    "astronaut": (224.0, 117.0),
    "camera": (226.5, 155.0),
    "hopper": (264.5, 229.5),
}
FACE_HEIGHT = {"astronaut": 110.0, "camera": 74.0, "hopper": 221.0}


# --------------------------------------------------------------------------
# backdrop
# --------------------------------------------------------------------------

def smooth_noise(rng, size, cells, blur):
    """Unit-variance low-frequency noise: a coarse random grid, blurred, upsampled."""
    from scipy.ndimage import gaussian_filter  # scipy comes with scikit-image

    w, h = size
    small = rng.standard_normal((cells[1] * 8, cells[0] * 8))
    small = gaussian_filter(small, blur, mode="reflect").astype(np.float32)
    a = np.asarray(Image.fromarray(small, mode="F").resize((w, h), Image.BICUBIC))
    return (a - a.mean()) / (a.std() + 1e-6)


def make_backdrop(rng) -> Image.Image:
    """A mottled photo-studio backdrop: graded, softly clouded, vignetted."""
    w, h = CANVAS
    y = np.linspace(0.0, 1.0, h, dtype=np.float32)[:, None, None]
    top = np.array([118, 124, 130], np.float32)      # cool grey
    bottom = np.array([178, 164, 146], np.float32)   # warm grey-beige
    img = top * (1 - y) + bottom * y
    img = np.broadcast_to(img, (h, w, 3)).copy()

    clouds = smooth_noise(rng, CANVAS, (9, 6), 6)
    detail = smooth_noise(rng, CANVAS, (36, 24), 4)
    tint = smooth_noise(rng, CANVAS, (5, 4), 8)
    img += (clouds * 16 + detail * 5)[..., None]
    img += tint[..., None] * np.array([5, 0, -5], np.float32)

    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    r = np.hypot((xx - w * 0.5) / (w * 0.62), (yy - h * 0.45) / (h * 0.70))
    img *= (1.0 - 0.30 * np.clip(r, 0, 1.4) ** 2)[..., None]
    return Image.fromarray(np.clip(img, 0, 255).astype(np.uint8), "RGB")


# --------------------------------------------------------------------------
# tiles
# --------------------------------------------------------------------------

@dataclass
class Placement:
    name: str                 # label used in reports
    src: str                  # key into the sources dict
    crop: tuple               # (left, top, right, bottom) in the source
    face_h: float             # wanted face height on the canvas (px)
    centre: tuple             # where the face centre lands on the canvas
    mirror: bool = False
    angle: float = 0.0        # degrees, counter-clockwise
    feather: int = 28         # soft edge width (px, after scaling)
    tone: str = "none"        # "none" | "warm" | "cool" | "grey"


def soft_mask(size, feather):
    w, h = size
    m = Image.new("L", size, 0)
    ImageDraw.Draw(m).rounded_rectangle(
        (feather, feather, w - 1 - feather, h - 1 - feather),
        radius=feather * 2, fill=255)
    return m.filter(ImageFilter.GaussianBlur(feather / 2.0))


def grade(img: Image.Image, tone: str) -> Image.Image:
    if tone == "none":
        return img
    if tone == "grey":  # a black-and-white print
        return img.convert("L").convert("RGB")
    a = np.asarray(img, np.float32)
    gain = {"warm": (1.05, 1.0, 0.93), "cool": (0.95, 0.99, 1.05)}[tone]
    return Image.fromarray(np.clip(a * np.array(gain, np.float32), 0, 255).astype(np.uint8))


def make_tile(src: Image.Image, p: Placement):
    """Return (RGBA tile, face centre inside the tile)."""
    scale = p.face_h / FACE_HEIGHT[p.src]
    l, t, r, b = p.crop
    tile = src.crop(p.crop)
    size = (round((r - l) * scale), round((b - t) * scale))
    tile = grade(tile.resize(size, Image.LANCZOS), p.tone)
    fx = (FACE_CENTRE[p.src][0] - l) * scale
    fy = (FACE_CENTRE[p.src][1] - t) * scale
    if p.mirror:
        tile = tile.transpose(Image.FLIP_LEFT_RIGHT)
        fx = size[0] - fx
    tile = tile.convert("RGBA")
    tile.putalpha(soft_mask(size, p.feather))
    if p.angle:
        w0, h0 = tile.size
        tile = tile.rotate(p.angle, resample=Image.BICUBIC, expand=True)
        w1, h1 = tile.size
        th = math.radians(p.angle)
        dx, dy = fx - w0 / 2, fy - h0 / 2
        fx = w1 / 2 + dx * math.cos(th) + dy * math.sin(th)
        fy = h1 / 2 - dx * math.sin(th) + dy * math.cos(th)
    return tile, (fx, fy)


# Back row first (smaller, higher), then the front row on top.
LAYOUT = [
    # back row
    Placement("collins-mirrored", "astronaut", (120, 20, 330, 250), 92, (175, 250),
              mirror=True, feather=24, tone="warm"),
    Placement("cameraman", "camera", (140, 60, 330, 300), 100, (585, 228), feather=22),
    Placement("hopper-rotated", "hopper", (70, 40, 470, 470), 128, (1150, 250),
              angle=13.0, feather=24, tone="cool"),
    # front row
    Placement("collins", "astronaut", (70, 0, 380, 380), 165, (330, 565), feather=30),
    Placement("hopper", "hopper", (40, 20, 500, 600), 235, (835, 610), feather=34),
    Placement("hopper-cut-by-border", "hopper", (80, 60, 440, 460), 150, (1390, 585),
              feather=20, tone="grey"),
]


def grain(img: Image.Image, rng, amount=2.5) -> Image.Image:
    a = np.asarray(img, np.float32)
    n = rng.standard_normal(a.shape[:2]).astype(np.float32)[..., None] * amount
    return Image.fromarray(np.clip(a + n, 0, 255).astype(np.uint8), "RGB")


def build_group(sources, rng):
    canvas = make_backdrop(rng)
    faces = []
    for p in LAYOUT:
        tile, (fx, fy) = make_tile(sources[p.src], p)
        ox, oy = round(p.centre[0] - fx), round(p.centre[1] - fy)
        canvas.paste(tile, (ox, oy), tile)
        faces.append((p.name, p.centre, p.face_h))
    return grain(canvas, rng), faces


def build_portrait(sources):
    # a plain single-face sample: the astronaut photo, unchanged apart from JPEG
    return sources["astronaut"], [("collins", FACE_CENTRE["astronaut"], FACE_HEIGHT["astronaut"])]


# --------------------------------------------------------------------------
# verification
# --------------------------------------------------------------------------

def verify(path: Path, faces) -> bool:
    from facenet_pytorch import MTCNN

    m = MTCNN(keep_all=True, device="cpu")
    boxes, probs, _ = m.detect(Image.open(path).convert("RGB"), landmarks=True)
    boxes = [] if boxes is None else boxes
    ok = True
    used = set()
    print(f"{path.name}: {len(boxes)} detection(s), {len(faces)} intended face(s)")
    for name, (cx, cy), _h in faces:
        hit = [i for i, b in enumerate(boxes) if b[0] <= cx <= b[2] and b[1] <= cy <= b[3]]
        if len(hit) != 1:
            print(f"  MISSING/AMBIGUOUS {name} at ({cx:.0f},{cy:.0f}): hits={hit}")
            ok = False
            continue
        i = hit[0]
        used.add(i)
        b = boxes[i]
        good = probs[i] > 0.95
        ok &= bool(good)
        print(f"  {name:22s} p={probs[i]:.5f} box=({b[0]:.0f},{b[1]:.0f},{b[2]:.0f},{b[3]:.0f}) "
              f"{b[2]-b[0]:.0f}x{b[3]-b[1]:.0f}{'' if good else '  LOW'}")
    for i, b in enumerate(boxes):
        if i not in used:
            ok = False
            print(f"  FALSE DETECTION p={probs[i]:.5f} box=({b[0]:.0f},{b[1]:.0f},{b[2]:.0f},{b[3]:.0f})")
    print("  OK" if ok else "  FAILED")
    return ok


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--mpl-wheel", help="path (or glob) of a matplotlib wheel")
    ap.add_argument("--grace-hopper", help="path of an extracted grace_hopper.jpg")
    ap.add_argument("--out", default=str(ROOT / "samples"), help="output folder")
    ap.add_argument("--preview", help="also write a PNG copy of group.jpg here")
    ap.add_argument("--verify", action="store_true",
                    help="run facenet-pytorch MTCNN and check every intended face")
    args = ap.parse_args(argv)

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    sources = load_sources(args)
    rng = np.random.default_rng(SEED)

    group, group_faces = build_group(sources, rng)
    group.save(out / "group.jpg", quality=JPEG_QUALITY, optimize=True)
    portrait, portrait_faces = build_portrait(sources)
    portrait.save(out / "portrait.jpg", quality=JPEG_QUALITY, optimize=True)
    if args.preview:
        Image.open(out / "group.jpg").save(args.preview)
    for f in ("group.jpg", "portrait.jpg"):
        print(f"wrote {out / f} ({(out / f).stat().st_size // 1024} KiB)")

    if args.verify:
        ok = verify(out / "group.jpg", group_faces)
        ok &= verify(out / "portrait.jpg", portrait_faces)
        return 0 if ok else 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
