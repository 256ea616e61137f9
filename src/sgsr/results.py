"""The end of a pipeline run in the terminal: ``sgsr results`` prints run x set with PSNR, SSIM,
LPIPS (when it was computed) and the PSNR gain over the bicubic baseline of the same scale,
read from ``results/summary.csv``, and says where the report is.
"""

from __future__ import annotations

import math
import os
from pathlib import Path

import pandas as pd

from sgsr import layout
from sgsr.metric_registry import REGISTRY
from sgsr.runs import is_bicubic

#: The metric columns of summary.csv shown, in table order (header and format from the metric
#: registry); a column absent or all-empty is left out.
SHOWN: tuple[str, ...] = ("psnr", "ssim", "lpips", "dists")
#: (column in summary.csv, header, format) in table order.
COLUMNS: tuple[tuple[str, str, str], ...] = tuple(
    (m, f"{REGISTRY[m].label} {REGISTRY[m].unit}".strip(), f"{{:{REGISTRY[m].fmt}}}") for m in SHOWN
)


def gains_over_bicubic(summary: pd.DataFrame, metric: str = "psnr") -> pd.Series:
    """Per row: ``metric`` minus that of ``bicubic-x<scale>`` on the same set (NaN for the
    bicubic rows themselves and where no bicubic row exists)."""
    bicubic = summary[summary["run"].astype(str).map(is_bicubic)]
    ref = bicubic.set_index(["scale", "set"])[metric]
    keys = pd.MultiIndex.from_frame(summary[["scale", "set"]])
    base = pd.Series(ref.reindex(keys).to_numpy(), index=summary.index)
    gain = pd.to_numeric(summary[metric], errors="coerce") - base
    return gain.where(~summary["run"].isin(bicubic["run"]))


def _collapse_replicates(summary: pd.DataFrame) -> pd.DataFrame:
    """One row per (run, scale, set): seed replicates (a ``seed`` column) are averaged."""
    keys = ["run", "scale", "set"]
    if not summary.duplicated(keys).any():
        return summary.reset_index(drop=True)
    numeric = [c for c in summary.columns if c not in keys and c != "seed"]
    numeric = [c for c in numeric if pd.api.types.is_numeric_dtype(summary[c])]
    return summary.groupby(keys, sort=False, as_index=False)[numeric].mean()


def format_results(summary: pd.DataFrame) -> str:
    """A fixed-width table of the summary: run, set, the metrics of COLUMNS, gain over bicubic."""
    df = _collapse_replicates(summary)
    cols = [
        (c, head, fmt)
        for c, head, fmt in COLUMNS
        if c in df.columns and pd.to_numeric(df[c], errors="coerce").notna().any()
    ]
    header = ["run", "set", *(head for _, head, _ in cols)]
    has_gain = "psnr" in df.columns
    if has_gain:
        header.append("vs bicubic")
        gains = gains_over_bicubic(df)
    rows = []
    for i, row in df.iterrows():
        cells = [str(row["run"]), str(row["set"])]
        for c, _, fmt in cols:
            value = pd.to_numeric(pd.Series([row[c]]), errors="coerce").iloc[0]
            text = "inf" if math.isinf(value) else fmt.format(value)
            cells.append("n/a" if pd.isna(value) else text)
        if has_gain:
            g = gains.loc[i]
            cells.append("" if pd.isna(g) else f"{g:+.2f} dB")
        rows.append(cells)
    widths = [max(len(r[j]) for r in [header, *rows]) for j in range(len(header))]

    def line(cells: list[str]) -> str:
        padded = [
            c.ljust(w) if j < 2 else c.rjust(w)
            for j, (c, w) in enumerate(zip(cells, widths, strict=True))
        ]
        return "  ".join(padded).rstrip()

    lines = [line(r) for r in [header, *rows]]
    lines.insert(1, "-" * len(lines[0]))
    return "\n".join(lines)


def show(pipeline_dir: str | os.PathLike[str] = ".") -> str:
    """The text ``sgsr results`` prints: the table, which metrics were not computed, and where
    the report and the CSVs are (paths relative to the current folder)."""
    base = Path(pipeline_dir)
    path = base / layout.SUMMARY_CSV
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found: run the pipeline first (make repro)")
    try:
        summary = pd.read_csv(path)
    except pd.errors.EmptyDataError as exc:
        raise ValueError(f"{path} is empty; rerun `sgsr summarize`") from exc
    missing = [c for c in ("run", "scale", "set") if c not in summary.columns]
    if missing:
        raise ValueError(f"{path}: missing column(s) {', '.join(missing)}; rerun `sgsr summarize`")
    lines = [format_results(summary)]
    absent = [
        head
        for c, head in ((m, REGISTRY[m].label) for m in ("lpips", "fid"))
        if c in summary.columns and pd.to_numeric(summary[c], errors="coerce").isna().all()
    ]
    if absent:
        lines.append(
            f"{' and '.join(absent)} not computed (their weights were unavailable; the download "
            "stage said why)."
        )
    report = base / layout.REPORTS / "report.html"
    paired = base / layout.PAIRED_CSV
    where = [f"Tables: {path}" + (f", {paired}" if paired.is_file() else "")]
    if report.is_file():
        where.insert(0, f"Report: {report} (open it in a browser)")
    return "\n".join([*lines, "", *where])
