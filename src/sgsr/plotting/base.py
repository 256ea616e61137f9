"""What every figure shares: the theme, saving (PNG for reports/figures, shown inline in a
notebook), run colours, names, showing an image on an axis, and the fixed randomness (jitter,
bootstrap) that makes the same data draw the same PNG."""

from __future__ import annotations

import os
import re
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import seaborn as sns
from matplotlib.figure import Figure
from matplotlib.image import AxesImage
from PIL import Image

from sgsr.fsutil import atomic_path
from sgsr.runs import is_bicubic

BICUBIC_COLOR = "#8c8c8c"
#: The seed of every random draw in a figure: seaborn's bootstrap CIs (its ``seed=``) and the
#: strip-plot jitter (:func:`fixed_jitter`); the report's PNGs are DVC outputs, so the same
#: inputs must give the same bytes.
FIGURE_SEED = 0


@contextmanager
def fixed_jitter(seed: int = FIGURE_SEED) -> Iterator[None]:
    """Seed numpy's global RNG for the draws inside, then put its state back.

    seaborn 0.13's stripplot jitters with ``np.random.uniform`` (the global RNG; it takes no
    seed), so without this every run moves the dots. The caller's own stream is left as it was.
    """
    state = np.random.get_state()
    np.random.seed(seed)
    try:
        yield
    finally:
        np.random.set_state(state)


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
        # IPython: only inside a notebook kernel
        from IPython.display import Image as PngImage
        from IPython.display import display

        titles = [ax.get_title() for ax in figure.axes if ax.get_title()]
        text = alt or figure.get_suptitle() or (titles[0] if titles else "") or name
        display(PngImage(filename=str(path)), metadata={"alt": text})
        plt.close(figure)
    return path


def _in_kernel() -> bool:
    try:
        # IPython (slow to import): only when a figure is saved, to tell a kernel apart
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
