"""Smoke test for bench/bench.py: every section runs on tiny settings and the JSON it writes has
the expected keys and sane positive numbers (the timings themselves are not checked)."""

from __future__ import annotations

import dataclasses
import importlib.util
import json
import math
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def load_bench():
    spec = importlib.util.spec_from_file_location("facecomp_bench", ROOT / "bench" / "bench.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up by name
    spec.loader.exec_module(module)
    return module


def positive(value) -> bool:
    return isinstance(value, (int, float)) and math.isfinite(value) and value > 0


@pytest.fixture
def one_thread(monkeypatch: pytest.MonkeyPatch):
    """One torch thread here and in the photo subprocess: on a busy machine two spinning
    OpenMP threads make these tiny runs many times slower, and their speed is not checked."""
    import torch

    before = torch.get_num_threads()
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.mark.filterwarnings("ignore::UserWarning")
def test_bench_tiny_run_writes_complete_results(tmp_path: Path, one_thread) -> None:
    pytest.importorskip("av")
    bench = load_bench()
    tiny = dataclasses.replace(
        bench.QUICK, name="tiny", repeats=1, startup_repeats=1, warmup=1, min_sample_s=0.0, conv=(1, 16, 16),
        gen_size=32, gen_batches=(1, 2), age_batches=(1, 2), ref_size=32, ref_ngf=8, ref_blocks=1,
        media_dir=str(tmp_path / "no-media"), synth_size=(400, 300), synth_faces=2,
        video_size=(192, 144), video_frames=3, video_faces=(1,), train_size=32, train_ngf=8,
        train_blocks=1, train_ndf=8, train_warmup=0, train_steps=1, group_heads=False)
    work = tmp_path / "work"
    work.mkdir()
    results = bench.run(tiny, bench.SECTIONS, work)
    out = tmp_path / "results.json"
    bench.write_results(out, results)
    r = json.loads(out.read_text())
    assert not [p for p in out.parent.iterdir() if p.name.endswith(".tmp")]

    assert set(bench.SECTIONS) <= set(r)
    errors = {k: r[k]["error"] for k in bench.SECTIONS if "error" in r[k]}
    assert not errors
    m = r["machine"]
    for key in ("cpu_model", "cpu_count", "torch", "cuda_available", "cuda_device",
                "avx512_bf16", "date"):
        assert key in m
    assert isinstance(m["avx512_bf16"], bool) and m["cpu_count"] >= 1

    for p in ("fp32", "bf16"):
        conv = r["conv_peak"]["cpu"][p]
        assert positive(conv["gflop"]) and positive(conv["gflops_per_s"])

    g = r["generator"]
    assert positive(g["gflop_per_face"]) and g["size"] == 32
    for p in ("fp32", "bf16"):
        for batch in ("1", "2"):
            row = g["results"]["cpu"][p][batch]
            for key in ("translator_faces_per_s", "forward_faces_per_s",
                        "fraction_of_conv_peak"):
                assert positive(row[key]), (p, batch, key)
    diff = g["precision_diff"]["cpu"]["bf16"]
    assert 0 <= diff["max_abs_levels"] <= 255
    ref = g["reference"]
    assert positive(ref["gflop_per_face"]) and ref["gflop_per_face"] > g["gflop_per_face"] / 100
    assert positive(ref["results"]["cpu"]["bf16"]["1"]["forward_faces_per_s"])

    st = r["startup"]
    assert all(positive(st[k]) for k in ("python_s", "help_s", "import_torch_s",
                                          "one_photo_wall_s", "one_photo_reported_work_s"))
    assert st["one_photo_wall_s"] > st["one_photo_reported_work_s"]
    assert st["detector_pulls_in"] == "[]"

    a = r["age"]
    assert positive(a["mflop_per_face"]) and a["input_size"] >= 16
    assert all(positive(v["faces_per_s"]) for v in a["results"].values())

    ph = r["photo"]
    assert "no-media" in ph["note"]  # the shared photos were skipped, with a note
    [synth] = ph["photos"]
    assert synth["faces"] >= 1 and synth["pixels"] == 400 * 300
    assert set(synth["warm"]["timings"]) == {"decode", "detect", "align", "translate", "blend",
                                             "encode"}
    assert positive(synth["warm"]["total_s"]) and positive(synth["total_over_translate"])
    assert synth["peak_rss_mb"] >= synth["rss_after_load_mb"] > 50
    assert positive(ph["batching"]["cpu"]["one_at_a_time_over_batched"])

    assert r["composite"]["skipped"] and r["composite"]["photos"] == []

    [clip] = r["video"]["clips"]
    assert clip["frames"] == 3 and positive(clip["fps"])
    assert clip["slowest_stage"] in clip["timings"]
    assert clip["wall_over_slowest_stage"] >= 1.0
    assert "no-media" in r["video"]["flicker"]["note"] and r["video"]["flicker"]["clips"] == []

    t = r["training"]
    for name in ("facecomp", "textbook"):
        assert positive(t[name]["s_per_step"]) and positive(t[name]["gflop_per_step"])
    assert positive(t["facecomp_over_textbook"])

    table = bench.format_table(r)
    assert "training" in table and "conv peak" in table and "startup" in table


def test_bench_composite_section_on_a_real_jpeg(one_thread) -> None:
    from .conftest import media

    path = media("group_01_family_indoor.jpg")
    bench = load_bench()
    s = dataclasses.replace(bench.QUICK, repeats=1, warmup=1, min_sample_s=0.0,
                            media_dir=str(path.parent), composite_photos=(path.name,))
    [row] = bench.composite_section(s)["photos"]
    assert set(row["detect_s"]) == set(row["faces"]) and row["detect_over_plain"]["plain"] == 1
    assert all(positive(v) for v in row["detect_s"].values())
    assert row["faces"]["default (+rotations auto)"] >= row["faces"]["plain"] >= 5
    assert all(positive(v) for v in row["paste_ms_per_face"].values())
    kept = row["background_bit_identical"]
    assert kept["blocks kept"] > max(0.95, kept["pillow q95"])
    assert "composite" in bench.format_table({"machine": {"cpu_model": "x", "cpus_usable": 1,
                                                          "torch": "t", "cuda_device": None,
                                                          "load_average_start": [0.0]},
                                              "settings": {"name": "q"}, "composite":
                                              {"photos": [row]}, "total_s": 1.0})
