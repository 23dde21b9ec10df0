"""Checkpoints: self-describing safetensors, exact round trip, clear errors, never pickle."""

from __future__ import annotations

import json
import os
import pickle
from pathlib import Path

import pytest
import torch

from facecomp.checkpoint import (DEFAULT_MODEL, ModelInfo, list_models, load_generator, read_info,
                                 resolve_model, save_generator, shipped_models_dir)
from facecomp.errors import ModelError
from facecomp.geometry import FACECOMP_V1
from facecomp.networks import ResnetGenerator

from .conftest import make_info


def _gen(seed=0, **kw):
    torch.manual_seed(seed)
    return ResnetGenerator(ngf=8, n_blocks=2, **kw).eval()


def _info(direction="A2B", **kw):
    return make_info("resnet_generator", direction, crop=64, name="tiny",
                     arch_args={"ngf": 8, "n_blocks": 2}, **kw)


def test_save_then_load_gives_identical_outputs(tmp_path):
    gen = _gen()
    path = tmp_path / "tiny.A2B.safetensors"
    save_generator(path, gen, _info())
    loaded, info = load_generator(path)
    x = torch.rand(2, 3, 64, 64) * 2 - 1
    with torch.no_grad():
        assert torch.equal(gen(x), loaded(x))
    assert info == _info() or info.to_json() == _info().to_json()
    assert info.template == FACECOMP_V1 and info.crop_size == 64
    assert info.source == "plain" and info.target == "inverted"


def test_metadata_is_readable_without_loading_weights(tmp_path):
    path = tmp_path / "m.safetensors"
    save_generator(path, _gen(), _info("B2A"))
    from safetensors import safe_open

    with safe_open(str(path), "pt") as f:
        meta = f.metadata()
    assert meta["format"] == "facecomp-generator" and meta["format_version"] == "1"
    d = json.loads(meta["info"])
    assert d["architecture"] == "resnet_generator" and d["direction"] == "B2A"
    assert d["arch_args"] == {"ngf": 8, "n_blocks": 2} and len(d["template"]["points"]) == 5
    assert read_info(path).direction == "B2A"


def test_fp16_storage_is_half_the_size_and_loads_as_float32(tmp_path):
    a, b = tmp_path / "a.safetensors", tmp_path / "b.safetensors"
    save_generator(a, _gen(), _info())
    save_generator(b, _gen(), _info(), dtype=torch.float16)
    assert b.stat().st_size < 0.6 * a.stat().st_size
    net, _ = load_generator(b)
    assert all(p.dtype == torch.float32 for p in net.parameters())


def test_truncated_file_is_a_clear_error(tmp_path):
    path = tmp_path / "m.safetensors"
    save_generator(path, _gen(), _info())
    data = path.read_bytes()
    for cut in (10, len(data) // 2):
        bad = tmp_path / f"cut{cut}.safetensors"
        bad.write_bytes(data[:cut])
        with pytest.raises(ModelError) as e:
            load_generator(bad)
        assert str(bad) in str(e.value) and "\n" not in str(e.value)


def test_garbage_and_foreign_files_are_clear_errors(tmp_path):
    junk = tmp_path / "junk.safetensors"
    junk.write_bytes(os.urandom(300))
    with pytest.raises(ModelError, match="corrupt|truncated|readable"):
        load_generator(junk)
    from safetensors.torch import save_file

    foreign = tmp_path / "foreign.safetensors"
    save_file({"w": torch.zeros(3)}, str(foreign))
    with pytest.raises(ModelError, match="without facecomp metadata"):
        load_generator(foreign)


def test_wrong_architecture_or_size_names_what_was_expected(tmp_path):
    path = tmp_path / "m.safetensors"
    save_generator(path, _gen(), _info())
    # Same weights, metadata claiming a bigger network.
    wrong = tmp_path / "wrong.safetensors"
    info = ModelInfo(**{**_info().__dict__, "arch_args": {"ngf": 16, "n_blocks": 2}})
    from safetensors.torch import load_file, save_file

    save_file(load_file(str(path)), str(wrong),
              metadata={"format": "facecomp-generator", "format_version": "1",
                        "info": info.to_json()})
    with pytest.raises(ModelError, match=r"do not fit resnet_generator\(n_blocks=2, ngf=16\)"):
        load_generator(wrong)
    info = ModelInfo(**{**_info().__dict__, "architecture": "unet"})
    save_file(load_file(str(path)), str(wrong),
              metadata={"format": "facecomp-generator", "format_version": "1",
                        "info": info.to_json()})
    with pytest.raises(ModelError, match="cannot build architecture 'unet'"):
        load_generator(wrong)


class _Boom:
    def __reduce__(self):
        return (Path.touch, (Path(os.environ["FACECOMP_TEST_CANARY"]),))


def test_a_pickle_checkpoint_is_refused_and_never_unpickled(tmp_path, monkeypatch):
    canary = tmp_path / "canary"
    monkeypatch.setenv("FACECOMP_TEST_CANARY", str(canary))
    for name in ("evil.pt", "evil.pth", "evil.safetensors"):
        evil = tmp_path / name
        evil.write_bytes(pickle.dumps({"state_dict": _Boom()}))
        with pytest.raises(ModelError):
            load_generator(evil)
        with pytest.raises(ModelError):
            resolve_model(str(evil), "A2B")
    assert not canary.exists()
    pickle.loads(pickle.dumps(_Boom()))  # the payload does work when unpickled ...
    assert canary.exists()  # ... so the test would catch a loader that unpickles


def test_resolve_by_file_folder_and_name(tmp_path, monkeypatch):
    d = tmp_path / "zoo"
    d.mkdir()
    save_generator(d / "tiny.A2B.safetensors", _gen(0), _info("A2B"))
    save_generator(d / "tiny.B2A.safetensors", _gen(1), _info("B2A"))
    a2b, b2a = d / "tiny.A2B.safetensors", d / "tiny.B2A.safetensors"
    assert resolve_model(str(a2b), "A2B") == a2b
    assert resolve_model(str(a2b), "B2A") == b2a  # the sibling of the same model
    assert resolve_model(str(d), "B2A") == b2a
    monkeypatch.setenv("FACECOMP_MODELS", str(d))
    assert resolve_model("tiny", "B2A") == b2a
    with pytest.raises(ModelError, match="no model named 'nope'.*tiny"):
        resolve_model("nope", "A2B")
    with pytest.raises(ModelError, match="no such model file"):
        resolve_model(str(tmp_path / "missing.safetensors"), "A2B")
    b2a.unlink()
    with pytest.raises(ModelError, match="translates A2B"):
        resolve_model(str(a2b), "B2A")


def test_the_shipped_default_model_is_found_and_loads():
    entries = list_models([shipped_models_dir()])
    directions = {e.info.direction for e in entries if e.info.name == DEFAULT_MODEL}
    assert directions == {"A2B", "B2A"}
    net, info = load_generator(resolve_model(None, "A2B"))
    x = torch.zeros(1, 3, info.crop_size, info.crop_size)
    with torch.no_grad():
        y = net(x)
    assert y.shape == x.shape and torch.isfinite(y).all()


def test_model_files_get_normal_permissions(tmp_path):
    """safetensors writes through its own temporary file (mode 0600); ours must be normal."""
    import stat

    path = tmp_path / "m.safetensors"
    save_generator(path, _gen(), _info())
    umask = os.umask(0)
    os.umask(umask)
    assert stat.S_IMODE(path.stat().st_mode) == 0o666 & ~umask


# --- hostile model files: a model is an input like any other ------------------------------


def _small(tmp_path: Path, name: str = "m.safetensors") -> Path:
    path = tmp_path / name
    net = ResnetGenerator(ngf=4, n_blocks=1)
    save_generator(path, net, make_info("resnet_generator", arch_args={"ngf": 4, "n_blocks": 1}))
    return path


def _with_info(src: Path, dst: Path, edit) -> Path:
    """A copy of ``src`` whose metadata JSON text was changed by ``edit``."""
    from safetensors import safe_open
    from safetensors.torch import load_file, save_file

    with safe_open(str(src), framework="pt") as f:
        meta = dict(f.metadata())
    meta["info"] = edit(meta["info"])
    save_file(load_file(str(src)), str(dst), metadata=meta)
    return dst


def test_huge_architecture_arguments_are_refused_before_allocating(tmp_path):
    path = _small(tmp_path)
    for value in ("20000", "1e400", "-5"):
        bad = _with_info(path, tmp_path / "huge.safetensors",
                         lambda t: t.replace('"ngf": 4', f'"ngf": {value}'))
        with pytest.raises(ModelError, match="refused|fit|cannot build") as e:
            load_generator(bad)
        assert "huge.safetensors" in str(e.value)
    # a plausible size whose header shapes do not match: found on the meta device, no weights
    bad = _with_info(path, tmp_path / "mid.safetensors",
                     lambda t: t.replace('"ngf": 4', '"ngf": 512'))
    with pytest.raises(ModelError, match="do not fit"):
        load_generator(bad)


def test_metadata_that_used_to_crash_is_refused(tmp_path):
    path = _small(tmp_path)
    cases = {
        "crop": lambda t: t.replace('"crop_size": 128', '"crop_size": 1e400'),
        "nested": lambda t: t.replace('"extra": {}', '"extra": ' + "[" * 5000 + "]" * 5000),
        "template": lambda t: json.dumps({**json.loads(t), "template": {
            "name": "flat", "points": [[0.5, 0.5]] * 5}}),
    }
    for name, edit in cases.items():
        bad = _with_info(path, tmp_path / f"{name}.safetensors", edit)
        with pytest.raises(ModelError) as e:
            read_info(bad)
        assert f"{name}.safetensors" in str(e.value), name


def test_nan_weights_are_refused_at_load(tmp_path):
    from safetensors import safe_open
    from safetensors.torch import load_file, save_file

    path = _small(tmp_path)
    tensors = load_file(str(path))
    key = next(k for k, v in tensors.items() if v.is_floating_point())
    tensors[key] = torch.full_like(tensors[key], float("inf"))
    with safe_open(str(path), framework="pt") as f:
        meta = f.metadata()
    save_file(tensors, str(tmp_path / "inf.safetensors"), metadata=meta)
    with pytest.raises(ModelError, match="NaN or infinite"):
        load_generator(tmp_path / "inf.safetensors")


def test_a_fifo_and_a_bad_file_in_the_model_folder_are_skipped(tmp_path, monkeypatch, caplog):
    d = tmp_path / "models"
    d.mkdir()
    good = _small(d, "good.safetensors")
    os.mkfifo(d / "pipe.safetensors")  # reading it would block forever
    _with_info(good, d / "deep.safetensors", lambda t: t.replace(
        '"extra": {}', '"extra": ' + "[" * 5000 + "]" * 5000))
    monkeypatch.setenv("FACECOMP_MODELS", f"{d}{os.pathsep}{tmp_path / 'missing'}")
    found = [e.path.name for e in list_models()]
    assert "good.safetensors" in found and "pipe.safetensors" not in found
    assert "deep.safetensors" not in found
    text = caplog.text
    assert "not a regular file" in text and "deep.safetensors" in text and "missing" in text
    assert resolve_model("testmodel", "A2B") == good  # one bad file breaks nothing else


def test_a_full_disk_while_saving_is_one_line_and_leaves_nothing(tmp_path, monkeypatch):
    """safetensors raises its own error type when the disk fills: an OutputError, no file."""
    import safetensors.torch

    from facecomp.errors import OutputError

    def full(*a, **k):
        raise safetensors.SafetensorError("Error while serializing: No space left on device")

    monkeypatch.setattr(safetensors.torch, "save_file", full)
    with pytest.raises(OutputError, match="disk"):
        save_generator(tmp_path / "m.safetensors", ResnetGenerator(ngf=4, n_blocks=1),
                       make_info("resnet_generator", arch_args={"ngf": 4, "n_blocks": 1}))
    assert list(tmp_path.iterdir()) == []
