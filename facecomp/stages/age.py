"""Age: an estimator that reads a face's age in years from an aligned crop.

:class:`AgeNet` is a small ResNet (four stages of two basic blocks, widths w, 2w, 4w, 8w) over a
64 px crop, trained on UTKFace by :mod:`facecomp.training.age_train`. Its head predicts a distribution
over whole years (``min_age``..``max_age``) and the estimate is that distribution's mean
(DLDL-v2, Gao et al. 2018: a label distribution and an L1 loss on its expectation), averaged
over the crop and its mirror image.

The estimator sees faces framed as the generators see them: crops made by facecomp's own aligner
with the template stored in its metadata (``facecomp-tight`` for the shipped one). Crops of another
template or size are re-warped to it (pure geometry: the similarity between the two templates'
landmark positions), so :meth:`AgeEstimator.predict` takes any aligned crops.

Convention: crops are RGB uint8 (N, S, S, 3); the network takes float NCHW in [-1, 1].
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np
import torch
from torch import nn

from ..geometry import Template, estimate_similarity
from .align import warp_to_crop

log = logging.getLogger(__name__)

FORMAT = "facecomp-age-estimator"
FORMAT_VERSION = 1
#: File name of the shipped estimator in the models folder.
SHIPPED_FILE = "age-estimator.safetensors"
#: Age bands of the model card: (low, high) inclusive.
BANDS = ((16, 17), (18, 30), (31, 54), (55, 80), (81, 200))
_MAX_WIDTH = 256
_MAX_INPUT = 256


class _Block(nn.Module):
    """Two 3x3 convolutions with batch norm and a skip (projected when the shape changes)."""

    def __init__(self, cin: int, cout: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.skip = (nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False),
                                   nn.BatchNorm2d(cout))
                     if stride != 1 or cin != cout else nn.Identity())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = torch.relu(self.bn1(self.conv1(x)))
        return torch.relu(self.bn2(self.conv2(y)) + self.skip(x))


class AgeNet(nn.Module):
    """A small ResNet age estimator: logits over the years ``min_age``..``max_age``.

    A stride-2 stem, then four stages of two basic blocks (widths w, 2w, 4w, 8w), each stage
    halving the resolution (64 px in: 32, 16, 8, 4, 2), global average pooling and a linear head.
    About 80 MFLOP per 64 px face at width 32.
    """

    def __init__(self, width: int = 32, min_age: int = 1, max_age: int = 120) -> None:
        super().__init__()
        if not 4 <= width <= _MAX_WIDTH:
            raise ValueError(f"width must be within 4..{_MAX_WIDTH}, got {width}")
        if not 0 <= min_age < max_age <= 150:
            raise ValueError(f"need 0 <= min_age < max_age <= 150, got {min_age}, {max_age}")
        self.min_age, self.max_age = min_age, max_age
        w = width
        self.stem = nn.Sequential(nn.Conv2d(3, w, 3, 2, 1, bias=False), nn.BatchNorm2d(w),
                                  nn.ReLU(inplace=True))
        layers, cin = [], w
        for i, cout in enumerate((w, 2 * w, 4 * w, 8 * w)):
            layers += [_Block(cin, cout, 2), _Block(cout, cout, 1)]
            cin = cout
        self.body = nn.Sequential(*layers)
        self.head = nn.Sequential(nn.Flatten(), nn.Dropout(0.2), nn.Linear(cin, max_age - min_age + 1))
        self.register_buffer("ages", torch.arange(min_age, max_age + 1, dtype=torch.float32),
                             persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits (N, max_age - min_age + 1)."""
        y = self.body(self.stem(x))
        return self.head(y.mean(dim=(2, 3), keepdim=True))

    def expected_age(self, logits: torch.Tensor) -> torch.Tensor:
        return torch.softmax(logits.float(), dim=1) @ self.ages


@dataclass(frozen=True)
class AgeInfo:
    """The metadata stored with the estimator's weights."""

    arch_args: dict  # AgeNet(**arch_args)
    input_size: int  # the network's input side in pixels
    template: Template  # the alignment the crops must have
    label_range: tuple[int, int]  # ages it was trained on (inclusive)
    preprocessing: str = ("aligned crop resized to input_size with area averaging, RGB, "
                          "x / 127.5 - 1; prediction = mean of the crop's and its mirror's")
    metrics: dict = field(default_factory=dict)  # held-out MAE overall and per band, bias ...
    license: str = ""
    extra: dict = field(default_factory=dict)  # training config, data, wall time

    def to_json(self) -> str:
        return json.dumps({"arch_args": self.arch_args, "input_size": self.input_size,
                           "template": self.template.to_json(),
                           "label_range": list(self.label_range),
                           "preprocessing": self.preprocessing, "metrics": self.metrics,
                           "license": self.license, "extra": self.extra}, sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> "AgeInfo":
        d = json.loads(text)
        args = {k: int(v) for k, v in dict(d["arch_args"]).items()}
        size = int(d["input_size"])
        if not 16 <= size <= _MAX_INPUT:
            raise ValueError(f"input_size {size} is outside 16..{_MAX_INPUT}")
        lo, hi = (int(v) for v in d["label_range"])
        return cls(arch_args=args, input_size=size, template=Template.from_json(d["template"]),
                   label_range=(lo, hi), preprocessing=str(d.get("preprocessing", "")),
                   metrics=dict(d.get("metrics", {})), license=str(d.get("license", "")),
                   extra=dict(d.get("extra", {})))


def save_estimator(path: str | Path, net: AgeNet, info: AgeInfo, *,
                   dtype: torch.dtype = torch.float32, overwrite: bool = True) -> None:
    """Write the estimator's weights (buffers included) and ``info`` atomically."""
    from ..checkpoint import save_module

    save_module(path, net, FORMAT, FORMAT_VERSION, info.to_json(), dtype=dtype,
                overwrite=overwrite)


def ship_estimator(src: str | Path, dst: str | Path) -> None:
    """Copy a trained estimator as fp16 weights (half the size; loaded back as float32)."""
    net, info = load_estimator(src)
    save_estimator(dst, net, info, dtype=torch.float16)


def shipped_estimator() -> Path:
    from ..checkpoint import shipped_models_dir

    return shipped_models_dir() / SHIPPED_FILE


def load_estimator(path: str | Path | None = None) -> tuple[AgeNet, AgeInfo]:
    """The estimator in ``path`` (default: the shipped one), float32, eval mode, on the CPU."""
    from ..checkpoint import load_module

    path = Path(path) if path is not None else shipped_estimator()
    return load_module(path, FORMAT, FORMAT_VERSION, "age estimator", AgeInfo.from_json,
                       lambda info: AgeNet(**info.arch_args), shipped_estimator())


def rewarp(crops: np.ndarray, template: Template, to_template: Template,
           to_size: int) -> np.ndarray:
    """Aligned crops of ``template`` -> crops of ``to_template`` at ``to_size`` px.

    Resizing only (area averaging) when the templates are the same; otherwise the similarity that
    maps one template's landmark positions onto the other's, with mirrored borders as the aligner
    does.
    """
    crops = np.asarray(crops)
    n, s = crops.shape[0], crops.shape[1]
    out = np.empty((n, to_size, to_size, 3), np.uint8)
    if template.points == to_template.points:
        interp = cv2.INTER_AREA if s > to_size else cv2.INTER_LINEAR
        for i in range(n):
            out[i] = cv2.resize(crops[i], (to_size, to_size), interpolation=interp)
        return out
    to_from = estimate_similarity(template.pixels(s), to_template.pixels(to_size))
    for i in range(n):
        out[i] = warp_to_crop(crops[i], to_from, to_size)
    return out


def to_tensor(crops: np.ndarray) -> torch.Tensor:
    """(N, S, S, 3) uint8 RGB -> float NCHW in [-1, 1], channels_last."""
    t = torch.from_numpy(np.ascontiguousarray(crops)).permute(0, 3, 1, 2).float()
    return (t / 127.5 - 1.0).contiguous(memory_format=torch.channels_last)


class AgeEstimator:
    """Estimated age in years of aligned face crops.

    >>> est = AgeEstimator.load()                                  # doctest: +SKIP
    >>> est.predict(crops, template)                               # (N,) float years
    """

    def __init__(self, net: AgeNet, info: AgeInfo, batch_size: int = 64,
                 name: str = "age estimator") -> None:
        self.net = net.eval().to(memory_format=torch.channels_last)
        self.info = info
        self.batch_size = batch_size
        mae = info.metrics.get("mae")
        self.name = name + (f" (held-out MAE {mae:.1f} years)" if isinstance(mae, float) else "")

    @classmethod
    def load(cls, path: str | Path | None = None) -> "AgeEstimator":
        path = Path(path) if path is not None else shipped_estimator()
        return cls(*load_estimator(path), name=path.name)

    @property
    def template(self) -> Template:
        return self.info.template

    def predict(self, crops: np.ndarray, template: Template | None = None) -> np.ndarray:
        """Ages (N,) float64 of crops aligned with ``template`` (default: the estimator's)."""
        crops = np.asarray(crops)
        if crops.ndim != 4 or crops.shape[-1] != 3 or crops.dtype != np.uint8:
            raise ValueError(f"expected (N, S, S, 3) uint8 crops, got {crops.shape} {crops.dtype}")
        if len(crops) == 0:
            return np.zeros(0)
        x = rewarp(crops, template or self.template, self.template, self.info.input_size)
        out = []
        with torch.inference_mode():
            for i in range(0, len(x), self.batch_size):
                t = to_tensor(x[i:i + self.batch_size])
                logits = self.net(torch.cat([t, t.flip(3)]))
                ages = self.net.expected_age(logits)
                out.append(((ages[:len(t)] + ages[len(t):]) / 2).double().numpy())
        return np.concatenate(out)


def band_of(age: float) -> str:
    for lo, hi in BANDS:
        if lo <= round(age) <= hi:
            return f"{lo}-{hi}" if hi < 200 else f"{lo}+"
    return "under 16"


def score(pred: np.ndarray, true: np.ndarray) -> dict:
    """Held-out figures: MAE overall and per band, and the bias (mean of pred - true) per band."""
    pred, true = np.asarray(pred, float), np.asarray(true, float)
    err = pred - true
    out = {"n": int(len(true)), "mae": float(np.abs(err).mean()), "bias": float(err.mean()),
           "bands": {}}
    for lo, hi in BANDS:
        sel = (true >= lo) & (true <= hi)
        if sel.any():
            name = f"{lo}-{hi}" if hi < 200 else f"{lo}+"
            out["bands"][name] = {"n": int(sel.sum()), "mae": float(np.abs(err[sel]).mean()),
                                  "bias": float(err[sel].mean())}
    return out
