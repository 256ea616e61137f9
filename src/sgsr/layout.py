"""Where each stage reads and writes, relative to the pipeline folder (the folder holding
``dvc.yaml`` and ``params.yaml``). One place, so stages, notebooks and dvc.yaml agree."""

from __future__ import annotations

from pathlib import Path

RAW = Path("data/raw")
PREPARED = Path("data/prepared")
PRETRAINED = Path("models/pretrained")
PRETRAINED_MANIFEST = PRETRAINED / "manifest.json"
MODELS = Path("models")
RESULTS = Path("results")
SUMMARY_CSV = RESULTS / "summary.csv"
#: One row per configuration (model, loss, scale) x set x metric: mean and spread over seeds.
SEEDS_CSV = RESULTS / "summary_seeds.csv"
PAIRED_CSV = RESULTS / "paired.csv"
REPORTS = Path("reports")
FIGURES = REPORTS / "figures"
#: The validation split prepare holds out of the training sets (never a test set).
VAL_SET = "val"


def raw_set(name: str) -> Path:
    return RAW / name


def prepared_set(scale: int, name: str) -> Path:
    """Holds ``hr/`` (mod-cropped) and ``lr/`` (MATLAB bicubic) PNGs with matching names."""
    return PREPARED / f"x{scale}" / name


def patch_store(scale: int) -> Path:
    return PREPARED / f"x{scale}" / "patches"


def run_dir(run: str) -> Path:
    return MODELS / run


def weights(run: str) -> Path:
    return run_dir(run) / "model.safetensors"


def run_card(run: str) -> Path:
    """Small JSON beside the weights: arch, kwargs, scale, loss; enough to rebuild the model."""
    return run_dir(run) / "run.json"


def checkpoint_dir(run: str) -> Path:
    return MODELS / "checkpoints" / run


def live_dir(run: str) -> Path:
    return MODELS / "live" / run


def sr_set(run: str, name: str) -> Path:
    return RESULTS / "sr" / run / name


def metrics_dir(run: str) -> Path:
    """Holds ``metrics.json`` (numbers only, a DVC metrics file), ``metrics_info.json`` (what
    the numbers are: run identity, notes, unavailable/undefined reasons), ``per_image.csv`` and
    ``fid_bootstrap.csv``."""
    return RESULTS / "metrics" / run


METRICS_JSON = "metrics.json"
METRICS_INFO_JSON = "metrics_info.json"
PER_IMAGE_CSV = "per_image.csv"
FID_BOOTSTRAP_CSV = "fid_bootstrap.csv"
