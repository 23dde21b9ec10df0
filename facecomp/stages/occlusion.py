"""Occlusion: which pixels of an aligned face crop are the face itself, and which are a hand, a
microphone, a cup, hair strands, glasses frames or a face mask lying over it.

:class:`OcclusionNet` is a small U-Net over a 64 px crop that predicts, per pixel, the logit of
"something in front of the face". It is trained by ``scripts/train_occlusion.py`` on UTKFace
crops with synthetic occluders pasted over them, where the true mask is known (the XSeg recipe
without hand labels): textured shapes cut from other photos, skin-coloured hands entering from
the crop's edge, hair strands, glasses frames and surgical masks.

The paste-back multiplies the face mask by :meth:`Occlusion.keep_weights` (1: the face, 0: an
occluder), so what covers a face keeps its original pixels.

Convention: crops are RGB uint8 (N, S, S, 3) aligned with the template in the file's metadata
(re-warped when another is given); weights come back (N, S, S) float32 in [0, 1] in the
caller's crop frame.
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

from ..geometry import Template

log = logging.getLogger(__name__)

FORMAT = "facecomp-occlusion"
FORMAT_VERSION = 1
SHIPPED_FILE = "occlusion.safetensors"
_MAX_WIDTH = 128


def _conv(cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, 3, 1, 1, bias=False), nn.BatchNorm2d(cout),
                         nn.ReLU(inplace=True), nn.Conv2d(cout, cout, 3, 1, 1, bias=False),
                         nn.BatchNorm2d(cout), nn.ReLU(inplace=True))


class OcclusionNet(nn.Module):
    """A four-level U-Net, widths w, 2w, 4w, 6w: (N, 3, S, S) in [-1, 1] -> (N, 1, S, S)
    occluder logits. S must be a multiple of 8."""

    def __init__(self, width: int = 16) -> None:
        super().__init__()
        if not 4 <= width <= _MAX_WIDTH:
            raise ValueError(f"width {width} is outside 4..{_MAX_WIDTH}")
        w = (width, 2 * width, 4 * width, 6 * width)
        self.enc = nn.ModuleList([_conv(3, w[0]), _conv(w[0], w[1]), _conv(w[1], w[2]),
                                  _conv(w[2], w[3])])
        self.dec = nn.ModuleList([_conv(w[3] + w[2], w[2]), _conv(w[2] + w[1], w[1]),
                                  _conv(w[1] + w[0], w[0])])
        self.head = nn.Conv2d(w[0], 1, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        skips = []
        for k, block in enumerate(self.enc):
            x = block(x if k == 0 else nn.functional.max_pool2d(x, 2))
            skips.append(x)
        for block, skip in zip(self.dec, reversed(skips[:-1])):
            x = nn.functional.interpolate(x, scale_factor=2, mode="bilinear",
                                          align_corners=False)
            x = block(torch.cat([x, skip], dim=1))
        return self.head(x)


@dataclass(frozen=True)
class OcclusionInfo:
    """What the network needs to be used: input size, the template its crops are aligned
    with, and how it was made."""

    width: int
    input_size: int
    template: Template
    metrics: dict = field(default_factory=dict)
    license: str = ""
    extra: dict = field(default_factory=dict)

    def to_json(self) -> str:
        return json.dumps({"width": self.width, "input_size": self.input_size,
                           "template": self.template.to_json(),
                           "metrics": self.metrics, "license": self.license,
                           "extra": self.extra})

    @classmethod
    def from_json(cls, text: str) -> "OcclusionInfo":
        d = json.loads(text)
        size = int(d["input_size"])
        if not 16 <= size <= 256 or size % 8:
            raise ValueError(f"input_size {size} is not a multiple of 8 within 16..256")
        return cls(width=int(d["width"]), input_size=size,
                   template=Template.from_json(d["template"]),
                   metrics=dict(d.get("metrics", {})), license=str(d.get("license", "")),
                   extra=dict(d.get("extra", {})))


def save_occlusion(path: str | Path, net: OcclusionNet, info: OcclusionInfo, *,
                   dtype: torch.dtype = torch.float32, overwrite: bool = True) -> None:
    """Write the weights (buffers included) and ``info`` atomically."""
    from ..checkpoint import save_module

    save_module(path, net, FORMAT, FORMAT_VERSION, info.to_json(), dtype=dtype,
                overwrite=overwrite)


def ship_occlusion(src: str | Path, dst: str | Path) -> None:
    """Copy a trained occlusion model as fp16 weights (loaded back as float32)."""
    net, info = load_occlusion(src)
    save_occlusion(dst, net, info, dtype=torch.float16)


def shipped_occlusion() -> Path:
    from ..checkpoint import shipped_models_dir

    return shipped_models_dir() / SHIPPED_FILE


def load_occlusion(path: str | Path | None = None) -> tuple[OcclusionNet, OcclusionInfo]:
    """The network in ``path`` (default: the shipped one), float32, eval mode, on the CPU."""
    from ..checkpoint import load_module

    path = Path(path) if path is not None else shipped_occlusion()
    return load_module(path, FORMAT, FORMAT_VERSION, "occlusion model", OcclusionInfo.from_json,
                       lambda info: OcclusionNet(info.width), shipped_occlusion())


def to_input(crops: np.ndarray) -> torch.Tensor:
    """uint8 (N, S, S, 3) -> float NCHW in [-1, 1]."""
    t = torch.from_numpy(np.ascontiguousarray(crops)).permute(0, 3, 1, 2).float()
    return t / 127.5 - 1.0


class Occlusion:
    """The occlusion model behind one call: crops -> keep weights."""

    def __init__(self, net: OcclusionNet, info: OcclusionInfo, batch_size: int = 64) -> None:
        self.net = net.eval()
        self.info = info
        self.batch_size = batch_size

    @classmethod
    def load(cls, path: str | Path | None = None) -> "Occlusion":
        return cls(*load_occlusion(path))

    @torch.inference_mode()
    def occluded(self, crops: np.ndarray, template: Template) -> np.ndarray:
        """The probability that something covers the face, (N, S, S) float32, per pixel of
        the given crops (aligned with ``template``)."""
        from .age import rewarp

        crops = np.asarray(crops)
        n, s = crops.shape[0], crops.shape[1]
        if n == 0:
            return np.zeros((0, s, s), np.float32)
        size = self.info.input_size
        small = rewarp(crops, template, self.info.template, size)
        probs = []
        for k in range(0, n, self.batch_size):
            probs.append(torch.sigmoid(self.net(to_input(small[k:k + self.batch_size])))[:, 0])
        p = torch.cat(probs).numpy()
        return np.stack([_back(q, self.info.template, template, s) for q in p])

    def keep_weights(self, crops: np.ndarray, template: Template) -> np.ndarray:
        """Per pixel of each crop: 1 where the face shows, 0 where an occluder covers it, a
        short ramp between (probability 0.35..0.65), (N, S, S) float32."""
        p = self.occluded(crops, template)
        return np.clip((0.65 - p) / 0.3, 0.0, 1.0).astype(np.float32)


def _back(prob: np.ndarray, model_template: Template, template: Template,
          size: int) -> np.ndarray:
    """A (s, s) map in the model's crop frame -> (size, size) in ``template``'s crop frame."""
    from ..geometry import estimate_similarity

    s = prob.shape[0]
    if model_template.points == template.points:
        return cv2.resize(prob, (size, size), interpolation=cv2.INTER_LINEAR)
    src = np.asarray(model_template.pixels(s), np.float64)
    dst = np.asarray(template.pixels(size), np.float64)
    m = estimate_similarity(src, dst)
    return cv2.warpAffine(prob, m, (size, size), flags=cv2.INTER_LINEAR,
                          borderMode=cv2.BORDER_CONSTANT, borderValue=0.0)
