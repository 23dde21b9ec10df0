"""Training data: the two folders of aligned crops as an unpaired, stateless dataset, so any
sample can be reproduced from (seed, epoch, index).
"""

from __future__ import annotations

import logging
from pathlib import Path

import cv2
import numpy as np
import torch

from ..errors import ConfigError, InputError
from ..geometry import FACECOMP_V1
from ..io import list_images, read_image
from .config import TrainConfig

log = logging.getLogger(__name__)


# ---------------------------------------------------------------------------------------------
# Data: stateless, so that any sample can be reproduced from (seed, epoch, index)


class UnpairedCrops(torch.utils.data.Dataset):
    """Sample ``i`` of an epoch: an A crop (a per-epoch permutation) and a random B crop, both
    randomly rescaled, cropped and flipped, as float CHW tensors in [-1, 1]."""

    def __init__(self, a_files: list[Path], b_files: list[Path], config: TrainConfig,
                 epoch: int, length: int, offset: int = 0, stride: int = 1) -> None:
        self.a, self.b, self.c, self.epoch = a_files, b_files, config, epoch
        self.size = config.size_at(epoch)
        self.length, self.offset, self.stride = length, offset, stride
        self.perm = np.random.default_rng([config.seed, epoch, 0]).permutation(len(a_files))

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, k: int) -> tuple[torch.Tensor, torch.Tensor]:
        i = self.offset + k * self.stride  # the global sample index within the epoch
        rng = np.random.default_rng([self.c.seed, self.epoch, 1, i])
        a = self.a[self.perm[i % len(self.a)]]
        b = self.b[rng.integers(len(self.b))]
        return self._load(a, rng), self._load(b, rng)

    def _load(self, path: Path, rng: np.random.Generator) -> torch.Tensor:
        img = read_image(path).rgb
        big = int(round(self.size * (1.0 + rng.uniform(0.0, self.c.scale_jitter))))
        img = cv2.resize(img, (big, big), interpolation=cv2.INTER_AREA
                         if img.shape[0] > big else cv2.INTER_LINEAR)
        y, x = rng.integers(0, big - self.size + 1, size=2)
        img = img[y:y + self.size, x:x + self.size]
        if self.c.flip and rng.random() < 0.5:
            img = img[:, ::-1]
        t = torch.from_numpy(np.ascontiguousarray(img)).permute(2, 0, 1).float()
        return t.div_(127.5).sub_(1.0)


def data_template(a: str, b: str) -> str:
    """The template `facecomp prepare` recorded for both folders (facecomp-v1 if none did)."""
    from .dataset import read_manifest

    found = {}
    for which, folder in (("a", a), ("b", b)):
        names = {r.get("template") for r in read_manifest(Path(folder)).values()} - {None}
        if len(names) > 1:
            raise ConfigError(f"--{which} {folder}: crops made with several templates "
                              f"({', '.join(sorted(names))}); prepare it again")
        if names:
            found[which] = names.pop()
    if len(set(found.values())) > 1:
        raise ConfigError(f"`a` and `b` were prepared with different templates ({found['a']} vs "
                          f"{found['b']}); prepare them alike")
    return next(iter(found.values()), FACECOMP_V1.name)


def domain_files(folder: str, batch_size: int, which: str) -> list[Path]:
    """The training images of one domain, checked up front (headers only, fast)."""
    from PIL import Image

    path = Path(folder)
    if not path.is_dir():
        raise InputError(f"`{which}` {path}: no such folder")
    files = list_images(path)
    if not files:
        raise InputError(f"`{which}` {path}: no images in this folder; prepare one with "
                         "`facecomp prepare`")
    if len(files) < batch_size:
        raise InputError(f"`{which}` {path}: {len(files)} image(s) but `batch_size` is "
                         f"{batch_size}; add images or lower the batch size")
    odd = []
    for f in files:
        try:
            with Image.open(f) as im:
                if im.size[0] != im.size[1]:
                    odd.append(f"{f.name} {im.size[0]}x{im.size[1]}")
                im.verify()
        except Exception as e:  # any unreadable file stops the run before training starts
            raise InputError(f"{f}: unreadable image ({str(e).splitlines()[0][:80]}); remove it "
                             "or run `facecomp prepare` again") from None
    if odd:
        log.warning("`%s` %s: %d of %d images are not square (e.g. %s): training expects "
                    "aligned face crops from `facecomp prepare`", which, path, len(odd),
                    len(files), odd[0])
    return files
