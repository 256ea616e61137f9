"""Figure helpers for the report notebooks, so each notebook is a few short cells.

Every helper returns a matplotlib Figure (seaborn for the statistical plots); :func:`save`
writes the PNG that ``reports/figures/`` collects and, in a notebook, shows that same PNG
inline with alt text and closes the figure. Images are the project's uint8 (H, W, C) arrays.
Nothing here reads a whole test set into memory: callers pass a few images or crops.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping, Sequence
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import seaborn as sns
import torch
from matplotlib.figure import Figure
from matplotlib.image import AxesImage
from matplotlib.patches import Rectangle
from matplotlib.ticker import MaxNLocator, NullFormatter
from PIL import Image

from sgsr.fsutil import atomic_path
from sgsr.gradients import get_operator
from sgsr.imaging import luminance
from sgsr.metric_registry import LOWER_IS_BETTER
from sgsr.runs import is_bicubic, run_name

BICUBIC_COLOR = "#8c8c8c"


def theme() -> None:
    """One look for every figure (call once per notebook)."""
    sns.set_theme(context="notebook", style="whitegrid", palette="colorblind")
    plt.rcParams.update({"figure.dpi": 100, "savefig.dpi": 110, "savefig.bbox": "tight"})


def save(
    fig: Figure | sns.FacetGrid,
    name: str,
    figures_dir: str | os.PathLike[str],
    alt: str | None = None,
) -> Path:
    """Write ``<figures_dir>/<name>.png`` (atomically) and return its path.

    In a Jupyter kernel it then shows that very PNG, with ``alt`` text (default: the figure's
    title or the name) for the HTML report, and closes the figure; elsewhere the figure stays
    open for the caller.
    """
    if not re.fullmatch(r"[A-Za-z0-9_.-]+", name):
        raise ValueError(f"figure name {name!r}: use letters, digits, '_', '-', '.' only")
    figure = fig.figure if isinstance(fig, sns.FacetGrid) else fig
    path = Path(figures_dir) / f"{name}.png"
    with atomic_path(path) as tmp:
        figure.savefig(tmp, format="png")
    if _in_kernel():
        from IPython.display import Image as PngImage
        from IPython.display import display

        titles = [ax.get_title() for ax in figure.axes if ax.get_title()]
        text = alt or figure.get_suptitle() or (titles[0] if titles else "") or name
        display(PngImage(filename=str(path)), metadata={"alt": text})
        plt.close(figure)
    return path


def _in_kernel() -> bool:
    try:
        from IPython import get_ipython
    except ImportError:  # pragma: no cover - IPython ships with ipykernel
        return False
    shell = get_ipython()
    return shell is not None and hasattr(shell, "kernel")


def run_palette(runs: Sequence[str]) -> dict[str, tuple[float, float, float] | str]:
    """A colour per run, the same in every notebook given the same runs: bicubic grey, the
    others from the colorblind palette in name order."""
    colors = sns.color_palette("colorblind", 10)
    out: dict[str, tuple[float, float, float] | str] = {}
    learned = sorted(r for r in runs if not is_bicubic(r))
    for run in runs:
        out[run] = BICUBIC_COLOR if is_bicubic(run) else colors[learned.index(run) % 10]
    return out


def safe_name(text: str) -> str:
    """A figure-name-safe version of an image stem or set name."""
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", text).strip("_") or "image"


# --------------------------------------------------------------------------------------------
# Images


def thumbnail(image: np.ndarray, max_side: int = 384) -> np.ndarray:
    """Downsample (area filter) so the longer side is at most ``max_side``, for display only."""
    h, w = image.shape[:2]
    if max(h, w) <= max_side:
        return image
    f = max_side / max(h, w)
    pil = Image.fromarray(image[..., 0] if image.shape[2] == 1 else image)
    small = np.asarray(pil.resize((max(1, round(w * f)), max(1, round(h * f))), Image.BOX))
    return small[..., None] if small.ndim == 2 else small


def _imshow(ax: plt.Axes, image: np.ndarray, title: str = "", **kwargs: object) -> AxesImage:
    if image.ndim == 3 and image.shape[2] == 1:
        image = image[..., 0]
        kwargs.setdefault("cmap", "gray")
        kwargs.setdefault("vmin", 0)
        kwargs.setdefault("vmax", 255)
    kwargs.setdefault("interpolation", "nearest")
    handle = ax.imshow(image, **kwargs)
    ax.set_title(title, fontsize=9)
    ax.set_xticks([])
    ax.set_yticks([])
    ax.grid(False)
    return handle


def lr_hr_figure(pairs: Sequence[tuple[str, np.ndarray, np.ndarray]], scale: int) -> Figure:
    """Rows of (LR shown at HR display size with nearest-neighbour, HR) for a few images."""
    fig, axes = plt.subplots(len(pairs), 2, figsize=(8, 3.6 * len(pairs)), squeeze=False)
    for row, (label, lr, hr) in zip(axes, pairs, strict=True):
        small = thumbnail(hr)
        pil = Image.fromarray(lr[..., 0] if lr.shape[2] == 1 else lr)
        big = np.asarray(pil.resize((small.shape[1], small.shape[0]), Image.NEAREST))
        big = big[..., None] if big.ndim == 2 else big
        title = f"{label}: LR {lr.shape[1]}x{lr.shape[0]} (nearest-neighbour to HR size)"
        _imshow(row[0], big, title)
        _imshow(row[1], small, f"{label}: HR {hr.shape[1]}x{hr.shape[0]}")
    fig.tight_layout()
    return fig


def size_figure(sizes: pd.DataFrame) -> Figure:
    """HR width x height of every image, one colour per set (columns set, width, height)."""
    fig, ax = plt.subplots(figsize=(6, 4.5))
    sns.scatterplot(data=sizes, x="width", y="height", hue="set", style="set", s=60, ax=ax)
    ax.set_xlabel("HR width (px)")
    ax.set_ylabel("HR height (px)")
    ax.set_title("Test and validation image sizes")
    fig.tight_layout()
    return fig


def crop(image: np.ndarray, box: tuple[int, int, int]) -> np.ndarray:
    """``image[y:y+size, x:x+size]`` for ``box = (y, x, size)``."""
    y, x, size = box
    return image[y : y + size, x : x + size]


def max_diff_box(a: np.ndarray, b: np.ndarray, size: int, border: int = 0) -> tuple[int, int, int]:
    """(y, x, size) of the ``size`` x ``size`` window where mean |Y(a) - Y(b)| is largest.

    An integral image makes this O(H W); ``border`` pixels at each edge are not considered.
    """
    if a.shape != b.shape:
        raise ValueError(f"images differ in shape: {a.shape} vs {b.shape}")
    diff = np.abs(luminance(a, quantize=False) - luminance(b, quantize=False))
    h, w = diff.shape
    border = max(0, min(border, (min(h, w) - 1) // 2))
    diff = diff[border : h - border, border : w - border]
    size = int(max(1, min(size, *diff.shape)))
    ii = np.pad(diff.cumsum(0).cumsum(1), ((1, 0), (1, 0)))
    sums = ii[size:, size:] - ii[:-size, size:] - ii[size:, :-size] + ii[:-size, :-size]
    y, x = np.unravel_index(int(np.argmax(sums)), sums.shape)
    return int(y) + border, int(x) + border, size


def crop_psnr(sr: np.ndarray, hr: np.ndarray) -> float:
    """PSNR (dB) on Y of a crop, no border removed (the crop is already interior)."""
    mse = float(np.mean((luminance(sr) - luminance(hr)) ** 2))
    return float("inf") if mse == 0 else 10 * np.log10(255.0**2 / mse)


def zoom_figure(
    label: str, hr: np.ndarray, outputs: Mapping[str, np.ndarray], box: tuple[int, int, int]
) -> Figure:
    """The whole HR image with the zoom box, then the same crop of HR and of every output."""
    n = 2 + len(outputs)
    fig, axes = plt.subplots(1, n, figsize=(2.6 * n, 3.0), squeeze=False)
    axes = axes[0]
    small = thumbnail(hr)
    f = small.shape[1] / hr.shape[1]
    _imshow(axes[0], small, label)
    y, x, size = box
    axes[0].add_patch(
        Rectangle((x * f, y * f), size * f, size * f, fill=False, edgecolor="red", linewidth=1.5)
    )
    hr_crop = crop(hr, box)
    _imshow(axes[1], hr_crop, "HR")
    for ax, (name, sr) in zip(axes[2:], outputs.items(), strict=True):
        c = crop(sr, box)
        _imshow(ax, c, f"{name}\n{crop_psnr(c, hr_crop):.2f} dB (crop)")
    fig.tight_layout()
    return fig


# --------------------------------------------------------------------------------------------
# Second-order maps


def second_order(image: np.ndarray, operator: str = "laplacian") -> np.ndarray:
    """The operator on luminance in [0, 1] (Y for RGB): (K, H, W) float64, K = 1 or 3.

    Y rather than RGB so there is one map per image; the loss itself sees RGB.
    """
    y = luminance(image, quantize=False)
    t = torch.from_numpy(np.ascontiguousarray(y))[None, None] / 255.0
    return get_operator(operator)(t).squeeze(0).numpy()


def second_order_crop(
    image: np.ndarray, box: tuple[int, int, int], operator: str = "laplacian", margin: int = 4
) -> np.ndarray:
    """:func:`second_order` of a crop, computed with ``margin`` px of context so the crop's
    own edges carry no padding artefacts."""
    y, x, size = box
    h, w = image.shape[:2]
    y0, x0 = max(0, y - margin), max(0, x - margin)
    y1, x1 = min(h, y + size + margin), min(w, x + size + margin)
    maps = second_order(image[y0:y1, x0:x1], operator)
    return maps[:, y - y0 : y - y0 + size, x - x0 : x - x0 + size]


def _display_map(maps: np.ndarray) -> np.ndarray:
    """K=1: the signed map; K>1: the root-sum-square magnitude over components."""
    return maps[0] if maps.shape[0] == 1 else np.sqrt((maps**2).sum(0))


def gradient_map_figure(
    crops: Mapping[str, np.ndarray], maps: Mapping[str, np.ndarray], operator: str, hr_key: str
) -> Figure:
    """Columns = HR and each output; rows = crop, second-order map, |SR - HR| (Y) and
    |op(SR) - op(HR)| (mean over components). Each row shares one colour scale."""
    names = list(crops)
    hr_img = crops[hr_key].astype(np.float64)
    signed = maps[hr_key].shape[0] == 1
    shown = {k: _display_map(v) for k, v in maps.items()}
    lim = float(np.percentile(np.abs(shown[hr_key]), 99.5)) or 1e-6
    pix_err = {
        k: np.abs(luminance(crops[k], quantize=False) - luminance(hr_img, quantize=False))
        for k in names
        if k != hr_key
    }
    op_err = {k: np.abs(maps[k] - maps[hr_key]).mean(0) for k in names if k != hr_key}
    pix_max = max([float(np.percentile(e, 99.5)) for e in pix_err.values()] + [1e-6])
    op_max = max([float(np.percentile(e, 99.5)) for e in op_err.values()] + [1e-6])
    n = len(names)
    # an extra narrow column holds one colour bar per row, so every panel keeps the same size
    fig, grid = plt.subplots(
        4,
        n + 1,
        figsize=(2.7 * n + 0.8, 11),
        squeeze=False,
        gridspec_kw={"width_ratios": [1] * n + [0.06]},
    )
    axes, bars = grid[:, :n], grid[:, n]
    bars[0].axis("off")
    label = f"{operator} (signed)" if signed else f"|{operator}| (magnitude)"
    handles: dict[int, AxesImage] = {}
    for j, name in enumerate(names):
        _imshow(axes[0, j], crops[name], name)
        handles[1] = _imshow(
            axes[1, j],
            shown[name],
            label if j == 0 else "",
            cmap="RdBu_r" if signed else "magma",
            vmin=-lim if signed else 0,
            vmax=lim,
        )
        if name == hr_key:
            for r in (2, 3):
                axes[r, j].axis("off")
                axes[r, j].text(
                    0.5,
                    0.5,
                    "reference",
                    ha="center",
                    va="center",
                    transform=axes[r, j].transAxes,
                    color="0.4",
                )
            continue
        e1, e2 = pix_err[name], op_err[name]
        handles[2] = _imshow(
            axes[2, j],
            e1,
            f"|SR - HR| on Y, mean {e1.mean():.2f}",
            cmap="inferno",
            vmin=0,
            vmax=pix_max,
        )
        handles[3] = _imshow(
            axes[3, j],
            e2,
            f"|op(SR) - op(HR)|, mean {e2.mean():.4f}",
            cmap="inferno",
            vmin=0,
            vmax=op_max,
        )
    for r in (1, 2, 3):
        if r in handles:
            fig.colorbar(handles[r], cax=bars[r])
        else:
            bars[r].axis("off")
    fig.subplots_adjust(top=0.93, bottom=0.02, hspace=0.25, wspace=0.12)
    fig.suptitle(f"What the {operator} operator sees (Y channel, values in [0, 1] units)")
    return fig


def gradient_stats(
    hr: np.ndarray, outputs: Mapping[str, np.ndarray], operator: str, border: int
) -> list[dict[str, float | str]]:
    """Per output: second-order energy relative to HR (mean |op(SR)| / mean |op(HR)|; < 1
    means smoother than the ground truth) and the L1 distance mean |op(SR) - op(HR)|."""

    def inner(m: np.ndarray) -> np.ndarray:
        b = border
        return m[:, b:-b, b:-b] if b and min(m.shape[1:]) > 2 * b else m

    ref = inner(second_order(hr, operator))
    ref_energy = float(np.abs(ref).mean()) or 1e-12
    rows = []
    for name, sr in outputs.items():
        m = inner(second_order(sr, operator))
        rows.append(
            {
                "output": name,
                "energy_ratio": float(np.abs(m).mean()) / ref_energy,
                "distance": float(np.abs(m - ref).mean()),
            }
        )
    return rows


def gradient_stats_figure(stats: pd.DataFrame, palette: Mapping[str, object]) -> Figure:
    """Per-image second-order energy ratio and distance to HR, per output (strip + mean/CI)."""
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    order = list(dict.fromkeys(stats["output"]))
    for ax, col, title in (
        (axes[0], "energy_ratio", "second-order energy / HR's (1 = as sharp as HR)"),
        (axes[1], "distance", "mean |op(SR) - op(HR)| (lower = closer)"),
    ):
        sns.stripplot(
            data=stats,
            x="output",
            y=col,
            hue="output",
            order=order,
            palette=palette,
            alpha=0.5,
            legend=False,
            ax=ax,
        )
        sns.pointplot(
            data=stats,
            x="output",
            y=col,
            order=order,
            color="black",
            errorbar=("ci", 95),
            linestyle="none",
            markers="D",
            ax=ax,
        )
        ax.set_title(title, fontsize=10)
        ax.set_xlabel("")
        ax.tick_params(axis="x", rotation=20)
    axes[0].axhline(1.0, color="0.3", linestyle="--", linewidth=1)
    fig.tight_layout()
    return fig


def value_hist_figure(
    maps: Mapping[str, np.ndarray], operator: str, palette: Mapping[str, object]
) -> Figure:
    """Distribution of second-order values in the crop per image: a narrower one = smoother."""
    frames = [pd.DataFrame({"output": k, "value": v.ravel()}) for k, v in maps.items()]
    df = pd.concat(frames, ignore_index=True)
    fig, ax = plt.subplots(figsize=(7, 4))
    sns.histplot(
        data=df,
        x="value",
        hue="output",
        element="step",
        fill=False,
        bins=60,
        stat="density",
        common_norm=False,
        palette=palette,
        ax=ax,
    )
    ax.set_yscale("log")
    ax.set_xlabel(f"{operator} response (Y in [0, 1])")
    ax.set_title("Distribution of second-order responses in the crop")
    fig.tight_layout()
    return fig


# --------------------------------------------------------------------------------------------
# Training curves and results


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
        marker="o" if df.groupby(["run", "metric"]).size().max() <= 10 else None,
    )
    g.set_titles("{col_name}")
    if log_y and (df["value"] > 0).all():
        for ax in g.axes.flat:
            ax.set_yscale("log")
            ax.yaxis.set_minor_formatter(NullFormatter())
    g.figure.suptitle(title, y=1.03)
    return g.figure


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
#: Boolean paired.csv columns that mark an effect larger than the spread between seeds (written
#: when ``experiment.replicates`` has several seeds); the first one present is used.
SEED_FLAG_COLUMNS: tuple[str, ...] = ("exceeds_seed_spread",)


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


def _seed_flag(df: pd.DataFrame) -> pd.Series | None:
    for col in SEED_FLAG_COLUMNS:
        if col in df.columns:
            return df[col].astype(str).str.lower().isin(("true", "1", "1.0"))
    return None


def _diff_format(values: pd.Series) -> str:
    """Two significant digits of the metric's largest difference (PSNR 0.07 dB -> +0.074,
    SSIM 0.003 -> +0.0032, MS-SSIM 0.0009 -> +0.00090)."""
    finite = values[np.isfinite(values.astype(float))].abs()
    top = float(finite.max()) if len(finite) else 0.0
    digits = 2 if top <= 0 else max(2, int(np.ceil(-np.log10(top))) + 1)
    return f"{{:+.{min(digits, 6)}f}}"


def evidence(df: pd.DataFrame) -> pd.Series:
    """Signed strength of each paired difference: the improvement (the difference, negated for
    lower-is-better metrics) over the CI's half width. Beyond +-1 the CI excludes zero; the
    same number means the same thing for dB and for SSIM units."""
    gain = df["mean_diff"].astype(float) * np.where(_higher_is_better(df), 1.0, -1.0)
    half = (df["ci_high"].astype(float) - df["ci_low"].astype(float)) / 2
    with np.errstate(divide="ignore", invalid="ignore"):
        out = np.where(half > 0, gain / half, np.sign(gain) * np.inf)
    return pd.Series(np.where(gain == 0, 0.0, out), index=df.index)


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
    from matplotlib.colors import LinearSegmentedColormap

    df = verdicts(paired).reset_index(drop=True)
    flags = _seed_flag(paired.reset_index(drop=True))
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
    arrows = {m: "↑" if _higher_is_better(df[df["metric"] == m]).all() else "↓" for m in metrics}
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


def _higher_is_better(df: pd.DataFrame) -> pd.Series:
    """``higher_is_better`` from paired.csv, else the metric's known direction."""
    if "higher_is_better" in df.columns:
        return df["higher_is_better"].astype(str).str.lower().isin(("true", "1", "1.0"))
    return ~df["metric"].isin(LOWER_IS_BETTER)


def forest_figure(paired: pd.DataFrame) -> Figure:
    """Paired candidate - baseline mean differences with their CIs as small multiples: one
    column per metric (shared x axis), one row per set, one line per candidate (labelled once,
    on the left). Blue: CI excludes 0 in the better direction; orange: worse; grey: neither."""
    df = verdicts(paired).reset_index(drop=True)
    df["row"], against = _pair_labels(df)
    metrics = list(dict.fromkeys(df["metric"]))
    sets = list(dict.fromkeys(df["set"].astype(str)))
    rows = list(dict.fromkeys(df["row"]))
    height = max(1.2, 0.26 * len(rows) + 0.55)
    fig, axes = plt.subplots(
        len(sets), len(metrics), figsize=(1.8 + 2.5 * len(metrics), 0.9 + height * len(sets)),
        squeeze=False, sharex="col", sharey=True,
    )  # fmt: skip
    hib = _higher_is_better(df)
    for j, metric in enumerate(metrics):
        for i, set_name in enumerate(sets):
            ax = axes[i, j]
            sub = df[(df["metric"] == metric) & (df["set"].astype(str) == set_name)]
            sub = sub.dropna(subset=["mean_diff"])
            for _, r in sub.iterrows():
                y = rows.index(r["row"])
                ax.errorbar(
                    r["mean_diff"], y,
                    xerr=[[r["mean_diff"] - r["ci_low"]], [r["ci_high"] - r["mean_diff"]]],
                    fmt="o", markersize=4, color=VERDICT_COLORS[r["verdict"]], capsize=2.5,
                    linewidth=1.2,
                )  # fmt: skip
            ax.axvline(0, color="0.3", linestyle="--", linewidth=0.8)
            ax.set_yticks(range(len(rows)), rows, fontsize=8)
            ax.set_ylim(len(rows) - 0.5, -0.5)
            ax.xaxis.set_major_locator(MaxNLocator(3))
            ax.tick_params(axis="x", labelsize=7.5)
            ax.grid(axis="y", visible=False)
            if i == 0:
                arrow = "higher" if hib[df["metric"] == metric].all() else "lower"
                ax.set_title(f"{metric}\n({arrow} is better)", fontsize=9)
            if j == 0:
                ax.set_ylabel(set_name, fontsize=9, fontweight="bold")
    fig.suptitle(f"Paired per-image differences, candidate {against}: mean and CI", fontsize=10)
    fig.tight_layout()
    return fig


def verdicts(paired: pd.DataFrame) -> pd.DataFrame:
    """The forest plot as a table: set, metric, mean_diff, CI, and better/worse/inconclusive."""
    df = paired.copy()
    sign = np.where(_higher_is_better(df), 1.0, -1.0)
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
                        x, vals[keep].mean(), yerr=sd, fmt="_", color="black", ms=14, capsize=3,
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
