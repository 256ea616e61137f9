"""Where each stage reads and writes, relative to the pipeline folder (the folder holding
``dvc.yaml`` and ``params.yaml``). One place, so stages, notebooks and dvc.yaml agree.

Paths are relative; :func:`pipeline_root` is the folder they start from. Every set and run
name joined into a path here must be a plain name (`sgsr.names`), so no name can point a
stage at a folder outside its own. Functions that name a
file under ``data/prepared``, ``models`` or ``results`` take that top folder as an optional
last argument, so the notebooks (whose ``data_dir``, ``models_dir`` and ``results_dir``
parameters may point elsewhere) build their paths here too.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING

from sgsr.names import check_name, check_run_name

if TYPE_CHECKING:
    from sgsr.config import Config

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
#: The pipeline's one DVC metrics file: every run's set means under short keys
#: (``<run>.<set>.<metric>``, parts every run shares left out), what ``dvc exp show`` lists.
PROFILE_METRICS = RESULTS / "metrics.json"
#: Training curves of every run in one long table per dvclive folder (``train.csv``,
#: ``val.csv``): what the top-level plots of dvc.yaml overlay, a line per run.
CURVES = RESULTS / "curves"
REPORTS = Path("reports")
FIGURES = REPORTS / "figures"
#: Where a notebook run by hand (not by ``sgsr report``) saves its figures, relative to the
#: folder its kernel started in: never a DVC output, so exploring changes no stage.
SCRATCH_FIGURES = Path("figures")
#: A folder holding both is a pipeline (the root profile or ``profiles/<name>``).
PIPELINE_FILES = ("dvc.yaml", "params.yaml")
#: The validation split prepare holds out of the training sets (never a test set).
VAL_SET = "val"
#: What a trained run's folder holds (sgsr.weights writes and reads both).
WEIGHTS_NAME = "model.safetensors"
CARD_NAME = "run.json"
#: The non-averaged weights of an EMA run: a working file beside the checkpoint (not an output,
#: so a published study carries the weights to use once).
RAW_WEIGHTS_NAME = "model-raw.safetensors"

Folder = str | os.PathLike[str]


def pipeline_root(cfg: Config, root: Folder | None = None) -> Path:
    """The folder every path here is relative to: `root` if given, else the params file's
    folder (the pipeline folder; "." when a stage runs there, as DVC runs it)."""
    return Path(root) if root is not None else Path(cfg.source_path).parent


def find_pipeline(pipeline: Folder | None = None, start: Folder = ".") -> Path:
    """The pipeline folder a notebook reads, as a path relative to `start` where possible.

    Jupyter and nbconvert start the kernel in the notebook's folder, papermill and
    ``sgsr report`` in the pipeline's, so the notebooks look for the nearest folder at or
    above `start` holding ``dvc.yaml`` and ``params.yaml``. An explicit `pipeline` (e.g.
    ``profiles/study``) is taken relative to `start`, else to that nearest pipeline's folder.
    """
    start = Path(start)
    here = start.resolve()
    found = next(
        (d for d in (here, *here.parents) if all((d / f).is_file() for f in PIPELINE_FILES)),
        None,
    )
    if pipeline is not None:
        for base in (start, found):
            if base is not None and (Path(base) / pipeline).is_dir():
                return _relative(Path(base) / pipeline, here)
        raise FileNotFoundError(
            f"pipeline {str(pipeline)!r} is not a folder (looked in {here}"
            + (f" and {found}" if found else "")
            + "); pass the folder holding dvc.yaml and params.yaml"
        )
    if found is None:
        raise FileNotFoundError(
            f"no folder at or above {here} holds {' and '.join(PIPELINE_FILES)}: start the "
            "notebook inside the repository, or pass the `pipeline` parameter"
        )
    return _relative(found, here)


def _relative(path: Path, start: Path) -> Path:
    """`path` relative to `start` (``..`` steps allowed) so messages stay short; else absolute."""
    try:
        return Path(os.path.relpath(path.resolve(), start))
    except ValueError:  # another drive on Windows
        return path.resolve()


def notebook_figures(figures_dir: Folder | None, pipeline: Folder) -> Path:
    """Where a notebook saves figures: `figures_dir` (relative to the pipeline folder), or with
    None :data:`SCRATCH_FIGURES` in the kernel's folder, so a hand run never rewrites
    ``reports/figures`` (a DVC output); ``sgsr report`` passes its own folder."""
    if figures_dir is None:
        return SCRATCH_FIGURES
    return Path(pipeline) / figures_dir


def raw_set(name: str, raw: Folder = RAW) -> Path:
    return Path(raw) / check_name(name, "set name")


def prepared_scale(scale: int, prepared: Folder = PREPARED) -> Path:
    """Everything prepare writes for one scale: the sets, ``val/`` and ``patches/``."""
    return Path(prepared) / f"x{scale}"


def prepared_set(scale: int, name: str, prepared: Folder = PREPARED) -> Path:
    """Holds ``hr/`` (mod-cropped) and ``lr/`` (MATLAB bicubic) PNGs with matching names."""
    return prepared_scale(scale, prepared) / check_name(name, "set name")


def hr_image(scale: int, set_name: str, stem: str, prepared: Folder = PREPARED) -> Path:
    return prepared_set(scale, set_name, prepared) / "hr" / f"{stem}.png"


def lr_image(scale: int, set_name: str, stem: str, prepared: Folder = PREPARED) -> Path:
    return prepared_set(scale, set_name, prepared) / "lr" / f"{stem}.png"


def patch_store(scale: int, prepared: Folder = PREPARED) -> Path:
    return prepared_scale(scale, prepared) / "patches"


def run_dir(run: str, models: Folder = MODELS) -> Path:
    return Path(models) / check_run_name(run)


def weights(run: str, models: Folder = MODELS) -> Path:
    return run_dir(run, models) / WEIGHTS_NAME


def run_card(run: str, models: Folder = MODELS) -> Path:
    """Small JSON beside the weights: arch, kwargs, scale, loss; enough to rebuild the model."""
    return run_dir(run, models) / CARD_NAME


def checkpoint_dir(run: str, models: Folder = MODELS) -> Path:
    """The trainer's working folder of one run (git- and DVC-ignored, never deleted by DVC):
    the resume checkpoint, the curves as they grow, the raw weights of an EMA run."""
    return Path(models) / "checkpoints" / check_run_name(run)


def live_work_dir(run: str, models: Folder = MODELS) -> Path:
    """The dvclive folder the trainer logs into and resumes from; copied to :func:`live_dir`
    when training ends, so the stage's output is written once, complete."""
    return checkpoint_dir(run, models) / "live"


def raw_weights(run: str, models: Folder = MODELS) -> Path:
    return checkpoint_dir(run, models) / RAW_WEIGHTS_NAME


def live_root(models: Folder = MODELS) -> Path:
    """The finished curves of every run (summarize and the report read them)."""
    return Path(models) / "live"


def live_dir(run: str, models: Folder = MODELS) -> Path:
    return live_root(models) / check_run_name(run)


def sr_root(results: Folder = RESULTS) -> Path:
    return Path(results) / "sr"


def sr_run(run: str, results: Folder = RESULTS) -> Path:
    """One run's SR images, a folder per test set."""
    return sr_root(results) / check_run_name(run)


def sr_set(run: str, name: str, results: Folder = RESULTS) -> Path:
    return sr_run(run, results) / check_name(name, "set name")


def sr_image(run: str, set_name: str, stem: str, results: Folder = RESULTS) -> Path:
    return sr_set(run, set_name, results) / f"{stem}.png"


def metrics_root(results: Folder = RESULTS) -> Path:
    return Path(results) / "metrics"


def metrics_dir(run: str, results: Folder = RESULTS) -> Path:
    """Holds ``metrics.json`` (numbers only, a DVC metrics file), ``metrics_info.json`` (what
    the numbers are: run identity, notes, unavailable/undefined reasons), ``per_image.csv`` and
    ``fid_bootstrap.csv``."""
    return metrics_root(results) / check_run_name(run)


METRICS_JSON = "metrics.json"
METRICS_INFO_JSON = "metrics_info.json"
PER_IMAGE_CSV = "per_image.csv"
FID_BOOTSTRAP_CSV = "fid_bootstrap.csv"
