"""Runs: what a run is called, how a name is read back, and which runs are compared.

A *run* is one trained network, ``<model>-<loss>-x<scale>``, with ``-s<seed>`` for a replicate
seed (the primary seed's name carries none, so names from before replicates still hold);
``bicubic-x<scale>`` is the bicubic baseline of that scale. This module is the one place that
writes and parses these names.

The pairing rule, also only here: every candidate loss is compared with the baseline loss
(``experiment.baseline``, default the first loss) at the same model, scale and seed.
``sgsr summarize`` writes ``results/paired.csv`` from :func:`pairs`; readers (the report, the
notebooks) read that file rather than work pairs out again.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

#: The model name a bicubic baseline run reports (summary.csv, metrics_info.json).
BICUBIC_MODEL = "bicubic"
_RUN_RE = re.compile(r"^(?P<model>.+)-(?P<loss>[^-]+)-x(?P<scale>\d+)(?:-s(?P<seed>\d+))?$")
_BICUBIC_RE = re.compile(r"^bicubic-x(?P<scale>\d+)$")


def run_name(model: str, loss: str, scale: int, seed: int | None = None) -> str:
    """``<model>-<loss>-x<scale>``, with ``-s<seed>`` for a replicate (non-primary) seed."""
    base = f"{model}-{loss}-x{scale}"
    return base if seed is None else f"{base}-s{seed}"


def bicubic_run(scale: int) -> str:
    """The bicubic baseline's run name at `scale`."""
    return f"{BICUBIC_MODEL}-x{scale}"


def bicubic_scale(name: str) -> int | None:
    """The scale of a ``bicubic-x<s>`` run, else None."""
    m = _BICUBIC_RE.match(name)
    return int(m["scale"]) if m else None


def is_bicubic(name: str) -> bool:
    return bicubic_scale(name) is not None


def parse_run(name: str) -> dict[str, Any]:
    """``<model>-<loss>-x<s>[-s<seed>]`` or ``bicubic-x<s>`` -> {run, model, loss, scale, seed}.

    ``seed`` is None for a primary-seed run (its name carries no seed) and for bicubic, whose
    ``loss`` is None too.
    """
    if (scale := bicubic_scale(name)) is not None:
        return {"run": name, "model": BICUBIC_MODEL, "loss": None, "scale": scale, "seed": None}
    if m := _RUN_RE.match(name):
        seed = int(m["seed"]) if m["seed"] is not None else None
        return {
            "run": name,
            "model": m["model"],
            "loss": m["loss"],
            "scale": int(m["scale"]),
            "seed": seed,
        }
    raise ValueError(
        f"run name {name!r} is not <model>-<loss>-x<scale>[-s<seed>] or bicubic-x<scale> "
        "(see `sgsr runs` for the names the params define)"
    )


def is_run_name(name: str) -> bool:
    return bool(_BICUBIC_RE.match(name) or _RUN_RE.match(name))


@dataclass(frozen=True)
class Run:
    """One trained network: a model configuration x a loss configuration x a seed.

    ``replicate`` is False for the primary seed (params ``seed``), whose run name carries no
    seed, so runs and DVC locks from before replicates existed keep their names.
    """

    name: str
    model: str
    arch: str
    model_kwargs: Mapping[str, Any]
    loss: str
    loss_spec: Mapping[str, Any]
    scale: int
    seed: int = 0
    replicate: bool = False

    @property
    def configuration(self) -> tuple[str, str, int]:
        """(model, loss, scale): what the replicates of one configuration share."""
        return self.model, self.loss, self.scale

    @property
    def primary_name(self) -> str:
        """The name of this configuration's primary-seed run (its own name if primary)."""
        return run_name(self.model, self.loss, self.scale)

    def sibling_name(self, loss: str) -> str:
        """Name of the run that differs from this one only in its loss (same seed)."""
        return run_name(self.model, loss, self.scale, self.seed if self.replicate else None)


def configurations(runs: Iterable[Run]) -> list[tuple[Run, ...]]:
    """The runs of each configuration (model, loss, scale), in first-seen order; within one,
    the order given (the params list the primary seed first)."""
    groups: dict[tuple[str, str, int], list[Run]] = {}
    for r in runs:
        groups.setdefault(r.configuration, []).append(r)
    return [tuple(g) for g in groups.values()]


@dataclass(frozen=True)
class Pair:
    """A candidate configuration and the baseline it is compared with, matched seed by seed
    (``baseline[i]`` and ``candidate[i]`` share their seed)."""

    baseline: tuple[Run, ...]
    candidate: tuple[Run, ...]


def pairs(runs: Sequence[Run], baseline_loss: str | None) -> list[Pair]:
    """Every candidate configuration against the baseline loss at the same model and scale,
    seed by seed, in the order of `runs`. Runs of the baseline loss are not candidates."""
    by_name = {r.name: r for r in runs}
    out = []
    for group in configurations(runs):
        if group[0].loss == baseline_loss:
            continue
        base = [by_name.get(r.sibling_name(baseline_loss or "")) for r in group]
        if any(b is None for b in base):
            continue  # no baseline run for this configuration (e.g. a filtered list)
        out.append(Pair(tuple(b for b in base if b is not None), group))
    return out


def pair_names(
    names: Iterable[str], baseline_loss: str = "l1", scale: int | None = None
) -> list[tuple[str, str]]:
    """The pairing rule over run names alone (no params at hand: a notebook run by hand):
    (baseline, candidate) for each run of another loss whose ``baseline_loss`` sibling (same
    model, scale and seed) is among `names`, in the order of `names`."""
    parsed = [parse_run(n) for n in names if is_run_name(n) and not is_bicubic(n)]
    present = {p["run"] for p in parsed}
    out = []
    for p in parsed:
        if p["loss"] == baseline_loss or (scale is not None and p["scale"] != scale):
            continue
        base = run_name(p["model"], baseline_loss, p["scale"], p["seed"])
        if base in present:
            out.append((base, p["run"]))
    return out
