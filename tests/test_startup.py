"""Start-up: the package, the CLI and its help load nothing heavy; the detector loads MTCNN
without facenet-pytorch's package import (which pulls in torchvision's model zoo and
torch._dynamo). Checked in fresh interpreters, by what is imported, not by timing."""

from __future__ import annotations

import json
import subprocess
import sys

HEAVY = ("torch", "cv2", "numpy", "PIL", "av", "facenet_pytorch", "torchvision")


def _loaded_after(code: str) -> list[str]:
    probe = (code + "\nimport sys, json\n"
             f"print(json.dumps([m for m in {HEAVY + ('torch._dynamo',)!r} if m in sys.modules]))")
    proc = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout.strip().splitlines()[-1])


def test_the_package_and_the_cli_help_import_nothing_heavy():
    assert _loaded_after("import facecomp, facecomp.frontends.cli, facecomp.errors") == []
    help_run = ("import sys\nsys.argv = ['facecomp', '--help']\nfrom facecomp.frontends.cli import main\n"
                "try:\n    main()\nexcept SystemExit as e:\n    assert e.code == 0, e.code\n")
    assert _loaded_after(help_run) == []


def test_names_still_come_from_the_package_on_first_use():
    import facecomp

    assert facecomp.FaceSelection.parse("1,3").indices == (1, 3)
    assert facecomp.FaceComp.__module__ == "facecomp.pipeline"
    assert set(facecomp.__all__) <= set(dir(facecomp))
    try:
        facecomp.NoSuchThing  # noqa: B018
    except AttributeError as e:
        assert "NoSuchThing" in str(e)
    else:
        raise AssertionError("an unknown name must raise AttributeError")


def test_the_detector_on_the_cpu_needs_neither_torchvision_nor_facenets_package():
    loaded = _loaded_after("from facecomp.stages.detect import MTCNNDetector\nMTCNNDetector()")
    assert "torch" in loaded
    assert not {"torchvision", "facenet_pytorch", "torch._dynamo"} & set(loaded), loaded


def test_listing_the_models_reads_their_metadata_without_torch():
    loaded = _loaded_after("from facecomp.checkpoint import list_models\n"
                           "assert len(list_models()) >= 2")
    assert "torch" not in loaded, loaded
