"""MTCNN's three networks and the box arithmetic between its stages, without facenet-pytorch's
package import.

facenet-pytorch ships the trained P-, R- and O-Net weights in its wheel; importing its package
also imports torchvision's model zoo and ``torch._dynamo`` (3 s on a 2-core CPU before a photo is
read). Here the three small networks are defined with facenet-pytorch's parameter names, their
weights are read from that package's data folder (found without importing it, loaded as plain
tensors), and the helpers of its ``detect_face`` that :mod:`facecomp.stages.detect` uses are written out
with the same arithmetic (the detector's results are compared with facenet-pytorch's own in
the tests). Boxes are (N, >=4) float32 tensors (x1, y1, x2, y2, ...) in image pixels.
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from ..errors import ModelError

PYRAMID_FACTOR = 0.709  # each pyramid level's scale over the last (MTCNN's)


class PNet(nn.Module):
    """The proposal net: fully convolutional over a pyramid level; per 12 px window (stride 2)
    a box regression (4) and a face probability (2-way softmax)."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1, self.prelu1 = nn.Conv2d(3, 10, 3), nn.PReLU(10)
        self.pool1 = nn.MaxPool2d(2, 2, ceil_mode=True)
        self.conv2, self.prelu2 = nn.Conv2d(10, 16, 3), nn.PReLU(16)
        self.conv3, self.prelu3 = nn.Conv2d(16, 32, 3), nn.PReLU(32)
        self.conv4_1 = nn.Conv2d(32, 2, 1)
        self.conv4_2 = nn.Conv2d(32, 4, 1)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = self.pool1(self.prelu1(self.conv1(x)))
        x = self.prelu3(self.conv3(self.prelu2(self.conv2(x))))
        return self.conv4_2(x), torch.softmax(self.conv4_1(x), dim=1)


class RNet(nn.Module):
    """The refinement net on 24 x 24 crops: box regression (4) and face probability (2)."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1, self.prelu1 = nn.Conv2d(3, 28, 3), nn.PReLU(28)
        self.pool1 = nn.MaxPool2d(3, 2, ceil_mode=True)
        self.conv2, self.prelu2 = nn.Conv2d(28, 48, 3), nn.PReLU(48)
        self.pool2 = nn.MaxPool2d(3, 2, ceil_mode=True)
        self.conv3, self.prelu3 = nn.Conv2d(48, 64, 2), nn.PReLU(64)
        self.dense4, self.prelu4 = nn.Linear(576, 128), nn.PReLU(128)
        self.dense5_1 = nn.Linear(128, 2)
        self.dense5_2 = nn.Linear(128, 4)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = self.pool1(self.prelu1(self.conv1(x)))
        x = self.pool2(self.prelu2(self.conv2(x)))
        x = self.prelu3(self.conv3(x))
        x = x.permute(0, 3, 2, 1).contiguous()  # the trained weights' (Caffe) flattening order
        x = self.prelu4(self.dense4(x.view(x.shape[0], -1)))
        return self.dense5_2(x), torch.softmax(self.dense5_1(x), dim=1)


class ONet(nn.Module):
    """The output net on 48 x 48 crops: box regression (4), 5 landmarks (10: x's then y's,
    relative to the box) and face probability (2)."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1, self.prelu1 = nn.Conv2d(3, 32, 3), nn.PReLU(32)
        self.pool1 = nn.MaxPool2d(3, 2, ceil_mode=True)
        self.conv2, self.prelu2 = nn.Conv2d(32, 64, 3), nn.PReLU(64)
        self.pool2 = nn.MaxPool2d(3, 2, ceil_mode=True)
        self.conv3, self.prelu3 = nn.Conv2d(64, 64, 3), nn.PReLU(64)
        self.pool3 = nn.MaxPool2d(2, 2, ceil_mode=True)
        self.conv4, self.prelu4 = nn.Conv2d(64, 128, 2), nn.PReLU(128)
        self.dense5, self.prelu5 = nn.Linear(1152, 256), nn.PReLU(256)
        self.dense6_1 = nn.Linear(256, 2)
        self.dense6_2 = nn.Linear(256, 4)
        self.dense6_3 = nn.Linear(256, 10)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        x = self.pool1(self.prelu1(self.conv1(x)))
        x = self.pool2(self.prelu2(self.conv2(x)))
        x = self.pool3(self.prelu3(self.conv3(x)))
        x = self.prelu4(self.conv4(x))
        x = x.permute(0, 3, 2, 1).contiguous()
        x = self.prelu5(self.dense5(x.view(x.shape[0], -1)))
        return self.dense6_2(x), self.dense6_3(x), torch.softmax(self.dense6_1(x), dim=1)


@dataclass
class Nets:
    pnet: PNet
    rnet: RNet
    onet: ONet

    def __iter__(self):
        return iter((self.pnet, self.rnet, self.onet))


def weights_dir() -> Path:
    """facenet-pytorch's data folder (pnet.pt, rnet.pt, onet.pt), found without importing it."""
    spec = importlib.util.find_spec("facenet_pytorch")
    if spec is None or not spec.submodule_search_locations:
        raise ModelError("the MTCNN face detector's weights come with facenet-pytorch, which is "
                         "not installed; pip install facenet-pytorch")
    return Path(next(iter(spec.submodule_search_locations))) / "data"


def load_nets(device: str | torch.device = "cpu") -> Nets:
    """The three trained nets in eval mode on ``device``, channels_last (P-Net's max-pooling
    then takes the vectorised kernel: 1.6x faster per 720p frame on the CPU, same results)."""
    folder = weights_dir()
    nets = Nets(PNet(), RNet(), ONet())
    for name, net in zip(("pnet", "rnet", "onet"), nets):
        path = folder / f"{name}.pt"
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
            net.load_state_dict(state)
        except (OSError, RuntimeError, ValueError) as e:
            raise ModelError(f"cannot load the MTCNN weights {path}: {e}; reinstall "
                             "facenet-pytorch") from None
        net.eval().requires_grad_(False)
        net.to(device=device, memory_format=torch.channels_last)
    return nets


def imresample(img: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """(N, C, H, W) float resampled to ``size`` (h, w) by area averaging."""
    return F.interpolate(img, size=size, mode="area")


def bbreg(boxes: torch.Tensor, reg: torch.Tensor) -> torch.Tensor:
    """Boxes moved by the nets' regression (fractions of the box's +1 width and height);
    in place, returned."""
    w = boxes[:, 2] - boxes[:, 0] + 1
    h = boxes[:, 3] - boxes[:, 1] + 1
    boxes[:, :4] = torch.stack([boxes[:, 0] + reg[:, 0] * w, boxes[:, 1] + reg[:, 1] * h,
                                boxes[:, 2] + reg[:, 2] * w, boxes[:, 3] + reg[:, 3] * h], 1)
    return boxes


def rerec(boxes: torch.Tensor) -> torch.Tensor:
    """Boxes made square about their centre, side the longer of the two; in place, returned."""
    h = boxes[:, 3] - boxes[:, 1]
    w = boxes[:, 2] - boxes[:, 0]
    side = torch.max(w, h)
    boxes[:, 0] = boxes[:, 0] + w * 0.5 - side * 0.5
    boxes[:, 1] = boxes[:, 1] + h * 0.5 - side * 0.5
    boxes[:, 2:4] = boxes[:, :2] + side[:, None]
    return boxes


def crop_bounds(boxes: torch.Tensor, w: int, h: int) -> tuple[np.ndarray, ...]:
    """(y1, y2, x1, x2) int arrays of each box truncated and clipped to [1, w] x [1, h]
    (1-based first row/column, as the stages cut their crops)."""
    b = boxes[:, :4].trunc().int().cpu().numpy()
    x, y = np.maximum(b[:, 0], 1), np.maximum(b[:, 1], 1)
    ex, ey = np.minimum(b[:, 2], w), np.minimum(b[:, 3], h)
    return y, ey, x, ex


def nms(boxes: torch.Tensor, scores: torch.Tensor, threshold: float,
        method: str = "union") -> torch.Tensor:
    """Greedy non-maximum suppression: indices of the boxes kept, best score first (ties in
    input order).

    ``union``: a box is dropped when its intersection over union with a kept, better box exceeds
    ``threshold`` (areas (x2 - x1)(y2 - y1), as between P- and R-Net). ``min``: intersection over
    the smaller box, with MTCNN's +1 pixel areas (after O-Net). The same float32 arithmetic as
    torchvision's and facenet-pytorch's NMS, so the same boxes are kept; only pairs whose
    x-ranges meet are measured, so a crowd's thousands of P-Net windows cost little.
    """
    n = len(boxes)
    if n == 0:
        return torch.empty(0, dtype=torch.long, device=boxes.device)
    s = scores.detach().float().cpu().numpy()
    order = np.argsort(-s, kind="stable")  # rank -> input index
    b = boxes[:, :4].detach().float().cpu().numpy()[order]
    one = np.float32(1.0 if method == "min" else 0.0)
    x1, y1, x2, y2 = b[:, 0], b[:, 1], b[:, 2], b[:, 3]
    area = (x2 - x1 + one) * (y2 - y1 + one)
    # every pair of ranks (i, j) whose x-ranges can meet: sorted by x1, box k meets the boxes
    # after it up to the first whose x1 is past its x2 (+1 for the min method's areas)
    by_x = np.argsort(x1, kind="stable")
    xs = x1[by_x]
    hi = np.searchsorted(xs, x2[by_x] + one, side="right")
    lo = np.arange(1, n + 1)
    count = np.maximum(hi - lo, 0)
    total = int(count.sum())
    if total == 0:
        return torch.as_tensor(order.astype(np.int64), device=boxes.device)
    first = np.repeat(np.arange(n), count)
    step = np.arange(total) - np.repeat(np.cumsum(count) - count, count)
    a, c = by_x[first], by_x[np.repeat(lo, count) + step]
    iw = np.maximum(np.float32(0), np.minimum(x2[a], x2[c]) - np.maximum(x1[a], x1[c]) + one)
    ih = np.maximum(np.float32(0), np.minimum(y2[a], y2[c]) - np.maximum(y1[a], y1[c]) + one)
    inter = iw * ih
    with np.errstate(invalid="ignore", divide="ignore"):
        if method == "min":
            overlap = inter / np.minimum(area[a], area[c])
            # NaN (an empty box) suppresses, as in facenet-pytorch's NMS
            hit = ~(overlap <= np.float32(threshold))
        else:
            overlap = inter / (area[a] + area[c] - inter)
            hit = overlap > np.float32(threshold)  # NaN does not, as in torchvision's
    src, dst = np.minimum(a[hit], c[hit]), np.maximum(a[hit], c[hit])
    edges = np.argsort(src, kind="stable")
    src, dst = src[edges], dst[edges]
    starts = np.searchsorted(src, np.arange(n + 1)).tolist()
    dst = dst.tolist()
    removed = bytearray(n)
    keep = []
    for r in range(n):  # the better box first: it suppresses the worse ones it overlaps
        if removed[r]:
            continue
        keep.append(r)
        for j in dst[starts[r]:starts[r + 1]]:
            removed[j] = 1
    return torch.as_tensor(order[keep].astype(np.int64), device=boxes.device)
