"""Whether the params' models, losses and warm start can be built, asked before any work.

Params validation (sgsr.config) is the typed schema alone and imports no builder, so commands
that need no tensors (``sgsr runs``, ``sgsr results``, ``--help``) never import torch. Params
that parse may still name an architecture argument the constructor refuses, a loss the builder
cannot make or a warm start that does not exist: every pipeline stage calls :func:`load`, which
asks the model registry, the loss builder and the warm-start reader, and fails with one message
naming every bad key before the stage reads or writes anything.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

from sgsr.config import Config, bad_keys, parse_with_errors, read_params
from sgsr.losses import build_loss
from sgsr.models import spec_problems
from sgsr.runs import SCALES
from sgsr.warmstart import init_problem


def problems(cfg: Config) -> list[str]:
    """What cannot be built, each as ``<key>: message``."""
    errors: list[str] = []
    for name, spec in cfg.models.items():
        if not isinstance(spec, Mapping):
            errors.append(f"models.{name}: must be a mapping with an arch key, got {spec!r}")
            continue
        scales = sorted({r.scale for r in cfg.runs if r.model == name}) or [max(SCALES)]
        errors.extend(f"models.{name}{msg}" for msg in spec_problems(spec, scales))
    for name, spec in cfg.losses.items():
        try:
            build_loss(spec)
        except Exception as exc:  # any failure of a bad spec is a bad key, never a traceback
            errors.append(f"losses.{name}: {exc}")
    init_from = cfg.train.init_from
    if init_from is not None:
        problem = init_problem(init_from, [r.name for r in cfg.runs])
        if problem:
            errors.append(f"train.init_from: {problem}, got {init_from!r}")
    return errors


def check(cfg: Config) -> Config:
    """`cfg` if everything it names can be built, else ConfigError listing every problem."""
    errors = problems(cfg)
    if errors:
        raise bad_keys(cfg.source_path, errors)
    return cfg


def parse(raw: Mapping[str, Any], source: str = "params.yaml") -> Config:
    """:func:`sgsr.config.parse_config` plus :func:`problems`, all in one message."""
    cfg, errors = parse_with_errors(raw, source)
    errors += problems(cfg)
    if errors:
        raise bad_keys(source, errors)
    return cfg


def load(path: str | os.PathLike[str] = "params.yaml") -> Config:
    """What a stage calls first: the params file parsed, and checked to be buildable, with
    every bad key of either kind in one message."""
    return parse(read_params(path), source=str(path))
