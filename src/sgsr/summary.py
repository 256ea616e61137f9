"""``sgsr summarize``: tables over runs, seeds and pairs of losses (docs/evaluation.md section 5).

- ``results/summary.csv``: one row per run x test set (every seed's run, and bicubic): the
  set's value of every metric, FID's bootstrap CI over images, and the reason for any
  undefined value.
- ``results/summary_seeds.csv``: one row per configuration (model, loss, scale) x set x
  metric: the per-seed values, their mean, SD, min and max.
- ``results/paired.csv``: each candidate loss against the baseline loss
  (``experiment.baseline``) with the same model, scale and seed, per set and metric: the
  per-image paired bootstrap CI (on per-image values averaged over the matched seeds), the t
  interval over seeds, the baseline's seed-to-seed spread and whether the difference exceeds
  it (`sgsr.stats.seed_effect`).

Everything is read from what ``sgsr evaluate`` wrote; nothing is recomputed from images.
"""

from __future__ import annotations

import csv
import io
import json
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from sgsr import layout
from sgsr.config import Config
from sgsr.evaluate import RUN_FILES, RunResults, load_run
from sgsr.fid import percentile_ci
from sgsr.fsutil import write_text
from sgsr.live import overlay_tables, read_live
from sgsr.metric_registry import REGISTRY
from sgsr.runs import bicubic_run, configurations, is_bicubic, pairs, parse_run
from sgsr.scoring import csv_value
from sgsr.stats import paired_bootstrap, seed_effect

SUMMARY_KEYS = ("run", "model", "loss", "scale", "seed", "set", "n_images")
FID_CI_COLUMNS = ("fid_ci_low", "fid_ci_high")
SEEDS_COLUMNS = (
    "model",
    "loss",
    "scale",
    "set",
    "metric",
    "higher_is_better",
    "n_seeds",
    "seeds",
    "runs",
    "values",
    "mean",
    "sd",
    "min",
    "max",
)
PAIRED_COLUMNS = (
    "model",
    "scale",
    "set",
    "metric",
    "higher_is_better",
    "baseline",
    "candidate",
    "n_seeds",
    "seeds",
    "n",
    "excluded",
    "baseline_mean",
    "candidate_mean",
    "mean_diff",
    "ci_low",
    "ci_high",
    "ci",
    "resamples",
    "seed_diffs",
    "seed_ci_low",
    "seed_ci_high",
    "baseline_seed_sd",
    "baseline_seed_range",
    "exceeds_seed_spread",
    "effect",
    "notes",
)


# --------------------------------------------------------------------------------------------
# the stage
# --------------------------------------------------------------------------------------------
def summary_runs(cfg: Config) -> list[str]:
    """Runs a summary covers: every bicubic-x<s> baseline, then cfg.runs in order (each
    configuration's seeds together, the primary seed first)."""
    scales = sorted({r.scale for r in cfg.runs})
    return [bicubic_run(s) for s in scales] + [r.name for r in cfg.runs]


def summarize(cfg: Config) -> tuple[Path, Path, Path]:
    """Write results/summary.csv, results/summary_seeds.csv and results/paired.csv; returns
    their paths. Every run of the experiment (every seed, and bicubic) must have been
    evaluated: a missing file is an error listing each missing file."""
    base = layout.pipeline_root(cfg)
    names = summary_runs(cfg)
    missing = [
        str(base / layout.metrics_dir(n) / f)
        for n in names
        for f in RUN_FILES
        if not (base / layout.metrics_dir(n) / f).is_file()
    ]
    if missing:
        raise FileNotFoundError(
            "summarize needs every run evaluated; missing: "
            + ", ".join(missing)
            + " (run sgsr evaluate --run <run>, or dvc repro)"
        )
    results = {n: load_run(base, n) for n in names}
    outputs = (
        (layout.SUMMARY_CSV, _summary_csv(cfg, names, results)),
        (layout.SEEDS_CSV, _seeds_csv(cfg, results)),
        (layout.PAIRED_CSV, _paired_csv(cfg, results)),
        (layout.PROFILE_METRICS, profile_metrics_json(cfg, names, results)),
        *curve_tables(base, names),
    )
    for rel, text in outputs:  # all computed before anything is written
        write_text(base / rel, text)
    return base / layout.SUMMARY_CSV, base / layout.SEEDS_CSV, base / layout.PAIRED_CSV


def metric_keys(names: Sequence[str]) -> dict[str, str]:
    """Short, unique names for runs in DVC's metric columns: the loss alone when every trained
    run has one model and scale (``l1``, ``sgl``, ``bicubic``), else with the parts that vary
    (``edsr_slim-sgl``, ``sgl-x2``), and ``-s<seed>`` for replicates. Full names if short ones
    would collide."""
    info = {n: parse_run(n) for n in names}
    models = {i["model"] for i in info.values() if not is_bicubic(i["run"])}
    scales = {i["scale"] for i in info.values()}
    keys = {}
    for name, i in info.items():
        parts = ["bicubic"] if is_bicubic(name) else [i["model"]] * (len(models) > 1) + [i["loss"]]
        parts += [f"x{i['scale']}"] * (len(scales) > 1)
        parts += [f"s{i['seed']}"] * (i["seed"] is not None)
        keys[name] = "-".join(parts)
    return keys if len(set(keys.values())) == len(keys) else {n: n for n in names}


def profile_metrics_json(cfg: Config, names: list[str], results: dict[str, RunResults]) -> str:
    """results/metrics.json: ``{run: {set: {metric: mean}}}`` for ``evaluate.dvc_metrics``
    (default: every metric), which DVC shows as ``<run>.<set>.<metric>`` columns (the set
    level left out with one test set). The per-run
    metrics.json files are not DVC metrics: their keys repeat across runs, so DVC would name
    each column by its whole file path. A value evaluate could not compute (unavailable,
    undefined or infinite) is left out, as in summary.csv; the reason is in metrics_info.json."""
    keys = metric_keys(names)
    shown = cfg.evaluate.dvc_metrics or cfg.evaluate.metrics
    one_set = len(cfg.data.test_sets) == 1
    doc: dict[str, Any] = {}
    for name in names:
        per_set = {}
        for set_name in cfg.data.test_sets:
            values = {m: results[name].value(set_name, m) for m in shown}
            per_set[set_name] = {
                m: float(v) for m, v in values.items() if v is not None and math.isfinite(v)
            }
        doc[keys[name]] = per_set[cfg.data.test_sets[0]] if one_set else per_set
    return json.dumps(doc, indent=1) + "\n"


def curve_tables(base: Path, names: Sequence[str]) -> list[tuple[Path, str]]:
    """(path, CSV text) of ``results/curves/<group>.csv`` for the runs with dvclive logs
    (bicubic has none): the files dvc.yaml's top-level plots overlay."""
    live = base / layout.live_root()
    logged = [n for n in names if (live / n).is_dir()]
    tables = overlay_tables(read_live(live, logged))
    return [(layout.CURVES / f"{g}.csv", df.to_csv(index=False)) for g, df in tables.items()]


def _cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, bool | np.bool_):
        return str(bool(value))
    if isinstance(value, int | np.integer):
        return str(int(value))
    if isinstance(value, float | np.floating):
        return csv_value(float(value))
    return str(value)


def _join(values: Sequence[Any]) -> str:
    return ";".join(_cell(v) for v in values)


def _csv(header: Sequence[str], rows: list[list[Any]]) -> str:
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(header)
    for row in rows:
        writer.writerow([_cell(v) for v in row])
    return buf.getvalue()


def _summary_csv(cfg: Config, names: list[str], results: dict[str, RunResults]) -> str:
    metrics = list(cfg.evaluate.metrics)
    with_fid = "fid" in metrics
    header = [*SUMMARY_KEYS, *metrics, *(FID_CI_COLUMNS if with_fid else ()), "notes"]
    rows = []
    for name in names:
        res = results[name]
        info = res.info
        for set_name in cfg.data.test_sets:
            values = [res.value(set_name, m) for m in metrics]
            notes = [
                f"{m} {'undefined' if math.isnan(v) else 'infinite'}: "
                + (
                    res.why(set_name, m)
                    or f"no reason recorded in {res.folder}; rerun sgsr evaluate"
                )
                for m, v in zip(metrics, values, strict=True)
                if v is not None and not math.isfinite(v)
            ]
            ci: list[float | None] = []
            if with_fid:
                boot = res.fid_boot.get(set_name)
                ci = [None, None] if boot is None else list(percentile_ci(boot, cfg.evaluate.ci))
            n_images = res.numbers.get(set_name, {}).get("n_images")
            rows.append(
                [
                    name,
                    info.get("model"),
                    info.get("loss") or "",
                    info.get("scale"),
                    info.get("seed"),
                    set_name,
                    n_images,
                    *values,
                    *ci,
                    "; ".join(notes),
                ]
            )
    return _csv(header, rows)


def _seeds_csv(cfg: Config, results: dict[str, RunResults]) -> str:
    rows = []
    for runs in configurations(cfg.runs):
        primary = runs[0]
        for set_name in cfg.data.test_sets:
            for m in cfg.evaluate.metrics:
                pairs = [(r, results[r.name].value(set_name, m)) for r in runs]
                pairs = [(r, v) for r, v in pairs if v is not None]
                if not pairs:
                    continue  # unavailable in every seed's run
                values = np.array([v for _, v in pairs])
                sd = float(values.std(ddof=1)) if len(values) > 1 else None
                rows.append(
                    [
                        primary.model,
                        primary.loss,
                        primary.scale,
                        set_name,
                        m,
                        REGISTRY[m].higher_is_better,
                        len(pairs),
                        _join([r.seed for r, _ in pairs]),
                        _join([r.name for r, _ in pairs]),
                        _join(list(values)),
                        float(values.mean()),
                        sd,
                        float(values.min()),
                        float(values.max()),
                    ]
                )
    return _csv(SEEDS_COLUMNS, rows)


def _paired_csv(cfg: Config, results: dict[str, RunResults]) -> str:
    rows: list[list[Any]] = []
    for pair in pairs(cfg.runs, cfg.baseline_loss):  # the pairing rule: sgsr.runs
        base_runs, cand_runs = pair.baseline, pair.candidate
        primary = cand_runs[0]
        base_res = [results[r.name] for r in base_runs]
        cand_res = [results[r.name] for r in cand_runs]
        _check_same_images(base_res + cand_res)
        skip: set[str] = set()
        for res in base_res + cand_res:
            skip |= set(res.unavailable)
        seeds = [r.seed for r in cand_runs]
        for set_name in cfg.data.test_sets:
            for m in cfg.evaluate.metrics:
                if m in skip:
                    continue
                if REGISTRY[m].scope == "image":
                    row = _paired_image_metric(cfg, set_name, m, base_res, cand_res)
                else:
                    row = _paired_fid(cfg, set_name, base_res, cand_res)
                if row is None:
                    continue  # FID without a value on either side: summary.csv says why
                rows.append(
                    [
                        primary.model,
                        primary.scale,
                        set_name,
                        m,
                        REGISTRY[m].higher_is_better,
                        base_runs[0].name,
                        cand_runs[0].name,
                        len(seeds),
                        _join(seeds),
                        *row.columns(),
                        *_seed_columns(row, m, cfg.evaluate.ci),
                        row.notes,
                    ]
                )
    return _csv(PAIRED_COLUMNS, rows)


def _check_same_images(runs: list[RunResults]) -> None:
    first = runs[0]
    for other in runs[1:]:
        if set(other.per_image) != set(first.per_image):
            only = sorted(set(other.per_image) ^ set(first.per_image))[:3]
            raise ValueError(
                f"{other.folder / layout.PER_IMAGE_CSV} and {first.folder / layout.PER_IMAGE_CSV} "
                f"cover different images (e.g. {only}); re-run infer and evaluate for both"
            )


@dataclass
class _PairStats:
    """The per-image part of a paired row, plus what the seed columns need."""

    n: int
    excluded: int
    baseline_mean: float | None
    candidate_mean: float | None
    mean_diff: float | None
    ci_low: float | None
    ci_high: float | None
    ci: float
    resamples: int
    seed_diffs: np.ndarray
    baseline_seed_values: np.ndarray
    #: Why a statistic is left empty (undefined), e.g. no image with a finite value.
    notes: str = ""

    def columns(self) -> list[Any]:
        """The paired.csv columns from ``n`` to ``seed_diffs``."""
        return [
            self.n,
            self.excluded,
            self.baseline_mean,
            self.candidate_mean,
            self.mean_diff,
            self.ci_low,
            self.ci_high,
            self.ci,
            self.resamples,
            _join(list(self.seed_diffs)),
        ]


def _paired_image_metric(
    cfg: Config, set_name: str, metric: str, base: list[RunResults], cand: list[RunResults]
) -> _PairStats | None:
    """Images with a finite value in every matched run; per-image values averaged over seeds
    for the bootstrap, per-seed means over the same images for the seed statistics."""
    keys = sorted(k for k in base[0].per_image if k[0] == set_name)

    def matrix(runs: list[RunResults]) -> np.ndarray:
        return np.array(
            [[_nan_if_none(r.per_image[k].get(metric)) for k in keys] for r in runs]
        ).reshape(len(runs), len(keys))

    b, c = matrix(base), matrix(cand)
    ok = np.all(np.isfinite(b), axis=0) & np.all(np.isfinite(c), axis=0)
    n = int(ok.sum())
    if n == 0:  # the row stays, with its statistics empty and the reason
        bad_b, bad_c = (
            int((~np.all(np.isfinite(b), axis=0)).sum()),
            int((~np.all(np.isfinite(c), axis=0)).sum()),
        )
        nan = np.full(len(base), math.nan)
        return _PairStats(
            n=0, excluded=len(keys), baseline_mean=None, candidate_mean=None,
            mean_diff=None, ci_low=None, ci_high=None, ci=cfg.evaluate.ci, resamples=0,
            seed_diffs=nan, baseline_seed_values=nan,
            notes=f"no image of {len(keys)} has a finite {metric} in every matched run "
            f"(non-finite: baseline {bad_b}, candidate {bad_c}; summary.csv says why), so "
            "no difference is defined",
        )  # fmt: skip
    b_img, c_img = b[:, ok].mean(axis=0), c[:, ok].mean(axis=0)
    notes = ""
    if n == 1:  # one difference: every resample is that value, a zero-width interval that
        # would claim certainty; the interval is undefined
        mean, low, high, resamples = float((c_img - b_img)[0]), None, None, 0
        notes = "one image: no confidence interval over images"
    else:
        mean, low, high = paired_bootstrap(
            c_img - b_img, cfg.evaluate.bootstrap, cfg.evaluate.ci, cfg.seed
        )
        resamples = cfg.evaluate.bootstrap
    b_seed, c_seed = b[:, ok].mean(axis=1), c[:, ok].mean(axis=1)
    return _PairStats(
        n=n,
        excluded=len(keys) - n,
        baseline_mean=float(b_img.mean()),
        candidate_mean=float(c_img.mean()),
        mean_diff=mean,
        ci_low=low,
        ci_high=high,
        ci=cfg.evaluate.ci,
        resamples=resamples,
        seed_diffs=c_seed - b_seed,
        baseline_seed_values=b_seed,
        notes=notes,
    )


def _paired_fid(
    cfg: Config, set_name: str, base: list[RunResults], cand: list[RunResults]
) -> _PairStats | None:
    """Per seed FID(candidate) - FID(baseline); the CI from the same image resamples of every
    run (differences averaged over seeds, resample by resample)."""
    b = np.array([r.value(set_name, "fid") for r in base], np.float64)
    c = np.array([r.value(set_name, "fid") for r in cand], np.float64)
    if not (np.all(np.isfinite(b)) and np.all(np.isfinite(c))):
        return None
    runs = base + cand
    plans = {r.fid_plan(set_name) for r in runs}
    boots = [r.fid_boot.get(set_name) for r in runs]
    low = high = None
    resamples = 0
    if None not in plans and all(x is not None and len(x) for x in boots):
        if len(plans) > 1 or len({len(x) for x in boots}) > 1:
            raise ValueError(
                f"FID bootstrap of {set_name!r} used different resampling plans in "
                + ", ".join(str(r.folder / layout.FID_BOOTSTRAP_CSV) for r in runs)
                + "; rerun sgsr evaluate for these runs with the same evaluate.fid_bootstrap"
            )
        k = len(base)
        diffs = np.mean([boots[k + i] - boots[i] for i in range(k)], axis=0)
        low, high = percentile_ci(diffs, cfg.evaluate.ci)
        resamples = len(diffs)
    n_images = int(base[0].numbers.get(set_name, {}).get("n_images") or 0)
    return _PairStats(
        n=n_images,
        excluded=0,
        baseline_mean=float(b.mean()),
        candidate_mean=float(c.mean()),
        mean_diff=float((c - b).mean()),
        ci_low=low,
        ci_high=high,
        ci=cfg.evaluate.ci,
        resamples=resamples,
        seed_diffs=c - b,
        baseline_seed_values=b,
    )


def _seed_columns(stats: _PairStats, metric: str, ci: float) -> list[Any]:
    """seed_ci_low, seed_ci_high, baseline_seed_sd, baseline_seed_range, exceeds_seed_spread,
    effect: all empty (undefined) with one seed."""
    eff = seed_effect(
        stats.seed_diffs, stats.baseline_seed_values, REGISTRY[metric].higher_is_better, ci
    )
    if eff is None:
        return [None] * 6
    return [
        eff.ci_low,
        eff.ci_high,
        eff.baseline_sd,
        eff.baseline_range,
        eff.exceeds_seed_spread,
        eff.effect,
    ]


def _nan_if_none(value: float | None) -> float:
    return math.nan if value is None else float(value)
