"""facecomp benchmarks (issue 6): how fast each stage is, as ratios measured within one run.

The machine this runs on may be shared and noisy, so every headline figure is a ratio of two
things timed in the same run, their samples taken in turn (a, b, a, b, ...), and every time is a
median of repeats:

``startup``     fresh-process wall times: ``facecomp --help``, ``import torch``, a ready detector,
                and one photo end to end against the work it reports (what start-up costs).
``conv_peak``   the machine's own conv rate: one large 3x3 conv (N=8, 128->128 channels, 64x64,
                channels_last) in fp32 and bf16 (CUDA: fp32, fp16, bf16). FLOPs are counted
                once with ``torch.utils.flop_counter.FlopCounterMode``; GFLOP/s = FLOPs / median.
                Timed again at the end of the run: ``end_over_start`` shows the drift.
``generator``   the shipped default model at its crop size: faces/s at batch 1, 8, 32 per device
                and precision, through ``Translator`` (the product path, uint8 in and out) and as
                the bare network forward; achieved GFLOP/s / the peak conv's GFLOP/s in the same
                dtype, sampled in turn with it = ``fraction_of_conv_peak`` (FLOPs executed: on
                the CPU the Translator runs ``networks.inference_form``, the same function in
                fewer FLOPs; ``model_fraction_of_conv_peak`` counts the model's own FLOPs, so it
                can pass 1); how far bf16 (fp16)
                outputs are from fp32 in uint8 levels; and the reference CycleGAN generator
                (ResNet-9, ngf 64, 128 px) for context. On the CPU also torch's threads vs 1
                thread, which tells whether the machine is busy (see ``thread_scaling``).
``photo``       end to end per photo, each in a fresh subprocess (so its peak RSS, VmHWM, is the
                photo's): per-stage seconds (decode, detect, align, translate, blend, encode) of
                a cold and a warm run, total / translate; the largest group photos of
                ``../shared/media`` (skipped with a note when absent) and a synthetic ~24 MP photo
                with 36 pasted faces. Also translate time one face at a time / batched.
``video``       synthetic 720p clips (60 frames, 25 fps, H.264) with 1 and 5 slowly moving faces
                through ``facecomp.frontends.video.translate_video``: frames/s, per-stage seconds, and wall
                time / slowest stage (1.0 = the threads overlap perfectly); also frames/s with
                full detection on every frame (``detect_every=1``) for comparison.
``training``    s/step at 128 px (ResNet-9 ngf 64, 70x70 PatchGAN, batch 1) of facecomp's own
                ``train_step`` and of a textbook CycleGAN step written plainly below as in the
                reference pytorch-CycleGAN-and-pix2pix code, interleaved step by step; the ratio
                facecomp / textbook (< 1: facecomp is faster).

Run::

    .venv/bin/python bench/bench.py [--quick] [--out bench/results.json] [--only video,photo]
                                    [--threads N]

Progress goes to stderr, a short table to stdout, everything to the JSON file (written
atomically). ``--quick`` shrinks every size and repeat count, for development and the smoke test.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import dataclasses
import datetime
import itertools
import json
import math
import os
import platform
import re
import resource
import statistics
import subprocess
import sys
import tempfile
import time
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
from torch import nn

ROOT = Path(__file__).resolve().parent.parent
SAMPLES = ROOT / "samples"
SHARED_MEDIA = ROOT.parent / "shared" / "media"
#: The largest group photos of ../shared/media by face count (see its PROVENANCE.md).
SHARED_PHOTOS = ("group_20_staff_photo_100faces.jpg", "group_17_team_celebration.png",
                 "group_15_masked_crowd_hands.jpg")
SECTIONS = ("startup", "conv_peak", "generator", "age", "photo", "composite", "video", "training")
DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


@dataclass(frozen=True)
class Settings:
    """Every size and count the benchmark uses; FULL and QUICK below are the two presets."""

    name: str = "full"
    repeats: int = 5  # timed samples per measurement (the median is reported)
    startup_repeats: int = 3  # fresh processes per start-up figure
    warmup: int = 2
    min_sample_s: float = 0.05  # fast calls are looped until one sample takes this long
    conv: tuple[int, int, int] = (8, 128, 64)  # batch, channels, side of the peak conv
    gen_size: int = 0  # 0: the default model's crop size
    gen_batches: tuple[int, ...] = (1, 8, 32)
    age_batches: tuple[int, ...] = (1, 32)  # the age estimator (predict: crop and mirror)
    ref_size: int = 128
    ref_ngf: int = 64
    ref_blocks: int = 9
    media_dir: str = str(SHARED_MEDIA)
    shared_photos: tuple[str, ...] = SHARED_PHOTOS
    composite_photos: tuple[str, ...] = ("group_20_staff_photo_100faces.jpg",
                                         "group_15_masked_crowd_hands.jpg",
                                         "group_14_poker_table.jpg")
    synth_size: tuple[int, int] = (6000, 4000)
    synth_faces: int = 36
    video_size: tuple[int, int] = (1280, 720)
    video_frames: int = 60
    video_faces: tuple[int, ...] = (1, 5)
    video_memory_frames: tuple[int, ...] = (60, 600)  # peak RSS of a short and a 10x longer clip
    # shared clips (name, seconds from the start) whose flicker is measured with --steady off/on
    flicker_clips: tuple[tuple[str, float], ...] = (
        ("video_03_selfie_vertical_glasses.mp4", 3.0), ("video_01_street_walkers_1080p.mp4", 2.0))
    train_size: int = 128
    train_ngf: int = 64
    train_blocks: int = 9
    train_ndf: int = 64
    train_warmup: int = 2  # untimed steps after the first (FLOP-counting) one
    train_steps: int = 6
    train_steps_cuda: int = 30  # GPU steps take tens of ms: more of them for a stable median
    group_heads: bool = True  # paste the faces of samples/group.jpg too (runs the detector)


FULL = Settings()
QUICK = Settings(name="quick", repeats=2, warmup=1, min_sample_s=0.02, conv=(2, 64, 32),
                 gen_size=64, gen_batches=(1, 8), ref_size=64, shared_photos=SHARED_PHOTOS[:1],
                 composite_photos=("group_14_poker_table.jpg",),
                 synth_size=(1600, 1200), synth_faces=8, video_size=(480, 272),
                 video_frames=10, video_memory_frames=(5, 20),
                 flicker_clips=(("video_03_selfie_vertical_glasses.mp4", 0.5),), train_size=64, train_warmup=0, train_steps=2)


def progress(message: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


# ---------------------------------------------------------------------------------------------
# Timing and counting


def devices() -> list[str]:
    return ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


def precisions(device: str) -> list[str]:
    """fp32 and bf16 on the CPU; fp32, fp16 and (where supported) bf16 on CUDA."""
    if device == "cpu":
        return ["fp32", "bf16"]
    return ["fp32", "fp16"] + (["bf16"] if torch.cuda.is_bf16_supported() else [])


def sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def interleaved(fns: dict[str, Callable[[], Any]], device: str,
                s: Settings) -> dict[str, list[float]]:
    """Seconds per call of each function: ``s.repeats`` samples taken in turn (a, b, a, b, ...)
    after ``s.warmup`` calls, so a slow spell of a shared machine hits them all alike. Calls
    faster than ``s.min_sample_s`` are looped inside one sample."""
    inner = {}
    for name, fn in fns.items():
        for _ in range(max(1, s.warmup)):
            fn()
        sync(device)
        t = time.perf_counter()
        fn()
        sync(device)
        inner[name] = max(1, math.ceil(s.min_sample_s / max(time.perf_counter() - t, 1e-9)))
    samples: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(s.repeats):
        for name, fn in fns.items():
            t = time.perf_counter()
            for _ in range(inner[name]):
                fn()
            sync(device)
            samples[name].append((time.perf_counter() - t) / inner[name])
    return samples


def median_time(fn: Callable[[], Any], device: str, s: Settings) -> float:
    """Median seconds per call of ``fn`` (see :func:`interleaved`)."""
    return statistics.median(interleaved({"fn": fn}, device, s)["fn"])


def paired_rate_ratio(flops: float, times: list[float], ref_flops: float,
                      ref_times: list[float]) -> float:
    """Median over interleaved samples of (flops / time) / (ref_flops / ref_time)."""
    return statistics.median((flops / t) / (ref_flops / r) for t, r in zip(times, ref_times))


def count_flops(fn: Callable[[], Any]) -> int:
    """FLOPs of one call, as torch's FlopCounterMode counts them (convs and matmuls)."""
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False) as counter:
        fn()
    return int(counter.get_total_flops())


def autocast(device: str, precision: str) -> contextlib.AbstractContextManager:
    if precision == "fp32":
        return contextlib.nullcontext()
    return torch.autocast(device_type=device, dtype=DTYPES[precision])


def rss_mb() -> tuple[float, float]:
    """(current, peak) resident set size of this process in MB, from /proc/self/status (VmRSS,
    VmHWM). Unlike ``ru_maxrss``, which Linux carries over ``execve`` from the parent, VmHWM
    belongs to this process image alone."""
    fields = {}
    with open("/proc/self/status") as f:
        for line in f:
            key, _, value = line.partition(":")
            if key in ("VmRSS", "VmHWM"):
                fields[key] = int(value.split()[0]) / 1024.0
    return fields.get("VmRSS", 0.0), fields.get("VmHWM", 0.0)


# ---------------------------------------------------------------------------------------------
# Test images: faces pasted from the repository's own samples


def head_images(from_group: bool = True) -> list[np.ndarray]:
    """Upright head-and-shoulder images: the astronaut of samples/portrait.jpg and, with
    ``from_group``, the faces of samples/group.jpg (found with facecomp's detector, cropped with
    a margin)."""
    from facecomp.stages.detect import MTCNNDetector
    from facecomp.io import read_image

    heads = [read_image(SAMPLES / "portrait.jpg").rgb[40:300, 110:340]]
    if not from_group:
        return heads
    group = read_image(SAMPLES / "group.jpg").rgb
    for face in MTCNNDetector().detect(group):
        cx, cy = face.centre
        r = 0.9 * face.size
        x1, y1 = max(0, int(cx - r)), max(0, int(cy - 1.1 * r))
        x2, y2 = min(group.shape[1], int(cx + r)), min(group.shape[0], int(cy + r))
        heads.append(np.ascontiguousarray(group[y1:y2, x1:x2]))
    return heads


def face_crops(size: int, n: int) -> np.ndarray:
    """(n, size, size, 3) uint8 face crops: the astronaut's head, mirrored and shaded."""
    import cv2

    from facecomp.io import read_image

    head = read_image(SAMPLES / "portrait.jpg").rgb[40:300, 110:340]
    head = cv2.resize(head, (size, size), interpolation=cv2.INTER_AREA)
    out = []
    for k in range(n):
        img = head[:, ::-1] if k % 2 else head
        gain = 0.8 + 0.4 * (k % 5) / 4
        out.append(np.clip(img.astype(np.float32) * gain, 0, 255).astype(np.uint8))
    return np.stack(out)


def background(width: int, height: int, seed: int, noise: int = 12) -> np.ndarray:
    """A smooth colour gradient with a little noise (a plain wall, a sky)."""
    rng = np.random.default_rng(seed)
    x = np.linspace(0.0, 1.0, width, dtype=np.float32)[None, :, None]
    y = np.linspace(0.0, 1.0, height, dtype=np.float32)[:, None, None]
    base = 90 + 60 * x * np.array([1.0, 0.6, 0.2], np.float32) + 50 * y * \
        np.array([0.2, 0.5, 1.0], np.float32)
    img = np.broadcast_to(base, (height, width, 3)).astype(np.uint8)
    if noise:
        img = img + rng.integers(0, noise, size=img.shape, dtype=np.uint8)
    return img


def paste(canvas: np.ndarray, img: np.ndarray, x: int, y: int) -> None:
    """Paste ``img`` with its top-left corner at (x, y), clipped to the canvas."""
    h, w = img.shape[:2]
    H, W = canvas.shape[:2]
    x0, y0, x1, y1 = max(0, x), max(0, y), min(W, x + w), min(H, y + h)
    if x1 > x0 and y1 > y0:
        canvas[y0:y1, x0:x1] = img[y0 - y:y1 - y, x0 - x:x1 - x]


def make_group_photo(path: Path, size: tuple[int, int], n_faces: int, heads: list[np.ndarray],
                     seed: int = 0) -> None:
    """A synthetic group photo: ``n_faces`` heads at various scales, one per grid cell."""
    import cv2

    from facecomp.io import write_image

    width, height = size
    rng = np.random.default_rng(seed)
    canvas = background(width, height, seed)
    cols = math.ceil(math.sqrt(n_faces * width / height))
    rows = math.ceil(n_faces / cols)
    cw, ch = width // cols, height // rows
    for k in range(n_faces):
        head = heads[k % len(heads)]
        target = rng.uniform(0.3, 0.9) * min(cw, ch)
        scale = target / max(head.shape[:2])
        img = cv2.resize(head, None, fx=scale, fy=scale,
                         interpolation=cv2.INTER_AREA if scale < 1 else cv2.INTER_CUBIC)
        r, c = divmod(k, cols)
        x = c * cw + int(rng.uniform(0, max(1, cw - img.shape[1])))
        y = r * ch + int(rng.uniform(0, max(1, ch - img.shape[0])))
        paste(canvas, img, x, y)
    write_image(path, canvas, quality=92, overwrite=True)


def make_clip(path: Path, size: tuple[int, int], n_frames: int, n_faces: int,
              heads: list[np.ndarray], fps: int = 25) -> None:
    """An H.264 clip of ``n_faces`` heads drifting slowly over a still background."""
    import av
    import cv2

    width, height = size
    bg = background(width, height, seed=n_faces, noise=0)
    side = int(height * (0.45 if n_faces == 1 else 0.26))
    placed = []
    for k in range(n_faces):
        head = heads[k % len(heads)]
        scale = side / max(head.shape[:2])
        img = cv2.resize(head, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA)
        x0 = int((k + 0.5) * width / n_faces - img.shape[1] / 2)
        y0 = int(height / 2 - img.shape[0] / 2)
        placed.append((img, x0, y0))
    with av.open(str(path), "w") as out:
        vs = out.add_stream("libx264", rate=fps)
        vs.width, vs.height, vs.pix_fmt = width, height, "yuv420p"
        vs.options = {"crf": "18", "preset": "ultrafast"}
        for i in range(n_frames):
            frame = bg.copy()
            for k, (img, x0, y0) in enumerate(placed):
                dx = int(round(0.6 * i * (1 if k % 2 == 0 else -1)))  # ~15 px/s
                dy = int(round(4 * math.sin(i / 12.0 + k)))
                paste(frame, img, x0 + dx, y0 + dy)
            for packet in vs.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")):
                out.mux(packet)
        for packet in vs.encode(None):
            out.mux(packet)


# ---------------------------------------------------------------------------------------------
# 1. conv_peak


@dataclass(frozen=True)
class ConvProbe:
    """The peak-rate conv, ready to call: ``fn()`` runs it once; ``flops`` per call."""

    fn: Callable[[], Any]
    flops: int


def conv_probe(device: str, precision: str, s: Settings) -> ConvProbe:
    """One large 3x3 conv, channels_last, weights and input in ``precision`` (no autocast)."""
    n, c, side = s.conv
    fmt = torch.channels_last
    conv = nn.Conv2d(c, c, 3, padding=1, bias=False).to(device, DTYPES[precision],
                                                          memory_format=fmt).eval()
    x = torch.randn(n, c, side, side, device=device, dtype=DTYPES[precision])
    x = x.contiguous(memory_format=fmt)

    def fn() -> None:
        with torch.inference_mode():
            conv(x)

    with torch.inference_mode():
        flops = count_flops(lambda: conv(x))
    return ConvProbe(fn, flops)


def conv_rate(device: str, precision: str, s: Settings) -> dict[str, float]:
    """GFLOP/s of the peak-rate conv (median of repeats)."""
    probe = conv_probe(device, precision, s)
    seconds = median_time(probe.fn, device, s)
    return {"gflop": probe.flops / 1e9, "seconds": seconds,
            "gflops_per_s": probe.flops / seconds / 1e9}


def conv_peak_section(s: Settings) -> dict[str, Any]:
    """The peak conv's GFLOP/s per device and dtype, the dtypes' samples interleaved."""
    n, c, side = s.conv
    out: dict[str, Any] = {"shape": {"batch": n, "channels": c, "side": side, "kernel": 3,
                                     "memory_format": "channels_last"}}
    for device in devices():
        progress(f"conv_peak: {device} {', '.join(precisions(device))}")
        probes = {p: conv_probe(device, p, s) for p in precisions(device)}
        times = interleaved({p: probe.fn for p, probe in probes.items()}, device, s)
        rates: dict[str, dict[str, float]] = {}
        for p, probe in probes.items():
            sec = statistics.median(times[p])
            rates[p] = {"gflop": probe.flops / 1e9, "seconds": sec,
                        "gflops_per_s": probe.flops / sec / 1e9}
            if p != "fp32":
                rates[p]["speedup_over_fp32"] = paired_rate_ratio(
                    probe.flops, times[p], probes["fp32"].flops, times["fp32"])
        out[device] = rates
    return out


# ---------------------------------------------------------------------------------------------
# 2. generator


def measure_network(net: nn.Module, crops: np.ndarray, device: str, precision: str, batch: int,
                    gflop_per_face: float, probe: ConvProbe, s: Settings) -> dict[str, float]:
    """faces/s of ``net`` on ``batch`` crops through Translator and as the bare forward, each
    sample interleaved with one of the peak conv in the same dtype."""
    from facecomp.stages.translate import TranslateConfig, Translator, to_tensor

    translator = Translator(net, TranslateConfig(device=device, batch_size=batch,
                                                 precision=precision))
    x_u8 = crops[:batch]
    # The bare forward runs the network as the Translator holds it: weights already in the
    # reduced dtype (then the input is cast) or fp32 weights under autocast.
    x = to_tensor(x_u8, translator.device)
    weights = next(translator.generator.parameters()).dtype
    cast = weights != torch.float32
    x = x.to(weights) if cast else x

    def forward() -> None:
        with torch.inference_mode(), autocast(device, "fp32" if cast else precision):
            translator.generator(x)

    t = interleaved({"conv": probe.fn, "translator": lambda: translator(x_u8),
                     "forward": forward}, device, s)
    t_translator, t_forward = statistics.median(t["translator"]), statistics.median(t["forward"])
    # The Translator may run a rewritten network (networks.inference_form on the CPU) that
    # computes the model's function with fewer multiply-adds: the hardware's rate is that of
    # the FLOPs executed; "model_" rates count the model's own FLOPs per face.
    flops = count_flops(forward)
    model_flops = gflop_per_face * batch * 1e9
    return {"translator_faces_per_s": batch / t_translator,
            "forward_faces_per_s": batch / t_forward,
            "translator_over_forward": t_translator / t_forward,
            "executed_gflop_per_face": flops / batch / 1e9,
            "gflops_per_s": flops / t_forward / 1e9,
            "model_gflops_per_s": model_flops / t_forward / 1e9,
            "conv_peak_gflops_per_s": probe.flops / statistics.median(t["conv"]) / 1e9,
            "fraction_of_conv_peak": paired_rate_ratio(flops, t["forward"], probe.flops,
                                                       t["conv"]),
            "translator_fraction_of_conv_peak": paired_rate_ratio(
                flops, t["translator"], probe.flops, t["conv"]),
            "model_fraction_of_conv_peak": paired_rate_ratio(model_flops, t["forward"],
                                                             probe.flops, t["conv"])}


def gflop_per_face(net: nn.Module, size: int) -> float:
    x = torch.zeros(1, 3, size, size)
    net = copy.deepcopy(net).cpu().float()
    with torch.inference_mode():
        return count_flops(lambda: net(x)) / 1e9


def precision_diff(net: nn.Module, crops: np.ndarray, device: str) -> dict[str, dict[str, float]]:
    """How far each reduced precision's uint8 output is from fp32's, in levels (0..255)."""
    from facecomp.stages.translate import TranslateConfig, Translator

    def run(p: str) -> np.ndarray:
        cfg = TranslateConfig(device=device, batch_size=len(crops), precision=p)
        return Translator(net, cfg)(crops).astype(np.int16)

    ref = run("fp32")
    out = {}
    for p in precisions(device):
        if p != "fp32":
            d = np.abs(run(p) - ref)
            out[p] = {"max_abs_levels": int(d.max()), "mean_abs_levels": float(d.mean()),
                      "share_over_2_levels": float((d > 2).mean())}
    return out


def generator_section(s: Settings) -> dict[str, Any]:
    from facecomp.checkpoint import load_generator, resolve_model
    from facecomp.networks import build

    path = resolve_model(None, "A2B")
    net, info = load_generator(path)
    size = s.gen_size or info.crop_size
    crops = face_crops(size, max(s.gen_batches))
    gflop = gflop_per_face(net, size)
    out: dict[str, Any] = {
        "model": {"name": info.name, "file": path.name, "architecture": info.architecture,
                  "arch_args": info.arch_args, "crop_size": info.crop_size},
        "size": size, "gflop_per_face": gflop, "results": {}, "precision_diff": {}}
    for device in devices():
        dev_net = copy.deepcopy(net)
        out["results"][device] = {}
        for p in precisions(device):
            out["results"][device][p] = {}
            probe = conv_probe(device, p, s)
            for batch in s.gen_batches:
                progress(f"generator: {info.name} {size}px {device} {p} batch {batch}")
                out["results"][device][p][str(batch)] = measure_network(
                    dev_net, crops, device, p, batch, gflop, probe, s)
        out["precision_diff"][device] = precision_diff(dev_net, crops[:8], device)
    if torch.get_num_threads() > 1:
        out["threads"] = thread_scaling(copy.deepcopy(net), crops, s)
    out["reference"] = reference_generator(s, build)
    return out


def age_section(s: Settings) -> dict[str, Any]:
    """The shipped age estimator: faces/s of AgeEstimator.predict (re-warp or resize, the crop
    and its mirror) from 128 px crops, by batch, and its MFLOP per face; what --age, --faces
    age<N and evaluate add per face."""
    from facecomp.stages.age import AgeEstimator, to_tensor

    est = AgeEstimator.load()
    size = est.info.input_size
    crops = face_crops(128, max(s.age_batches))
    x = to_tensor(crops[:1, :size, :size])
    with torch.inference_mode():
        mflop = count_flops(lambda: est.net(torch.cat([x, x.flip(3)]))) / 1e6
    out: dict[str, Any] = {"input_size": size, "mflop_per_face": mflop, "results": {}}
    for batch in s.age_batches:
        progress(f"age estimator batch {batch}")
        t = median_time(lambda: est.predict(crops[:batch]), "cpu", s)
        out["results"][str(batch)] = {"faces_per_s": batch / t, "ms_per_face": 1e3 * t / batch}
    return out


def thread_scaling(net: nn.Module, crops: np.ndarray, s: Settings) -> dict[str, Any]:
    """Translator fp32 faces/s on the CPU with torch's threads and with 1 thread, samples in
    turn, at the smallest and largest batch. On an idle machine more threads are faster; on a
    busy one every parallel region (each op) can wait for a thread that is not running."""
    from facecomp.stages.translate import TranslateConfig, Translator

    n = torch.get_num_threads()
    out: dict[str, Any] = {"torch_threads": n}
    for batch in sorted({min(s.gen_batches), max(s.gen_batches)}):
        progress(f"generator: {n} threads vs 1, batch {batch}")
        tr = Translator(net, TranslateConfig(device="cpu", batch_size=batch, precision="fp32"))
        x_u8 = crops[:batch]

        def one_thread() -> None:
            torch.set_num_threads(1)
            try:
                tr(x_u8)
            finally:
                torch.set_num_threads(n)

        t = interleaved({"n": lambda: tr(x_u8), "1": one_thread}, "cpu", s)
        out[str(batch)] = {
            "faces_per_s": batch / statistics.median(t["n"]),
            "faces_per_s_1_thread": batch / statistics.median(t["1"]),
            "speedup_over_1_thread": statistics.median(b / a for a, b in zip(t["n"], t["1"]))}
    return out


def reference_generator(s: Settings, build: Callable[..., nn.Module]) -> dict[str, Any]:
    """The reference CycleGAN generator (ResNet-9, ngf 64) at batch 1, for context."""
    torch.manual_seed(0)
    args = {"ngf": s.ref_ngf, "n_blocks": s.ref_blocks}
    net = build("resnet_generator", **args).eval()
    gflop = gflop_per_face(net, s.ref_size)
    crops = face_crops(s.ref_size, 1)
    out: dict[str, Any] = {"architecture": "resnet_generator", "arch_args": args,
                           "size": s.ref_size, "gflop_per_face": gflop, "results": {}}
    for device in devices():
        out["results"][device] = {}
        for p in precisions(device):
            progress(f"generator: reference ngf {s.ref_ngf} {s.ref_size}px {device} {p} batch 1")
            out["results"][device][p] = {"1": measure_network(
                net, crops, device, p, 1, gflop, conv_probe(device, p, s), s)}
    return out


# ---------------------------------------------------------------------------------------------
# 3. photo


def wall_of(cmd: list[str], repeats: int) -> tuple[float, str]:
    """Median wall time of ``cmd`` run ``repeats`` times in fresh processes, and its output."""
    times, out = [], ""
    for _ in range(repeats):
        t = time.perf_counter()
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600, cwd=ROOT)
        times.append(time.perf_counter() - t)
        if proc.returncode != 0:
            raise RuntimeError(f"{' '.join(cmd)} failed ({proc.returncode}): "
                               f"{proc.stderr.strip()[-800:]}")
        out = proc.stdout + proc.stderr
    return float(np.median(times)), out


def startup_section(s: Settings, work: Path) -> dict[str, Any]:
    """Fresh-process wall times: ``facecomp --help``, the bare imports under a photo run (the
    floor a run cannot go below), and one photo (samples/group.jpg) end to end against the
    work the command reports for it (detect + align + translate + blend + decode/encode)."""
    py = sys.executable
    n = s.startup_repeats
    r: dict[str, Any] = {}
    r["python_s"], _ = wall_of([py, "-c", "pass"], n)
    r["help_s"], _ = wall_of([py, "-m", "facecomp", "--help"], n)
    r["photo_help_s"], _ = wall_of([py, "-m", "facecomp", "photo", "--help"], n)
    r["import_torch_s"], _ = wall_of([py, "-c", "import torch"], n)
    probe = ("import sys, facecomp.frontends.cli; from facecomp.stages.detect import MTCNNDetector; "
             "MTCNNDetector(); print(sorted(m for m in ('torchvision', 'facenet_pytorch', "
             "'torch._dynamo') if m in sys.modules))")
    r["detector_ready_s"], loaded = wall_of([py, "-c", probe], n)
    r["detector_pulls_in"] = loaded.strip().splitlines()[-1]
    out = work / "startup.jpg"
    photo = [py, "-m", "facecomp", "photo", str(SAMPLES / "group.jpg"), "-o", str(out),
             "--overwrite"]
    r["one_photo_wall_s"], said = wall_of(photo, n)
    work_s = [float(v) for v in re.findall(r"translated \(([0-9.]+) s\)", said)]
    r["one_photo_reported_work_s"] = work_s[-1] if work_s else None
    if work_s:
        r["one_photo_wall_minus_work_s"] = r["one_photo_wall_s"] - work_s[-1]
    r["one_photo_wall_minus_work_minus_torch_s"] = (
        r.get("one_photo_wall_minus_work_s", float("nan")) - r["import_torch_s"])
    return r


def photo_child(path: Path, out_dir: Path) -> dict[str, Any]:
    """Runs in a fresh process: load the default pipeline, then decode, process and encode
    ``path`` twice (cold, warm). Returns per-stage seconds and this process's memory."""
    from facecomp import FaceComp, PhotoConfig, read_image, write_image

    t = time.perf_counter()
    fc = FaceComp(PhotoConfig())
    load_s = time.perf_counter() - t
    rss_loaded, _ = rss_mb()
    runs = []
    for k in range(2):
        t = time.perf_counter()
        photo = read_image(path)
        decode = time.perf_counter() - t
        result = fc.process(photo.rgb)
        t = time.perf_counter()
        write_image(out_dir / f"out{k}{path.suffix.lower()}", result.image, photo.alpha,
                    like=photo, overwrite=True)
        encode = time.perf_counter() - t
        timings = {"decode": decode, **result.timings, "encode": encode}
        runs.append({"timings": timings, "total_s": sum(timings.values())})
    h, w = photo.rgb.shape[:2]
    return {"pixels": h * w, "width": w, "height": h, "faces": len(result.faces),
            "device": str(fc.translator.device), "dtype": str(fc.translator.dtype),
            "translated": len(result.translated), "load_s": load_s,
            "cold": runs[0], "warm": runs[1], "rss_after_load_mb": rss_loaded,
            "peak_rss_mb": rss_mb()[1],
            # Linux carries ru_maxrss over execve, so this is at least the parent's peak
            "ru_maxrss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0}


def run_photo_child(path: Path, work: Path) -> dict[str, Any]:
    out_dir = Path(tempfile.mkdtemp(dir=work))
    cmd = [sys.executable, str(Path(__file__).resolve()), "--child-photo", str(path),
           "--child-dir", str(out_dir)]
    t = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=1800)
    wall = time.perf_counter() - t
    if proc.returncode != 0:
        raise RuntimeError(f"photo child for {path.name} failed ({proc.returncode}): "
                           f"{proc.stderr.strip()[-800:]}")
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    warm = result["warm"]
    translate = warm["timings"].get("translate", 0.0)
    result.update(name=path.name, process_wall_s=wall,
                  total_over_translate=warm["total_s"] / translate if translate > 0 else None)
    return result


def batching(path: Path, s: Settings) -> dict[str, Any]:
    """Translate time of all faces of ``path`` at the configured batch size and one by one."""
    from facecomp import FaceComp, PhotoConfig, TranslateConfig, Translator, read_image
    from facecomp.stages.align import align_faces
    from facecomp.checkpoint import load_generator, resolve_model

    fc = FaceComp(PhotoConfig())
    rgb = read_image(path).rgb
    crops, _ = align_faces(rgb, fc.detect(rgb), fc.align)
    configured = fc.translator.batch_size
    out: dict[str, Any] = {"photo": path.name, "faces": len(crops), "batch_size": configured}
    if not len(crops):
        return out
    for device in devices():
        progress(f"photo: batched vs one at a time, {len(crops)} faces, {device}")
        net, _ = load_generator(resolve_model(None, "A2B"))  # the plain form, as a user's
        times = {}
        for bs in (configured, 1):
            tr = Translator(net, TranslateConfig(device=device, batch_size=bs))
            times[bs] = median_time(lambda: tr(crops), device, dataclasses.replace(
                s, warmup=1, repeats=max(1, min(s.repeats, 3))))
        out[device] = {"batched_s": times[configured], "one_at_a_time_s": times[1],
                       "one_at_a_time_over_batched": times[1] / times[configured]}
    return out


def photo_section(s: Settings, work: Path, heads: list[np.ndarray]) -> dict[str, Any]:
    media = Path(s.media_dir)
    paths = [media / n for n in s.shared_photos if (media / n).is_file()]
    missing = [n for n in s.shared_photos if not (media / n).is_file()]
    out: dict[str, Any] = {"photos": []}
    if missing:
        out["note"] = f"skipped, not found in {media}: {', '.join(missing)}"
    synth = work / f"synthetic_{s.synth_size[0]}x{s.synth_size[1]}_{s.synth_faces}faces.jpg"
    progress(f"photo: making {synth.name}")
    make_group_photo(synth, s.synth_size, s.synth_faces, heads)
    for path in paths + [synth]:
        progress(f"photo: {path.name} in a fresh process")
        out["photos"].append(run_photo_child(path, work))
    out["synthetic_faces_pasted"] = s.synth_faces
    most = max(out["photos"], key=lambda r: r["faces"])
    out["batching"] = batching(next(p for p in paths + [synth] if p.name == most["name"]), s)
    return out


# ---------------------------------------------------------------------------------------------
# 3b. compositing: the cost of each detection pass and finishing step, and JPEG output


def composite_section(s: Settings) -> dict[str, Any]:
    """Per photo: detection seconds with each extra pass switched on in turn (interleaved, so
    the ratios to the plain pyramid come from one run), the per-face milliseconds of the paste
    with and without finishing (chroma limit, monochrome, degradation matching), and the JPEG
    write (blocks kept vs Pillow encoding the whole picture) with the share of background pixels
    that decode bit-identical."""
    from facecomp.stages.align import AlignConfig, align_faces
    from facecomp.stages.blend import BlendConfig, paste_faces
    from facecomp.checkpoint import load_generator, resolve_model
    from facecomp.stages.detect import DetectConfig, MTCNNDetector
    from facecomp.io import read_image, write_image
    from facecomp.stages.translate import TranslateConfig, Translator
    from PIL import Image

    media = Path(s.media_dir)
    configs = {
        "plain": DetectConfig(border_pad=0, large_faces=False, rotations="off"),
        "border_pad": DetectConfig(large_faces=False, rotations="off"),
        "border_pad+large_faces": DetectConfig(rotations="off"),
        "default (+rotations auto)": DetectConfig(),
    }
    detectors = {k: MTCNNDetector(c) for k, c in configs.items()}
    net, info = load_generator(resolve_model(None, "A2B"))
    translator = Translator(net, TranslateConfig(device="cpu"))
    out: dict[str, Any] = {"photos": []}
    names = s.composite_photos  # the 100-face photo (the detection budget), faces cut by the
    # top border, a 4:2:0 JPEG
    with tempfile.TemporaryDirectory(prefix="facecomp-bench-jpeg-") as tmp:
        for name in names:
            path = media / name
            if not path.is_file():
                out.setdefault("skipped", []).append(name)
                continue
            progress(f"composite: {name}")
            img = read_image(path)
            rgb = img.rgb
            times = interleaved({k: (lambda d=d: d.detect(rgb)) for k, d in detectors.items()},
                                "cpu", s)
            det = {k: statistics.median(v) for k, v in times.items()}
            faces = detectors["default (+rotations auto)"].detect(rgb)
            counts = {k: len(d.detect(rgb)) for k, d in detectors.items()}
            crops, aligned = align_faces(rgb, faces, AlignConfig(info.crop_size, info.template))
            translated = translator(crops)
            blends = {"paste (colour match only)": BlendConfig(chroma_limit=0,
                                                               keep_monochrome=False,
                                                               match_degradation=False),
                      "+ chroma limit, monochrome": BlendConfig(match_degradation=False),
                      "+ degradation matching (default)": BlendConfig()}
            ptimes = interleaved({k: (lambda b=b: paste_faces(rgb, aligned, translated, crops,
                                                              info.template, b))
                                  for k, b in blends.items()}, "cpu", s)
            result, patches = paste_faces(rgb, aligned, translated, crops, info.template)
            from facecomp.stages.occlusion import Occlusion, shipped_occlusion

            occ_ms = None
            if shipped_occlusion().is_file() and len(crops):
                occ = Occlusion.load()
                occ_ms = 1000 * median_time(lambda: occ.keep_weights(crops, info.template),
                                            "cpu", s) / len(crops)
            row: dict[str, Any] = {
                "name": name, "pixels": int(rgb.shape[0] * rgb.shape[1]), "faces": counts,
                "detect_s": det,
                "detect_over_plain": {k: v / det["plain"] for k, v in det.items()},
                "paste_ms_per_face": {k: 1000 * statistics.median(v) / max(1, len(faces))
                                      for k, v in ptimes.items()},
                "occlusion_ms_per_face": occ_ms}
            if img.format == "JPEG":
                kept, fresh = Path(tmp) / "kept.jpg", Path(tmp) / "fresh.jpg"
                wtimes = interleaved({
                    "blocks kept": lambda: write_image(kept, result, like=img, overwrite=True),
                    "pillow q95": lambda: write_image(fresh, result, like=img, overwrite=True,
                                                      keep_jpeg_blocks=False)}, "cpu", s)
                mask = np.zeros(rgb.shape[:2], np.float32)
                for p in patches:
                    p.union_into(mask)
                bg = mask == 0
                row["jpeg_write_s"] = {k: statistics.median(v) for k, v in wtimes.items()}
                row["background_bit_identical"] = {
                    k: float((np.array(Image.open(f).convert("RGB"))[bg] == rgb[bg])
                             .all(axis=1).mean()) for k, f in (("blocks kept", kept),
                                                               ("pillow q95", fresh))}
            out["photos"].append(row)
    return out


# ---------------------------------------------------------------------------------------------
# 4. video


def video_section(s: Settings, work: Path, heads: list[np.ndarray]) -> dict[str, Any]:
    from facecomp import FaceComp, PhotoConfig
    from facecomp.frontends.video import VideoConfig, translate_video

    fc = FaceComp(PhotoConfig())
    w, h = s.video_size
    out: dict[str, Any] = {"width": w, "height": h, "frames": s.video_frames, "fps_in": 25,
                           "config": dataclasses.asdict(VideoConfig()), "clips": []}
    for n_faces in s.video_faces:
        src = work / f"clip_{n_faces}faces.mp4"
        progress(f"video: making {w}x{h} {s.video_frames} frames, {n_faces} face(s)")
        make_clip(src, s.video_size, s.video_frames, n_faces, heads)
        progress(f"video: translating {src.name}")
        report = translate_video(src, work / f"clip_{n_faces}faces.out.mp4", fc, VideoConfig(),
                                 overwrite=True)
        slowest = max(report.timings, key=report.timings.get)
        progress(f"video: translating {src.name}, full detection on every frame")
        every = translate_video(src, work / f"clip_{n_faces}faces.every.mp4", fc,
                                VideoConfig(detect_every=1), overwrite=True)
        out["clips"].append({
            "faces_pasted": n_faces, "frames": report.frames, "face_frames": report.face_frames,
            "tracks": report.tracks, "wall_s": report.seconds, "fps": report.fps,
            "timings": report.timings, "slowest_stage": slowest,
            "wall_over_slowest_stage": report.seconds / max(report.timings[slowest], 1e-9),
            "stage_sum_over_wall": sum(report.timings.values()) / max(report.seconds, 1e-9),
            "detect_every_1": {"fps": every.fps, "timings": every.timings,
                               "face_frames": every.face_frames},
            "fps_over_detect_every_1": report.fps / max(every.fps, 1e-9)})
    out["memory"] = video_memory(s, work, heads)
    out["flicker"] = flicker_of_shared_clips(s, work, fc)
    return out


def decoded(path: Path, limit: int | None = None) -> list[np.ndarray]:
    import av

    with av.open(str(path)) as c:
        frames = []
        for f in c.decode(video=0):
            frames.append(f.to_ndarray(format="rgb24"))
            if limit is not None and len(frames) >= limit:
                break
        return frames


class GammaGenerator(nn.Module):
    """A generator whose change is perfectly consistent: a gamma curve on each crop. Pasted
    with every default, its flicker is the floor the paste itself sets."""

    def __init__(self, gamma: float = 0.8) -> None:
        super().__init__()
        self.gamma = nn.Parameter(torch.tensor(gamma))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return 2 * ((x + 1) / 2).clamp(0, 1) ** self.gamma - 1


def flicker_of_shared_clips(s: Settings, work: Path, fc) -> dict[str, Any]:
    """facecomp.measure.flicker of the shipped model on the start of each shared clip, per frame
    (--steady 0), with the default steady change (which runs the model on about every other
    frame, --generate-every) and with the model on every frame, beside references: two filters that treat
    every frame alike (a gamma curve, an unsharp mask) applied to the frames, and a gamma curve
    as the generator, pasted as the model is. The faces are those the detector finds on every
    input frame."""
    import cv2

    from facecomp import FaceComp
    from facecomp.measure.flicker import detected_boxes, flicker
    from facecomp.frontends.video import VideoConfig, translate_video

    media = Path(s.media_dir)
    missing = [name for name, _ in s.flicker_clips if not (media / name).is_file()]
    out: dict[str, Any] = {"steady_default_s": VideoConfig().steady, "clips": []}
    if missing:
        out["note"] = f"skipped {', '.join(missing)}: not in {media}"
    lut = (255 * (np.arange(256) / 255) ** 0.8 + 0.5).astype(np.uint8)

    def sharpen(x: np.ndarray) -> np.ndarray:
        return cv2.addWeighted(x, 2.0, cv2.GaussianBlur(x, (0, 0), 1.5), -1.0, 0)

    for name, seconds in s.flicker_clips:
        if name in missing:
            continue
        row: dict[str, Any] = {"name": name, "seconds": seconds, "flicker": {}, "fps": {},
                               "steady_ms_per_face": None}
        results = {}
        gamma_fc = FaceComp(fc.config, generator=GammaGenerator(), info=fc.info,
                            detector=fc.detector)
        steady, every = VideoConfig().steady, VideoConfig().generate_every
        for label, tau, k, p in (("per_frame", 0.0, 1, fc), ("steady", steady, every, fc),
                                 ("steady_model_every_frame", steady, 1, fc),
                                 ("gamma_generator (reference)", 0.0, 1, gamma_fc)):
            dst = work / f"flicker_{label.split()[0]}_{name}"
            progress(f"video flicker: {name}, first {seconds} s, {label}, steady {tau}, "
                     f"generate every {k}")
            report = translate_video(media / name, dst, p,
                                     VideoConfig(end=seconds, steady=tau, generate_every=k),
                                     overwrite=True)
            results[label] = decoded(dst)
            row["fps"][label] = report.fps
            row.setdefault("timings", {})[label] = report.timings
            row.setdefault("model_runs_over_face_frames", {})[label] = \
                report.generated / max(report.face_frames, 1)
            if label == "steady" and report.face_frames:
                row["steady_ms_per_face"] = 1000 * report.timings.get("steady", 0.0) / \
                    report.face_frames
        src = decoded(media / name, len(results["per_frame"]))
        progress(f"video flicker: {name}, detecting faces on {len(src)} input frames")
        boxes = list(detected_boxes(src, fc.detector))
        results["gamma_0.8 (reference)"] = [lut[x] for x in src]
        results["sharpen (reference)"] = [sharpen(x) for x in src]
        for label, frames in results.items():
            rep = flicker(src, frames, boxes)
            row["flicker"][label] = rep.flicker
            row.setdefault("change_levels", {})[label] = rep.change
        row["frames"], row["face_boxes"] = len(src), sum(len(b) for b in boxes)
        row["steady_over_per_frame"] = row["flicker"]["steady"] / \
            max(row["flicker"]["per_frame"], 1e-9)
        out["clips"].append(row)
    return out


def video_child(src: Path, dst: Path) -> dict[str, Any]:
    """Runs in a fresh process: translate one clip with the default pipeline; report its peak
    RSS (VmHWM is per process image, so it starts afresh at exec)."""
    from facecomp import FaceComp, PhotoConfig
    from facecomp.frontends.video import VideoConfig, translate_video

    report = translate_video(src, dst, FaceComp(PhotoConfig()), VideoConfig(), overwrite=True)
    return {"frames": report.frames, "fps": report.fps, "peak_rss_mb": rss_mb()[1]}


def video_memory(s: Settings, work: Path, heads: list[np.ndarray]) -> dict[str, Any]:
    """Peak RSS of the same 1-face clip at two lengths: bounded queues keep it flat."""
    runs = []
    for n in s.video_memory_frames:
        src = work / f"memory_{n}.mp4"
        progress(f"video memory: {n} frames")
        make_clip(src, s.video_size, n, 1, heads)
        cmd = [sys.executable, str(Path(__file__).resolve()), "--child-video", str(src),
               "--child-dir", str(work)]
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=3600)
        if proc.returncode != 0:
            raise RuntimeError(f"video child failed ({proc.returncode}): "
                               f"{proc.stderr.strip()[-800:]}")
        runs.append(json.loads(proc.stdout.strip().splitlines()[-1]))
    return {"runs": runs,
            "long_over_short_peak_rss": runs[-1]["peak_rss_mb"] / max(runs[0]["peak_rss_mb"], 1)}


# ---------------------------------------------------------------------------------------------
# 5. training


def instance_norm(net: nn.Module) -> nn.Module:
    """Use ``nn.InstanceNorm2d`` as the reference code does, wherever facecomp's networks write
    instance normalisation another way (GroupNorm with one group per channel: same function)."""
    for name, child in net.named_children():
        if isinstance(child, nn.GroupNorm) and child.num_groups == child.num_channels \
                and not child.affine:
            setattr(net, name, nn.InstanceNorm2d(child.num_channels, eps=child.eps))
        else:
            instance_norm(child)
    return net


class TextbookCycleGAN:
    """A CycleGAN training step as written in the reference pytorch-CycleGAN-and-pix2pix code
    (models/cycle_gan_model.py): separate forward passes, LSGAN (MSE), cycle lambda 10,
    identity 0.5 * lambda, Adam(2e-4, (0.5, 0.999)), fp32, ``nn.InstanceNorm2d``, default memory
    format and default denormal handling. The networks are facecomp's (the same architectures).
    The image pools are left out (at batch 1 they only copy a tensor)."""

    def __init__(self, ngf: int, n_blocks: int, ndf: int, n_layers: int, device: str,
                 lambda_cycle: float = 10.0, lambda_identity: float = 0.5) -> None:
        from facecomp.networks import PatchDiscriminator, ResnetGenerator

        torch.manual_seed(0)
        self.netG_A = ResnetGenerator(ngf=ngf, n_blocks=n_blocks).to(device)
        self.netG_B = ResnetGenerator(ngf=ngf, n_blocks=n_blocks).to(device)
        self.netD_A = PatchDiscriminator(ndf=ndf, n_layers=n_layers).to(device)
        self.netD_B = PatchDiscriminator(ndf=ndf, n_layers=n_layers).to(device)
        for net in (self.netG_A, self.netG_B, self.netD_A, self.netD_B):
            instance_norm(net)
            for m in net.modules():  # init_type 'normal', gain 0.02
                if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d)):
                    nn.init.normal_(m.weight, 0.0, 0.02)
                    nn.init.constant_(m.bias, 0.0)
        self.lambda_A = self.lambda_B = lambda_cycle
        self.lambda_idt = lambda_identity
        self.criterionGAN = nn.MSELoss()
        self.criterionCycle = nn.L1Loss()
        self.criterionIdt = nn.L1Loss()
        self.optimizer_G = torch.optim.Adam(
            itertools.chain(self.netG_A.parameters(), self.netG_B.parameters()),
            lr=2e-4, betas=(0.5, 0.999))
        self.optimizer_D = torch.optim.Adam(
            itertools.chain(self.netD_A.parameters(), self.netD_B.parameters()),
            lr=2e-4, betas=(0.5, 0.999))

    def gan_loss(self, prediction: torch.Tensor, target_is_real: bool) -> torch.Tensor:
        target = torch.tensor(1.0 if target_is_real else 0.0, device=prediction.device)
        return self.criterionGAN(prediction, target.expand_as(prediction))

    @staticmethod
    def set_requires_grad(nets: list[nn.Module], requires_grad: bool) -> None:
        for net in nets:
            for param in net.parameters():
                param.requires_grad = requires_grad

    def backward_D_basic(self, netD: nn.Module, real: torch.Tensor,
                         fake: torch.Tensor) -> torch.Tensor:
        loss_D = (self.gan_loss(netD(real), True) + self.gan_loss(netD(fake.detach()), False))
        loss_D = loss_D * 0.5
        loss_D.backward()
        return loss_D

    def optimize_parameters(self, real_A: torch.Tensor, real_B: torch.Tensor) -> None:
        # forward
        fake_B = self.netG_A(real_A)
        rec_A = self.netG_B(fake_B)
        fake_A = self.netG_B(real_B)
        rec_B = self.netG_A(fake_A)
        # G_A and G_B
        self.set_requires_grad([self.netD_A, self.netD_B], False)
        self.optimizer_G.zero_grad()
        idt_A = self.netG_A(real_B)
        loss_idt_A = self.criterionIdt(idt_A, real_B) * self.lambda_B * self.lambda_idt
        idt_B = self.netG_B(real_A)
        loss_idt_B = self.criterionIdt(idt_B, real_A) * self.lambda_A * self.lambda_idt
        loss_G_A = self.gan_loss(self.netD_A(fake_B), True)
        loss_G_B = self.gan_loss(self.netD_B(fake_A), True)
        loss_cycle_A = self.criterionCycle(rec_A, real_A) * self.lambda_A
        loss_cycle_B = self.criterionCycle(rec_B, real_B) * self.lambda_B
        loss_G = loss_G_A + loss_G_B + loss_cycle_A + loss_cycle_B + loss_idt_A + loss_idt_B
        loss_G.backward()
        self.optimizer_G.step()
        # D_A and D_B
        self.set_requires_grad([self.netD_A, self.netD_B], True)
        self.optimizer_D.zero_grad()
        self.backward_D_basic(self.netD_A, real_B, fake_B)
        self.backward_D_basic(self.netD_B, real_A, fake_A)
        self.optimizer_D.step()


def facecomp_stepper(s: Settings, device: str, real_A: torch.Tensor, real_B: torch.Tensor
                     ) -> tuple[Callable[[], None], str]:
    """facecomp's own step (step.build_nets + step.train_step), set up as train() does:
    the config's memory format, its precision for the device, its backend switches (cudnn
    autotuning on CUDA, denormals flushed on the CPU: set before every step, since the textbook
    step in between restores the default)."""
    from facecomp.training import step, train
    from facecomp.training.config import TrainConfig

    c = TrainConfig(a="-", b="-", out="-", size=s.train_size, ngf=s.train_ngf,
                    n_blocks=s.train_blocks, ndf=s.train_ndf, n_layers_d=3, batch_size=1,
                    upsample="transpose", device=device)  # the textbook's architecture
    dev = torch.device(device)
    nets = step.build_nets(c, dev)
    dtype = train.train_dtype(c.precision, dev)  # what train() picks for the device
    fmt = torch.channels_last if c.channels_last else torch.contiguous_format
    a, b = real_A.contiguous(memory_format=fmt), real_B.contiguous(memory_format=fmt)

    def ctx() -> contextlib.AbstractContextManager:
        return torch.autocast(dev.type, dtype=dtype, enabled=dtype != torch.float32)

    def one_step() -> None:
        train.configure_backend(dev)
        step.train_step(nets, a, b, c, ctx)

    return one_step, str(dtype).replace("torch.", "")


def training_section(s: Settings) -> dict[str, Any]:
    device = "cuda" if torch.cuda.is_available() else "cpu"
    crops = face_crops(s.train_size, 2)
    x = torch.from_numpy(crops).permute(0, 3, 1, 2).float().div(127.5).sub(1.0).to(device)
    real_A, real_B = x[:1].contiguous(), x[1:].contiguous()
    fc_step, fc_dtype = facecomp_stepper(s, device, real_A, real_B)
    tb = TextbookCycleGAN(s.train_ngf, s.train_blocks, s.train_ndf, 3, device)

    def tb_step() -> None:
        torch.set_flush_denormal(False)  # the default
        tb.optimize_parameters(real_A, real_B)

    flops = {"facecomp": count_flops(fc_step), "textbook": count_flops(tb_step)}  # step 0
    probe = conv_probe(device, "fp32", s)
    probe_s = dataclasses.replace(s, repeats=1)
    steps: dict[str, list[float]] = {"facecomp": [], "textbook": [], "conv": []}
    n_steps = s.train_steps_cuda if device == "cuda" else s.train_steps
    total = s.train_warmup + n_steps
    for k in range(total):  # interleaved: conv sample, facecomp step, textbook step, ...
        conv_s = median_time(probe.fn, device, probe_s)
        for name, fn in (("facecomp", fc_step), ("textbook", tb_step)):
            progress(f"training: {s.train_size}px {device} {name} step {k + 1}/{total}")
            t = time.perf_counter()
            fn()
            sync(device)
            if k >= s.train_warmup:
                steps[name].append(time.perf_counter() - t)
        if k >= s.train_warmup:
            steps["conv"].append(conv_s)
    torch.set_flush_denormal(False)
    out: dict[str, Any] = {
        "device": device, "size": s.train_size, "batch_size": 1,
        "generator": {"ngf": s.train_ngf, "n_blocks": s.train_blocks},
        "discriminator": {"ndf": s.train_ndf, "n_layers": 3},
        "warmup_steps": s.train_warmup, "steps": n_steps,
        "note": "a first step of each, not timed, counts FLOPs; then warm-up, then timed steps"}
    conv = steps.pop("conv")
    out["conv_peak_fp32_gflops_per_s"] = probe.flops / statistics.median(conv) / 1e9
    for name, times in steps.items():
        sec = statistics.median(times)
        out[name] = {"s_per_step": sec, "it_per_s": 1.0 / sec, "step_times_s": times,
                     "gflop_per_step": flops[name] / 1e9,
                     "dtype": fc_dtype if name == "facecomp" else "float32",
                     "fraction_of_conv_peak": paired_rate_ratio(flops[name], times, probe.flops,
                                                                conv)}
    out["facecomp_over_textbook"] = out["facecomp"]["s_per_step"] / out["textbook"]["s_per_step"]
    out["facecomp_over_textbook_paired"] = statistics.median(  # step k of each, side by side
        f / t for f, t in zip(steps["facecomp"], steps["textbook"]))
    return out


# ---------------------------------------------------------------------------------------------
# Machine facts, the whole run, output


def cpu_flags() -> set[str]:
    with contextlib.suppress(OSError):
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("flags"):
                    return set(line.split(":", 1)[1].split())
    return set()


def git_commit() -> str | None:
    try:
        head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True,
                              text=True, timeout=10).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"],
                               cwd=ROOT, capture_output=True, text=True, timeout=10).stdout
        return (head + ("+dirty" if dirty.strip() else "")) or None
    except (OSError, subprocess.SubprocessError):
        return None


def machine() -> dict[str, Any]:
    from facecomp.device import cpu_name

    flags = cpu_flags()
    cuda = torch.cuda.is_available()
    return {
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "cpu_model": cpu_name(), "cpu_count": os.cpu_count(),
        "cpus_usable": len(os.sched_getaffinity(0)), "torch_threads": torch.get_num_threads(),
        "avx512_bf16": "avx512_bf16" in flags, "amx_bf16": "amx_bf16" in flags,
        "torch": torch.__version__, "python": platform.python_version(),
        "cuda_available": cuda, "cuda_device": torch.cuda.get_device_name(0) if cuda else None,
        "load_average_start": list(os.getloadavg()), "facecomp_commit": git_commit()}


def run(s: Settings, sections: tuple[str, ...] = SECTIONS,
        work: Path | None = None) -> dict[str, Any]:
    """Run the chosen sections; a failing section is recorded as {"error": ...}."""
    results: dict[str, Any] = {"machine": machine(), "settings": dataclasses.asdict(s)}
    t_all = time.perf_counter()
    with contextlib.ExitStack() as stack:
        if work is None:
            work = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="facecomp-bench-")))
        heads: list[np.ndarray] = []
        peak = None
        for name in sections:
            progress(f"== {name}")
            t = time.perf_counter()
            try:
                if name in ("photo", "video") and not heads:
                    heads = head_images(s.group_heads)
                if name == "startup":
                    results[name] = startup_section(s, work)
                elif name == "conv_peak":
                    results[name] = peak = conv_peak_section(s)
                elif name == "generator":
                    results[name] = generator_section(s)
                elif name == "age":
                    results[name] = age_section(s)
                elif name == "photo":
                    results[name] = photo_section(s, work, heads)
                elif name == "composite":
                    results[name] = composite_section(s)
                elif name == "video":
                    results[name] = video_section(s, work, heads)
                elif name == "training":
                    results[name] = training_section(s)
                results[name]["section_s"] = time.perf_counter() - t
                results[name]["load_average_end"] = os.getloadavg()[0]
            except Exception as e:  # one broken section does not lose the others
                traceback.print_exc()
                results[name] = {"error": f"{type(e).__name__}: {e}"}
    if peak is not None and len(sections) > 1:  # how much the machine drifted meanwhile
        progress("== conv_peak again (drift)")
        again = conv_rate("cpu", "fp32", s)["gflops_per_s"]
        peak["cpu"]["fp32"]["end_of_run_gflops_per_s"] = again
        peak["cpu"]["fp32"]["end_over_start"] = again / peak["cpu"]["fp32"]["gflops_per_s"]
    results["machine"]["load_average_end"] = list(os.getloadavg())
    results["total_s"] = time.perf_counter() - t_all
    return results


def write_results(path: Path, results: dict[str, Any]) -> None:
    """Write JSON atomically: a temporary file in the same folder, then os.replace."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as f:
            json.dump(results, f, indent=2, sort_keys=False)
            f.write("\n")
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def _f(v: Any, spec: str = ".2f") -> str:
    return "-" if v is None else format(v, spec)


def format_table(r: dict[str, Any]) -> str:
    """A short human summary of the results."""
    m = r["machine"]
    lines = [f"facecomp bench ({r['settings']['name']}) -- {m['cpu_model']}, {m['cpus_usable']} "
             f"cpus, torch {m['torch']}, cuda {m['cuda_device'] or 'none'}, "
             f"load {m['load_average_start'][0]:.1f}"]
    for name in SECTIONS:
        if name in r and "error" in r[name]:
            lines.append(f"{name}: ERROR {r[name]['error']}")
    st = r.get("startup", {})
    if "help_s" in st:
        lines.append(f"startup: --help {st['help_s']:.2f} s, import torch {st['import_torch_s']:.2f} s, "
                     f"one photo {st['one_photo_wall_s']:.2f} s wall for "
                     f"{_f(st.get('one_photo_reported_work_s'))} s of work")
    cp = r.get("conv_peak", {})
    for dev in devices():
        if dev in cp:
            rates = ", ".join(f"{p} {v['gflops_per_s']:.0f}" + (
                f" (x{v['speedup_over_fp32']:.2f})" if "speedup_over_fp32" in v else "")
                for p, v in cp[dev].items())
            drift = cp[dev]["fp32"].get("end_over_start")
            lines.append(f"conv peak {dev}: {rates} GFLOP/s" +
                         (f"; fp32 at the end / start {drift:.2f}" if drift else ""))
    g = r.get("generator", {})
    if "results" in g:
        lines.append(f"generator {g['model']['name']} {g['size']}px, {g['gflop_per_face']:.2f} "
                     f"GFLOP/face -- faces/s translator (forward) [fraction of conv peak: "
                     f"FLOPs executed, model FLOPs]")
        for dev, by_p in g["results"].items():
            for p, by_b in by_p.items():
                cells = [f"b{b} {v['translator_faces_per_s']:.1f} ({v['forward_faces_per_s']:.1f}) "
                         f"[{_f(v.get('fraction_of_conv_peak'))}"
                         f" model {_f(v.get('model_fraction_of_conv_peak'))}]"
                         for b, v in by_b.items()]
                lines.append(f"  {dev} {p:4s} " + "  ".join(cells))
        for dev, diffs in g["precision_diff"].items():
            for p, d in diffs.items():
                lines.append(f"  {dev} {p} vs fp32: max {d['max_abs_levels']} levels, "
                             f"mean {d['mean_abs_levels']:.2f}")
        th = g.get("threads", {})
        cells = [f"b{b} x{v['speedup_over_1_thread']:.2f}" for b, v in th.items() if b.isdigit()]
        if cells:
            lines.append(f"  cpu fp32 {th['torch_threads']} threads vs 1 (speed): " +
                         "  ".join(cells))
        ref = g["reference"]
        cells = [f"{dev} {p} {v['1']['forward_faces_per_s']:.2f} faces/s "
                 f"[{_f(v['1'].get('fraction_of_conv_peak'))}]"
                 for dev, by_p in ref["results"].items() for p, v in by_p.items()]
        lines.append(f"  reference ngf {ref['arch_args']['ngf']} {ref['size']}px "
                     f"{ref['gflop_per_face']:.1f} GFLOP/face: " + ", ".join(cells))
    a = r.get("age", {})
    if "results" in a:
        cells = [f"b{b} {v['faces_per_s']:.0f} faces/s ({v['ms_per_face']:.1f} ms)"
                 for b, v in a["results"].items()]
        lines.append(f"age estimator {a['input_size']}px, {a['mflop_per_face']:.0f} MFLOP/face "
                     f"(crop + mirror): " + "  ".join(cells))
    ph = r.get("photo", {})
    if "photos" in ph:
        lines.append("photo (warm run)          MP  faces  total s  translate s  "
                     "total/translate  peak RSS MB")
        for p in ph["photos"]:
            w = p["warm"]
            lines.append(f"  {p['name'][:22]:22s} {p['pixels'] / 1e6:5.1f} {p['faces']:6d} "
                         f"{w['total_s']:8.2f} {w['timings'].get('translate', 0):12.2f} "
                         f"{_f(p['total_over_translate']):>16s} {p['peak_rss_mb']:12.0f}")
        if "note" in ph:
            lines.append(f"  note: {ph['note']}")
        b = ph.get("batching", {})
        for dev in devices():
            if dev in b:
                ratio = b[dev]["one_at_a_time_over_batched"]
                lines.append(f"  {b['photo'][:30]} {b['faces']} faces {dev}: one at a time / "
                             f"batch {b['batch_size']} = {ratio:.2f}")
    cp = r.get("composite", {})
    for p in cp.get("photos", []):
        d = p["detect_over_plain"]
        lines.append(f"composite {p['name'][:26]}: detect {p['detect_s']['plain']:.2f} s plain, "
                     + ", ".join(f"{k} {v:.2f}x" for k, v in d.items() if k != "plain")
                     + f"; faces {p['faces']}")
        lines.append("  paste ms/face: " + ", ".join(f"{k} {v:.1f}"
                                                     for k, v in p["paste_ms_per_face"].items())
                     + f"; occlusion model {_f(p.get('occlusion_ms_per_face'), '.1f')}")
        if "jpeg_write_s" in p:
            lines.append("  jpeg write s: " + ", ".join(
                f"{k} {v:.3f} ({100 * p['background_bit_identical'][k]:.1f} % background "
                f"bit-identical)" for k, v in p["jpeg_write_s"].items()))
    v = r.get("video", {})
    for c in v.get("clips", []):
        lines.append(f"video {v['width']}x{v['height']} {c['faces_pasted']} face(s): "
                     f"{c['fps']:.2f} fps, slowest {c['slowest_stage']}, wall/slowest "
                     f"{c['wall_over_slowest_stage']:.2f}" + (
                         f"; detecting on every frame {c['detect_every_1']['fps']:.2f} fps"
                         if "detect_every_1" in c else ""))
    if "memory" in v:
        runs = v["memory"]["runs"]
        lines.append("video peak RSS: " + ", ".join(
            f"{m['frames']} frames {m['peak_rss_mb']:.0f} MB" for m in runs))
    for c in v.get("flicker", {}).get("clips", []):
        lines.append(f"video flicker {c['name'][:24]} {c['seconds']} s: " + ", ".join(
            f"{k} {x:.3f}" for k, x in c["flicker"].items()))
    if "note" in v.get("flicker", {}):
        lines.append(f"  note: {v['flicker']['note']}")
    t = r.get("training", {})
    if "facecomp" in t:
        lines.append(f"training {t['size']}px {t['device']}: facecomp "
                     f"{t['facecomp']['s_per_step']:.2f} s/step, textbook "
                     f"{t['textbook']['s_per_step']:.2f} s/step, facecomp/textbook "
                     f"{t['facecomp_over_textbook']:.2f} (paired "
                     f"{t['facecomp_over_textbook_paired']:.2f}); fraction of conv peak "
                     f"{t['facecomp']['fraction_of_conv_peak']:.2f} vs "
                     f"{t['textbook']['fraction_of_conv_peak']:.2f}")
    lines.append(f"total {r['total_s']:.0f} s")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="tiny sizes and few repeats")
    ap.add_argument("--out", type=Path, default=ROOT / "bench" / "results.json")
    ap.add_argument("--only", default="", help=f"comma-separated subset of {','.join(SECTIONS)}")
    ap.add_argument("--threads", type=int, default=0,
                    help="torch threads, here and in the photo subprocesses (default: torch's)")
    ap.add_argument("--child-photo", type=Path, help=argparse.SUPPRESS)
    ap.add_argument("--child-video", type=Path, help=argparse.SUPPRESS)
    ap.add_argument("--child-dir", type=Path, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.child_photo is not None:
        print(json.dumps(photo_child(args.child_photo, args.child_dir)))
        return 0
    if args.child_video is not None:
        dst = args.child_dir / f"{args.child_video.stem}.out.mp4"
        print(json.dumps(video_child(args.child_video, dst)))
        return 0
    sections = tuple(x.strip() for x in args.only.split(",") if x.strip()) or SECTIONS
    unknown = sorted(set(sections) - set(SECTIONS))
    if unknown:
        ap.error(f"unknown sections {', '.join(unknown)}; choose from {', '.join(SECTIONS)}")
    sections = tuple(x for x in SECTIONS if x in sections)
    if args.threads > 0:
        os.environ["OMP_NUM_THREADS"] = str(args.threads)  # read by the photo subprocesses
        torch.set_num_threads(args.threads)
    results = run(QUICK if args.quick else FULL, sections)
    write_results(args.out, results)
    print(format_table(results))
    progress(f"wrote {args.out}")
    return 1 if any("error" in results.get(n, {}) for n in sections) else 0


if __name__ == "__main__":
    sys.exit(main())
