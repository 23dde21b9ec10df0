"""Train facecomp's occlusion model (facecomp/occlusion.py) on aligned face crops with synthetic
occluders pasted over them, where the true mask is known.

    .venv/bin/python scripts/train_occlusion.py CROPS_DIR --out RUN_DIR [--steps 3000]

CROPS_DIR: crops made by `facecomp prepare` with the default model's template (facecomp-tight),
e.g. all of UTKFace (`make occlusion-model` does both). Writes RUN_DIR/occlusion.safetensors
(fp32), RUN_DIR/stats.jsonl and RUN_DIR/preview.png (held-out crops: input | truth | predicted).

Occluders (see `synthesize`): textured shapes cut from other crops (microphones, cups, phones,
papers), skin-coloured hands with fingers entering from the crop's edge, hair strands, glasses
frames (sometimes dark lenses) and surgical masks; 13 % of samples have none, so the model
learns to leave a clean face alone.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path

import cv2
import numpy as np
import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from facecomp.geometry import template_by_name  # noqa: E402
from facecomp.stages.occlusion import (OcclusionInfo, OcclusionNet, save_occlusion, to_input)  # noqa: E402

S = 64  # the network's input
HI = 2 * S  # occluders are drawn at 2x and area-averaged down: soft, anti-aliased edges


def load_crops(folder: Path, limit: int | None) -> np.ndarray:
    files = sorted(p for p in folder.iterdir() if p.suffix.lower() in (".png", ".jpg"))
    if limit:
        files = files[:limit]
    out = np.empty((len(files), S, S, 3), np.uint8)
    for k, p in enumerate(files):
        img = cv2.imread(str(p), cv2.IMREAD_COLOR)
        out[k] = cv2.cvtColor(cv2.resize(img, (S, S), interpolation=cv2.INTER_AREA),
                              cv2.COLOR_BGR2RGB)
        if k % 2000 == 0:
            print(f"loading crops {k}/{len(files)}", file=sys.stderr, flush=True)
    return out


def _texture(rng: np.random.Generator, pool: np.ndarray) -> np.ndarray:
    """A (HI, HI, 3) float texture: part of another crop, scaled, colour-jittered, or a solid
    colour with a shading gradient."""
    if rng.random() < 0.65:
        src = pool[rng.integers(len(pool))].astype(np.float32)
        z = rng.uniform(1.0, 3.0)
        side = max(8, int(S / z))
        x, y = rng.integers(0, S - side + 1, size=2)
        t = cv2.resize(src[y:y + side, x:x + side], (HI, HI), interpolation=cv2.INTER_LINEAR)
        t = t * rng.uniform(0.5, 1.4, 3) + rng.uniform(-40, 40, 3)
    else:
        colour = rng.uniform(0, 255, 3)
        if rng.random() < 0.4:
            colour = np.full(3, rng.uniform(0, 60)) if rng.random() < 0.5 else \
                np.full(3, rng.uniform(180, 255))
        t = np.ones((HI, HI, 3), np.float32) * colour
    ys = np.linspace(-1, 1, HI, dtype=np.float32)[:, None, None]
    t = t * (1 + rng.uniform(-0.35, 0.35) * ys) + rng.normal(0, rng.uniform(0, 8), (HI, HI, 3))
    return np.clip(t, 0, 255).astype(np.float32)


def _skin(rng: np.random.Generator, pool: np.ndarray, own: np.ndarray) -> np.ndarray:
    """A skin texture from the cheeks of this face (a person's hands have their face's tone,
    so the model must learn shape and edges, not a pasted colour) or of another one."""
    src = (own if rng.random() < 0.6 else pool[rng.integers(len(pool))]).astype(np.float32)
    c = src[int(0.55 * S):int(0.75 * S), int(0.2 * S):int(0.45 * S)]
    t = cv2.resize(c, (HI, HI), interpolation=cv2.INTER_CUBIC)
    t = t * rng.uniform(0.75, 1.2) + rng.normal(0, 3, (HI, HI, 3))
    ys = np.linspace(-1, 1, HI, dtype=np.float32)[:, None, None]
    xs = np.linspace(-1, 1, HI, dtype=np.float32)[None, :, None]
    return np.clip(t * (1 + 0.25 * rng.uniform(-1, 1) * ys + 0.25 * rng.uniform(-1, 1) * xs),
                   0, 255).astype(np.float32)


def _rot(pts: np.ndarray, angle: float, centre: np.ndarray) -> np.ndarray:
    c, s = math.cos(angle), math.sin(angle)
    return (pts - centre) @ np.array([[c, -s], [s, c]]).T + centre


def _hand(rng, canvas):
    """A palm and four or five fingers entering from an edge, drawn into canvas (HI, HI)."""
    edge = rng.choice(["bottom", "left", "right", "bottom", "top"])
    reach = rng.uniform(0.25, 0.7) * HI  # how far into the crop the fingertips come
    width = rng.uniform(0.25, 0.45) * HI
    along = rng.uniform(0.2, 0.8) * HI
    # build pointing "up" from the bottom edge, then rotate into place
    base = np.array([along, HI + 0.1 * HI])
    palm_h = 0.55 * reach
    cv2.ellipse(canvas, (int(base[0]), int(HI - palm_h * 0.2)),
                (int(width / 2), int(palm_h)), 0, 0, 360, 1.0, -1)
    n = rng.integers(3, 6)
    tip = HI - reach
    for k in range(n):
        x = base[0] - width / 2 + (k + 0.5) * width / n
        fw = max(2, int(width / n * rng.uniform(0.7, 0.95)))
        y0 = HI - palm_h * 0.8
        y1 = tip + rng.uniform(0, 0.2) * reach
        tilt = rng.uniform(-0.25, 0.25)
        end = (int(x + tilt * (y0 - y1)), int(y1))
        cv2.line(canvas, (int(x), int(y0)), end, 1.0, fw, cv2.LINE_AA)
        cv2.circle(canvas, end, fw // 2, 1.0, -1, cv2.LINE_AA)  # a rounded fingertip
    if edge != "bottom":
        k = {"left": 3, "top": 2, "right": 1}[edge]
        canvas[:] = np.rot90(canvas, k)


def _object(rng, canvas):
    """A polygon, ellipse or capsule (microphone, cup, phone, paper) from anywhere."""
    kind = rng.integers(3)
    if kind == 0:
        n = rng.integers(3, 8)
        c = rng.uniform(0.1, 0.9, 2) * HI
        r = rng.uniform(0.1, 0.35) * HI
        ang = np.sort(rng.uniform(0, 2 * math.pi, n))
        pts = c + np.stack([np.cos(ang), np.sin(ang)], 1) * r * rng.uniform(0.5, 1.3, (n, 1))
        cv2.fillPoly(canvas, [pts.astype(np.int32)], 1.0, cv2.LINE_AA)
    elif kind == 1:
        c = rng.uniform(0.0, 1.0, 2) * HI
        axes = (rng.uniform(0.08, 0.35) * HI, rng.uniform(0.08, 0.35) * HI)
        cv2.ellipse(canvas, (int(c[0]), int(c[1])), (int(axes[0]), int(axes[1])),
                    rng.uniform(0, 180), 0, 360, 1.0, -1, cv2.LINE_AA)
    else:  # a capsule from outside the crop (a microphone and its handle)
        a = rng.uniform(0, 1, 2) * HI
        side = rng.integers(4)
        b = [np.array([rng.uniform(0, HI), HI * 1.2]), np.array([-0.2 * HI, rng.uniform(0, HI)]),
             np.array([1.2 * HI, rng.uniform(0, HI)]), np.array([rng.uniform(0, HI), -0.2 * HI])][side]
        cv2.line(canvas, tuple(int(v) for v in a), tuple(int(v) for v in b), 1.0,
                 int(rng.uniform(0.06, 0.2) * HI), cv2.LINE_AA)
        cv2.circle(canvas, tuple(int(v) for v in a), int(rng.uniform(0.08, 0.2) * HI), 1.0, -1,
                   cv2.LINE_AA)


def _hair(rng, canvas):
    for _ in range(rng.integers(3, 16)):
        p0 = rng.uniform(-0.1, 1.1, 2) * HI
        p1 = p0 + rng.normal(0, 0.25, 2) * HI
        p2 = p1 + rng.normal(0, 0.25, 2) * HI
        t = np.linspace(0, 1, 24)[:, None]
        pts = ((1 - t) ** 2 * p0 + 2 * (1 - t) * t * p1 + t ** 2 * p2).astype(np.int32)
        cv2.polylines(canvas, [pts], False, 1.0, int(rng.integers(2, 7)), cv2.LINE_AA)


def _glasses(rng, canvas, eyes):
    """Frames around the eyes (and sometimes dark lenses): returns whether lenses are dark."""
    dark = rng.random() < 0.35
    t = int(rng.integers(4, 14))
    w, h = rng.uniform(0.13, 0.2) * HI, rng.uniform(0.08, 0.14) * HI
    for e in eyes:
        c = (int(e[0]), int(e[1] + rng.uniform(-0.02, 0.03) * HI))
        box = ((c[0], c[1]), (2 * w, 2 * h), 0)
        cv2.ellipse(canvas, box, 1.0, -1 if dark else t, cv2.LINE_AA)
    y = int(eyes[:, 1].mean())
    cv2.line(canvas, (int(eyes[0, 0] + w), y), (int(eyes[1, 0] - w), y), 1.0, t, cv2.LINE_AA)
    cv2.line(canvas, (int(eyes[0, 0] - w), y), (0, y + int(rng.uniform(-0.05, 0.05) * HI)),
             1.0, t, cv2.LINE_AA)
    cv2.line(canvas, (int(eyes[1, 0] + w), y), (HI, y + int(rng.uniform(-0.05, 0.05) * HI)),
             1.0, t, cv2.LINE_AA)
    return dark


def _face_mask(rng, canvas, pts):
    nose, mouth = pts[2], pts[3:].mean(0)
    top = nose[1] - rng.uniform(0.0, 0.08) * HI
    left, right = pts[0, 0] - 0.18 * HI, pts[1, 0] + 0.18 * HI
    chin = mouth[1] + rng.uniform(0.15, 0.25) * HI
    poly = np.array([[left, top + 0.05 * HI], [nose[0], top], [right, top + 0.05 * HI],
                     [right + 0.03 * HI, mouth[1]], [nose[0], chin], [left - 0.03 * HI, mouth[1]]])
    cv2.fillPoly(canvas, [poly.astype(np.int32)], 1.0, cv2.LINE_AA)


def synthesize(face: np.ndarray, pool: np.ndarray, rng: np.random.Generator,
               landmarks: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """One training pair: the face with 0..2 occluders over it, and the occluder mask."""
    img = face.astype(np.float32)
    if rng.random() < 0.5:
        img = img[:, ::-1]
    img = np.clip(img * rng.uniform(0.7, 1.25) + rng.uniform(-20, 20), 0, 255)
    mask = np.zeros((S, S), np.float32)
    if rng.random() < 0.13:
        return img.astype(np.uint8), mask
    pts = landmarks * HI
    for _ in range(1 if rng.random() < 0.75 else 2):
        kind = rng.choice(["object", "hand", "hair", "glasses", "mask"],
                          p=[0.34, 0.3, 0.13, 0.13, 0.1])
        canvas = np.zeros((HI, HI), np.float32)
        if kind == "object":
            _object(rng, canvas)
            tex = _texture(rng, pool)
        elif kind == "hand":
            _hand(rng, canvas)
            tex = _skin(rng, pool, face)
            edge = cv2.GaussianBlur(canvas, (0, 0), 2.0)  # darker near its outline
            tex = tex * (0.75 + 0.25 * np.clip(edge * 2 - 0.6, 0, 1))[..., None]
        elif kind == "hair":
            _hair(rng, canvas)
            tone = rng.choice([20, 45, 90, 170]) * rng.uniform(0.8, 1.2)
            tex = np.clip(np.ones((HI, HI, 3), np.float32) * tone * np.array([1.0, 0.85, 0.7])
                          + rng.normal(0, 10, (HI, HI, 3)), 0, 255).astype(np.float32)
        elif kind == "glasses":
            _glasses(rng, canvas, pts[:2])
            tex = np.clip(np.ones((HI, HI, 3), np.float32) * rng.uniform(0, 120, 3)
                          + rng.normal(0, 6, (HI, HI, 3)), 0, 255).astype(np.float32)
        else:
            _face_mask(rng, canvas, pts)
            colour = [np.array([170, 200, 225]), np.array([235, 235, 235]),
                      np.array([30, 30, 35]), np.array([150, 160, 170]),
                      rng.uniform(40, 230, 3)][rng.integers(5)]
            tex = np.ones((HI, HI, 3), np.float32) * colour * rng.uniform(0.75, 1.1)
            ys = np.arange(HI, dtype=np.float32)[:, None, None]
            tex = tex * (1 - 0.12 * (np.sin(ys / rng.uniform(3, 8)) > 0.6))  # pleats
            tex = tex * (1 + rng.uniform(-0.3, 0.3) * np.linspace(-1, 1, HI)[None, :, None])
            tex = 0.8 * tex + 0.2 * _texture(rng, pool) if rng.random() < 0.4 else tex
            tex = np.clip(tex + rng.normal(0, 5, (HI, HI, 3)), 0, 255).astype(np.float32)
            for side in (-1, 1):  # the straps to the ears
                y = int(pts[2, 1] + rng.uniform(-0.05, 0.1) * HI)
                x = int(pts[0, 0] - 0.18 * HI) if side < 0 else int(pts[1, 0] + 0.18 * HI)
                cv2.line(canvas, (x, y), (0 if side < 0 else HI, y - int(0.1 * HI)), 1.0,
                         2, cv2.LINE_AA)
        a = cv2.resize(canvas, (S, S), interpolation=cv2.INTER_AREA)
        t = cv2.resize(tex, (S, S), interpolation=cv2.INTER_AREA)
        if rng.random() < 0.3:  # a soft shadow beside the occluder (not labelled)
            sh = cv2.GaussianBlur(a, (0, 0), 2.0)
            sh = np.roll(sh, rng.integers(-3, 4, 2), axis=(0, 1))
            img = img * (1 - 0.35 * sh[..., None])
        img = img * (1 - a[..., None]) + t * a[..., None]
        mask = np.maximum(mask, a)
    if rng.random() < 0.3:  # photo degradations, applied to everything
        img = cv2.GaussianBlur(img, (0, 0), rng.uniform(0.3, 1.2))
    if rng.random() < 0.3:
        img = img + rng.normal(0, rng.uniform(2, 8), img.shape)
    return np.clip(img + 0.5, 0, 255).astype(np.uint8), mask


def batch(crops, pool, rng, n, landmarks):
    xs, ys = zip(*(synthesize(crops[rng.integers(len(crops))], pool, rng, landmarks)
                   for _ in range(n)))
    return np.stack(xs), np.stack(ys)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("crops", type=Path)
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--steps", type=int, default=3000)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--width", type=int, default=16)
    ap.add_argument("--lr", type=float, default=3e-3)
    ap.add_argument("--limit", type=int, default=0)
    ap.add_argument("--threads", type=int, default=0)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--init", type=Path, help="start from this occlusion model's weights")
    a = ap.parse_args(argv)
    if a.threads:
        torch.set_num_threads(a.threads)
    torch.manual_seed(a.seed)
    rng = np.random.default_rng(a.seed)
    template = template_by_name("facecomp-tight")
    landmarks = np.asarray(template.points, np.float64)
    crops = load_crops(a.crops, a.limit or None)
    n_val = max(64, len(crops) // 20)
    train, val = crops[:-n_val], crops[-n_val:]
    vrng = np.random.default_rng(12345)
    vx, vy = batch(val, val, vrng, 512, landmarks)
    clean = val[:256]
    a.out.mkdir(parents=True, exist_ok=True)
    net = OcclusionNet(a.width)
    if a.init is not None:
        from facecomp.stages.occlusion import load_occlusion

        net, _ = load_occlusion(a.init)
    opt = torch.optim.AdamW(net.parameters(), lr=a.lr, weight_decay=1e-4)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=a.lr, total_steps=a.steps,
                                                pct_start=0.1)
    stats = open(a.out / "stats.jsonl", "w")
    t0 = time.time()
    for step in range(1, a.steps + 1):
        x, y = batch(train, train, rng, a.batch, landmarks)
        net.train()
        logit = net(to_input(x))[:, 0]
        target = torch.from_numpy(y)
        p = torch.sigmoid(logit)
        dice = 1 - (2 * (p * target).sum() + 1) / (p.sum() + target.sum() + 1)
        loss = torch.nn.functional.binary_cross_entropy_with_logits(logit, target) + 0.5 * dice
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        if step % 100 == 0 or step == a.steps:
            m = evaluate(net, vx, vy, clean)
            m.update(step=step, loss=float(loss.detach()), s=time.time() - t0)
            stats.write(json.dumps(m) + "\n")
            stats.flush()
            print(json.dumps(m), file=sys.stderr, flush=True)
    m = evaluate(net, vx, vy, clean)
    info = OcclusionInfo(width=a.width, input_size=S, template=template,
                         metrics={k: round(v, 4) for k, v in m.items()},
                         license="trained on UTKFace crops: non-commercial research use only",
                         extra={"steps": a.steps, "batch": a.batch, "lr": a.lr, "seed": a.seed,
                                "init": str(a.init.name) if a.init else None,
                                "train_crops": int(len(train)), "wall_s": round(time.time() - t0)})
    save_occlusion(a.out / "occlusion.safetensors", net, info)
    preview(net, vx[:16], vy[:16], a.out / "preview.png")
    return 0


@torch.inference_mode()
def evaluate(net, vx, vy, clean) -> dict:
    net.eval()
    p = torch.sigmoid(net(to_input(vx))[:, 0]).numpy() > 0.5
    t = vy > 0.5
    inter, union = (p & t).sum(), (p | t).sum()
    q = torch.sigmoid(net(to_input(clean))[:, 0]).numpy() > 0.5
    # false occlusion on clean faces, inside the central face region
    c = slice(int(0.2 * S), int(0.9 * S))
    return {"val_iou": float(inter / max(union, 1)), "val_recall": float(inter / max(t.sum(), 1)),
            "val_precision": float(inter / max(p.sum(), 1)),
            "clean_flagged": float(q[:, c, c].mean())}


@torch.inference_mode()
def preview(net, x, y, path):
    net.eval()
    p = torch.sigmoid(net(to_input(x))[:, 0]).numpy()
    rows = [np.concatenate([xi, np.repeat((yi[..., None] * 255).astype(np.uint8), 3, 2),
                            np.repeat((pi[..., None] * 255).astype(np.uint8), 3, 2)], 1)
            for xi, yi, pi in zip(x, y, p)]
    grid = np.concatenate([np.concatenate(rows[k:k + 4], 1) for k in range(0, 16, 4)], 0)
    cv2.imwrite(str(path), cv2.cvtColor(grid, cv2.COLOR_RGB2BGR))


if __name__ == "__main__":
    sys.exit(main())
