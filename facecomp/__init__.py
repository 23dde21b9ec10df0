"""facecomp: change faces in group photos with a CycleGAN.

Data flows one way: image -> :class:`Face` records -> aligned crops + affine -> translated crops
-> composited image. The same pipeline the CLI runs is available on numpy arrays (RGB uint8)::

    from facecomp import FaceComp, PhotoConfig, read_image
    result = FaceComp(PhotoConfig(direction="A2B")).process(read_image("group.jpg").rgb)
    result.image  # RGB uint8, faces translated; result.faces, result.patches, result.timings
"""

__version__ = "0.1.0"

# Names are loaded on first use (PEP 562), so ``import facecomp`` and ``facecomp --help`` do
# not pay for torch, OpenCV and the detector; ``from facecomp import FaceComp`` works as ever.
_WHERE = {
    "stages.align": ("AlignConfig", "align_face", "align_faces"),
    "stages.blend": ("BlendConfig", "Patch", "face_mask", "paste_faces"),
    "checkpoint": ("ModelInfo", "list_models", "load_generator", "read_info", "resolve_model",
                   "save_generator"),
    "stages.detect": ("DetectConfig", "Detector", "MTCNNDetector"),
    "errors": ("ConfigError", "FaceCompError", "InputError", "ModelError", "OutputError"),
    "face": ("Face", "FaceSelection"),
    "geometry": ("FACECOMP_V1", "Template"),
    "io": ("LoadedImage", "read_image", "write_image"),
    "networks": ("PatchDiscriminator", "ResnetGenerator"),
    "pipeline": ("FaceComp", "PhotoConfig", "PhotoResult"),
    "stages.target": ("AgeTarget", "Calibration"),
    "stages.translate": ("TranslateConfig", "Translator"),
}
_MODULE_OF = {name: module for module, names in _WHERE.items() for name in names}


def __getattr__(name: str):
    module = _MODULE_OF.get(name)
    if module is None:
        raise AttributeError(f"module 'facecomp' has no attribute {name!r}")
    import importlib

    value = getattr(importlib.import_module(f".{module}", __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_MODULE_OF))


def translate_photo(image, *, model: str | None = None, direction: str = "A2B", **options):
    """One-call convenience: translate the faces of an RGB uint8 array; returns the new array.

    ``options`` are PhotoConfig fields (e.g. ``min_face=24``)."""
    from .pipeline import FaceComp, PhotoConfig

    return FaceComp(PhotoConfig(model=model, direction=direction, **options)).process(image).image


__all__ = [
    "AgeTarget", "AlignConfig", "BlendConfig", "Calibration", "ConfigError", "DetectConfig", "Detector", "FACECOMP_V1", "Face",
    "FaceComp", "FaceCompError", "FaceSelection", "InputError", "LoadedImage", "ModelError",
    "ModelInfo", "MTCNNDetector", "OutputError", "Patch", "PatchDiscriminator", "PhotoConfig",
    "PhotoResult", "ResnetGenerator", "Template", "TranslateConfig", "Translator", "align_face",
    "align_faces", "face_mask", "list_models", "load_generator", "paste_faces", "read_image",
    "read_info", "resolve_model", "save_generator", "translate_photo", "write_image",
]
