"""Batch sources: what the training loop reads, as a pure function of where it starts.

A batch source maps the index of the first iteration to run (0 for a fresh start) to an
iterator of (lr, hr) batches from that iteration on; being a pure function of that index is
what makes resume exact. :func:`patch_batches` is the pipeline's (the patch store through a
deterministic sampler); the others serve tests, benchmarks and custom loops.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterable, Iterator
from typing import Any

import torch
from torch import Tensor
from torch.utils.data import DataLoader

from sgsr.data.patches import PatchSampler

#: start iteration -> iterator of (lr, hr) batches from there on (see the module docstring).
BatchSource = Callable[[int], Iterator[tuple[Tensor, Tensor]]]


def fixed_batch(lr: Tensor, hr: Tensor) -> BatchSource:
    """The same (lr, hr) batch every iteration (overfitting tests, benchmarks)."""
    return lambda start: itertools.repeat((lr, hr))


def iterable_source(batches: Iterable[tuple[Tensor, Tensor]]) -> BatchSource:
    """Wrap a re-iterable (e.g. a DataLoader with a deterministic sampler): on resume the first
    `start` batches are drawn and dropped, so exactness needs the same sequence every time."""
    return lambda start: itertools.islice(iter(batches), start, None)


def patch_batches(
    dataset: Any,
    batch_size: int,
    seed: int,
    rank: int = 0,
    world_size: int = 1,
    num_workers: int = 0,
    pin_memory: bool = False,
) -> BatchSource:
    """Batches of the patch store: a DataLoader over a :class:`PatchSampler` that starts
    ``start * batch_size`` samples into this rank's infinite deterministic key stream.

    The loader gets its own generator, so creating it does not draw from the global torch RNG
    (which a resumed run restores from the checkpoint).
    """

    def source(start: int) -> Iterator[tuple[Tensor, Tensor]]:
        sampler = PatchSampler(
            len(dataset),
            batch_size,
            seed,
            start=start * batch_size,
            rank=rank,
            world_size=world_size,
        )
        loader = DataLoader(
            dataset,
            batch_size=batch_size,
            sampler=sampler,
            num_workers=num_workers,
            pin_memory=pin_memory,
            drop_last=True,
            generator=torch.Generator().manual_seed(seed),
        )
        return iter(loader)

    return source
