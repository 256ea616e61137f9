"""Typed, validated view of ``params.yaml``.

Every stage reads its section from here, so a typo or an impossible value fails before any work
starts, with one message that names every bad key (not just the first).
"""

from __future__ import annotations

import dataclasses
import math
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from sgsr import fsutil, run_index, yamlio
from sgsr.metric_registry import DEFAULT_NAMES as DEFAULT_METRICS
from sgsr.metric_registry import NAMES as METRIC_NAMES
from sgsr.names import name_problem
from sgsr.runs import (
    SCALES,
    ExperimentConfig,
    Run,
    canonical_arch,
    expand_runs,
    parse_experiment,
)

SOURCES = ("sample", "official", "dir")
SCHEDULES = ("multistep", "cosine", "constant")
DEVICES = ("auto", "cpu", "cuda")
AMP_MODES = ("auto", "off", "bf16", "fp16")
#: train.optimizer_impl: Adam's implementation (sgsr.optim). auto = fused on CUDA, torch's
#: default on the CPU (its for-loop, so CPU runs stay bitwise what they were).
OPTIMIZER_IMPLS = ("auto", "for_loop", "foreach", "fused")
#: train.capture: how a training step reaches the device (sgsr.step_capture). off = eager.
CAPTURE_MODES = ("off", "cuda_graph", "compile")
BAD_IMAGE_POLICIES = ("error", "skip")
#: Largest image (width x height) any stage decodes, checked from the header first: a 167-byte
#: PNG can declare 30000x30000 (2.7 GB of RGB). 40 MP holds 8K UHD (33 MP) and every SR
#: benchmark image; `data.max_pixels` (pipeline) and `--max-pixels` (upscale, evaluate) raise it.
DEFAULT_MAX_PIXELS = 40_000_000


#: Most bootstrap resamples (evaluate.bootstrap, fid_bootstrap): beyond this the interval does
#: not change in any reported digit, and 1e11 would run for days.
MAX_RESAMPLES = 1_000_000


class ConfigError(ValueError):
    """Bad params: the message lists every offending key with what is allowed."""


@dataclass(frozen=True)
class DataConfig:
    source: str = "sample"
    dir: str | None = None
    train_sets: tuple[str, ...] = ("sample_train",)
    test_sets: tuple[str, ...] = ("sample_test",)
    on_bad_image: str = "error"
    metric_weights: bool = True
    max_pixels: int = DEFAULT_MAX_PIXELS


@dataclass(frozen=True)
class PrepareConfig:
    scales: tuple[int, ...] = (4,)
    patch_size: int = 96
    stride: int = 48
    val_images: int = 1


@dataclass(frozen=True)
class TrainConfig:
    iterations: int = 300
    batch_size: int = 16
    lr_patch: int = 24
    lr: float = 2e-4
    betas: tuple[float, float] = (0.9, 0.99)
    weight_decay: float = 0.0
    schedule: str = "multistep"
    milestones: tuple[int, ...] = ()
    gamma: float = 0.5
    warmup: int = 0
    grad_clip: float = 0.0
    #: Training stops as diverged when the loss exceeds this many times its lowest value so far
    #: (a finite explosion: lr 10 takes L1 to 1e25); 0 disables the rule. Never hashed.
    diverge_factor: float = 1000.0
    ema: float = 0.0
    amp: str = "auto"
    channels_last: bool = True
    device: str = "auto"
    checkpoint_every: int = 100
    val_every: int = 100
    log_every: int = 10
    num_workers: int = 0
    deterministic: bool = True
    #: start from these weights (sgsr.warmstart): pretrained:<weight>, run:<run> or a file
    init_from: str | None = None
    #: parameter-name prefixes that stay fixed while fine-tuning (e.g. [conv_first, body.0])
    freeze: tuple[str, ...] = ()
    # How a step runs, never what it computes (sgsr.optim.IMPLEMENTATION_KEYS: not hashed, a
    # checkpoint resumes across them). Defaults keep the CPU path bitwise as it was.
    optimizer_impl: str = "auto"
    capture: str = "off"
    #: Batches loaded ahead by a background thread (0 = none; DataLoader workers also prefetch).
    prefetch: int = 0
    #: `sgsr train --run A` also trains up to N-1 other runs of the matrix that still need it,
    #: at once in this process (sgsr.gpu_share; their own stages then find them finished).
    runs_per_process: int = 1


@dataclass(frozen=True)
class InferConfig:
    tile: int = 0
    overlap: int = 16
    device: str = "auto"


@dataclass(frozen=True)
class EvaluateConfig:
    metrics: tuple[str, ...] = DEFAULT_METRICS
    #: FID/KID samples: "patches" (seeded patches, below) or "whole" (whole images, the field's
    #: protocol: BasicSR, LDL, pytorch-fid).
    fid_protocol: str = "patches"
    fid_patch: int = 64
    #: FID patches per image: a fixed, seeded choice among the non-overlapping grid cells, the
    #: same for SR and HR and for every run (0 = every cell). Bounds FID's cost.
    fid_patches_per_image: int = 16
    #: Resamples of the test images for FID's bootstrap CI (0 = no CI).
    fid_bootstrap: int = 1000
    bootstrap: int = 10000
    ci: float = 0.95
    #: The metrics summarize puts in results/metrics.json, the file DVC shows (empty: every
    #: one of ``metrics``); a few keep ``dvc exp show`` readable, summary.csv has them all.
    dvc_metrics: tuple[str, ...] = ()


@dataclass(frozen=True)
class ReportConfig:
    zoom_image: str | None = None
    zoom_size: int = 64


@dataclass(frozen=True)
class Config:
    seed: int = 0
    root: str = "."
    data: DataConfig = field(default_factory=DataConfig)
    prepare: PrepareConfig = field(default_factory=PrepareConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    infer: InferConfig = field(default_factory=InferConfig)
    evaluate: EvaluateConfig = field(default_factory=EvaluateConfig)
    report: ReportConfig = field(default_factory=ReportConfig)
    models: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    losses: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    experiment: ExperimentConfig = field(default_factory=ExperimentConfig)
    runs: tuple[Run, ...] = ()
    source_path: str = "params.yaml"

    @property
    def seeds(self) -> tuple[int, ...]:
        """Training seeds of every configuration: the primary ``seed``, then the replicates."""
        return (self.seed, *self.experiment.replicates)

    @property
    def baseline_loss(self) -> str | None:
        """The loss candidates are paired with (``experiment.baseline``, else the first loss)."""
        if self.experiment.baseline is not None:
            return self.experiment.baseline
        return self.experiment.losses[0] if self.experiment.losses else None

    @property
    def primary_runs(self) -> tuple[Run, ...]:
        """One run per configuration: the primary seed's."""
        return tuple(r for r in self.runs if not r.replicate)

    def run(self, name: str) -> Run:
        for r in self.runs:
            if r.name == name:
                return r
        available = ", ".join(r.name for r in self.runs) or "(none)"
        raise ConfigError(
            f"{self.source_path}: no run named {name!r}; runs are {available} "
            "(a run is <model>-<loss>-x<scale> from experiment.models x losses x scales, "
            "plus -s<seed> for each seed in experiment.replicates, and "
            "<model>-zeroshot-x<scale> for each model in experiment.zero_shot)"
        )


_SECTIONS: dict[str, type] = {
    "data": DataConfig,
    "prepare": PrepareConfig,
    "train": TrainConfig,
    "infer": InferConfig,
    "evaluate": EvaluateConfig,
    "report": ReportConfig,
}
_TOP_KEYS = ("seed", "root", *_SECTIONS, "models", "losses", "experiment", run_index.KEY)


def load_config(path: str | os.PathLike[str] = "params.yaml") -> Config:
    """Read and validate a params file; raises ConfigError listing every bad key.

    Duplicate keys are refused (sgsr.yamlio), and so is an empty file: running every stage on
    built-in defaults because the params file was truncated is never what was meant.
    """
    return parse_config(read_params(path), source=str(path))


def read_params(path: str | os.PathLike[str]) -> Mapping[str, Any]:
    """The params file's mapping, as YAML gives it; ConfigError for a file no stage can use."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"params file {path} not found (run from the pipeline folder)")
    try:
        raw = yamlio.loads(path.read_text(), source=str(path))
    except (yamlio.DuplicateKeyError, yamlio.AliasBombError) as exc:
        raise ConfigError(str(exc)) from None
    except (yaml.YAMLError, UnicodeDecodeError, RecursionError) as exc:
        raise ConfigError(f"{path}: not valid YAML: {exc}") from exc
    if raw is None:
        raise ConfigError(
            f"{path}: the file is empty (nothing but whitespace or comments), so no stage would "
            "know what to do; start from the repository's params.yaml or a profile's "
            "(profiles/<name>/params.yaml)"
        )
    if not isinstance(raw, Mapping):
        raise ConfigError(f"{path}: top level must be a mapping, got {type(raw).__name__}")
    return raw


def write_run_index(path: str | os.PathLike[str] = "params.yaml") -> bool:
    """Regenerate the params file's ``runs:`` block from its ``experiment`` (sgsr.run_index);
    True if the file changed. Every other line is kept; the file is replaced atomically."""
    path = Path(path)
    raw = dict(read_params(path))
    raw.pop(run_index.KEY, None)
    cfg = parse_config(raw, source=str(path))
    text = path.read_text()
    new = run_index.rewrite(text, run_index.expected(cfg.runs, cfg.experiment.scales))
    if new == text:
        return False
    fsutil.write_text(path, new)
    return True


def parse_config(raw: Mapping[str, Any], source: str = "params.yaml") -> Config:
    """The typed params; ConfigError listing every bad key."""
    cfg, errors = parse_with_errors(raw, source)
    if errors:
        raise bad_keys(source, errors)
    return cfg


def bad_keys(source: str, errors: list[str]) -> ConfigError:
    """The one error that lists every bad key of a params file."""
    return ConfigError(f"{source}: {len(errors)} bad key(s):\n  - " + "\n  - ".join(errors))


def parse_with_errors(
    raw: Mapping[str, Any], source: str = "params.yaml"
) -> tuple[Config, list[str]]:
    """The typed params as far as they make sense, and what is wrong with them (checkers above
    this module, sgsr.preflight, add their problems to the same message)."""
    errors: list[str] = []
    for key in raw:
        if key not in _TOP_KEYS:
            errors.append(f"{key}: unknown top-level key (allowed: {', '.join(_TOP_KEYS)})")
    sections = {
        name: _build_section(cls, raw.get(name) or {}, name, errors)
        for name, cls in _SECTIONS.items()
    }
    seed = raw.get("seed", 0)
    if not isinstance(seed, int) or isinstance(seed, bool) or seed < 0:
        errors.append(f"seed: must be a non-negative integer, got {seed!r}")
    models = _mapping(raw.get("models") or {}, "models", errors)
    losses = _mapping(raw.get("losses") or {}, "losses", errors)
    primary = seed if isinstance(seed, int) and not isinstance(seed, bool) else 0
    experiment = parse_experiment(raw.get("experiment") or {}, primary, errors)
    runs = expand_runs(experiment, primary, models, losses, errors)
    cfg = Config(
        seed=primary,
        root=str(raw.get("root", ".")),
        models=models,
        losses=losses,
        experiment=experiment,
        runs=runs,
        source_path=source,
        **sections,
    )
    _check_values(cfg, errors)
    if run_index.KEY in raw and not errors:
        want = run_index.expected(runs, experiment.scales)
        errors.extend(run_index.problems(raw[run_index.KEY], want))
    return cfg, errors


def _mapping(value: Any, key: str, errors: list[str]) -> dict[str, Any]:
    if not isinstance(value, Mapping):
        errors.append(f"{key}: must be a mapping, got {value!r}")
        return {}
    for name in value:
        if not isinstance(name, str):
            errors.append(f"{key}.{name}: names must be strings (quote it), got {name!r}")
        elif problem := name_problem(name):
            errors.append(f"{key}: the name {name!r} {problem}")
    return {k: v for k, v in value.items() if isinstance(k, str)}


def _build_section(cls: type, raw: Any, name: str, errors: list[str]) -> Any:
    if not isinstance(raw, Mapping):
        errors.append(f"{name}: must be a mapping, got {raw!r}")
        return cls()
    known = {f.name: f for f in dataclasses.fields(cls)}
    values: dict[str, Any] = {}
    for key, value in raw.items():
        if key not in known:
            errors.append(f"{name}.{key}: unknown key (allowed: {', '.join(known)})")
            continue
        default = known[key].default
        coerced = _coerce(value, default, f"{name}.{key}", errors)
        element = _ELEMENT_TYPES.get(f"{name}.{key}")
        if coerced is not _INVALID and element is not None:
            coerced = _coerce_elements(coerced, element, f"{name}.{key}", errors)
        if coerced is not _INVALID:
            values[key] = coerced
    return cls(**values)


_INVALID = object()

#: What the items of list-valued keys must be (a wrong item type would otherwise crash the
#: range checks below with a TypeError instead of naming the key).
_ELEMENT_TYPES: dict[str, type] = {
    "data.train_sets": str,
    "data.test_sets": str,
    "prepare.scales": int,
    "train.betas": float,
    "train.milestones": int,
    "train.freeze": str,
    "evaluate.metrics": str,
    "evaluate.dvc_metrics": str,
}


def _show(value: Any, limit: int = 200) -> str:
    """`value`'s repr for a message, cut at `limit` characters (a value may be huge)."""
    text = repr(value)
    return text if len(text) <= limit else f"{text[:limit]}... ({len(text):,} characters)"


def _coerce_elements(values: tuple, kind: type, key: str, errors: list[str]) -> Any:
    """Check every item of a list key: strings, integers (not booleans) or numbers."""
    if kind is float:
        ok = all(isinstance(v, int | float) and not isinstance(v, bool) for v in values)
        what = "numbers"
    elif kind is int:
        ok = all(isinstance(v, int) and not isinstance(v, bool) for v in values)
        what = "integers"
    else:
        ok = all(isinstance(v, str) for v in values)
        what = "strings"
    if ok:
        return tuple(float(v) for v in values) if kind is float else values
    errors.append(f"{key}: must be a list of {what}, got {_show(list(values))}")
    return _INVALID


def _coerce(value: Any, default: Any, key: str, errors: list[str]) -> Any:
    """Match the type of the dataclass default; lists become tuples."""
    if isinstance(default, bool):
        if isinstance(value, bool):
            return value
        errors.append(f"{key}: must be true or false, got {_show(value)}")
        return _INVALID
    if isinstance(default, int):
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        errors.append(f"{key}: must be an integer, got {_show(value)}")
        return _INVALID
    if isinstance(default, float):
        if isinstance(value, int | float) and not isinstance(value, bool):
            return float(value)
        errors.append(f"{key}: must be a number, got {_show(value)}")
        return _INVALID
    if isinstance(default, tuple):
        if isinstance(value, list | tuple):
            return tuple(value)
        errors.append(f"{key}: must be a list, got {_show(value)}")
        return _INVALID
    if default is None or isinstance(default, str):
        if value is None or isinstance(value, str):
            return value
        errors.append(f"{key}: must be a string, got {_show(value)}")
        return _INVALID
    return value


def _check_values(cfg: Config, errors: list[str]) -> None:
    d, p, t, i, e = cfg.data, cfg.prepare, cfg.train, cfg.infer, cfg.evaluate

    def bad(key: str, value: Any, rule: str) -> None:
        errors.append(f"{key}: {rule}, got {value!r}")

    if d.source not in SOURCES:
        bad("data.source", d.source, f"must be one of {', '.join(SOURCES)}")
    if d.source == "dir" and not d.dir:
        bad("data.dir", d.dir, "must name a folder laid out <dir>/<Set>/*.png when source is dir")
    _positive(errors, "data.max_pixels", d.max_pixels)
    if d.on_bad_image not in BAD_IMAGE_POLICIES:
        bad("data.on_bad_image", d.on_bad_image, f"must be one of {', '.join(BAD_IMAGE_POLICIES)}")
    if not d.train_sets:
        bad("data.train_sets", list(d.train_sets), "must list at least one set")
    if not d.test_sets:
        bad("data.test_sets", list(d.test_sets), "must list at least one set")
    for key, names in (("data.train_sets", d.train_sets), ("data.test_sets", d.test_sets)):
        for set_name in names:
            if problem := name_problem(set_name):
                errors.append(
                    f"{key}: the set name {set_name!r} {problem} (data.dir names the folder)"
                )
    for s in p.scales:
        if s not in SCALES:
            bad("prepare.scales", s, f"each scale must be one of {SCALES}")
    if not p.scales:
        bad("prepare.scales", [], "must list at least one scale")
    _positive(errors, "prepare.patch_size", p.patch_size)
    _positive(errors, "prepare.stride", p.stride)
    if p.val_images < 0:
        bad("prepare.val_images", p.val_images, "must be >= 0")
    for run in cfg.runs:
        if run.scale not in p.scales:
            bad("experiment.scales", run.scale, f"must be among prepare.scales {list(p.scales)}")
            break
    for model in cfg.experiment.zero_shot:
        spec = cfg.models.get(model)
        arch = spec.get("arch") if isinstance(spec, Mapping) else None
        if t.init_from is None and isinstance(arch, str) and canonical_arch(arch) != "community":
            bad(
                "experiment.zero_shot",
                model,
                f"must start from trained weights: models.{model} (arch {arch}) starts from "
                "random ones unless train.init_from names weights, so its zero-shot row would "
                "score an untrained network",
            )
    if not isinstance(t.iterations, int) or t.iterations < 0:
        bad(
            "train.iterations",
            t.iterations,
            "must be an integer >= 0 (0 = the initial weights as they are: a zero-shot run)",
        )
    for key in (
        "batch_size",
        "lr_patch",
        "checkpoint_every",
        "val_every",
        "log_every",
    ):
        _positive(errors, f"train.{key}", getattr(t, key))
    top = max(p.scales, default=1)
    if t.lr_patch * top > p.patch_size:
        bad(
            "train.lr_patch",
            t.lr_patch,
            f"times the largest scale ({top}) must fit in prepare.patch_size ({p.patch_size})",
        )
    if not (t.lr > 0 and math.isfinite(t.lr)):
        bad("train.lr", t.lr, "must be a positive number")
    if len(t.betas) != 2 or not all(0 <= b < 1 for b in t.betas):
        bad("train.betas", list(t.betas), "must be two numbers in [0, 1)")
    if t.schedule not in SCHEDULES:
        bad("train.schedule", t.schedule, f"must be one of {', '.join(SCHEDULES)}")
    if any((not isinstance(m, int)) or m <= 0 for m in t.milestones):
        bad("train.milestones", list(t.milestones), "must be positive iteration numbers")
    if not 0 < t.gamma <= 1:
        bad("train.gamma", t.gamma, "must be in (0, 1]")
    if t.warmup < 0:
        bad("train.warmup", t.warmup, "must be >= 0")
    if not (t.grad_clip >= 0 and math.isfinite(t.grad_clip)):
        bad("train.grad_clip", t.grad_clip, "must be a finite number >= 0 (0 disables clipping)")
    if not (t.diverge_factor == 0 or (t.diverge_factor > 1 and math.isfinite(t.diverge_factor))):
        bad("train.diverge_factor", t.diverge_factor, "must be a finite number > 1, or 0 (off)")
    if not 0 <= t.ema < 1:
        bad("train.ema", t.ema, "must be in [0, 1) (0 disables EMA)")
    if t.amp not in AMP_MODES:
        bad("train.amp", t.amp, f"must be one of {', '.join(AMP_MODES)}")
    for key, dev in (("train.device", t.device), ("infer.device", i.device)):
        if dev not in DEVICES and not str(dev).startswith("cuda:"):
            bad(key, dev, f"must be one of {', '.join(DEVICES)} or cuda:N")
    if t.num_workers < 0:
        bad("train.num_workers", t.num_workers, "must be >= 0")
    if not (t.weight_decay >= 0 and math.isfinite(t.weight_decay)):
        bad("train.weight_decay", t.weight_decay, "must be a finite number >= 0")
    if t.optimizer_impl not in OPTIMIZER_IMPLS:
        impls = ", ".join(OPTIMIZER_IMPLS)
        bad("train.optimizer_impl", t.optimizer_impl, f"must be one of {impls}")
    if t.capture not in CAPTURE_MODES:
        bad("train.capture", t.capture, f"must be one of {', '.join(CAPTURE_MODES)}")
    elif t.capture == "cuda_graph" and t.amp == "fp16":
        bad(
            "train.capture",
            t.capture,
            "cannot run with train.amp: fp16 (its GradScaler decides on the CPU, every step, "
            "whether to skip the update); use amp bf16, auto or off, or capture off",
        )
    if t.prefetch < 0:
        bad("train.prefetch", t.prefetch, "must be >= 0 (0 = no background loading)")
    _positive(errors, "train.runs_per_process", t.runs_per_process)
    if i.tile < 0:
        bad("infer.tile", i.tile, "must be >= 0 (0 = whole image)")
    if i.overlap < 0 or (i.tile and i.overlap * 2 >= i.tile):
        bad("infer.overlap", i.overlap, "must be >= 0 and less than half of infer.tile")
    for m in e.metrics:
        if m not in METRIC_NAMES:
            bad("evaluate.metrics", m, f"each metric must be one of {', '.join(METRIC_NAMES)}")
    if e.fid_protocol not in ("patches", "whole"):
        bad("evaluate.fid_protocol", e.fid_protocol, "must be patches or whole")
    for m in e.dvc_metrics:
        if m not in e.metrics:
            bad("evaluate.dvc_metrics", m, "each must be one of evaluate.metrics ([]: all)")
    _positive(errors, "evaluate.fid_patch", e.fid_patch)
    if e.fid_patches_per_image < 0:
        bad("evaluate.fid_patches_per_image", e.fid_patches_per_image, "must be >= 0 (0 = all)")
    if e.fid_bootstrap < 0:
        bad("evaluate.fid_bootstrap", e.fid_bootstrap, "must be >= 0 (0 = no CI)")
    _positive(errors, "report.zoom_size", cfg.report.zoom_size)
    _positive(errors, "evaluate.bootstrap", e.bootstrap)
    for key, value in (
        ("evaluate.bootstrap", e.bootstrap),
        ("evaluate.fid_bootstrap", e.fid_bootstrap),
    ):
        if isinstance(value, int) and value > MAX_RESAMPLES:
            bad(
                key,
                value,
                f"must be at most {MAX_RESAMPLES:,} (10 000 gives a stable 95 % interval)",
            )
    if not 0 < e.ci < 1:
        bad("evaluate.ci", e.ci, "must be in (0, 1)")


def _positive(errors: list[str], key: str, value: Any) -> None:
    if not isinstance(value, int) or value <= 0:
        errors.append(f"{key}: must be a positive integer, got {value!r}")


def allows_import(cfg: Config, model: str) -> bool:
    """Whether ``models.<model>.allow_import`` is true: the only way an import path is used."""
    spec = cfg.models.get(model)
    return isinstance(spec, Mapping) and spec.get("allow_import") is True
