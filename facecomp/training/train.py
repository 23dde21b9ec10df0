"""Train: the CycleGAN recipe as one explicit loop, reusing the inference networks and format.

`train(config)` reads top to bottom: the run folder, the data (:mod:`.data`), the networks and
one step (:mod:`.step`), checkpoints, samples and logs (:mod:`.runs`).

Determinism: the data order and augmentation of sample ``i`` of epoch ``e`` depend only on
(seed, e, i), and the pools draw from their own saved generator, so on the CPU a run of 2N steps
equals N steps + ``--resume`` + N steps, bit for bit.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import os
import platform
import shutil
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator

import torch
import torch.distributed as dist
from torch import nn

from ..device import resolve_device, resolve_dtype
from ..errors import ConfigError, OutputError
from ..io import remove_stale_temporaries
from .config import TrainConfig
from .data import UnpairedCrops, data_template, domain_files
from .runs import (CONFIG_FILE, STATE_FILE, STATS_FILE, fixed_samples, load_run, restore,
                   save_checkpoint, tensorboard_writer, trim_stats, write_json, write_samples)
from .step import build_nets, train_step

log = logging.getLogger(__name__)


# ---------------------------------------------------------------------------------------------
# The loop


@dataclass
class Progress:
    """What a progress display needs, handed to the ``on_tick`` callback after each step."""

    step: int
    total_steps: int
    epoch: int
    size: int
    losses: dict[str, float]
    it_per_s: float


@dataclass
class TrainResult:
    run_dir: Path
    name: str
    step: int
    epoch: int
    G_A: nn.Module = field(repr=False)
    G_B: nn.Module = field(repr=False)
    epochs: int = 0  # the run's total; ``epoch`` counts the epochs completed


def steps_per_epoch(c: TrainConfig, n_a: int, n_b: int, world: int = 1) -> int:
    samples = c.epoch_size or max(n_a, n_b)
    return max(1, samples // (c.batch_size * world))


LOCK_FILE = ".lock"
#: A loss above this (LSGAN and L1 terms are normally below 20) means training is blowing up.
LOSS_WARNING = 1e3


@contextlib.contextmanager
def run_lock(run: Path) -> Iterator[None]:
    """Hold an exclusive lock on the run folder: a second ``train`` on it (fresh or --resume)
    is refused at once, naming the process that holds it, instead of interleaving its
    checkpoints and stats with this one's. A folder this call created and left empty is removed."""
    try:
        import fcntl
    except ImportError:  # not POSIX: no locking
        yield
        return
    created = not run.exists()
    try:
        run.mkdir(parents=True, exist_ok=True)
        fp = open(run / LOCK_FILE, "a+")
    except OSError as e:
        raise OutputError(f"{run}: cannot create the run folder ({e.strerror or e}); choose "
                          "another `out`") from None
    try:
        try:
            fcntl.flock(fp.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            fp.seek(0)
            holder = fp.read().strip() or "another process"
            raise OutputError(f"{run} is in use by another training run ({holder}); wait for it "
                              "to finish or choose another `out`") from None
        fp.seek(0)
        fp.truncate()
        fp.write(f"pid {os.getpid()} on {platform.node()}\n")
        fp.flush()
        yield
    finally:
        fp.close()
        if created and {p.name for p in run.iterdir()} <= {LOCK_FILE}:
            shutil.rmtree(run, ignore_errors=True)


def train(config: TrainConfig, *, resume: bool = False, overrides: set[str] | None = None,
          on_tick: Callable[[Progress], None] | None = None) -> TrainResult:
    """Train (or resume) a CycleGAN run in ``config.out``; returns where it stopped.

    On resume the saved recipe is kept; of the RESUMABLE options, those named in ``overrides``
    (default: every one that differs from the saved run) are taken from ``config``. The run
    folder is locked meanwhile (:func:`run_lock`)."""
    rank, _ = distributed()
    if rank != 0:
        return _train(config, resume, overrides, on_tick)
    with run_lock(Path(config.out)):
        return _train(config, resume, overrides, on_tick)


def _train(config: TrainConfig, resume: bool, overrides: set[str] | None,
           on_tick: Callable[[Progress], None] | None) -> TrainResult:
    rank, world = distributed()
    run = Path(config.out)
    state = None
    if resume:
        config, state = load_run(run, config, overrides)
    elif (run / STATE_FILE).exists():
        raise ConfigError(f"{run} already holds a training run; pass `resume=True` to continue it or "
                          "choose another `out`")
    c = config
    device = resolve_device(c.device) if world == 1 or c.device != "auto" else \
        resolve_device("cuda" if torch.cuda.is_available() else "cpu")
    if device.type == "cuda" and world > 1:
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", rank)))
        torch.cuda.set_device(device)
    a_files = domain_files(c.a, c.batch_size, "a")
    b_files = domain_files(c.b, c.batch_size, "b")
    if Path(c.a).resolve() == Path(c.b).resolve():
        log.warning("`a` and `b` are the same folder (%s): the two domains do not differ, so "
                    "the model can only learn to leave faces as they are", c.a)
    if c.template == "auto":
        c = config = dataclasses.replace(c, template=data_template(c.a, c.b))
    if rank == 0:
        run.mkdir(parents=True, exist_ok=True)
        write_json(run / CONFIG_FILE, c.to_json())
    dtype = train_dtype(c.precision, device)
    configure_backend(device)
    # fp16 needs loss scaling (bf16 and fp32 do not); the scalers' state is checkpointed.
    scalers = (torch.amp.GradScaler(device.type), torch.amp.GradScaler(device.type)) \
        if dtype == torch.float16 else None

    def autocast():
        return torch.autocast(device.type, dtype=dtype, enabled=dtype != torch.float32)

    n = build_nets(c, device)
    n.scalers = scalers
    step, epoch, done_in_epoch = 0, 0, 0
    if state is not None:
        step, epoch, done_in_epoch = restore(n, state, device)
    if rank == 0:
        # Lines logged after the checkpoint we start from (all of them when a killed run never
        # reached its first checkpoint and starts afresh) and files it was writing.
        trim_stats(run / STATS_FILE, step)
        remove_stale_temporaries(run)
    if world > 1:
        from torch.nn.parallel import DistributedDataParallel as DDP

        ids = [device.index] if device.type == "cuda" else None
        n.G_A, n.G_B, n.D_A, n.D_B = (DDP(m, device_ids=ids, static_graph=True)
                                      for m in (n.G_A, n.G_B, n.D_A, n.D_B))
    if c.compile:
        n.G_A, n.G_B = torch.compile(n.G_A), torch.compile(n.G_B)

    per_epoch = steps_per_epoch(c, len(a_files), len(b_files), world)
    total = per_epoch * c.total_epochs
    stop_at = min(total, c.max_steps) if c.max_steps else total
    fixed = fixed_samples(c, a_files, b_files) if rank == 0 else None
    stats = open(run / STATS_FILE, "a") if rank == 0 else None
    board = tensorboard_writer(run) if rank == 0 else None
    log.info("training %s: %d + %d images, %d steps/epoch, %d epochs, %s on %s", c.name,
             len(a_files), len(b_files), per_epoch, c.total_epochs, dtype, device)
    t_last, n_last = time.perf_counter(), step
    warned_loss = False
    try:
        while epoch < c.total_epochs and step < stop_at:
            size = c.size_at(epoch)
            if epoch > 0 and size != c.size_at(epoch - 1) and done_in_epoch == 0:
                n.pool_A.reset()  # pooled fakes of the previous size no longer fit
                n.pool_B.reset()
            for real_A, real_B in _batches(a_files, b_files, c, epoch, per_epoch, done_in_epoch,
                                           rank, world, device):
                losses = train_step(n, real_A, real_B, c, autocast)
                step += 1
                if not warned_loss and max(losses.values()) > LOSS_WARNING:
                    warned_loss = True
                    k = max(losses, key=losses.get)
                    log.warning("loss %s reached %.3g at step %d (usually below 20): the "
                                "learning rate may be too high (`lr` %g)", k, losses[k], step,
                                c.lr)
                done_in_epoch += 1
                now = time.perf_counter()
                rate = (step - n_last) / max(now - t_last, 1e-9)
                if on_tick is not None and rank == 0:
                    on_tick(Progress(step, stop_at, epoch, size, losses, rate))
                if rank == 0 and (step % c.log_every == 0 or step == stop_at):
                    stats.write(json.dumps({"step": step, "epoch": epoch, "size": size,
                                            "lr": n.opt_G.param_groups[0]["lr"],
                                            "it_per_s": round(rate, 3), "time": time.time(),
                                            **{k: round(v, 5) for k, v in losses.items()}}) + "\n")
                    stats.flush()
                    if board is not None:
                        for k, v in losses.items():
                            board.add_scalar(f"loss/{k}", v, step)
                        board.add_scalar("it_per_s", rate, step)
                    t_last, n_last = now, step
                if rank == 0 and step % c.sample_every == 0:
                    write_samples(n, fixed, run / "samples" / f"step_{step:07d}.jpg", size)
                if step % c.save_every == 0 and step < stop_at:
                    save_checkpoint(n, c, run, step, epoch, done_in_epoch, size, rank)
                if step >= stop_at:
                    break
            if done_in_epoch >= per_epoch:
                epoch, done_in_epoch = epoch + 1, 0
                with warnings.catch_warnings():  # fp16: GradScaler may skip an overflowed step
                    warnings.filterwarnings("ignore", "Detected call of `lr_scheduler.step")
                    n.sched_G.step()
                    n.sched_D.step()
        save_checkpoint(n, c, run, step, epoch, done_in_epoch, c.size_at(min(epoch, c.total_epochs - 1)),
              rank)
        if rank == 0 and fixed is not None:
            write_samples(n, fixed, run / "samples" / f"step_{step:07d}.jpg",
                           c.size_at(min(epoch, c.total_epochs - 1)))
    finally:
        if stats is not None:
            stats.close()
        if board is not None:
            board.close()
    return TrainResult(run, c.name, step, epoch, n.bare("G_A"), n.bare("G_B"), c.total_epochs)


def _batches(a_files, b_files, c: TrainConfig, epoch: int, per_epoch: int, start: int, rank: int,
             world: int, device: torch.device) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Batches ``start .. per_epoch`` of ``epoch`` for this rank (rank-interleaved samples)."""
    if start >= per_epoch:
        return
    bs = c.batch_size
    first = start * bs * world
    ds = UnpairedCrops(a_files, b_files, c, epoch, (per_epoch - start) * bs,
                       offset=first + rank, stride=world)
    loader = torch.utils.data.DataLoader(
        ds, batch_size=bs, shuffle=False, num_workers=c.workers, drop_last=True,
        pin_memory=device.type == "cuda", persistent_workers=False)
    fmt = torch.channels_last if c.channels_last else torch.contiguous_format
    for real_A, real_B in loader:
        yield (real_A.to(device, non_blocking=True, memory_format=fmt),
               real_B.to(device, non_blocking=True, memory_format=fmt))


def configure_backend(device: torch.device) -> None:
    """The process-wide switches a training run sets for its device."""
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True  # fixed shapes per stage: pick the fastest kernels
    if device.type == "cpu":
        torch.set_flush_denormal(True)  # Adam's tiny second moments are denormal: 10x slower


def train_dtype(precision: str, device: torch.device) -> torch.dtype:
    """auto: bf16 on CUDA; fp32 on the CPU, where bf16 autocast measured slower for this step
    (torch 2.15, AVX512-BF16 EPYC: 3.1 s vs 1.96 s at 128 px), even on bf16-capable CPUs."""
    if precision == "auto":
        if device.type == "cuda":
            return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float32
        return torch.float32
    return resolve_dtype(precision, device)


def distributed() -> tuple[int, int]:
    """(rank, world size); starts the process group when launched by torchrun."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return 0, 1
    if not dist.is_initialized():
        dist.init_process_group("nccl" if torch.cuda.is_available() else "gloo")
    return dist.get_rank(), dist.get_world_size()
