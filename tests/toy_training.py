"""Toy models and batch sources for training-loop tests: batch i is a pure function of i (what
exact resume requires), and a source can die at a chosen iteration (a crash mid-run)."""

from __future__ import annotations

import csv
import itertools
from collections.abc import Callable, Iterator
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from sgsr.models import build_model

Source = Callable[[int], Iterator[tuple[Tensor, Tensor]]]


class Interrupt(Exception):
    """Stands for the process dying: raised by :func:`dying_source`."""


def smooth_images(seed: int, n: int, size: int) -> Tensor:
    """Smooth random RGB images (bicubic-upsampled 4x4 noise): learnable SR targets."""
    g = torch.Generator().manual_seed(seed)
    base = torch.rand(n, 3, 4, 4, generator=g)
    return F.interpolate(base, size=(size, size), mode="bicubic", align_corners=False).clamp(0, 1)


def toy_source(scale: int = 2, batch: int = 2, lr_size: int = 16) -> Source:
    def source(start: int) -> Iterator[tuple[Tensor, Tensor]]:
        for i in itertools.count(start):
            hr = smooth_images(1000 + i, batch, lr_size * scale)
            yield F.avg_pool2d(hr, scale), hr

    return source


def dying_source(die_at: int, inner: Source) -> Source:
    """`inner`, raising Interrupt when iteration `die_at` asks for its batch."""

    def source(start: int) -> Iterator[tuple[Tensor, Tensor]]:
        for i, batch in zip(itertools.count(start), inner(start), strict=False):
            if i == die_at:
                raise Interrupt(f"killed at {i}")
            yield batch

    return source


def tiny_generator(scale: int = 2) -> nn.Module:
    torch.manual_seed(0)
    return build_model("edsr_baseline", scale=scale, n_resblocks=1, n_feats=8)


def assert_same_state(a: dict[str, Tensor], b: dict[str, Tensor]) -> None:
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), f"{k} differs"


def read_tsv(path: Path) -> list[tuple[int, float]]:
    """One dvclive metric file as (step, value) rows."""
    with open(path, newline="") as fh:
        rows = list(csv.DictReader(fh, delimiter="\t"))
    name = next(k for k in rows[0] if k not in ("step", "timestamp"))
    return [(int(r["step"]), float(r[name])) for r in rows]
