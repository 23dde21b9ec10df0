"""The whole array pipeline with the real detector and tiny known generators."""

from __future__ import annotations

import numpy as np
import pytest

from facecomp.errors import ConfigError
from facecomp.face import FaceSelection
from facecomp.pipeline import FaceComp, PhotoConfig
from facecomp.stages.translate import TranslateConfig

from .conftest import CountingGenerator, Identity, Invert, load_rgb, make_info, media


def _fc(detector, gen=None, **kw):
    return FaceComp(PhotoConfig(**kw), generator=gen or Invert(),
                    info=make_info("test_invert"), detector=detector)


def test_inverting_changes_only_the_face_masks(detector, group_image):
    before = group_image.copy()
    r = _fc(detector).process(group_image)
    assert np.array_equal(group_image, before)  # the input array is not modified
    mask = r.changed_mask()
    assert r.translated == list(range(6)) and len(r.patches) == 6
    assert np.array_equal(r.image[mask == 0], group_image[mask == 0])
    diff = np.abs(r.image.astype(int) - group_image.astype(int)).max(axis=2)
    assert diff[mask >= 0.999].mean() > 40
    assert set(r.timings) == {"detect", "align", "translate", "blend"}


def test_identity_generator_leaves_the_photo_as_it_was(detector, group_image):
    r = _fc(detector, Identity()).process(group_image)
    assert np.abs(r.image.astype(int) - group_image.astype(int)).max() <= 1


def test_photos_share_batches_and_match_one_at_a_time(detector, group_image):
    flipped = np.ascontiguousarray(group_image[:, ::-1])
    gen = CountingGenerator(Invert())
    fc = _fc(detector, gen, translate=TranslateConfig(device="cpu", batch_size=16))
    together = list(fc.process_many([group_image, flipped]))
    assert gen.calls == [12]  # 6 + 6 crops of two photos in one pass
    alone = [fc.process(group_image), fc.process(flipped)]
    for a, b in zip(together, alone):
        assert np.array_equal(a.image, b.image)


def test_a_photo_with_30_plus_faces_is_processed_in_chunks(detector, group_image):
    big = np.concatenate([np.concatenate([group_image] * 3, axis=1)] * 2, axis=0)  # 36 faces
    gen = CountingGenerator(Invert())
    r = _fc(detector, gen, translate=TranslateConfig(device="cpu", batch_size=8)).process(big)
    assert len(r.translated) >= 34
    assert max(gen.calls) <= 8 and sum(gen.calls) == len(r.translated)
    mask = r.changed_mask()
    assert np.array_equal(r.image[mask == 0], big[mask == 0])


def test_hundred_face_staff_photo(detector):
    img = load_rgb(media("group_20_staff_photo_100faces.jpg"))
    gen = CountingGenerator(Invert())
    r = _fc(detector, gen, min_face=0,
            translate=TranslateConfig(device="cpu", batch_size=32)).process(img)
    assert len(r.translated) >= 90 and max(gen.calls) <= 32


def test_small_faces_are_skipped_and_counted(detector, group_image):
    r = _fc(detector, min_face=100).process(group_image)
    sizes = [f.size for f in r.faces]
    assert r.skipped_small == [i for i, s in enumerate(sizes) if s < 100]
    assert r.translated == [i for i, s in enumerate(sizes) if s >= 100]
    assert r.skipped_small and r.translated


def test_face_selection(detector, group_image):
    largest = _fc(detector, faces=FaceSelection.parse("largest")).process(group_image)
    sizes = [f.size for f in largest.faces]
    assert largest.translated == [int(np.argmax(sizes))]
    some = _fc(detector, faces=FaceSelection.parse("2, 5,99")).process(group_image)
    assert some.translated == [1, 4]
    for bad in ("", "0", "first", "1,-2"):
        with pytest.raises(ConfigError):
            FaceSelection.parse(bad)


def test_no_faces_means_an_unchanged_image(detector):
    img = np.full((200, 300, 3), 90, np.uint8)
    r = _fc(detector).process(img)
    assert r.faces == [] and r.translated == [] and np.array_equal(r.image, img)


def test_grayscale_photo(detector):
    img = load_rgb(media("group_07_solvay1927_gray.jpg"))
    r = _fc(detector, min_face=0).process(img)
    assert len(r.translated) >= 25


def test_rejects_non_rgb_arrays(detector):
    with pytest.raises(ValueError):
        _fc(detector).process(np.zeros((10, 10), np.uint8))


def test_the_shipped_default_model_runs(detector, group_image):
    fc = FaceComp(PhotoConfig(), detector=detector)
    assert fc.info is not None and fc.info.crop_size == fc.align.crop_size
    r = fc.process(group_image)
    mask = r.changed_mask()
    assert len(r.translated) == 6
    assert np.array_equal(r.image[mask == 0], group_image[mask == 0])
    assert np.abs(r.image.astype(int) - group_image.astype(int))[mask >= 0.999].mean() > 1


def test_refine_keeps_one_face_per_face_and_needs_a_refining_detector(detector, group_image):
    fc = FaceComp(PhotoConfig(), generator=Identity(), info=make_info("test_identity"),
                  detector=detector)
    faces = fc.detect(group_image)
    again = fc.refine(group_image, faces + faces[:2])  # two tracks on the same faces
    assert len(again) == len(faces) == 6
    for a, b in zip(faces, again):  # the same still image: the same faces, numbered alike
        assert np.abs(a.landmarks - b.landmarks).max() < max(2.0, 0.03 * a.size)

    class DetectOnly:
        def detect(self, image):
            return faces

    plain = FaceComp(PhotoConfig(), generator=Identity(), info=make_info("test_identity"),
                     detector=DetectOnly())
    assert plain.refine(group_image, faces) is None
