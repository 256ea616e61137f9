"""Adversarial training: the discriminator beside the generator, and one alternating update.

A loss with a ``gan`` term of weight > 0 (:class:`sgsr.losses.AdversarialLoss`) turns the
trainer's update into ESRGAN's (BasicSR ``ESRGANModel.optimize_parameters``):

1. the generator step (`sgsr.step.train_step`, unchanged: its optimizer, schedule, grad clip,
   EMA and AMP) with the discriminator's parameters frozen, the ``gan`` term scoring SR
   against HR through the discriminator;
2. the discriminator step on the same batch, SR detached: its own Adam, its own LambdaLR with
   the shape of ``train.schedule`` (warmup, milestones or cosine) at the term's ``lr``, its own
   grad scaler (on for fp16 only) and the same autocast dtype (bf16 on CUDA).

:func:`gan_state_dict` / :func:`restore_gan` are what a checkpoint holds of it, so a resumed
run continues bitwise on the CPU. A non-finite discriminator loss raises TrainingDiverged
naming the iteration and ``d_loss`` before its weights change.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from sgsr.adversarial import discriminator_loss
from sgsr.checkpoint import cpu_state
from sgsr.discriminators import build_discriminator
from sgsr.distributed import all_mean
from sgsr.losses import AdversarialLoss, CompositeLoss
from sgsr.optim import adam_kwargs, portable
from sgsr.step import TrainingDiverged, TrainState, lr_factor, train_step
from sgsr.weights import save_safetensors

#: The discriminator's final weights, beside the run's model.safetensors.
DISCRIMINATOR_NAME = "discriminator.safetensors"
#: What the discriminator's update adds to a step's logged values (``train/<name>``).
D_VALUES = ("d_loss", "d_real", "d_fake", "d_lr")


def adversarial_term(loss: nn.Module) -> AdversarialLoss | None:
    """The ``gan`` term of a composite loss when it has weight > 0, else None (then training
    is exactly the non-adversarial trainer's)."""
    if not isinstance(loss, CompositeLoss) or "gan" not in loss.terms:
        return None
    term = loss.terms["gan"]
    if not isinstance(term, AdversarialLoss) or loss.weights["gan"] == 0:
        return None
    return term


@dataclass
class GanState:
    """The discriminator and what trains it."""

    term: AdversarialLoss
    discriminator: nn.Module
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    scaler: torch.amp.GradScaler


def attach_discriminator(term: AdversarialLoss) -> nn.Module:
    """Build the term's discriminator from its spec (torch's global generator: call after
    seeding) and hand it to the term, which then runs."""
    disc = build_discriminator(term.spec)
    term.discriminator = disc
    return disc


def build_gan_state(state: TrainState, term: AdversarialLoss) -> GanState:
    """The discriminator's optimizer, schedule and scaler, after `build_state` moved the loss
    (and the discriminator inside it) to the device."""
    if state.ctx.enabled:
        raise NotImplementedError(
            "adversarial training (a gan loss term) runs in one process; torchrun with several "
            "processes is not supported for it yet"
        )
    disc = term.discriminator
    if disc is None:
        raise RuntimeError("attach_discriminator(term) must run before build_gan_state")
    disc.to(state.device).train()
    term.autocast_dtype = state.dtype
    opts = state.opts
    optimizer = portable(
        torch.optim.Adam(
            disc.parameters(),
            lr=term.lr,
            betas=term.betas,
            weight_decay=term.weight_decay,
            **adam_kwargs(opts.optimizer_impl, state.device),
        )
    )

    def factor(step: int) -> float:
        return lr_factor(step, opts)

    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, factor)
    scaler = torch.amp.GradScaler(state.device.type, enabled=state.dtype == torch.float16)
    return GanState(term, disc, optimizer, scheduler, scaler)


def gan_step(
    state: TrainState, gan: GanState, lr_batch: Tensor, hr_batch: Tensor
) -> dict[str, float]:
    """One alternating update: the generator (discriminator frozen), then the discriminator on
    the detached SR of that same forward. Returns the generator's values plus :data:`D_VALUES`
    (``d_real``/``d_fake``: the discriminator's mean logit on HR and SR before its update)."""
    disc = gan.discriminator
    disc.requires_grad_(False)
    try:
        values = train_step(state, lr_batch, hr_batch)
    finally:
        disc.requires_grad_(True)
    batch = gan.term.batch
    gan.term.batch = None
    if batch is None:
        raise RuntimeError("the gan term did not run in the generator step")
    fake, real = batch
    real_logits = gan.term.logits(real)
    fake_logits = gan.term.logits(fake)
    d_loss = discriminator_loss(gan.term.kind, real_logits, fake_logits)
    stats = torch.stack(
        [d_loss.detach(), real_logits.detach().mean(), fake_logits.detach().mean()]
    ).float()
    numbers = all_mean(state.ctx, stats).tolist()
    d_values = dict(zip(D_VALUES[:3], numbers, strict=True))
    if not all(math.isfinite(v) for v in numbers):
        raise TrainingDiverged(state.iteration, {**values, **d_values})
    d_values["d_lr"] = gan.optimizer.param_groups[0]["lr"]
    gan.optimizer.zero_grad(set_to_none=True)
    gan.scaler.scale(d_loss).backward()
    gan.scaler.step(gan.optimizer)
    gan.scaler.update()
    gan.scheduler.step()
    return {**values, **d_values}


def gan_state_dict(gan: GanState) -> dict[str, Any]:
    """The checkpoint's ``gan`` entry: discriminator weights (with spectral-norm vectors and
    batch-norm statistics), its optimizer, schedule and scaler."""
    return {
        "discriminator": cpu_state(gan.discriminator.state_dict()),
        "optimizer": gan.optimizer.state_dict(),
        "scheduler": gan.scheduler.state_dict(),
        "scaler": gan.scaler.state_dict(),
    }


def restore_gan(gan: GanState, saved: Mapping[str, Any]) -> None:
    """Inverse of :func:`gan_state_dict`."""
    gan.discriminator.load_state_dict(saved["discriminator"])
    gan.optimizer.load_state_dict(saved["optimizer"])
    gan.scheduler.load_state_dict(saved["scheduler"])
    gan.scaler.load_state_dict(saved["scaler"])


def write_discriminator(
    run_dir: Path, state: Mapping[str, Tensor], spec: str | Mapping[str, Any]
) -> Path:
    """``<run_dir>/discriminator.safetensors`` (atomic, canonical header), its spec in the
    metadata, so a fine-tune can start from it or a reader can inspect it."""
    path = Path(run_dir) / DISCRIMINATOR_NAME
    meta = {
        "format": "pt",
        "sgsr_weights": "discriminator",
        "sgsr_discriminator": json.dumps(spec, sort_keys=True),
    }
    save_safetensors(state, path, meta)
    return path
