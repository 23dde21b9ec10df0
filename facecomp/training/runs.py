"""The run folder: checkpoints (saved and restored exactly), stats, samples and logs.

Run folder (RUN_DIR): ``config.json`` (the resolved config), ``NAME.A2B.safetensors`` and
``NAME.B2A.safetensors`` (the generators in the inference format, usable at once with
``facecomp photo --model RUN_DIR``), ``train_state.pt`` (both generators and discriminators,
optimizers, schedulers, image pools, RNG states, fp16 loss scalers, step and epoch; plain
tensors and numbers, loaded with ``torch.load(weights_only=True)``), ``stats.jsonl``,
``samples/`` and, when tensorboard is installed, ``tb/``. Every file is
written atomically, so a run killed at any moment resumes from its last complete checkpoint.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
from pathlib import Path

import cv2
import numpy as np
import torch
from torch import nn

from ..checkpoint import ModelInfo, save_generator
from ..errors import ConfigError, OutputError
from ..geometry import template_by_name
from ..io import atomic_path, read_image, write_image
from ..stages.translate import to_uint8
from .config import TrainConfig
from .step import Nets, generator_args

log = logging.getLogger(__name__)


STATE_FILE = "train_state.pt"
CONFIG_FILE = "config.json"
STATS_FILE = "stats.jsonl"
#: Options that may change when a run is resumed (they do not change the maths).
RESUMABLE = ("max_steps", "log_every", "sample_every", "save_every", "workers", "device")




# ---------------------------------------------------------------------------------------------
# Saving, resuming, samples


def save_checkpoint(n: Nets, c: TrainConfig, run: Path, step: int, epoch: int, done_in_epoch: int,
          size: int, rank: int) -> None:
    """Generators in the inference format, then the whole training state (both atomic)."""
    if rank != 0:
        return
    for net, direction in ((n.bare("G_A"), "A2B"), (n.bare("G_B"), "B2A")):
        info = ModelInfo(
            name=c.name, architecture="resnet_generator",
            arch_args=generator_args(c), crop_size=size,
            template=template_by_name(c.template), domains={"A": c.domain_a, "B": c.domain_b},
            direction=direction, description=f"trained by facecomp train, step {step}",
            extra={"step": step, "epoch": epoch, "config": c.to_json()})
        save_generator(run / f"{c.name}.{direction}.safetensors", net, info, overwrite=True)
    state = {
        "format": "facecomp-train-state", "version": 1, "config": json.dumps(c.to_json()),
        "step": step, "epoch": epoch, "done_in_epoch": done_in_epoch,
        "nets": {k: n.bare(k).state_dict() for k in ("G_A", "G_B", "D_A", "D_B")},
        "opt_G": n.opt_G.state_dict(), "opt_D": n.opt_D.state_dict(),
        "sched_G": n.sched_G.state_dict(), "sched_D": n.sched_D.state_dict(),
        "pool_A": n.pool_A.state_dict(), "pool_B": n.pool_B.state_dict(),
        "rng_torch": torch.get_rng_state(),
        "scalers": [sc.state_dict() for sc in n.scalers] if n.scalers else [],
    }
    with atomic_path(run / STATE_FILE, overwrite=True) as tmp:
        try:
            torch.save(state, tmp)
        except RuntimeError as e:  # torch's writer reports a full disk this way
            raise OutputError(f"{run / STATE_FILE}: cannot write the training state "
                              f"({str(e).strip().splitlines()[0][:120]}); is the disk full? "
                              "The last complete checkpoint is kept") from None


def load_run(run: Path, given: TrainConfig, overrides: set[str] | None
              ) -> tuple[TrainConfig, dict]:
    path = run / STATE_FILE
    if not path.is_file():
        raise ConfigError(f"{run}: no training state to resume ({STATE_FILE} is missing); start "
                          "without `resume=True`")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        raise ConfigError(f"{path}: damaged training state ({str(e).splitlines()[0][:100]})"
                          ) from None
    saved = TrainConfig.from_json(json.loads(state["config"]))
    # Keep the saved recipe; only the options that do not change the maths may differ.
    # max_steps is where *this* invocation stops, never part of the saved recipe
    names = RESUMABLE if overrides is None else \
        [k for k in RESUMABLE if k in overrides or k == "max_steps"]
    changes = {k: getattr(given, k) for k in names if getattr(given, k) != getattr(saved, k)}
    return dataclasses.replace(saved, **changes), state


def restore(n: Nets, state: dict, device: torch.device) -> tuple[int, int, int]:
    for k in ("G_A", "G_B", "D_A", "D_B"):
        n.bare(k).load_state_dict(state["nets"][k])
    n.opt_G.load_state_dict(state["opt_G"])
    n.opt_D.load_state_dict(state["opt_D"])
    n.sched_G.load_state_dict(state["sched_G"])
    n.sched_D.load_state_dict(state["sched_D"])
    n.pool_A.load_state_dict(state["pool_A"], device)
    n.pool_B.load_state_dict(state["pool_B"], device)
    torch.set_rng_state(state["rng_torch"])
    for scaler, saved in zip(n.scalers or (), state.get("scalers", [])):
        scaler.load_state_dict(saved)
    return int(state["step"]), int(state["epoch"]), int(state["done_in_epoch"])


def trim_stats(path: Path, step: int) -> None:
    """Drop stats lines written after the checkpoint we resume from."""
    if not path.is_file():
        return
    keep = []
    for n, ln in enumerate(path.read_text(errors="replace").splitlines(), 1):
        try:
            rec = json.loads(ln) if ln.strip() else None
        except ValueError:  # e.g. the last line of a run killed or out of disk while writing
            log.warning("%s: line %d is cut short or damaged; dropped", path, n)
            continue
        if isinstance(rec, dict) and rec.get("step", 0) <= step:
            keep.append(ln)
    with atomic_path(path, overwrite=True) as tmp:
        tmp.write_text("".join(ln + "\n" for ln in keep))


def fixed_samples(c: TrainConfig, a_files: list[Path], b_files: list[Path]
                   ) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Up to 4 faces per domain for the sample grids: held-out ones when there are any."""
    from .dataset import holdout_images

    def pick(folder: str, files: list[Path]) -> list[np.ndarray]:
        return [read_image(p).rgb for p in holdout_images(Path(folder))[:4] or files[:4]]

    return pick(c.a, a_files), pick(c.b, b_files)


@torch.no_grad()
def write_samples(n: Nets, fixed, path: Path, size: int) -> None:
    """A grid: rows real_A, fake_B, rec_A, real_B, fake_A, rec_B (one column per face)."""
    if fixed is None:
        return
    G_A, G_B = n.bare("G_A"), n.bare("G_B")
    was = G_A.training, G_B.training
    G_A.eval(), G_B.eval()
    device = next(G_A.parameters()).device
    rows = []
    for imgs, G, F in ((fixed[0], G_A, G_B), (fixed[1], G_B, G_A)):
        x = torch.from_numpy(np.stack([cv2.resize(i, (size, size), interpolation=cv2.INTER_AREA)
                                       for i in imgs])).to(device)
        x = x.permute(0, 3, 1, 2).float().div(127.5).sub(1.0)
        y = G(x)
        rows += [to_uint8(x), to_uint8(y), to_uint8(F(y))]
    G_A.train(was[0]), G_B.train(was[1])
    strips = [np.concatenate(list(r), axis=1) for r in rows]
    width = max(s.shape[1] for s in strips)  # the domains may show different numbers of faces
    grid = np.concatenate([np.pad(s, ((0, 0), (0, width - s.shape[1]), (0, 0)),
                                  constant_values=255) for s in strips], axis=0)
    path.parent.mkdir(parents=True, exist_ok=True)
    write_image(path, grid, quality=90, overwrite=True)


def tensorboard_writer(run: Path):
    """A TensorBoard writer into RUN_DIR/tb when tensorboard is installed, else None."""
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        return None
    return SummaryWriter(str(run / "tb"))


def write_json(path: Path, data: dict) -> None:
    with atomic_path(path, overwrite=True) as tmp:
        tmp.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")


def weights_digest(net: nn.Module) -> str:
    """A hash of a network's weights (to compare ranks or runs)."""
    h = hashlib.sha256()
    for k, v in sorted(net.state_dict().items()):
        h.update(k.encode())
        h.update(v.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()
