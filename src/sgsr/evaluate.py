"""The evaluate stage: score one run's SR images on every test set and write its results, and
read them back (for summarize).

- `run(cfg, run)` writes under ``results/metrics/<run>/``: ``metrics.json`` (a DVC metrics
  file: per set, one number per metric and ``n_images``, so ``dvc metrics show`` has one
  column per metric), ``metrics_info.json`` (what the numbers are: the run, notes, unavailable
  and non-finite values with their reasons), ``per_image.csv`` and ``fid_bootstrap.csv`` (FID
  of every image resample, for confidence intervals).
- `load_run(base, run)` reads those four files back as a :class:`RunResults`.
- Scoring itself (any folder pair, ``sgsr evaluate --sr --hr``): `sgsr.scoring`; summaries over
  runs and seeds: `sgsr.summary`.

Identical and undefined are never confused: PSNR of identical images is ``inf``; a value that
cannot be computed (e.g. no pixel left after the border crop) is ``nan`` with its reason. CSV
files write ``inf`` / ``nan`` and leave an unavailable metric (weights missing) empty; JSON has
neither, so metrics.json writes null for all three and metrics_info.json says which and why.
"""

from __future__ import annotations

import csv
import io
import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from sgsr import layout
from sgsr.config import Config
from sgsr.data.common import download_cache
from sgsr.fid import FeatureCache, bootstrap_fid, plan_fingerprint, resample_plan
from sgsr.fsutil import write_text
from sgsr.refcache import ReferenceCache
from sgsr.runs import BICUBIC_MODEL, parse_run
from sgsr.scoring import Scorer, csv_value, finite_or_none, metric_notes, nonfinite_label

log = logging.getLogger(__name__)

PER_IMAGE_KEYS = ("set", "image", "scale")
FID_BOOTSTRAP_COLUMNS = ("set", "resample", "fid")
#: Files every evaluated run must have for summarize.
RUN_FILES = (
    layout.METRICS_JSON,
    layout.METRICS_INFO_JSON,
    layout.PER_IMAGE_CSV,
    layout.FID_BOOTSTRAP_CSV,
)


# --------------------------------------------------------------------------------------------
# the pipeline stage
# --------------------------------------------------------------------------------------------
def run_identity(cfg: Config, run_name: str) -> dict[str, Any]:
    """What metrics.json records of a run: :func:`sgsr.runs.parse_run`'s fields, with the seed
    it trained with (the params seed when its name carries none) and whether it is a
    replicate. The ``bicubic-x<s>`` baseline has no seed and is no replicate."""
    ident = parse_run(run_name)
    if ident["model"] == BICUBIC_MODEL:
        return {**ident, "replicate": False}
    r = cfg.run(run_name)  # a run the params define, else an error listing them
    return {**ident, "seed": r.seed, "replicate": r.replicate}


def feature_cache_dir() -> Path:
    """Where HR FID features are cached: ``<download cache>/fid-features`` (outside the DVC
    outputs, like downloaded archives; entries are keyed by content, so sharing is safe)."""
    return download_cache() / "fid-features"


def reference_cache_dir() -> Path:
    """Where HR LPIPS features are cached: ``<download cache>/reference-features`` (keyed by
    content like the FID features; ~38 bytes per HR pixel)."""
    return download_cache() / "reference-features"


def run(
    cfg: Config,
    run_name: str,
    feature_cache: Any = "default",
    nets: dict[str, Any] | None = None,
    reference_cache: Any = "default",
) -> dict:
    """Score ``results/sr/<run>/<set>`` for every test set; write ``per_image.csv``,
    ``fid_bootstrap.csv``, ``metrics_info.json`` and ``metrics.json`` under
    ``results/metrics/<run>/``. Returns the metrics.json content.

    `feature_cache`: a `sgsr.fid.FeatureCache`, None (no cache) or "default"
    (:func:`feature_cache_dir`); `reference_cache` likewise for LPIPS's HR side (a
    `sgsr.refcache.ReferenceCache`, None or "default": :func:`reference_cache_dir`).
    `nets`: injected metric networks (tests and benchmarks with random backbones; the stage
    itself loads verified weights from models/pretrained).
    """
    base = layout.pipeline_root(cfg)
    ident = run_identity(cfg, run_name)
    scale = ident["scale"]
    ev = cfg.evaluate
    if feature_cache == "default":
        feature_cache = FeatureCache(feature_cache_dir())
    if reference_cache == "default":
        reference_cache = ReferenceCache(reference_cache_dir())
    scorer = Scorer(
        ev.metrics,
        base / layout.PRETRAINED,
        ev.fid_patch,
        cfg.infer.device,
        nets=nets,
        fid_patches_per_image=ev.fid_patches_per_image,
        feature_cache=feature_cache,
        max_pixels=cfg.data.max_pixels,
        fid_protocol=ev.fid_protocol,
        reference_cache=reference_cache,
    )
    numbers: dict[str, dict[str, Any]] = {}
    sets_info: dict[str, dict[str, Any]] = {}
    per_image = io.StringIO()
    writer = csv.writer(per_image, lineterminator="\n")
    writer.writerow([*PER_IMAGE_KEYS, *scorer.image_metrics])
    boot = io.StringIO()
    boot_writer = csv.writer(boot, lineterminator="\n")
    boot_writer.writerow(FID_BOOTSTRAP_COLUMNS)
    for set_name in cfg.data.test_sets:
        score = scorer.score(
            base / layout.sr_set(run_name, set_name),
            base / layout.prepared_set(scale, set_name) / "hr",
            scale,
        )
        for row in score.images:
            writer.writerow(
                [set_name, row["image"], scale, *(csv_value(row[m]) for m in scorer.image_metrics)]
            )
        entry: dict[str, Any] = {m: finite_or_none(v) for m, v in score.mean.items()}
        entry["n_images"] = len(score.images)
        numbers[set_name] = entry
        info: dict[str, Any] = {"n_images": len(score.images)}
        nonfinite = {
            m: {"value": nonfinite_label(v), "why": score.why.get(m, "")}
            for m, v in score.mean.items()
            if nonfinite_label(v)
        }
        if nonfinite:
            info["nonfinite"] = nonfinite
        for note in score.warnings:
            log.warning("%s: %s", run_name, note)
        if score.warnings:
            info["warnings"] = list(score.warnings)
        if score.kid is not None:
            info["kid"] = {
                "sd": score.kid.sd,
                "subsets": score.kid.subsets,
                "subset_size": score.kid.subset_size,
            }
        if score.fid_sr is not None:
            fid_info: dict[str, Any] = {
                "protocol": ev.fid_protocol,
                "samples": len(score.fid_sr),
                "patches": len(score.fid_sr),
                "bootstrap": 0,
            }
            if ev.fid_bootstrap and "fid" in scorer.set_metrics:
                plan = resample_plan(len(score.images), ev.fid_bootstrap, set_name)
                values = bootstrap_fid(score.fid_sr, score.fid_hr, score.fid_groups, plan)
                for i, v in enumerate(values):
                    boot_writer.writerow([set_name, i, repr(float(v))])
                fid_info["bootstrap"] = ev.fid_bootstrap
                fid_info["plan_sha256"] = plan_fingerprint(plan, score.stems)
            info["fid"] = fid_info
        sets_info[set_name] = info
    if feature_cache is not None and scorer.use_fid:
        log.info(
            "%s: HR FID features from the cache for %d image(s), computed for %d (%s)",
            run_name, feature_cache.hits, feature_cache.misses, feature_cache.root,
        )  # fmt: skip
    info_doc = {
        **ident,
        "metrics": list(scorer.metrics),
        "fid": {
            "protocol": ev.fid_protocol,
            "patch": ev.fid_patch,
            "patches_per_image": ev.fid_patches_per_image,
            "bootstrap": ev.fid_bootstrap,
        },
        "notes": metric_notes(
            scorer.metrics, ev.fid_patch, ev.fid_patches_per_image, ev.fid_protocol
        ),
        "unavailable": dict(scorer.unavailable),
        "sets": sets_info,
    }
    folder = base / layout.metrics_dir(run_name)
    write_text(folder / layout.PER_IMAGE_CSV, per_image.getvalue())
    write_text(folder / layout.FID_BOOTSTRAP_CSV, boot.getvalue())
    write_text(
        folder / layout.METRICS_INFO_JSON, json.dumps(info_doc, indent=2, allow_nan=False) + "\n"
    )
    write_text(folder / layout.METRICS_JSON, json.dumps(numbers, indent=2, allow_nan=False) + "\n")
    return numbers


# --------------------------------------------------------------------------------------------
# reading a run's results back (summarize)


@dataclass
class RunResults:
    """What ``sgsr evaluate`` wrote for one run."""

    name: str
    folder: Path
    info: dict[str, Any]
    numbers: dict[str, Any]
    per_image: dict[tuple[str, str], dict[str, float | None]]
    fid_boot: dict[str, np.ndarray] = field(default_factory=dict)

    @property
    def unavailable(self) -> dict[str, str]:
        return dict(self.info.get("unavailable") or {})

    def value(self, set_name: str, metric: str) -> float | None:
        """The set's value: a float (inf = identical, nan = undefined) or None (unavailable)."""
        entry = self.numbers.get(set_name)
        if not isinstance(entry, dict):
            raise ValueError(
                f"{self.folder / layout.METRICS_JSON}: no set {set_name!r}; rerun sgsr evaluate "
                f"--run {self.name}"
            )
        v = entry.get(metric)
        if v is not None:
            return float(v)
        nonfinite = self.info.get("sets", {}).get(set_name, {}).get("nonfinite", {})
        if metric in nonfinite:
            return float(nonfinite[metric]["value"])
        if metric in self.unavailable:
            return None
        raise ValueError(
            f"{self.folder / layout.METRICS_JSON}: {set_name}.{metric} is null and "
            f"{layout.METRICS_INFO_JSON} gives no reason (not evaluated with this metric?); "
            f"rerun sgsr evaluate --run {self.name}"
        )

    def why(self, set_name: str, metric: str) -> str:
        nonfinite = self.info.get("sets", {}).get(set_name, {}).get("nonfinite", {})
        return str(nonfinite.get(metric, {}).get("why", ""))

    def fid_plan(self, set_name: str) -> str | None:
        return self.info.get("sets", {}).get(set_name, {}).get("fid", {}).get("plan_sha256")


def _read_json(path: Path, name: str) -> dict:
    try:
        doc = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise ValueError(
            f"{path}: not valid JSON ({exc}); rerun sgsr evaluate --run {name}"
        ) from exc
    if not isinstance(doc, dict):
        raise ValueError(f"{path}: expected a JSON object; rerun sgsr evaluate --run {name}")
    return doc


def _float_cell(text: str | None) -> float | None:
    """CSV cell -> float ('' = unavailable -> None; 'inf', 'nan' kept)."""
    return None if text in ("", None) else float(text)


def read_per_image(path: Path) -> dict[tuple[str, str], dict[str, float | None]]:
    """{(set, image): {metric: float or None}} from a per_image.csv."""
    with open(path, newline="") as fh:
        rows = list(csv.DictReader(fh))
    try:
        return {
            (row["set"], row["image"]): {
                k: _float_cell(v) for k, v in row.items() if k not in PER_IMAGE_KEYS
            }
            for row in rows
        }
    except (KeyError, TypeError, ValueError) as exc:
        raise ValueError(f"{path}: unreadable ({exc}); rerun sgsr evaluate") from exc


def read_fid_bootstrap(path: Path) -> dict[str, np.ndarray]:
    """{set: FID of each resample, in resample order} from a fid_bootstrap.csv."""
    out: dict[str, list[tuple[int, float]]] = {}
    with open(path, newline="") as fh:
        try:
            for row in csv.DictReader(fh):
                out.setdefault(row["set"], []).append((int(row["resample"]), float(row["fid"])))
        except (KeyError, TypeError, ValueError) as exc:
            raise ValueError(f"{path}: unreadable ({exc}); rerun sgsr evaluate") from exc
    return {k: np.array([v for _, v in sorted(rows)]) for k, rows in out.items()}


def load_run(base: Path, name: str) -> RunResults:
    folder = base / layout.metrics_dir(name)
    numbers = _read_json(folder / layout.METRICS_JSON, name)
    info = _read_json(folder / layout.METRICS_INFO_JSON, name)
    if "sets" in numbers or "unavailable" in numbers:
        raise ValueError(
            f"{folder / layout.METRICS_JSON} is in the old format (reasons inside metrics.json); "
            f"rerun sgsr evaluate --run {name} (or dvc repro)"
        )
    return RunResults(
        name=name,
        folder=folder,
        info=info,
        numbers=numbers,
        per_image=read_per_image(folder / layout.PER_IMAGE_CSV),
        fid_boot=read_fid_bootstrap(folder / layout.FID_BOOTSTRAP_CSV),
    )
