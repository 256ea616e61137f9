"""What the report's notebooks read: the pipeline's tables (summary.csv, summary_seeds.csv,
paired.csv, per-image metrics), run cards, the prepared test images, and which pair of runs and
which images to show.

Shared, so that a notebook run by hand (``papermill notebooks/04_results.ipynb out.ipynb``)
finds its inputs by the same rules as the pipeline, and the notebooks stay short. Paths come
from `sgsr.layout`, run names and the pairing rule from `sgsr.runs`; nothing here draws
(`sgsr.plotting`) or executes notebooks (`sgsr.report`).
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from sgsr import layout
from sgsr.metric_registry import LOWER_IS_BETTER
from sgsr.runs import is_bicubic, is_run_name, pair_names, parse_run

# --------------------------------------------------------------------------------------------
# Runs and the pair to show (names and the pairing rule: sgsr.runs)


def discover_runs(
    results_dir: str | os.PathLike[str] = layout.RESULTS,
    scale: int = 4,
    replicates: bool = False,
) -> list[str]:
    """Runs at ``scale`` that have SR images or metrics under ``results_dir``, bicubic first;
    replicate-seed runs (``...-s<seed>``) only with ``replicates=True`` (the per-run figures
    show each configuration once; the seed figure reads summary.csv)."""
    results_dir = Path(results_dir)
    found: set[str] = set()

    def wanted(name: str) -> bool:
        if not is_run_name(name):
            return False
        info = parse_run(name)
        return info["scale"] == scale and (replicates or info["seed"] is None)

    for folder in (layout.sr_root(results_dir), layout.metrics_root(results_dir)):
        if folder.is_dir():
            found.update(p.name for p in folder.iterdir() if p.is_dir() and wanted(p.name))
    return sorted(found, key=lambda r: (not is_bicubic(r), r))


def pick_pair(
    names: Sequence[str],
    results_dir: str | os.PathLike[str] = layout.RESULTS,
    scale: int = 4,
    baseline: str | None = None,
    candidate: str | None = None,
) -> tuple[str | None, str | None]:
    """The (baseline, candidate) pair the figures compare.

    Explicit names win; else the first pair ``summarize`` wrote to ``paired.csv`` at this
    scale; else (no paired.csv: a notebook run by hand) the first pair that the pairing rule
    (`sgsr.runs.pair_names`) finds among ``names`` with ``l1`` as the baseline loss. Returns
    None for a side that cannot be found (the notebooks say so and skip the figure).
    """
    if baseline and candidate:
        return baseline, candidate
    paired = read_paired(results_dir)
    if paired is not None and not paired.empty:
        rows = paired[paired["scale"] == scale]
        if baseline:
            rows = rows[rows["baseline"] == baseline]
        if candidate:
            rows = rows[rows["candidate"] == candidate]
        if not rows.empty:
            return str(rows["baseline"].iloc[0]), str(rows["candidate"].iloc[0])
    for base, cand in pair_names(names, "l1", scale):
        if baseline in (None, base) and candidate in (None, cand):
            return base, cand
    return baseline, candidate


def read_run_card(models_dir: str | os.PathLike[str], run: str) -> dict[str, Any] | None:
    """``models/<run>/run.json`` as a dict, or None when the run has not been trained."""
    path = layout.run_card(run, models_dir)
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise ValueError(f"{path}: not valid JSON ({exc}); rerun `sgsr train --run {run}`") from exc


def card_loss_spec(card: Mapping[str, Any] | None) -> Mapping[str, Any] | None:
    """The loss spec a run card records (``loss_spec``, as `sgsr train` writes it), or None."""
    spec = card.get("loss_spec") if isinstance(card, Mapping) else None
    return spec if isinstance(spec, Mapping) else None


# --------------------------------------------------------------------------------------------
# Readers


def read_csv_if_present(path: str | os.PathLike[str]) -> pd.DataFrame | None:
    """A CSV as a DataFrame, or None when the file is absent (an empty file is an error)."""
    path = Path(path)
    if not path.is_file():
        return None
    try:
        return pd.read_csv(path)
    except pd.errors.EmptyDataError as exc:
        raise ValueError(f"{path} is empty; rerun the stage that writes it") from exc


def _require_columns(df: pd.DataFrame, columns: Iterable[str], path: Path) -> pd.DataFrame:
    missing = [c for c in columns if c not in df.columns]
    if missing:
        raise ValueError(
            f"{path}: missing column(s) {', '.join(missing)} (has {', '.join(df.columns)}); "
            "it was written by another version of sgsr: rerun `sgsr summarize`/`sgsr evaluate`"
        )
    return df


def read_summary(results_dir: str | os.PathLike[str] = layout.RESULTS) -> pd.DataFrame | None:
    path = Path(results_dir) / layout.SUMMARY_CSV.name
    df = read_csv_if_present(path)
    return None if df is None else _require_columns(df, ("run", "scale", "set"), path)


def read_paired(results_dir: str | os.PathLike[str] = layout.RESULTS) -> pd.DataFrame | None:
    path = Path(results_dir) / layout.PAIRED_CSV.name
    df = read_csv_if_present(path)
    cols = ("set", "scale", "baseline", "candidate", "metric", "mean_diff", "ci_low", "ci_high")
    return None if df is None else _require_columns(df, cols, path)


def read_seeds(results_dir: str | os.PathLike[str] = layout.RESULTS) -> pd.DataFrame | None:
    """``summary_seeds.csv``: per configuration x set x metric, the spread over seeds."""
    path = Path(results_dir) / layout.SEEDS_CSV.name
    df = read_csv_if_present(path)
    cols = ("model", "loss", "scale", "set", "metric", "n_seeds", "mean", "sd")
    return None if df is None else _require_columns(df, cols, path)


def metric_columns(df: pd.DataFrame) -> list[str]:
    """The numeric metric columns of a summary or per-image table, in file order."""
    skip = {"run", "model", "loss", "scale", "seed", "set", "image", "n_images", "n", "notes"}
    return [c for c in df.columns if c not in skip and pd.api.types.is_numeric_dtype(df[c])]


def compact_table(
    df: pd.DataFrame, context: Sequence[str] = ()
) -> tuple[pd.DataFrame, dict[str, Any]]:
    """``df`` without its empty columns (all NaN or blank, e.g. the seed columns with one
    seed) and without the `context` columns that hold one value in every row, which are
    returned instead ({column: value}) for a sentence above the table: a report table must fit
    the page."""
    blank = [c for c in df.columns if df[c].replace("", np.nan).isna().all()]
    constant = {
        c: df[c].iloc[0]
        for c in context
        if c in df.columns and c not in blank and df[c].nunique(dropna=False) == 1
    }
    return df.drop(columns=[*blank, *constant]), constant


def compact_spec(value: Any) -> str:
    """A loss spec or model kwargs in full on one line, without JSON's quotes
    (``{l1: 1.0, sgl: {weight: 0.1, operator: laplacian}}``): the thing that tells runs apart."""
    if not isinstance(value, Mapping | list):
        return str(value)
    return json.dumps(value, separators=(", ", ": ")).replace('"', "")


def describe_patch_store(meta: Mapping[str, Any]) -> str:
    """What the training patch store holds, in a sentence, from its ``meta.json``; file names,
    dtype and layout are for the loader, not for a reader."""
    count, size, scale = meta.get("count"), meta.get("patch_size"), meta.get("scale")
    lr_size = meta.get("lr_patch_size") or (size // scale if size and scale else None)
    text = f"{count} HR patches of {size}x{size} px"
    if lr_size:
        text += f" (LR {lr_size}x{lr_size} px at x{scale})"
    if meta.get("stride"):
        text += f", cut every {meta['stride']} px"
    sources = meta.get("sources")
    if isinstance(sources, list) and sources:
        names = [str(s.get("file", s)) if isinstance(s, Mapping) else str(s) for s in sources]
        shown = ", ".join(names[:4]) + (", ..." if len(names) > 4 else "")
        text += f", from {len(names)} training image(s) ({shown})"
    left_out = len(meta.get("skipped_small") or []) + len(meta.get("skipped_bad") or [])
    if left_out:
        text += f"; {left_out} image(s) left out (too small or unreadable)"
    return text + "."


def read_per_image(
    results_dir: str | os.PathLike[str], runs: Sequence[str]
) -> tuple[pd.DataFrame, list[str]]:
    """Per-image metrics of ``runs`` stacked with a ``run`` column, and the runs that had none."""
    frames, missing = [], []
    for run in runs:
        path = layout.metrics_dir(run, results_dir) / layout.PER_IMAGE_CSV
        df = read_csv_if_present(path)
        if df is None:
            missing.append(run)
            continue
        _require_columns(df, ("set", "image"), path)
        df = df.assign(run=run, image=df["image"].astype(str).map(lambda s: Path(s).stem))
        frames.append(df)
    if not frames:
        return pd.DataFrame(columns=["run", "set", "image"]), missing
    return pd.concat(frames, ignore_index=True), missing


def unavailable_metrics(results_dir: str | os.PathLike[str], runs: Sequence[str]) -> dict[str, str]:
    """{metric: why} that evaluate recorded as unavailable (``metrics_info.json``
    ``unavailable``), e.g. LPIPS without its AlexNet weights offline; the first reason found
    per metric."""
    out: dict[str, str] = {}
    for run in runs:
        path = layout.metrics_dir(run, results_dir) / layout.METRICS_INFO_JSON
        if not path.is_file():
            continue
        try:
            doc = json.loads(path.read_text())
        except json.JSONDecodeError as exc:
            raise ValueError(f"{path}: not valid JSON ({exc}); rerun `sgsr evaluate`") from exc
        for metric, why in (doc.get("unavailable") or {}).items():
            out.setdefault(metric, str(why))
    return out


def rank_images(
    per_image: pd.DataFrame, baseline: str, candidate: str, metric: str = "psnr"
) -> pd.DataFrame:
    """Test images sorted by |candidate - baseline| in ``metric``, largest first.

    Columns: set, image, baseline, candidate, diff. Empty when either run has no values.
    """
    cols = ["set", "image", "baseline", "candidate", "diff"]
    if per_image.empty or metric not in per_image.columns:
        return pd.DataFrame(columns=cols)
    keyed = per_image.set_index(["set", "image"])
    a = keyed[per_image["run"].to_numpy() == baseline][metric]
    b = keyed[per_image["run"].to_numpy() == candidate][metric]
    both = pd.concat({"baseline": a, "candidate": b}, axis=1, join="inner").dropna()
    both = both[both.map(math.isfinite).all(axis=1)]
    both["diff"] = both["candidate"] - both["baseline"]
    both = both.reindex(both["diff"].abs().sort_values(ascending=False).index)
    return both.reset_index()[cols]


# --------------------------------------------------------------------------------------------
# Images on disk


def test_sets(data_dir: str | os.PathLike[str], scale: int) -> list[str]:
    """Prepared sets at ``scale`` that hold ``hr/`` images (the validation split excluded)."""
    base = layout.prepared_scale(scale, data_dir)
    if not base.is_dir():
        return []
    return sorted(
        p.name for p in base.iterdir() if (p / "hr").is_dir() and p.name != layout.VAL_SET
    )


def list_pairs(
    data_dir: str | os.PathLike[str], scale: int, sets: Sequence[str] | None = None
) -> list[tuple[str, str]]:
    """(set, stem) of every prepared HR image of ``sets`` (default: all test sets), sorted."""
    # imaging imports torch: the table readers of the notebooks do without it
    from sgsr.imaging import list_images

    out = []
    for name in sets if sets is not None else test_sets(data_dir, scale):
        folder = layout.prepared_set(scale, name, data_dir) / "hr"
        if folder.is_dir():
            out.extend((name, p.stem) for p in list_images(folder))
    return out


def select_images(
    pairs: Sequence[tuple[str, str]],
    per_image: pd.DataFrame,
    baseline: str,
    candidate: str,
    zoom_image: str | None = None,
    n: int = 3,
    metric: str = "psnr",
    results_dir: str | os.PathLike[str] | None = None,
    max_scan: int = 50,
) -> tuple[list[tuple[str, str]], str]:
    """The test images to zoom into, and a sentence saying how they were chosen.

    ``zoom_image`` (``stem`` or ``set/stem``) picks one explicitly (ValueError if unknown);
    else the ``n`` with the largest |candidate - baseline| in ``metric``; without per-image
    metrics and given ``results_dir``, the largest mean |SR_candidate - SR_baseline| over at
    most ``max_scan`` images, read one pair at a time.
    """
    if zoom_image:
        want_set, _, want_stem = zoom_image.rpartition("/")
        hits = [p for p in pairs if p[1] == want_stem and want_set in ("", p[0])]
        if not hits:
            shown = ", ".join("/".join(p) for p in pairs[:10])
            raise ValueError(
                f"zoom_image {zoom_image!r} is not a prepared test image; "
                f"some that are: {shown or '(none)'} (use <stem> or <set>/<stem>)"
            )
        return hits[:1], f"`{zoom_image}`, chosen by the zoom_image parameter"
    available = set(pairs)
    ranked = rank_images(per_image, baseline, candidate, metric)
    keys = list(zip(ranked["set"], ranked["image"], strict=True))
    ranked = ranked[[k in available for k in keys]]
    if not ranked.empty:
        chosen = list(zip(ranked["set"].head(n), ranked["image"].head(n), strict=True))
        how = f"the {len(chosen)} image(s) with the largest |{candidate} - {baseline}| in {metric}"
        return chosen, how
    if results_dir is None:
        return [], f"no per-image {metric} for both runs, so no image could be ranked"
    # imaging imports torch: the table readers of the notebooks do without it
    from sgsr.imaging import read_image

    scores = []
    for set_name, stem in list(pairs)[:max_scan]:
        a = layout.sr_image(baseline, set_name, stem, results_dir)
        b = layout.sr_image(candidate, set_name, stem, results_dir)
        if a.is_file() and b.is_file():
            diff = read_image(a).astype(np.int16) - read_image(b).astype(np.int16)
            scores.append((float(np.abs(diff).mean()), set_name, stem))
    scores.sort(reverse=True)
    chosen = [(s, i) for _, s, i in scores[:n]]
    how = (
        f"the {len(chosen)} image(s) where the two SR outputs differ most in mean absolute "
        f"pixel value (no per-image {metric} available)"
    )
    return chosen, how if chosen else "no image has SR outputs from both runs"


# --------------------------------------------------------------------------------------------
# Paired differences (paired.csv): which way is better, and the verdict on each


#: Boolean paired.csv columns that mark an effect larger than the spread between seeds (written
#: when ``experiment.replicates`` has several seeds); the first one present is used.
SEED_FLAG_COLUMNS: tuple[str, ...] = ("exceeds_seed_spread",)


def higher_is_better(df: pd.DataFrame) -> pd.Series:
    """``higher_is_better`` from paired.csv, else the metric's known direction."""
    if "higher_is_better" in df.columns:
        return df["higher_is_better"].astype(str).str.lower().isin(("true", "1", "1.0"))
    return ~df["metric"].isin(LOWER_IS_BETTER)


def seed_flag(df: pd.DataFrame) -> pd.Series | None:
    """The effect-beyond-seed-spread flag of each row (a SEED_FLAG_COLUMNS column), or None."""
    for col in SEED_FLAG_COLUMNS:
        if col in df.columns:
            return df[col].astype(str).str.lower().isin(("true", "1", "1.0"))
    return None


def evidence(df: pd.DataFrame) -> pd.Series:
    """Signed strength of each paired difference: the improvement (the difference, negated for
    lower-is-better metrics) over the CI's half width. Beyond +-1 the CI excludes zero; the
    same number means the same thing for dB and for SSIM units."""
    gain = df["mean_diff"].astype(float) * np.where(higher_is_better(df), 1.0, -1.0)
    half = (df["ci_high"].astype(float) - df["ci_low"].astype(float)) / 2
    with np.errstate(divide="ignore", invalid="ignore"):
        out = np.where(half > 0, gain / half, np.sign(gain) * np.inf)
    return pd.Series(np.where(gain == 0, 0.0, out), index=df.index)


def verdicts(paired: pd.DataFrame) -> pd.DataFrame:
    """The forest plot as a table: set, metric, mean_diff, CI, and better/worse/inconclusive."""
    df = paired.copy()
    sign = np.where(higher_is_better(df), 1.0, -1.0)
    lo, hi = df["ci_low"] * sign, df["ci_high"] * sign
    df["verdict"] = np.select(
        [np.minimum(lo, hi) > 0, np.maximum(lo, hi) < 0], ["better", "worse"], "inconclusive"
    )
    keep = [
        c
        for c in (
            "set",
            "scale",
            "baseline",
            "candidate",
            "metric",
            "mean_diff",
            "ci_low",
            "ci_high",
            "n",
            "verdict",
            "n_seeds",
            "seed_ci_low",
            "seed_ci_high",
            "baseline_seed_range",
            "effect",
        )
        if c in df.columns
    ]
    return df[keep]
