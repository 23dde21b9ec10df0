"""Training with tiny networks on tiny images: it learns something, saves in the inference
format, resumes bit-exactly, handles progressive sizes, DDP (gloo) and bad input."""

from __future__ import annotations

import json
import os
import socket
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from facecomp.checkpoint import load_generator, read_info, resolve_model
from facecomp.errors import ConfigError, InputError, TrainingDiverged
from facecomp.training import runs, step
from facecomp.training import train as T
from facecomp.training.config import TrainConfig
from facecomp.training.runs import weights_digest
from facecomp.training.train import train

from ..conftest import SAMPLES, TINY_FLAGS


@pytest.fixture(scope="module")
def domains(tmp_path_factory) -> tuple[Path, Path]:
    """Two small unpaired domains: crops of the sample photo (A) and their negatives (B)."""
    root = tmp_path_factory.mktemp("domains")
    img = np.asarray(Image.open(SAMPLES / "group.jpg").convert("RGB"))
    rng = np.random.default_rng(0)
    for d in ("a", "b"):
        (root / d).mkdir()
    for i in range(6):
        y, x = rng.integers(0, img.shape[0] - 40), rng.integers(0, img.shape[1] - 40)
        crop = img[y:y + 40, x:x + 40]
        Image.fromarray(crop).save(root / "a" / f"{i}.png")
        Image.fromarray(255 - crop).save(root / "b" / f"{i}.png")
    return root / "a", root / "b"


def tiny(domains, out: Path, **kw) -> TrainConfig:
    base = dict(a=str(domains[0]), b=str(domains[1]), out=str(out), name="tiny", size=32,
                ngf=4, n_blocks=1, ndf=8, n_layers_d=2, n_epochs=1, n_epochs_decay=2,
                epoch_size=3, pool_size=2, workers=0, log_every=1, sample_every=1000,
                save_every=1000, precision="fp32", seed=0)
    return TrainConfig(**{**base, **kw})


def _state_digests(run: Path) -> dict[str, str]:
    s = torch.load(run / runs.STATE_FILE, weights_only=True)
    out = {k: _digest(v) for k, v in s["nets"].items()}
    out["pools"] = _digest({"a": s["pool_A"]["images"], "b": s["pool_B"]["images"]})
    out["opt_G"] = _digest({str(k): v for k, v in s["opt_G"]["state"].items()})
    out["lr"] = str(s["sched_G"]["_last_lr"])
    return out


def _digest(tree) -> str:
    import hashlib

    h = hashlib.sha256()

    def walk(x):
        if isinstance(x, dict):
            for k in sorted(x):
                h.update(str(k).encode())
                walk(x[k])
        elif isinstance(x, torch.Tensor):
            h.update(x.detach().cpu().contiguous().numpy().tobytes())
        else:
            h.update(repr(x).encode())

    walk(tree)
    return h.hexdigest()


def test_a_few_steps_learn_and_the_result_works_in_the_photo_pipeline(domains, tmp_path,
                                                                      group_image, detector):
    torch.manual_seed(0)
    before = weights_digest(step.build_nets(tiny(domains, tmp_path / "x"), torch.device("cpu")).G_A)
    run = tmp_path / "run"
    result = train(tiny(domains, run, max_steps=4, sample_every=2))
    assert result.step == 4 and weights_digest(result.G_A) != before
    stats = [json.loads(ln) for ln in (run / "stats.jsonl").read_text().splitlines()]
    assert [s["step"] for s in stats] == [1, 2, 3, 4]
    assert all(np.isfinite(v) for s in stats for k, v in s.items() if isinstance(v, float))
    assert {"G_A", "G_B", "cycle_A", "cycle_B", "idt_A", "idt_B", "D_A", "D_B"} <= set(stats[0])
    assert json.loads((run / "config.json").read_text())["ngf"] == 4
    assert (run / "samples" / "step_0000002.jpg").is_file()
    # the generators are inference checkpoints: save -> load gives identical outputs ...
    loaded, info = load_generator(resolve_model(str(run), "A2B"))
    x = torch.rand(2, 3, 32, 32) * 2 - 1
    trained = result.G_A.eval()
    assert all(torch.equal(v, trained.state_dict()[k]) for k, v in loaded.state_dict().items())
    with torch.no_grad():  # same weights; the trained copy is channels_last (summation order)
        assert torch.allclose(loaded(x), trained(x), atol=1e-5)
    assert info.crop_size == 32 and info.domains == {"A": "A", "B": "B"}
    # ... that the photo pipeline uses directly
    from facecomp.pipeline import FaceComp, PhotoConfig

    r = FaceComp(PhotoConfig(model=str(run), direction="B2A"), detector=detector).process(
        group_image)
    assert len(r.translated) == 6 and r.image.shape == group_image.shape


def test_resume_is_bit_identical_to_an_uninterrupted_run(domains, tmp_path):
    """3 steps + resume + 4 steps == 7 steps: crosses epoch boundaries (LR decay), fills and
    swaps the image pools, restarts data mid-epoch."""
    whole, split = tmp_path / "whole", tmp_path / "split"
    train(tiny(domains, whole, max_steps=7))
    train(tiny(domains, split, max_steps=3))
    with pytest.raises(ConfigError, match="`resume=True`"):
        train(tiny(domains, split, max_steps=7))
    train(tiny(domains, split, max_steps=7), resume=True)
    a, b = _state_digests(whole), _state_digests(split)
    assert a == b
    lines = (split / "stats.jsonl").read_text().splitlines()
    assert [json.loads(ln)["step"] for ln in lines] == list(range(1, 8))


def test_resume_after_a_crash_trims_stats_and_continues(domains, tmp_path):
    run = tmp_path / "run"
    train(tiny(domains, run, max_steps=2))
    with open(run / "stats.jsonl", "a") as f:  # a crash after logging step 3, before saving
        f.write(json.dumps({"step": 3, "G": 1.0}) + "\n")
    (run / ".facecomp-tmp-deadbeef.pt").write_bytes(b"half a checkpoint")
    train(tiny(domains, run, max_steps=4), resume=True)
    steps = [json.loads(ln)["step"] for ln in (run / "stats.jsonl").read_text().splitlines()]
    assert steps == [1, 2, 3, 4]
    assert not list(run.glob(".facecomp-tmp-*"))  # the killed run's temporary file is swept


def test_a_run_killed_before_its_first_checkpoint_starts_afresh_cleanly(domains, tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    (run / "stats.jsonl").write_text(json.dumps({"step": 1, "G": 1.0}) + "\n")  # no state saved
    (run / ".facecomp-tmp-deadbeef.pt").write_bytes(b"half a checkpoint")
    train(tiny(domains, run, max_steps=2))
    steps = [json.loads(ln)["step"] for ln in (run / "stats.jsonl").read_text().splitlines()]
    assert steps == [1, 2]
    assert not list(run.glob(".facecomp-tmp-*"))


def test_progressive_sizes_carry_the_weights(domains, tmp_path):
    run = tmp_path / "run"
    c = tiny(domains, run, schedule="32:1,48:2", sample_every=3)
    assert [c.size_at(e) for e in range(3)] == [32, 48, 48] and c.final_size == 48
    result = train(c)
    assert result.step == 9 and result.epoch == 3
    _, info = load_generator(run / "tiny.A2B.safetensors")
    assert info.crop_size == 48
    grid = Image.open(run / "samples" / "step_0000009.jpg")
    assert grid.size[1] == 6 * 48


def test_nan_loss_stops_with_a_message_and_keeps_the_last_checkpoint(domains, tmp_path,
                                                                     monkeypatch):
    run = tmp_path / "run"
    train(tiny(domains, run, max_steps=2))
    good = _state_digests(run)
    real = step.lsgan
    calls = {"n": 0}

    def poisoned(pred, real_label):
        calls["n"] += 1
        out = real(pred, real_label)
        return out * float("nan") if calls["n"] > 6 else out  # from step 4 on

    monkeypatch.setattr(step, "lsgan", poisoned)
    with pytest.raises(TrainingDiverged, match="became nan"):
        train(tiny(domains, run, max_steps=6, save_every=1), resume=True)
    assert _state_digests(run)["G_A"] != good["G_A"]  # step 3 was saved (save_every=1) ...
    s = torch.load(run / runs.STATE_FILE, weights_only=True)
    assert s["step"] == 3 and all(torch.isfinite(v).all() for v in s["nets"]["G_A"].values())


def test_bad_inputs_are_clear_errors(domains, tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(InputError, match="no images"):
        train(tiny(domains, tmp_path / "r1", a=str(empty)))
    with pytest.raises(InputError, match="no such folder"):
        train(tiny(domains, tmp_path / "r2", b=str(tmp_path / "missing")))
    with pytest.raises(InputError, match="`batch_size` is 8"):
        train(tiny(domains, tmp_path / "r3", batch_size=8))
    bad = tmp_path / "bad"
    bad.mkdir()
    for i in range(3):
        Image.new("RGB", (40, 40), (i * 50, 0, 0)).save(bad / f"{i}.png")
    (bad / "3.png").write_bytes(b"\x89PNG\r\n\x1a\n broken")
    with pytest.raises(InputError, match="3.png: unreadable image"):
        train(tiny(domains, tmp_path / "r4", a=str(bad)))
    with pytest.raises(ConfigError, match="multiples of 4"):
        tiny(domains, tmp_path, size=30)
    with pytest.raises(ConfigError, match="covers 2 epochs"):
        tiny(domains, tmp_path, schedule="32:1,48:1", n_epochs=2, n_epochs_decay=2)
    with pytest.raises(ConfigError, match="no training state"):
        train(tiny(domains, tmp_path / "r5"), resume=True)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _ddp_worker(rank: int, world: int, port: int, config: TrainConfig, out: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank),
                      WORLD_SIZE=str(world), LOCAL_RANK=str(rank))
    torch.set_num_threads(1)
    result = train(config)
    Path(out, f"rank{rank}.json").write_text(json.dumps(
        {"G_A": weights_digest(result.G_A), "G_B": weights_digest(result.G_B),
         "step": result.step}))
    torch.distributed.destroy_process_group()


def test_ddp_with_two_gloo_processes_keeps_ranks_identical(domains, tmp_path):
    import torch.multiprocessing as mp

    run = tmp_path / "run"
    c = tiny(domains, run, max_steps=2, epoch_size=4)
    mp.spawn(_ddp_worker, args=(2, _free_port(), c, str(tmp_path)), nprocs=2, join=True)
    r0, r1 = (json.loads((tmp_path / f"rank{i}.json").read_text()) for i in (0, 1))
    assert r0 == r1 and r0["step"] == 2
    saved, _ = load_generator(run / "tiny.A2B.safetensors")
    assert weights_digest(saved) == r0["G_A"]  # rank 0 saved what every rank holds


def test_the_template_comes_from_the_prepared_folders(domains, tmp_path):
    import shutil

    a, b = tmp_path / "a", tmp_path / "b"
    shutil.copytree(domains[0], a)
    shutil.copytree(domains[1], b)
    for d in (a, b):
        (d / "prepare.jsonl").write_text(json.dumps(
            {"name": "x.jpg", "status": "written", "outputs": [], "size": 32,
             "template": "facecomp-tight", "keep": "largest"}) + "\n")
    train(tiny((a, b), tmp_path / "run", max_steps=1))
    _, info = load_generator(tmp_path / "run" / "tiny.A2B.safetensors")
    assert info.template.name == "facecomp-tight"
    assert json.loads((tmp_path / "run" / "config.json").read_text())["template"] == \
        "facecomp-tight"
    (b / "prepare.jsonl").write_text(json.dumps(
        {"name": "x.jpg", "status": "written", "outputs": [], "size": 32,
         "template": "facecomp-v1", "keep": "largest"}) + "\n")
    with pytest.raises(ConfigError, match="different templates"):
        train(tiny((a, b), tmp_path / "run2", max_steps=1))


def test_cli_dry_run_config_file_and_overrides(domains, tmp_path):
    from typer.testing import CliRunner

    from facecomp.frontends.cli import app

    cfg = tmp_path / "cfg.json"
    cfg.write_text(json.dumps({"ngf": 16, "lambda_cycle": 5.0, "n-blocks": 3}))
    r = CliRunner().invoke(app, ["train", "--a", str(domains[0]), "--b", str(domains[1]),
                                 "--out", str(tmp_path / "run"), "--config", str(cfg),
                                 "--ngf", "8", "--dry-run"])
    assert r.exit_code == 0, r.output
    resolved = json.loads(r.stdout)
    assert resolved["ngf"] == 8 and resolved["lambda_cycle"] == 5.0 and resolved["n_blocks"] == 3
    assert not (tmp_path / "run").exists()  # a dry run writes nothing
    cfg.write_text(json.dumps({"learning_rate": 1}))
    r = CliRunner().invoke(app, ["train", "--a", "x", "--b", "y", "--out", "z", "--config",
                                 str(cfg)])
    assert r.exit_code == 2 and "unknown option 'learning_rate'" in r.stderr


def test_cli_trains_resumes_and_reports(domains, tmp_path):
    from typer.testing import CliRunner

    from facecomp.frontends.cli import app

    run = tmp_path / "run"
    base = ["train", "--a", str(domains[0]), "--b", str(domains[1]), "--out", str(run)]
    r = CliRunner().invoke(app, base + TINY_FLAGS + ["--max-steps", "1"])
    assert r.exit_code == 0, r.output
    assert "stopped at step 1" in r.stderr and f"--model {run}" in r.stderr
    r = CliRunner().invoke(app, ["train", "--out", str(run), "--resume"])
    assert r.exit_code == 0, r.output
    assert "stopped at step 4" in r.stderr  # 2 epochs x 2 steps, continued to the end
    r = CliRunner().invoke(app, base + TINY_FLAGS)
    assert r.exit_code == 2 and "already holds a training run" in r.stderr
    r = CliRunner().invoke(app, ["train", "--out", str(tmp_path / "new")])
    assert r.exit_code == 2 and "--a and --b are required" in r.stderr


def test_fp16_with_loss_scaling_trains_and_resumes(domains, tmp_path):
    """The GradScaler path (used on GPUs without bf16) runs on the CPU too; its state resumes."""
    run = tmp_path / "run"
    train(tiny(domains, run, max_steps=2, precision="fp16"))
    s = torch.load(run / runs.STATE_FILE, weights_only=True)
    assert len(s["scalers"]) == 2 and s["scalers"][0]["scale"] > 0
    result = train(tiny(domains, run, max_steps=3, precision="fp16"), resume=True)
    assert result.step == 3
    assert all(torch.isfinite(p).all() for p in result.G_A.parameters())


def test_runs_saved_before_the_upsample_option_resume_with_transposed_convs(domains, tmp_path):
    """Older train_state.pt files hold no `upsample`: they were transposed-conv generators, and
    must resume as such (the current default, resize, would not fit their weights)."""
    run = tmp_path / "old"
    train(tiny(domains, run, max_steps=2, upsample="transpose"))
    state = torch.load(run / runs.STATE_FILE, weights_only=True)
    config = json.loads(state["config"])
    del config["upsample"]
    state["config"] = json.dumps(config)
    torch.save(state, run / runs.STATE_FILE)
    result = train(tiny(domains, run, max_steps=3), resume=True)
    assert result.step == 3
    assert any(isinstance(m, torch.nn.ConvTranspose2d) for m in result.G_A.modules())
    _, info = load_generator(resolve_model(str(run), "A2B"))
    assert "upsample" not in info.arch_args  # readable by facecomp versions before the option
    # a new run uses resize + conv and records it
    new = train(tiny(domains, tmp_path / "new", max_steps=1))
    assert not any(isinstance(m, torch.nn.ConvTranspose2d) for m in new.G_A.modules())
    assert read_info(resolve_model(str(tmp_path / "new"), "B2A")).arch_args["upsample"] == "resize"
    with pytest.raises(ConfigError, match="`upsample` must be one of"):
        tiny(domains, tmp_path, upsample="deconv")


def test_resume_drops_a_stats_line_cut_short(domains, tmp_path):
    """A crash or a full disk leaves a cut last line in stats.jsonl: --resume drops it."""
    run = tmp_path / "run"
    train(tiny(domains, run, max_steps=2))
    with open(run / "stats.jsonl", "a") as f:
        f.write('{"step": 3, "G": 0.9')  # cut mid-line
    train(tiny(domains, run, max_steps=3), resume=True)
    steps = [json.loads(ln)["step"] for ln in (run / "stats.jsonl").read_text().splitlines()]
    assert steps == [1, 2, 3]


def test_a_second_training_on_the_same_run_folder_is_refused(domains, tmp_path):
    """While one train holds the run folder, another (fresh or --resume) gets a one-line
    refusal naming the holder and writes nothing."""
    import subprocess
    import sys

    from facecomp.errors import OutputError

    run = tmp_path / "run"
    train(tiny(domains, run, max_steps=1))
    before = {p.name: p.stat().st_mtime_ns for p in run.iterdir()}
    holder = subprocess.Popen([sys.executable, "-c", (
        "import fcntl, sys, time; f = open(sys.argv[1], 'a+'); "
        "fcntl.flock(f.fileno(), fcntl.LOCK_EX); f.seek(0); f.truncate(); "
        "f.write('pid 4242 on testhost'); f.flush(); print('locked', flush=True); "
        "time.sleep(60)"), str(run / T.LOCK_FILE)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        for resume in (True, False):
            with pytest.raises(OutputError, match="in use by another training run.*pid 4242"):
                train(tiny(domains, run, max_steps=2), resume=resume)
        after = {p.name: p.stat().st_mtime_ns for p in run.iterdir()}
        assert {k: v for k, v in after.items() if k != T.LOCK_FILE} == \
            {k: v for k, v in before.items() if k != T.LOCK_FILE}
    finally:
        holder.kill()
        holder.wait()
    train(tiny(domains, run, max_steps=2), resume=True)  # free again: it continues


def test_a_failed_fresh_run_leaves_no_empty_run_folder(domains, tmp_path):
    with pytest.raises(Exception):
        train(tiny(domains, tmp_path / "run", a=str(tmp_path / "missing")))
    assert not (tmp_path / "run").exists()


def test_sample_grids_with_unequal_or_few_held_out_faces(tmp_path):
    """Domains with 1 and 3 held-out faces (and 2 and 5 training images): the sample grid is
    written, padded, instead of crashing the run."""
    img = np.asarray(Image.open(SAMPLES / "group.jpg").convert("RGB"))
    for d, n_train, n_held in (("a", 2, 1), ("b", 5, 3)):
        (tmp_path / d / "holdout").mkdir(parents=True)
        for i in range(n_train + n_held):
            crop = img[10 * i:10 * i + 40, 20 * i:20 * i + 40]
            folder = tmp_path / d / ("holdout" if i >= n_train else "")
            Image.fromarray(crop if d == "a" else 255 - crop).save(folder / f"{i}.png")
    run = tmp_path / "run"
    train(tiny((tmp_path / "a", tmp_path / "b"), run, max_steps=2, sample_every=1,
               batch_size=1))
    grids = sorted((run / "samples").glob("*"))
    assert grids
    g = np.asarray(Image.open(grids[-1]))
    assert g.shape[0] == 6 * 32 and g.shape[1] == 3 * 32  # six rows, as wide as 3 faces


def test_suspicious_training_inputs_are_warned_about(domains, tmp_path, caplog, monkeypatch):
    """The same folder for both domains, non-square images and exploding losses each get a
    warning (training still runs: they may be intended)."""
    odd = tmp_path / "odd"
    odd.mkdir()
    for i in range(3):
        Image.fromarray(np.full((30, 50, 3), 40 * i, np.uint8)).save(odd / f"{i}.png")
    train(tiny(domains, tmp_path / "r1", a=str(odd), b=str(odd), max_steps=1))
    assert "same folder" in caplog.text and "not square" in caplog.text
    caplog.clear()
    real_step = step.train_step

    def exploding(*a, **k):  # what a far too high learning rate does to the losses
        return {**real_step(*a, **k), "G": 1e13}

    monkeypatch.setattr(T, "train_step", exploding)
    train(tiny(domains, tmp_path / "r2", max_steps=3))
    assert caplog.text.count("learning rate may be too high") == 1  # once, not every step


def test_a_config_file_is_merged_by_the_config_layer(tmp_path):
    """Options set explicitly win over the file, the file over the defaults; the file's names
    may use - or _; an unknown option or a file that is not a JSON object is a one-line error
    naming the library's parameter (the CLI shows it as --config)."""
    from facecomp.errors import ConfigError
    from facecomp.training.config import merge_config_file

    defaults = {"lr": 0.0002, "batch_size": 1, "n_epochs": 100}
    f = tmp_path / "c.json"
    f.write_text('{"lr": 0.001, "batch-size": 8}')
    assert merge_config_file(defaults, None, set()) == defaults
    assert merge_config_file(defaults, f, set()) == {"lr": 0.001, "batch_size": 8, "n_epochs": 100}
    given = dict(defaults, batch_size=4)
    assert merge_config_file(given, f, {"batch_size"})["batch_size"] == 4
    f.write_text('{"learning_rate": 1}')
    with pytest.raises(ConfigError, match=r"`config` .*unknown option 'learning_rate'"):
        merge_config_file(defaults, f, set())
    f.write_text("[1, 2]")
    with pytest.raises(ConfigError, match="JSON object"):
        merge_config_file(defaults, f, set())
