"""Result figures: training curves, per-image metrics per run, per-seed set means, and the
paired differences against the baseline (heatmap and forest plot). Which way a metric is better
and each difference's verdict come from `sgsr.readers`."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import seaborn as sns
from matplotlib.colors import LinearSegmentedColormap
from matplotlib.figure import Figure
from matplotlib.ticker import FuncFormatter, LogLocator, MaxNLocator, NullFormatter

from sgsr.metric_registry import LOWER_IS_BETTER
from sgsr.plotting.base import FIGURE_SEED, fixed_jitter
from sgsr.readers import evidence, higher_is_better, seed_flag, verdicts
from sgsr.runs import is_bicubic, run_name


def curves_figure(
    df: pd.DataFrame,
    title: str,
    palette: Mapping[str, object],
    log_y: bool = False,
    smooth: int = 1,
) -> Figure:
    """One panel per dvclive series (``metric`` column), one line per run; ``smooth`` > 1
    draws a centred rolling mean over that many logged points."""
    df = df.sort_values(["run", "metric", "step"])
    if smooth > 1:
        df = df.assign(
            value=df.groupby(["run", "metric"])["value"].transform(
                lambda s: s.rolling(smooth, min_periods=1, center=True).mean()
            )
        )
    n = df["metric"].nunique()
    g = sns.relplot(
        data=df,
        x="step",
        y="value",
        hue="run",
        col="metric",
        kind="line",
        col_wrap=min(3, n),
        height=3.2,
        aspect=1.3,
        palette=palette,
        facet_kws={"sharey": False, "sharex": True},
        seed=FIGURE_SEED,  # the CI band where a step was logged twice (a resumed run)
        marker="o" if df.groupby(["run", "metric"]).size().max() <= 10 else None,
    )
    g.set_titles("{col_name}")
    log_y = log_y and bool((df["value"] > 0).all())
    for ax in g.axes.flat:
        ax.tick_params(labelleft=True, labelbottom=True)  # own y range: label every panel
        ax.set_xlabel("step")
        ax.set_ylabel("value (log scale)" if log_y else "value")
        if log_y:
            ax.set_yscale("log")
            readable_log_ticks(ax)
        else:
            ax.yaxis.set_major_locator(MaxNLocator(5))
    g.figure.suptitle(title, y=1.03)
    return g.figure


def readable_log_ticks(ax: plt.Axes, at_least: int = 3, at_most: int = 6) -> None:
    """Labelled ticks on a log y axis however narrow its range: matplotlib labels only powers
    of ten, so a loss that falls from 0.05 to 0.02 (or a constant learning rate) showed no
    label, or one. Tries 1-2-5 steps, then every integer mantissa, then evenly spaced values;
    keeps at most `at_most`, each label with the digits its value needs."""
    lo, hi = ax.get_ylim()
    ticks: list[float] = []
    for subs in ((1.0, 2.0, 5.0), tuple(range(1, 10))):
        ticks = [t for t in LogLocator(base=10, subs=subs).tick_values(lo, hi) if lo <= t <= hi]
        if len(ticks) >= at_least:
            break
    if len(ticks) < at_least and lo > 0:
        ticks = list(np.geomspace(lo, hi, at_least))
    if len(ticks) > at_most:
        ticks = ticks[:: -(-len(ticks) // at_most)]
    exact = [d for d in range(2, 7) if all(np.isclose(float(f"{t:.{d}g}"), t) for t in ticks)]
    digits = exact[0] if exact else 7
    ax.yaxis.set_major_locator(plt.FixedLocator(ticks))
    ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:.{digits}g}"))
    ax.yaxis.set_minor_formatter(NullFormatter())


def metrics_figure(
    per_image: pd.DataFrame,
    metrics: Sequence[str],
    order: Sequence[str],
    palette: Mapping[str, object],
) -> Figure:
    """Per-image values of each metric per run (dots) with the mean and its 95 % CI."""
    long = per_image.melt(
        id_vars=["run", "set", "image"],
        value_vars=list(metrics),
        var_name="metric",
        value_name="value",
    ).dropna(subset=["value"])
    long = long[np.isfinite(long["value"].astype(float))]
    g = sns.FacetGrid(
        long,
        col="metric",
        col_wrap=min(3, len(metrics)),
        sharey=False,
        height=3.3,
        aspect=1.2,
        col_order=list(metrics),
    )
    with fixed_jitter():
        g.map_dataframe(
            sns.stripplot,
            x="run",
            y="value",
            hue="run",
            order=order,
            hue_order=order,
            palette=palette,
            alpha=0.45,
            jitter=0.2,
        )
    g.map_dataframe(
        sns.pointplot,
        x="run",
        y="value",
        order=order,
        color="black",
        errorbar=("ci", 95),
        seed=FIGURE_SEED,
        linestyle="none",
        markers="D",
    )
    for ax, metric in zip(g.axes.flat, metrics, strict=False):
        arrow = "lower is better" if metric in LOWER_IS_BETTER else "higher is better"
        ax.set_title(f"{metric} ({arrow})", fontsize=10)
        ax.tick_params(axis="x", rotation=25)
        ax.set_xlabel("")
    g.figure.tight_layout()
    return g.figure


#: Verdict colours of the forest plot (colour-blind safe blue/orange, grey for no call).
VERDICT_COLORS: dict[str, str] = {
    "better": "#2166ac",
    "worse": "#d6604d",
    "inconclusive": "#7f7f7f",
}


def short_labels(names: Sequence[str]) -> dict[str, str]:
    """Run names without the '-'-separated parts every one of them shares at the start and the
    end (``edsr_slim-sgl_lap-x4``, ``edsr_slim-grad1-x4`` -> ``sgl_lap``, ``grad1``)."""
    parts = [str(n).split("-") for n in names]
    if len(set(names)) < 2:
        return {n: str(n) for n in names}
    lead = 0
    while all(len(p) > lead + 1 and p[lead] == parts[0][lead] for p in parts):
        lead += 1
    trail = 0
    while all(len(p) > lead + trail + 1 and p[-1 - trail] == parts[0][-1 - trail] for p in parts):
        trail += 1
    return {n: "-".join(p[lead : len(p) - trail]) for n, p in zip(names, parts, strict=True)}


def _pair_labels(df: pd.DataFrame) -> tuple[pd.Series, str]:
    """(row label per row, what the labels are measured against) for the paired figures."""
    bases = list(dict.fromkeys(df["baseline"].astype(str)))
    cands = list(dict.fromkeys(df["candidate"].astype(str)))
    if len(bases) == 1:
        short = short_labels(cands)
        return df["candidate"].astype(str).map(short), f"minus {bases[0]}"
    pairs = df["candidate"].astype(str) + " - " + df["baseline"].astype(str)
    return pairs, "candidate minus baseline"


def _diff_format(values: pd.Series) -> str:
    """Two significant digits of the metric's largest difference (PSNR 0.07 dB -> +0.074,
    SSIM 0.003 -> +0.0032, MS-SSIM 0.0009 -> +0.00090)."""
    finite = values[np.isfinite(values.astype(float))].abs()
    top = float(finite.max()) if len(finite) else 0.0
    digits = 2 if top <= 0 else max(2, int(np.ceil(-np.log10(top))) + 1)
    return f"{{:+.{min(digits, 6)}f}}"


def paired_heatmap(paired: pd.DataFrame, strong: float = 2.0) -> Figure:
    """Results at a glance: a column per candidate, a row per (metric, test set), each cell
    labelled with the mean candidate - baseline difference.

    Colour: blue where the candidate is better, red where it is worse, whichever way the metric
    points (``higher_is_better``); the shade is :func:`evidence` (difference over CI half
    width), full at ``strong``, so a pale cell is an effect the data cannot tell from zero
    whatever its units. ``*``: the per-image CI excludes zero; ``†``: the difference also
    exceeds the spread between seeds (when paired.csv has a column of SEED_FLAG_COLUMNS).
    Candidates run across so the figure stays narrow enough for a README.
    """
    df = verdicts(paired).reset_index(drop=True)
    flags = seed_flag(paired.reset_index(drop=True))
    df["seed_flag"] = flags if flags is not None else False
    df["cand"], against = _pair_labels(df)
    df["shade"] = np.clip(evidence(df) / strong, -1, 1)
    metrics = list(dict.fromkeys(df["metric"]))
    sets = list(dict.fromkeys(df["set"].astype(str)))
    cands = list(dict.fromkeys(df["cand"]))
    rows = [(m, s) for m in metrics for s in sets]
    shade = np.full((len(rows), len(cands)), np.nan)
    text = [["" for _ in cands] for _ in rows]
    for m in metrics:
        sub = df[df["metric"] == m]
        fmt = _diff_format(sub["mean_diff"])
        for _, r in sub.iterrows():
            i, j = rows.index((m, str(r["set"]))), cands.index(r["cand"])
            if not np.isfinite(float(r["mean_diff"])):
                text[i][j] = "n/a"
                continue
            shade[i, j] = r["shade"] if np.isfinite(r["shade"]) else 0.0
            mark = "*" if r["verdict"] != "inconclusive" else ""
            mark += "†" if bool(r["seed_flag"]) else ""
            text[i][j] = fmt.format(r["mean_diff"]) + mark
    label_width = max(len(c) for c in cands) * 0.075
    fig, ax = plt.subplots(
        figsize=(2.6 + max(0.95, label_width) * len(cands), 2.2 + 0.3 * len(rows))
    )
    base = plt.get_cmap("RdBu")  # red = worse, blue = better; ends trimmed so labels stay legible
    cmap = LinearSegmentedColormap.from_list("sgsr_diverging", base(np.linspace(0.1, 0.9, 256)))
    cmap = cmap.with_extremes(bad="#eeeeee")
    handle = ax.imshow(
        np.ma.masked_invalid(shade), cmap=cmap, vmin=-1, vmax=1, aspect="auto",
        interpolation="nearest",
    )  # fmt: skip
    for i in range(len(rows)):
        for j in range(len(cands)):
            dark = np.isfinite(shade[i, j]) and abs(shade[i, j]) > 0.6
            ax.text(j, i, text[i][j], ha="center", va="center", fontsize=8,
                    color="white" if dark else "0.15")  # fmt: skip
    arrows = {m: "↑" if higher_is_better(df[df["metric"] == m]).all() else "↓" for m in metrics}
    ax.xaxis.tick_top()
    ax.set_xticks(range(len(cands)), cands, rotation=30, ha="left", fontsize=9)
    if len(sets) > 1:  # sets on the left, their metric on the right
        ax.set_yticks(range(len(rows)), [s for _, s in rows], fontsize=8)
        right = ax.secondary_yaxis("right")
        centres = [(k + 0.5) * len(sets) - 0.5 for k in range(len(metrics))]
        right.set_yticks(centres, [f"{m} {arrows[m]}" for m in metrics], fontsize=9)
        right.tick_params(length=0)
        for label in right.get_yticklabels():
            label.set_fontweight("bold")
    else:
        ax.set_yticks(range(len(rows)), [f"{m} {arrows[m]}" for m, _ in rows], fontsize=9)
    ax.tick_params(length=0)
    ax.grid(False)
    for k in range(1, len(metrics)):  # white gaps between metric groups
        ax.axhline(k * len(sets) - 0.5, color="white", linewidth=4)
    bar = fig.colorbar(
        handle, ax=ax, orientation="horizontal", fraction=0.05, pad=0.03, aspect=30,
        ticks=[-1, 0, 1],
    )  # fmt: skip
    bar.ax.set_xticklabels(["worse", "no difference", "better"], fontsize=8)
    where = f" on {sets[0]}" if len(sets) == 1 else ""
    level = f"{float(paired['ci'].iloc[0]) * 100:g} % " if "ci" in paired.columns else ""
    notes = f"* {level}CI excludes 0" + ("; † exceeds the seed spread" if flags is not None else "")
    bar.set_label(f"shade: difference / CI half-width.  {notes}", fontsize=8)
    fig.suptitle(f"Candidate {against}{where}", fontsize=10)
    fig.tight_layout()
    return fig


def forest_figure(paired: pd.DataFrame, max_cols: int = 4) -> Figure:
    """Paired candidate - baseline mean differences with their CIs as small multiples: one
    panel per (set, metric), at most ``max_cols`` metrics across (more wrap to the next row,
    so labels stay readable at page width), one line per candidate, labelled on the left of
    each row. Blue: CI excludes 0 in the better direction; orange: worse; grey: neither."""
    df = verdicts(paired).reset_index(drop=True)
    df["row"], against = _pair_labels(df)
    metrics = list(dict.fromkeys(df["metric"]))
    sets = list(dict.fromkeys(df["set"].astype(str)))
    rows = list(dict.fromkeys(df["row"]))
    ncol = min(max_cols, len(metrics))
    blocks = -(-len(metrics) // ncol)  # panel rows per set
    label = max(len(str(r)) for r in rows) * 0.075  # inches of row labels on the left
    height = max(1.3, 0.28 * len(rows) + 0.75)
    size = (0.8 + label + 2.6 * ncol, 0.7 + height * len(sets) * blocks)
    fig, axes = plt.subplots(len(sets) * blocks, ncol, figsize=size, squeeze=False, sharey=True)
    hib = higher_is_better(df)
    for ax in axes.flat:
        ax.axis("off")
    for k, metric in enumerate(metrics):
        for i, set_name in enumerate(sets):
            ax = axes[i * blocks + k // ncol, k % ncol]
            ax.axis("on")
            sub = df[(df["metric"] == metric) & (df["set"].astype(str) == set_name)]
            sub = sub.dropna(subset=["mean_diff"])
            for _, r in sub.iterrows():
                y = rows.index(r["row"])
                ax.errorbar(
                    r["mean_diff"], y,
                    xerr=[[r["mean_diff"] - r["ci_low"]], [r["ci_high"] - r["mean_diff"]]],
                    fmt="o", markersize=5, color=VERDICT_COLORS[r["verdict"]], capsize=3,
                    linewidth=1.4,
                )  # fmt: skip
            ax.axvline(0, color="0.3", linestyle="--", linewidth=0.8)
            ax.set_yticks(range(len(rows)), rows, fontsize=9)
            ax.tick_params(axis="y", labelleft=k % ncol == 0)
            ax.set_ylim(len(rows) - 0.5, -0.5)
            ax.xaxis.set_major_locator(MaxNLocator(3))
            ax.tick_params(axis="x", labelsize=9)
            ax.grid(axis="y", visible=False)
            arrow = "higher" if hib[df["metric"] == metric].all() else "lower"
            ax.set_title(f"{metric} ({arrow} is better)", fontsize=10)
            ax.set_xlabel("difference", fontsize=9)
            if k % ncol == 0:
                ax.set_ylabel(set_name, fontsize=10, fontweight="bold")
    on = f" on {sets[0]}" if len(sets) == 1 else ""
    fig.suptitle(f"Paired per-image differences, candidate {against}{on}: mean and CI", fontsize=11)
    fig.tight_layout()
    return fig


def seed_figure(
    summary: pd.DataFrame, metrics: Sequence[str], sets: Sequence[str] | None = None
) -> Figure:
    """Per-seed set means of every trained configuration: one panel per (metric, set), one
    column of points per configuration (a point per seed, coloured by seed), with the mean
    over seeds and +- one between-seed SD in black. Reads summary.csv's per-run rows."""
    df = summary[~summary["run"].astype(str).map(is_bicubic)].copy()
    df = df[df["seed"].notna()]
    df["seed"] = df["seed"].astype(int)
    single = df[["model", "scale"]].drop_duplicates().shape[0] == 1
    df["config"] = [
        str(loss) if single else run_name(str(model), str(loss), int(scale))
        for model, loss, scale in zip(df["model"], df["loss"], df["scale"], strict=True)
    ]
    configs = list(dict.fromkeys(df["config"]))
    sets = list(sets) if sets is not None else list(dict.fromkeys(df["set"]))
    seeds = sorted(df["seed"].unique())
    colors = dict(zip(seeds, sns.color_palette("colorblind", max(len(seeds), 1)), strict=False))
    nrow, ncol = len(metrics), len(sets)
    fig, axes = plt.subplots(
        nrow,
        ncol,
        figsize=(max(3.0, 0.45 * len(configs) + 1.4) * ncol, 2.5 * nrow + 0.6),
        squeeze=False,
    )
    offsets = np.linspace(-0.18, 0.18, len(seeds)) if len(seeds) > 1 else np.zeros(1)
    for i, metric in enumerate(metrics):
        for j, set_name in enumerate(sets):
            ax = axes[i, j]
            sub = df[df["set"] == set_name]
            for x, config in enumerate(configs):
                rows = sub[sub["config"] == config]
                vals = pd.to_numeric(rows[metric], errors="coerce").to_numpy(dtype=float)
                keep = np.isfinite(vals)
                for seed, v in zip(rows["seed"].to_numpy()[keep], vals[keep], strict=True):
                    ax.plot(
                        x + offsets[seeds.index(seed)], v, "o", color=colors[seed], ms=4.5, zorder=3
                    )
                if keep.sum() >= 1:
                    sd = float(vals[keep].std(ddof=1)) if keep.sum() > 1 else 0.0
                    ax.errorbar(
                        x,
                        vals[keep].mean(),
                        yerr=sd,
                        fmt="_",
                        color="black",
                        ms=14,
                        capsize=3,
                        zorder=2,
                    )
            ax.set_xticks(range(len(configs)))
            ax.set_xticklabels(
                configs if i == nrow - 1 else [""] * len(configs),
                rotation=35,
                ha="right",
                fontsize=8,
            )
            ax.set_xlim(-0.6, len(configs) - 0.4)
            ax.yaxis.set_major_locator(MaxNLocator(4))
            arrow = "lower is better" if metric in LOWER_IS_BETTER else "higher is better"
            ax.set_title(f"{set_name}: {metric} ({arrow})", fontsize=9)
    handles = [
        plt.Line2D([], [], marker="o", ls="", color=colors[s], label=f"seed {s}") for s in seeds
    ]
    handles.append(plt.Line2D([], [], marker="_", ls="", color="black", ms=12, label="mean +- SD"))
    fig.legend(
        handles=handles,
        loc="upper center",
        ncol=len(handles),
        frameon=False,
        bbox_to_anchor=(0.5, 1.0),
    )
    fig.suptitle("Per-seed set means of each configuration", y=1.03)
    fig.tight_layout()
    return fig
