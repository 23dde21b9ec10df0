"""The pipeline on arrays: image -> faces -> aligned crops -> translated crops -> composited image.

:class:`FaceComp` wires the stages together. ``process`` handles one image; ``process_many``
streams several and pools their crops so the generator always sees full batches.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from typing import Iterable, Iterator

import numpy as np
from torch import nn

from .align import AlignConfig, align_faces
from .blend import BlendConfig, Patch, paste_faces
from .checkpoint import DIRECTIONS, ModelInfo, load_generator, resolve_model
from .detect import DetectConfig, Detector, MTCNNDetector, order_faces
from .errors import ConfigError
from .face import Face
from .track import box_iou
from .translate import TranslateConfig, Translator, resolve_device

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class FaceSelection:
    """Which detected faces to translate: ``all``, ``largest``, or 1-based indices (left to
    right, as numbered in the --debug image)."""

    mode: str = "all"
    indices: tuple[int, ...] = ()

    @classmethod
    def parse(cls, text: str) -> "FaceSelection":
        t = text.strip().lower()
        if t in ("all", "largest"):
            return cls(t)
        try:
            idx = tuple(sorted({int(v) for v in t.split(",") if v.strip()}))
        except ValueError:
            idx = ()
        if not idx or min(idx) < 1:
            raise ConfigError(f"--faces takes all, largest or face numbers like 1,3 (from 1), "
                              f"got {text!r}")
        return cls("indices", idx)

    def select(self, faces: list[Face]) -> list[int]:
        if not faces:
            return []
        if self.mode == "all":
            return list(range(len(faces)))
        if self.mode == "largest":
            return [int(np.argmax([f.size for f in faces]))]
        return [i - 1 for i in self.indices if i <= len(faces)]


@dataclass(frozen=True)
class PhotoConfig:
    """Everything the photo pipeline needs, one frozen config per stage."""

    model: str | None = None  # name, file or run folder; None = the default model
    direction: str = "A2B"
    min_face: int = 16  # faces whose box is smaller (px) are skipped and counted
    faces: FaceSelection = field(default_factory=FaceSelection)
    detect: DetectConfig = field(default_factory=DetectConfig)
    blend: BlendConfig = field(default_factory=BlendConfig)
    translate: TranslateConfig = field(default_factory=TranslateConfig)
    max_photos_pending: int = 8  # photos held at once while their crops are pooled

    def __post_init__(self) -> None:
        if self.direction not in DIRECTIONS:
            raise ConfigError(f"--direction must be A2B or B2A, got {self.direction!r}")
        if self.min_face < 0:
            raise ConfigError(f"--min-face must be 0 or more pixels, got {self.min_face}")


@dataclass(frozen=True, eq=False)
class PhotoResult:
    """What happened to one image. Indices refer to ``faces`` (0-based; shown 1-based)."""

    image: np.ndarray
    faces: list[Face]
    translated: list[int]
    skipped_small: list[int]
    patches: list[Patch]
    timings: dict[str, float]

    def changed_mask(self) -> np.ndarray:
        """(H, W) float32: the union of the face masks; 0 where the image is untouched."""
        full = np.zeros(self.image.shape[:2], np.float32)
        for p in self.patches:
            p.union_into(full)
        return full


@dataclass
class _Pending:
    image: np.ndarray
    faces: list[Face]
    chosen: list[int]
    small: list[int]
    crops: np.ndarray
    aligned: list[Face]
    timings: dict[str, float]


class FaceComp:
    """The photo pipeline. Pass a config, or a ready generator (and its info) and/or detector.

    >>> fc = FaceComp(PhotoConfig(direction="A2B"))          # doctest: +SKIP
    >>> result = fc.process(rgb)                             # RGB uint8 HxWx3 -> PhotoResult
    """

    def __init__(self, config: PhotoConfig | None = None, *, generator: nn.Module | None = None,
                 info: ModelInfo | None = None, detector: Detector | None = None) -> None:
        self.config = config or PhotoConfig()
        c = self.config
        if generator is None:
            path = resolve_model(c.model, c.direction)
            generator, info = load_generator(path)
            log.info("model %s: %s -> %s (%s)", path, info.source, info.target, info.name)
        self.info = info
        self.align = (AlignConfig(info.crop_size, info.template) if info is not None
                      else AlignConfig())
        self.translator = Translator(generator, c.translate)
        self.detector = detector or MTCNNDetector(c.detect, device=str(
            resolve_device(c.translate.device)))

    def process(self, image: np.ndarray) -> PhotoResult:
        """Translate the faces of one RGB uint8 image; the input array is not modified."""
        return next(self.process_many([image]))

    def process_many(self, images: Iterable[np.ndarray]) -> Iterator[PhotoResult]:
        """Results in input order; crops of consecutive images share generator batches."""
        pending: list[_Pending] = []
        n_crops = 0
        for image in images:
            p = self._prepare(image)
            pending.append(p)
            n_crops += len(p.crops)
            if n_crops >= self.translator.batch_size or \
                    len(pending) >= self.config.max_photos_pending:
                yield from self._finish(pending)
                pending, n_crops = [], 0
        yield from self._finish(pending)

    def detect(self, image: np.ndarray) -> list[Face]:
        return self.detector.detect(_check_image(image))

    def refine(self, image: np.ndarray, faces: list[Face], passes: int = 2) -> list[Face] | None:
        """Follow ``faces`` (from a nearby frame) into ``image`` without a full detection.

        The detector's ``refine`` re-measures every face ``passes`` times (MTCNN's O-Net on the
        previous box); two passes follow a face that moved a good part of its size. Faces the
        detector no longer accepts are dropped, as are duplicates (two faces converging on one).
        None if the detector cannot refine (then the caller keeps the faces it had).
        """
        refine = getattr(self.detector, "refine", None)
        if refine is None:
            return None
        image = _check_image(image)
        faces = [f for f in refine(image, faces, passes=passes) if f is not None]
        kept: list[Face] = []
        for f in sorted(faces, key=lambda f: -f.score):
            if all(box_iou(f.box, k.box) <= 0.5 for k in kept):
                kept.append(f)
        return order_faces(kept)

    def _prepare(self, image: np.ndarray) -> _Pending:
        image = _check_image(image)
        t0 = time.perf_counter()
        faces = self.detector.detect(image)
        t1 = time.perf_counter()
        chosen = self.config.faces.select(faces)
        small = [i for i in chosen if faces[i].size < self.config.min_face]
        chosen = [i for i in chosen if faces[i].size >= self.config.min_face]
        crops, aligned = align_faces(image, [faces[i] for i in chosen], self.align)
        t2 = time.perf_counter()
        return _Pending(image, faces, chosen, small, crops, aligned,
                        {"detect": t1 - t0, "align": t2 - t1})

    def _finish(self, pending: list[_Pending]) -> Iterator[PhotoResult]:
        if not pending:
            return
        t0 = time.perf_counter()
        all_crops = [p.crops for p in pending if len(p.crops)]
        translated = (self.translator(np.concatenate(all_crops)) if all_crops
                      else np.empty((0,) + pending[0].crops.shape[1:], np.uint8))
        share = (time.perf_counter() - t0) / max(1, len(translated))
        start = 0
        for p in pending:
            n = len(p.crops)
            t1 = time.perf_counter()
            out, patches = paste_faces(p.image, p.aligned, translated[start:start + n], p.crops,
                                       self.align.template, self.config.blend)
            start += n
            timings = dict(p.timings, translate=share * n, blend=time.perf_counter() - t1)
            yield PhotoResult(out, p.faces, p.chosen, p.small, patches, timings)


def _check_image(image: np.ndarray) -> np.ndarray:
    image = np.asarray(image)
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise ValueError(f"expected an RGB uint8 HxWx3 image, got {image.shape} {image.dtype}")
    return np.ascontiguousarray(image)
