"""One training step, with the networks and optimisers it updates and the image pools.

Losses (Zhu et al. 2017, with the reference implementation's names):
    real_A, real_B      a batch from each domain
    fake_B = G_A(real_A), rec_A = G_B(fake_B)          (A -> B -> A)
    fake_A = G_B(real_B), rec_B = G_A(fake_A)          (B -> A -> B)
    idt_A = G_A(real_B), idt_B = G_B(real_A)           (identity mapping)
    loss_G = LSGAN(D_B(fake_B), 1) + LSGAN(D_A(fake_A), 1)
             + lambda_cycle * (|rec_A - real_A| + |rec_B - real_B|)
             + lambda_cycle * lambda_identity * (|idt_A - real_B| + |idt_B - real_A|)
    loss_D_B = (LSGAN(D_B(real_B), 1) + LSGAN(D_B(pool_B(fake_B)), 0)) / 2; likewise D_A.
G_A(real_A) and G_A(real_B) run as one batch (and likewise for G_B): no forward pass is repeated.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import torch
from torch import nn

from ..errors import TrainingDiverged
from ..networks import PatchDiscriminator, ResnetGenerator, init_weights
from .config import TrainConfig


# ---------------------------------------------------------------------------------------------
# Image pool


class ImagePool:
    """The reference image buffer: with probability 1/2 return an older fake instead."""

    def __init__(self, size: int, seed: int) -> None:
        self.size = size
        self.images: list[torch.Tensor] = []
        self.gen = torch.Generator().manual_seed(seed)

    def query(self, images: torch.Tensor) -> torch.Tensor:
        if self.size == 0:
            return images
        out = []
        for image in images.detach():
            image = image.unsqueeze(0)
            if len(self.images) < self.size:
                self.images.append(image.clone())
                out.append(image)
            elif torch.rand(1, generator=self.gen).item() > 0.5:
                j = int(torch.randint(0, self.size, (1,), generator=self.gen).item())
                out.append(self.images[j].clone())
                self.images[j] = image.clone()
            else:
                out.append(image)
        return torch.cat(out, 0)

    def state_dict(self) -> dict:
        stack = torch.cat(self.images).cpu() if self.images else torch.empty(0)
        return {"images": stack, "gen": self.gen.get_state()}

    def load_state_dict(self, state: dict, device: torch.device) -> None:
        imgs = state["images"]
        self.images = [imgs[i:i + 1].to(device) for i in range(len(imgs))]
        self.gen.set_state(state["gen"])

    def reset(self) -> None:
        self.images = []


# ---------------------------------------------------------------------------------------------
# The networks and their optimisers


@dataclass
class Nets:
    G_A: nn.Module  # A -> B
    G_B: nn.Module  # B -> A
    D_A: nn.Module  # judges domain A
    D_B: nn.Module  # judges domain B
    opt_G: torch.optim.Optimizer
    opt_D: torch.optim.Optimizer
    sched_G: torch.optim.lr_scheduler.LRScheduler
    sched_D: torch.optim.lr_scheduler.LRScheduler
    pool_A: ImagePool
    pool_B: ImagePool
    scalers: tuple | None = None  # (G, D) GradScalers for fp16

    def bare(self, name: str) -> nn.Module:
        """A network without its DDP / compile wrapper."""
        net = getattr(self, name)
        net = getattr(net, "module", net)
        return getattr(net, "_orig_mod", net)


def generator_args(c: TrainConfig) -> dict:
    """The generator's ``arch_args``, as built here and recorded in its checkpoints."""
    args: dict = {"ngf": c.ngf, "n_blocks": c.n_blocks}
    if c.upsample != "transpose":  # the default of ResnetGenerator: older readers load these
        args["upsample"] = c.upsample
    return args


def build_nets(c: TrainConfig, device: torch.device) -> Nets:
    torch.manual_seed(c.seed)
    fmt = torch.channels_last if c.channels_last else torch.contiguous_format
    G_A, G_B = (init_weights(ResnetGenerator(**generator_args(c))) for _ in "AB")
    D_A, D_B = (init_weights(PatchDiscriminator(ndf=c.ndf, n_layers=c.n_layers_d)) for _ in "AB")
    G_A, G_B, D_A, D_B = (n.to(device, memory_format=fmt) for n in (G_A, G_B, D_A, D_B))
    opt_G = torch.optim.Adam(list(G_A.parameters()) + list(G_B.parameters()), lr=c.lr,
                             betas=(c.beta1, 0.999))
    opt_D = torch.optim.Adam(list(D_A.parameters()) + list(D_B.parameters()), lr=c.lr,
                             betas=(c.beta1, 0.999))

    def rule(epoch: int) -> float:  # constant, then linear decay to zero
        return 1.0 - max(0, epoch + 1 - c.n_epochs) / float(c.n_epochs_decay + 1)

    return Nets(G_A, G_B, D_A, D_B, opt_G, opt_D,
                torch.optim.lr_scheduler.LambdaLR(opt_G, rule),
                torch.optim.lr_scheduler.LambdaLR(opt_D, rule),
                ImagePool(c.pool_size, c.seed + 1), ImagePool(c.pool_size, c.seed + 2))


# ---------------------------------------------------------------------------------------------
# One training step


def lsgan(pred: torch.Tensor, real: bool) -> torch.Tensor:
    pred = pred.float()
    return torch.mean((pred - (1.0 if real else 0.0)) ** 2)


def generator_losses(n: Nets, real_A: torch.Tensor, real_B: torch.Tensor, c: TrainConfig,
                     autocast: Callable) -> tuple[dict[str, torch.Tensor], torch.Tensor,
                                                  torch.Tensor, torch.Tensor]:
    """The generators' side of the step (the reference's ``backward_G`` without the backward):
    the named losses, their sum ``loss_G``, and ``fake_A``, ``fake_B`` for the discriminators."""
    use_idt = c.lambda_identity > 0
    bs = real_A.shape[0]
    bare_D_A, bare_D_B = n.bare("D_A"), n.bare("D_B")
    with autocast():
        # G_A sees real_A (-> fake_B) and real_B (-> idt_A) in one pass; G_B likewise.
        out_A = n.G_A(torch.cat([real_A, real_B]) if use_idt else real_A)
        out_B = n.G_B(torch.cat([real_B, real_A]) if use_idt else real_B)
        fake_B, fake_A = out_A[:bs], out_B[:bs]
        rec_A, rec_B = n.G_B(fake_B), n.G_A(fake_A)
        loss_G_A = lsgan(bare_D_B(fake_B), True)
        loss_G_B = lsgan(bare_D_A(fake_A), True)
    loss_cycle_A = (rec_A.float() - real_A).abs().mean() * c.lambda_cycle
    loss_cycle_B = (rec_B.float() - real_B).abs().mean() * c.lambda_cycle
    loss_G = loss_G_A + loss_G_B + loss_cycle_A + loss_cycle_B
    losses = {"G_A": loss_G_A, "G_B": loss_G_B, "cycle_A": loss_cycle_A, "cycle_B": loss_cycle_B}
    if use_idt:
        w = c.lambda_cycle * c.lambda_identity
        loss_idt_A = (out_A[bs:].float() - real_B).abs().mean() * w
        loss_idt_B = (out_B[bs:].float() - real_A).abs().mean() * w
        loss_G = loss_G + loss_idt_A + loss_idt_B
        losses.update(idt_A=loss_idt_A, idt_B=loss_idt_B)
    return losses, loss_G, fake_A, fake_B


def discriminator_losses(n: Nets, real_A: torch.Tensor, real_B: torch.Tensor,
                         fake_A: torch.Tensor, fake_B: torch.Tensor,
                         autocast: Callable) -> dict[str, torch.Tensor]:
    """The discriminators' side (the reference's ``backward_D_A``/``backward_D_B``): each sees
    real crops and fakes drawn from its image pool."""
    pooled_B, pooled_A = n.pool_B.query(fake_B.float()), n.pool_A.query(fake_A.float())
    with autocast():
        loss_D_B = 0.5 * (lsgan(n.D_B(real_B), True) + lsgan(n.D_B(pooled_B), False))
        loss_D_A = 0.5 * (lsgan(n.D_A(real_A), True) + lsgan(n.D_A(pooled_A), False))
    return {"D_A": loss_D_A, "D_B": loss_D_B}


def train_step(n: Nets, real_A: torch.Tensor, real_B: torch.Tensor, c: TrainConfig,
               autocast: Callable) -> dict[str, float]:
    """One generator update then one discriminator update; returns the losses."""
    discriminators = list(n.bare("D_A").parameters()) + list(n.bare("D_B").parameters())
    for p in discriminators:
        p.requires_grad_(False)
    losses, loss_G, fake_A, fake_B = generator_losses(n, real_A, real_B, c, autocast)
    n.opt_G.zero_grad(set_to_none=True)
    _backward_step(loss_G, n.opt_G, n.scalers[0] if n.scalers else None)

    for p in discriminators:
        p.requires_grad_(True)
    d_losses = discriminator_losses(n, real_A, real_B, fake_A, fake_B, autocast)
    n.opt_D.zero_grad(set_to_none=True)
    _backward_step(d_losses["D_A"] + d_losses["D_B"], n.opt_D,
                   n.scalers[1] if n.scalers else None)
    losses.update(d_losses, G=loss_G)
    # Loss tensors until here: one device sync (not ten) lets a GPU run ahead.
    values = torch.stack([v.detach().float() for v in losses.values()]).tolist()
    losses = dict(zip(losses, values))
    for k, v in losses.items():
        if not math.isfinite(v):
            raise TrainingDiverged(f"loss {k} became {v}; lower `lr` or check the data. The last "
                                   "good checkpoint is kept; resume with `resume=True`")
    return losses


def _backward_step(loss: torch.Tensor, opt: torch.optim.Optimizer, scaler) -> None:
    if scaler is None:
        loss.backward()
        opt.step()
    else:
        scaler.scale(loss).backward()
        scaler.step(opt)
        scaler.update()
