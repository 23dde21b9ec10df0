"""Evaluate a model on held-out aligned crops of both domains.

Reports, per domain (A translated by A2B, B by B2A):

- in 8-bit levels (mean absolute difference, 0..255): cycle A->B->A / B->A->B (how well each
  face survives the round trip), identity L1 (how much a generator changes faces already in its
  target domain), change in the face (mean |G(x) - x| inside the face mask);
- age, by the shipped estimator (:mod:`facecomp.stages.age`): mean estimated age before and after, mean
  and median shift, and the share of faces moved by at least 15 years in the model's direction
  (the direction from domain A's mean estimated age to domain B's);
- identity, by dlib's face descriptor (:mod:`facecomp.measure.identity`, the ``eval`` extra): the share
  of translated faces still the same person as their input (distance < 0.6) and the mean
  distance;
- colour and texture inside the face mask: the 99th percentile of the chroma change (CIELAB a/b
  distance, all pixels of all faces pooled; blue lips and red blotches push it up), and the
  high-frequency energy of the output over the input's (a Laplacian at the crop's scale; below 1
  the skin texture was smoothed).

and writes a grid image of input / translated / reconstructed triplets for inspection. Crops go
through the same Translator (pre- and post-processing) as ``facecomp photo``; the figures are
the generator's own, before the paste-back's colour matching.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import cv2
import numpy as np

from ..checkpoint import ModelInfo, load_generator, resolve_model, update_info
from ..errors import InputError
from ..io import check_output, list_images, read_image, write_image
from ..stages.age import AgeEstimator
from ..stages.blend import BlendConfig, face_mask, match_colors
from ..stages.target import Calibration, calibrate
from ..stages.translate import TranslateConfig, Translator
from ..training.dataset import HOLDOUT_DIR, holdout_images
from .identity import SAME_PERSON_THRESHOLD, IdentityModel


#: A face counts as moved when its estimated age changed by this much in the model's direction.
MOVED_YEARS = 15.0


@dataclass(frozen=True)
class DomainScores:
    folder: str
    n: int
    cycle_l1: float  # x -> G(x) -> F(G(x)) vs x
    identity_l1: float  # F(x) vs x, F being the generator *into* x's own domain
    change_in_face: float  # G(x) vs x inside the face mask
    age_before: float  # mean estimated age of x
    age_after: float  # of G(x)
    age_shift_mean: float
    age_shift_median: float
    moved_15: float  # share of faces whose age moved >= 15 years in the model's direction
    same_person: float | None  # share with descriptor distance < 0.6 (None: not measured)
    identity_distance: float | None  # mean descriptor distance x vs G(x)
    chroma_p99: float  # 99th percentile of the a/b change inside the face (CIELAB units)
    texture_ratio: float  # high-frequency energy inside the face, G(x) over x


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
            who = ("" if s.same_person is None else
                   f", same person {100 * s.same_person:.0f} % (distance "
                   f"{s.identity_distance:.3f})")
            return (f"{name} ({s.n} faces, {s.folder}): cycle L1 {s.cycle_l1:.2f}, identity L1 "
                    f"{s.identity_l1:.2f}, change in face by {g} {s.change_in_face:.2f}\n"
                    f"  age {s.age_before:.1f} -> {s.age_after:.1f} (shift mean "
                    f"{s.age_shift_mean:+.1f}, median {s.age_shift_median:+.1f}; "
                    f"{100 * s.moved_15:.0f} % moved >= {MOVED_YEARS:g} years){who}; chroma "
                    f"change p99 {s.chroma_p99:.1f}, texture {s.texture_ratio:.2f}x")

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


def chroma_change(x: np.ndarray, y: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """CIELAB a/b distance between crops ``x`` and ``y`` at every masked pixel, pooled (M,)."""
    out = []
    for xi, yi in zip(x, y):
        lx = cv2.cvtColor(xi.astype(np.float32) / 255.0, cv2.COLOR_RGB2LAB)[mask, 1:]
        ly = cv2.cvtColor(yi.astype(np.float32) / 255.0, cv2.COLOR_RGB2LAB)[mask, 1:]
        out.append(np.sqrt(((lx - ly) ** 2).sum(axis=1)))
    return np.concatenate(out) if out else np.zeros(0)


def high_frequency_energy(x: np.ndarray, mask: np.ndarray) -> float:
    """Mean squared Laplacian of the grey crops inside ``mask``: fine texture and noise."""
    total = 0.0
    for xi in x:
        grey = cv2.cvtColor(xi, cv2.COLOR_RGB2GRAY).astype(np.float32)
        total += float((cv2.Laplacian(grey, cv2.CV_32F)[mask] ** 2).mean())
    return total / max(1, len(x))


def evaluate(model: str | Path | None, a: Path, b: Path, *, limit: int | None = None,
             grid: Path | None = None, n_grid: int = 32, device: str = "auto",
             batch_size: int | None = None, estimator: AgeEstimator | None = None,
             identity: IdentityModel | bool = True, overwrite: bool = False) -> EvalReport:
    """Score both generators of ``model`` on held-out crops of domains A and B.

    estimator: the age estimator (default: the shipped one). identity: an IdentityModel, True
    to load dlib's (the ``eval`` extra; a ConfigError naming it when missing), False to skip.
    overwrite: replace an existing ``grid`` file (else an OutputError before any work).
    """
    if grid is not None:
        check_output(grid, overwrite)
    g_path, f_path = resolve_model(model, "A2B"), resolve_model(model, "B2A")
    ident = IdentityModel() if identity is True else (identity or None)
    est = estimator or AgeEstimator.load()
    cfg = TranslateConfig(device=device, batch_size=batch_size)
    g_net, info = load_generator(g_path)
    f_net, _ = load_generator(f_path)
    G, F = Translator(g_net, cfg), Translator(f_net, cfg)
    size, template = info.crop_size, info.template
    mask = face_mask(size, template) >= 0.5
    measured, shown = [], []
    for folder, fwd, back in ((a, G, F), (b, F, G)):
        source, files = held_out_images(folder, limit)
        x = _load(files, size)
        y = fwd(x)
        rec = back(y)
        idt = back(x)
        before, after = est.predict(x, template), est.predict(y, template)
        dist = ident.distances(x, y, template) if ident is not None else None
        hf_in = high_frequency_energy(x, mask)
        measured.append(dict(
            folder=str(source), n=len(x), cycle_l1=_l1(rec, x), identity_l1=_l1(idt, x),
            change_in_face=_l1(y, x, mask), age_before=float(before.mean()),
            age_after=float(after.mean()), shift=after - before,
            same_person=None if dist is None else float((dist < SAME_PERSON_THRESHOLD).mean()),
            identity_distance=None if dist is None else float(dist.mean()),
            chroma_p99=float(np.percentile(chroma_change(x, y, mask), 99)),
            texture_ratio=high_frequency_energy(y, mask) / max(hf_in, 1e-9)))
        k = max(1, n_grid // 2)
        shown.append(np.stack([x[:k], y[:k], rec[:k]], axis=1))  # (k, 3, S, S, 3)
    # The model's direction: A2B moves faces from domain A's estimated ages towards B's.
    sign = 1.0 if measured[1]["age_before"] >= measured[0]["age_before"] else -1.0
    scores = []
    for m, s in zip(measured, (sign, -sign)):
        shift = m.pop("shift")
        scores.append(DomainScores(**m, age_shift_mean=float(shift.mean()),
                                   age_shift_median=float(np.median(shift)),
                                   moved_15=float((shift * s >= MOVED_YEARS).mean())))
    if grid is not None:
        write_image(grid, _grid(np.concatenate(shown)), quality=92, overwrite=overwrite)
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


def calibrate_model(model: str | Path | None, a: Path, b: Path, *, limit: int | None = None,
                    device: str = "auto", batch_size: int | None = None,
                    estimator: AgeEstimator | None = None, write: bool = True,
                    blend: BlendConfig | None = None) -> dict[str, tuple[Path, Calibration]]:
    """Measure each generator's strength -> mean age shift curve on held-out crops of its
    source domain (A2B on A, B2A on B), translated and colour-matched as ``photo`` pastes them,
    and (``write``) store it in the model file's metadata as ``extra["age_calibration"]``."""
    est = estimator or AgeEstimator.load()
    blend = blend or BlendConfig()
    cfg = TranslateConfig(device=device, batch_size=batch_size)
    out: dict[str, tuple[Path, Calibration]] = {}
    for direction, folder in (("A2B", a), ("B2A", b)):
        path = resolve_model(model, direction)
        net, info = load_generator(path)
        source, files = held_out_images(folder, limit)
        x = _load(files, info.crop_size)
        y = match_colors(Translator(net, cfg)(x), x, info.template, blend)
        before = est.predict(x, info.template)
        cal = calibrate(x, y, before, lambda c: est.predict(c, info.template),
                        source=f"{len(x)} crops of {source}",
                        estimator=str(getattr(est, "name", "facecomp age estimator")))
        if write:
            update_info(path, replace(info, extra={**info.extra,
                                                   "age_calibration": cal.to_json()}))
        out[direction] = (path, cal)
    return out
