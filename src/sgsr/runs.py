"""Runs: which runs the params define, what each is called, how a name is read back, and which
runs are compared.

The ``experiment`` section of the params crosses models x losses x scales x seeds
(:func:`expand_runs`); a *run* is one trained network of that matrix,
``<model>-<loss>-x<scale>``, with ``-s<seed>`` for a replicate seed (the primary seed's name
carries none, so names from before replicates still hold); ``bicubic-x<scale>`` is the bicubic
baseline of that scale. Outside the cross product, ``experiment.zero_shot`` adds one
``<model>-zeroshot-x<scale>`` run per listed model and scale: the network's starting weights as
they are (nothing trained), inferred and evaluated like every run, so the table has the
unmodified network's row from the same pipeline. This module is the one place that writes and
parses these names.

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

#: The SR scales a run may have (the models' upsamplers exist for these).
SCALES = (2, 3, 4)
#: Keys of a `models.<name>` entry that are not constructor arguments.
MODEL_META_KEYS = ("arch", "allow_import")

#: The model name a bicubic baseline run reports (summary.csv, metrics_info.json).
BICUBIC_MODEL = "bicubic"
#: The loss name of a zero-shot run (reserved: no ``losses.<name>`` may use it).
ZERO_SHOT = "zeroshot"
_RUN_RE = re.compile(r"^(?P<model>.+)-(?P<loss>[^-]+)-x(?P<scale>\d+)(?:-s(?P<seed>\d+))?$")
_BICUBIC_RE = re.compile(r"^bicubic-x(?P<scale>\d+)$")


def is_import_path(name: object) -> bool:
    """True for ``package.module:Attr`` strings (the form that imports code)."""
    return isinstance(name, str) and ":" in name


def canonical_arch(name: str) -> str:
    """How an architecture name is spelled once read: a registered name lower-cased with ``-``
    as ``_`` (``EDSR-baseline`` is ``edsr_baseline``); an import path only stripped. The one
    normalisation: the model registry, entry points, params runs and run cards all use it."""
    name = name.strip()
    return name if is_import_path(name) else name.lower().replace("-", "_")


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
    seed, so runs and DVC locks from before replicates existed keep their names. A
    ``zero_shot`` run (loss :data:`ZERO_SHOT`, empty ``loss_spec``) trains nothing: its weights
    are the model's starting weights (``experiment.zero_shot``).
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
    zero_shot: bool = False

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


# --------------------------------------------------------------------------------------------
# The experiment matrix (params ``experiment``)


@dataclass(frozen=True)
class ExperimentConfig:
    """The ``experiment`` section: what is trained and what is compared with what."""

    models: tuple[str, ...] = ()
    losses: tuple[str, ...] = ()
    scales: tuple[int, ...] = (4,)
    #: Extra training seeds. Each adds a replicate run ``<model>-<loss>-x<scale>-s<seed>`` per
    #: configuration, trained like the primary run (top-level ``seed``) except for the seed.
    replicates: tuple[int, ...] = ()
    #: The loss every other loss is compared with (paired.csv); None = the first of ``losses``.
    baseline: str | None = None
    #: Models (of ``models``) that also get a zero-shot run per scale, outside the cross product.
    zero_shot: tuple[str, ...] = ()


def _experiment_lists(experiment: Any, errors: list[str]) -> Any:
    """`experiment` with any of models/losses/scales that is not a list of names (or of
    integers, for scales) reported and dropped, so expanding the matrix never meets a value it
    cannot iterate or hash."""
    if not isinstance(experiment, Mapping):
        return experiment
    clean = dict(experiment)
    for key, kind in (("models", str), ("losses", str), ("scales", int)):
        value = clean.get(key)
        if value is None:
            continue
        items = value if isinstance(value, list | tuple) else None
        if items is None or not all(isinstance(v, kind) and not isinstance(v, bool) for v in items):
            what = "names" if kind is str else "integers"
            errors.append(f"experiment.{key}: must be a list of {what}, got {value!r}")
            clean[key] = [] if key != "scales" else None
    return clean


_EXPERIMENT_KEYS = ("models", "losses", "scales", "replicates", "baseline", "zero_shot")


def parse_experiment(raw: Any, seed: int, errors: list[str]) -> ExperimentConfig:
    """The ``experiment`` section of the params; problems are appended to `errors`."""
    return _experiment(_experiment_lists(raw, errors), seed, errors)


def _experiment(raw: Any, seed: int, errors: list[str]) -> ExperimentConfig:
    """The experiment section, each key checked on its own (names are checked by _expand_runs)."""
    if not isinstance(raw, Mapping):
        errors.append(f"experiment: must be a mapping with models and losses, got {raw!r}")
        return ExperimentConfig()
    for key in raw:
        if key not in _EXPERIMENT_KEYS:
            errors.append(f"experiment.{key}: unknown key (allowed: {', '.join(_EXPERIMENT_KEYS)})")

    def names(key: str) -> tuple[str, ...]:
        value = raw.get(key) or []
        if not isinstance(value, list | tuple) or not all(isinstance(v, str) for v in value):
            errors.append(f"experiment.{key}: must be a list of names, got {value!r}")
            return ()
        return tuple(value)

    scales = raw.get("scales") or [4]
    if not isinstance(scales, list | tuple):
        errors.append(f"experiment.scales: must be a list, got {scales!r}")
        scales = []
    replicates = raw.get("replicates")
    replicates = [] if replicates is None else replicates
    if not isinstance(replicates, list | tuple):
        errors.append(
            f"experiment.replicates: must be a list of extra training seeds (e.g. [1, 2]; [] for "
            f"none), got {replicates!r}"
        )
        replicates = []
    good: list[int] = []
    for r in replicates:
        if not isinstance(r, int) or isinstance(r, bool) or r < 0:
            errors.append(
                f"experiment.replicates: each seed must be a non-negative integer, got {r!r}"
            )
        elif r == seed:
            errors.append(
                f"experiment.replicates: {r} is the primary seed (top-level seed: {seed}); "
                "its runs exist already, list only the extra seeds"
            )
        elif r in good:
            errors.append(f"experiment.replicates: seed {r} is listed twice")
        else:
            good.append(r)
    losses = names("losses")
    baseline = raw.get("baseline")
    if baseline is not None and (not isinstance(baseline, str) or baseline not in losses):
        errors.append(
            "experiment.baseline: must be one of experiment.losses "
            f"({', '.join(losses) or 'none'}), got {baseline!r}"
        )
        baseline = None
    models = names("models")
    zero_shot: list[str] = []
    for m in names("zero_shot"):
        if m not in models:
            errors.append(
                f"experiment.zero_shot: {m!r} is not one of experiment.models "
                f"({', '.join(models) or 'none'}); list the models whose starting weights get "
                "their own untrained row"
            )
        elif m in zero_shot:
            errors.append(f"experiment.zero_shot: {m!r} is listed twice")
        else:
            zero_shot.append(m)
    return ExperimentConfig(
        models=models,
        losses=losses,
        scales=tuple(scales),
        replicates=tuple(good),
        baseline=baseline,
        zero_shot=tuple(zero_shot),
    )


def _arch_and_kwargs(spec: Mapping[str, Any]) -> tuple[str, dict[str, Any]]:
    """A models entry's architecture as the registry keys it and its constructor arguments."""
    return canonical_arch(str(spec["arch"])), {
        k: v for k, v in spec.items() if k not in MODEL_META_KEYS
    }


def expand_runs(
    experiment: ExperimentConfig,
    seed: int,
    models: dict[str, Any],
    losses: dict[str, Any],
    errors: list[str],
) -> tuple[Run, ...]:
    """Runs = models x losses x scales x seeds; the seeds of one configuration are adjacent,
    the primary seed first (so with no replicates the order is the old matrix order); then the
    zero-shot runs (``experiment.zero_shot``), one per model and scale. Each run's ``arch`` is
    spelled as the model registry keys it (:func:`canonical_arch`). Problems are appended to
    `errors` (params validation reports them all at once)."""
    runs = []
    model_names, loss_names, scales = experiment.models, experiment.losses, experiment.scales
    for s in scales:
        if s not in SCALES:
            errors.append(f"experiment.scales: each scale must be one of {SCALES}, got {s!r}")
    for m in model_names:
        if m not in models:
            errors.append(
                f"experiment.models: {m!r} is not defined under models: "
                f"(defined: {', '.join(models) or 'none'})"
            )
    if ZERO_SHOT in losses:
        errors.append(
            f"losses.{ZERO_SHOT}: the name is reserved for the zero-shot runs "
            "(experiment.zero_shot); name the loss differently"
        )
    for loss in loss_names:
        if loss not in losses:
            errors.append(
                f"experiment.losses: {loss!r} is not defined under losses: "
                f"(defined: {', '.join(losses) or 'none'})"
            )
    seeds = [(seed, False), *((r, True) for r in experiment.replicates)]
    for m in model_names:
        spec = models.get(m)
        if not isinstance(spec, Mapping) or "arch" not in spec:
            if m in models:
                errors.append(f"models.{m}: needs an 'arch' key (e.g. arch: edsr_baseline)")
            continue
        arch, kwargs = _arch_and_kwargs(spec)
        for loss in loss_names:
            if loss not in losses:
                continue
            lspec = losses[loss]
            if not isinstance(lspec, Mapping) or not lspec:
                errors.append(f"losses.{loss}: must be a non-empty mapping like {{l1: 1.0}}")
                continue
            for s in scales:
                if s not in SCALES:
                    continue
                for run_seed, replicate in seeds:
                    name = run_name(m, loss, s, run_seed if replicate else None)
                    runs.append(
                        Run(name, m, arch, kwargs, loss, dict(lspec), s, run_seed, replicate)
                    )
    for m in experiment.zero_shot:
        spec = models.get(m)
        if not isinstance(spec, Mapping) or "arch" not in spec:
            continue  # reported above
        arch, kwargs = _arch_and_kwargs(spec)
        for s in scales:
            if s in SCALES:
                name = run_name(m, ZERO_SHOT, s)
                runs.append(Run(name, m, arch, kwargs, ZERO_SHOT, {}, s, seed, zero_shot=True))
    return tuple(runs)
