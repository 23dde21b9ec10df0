"""Training the age estimator on crops made by ``facecomp prepare`` from UTKFace-style names.

The data folder is one ``facecomp prepare`` OUT folder (no age filter): training crops in
``DATA/``, the held-out crops in ``DATA/holdout/`` (picked by a hash of the source file name, so
the split is the generators' split too: a face held out from them is held out from the
estimator). Labels come from the names (``AGE_GENDER_ID``); unlabelled crops are ignored.

Recipe (DLDL-v2): the head's softmax over whole years is pulled towards a Gaussian around the
true age (KL divergence, ``sigma`` years) and its expectation towards the true age (L1, weight
``l1_weight``). Samples are drawn with weights ``frequency ** -balance`` of their 5-year bin, so
the rarer old faces are seen more often and the estimate regresses less to the mean. Augmentation,
all on the batch in torch: mirror, scale, rotation and shift jitter (grid sample with mirrored
borders), brightness / contrast / saturation jitter and some greyscale. AdamW with a one-cycle
schedule. The held-out set is scored after every epoch and never trained on.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F

from ..errors import ConfigError, InputError
from ..geometry import FACECOMP_TIGHT, TEMPLATES
from ..io import atomic_path, list_images, read_image
from ..options import AGE_TRAIN
from ..stages.age import AgeInfo, AgeNet, save_estimator, score, to_tensor

log = logging.getLogger(__name__)

LICENSE = ("non-commercial research use only: trained on UTKFace, which is available for "
           "non-commercial research purposes only; the images' copyright belongs to their owners")


@dataclass(frozen=True)
class AgeTrainConfig:
    data: str  # a `facecomp prepare` OUT folder of UTKFace-style crops
    out: str  # the run folder: age-estimator.safetensors, stats.jsonl, config.json
    width: int = AGE_TRAIN["width"].default
    input_size: int = AGE_TRAIN["input_size"].default
    epochs: int = AGE_TRAIN["epochs"].default
    batch_size: int = AGE_TRAIN["batch_size"].default
    lr: float = AGE_TRAIN["lr"].default
    weight_decay: float = 5e-4
    sigma: float = 2.0
    l1_weight: float = 0.2
    balance: float = 0.5
    min_age: int = 1
    max_age: int = 120
    seed: int = AGE_TRAIN["seed"].default
    limit: int = AGE_TRAIN["limit"].default  # for quick trials

    def __post_init__(self) -> None:
        checks = [(1 <= self.epochs <= 1000, "epochs must be within 1..1000"),
                  (1 <= self.batch_size <= 4096, "batch_size must be within 1..4096"),
                  (16 <= self.input_size <= 256, "input_size must be within 16..256"),
                  (4 <= self.width <= 256, "width must be within 4..256"),
                  (0 < self.lr < 1, "lr must be within (0, 1)"),
                  (self.sigma > 0, "sigma must be positive"),
                  (0 <= self.balance <= 1, "balance must be within 0..1"),
                  (self.limit >= 0, "limit must be 0 or more")]
        for ok, message in checks:
            if not ok:
                raise ConfigError(f"{message}")


@dataclass(frozen=True)
class AgeTrainResult:
    path: Path
    metrics: dict
    seconds: float


def load_labelled(folder: Path, size: int, template_name: str | None = None,
                  limit: int = 0) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """Crops (N, size, size, 3) uint8 resized with area averaging, ages (N,), names."""
    from ..stages.age import rewarp
    from .dataset import parse_label

    files = [f for f in list_images(folder) if parse_label(f.name) is not None]
    if limit:
        files = files[:limit]
    template = TEMPLATES.get(template_name or "", FACECOMP_TIGHT)
    out = np.empty((len(files), size, size, 3), np.uint8)
    ages = np.empty(len(files), np.float32)
    for i, f in enumerate(files):
        img = read_image(f).rgb
        out[i] = rewarp(img[None], template, template, size)[0]
        ages[i] = parse_label(f.name).age
    return out, ages, [f.name for f in files]


def _template_of(data: Path) -> str:
    from .dataset import read_manifest

    for rec in read_manifest(data).values():
        t = rec.get("template")
        if isinstance(t, str):
            return t
    return FACECOMP_TIGHT.name


def _augment(x: torch.Tensor, g: torch.Generator) -> torch.Tensor:
    """Random mirror, scale (0.92-1.08), rotation (+-7 deg), shift (+-4 %) and colour jitter."""
    n = x.shape[0]

    def u(lo: float, hi: float, *shape: int) -> torch.Tensor:
        return lo + (hi - lo) * torch.rand(n, *shape, generator=g)

    s = u(0.92, 1.08)
    a = u(-7.0, 7.0) * (np.pi / 180)
    flip = torch.where(torch.rand(n, generator=g) < 0.5, -1.0, 1.0)
    theta = torch.zeros(n, 2, 3)
    theta[:, 0, 0] = torch.cos(a) / s * flip
    theta[:, 0, 1] = -torch.sin(a) / s
    theta[:, 1, 0] = torch.sin(a) / s * flip
    theta[:, 1, 1] = torch.cos(a) / s
    theta[:, :, 2] = u(-0.04, 0.04, 2)
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    x = F.grid_sample(x, grid, mode="bilinear", padding_mode="reflection", align_corners=False)
    grey = x.mean(dim=1, keepdim=True)
    sat = torch.where(torch.rand(n, generator=g) < 0.1, 0.0, u(0.7, 1.3))
    x = grey + (x - grey) * sat.view(n, 1, 1, 1)
    x = (x - x.mean(dim=(1, 2, 3), keepdim=True)) * u(0.8, 1.2).view(n, 1, 1, 1) \
        + x.mean(dim=(1, 2, 3), keepdim=True) + u(-0.1, 0.1).view(n, 1, 1, 1)
    return x.clamp(-1, 1).contiguous(memory_format=torch.channels_last)


def _soft_labels(ages: torch.Tensor, bins: torch.Tensor, sigma: float) -> torch.Tensor:
    d = torch.exp(-0.5 * ((bins[None] - ages[:, None]) / sigma) ** 2)
    return d / d.sum(dim=1, keepdim=True)


def evaluate_net(net: AgeNet, crops: np.ndarray, batch: int = 256) -> np.ndarray:
    """Predicted ages of crops already at the network's input size (mirror-averaged)."""
    net.eval()
    out = []
    with torch.inference_mode():
        for i in range(0, len(crops), batch):
            t = to_tensor(crops[i:i + batch])
            a = net.expected_age(net(torch.cat([t, t.flip(3)])))
            out.append(((a[:len(t)] + a[len(t):]) / 2).numpy())
    return np.concatenate(out).astype(np.float64)


def train_age(config: AgeTrainConfig,
              on_epoch: Callable[[int, int, dict], None] | None = None) -> AgeTrainResult:
    """Train the estimator; writes ``OUT/age-estimator.safetensors`` (float32) and stats."""
    data, out = Path(config.data), Path(config.out)
    if not data.is_dir():
        raise InputError(f"{data}: no such folder; make it with facecomp prepare")
    t_start = time.perf_counter()
    template = _template_of(data)
    x_tr, y_tr, _ = load_labelled(data, config.input_size, template, config.limit)
    x_ho, y_ho, names_ho = load_labelled(data / "holdout", config.input_size, template) \
        if (data / "holdout").is_dir() else (np.zeros((0,) * 1), np.zeros(0), [])
    if len(x_tr) < 2:
        raise InputError(f"{data}: fewer than 2 crops with UTKFace-style names AGE_GENDER_ID")
    if len(y_ho) == 0:
        raise InputError(f"{data}: no held-out crops in {data / 'holdout'}; prepare with "
                         "a holdout fraction above 0")
    log.info("age training: %d crops, %d held out, template %s", len(x_tr), len(x_ho), template)
    out.mkdir(parents=True, exist_ok=True)
    (out / "config.json").write_text(json.dumps(asdict(config), indent=2) + "\n")

    torch.manual_seed(config.seed)
    g = torch.Generator().manual_seed(config.seed)
    net = AgeNet(config.width, config.min_age, config.max_age).to(
        memory_format=torch.channels_last)
    opt = torch.optim.AdamW(net.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    steps_per_epoch = max(1, len(x_tr) // config.batch_size)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, config.lr,
                                                total_steps=config.epochs * steps_per_epoch,
                                                pct_start=0.2)
    bins = net.ages
    freq = np.bincount((y_tr // 5).astype(int))
    weights = torch.from_numpy(freq[(y_tr // 5).astype(int)].astype(np.float64)
                               ** -config.balance)
    xt = torch.from_numpy(x_tr).permute(0, 3, 1, 2)  # uint8 NCHW
    yt = torch.from_numpy(y_tr)
    stats = out / "stats.jsonl"
    stats.write_text("")
    metrics: dict = {}
    for epoch in range(1, config.epochs + 1):
        net.train()
        t0 = time.perf_counter()
        order = torch.multinomial(weights, steps_per_epoch * config.batch_size,
                                  replacement=True, generator=g)
        total = 0.0
        for k in range(steps_per_epoch):
            idx = order[k * config.batch_size:(k + 1) * config.batch_size]
            x = _augment(xt[idx].float() / 127.5 - 1.0, g)
            y = yt[idx]
            logits = net(x)
            logp = torch.log_softmax(logits.float(), dim=1)
            target = _soft_labels(y, bins, config.sigma)
            kl = (target * (torch.log(target + 1e-12) - logp)).sum(dim=1).mean()
            l1 = (logp.exp() @ bins - y).abs().mean()
            loss = kl + config.l1_weight * l1
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            total += float(loss.detach())
        pred = evaluate_net(net, x_ho)
        metrics = score(pred, y_ho)
        line = {"epoch": epoch, "loss": total / steps_per_epoch, "holdout_mae": metrics["mae"],
                "seconds": time.perf_counter() - t0}
        with open(stats, "a") as fp:
            fp.write(json.dumps(line) + "\n")
        log.info("epoch %d: loss %.3f, held-out MAE %.2f years (%.0f s)", epoch,
                 line["loss"], metrics["mae"], line["seconds"])
        if on_epoch is not None:
            on_epoch(epoch, config.epochs, line)
    seconds = time.perf_counter() - t_start
    metrics["holdout_split"] = ("facecomp prepare --holdout: sha256 of the source file name "
                                f"< fraction; {len(y_ho)} labelled held-out crops")
    info = AgeInfo(arch_args={"width": config.width, "min_age": config.min_age,
                              "max_age": config.max_age},
                   input_size=config.input_size, template=TEMPLATES.get(template, FACECOMP_TIGHT),
                   label_range=(int(y_tr.min()), int(y_tr.max())), metrics=metrics,
                   license=LICENSE,
                   extra={"train": asdict(config), "train_crops": len(x_tr),
                          "wall_seconds": round(seconds, 1),
                          "threads": torch.get_num_threads()})
    path = out / "age-estimator.safetensors"
    save_estimator(path, net, info)
    with atomic_path(out / "holdout_predictions.json", overwrite=True) as tmp:
        tmp.write_text(json.dumps({n: [float(t), float(p)] for n, t, p in
                                   zip(names_ho, y_ho, evaluate_net(net, x_ho))}))
    return AgeTrainResult(path, metrics, seconds)
