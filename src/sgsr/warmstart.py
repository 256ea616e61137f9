"""Where a run's weights start (``train.init_from``) and which stay fixed (``train.freeze``).

Why: fine-tuning an existing network with SGL is the paper's "easy to integrate" claim; the
trainer otherwise starts every run from a seeded random init. The weights are loaded into the
built model before training starts, so the EMA (which copies the model's initial state) starts
from them too, and the optimizer and schedule start fresh. A resumed checkpoint still wins: it
is loaded over them.

``train.init_from`` forms (checked by `sgsr.config`, resolved here):

- ``pretrained:<name>``: a weight of the pretrained registry, verified against its pin in the
  download stage's folder (``models/pretrained``);
- ``run:<name>``: another run's shipped weights (``models/<run>/model.safetensors``, the EMA
  ones when it used EMA);
- a path to a ``.safetensors``/``.pth``/``.pt``/``.ckpt`` state dict (relative to the pipeline
  folder), read without running code.

Loading is strict: a missing or unexpected tensor is an error naming the source and the keys.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from sgsr import layout
from sgsr.models.community import canonical_state_dict, read_state_dict
from sgsr.pretrained import WEIGHTS, verified_tensors
from sgsr.weight_check import check_weights
from sgsr.weights import read_shipped_state

PRETRAINED_PREFIX = "pretrained:"
RUN_PREFIX = "run:"
STATE_SUFFIXES = (".safetensors", ".pth", ".pt", ".ckpt")


def init_problem(spec: str, run_names: Sequence[str]) -> str | None:
    """Why ``train.init_from: <spec>`` cannot work (None: it can), without reading any file."""
    if spec.startswith(PRETRAINED_PREFIX):
        name = spec[len(PRETRAINED_PREFIX) :]
        if name not in WEIGHTS:
            return f"unknown pretrained weight {name!r}; known: {', '.join(WEIGHTS)}"
        return None
    if spec.startswith(RUN_PREFIX):
        name = spec[len(RUN_PREFIX) :]
        if name not in run_names:
            return f"no run {name!r} in this experiment; runs: {', '.join(run_names)}"
        return None
    if not spec.strip() or Path(spec).suffix.lower() not in STATE_SUFFIXES:
        return (
            "must be pretrained:<weight>, run:<run name> or a state-dict file ending in "
            f"{', '.join(STATE_SUFFIXES)}"
        )
    return None


def init_state(spec: str, base: str | os.PathLike[str], run_name: str) -> dict[str, Tensor]:
    """The tensors ``train.init_from: <spec>`` names, for the run `run_name` under `base`."""
    base = Path(base)
    if spec.startswith(PRETRAINED_PREFIX):
        return verified_tensors(spec[len(PRETRAINED_PREFIX) :], base / layout.PRETRAINED)
    if spec.startswith(RUN_PREFIX):
        other = spec[len(RUN_PREFIX) :]
        if other == run_name:
            raise ValueError(f"train.init_from: run {run_name} cannot start from its own weights")
        path = base / layout.weights(other)
        if not path.is_file():
            raise FileNotFoundError(
                f"train.init_from: {spec}: {path} not found; train that run first "
                f"(sgsr train --run {other})"
            )
        return read_shipped_state(path)
    path = Path(spec) if Path(spec).is_absolute() else base / spec
    return canonical_state_dict(read_state_dict(path), str(path))


def load_init(model: nn.Module, state: Mapping[str, Tensor], source: str) -> None:
    """Load `state` into `model` strictly; the error names `source` and the keys that differ.
    A model with ``adapt_state`` (community models) first renames the keys its own way."""
    check_weights(state, f"train.init_from: {source}")
    adapt = getattr(model, "adapt_state", None)
    if adapt is not None:
        state = adapt(state, source)
    own = model.state_dict()
    missing = sorted(set(own) - set(state))
    extra = sorted(set(state) - set(own))
    shapes = [
        f"{k} {tuple(state[k].shape)} vs {tuple(own[k].shape)}"
        for k in sorted(set(own) & set(state))
        if tuple(state[k].shape) != tuple(own[k].shape)
    ]
    if missing or extra or shapes:
        parts = [
            f"{what} {items[:5]}{' ...' if len(items) > 5 else ''}"
            for what, items in (("missing", missing), ("unexpected", extra), ("shapes", shapes))
            if items
        ]
        raise ValueError(
            f"train.init_from: {source} does not fit the model ({type(model).__name__}): "
            + "; ".join(parts)
            + ". Use weights of the same architecture and settings (models.<name>)."
        )
    with torch.no_grad():
        model.load_state_dict({k: v.to(own[k].dtype) for k, v in state.items()}, strict=True)


def freeze(model: nn.Module, prefixes: Sequence[str]) -> list[str]:
    """Stop gradients for every parameter whose state-dict name starts with one of `prefixes`;
    returns the frozen names. A prefix that matches nothing is an error listing the top-level names,
    since a typo would otherwise silently train everything."""
    # the names users see are the state-dict keys, which a wrapper may spell differently from
    # named_parameters() (community models: spandrel's key mapping); match by identity
    keys = {id(v): k for k, v in model.state_dict(keep_vars=True).items()}
    params = [(keys.get(id(p), n), p) for n, p in model.named_parameters()]
    names = [k for k, _ in params]
    for prefix in prefixes:
        if not any(n.startswith(prefix) for n in names):
            tops = sorted({n.split(".")[0] for n in names})
            raise ValueError(
                f"train.freeze: {prefix!r} matches no parameter of {type(model).__name__}; "
                f"parameter names start with {tops[:12]}"
            )
    frozen = []
    for name, param in params:
        if any(name.startswith(p) for p in prefixes):
            param.requires_grad_(False)
            frozen.append(name)
    if len(frozen) == len(names):
        raise ValueError(f"train.freeze: {list(prefixes)} freezes every parameter; nothing trains")
    return frozen


def warm_start(
    model: nn.Module, init_from: str | None, freeze_prefixes: Sequence[str], base: Any, run: str
) -> dict[str, Any]:
    """Apply ``train.init_from`` and ``train.freeze`` to a freshly built model; returns what
    was done, for the run card."""
    if init_from:
        load_init(model, init_state(init_from, base, run), init_from)
    frozen = freeze(model, freeze_prefixes) if freeze_prefixes else []
    return {"init_from": init_from, "frozen_parameters": len(frozen)}
