"""facecomp: change faces in group photos with a CycleGAN.

Data flows one way: image -> :class:`Face` records -> aligned crops + affine -> translated crops
-> composited image. The same pipeline the CLI runs is available on numpy arrays (RGB uint8)::

    from facecomp import FaceComp, PhotoConfig, read_image
    result = FaceComp(PhotoConfig(direction="A2B")).process(read_image("group.jpg").rgb)
    result.image  # RGB uint8, faces translated; result.faces, result.patches, result.timings
"""

__version__ = "0.1.0"

from .align import AlignConfig, align_face, align_faces  # noqa: E402
from .blend import BlendConfig, Patch, face_mask, paste_faces  # noqa: E402
from .checkpoint import (ModelInfo, list_models, load_generator, read_info,  # noqa: E402
                         resolve_model, save_generator)
from .detect import DetectConfig, Detector, MTCNNDetector  # noqa: E402
from .errors import ConfigError, FaceCompError, InputError, ModelError, OutputError  # noqa: E402
from .face import Face  # noqa: E402
from .geometry import FACECOMP_V1, Template  # noqa: E402
from .io import LoadedImage, read_image, write_image  # noqa: E402
from .networks import PatchDiscriminator, ResnetGenerator  # noqa: E402
from .pipeline import FaceComp, FaceSelection, PhotoConfig, PhotoResult  # noqa: E402
from .target import AgeTarget, Calibration  # noqa: E402
from .translate import TranslateConfig, Translator  # noqa: E402


def translate_photo(image, *, model: str | None = None, direction: str = "A2B", **options):
    """One-call convenience: translate the faces of an RGB uint8 array; returns the new array.

    ``options`` are PhotoConfig fields (e.g. ``min_face=24``)."""
    return FaceComp(PhotoConfig(model=model, direction=direction, **options)).process(image).image


__all__ = [
    "AgeTarget", "AlignConfig", "BlendConfig", "Calibration", "ConfigError", "DetectConfig", "Detector", "FACECOMP_V1", "Face",
    "FaceComp", "FaceCompError", "FaceSelection", "InputError", "LoadedImage", "ModelError",
    "ModelInfo", "MTCNNDetector", "OutputError", "Patch", "PatchDiscriminator", "PhotoConfig",
    "PhotoResult", "ResnetGenerator", "Template", "TranslateConfig", "Translator", "align_face",
    "align_faces", "face_mask", "list_models", "load_generator", "paste_faces", "read_image",
    "read_info", "resolve_model", "save_generator", "translate_photo", "write_image",
]
