"""Image figures: LR/HR pairs, image sizes, zoomed crops, and what the second-order operator
sees (maps, error maps, per-image statistics, the distribution of responses). The numbers they
show are computed in `sgsr.analysis` and `sgsr.metrics`."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import seaborn as sns
from matplotlib.figure import Figure
from matplotlib.image import AxesImage
from matplotlib.patches import Rectangle
from PIL import Image

from sgsr import analysis
from sgsr.metrics import psnr
from sgsr.plotting.base import FIGURE_SEED, _imshow, fixed_jitter, thumbnail


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
    hr_crop = analysis.crop(hr, box)
    _imshow(axes[1], hr_crop, "HR")
    for ax, (name, sr) in zip(axes[2:], outputs.items(), strict=True):
        c = analysis.crop(sr, box)
        _imshow(ax, c, f"{name}\n{psnr(c, hr_crop, border=0):.2f} dB (crop)")
    fig.tight_layout()
    return fig


# --------------------------------------------------------------------------------------------
# Second-order maps


def _display_map(maps: np.ndarray) -> np.ndarray:
    """K=1: the signed map; K>1: the root-sum-square magnitude over components."""
    return maps[0] if maps.shape[0] == 1 else np.sqrt((maps**2).sum(0))


def gradient_map_figure(
    crops: Mapping[str, np.ndarray], maps: Mapping[str, np.ndarray], operator: str, hr_key: str
) -> Figure:
    """Columns = HR and each output; rows = crop, second-order map, |SR - HR| (Y) and
    |op(SR) - op(HR)| (mean over components). Each row shares one colour scale."""
    names = list(crops)
    signed = maps[hr_key].shape[0] == 1
    shown = {k: _display_map(v) for k, v in maps.items()}
    lim = float(np.percentile(np.abs(shown[hr_key]), 99.5)) or 1e-6
    pix_err, op_err = analysis.error_maps(crops, maps, hr_key)
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
            f"|SR - HR| on Y (0-255), mean {e1.mean():.2f}",
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
    # each bar says its own units: the maps are on Y in [0, 1], the pixel error in 0-255 levels
    units = {1: f"{operator} of Y in [0, 1]", 2: "|SR - HR|, 0-255 levels",
             3: "map difference, Y in [0, 1]"}  # fmt: skip
    for r in (1, 2, 3):
        if r in handles:
            fig.colorbar(handles[r], cax=bars[r]).set_label(units[r], fontsize=9)
        else:
            bars[r].axis("off")
    fig.subplots_adjust(top=0.93, bottom=0.02, hspace=0.25, wspace=0.12)
    fig.suptitle(f"What the {operator} operator sees (Y channel; units on each colour bar)")
    return fig


def gradient_stats_figure(stats: pd.DataFrame, palette: Mapping[str, object]) -> Figure:
    """Per-image second-order energy ratio and distance to HR, per output (strip + mean/CI)."""
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    order = list(dict.fromkeys(stats["output"]))
    for ax, col, title in (
        (axes[0], "energy_ratio", "second-order energy / HR's (1 = as sharp as HR)"),
        (axes[1], "distance", "mean |op(SR) - op(HR)| (lower = closer)"),
    ):
        with fixed_jitter():
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
            seed=FIGURE_SEED,
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
