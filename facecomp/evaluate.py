"""Evaluate a model on held-out aligned crops of both domains.

Reports, in 8-bit levels (mean absolute difference, 0..255):
  cycle A->B->A and B->A->B  how well each face survives the round trip (lower: content kept);
  identity A2B(b), B2A(a)    how much a generator changes faces already in its target domain;
  change in the face         mean |G(x) - x| inside the face mask: how visible the translation is.
and writes a grid image of input / translated / reconstructed triplets for inspection. Crops go
through the same Translator (pre- and post-processing) as ``facecomp photo``.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass
from pathlib import Path

import cv2
import numpy as np

from .blend import face_mask
from .checkpoint import ModelInfo, load_generator, resolve_model
from .errors import InputError
from .io import list_images, read_image, write_image
from .prepare import HOLDOUT_DIR, holdout_images
from .translate import TranslateConfig, Translator


@dataclass(frozen=True)
class DomainScores:
    folder: str
    n: int
    cycle_l1: float  # x -> G(x) -> F(G(x)) vs x
    identity_l1: float  # F(x) vs x, F being the generator *into* x's own domain
    change_in_face: float  # G(x) vs x inside the face mask


@dataclass(frozen=True)
class EvalReport:
    model: str
    crop_size: int
    a: DomainScores  # A: G = A2B, F = B2A
    b: DomainScores  # B: G = B2A, F = A2B
    grid: str | None

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2)

    def summary(self) -> str:
        def line(name: str, s: DomainScores, g: str) -> str:
            return (f"{name} ({s.n} faces, {s.folder}): cycle L1 {s.cycle_l1:.2f}, identity L1 "
                    f"{s.identity_l1:.2f}, change in face by {g} {s.change_in_face:.2f}")

        return "\n".join([f"model {self.model} at {self.crop_size} px (mean |difference|, "
                          "0-255 levels)", line("A", self.a, "A2B"), line("B", self.b, "B2A")])


def held_out_images(folder: Path, limit: int | None) -> tuple[Path, list[Path]]:
    """``folder/holdout`` when `facecomp prepare` made one, else the folder itself."""
    folder = Path(folder)
    if not folder.is_dir():
        raise InputError(f"{folder}: no such folder")
    held = holdout_images(folder)
    source = folder / HOLDOUT_DIR if held else folder
    files = held or list_images(folder)
    if not files:
        raise InputError(f"{folder}: no images to evaluate on")
    return source, files[:limit] if limit else files


def _load(files: list[Path], size: int) -> np.ndarray:
    out = np.empty((len(files), size, size, 3), np.uint8)
    for i, f in enumerate(files):
        img = read_image(f).rgb
        if img.shape[:2] != (size, size):
            img = cv2.resize(img, (size, size), interpolation=cv2.INTER_AREA
                             if img.shape[0] > size else cv2.INTER_LINEAR)
        out[i] = img
    return out


def _l1(x: np.ndarray, y: np.ndarray, mask: np.ndarray | None = None) -> float:
    d = np.abs(x.astype(np.float32) - y.astype(np.float32))
    return float(d[:, mask].mean() if mask is not None else d.mean())


def evaluate(model: str | Path | None, a: Path, b: Path, *, limit: int | None = None,
             grid: Path | None = None, n_grid: int = 32, device: str = "auto",
             batch_size: int | None = None) -> EvalReport:
    """Score both generators of ``model`` on held-out crops of domains A and B."""
    g_path, f_path = resolve_model(model, "A2B"), resolve_model(model, "B2A")
    cfg = TranslateConfig(device=device, batch_size=batch_size)
    g_net, info = load_generator(g_path)
    f_net, _ = load_generator(f_path)
    G, F = Translator(g_net, cfg), Translator(f_net, cfg)
    size = info.crop_size
    mask = face_mask(size, info.template) >= 0.5
    scores, shown = [], []
    for folder, fwd, back in ((a, G, F), (b, F, G)):
        source, files = held_out_images(folder, limit)
        x = _load(files, size)
        y = fwd(x)
        rec = back(y)
        idt = back(x)
        scores.append(DomainScores(str(source), len(x), _l1(rec, x), _l1(idt, x),
                                   _l1(y, x, mask)))
        k = max(1, n_grid // 2)
        shown.append(np.stack([x[:k], y[:k], rec[:k]], axis=1))  # (k, 3, S, S, 3)
    if grid is not None:
        write_image(grid, _grid(np.concatenate(shown)), quality=92, overwrite=True)
    return EvalReport(_name(info, g_path), size, scores[0], scores[1],
                      str(grid) if grid is not None else None)


def _grid(triplets: np.ndarray, per_row: int = 4) -> np.ndarray:
    """Triplets (input | translated | reconstructed) laid out ``per_row`` to a row."""
    n, _, s = triplets.shape[:3]
    rows = math.ceil(n / per_row)
    gap = max(2, s // 32)
    h, w = rows * (s + gap), per_row * (3 * s + gap)
    out = np.full((h, w, 3), 255, np.uint8)
    for i, t in enumerate(triplets):
        r, c = divmod(i, per_row)
        y, x = r * (s + gap), c * (3 * s + gap)
        out[y:y + s, x:x + 3 * s] = np.concatenate(list(t), axis=1)
    return out


def _name(info: ModelInfo, path: Path) -> str:
    return f"{info.name} ({path.parent})"
