"""The pipeline on arrays: image -> faces -> aligned crops -> translated crops -> composited image.

:class:`FaceComp` wires the stages together. ``process`` handles one image; ``process_many``
streams several and pools their crops so the generator always sees full batches. Everything
after detection is one method, :meth:`FaceComp.change` (align, translate in shared batches,
keep occluders, paste), which photos, video frames and every other front end go through.
"""

from __future__ import annotations

import functools
import logging
import time
from dataclasses import dataclass, field, replace
from typing import Callable, Iterable, Iterator, Sequence

import numpy as np
from torch import nn

from .checkpoint import DIRECTIONS, ModelInfo, load_generator, resolve_model
from .device import resolve_device
from .errors import ConfigError, ModelError
from .face import Face, FaceSelection
from .geometry import box_iou
from .options import PIPELINE, default
from .stages.align import AlignConfig, align_faces
from .stages.blend import (BlendConfig, ColorTransform, Patch, color_mask, face_mask, match_colors,
                           paste_faces)
from .stages.detect import DetectConfig, Detector, MTCNNDetector, order_faces
from .stages.target import MAX_AGE_STRENGTH, AgeTarget, FacePlan, choose_strengths, plan_face
from .stages.translate import TranslateConfig, Translator

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class PhotoConfig:
    """Everything the photo pipeline needs, one frozen config per stage."""

    model: str | None = default("model")  # name, file or run folder; None = the default model
    direction: str = default("direction")
    min_face: int = default("min_face")  # faces whose box is smaller (px) are skipped and counted
    faces: FaceSelection = field(default_factory=FaceSelection)
    detect: DetectConfig = field(default_factory=DetectConfig)
    blend: BlendConfig = field(default_factory=BlendConfig)
    translate: TranslateConfig = field(default_factory=TranslateConfig)
    max_photos_pending: int = 8  # photos held at once while their crops are pooled
    # A target age: each face gets the direction and amount of change that bring its estimated
    # age there (see facecomp.stages.target); ``direction`` and the blend's strength are then unused.
    age: AgeTarget | None = None
    age_max_strength: float = MAX_AGE_STRENGTH  # the most change a target age may ask for
    # Photos: fit each face's strength by estimating its result at several strengths (the
    # calibration curve picks the direction); False: the curve's strength alone, as video uses.
    age_per_face: bool = True

    def __post_init__(self) -> None:
        PIPELINE["direction"].check(self.direction)
        PIPELINE["min_face"].check(self.min_face)
        if not 0.0 <= self.age_max_strength <= 2.0:
            raise ConfigError(f"the largest strength for a target age must be within 0..2, got "
                              f"{self.age_max_strength}")
        if self.age is not None and self.blend.strength != 1.0:
            raise ConfigError("`age` sets each face's strength itself; leave `strength` out")

    @classmethod
    def from_options(cls, **values) -> "PhotoConfig":
        """The config that the pipeline's options describe (:data:`facecomp.options.PIPELINE`:
        their names, defaults and meaning; the ones not given take their defaults). The
        front ends pass what the user chose; ``match_photo`` turns on or off all three of the
        blend's photo-matching steps."""
        unknown = sorted(set(values) - set(PIPELINE))
        if unknown:
            raise ConfigError(f"unknown option{'s' if len(unknown) > 1 else ''} "
                              f"{', '.join(unknown)}; the options are {', '.join(PIPELINE)}")
        v = {name: o.default for name, o in PIPELINE.items()} | values
        target = AgeTarget.parse(v["age"]) if v["age"] is not None else None
        match = bool(v["match_photo"])
        return cls(
            model=v["model"], direction=v["direction"], min_face=v["min_face"], age=target,
            faces=FaceSelection.parse(v["faces"]),
            detect=DetectConfig(min_score=v["min_score"], max_side=v["detect_side"],
                                rotations=v["rotations"]),
            blend=BlendConfig(method=v["blend"], color_match=v["color_match"],
                              mask_scale=v["mask_scale"], feather=v["feather"],
                              strength=v["strength"],
                              chroma_limit=BlendConfig.chroma_limit if match else 0.0,
                              keep_monochrome=match, match_degradation=match,
                              keep_occluders=v["keep_occluders"]),
            translate=TranslateConfig(device=v["device"], batch_size=v["batch_size"],
                                      precision=v["precision"]))


@dataclass(frozen=True, eq=False)
class PhotoResult:
    """What happened to one image. Indices refer to ``faces`` (0-based; shown 1-based)."""

    image: np.ndarray
    faces: list[Face]
    translated: list[int]
    skipped_small: list[int]
    patches: list[Patch]
    timings: dict[str, float]
    ages: list[float] | None = None  # estimated age of each face (when ages were needed)
    plans: dict[int, FacePlan] = field(default_factory=dict)  # with a target age, per face

    def changed_mask(self) -> np.ndarray:
        """(H, W) float32: the union of the face masks; 0 where the image is untouched."""
        full = np.zeros(self.image.shape[:2], np.float32)
        for p in self.patches:
            p.union_into(full)
        return full


@dataclass(frozen=True, eq=False)
class Changed:
    """One image after :meth:`FaceComp.change`: the new image, where each face went (its
    :class:`~facecomp.stages.blend.Patch`), the faces with their crop affine, the aligned and
    translated crops (as pasted, before blending) and seconds per stage."""

    image: np.ndarray
    patches: list[Patch]
    aligned: list[Face]
    crops: np.ndarray
    translated: np.ndarray
    timings: dict[str, float]
    strengths: list[float]  # as pasted (fitted, with targets)
    expected: list[float] | None = None  # with targets: the age each fitted face reads


#: ``translate(crops, directions) -> translated``: replaces the generator call of
#: :meth:`FaceComp.change` (video passes one that steadies each track's change)
TranslateHook = Callable[[np.ndarray, list[str]], np.ndarray]
#: ``color(k, translated_crop, original_crop) -> ColorTransform | None``: the colour match of
#: the k-th face of the call (video smooths it along each track); None measures it as usual
ColorHook = Callable[[int, np.ndarray, np.ndarray], "ColorTransform | None"]


@dataclass
class _Pending:
    image: np.ndarray
    faces: list[Face]
    chosen: list[int]
    small: list[int]
    timings: dict[str, float]
    directions: list[str]  # per chosen face
    strengths: list[float]  # per chosen face
    ages: list[float] | None
    plans: dict[int, FacePlan]


class FaceComp:
    """The photo pipeline. Pass a config, or a ready generator (and its info) and/or detector.

    >>> fc = FaceComp(PhotoConfig(direction="A2B"))          # doctest: +SKIP
    >>> result = fc.process(rgb)                             # RGB uint8 HxWx3 -> PhotoResult

    With ``PhotoConfig(age=AgeTarget.parse("+20"))`` both directions of the model are loaded
    (``generators`` maps direction -> (generator, info) to inject them) and each face gets its
    own direction and strength from the models' age calibrations. ``estimator`` replaces the
    shipped age estimator (anything with ``predict(crops, template) -> ages``); ``occlusion``
    the shipped occlusion model (anything with ``keep_weights(crops, template)``).
    """

    def __init__(self, config: PhotoConfig | None = None, *, generator: nn.Module | None = None,
                 info: ModelInfo | None = None, detector: Detector | None = None,
                 generators: dict[str, tuple[nn.Module, ModelInfo | None]] | None = None,
                 estimator=None, occlusion=None) -> None:
        self.config = config or PhotoConfig()
        c = self.config
        loaded = dict(generators or {})
        if generator is not None:
            loaded.setdefault(c.direction, (generator, info))
        if not loaded:
            loaded[c.direction] = self._load(c.direction)
        if c.age is not None and generators is None:
            for d in DIRECTIONS:
                if d not in loaded:
                    try:
                        loaded[d] = self._load(d)
                    except ModelError as e:  # a one-direction model: faces go one way only
                        log.info("no %s generator: %s", d, e)
        main = c.direction if c.direction in loaded else next(iter(loaded))
        self.info = loaded[main][1]
        self.align = (AlignConfig(self.info.crop_size, self.info.template)
                      if self.info is not None else AlignConfig())
        self.translators = {d: Translator(g, c.translate) for d, (g, _) in loaded.items()}
        self.translator = self.translators[main]
        self.infos = {d: i for d, (_, i) in loaded.items()}
        self.calibrations = {d: i.age_calibration for d, i in self.infos.items()
                             if i is not None and i.age_calibration is not None}
        if c.age is not None and not self.calibrations:
            name = self.info.name if self.info is not None else "this model"
            raise ConfigError(f"model {name} has no age calibration, which a target age needs; "
                              "calibrate it with `facecomp calibrate` or use `strength`")
        self._estimator = estimator
        self._occlusion = occlusion
        self.detector = detector or MTCNNDetector(c.detect, device=str(
            resolve_device(c.translate.device)))

    def _load(self, direction: str) -> tuple[nn.Module, ModelInfo]:
        path = resolve_model(self.config.model, direction)
        generator, info = load_generator(path)
        log.info("model %s: %s -> %s (%s)", path, info.source, info.target, info.name)
        return generator, info

    @property
    def estimator(self):
        """The age estimator (the shipped one unless another was given), loaded on first use."""
        if self._estimator is None:
            from .stages.age import AgeEstimator

            self._estimator = AgeEstimator.load()
        return self._estimator

    @property
    def occlusion(self):
        """The occlusion model (the shipped one unless another was given), loaded on first use;
        None when the blend keeps no occluders or the model is missing (warned once)."""
        if not self.config.blend.keep_occluders:
            return None
        if self._occlusion is None:
            from .stages.occlusion import Occlusion

            try:
                self._occlusion = Occlusion.load()
            except ModelError as e:
                log.warning("what covers faces is repainted: %s", e)
                self._occlusion = False
        return self._occlusion or None

    def keep_weights(self, crops: np.ndarray) -> np.ndarray | None:
        """Per aligned crop, where the face shows (1) and where something covers it (0), as
        the paste-back uses them; None when occluders are not kept."""
        model = self.occlusion
        if model is None or len(crops) == 0:
            return None
        return model.keep_weights(crops, self.align.template)

    @property
    def needs_ages(self) -> bool:
        return self.config.age is not None or self.config.faces.needs_ages

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
            n_crops += len(p.chosen)
            if n_crops >= self.translator.batch_size or \
                    len(pending) >= self.config.max_photos_pending:
                yield from self._finish(pending)
                pending, n_crops = [], 0
        yield from self._finish(pending)

    def detect(self, image: np.ndarray) -> list[Face]:
        return self.detector.detect(_check_image(image))

    @functools.cached_property
    def face_region(self) -> np.ndarray:
        """(S, S) float32 in crop space: the solid part of the face mask, where colours are
        matched (and where video measures how much a face changed between frames)."""
        return color_mask(self.align.crop_size, self.align.template, self.config.blend)

    def large_enough(self, faces: Sequence[Face]) -> list[int]:
        """Indices of the faces at least ``min_face`` pixels wide: the ones that are changed."""
        return [i for i, f in enumerate(faces) if f.size >= self.config.min_face]

    def change(self, images: Sequence[np.ndarray], faces: Sequence[Sequence[Face]], *,
               directions: Sequence[Sequence[str]] | None = None,
               strengths: Sequence[Sequence[float]] | None = None,
               targets: Sequence[Sequence[float]] | None = None,
               translate: TranslateHook | None = None,
               color: ColorHook | None = None) -> list[Changed]:
        """Everything after detection, for a batch of images (photos, or a video's frames):
        align each face, translate all crops in shared generator batches, keep what covers the
        faces, and paste each change back. Photo, video and every other front end call this.

        ``faces[i]``: the faces of ``images[i]`` to change (detected; all of them are changed).
        Per face, matching ``faces``: ``directions`` (default the config's), ``strengths``
        (default the blend's) and, with a target age, ``targets``: the age each face should
        read, for which the strength is fitted on the finished crops
        (:meth:`_fit_strengths`). ``translate`` and ``color`` replace the generator call and
        the colour match measured per face (see :data:`TranslateHook`, :data:`ColorHook`).
        The images are not modified.
        """
        c = self.config
        t0 = time.perf_counter()
        images = [_check_image(im) for im in images]
        aligned = [align_faces(im, list(fs), self.align) for im, fs in zip(images, faces)]
        share_align = (time.perf_counter() - t0) / max(1, len(images))
        counts = [len(fs) for fs in faces]
        crops = (np.concatenate([a[0] for a in aligned]) if sum(counts) else
                 np.empty((0, self.align.crop_size, self.align.crop_size, 3), np.uint8))
        flat_dirs = ([d for ds in directions for d in ds] if directions is not None
                     else [c.direction] * len(crops))
        flat_str = ([float(v) for vs in strengths for v in vs] if strengths is not None
                    else [c.blend.strength] * len(crops))
        t1 = time.perf_counter()
        if len(crops):
            translated = (translate or self.translate)(crops, flat_dirs)
        else:
            translated = crops.copy()
        t2 = time.perf_counter()
        keep = self.keep_weights(crops)
        expected = None
        if targets is not None and len(crops):
            flat_str, expected = self._fit_strengths(
                crops, translated, [t for ts in targets for t in ts], keep)
        t3 = time.perf_counter()
        per_face = ((t2 - t1) / max(1, len(crops)), (t3 - t2) / max(1, len(crops)))
        out: list[Changed] = []
        start = 0
        for i, (image, (own, placed)) in enumerate(zip(images, aligned)):
            n = counts[i]
            t = time.perf_counter()
            colors = None
            if color is not None and c.blend.color_match and n:
                colors = [color(start + k, translated[start + k], own[k]) for k in range(n)]
            new, patches = paste_faces(image, placed, translated[start:start + n], own,
                                       self.align.template, c.blend, colors,
                                       flat_str[start:start + n],
                                       None if keep is None else keep[start:start + n])
            timings = {"align": share_align, "translate": per_face[0] * n,
                       "blend": time.perf_counter() - t + per_face[1] * n}
            out.append(Changed(new, patches, placed, own, translated[start:start + n], timings,
                               list(flat_str[start:start + n]),
                               None if expected is None else list(expected[start:start + n])))
            start += n
        return out

    def estimate_age(self, image: np.ndarray, faces: list[Face]) -> list[float]:
        """The estimated age in years of each face of ``image`` (aligned for the estimator)."""
        if not faces:
            return []
        est = self.estimator
        template = getattr(est, "template", self.align.template)
        size = getattr(getattr(est, "info", None), "input_size", self.align.crop_size)
        crops, _ = align_faces(_check_image(image), faces, AlignConfig(max(size, 16), template))
        return [float(a) for a in est.predict(crops, template)]

    def plan(self, ages: list[float]) -> list[FacePlan]:
        """Per face: the direction and strength that bring its estimated age to the target."""
        if self.config.age is None:
            raise ValueError("plan() needs a target age in the config")
        return [plan_face(a, self.config.age, self.calibrations, self.config.age_max_strength)
                for a in ages]

    def translate(self, crops: np.ndarray, directions: list[str]) -> np.ndarray:
        """Aligned crops -> translated crops, each by the generator of its direction; crops of
        one direction share generator batches."""
        out = np.empty_like(crops)
        for d in dict.fromkeys(directions):
            idx = [k for k, v in enumerate(directions) if v == d]
            out[idx] = self.translators[d](crops[idx])
        return out

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

    def detect_near(self, image: np.ndarray, faces: list[Face]) -> list[Face] | None:
        """Faces the full detector finds near ``faces`` (lost by :meth:`refine`), at a small
        part of a full detection's cost; None if the detector cannot look in a window."""
        near = getattr(self.detector, "detect_near", None)
        if near is None:
            return None
        return near(_check_image(image), faces)

    def _prepare(self, image: np.ndarray) -> _Pending:
        image = _check_image(image)
        c = self.config
        t0 = time.perf_counter()
        faces = self.detector.detect(image)
        t1 = time.perf_counter()
        ages = self.estimate_age(image, faces) if self.needs_ages else None
        t_age = time.perf_counter()
        chosen = c.faces.select(faces, ages)
        small = [i for i in chosen if faces[i].size < c.min_face]
        chosen = [i for i in chosen if faces[i].size >= c.min_face]
        plans: dict[int, FacePlan] = {}
        if c.age is not None:
            plans = dict(zip(chosen, self.plan([ages[i] for i in chosen])))
            chosen = [i for i in chosen if plans[i].direction is not None]
        directions = [plans[i].direction if plans else c.direction for i in chosen]
        strengths = [plans[i].strength if plans else c.blend.strength for i in chosen]
        timings = {"detect": t1 - t0}
        if ages is not None:
            timings["age"] = t_age - t1
        return _Pending(image, faces, chosen, small, timings, directions, strengths, ages, plans)

    def _finish(self, pending: list[_Pending]) -> Iterator[PhotoResult]:
        if not pending:
            return
        fit = self.config.age is not None and self.config.age_per_face
        done = self.change([p.image for p in pending],
                           [[p.faces[i] for i in p.chosen] for p in pending],
                           directions=[p.directions for p in pending],
                           strengths=[p.strengths for p in pending],
                           targets=[[p.plans[i].target for i in p.chosen] for p in pending]
                           if fit else None)
        for p, d in zip(pending, done):
            if fit:
                for j, i in enumerate(p.chosen):
                    p.plans[i] = replace(p.plans[i], strength=d.strengths[j],
                                         expected=d.expected[j])
            yield PhotoResult(d.image, p.faces, p.chosen, p.small, d.patches,
                              {**p.timings, **d.timings}, p.ages, p.plans)

    def _fit_strengths(self, crops: np.ndarray, translated: np.ndarray, goals: list[float],
                       keep: np.ndarray | None = None) -> tuple[list[float], list[float]]:
        """Per face, the strength whose result the estimator reads nearest its target age
        ``goals[k]`` (:func:`facecomp.stages.target.choose_strengths`), and the age it reads then."""
        b, t = self.config.blend, self.align.template
        shown = match_colors(translated, crops, t, b)
        mask = face_mask(self.align.crop_size, t, b.mask_scale, b.feather)
        if keep is not None:  # the paste multiplies each face's mask by what it keeps
            mask = mask * keep
        strengths, expected = choose_strengths(
            crops, shown, goals, lambda x: self.estimator.predict(x, t), mask,
            self.config.age_max_strength)
        return [float(v) for v in strengths], [float(v) for v in expected]


def _check_image(image: np.ndarray) -> np.ndarray:
    image = np.asarray(image)
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise ValueError(f"expected an RGB uint8 HxWx3 image, got {image.shape} {image.dtype}")
    return np.ascontiguousarray(image)
