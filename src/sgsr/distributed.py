"""Multi-process training under ``torchrun``: who am I, which device, and the process group.

``torchrun --nproc_per_node N`` sets RANK, WORLD_SIZE and LOCAL_RANK (plus MASTER_ADDR/PORT) in
each process. :func:`init_from_env` reads them, picks the device (``cuda:LOCAL_RANK`` with NCCL,
or the CPU with gloo) and starts the default process group. Without those variables (a plain
``sgsr train``) it returns a single-process context and touches nothing.
"""

from __future__ import annotations

import os
import warnings
from dataclasses import dataclass, field

import torch
import torch.distributed as dist

from sgsr.devices import resolve_device


@dataclass(frozen=True)
class DistContext:
    """This process's place in the job. ``rank == 0`` alone logs, validates and writes."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        """True when a process group is running (world_size > 1)."""
        return self.world_size > 1 and dist.is_available() and dist.is_initialized()


def global_batch(batch_size: int, world_size: int) -> int:
    """Samples per update over all processes: each of N processes takes batch_size // N, so a
    remainder is dropped (what checkpoints record and resume checks)."""
    return batch_size // world_size * world_size


def per_rank_batch(batch_size: int, world_size: int) -> int:
    """train.batch_size is the global batch; each of N processes gets batch_size // N (a
    remainder is dropped with a warning; fewer samples than processes is an error)."""
    if batch_size < world_size:
        raise ValueError(
            f"train.batch_size ({batch_size}) is smaller than the number of processes "
            f"({world_size}); each process needs at least one sample"
        )
    total = global_batch(batch_size, world_size)
    if total != batch_size:
        warnings.warn(
            f"train.batch_size {batch_size} is not divisible by {world_size} processes: each "
            f"uses {total // world_size}, a global batch of {total}",
            stacklevel=2,
        )
    return total // world_size


def train_device(pref: str, local_rank: int = 0) -> torch.device:
    """The training device: a bare ``cuda`` is ``cuda:LOCAL_RANK`` (sgsr.devices)."""
    return resolve_device(pref, local_rank=local_rank, key="train.device")


def env_world() -> tuple[int, int, int]:
    """(rank, world_size, local_rank) from torchrun's environment; (0, 1, 0) without it."""

    def geti(name: str, default: int) -> int:
        value = os.environ.get(name, "")
        try:
            return int(value) if value else default
        except ValueError as exc:
            raise ValueError(f"environment variable {name}={value!r} is not an integer") from exc

    return geti("RANK", 0), geti("WORLD_SIZE", 1), geti("LOCAL_RANK", 0)


def init_from_env(device: str = "auto") -> DistContext:
    """Start the process group if torchrun launched us with WORLD_SIZE > 1.

    Backend: NCCL when the device is CUDA, gloo on the CPU. Each CUDA process uses
    ``cuda:LOCAL_RANK`` (train.device ``cuda:N`` is ignored under torchrun: one GPU per process).
    """
    rank, world, local = env_world()
    if world <= 1:
        return DistContext(device=train_device(device, 0))
    if device.startswith("cuda:"):
        device = "cuda"
    dev = train_device(device, local)
    if dev.type == "cuda":
        torch.cuda.set_device(dev)
    if not dist.is_initialized():
        backend = "nccl" if dev.type == "cuda" else "gloo"
        kwargs = {"device_id": dev} if dev.type == "cuda" else {}
        dist.init_process_group(backend=backend, rank=rank, world_size=world, **kwargs)
    return DistContext(rank=rank, world_size=world, local_rank=local, device=dev)


def barrier(ctx: DistContext) -> None:
    if ctx.enabled:
        if ctx.device.type == "cuda":
            dist.barrier(device_ids=[ctx.device.index or 0])
        else:
            dist.barrier()


def shutdown(ctx: DistContext) -> None:
    """Destroy the process group (if this module's context started one)."""
    if ctx.enabled:
        dist.destroy_process_group()


def all_mean(ctx: DistContext, values: torch.Tensor) -> torch.Tensor:
    """Average a small tensor over ranks (in place); identity in a single process."""
    if ctx.enabled:
        dist.all_reduce(values, op=dist.ReduceOp.SUM)
        values /= ctx.world_size
    return values


def broadcast_flag(ctx: DistContext, flag: bool) -> bool:
    """Rank 0's boolean, on every rank (e.g. "resume from the checkpoint" decisions)."""
    if not ctx.enabled:
        return flag
    t = torch.tensor([1 if flag else 0], device=ctx.device)
    dist.broadcast(t, src=0)
    return bool(t.item())
