"""Figure helpers for the report notebooks, so each notebook is a few short cells.

Every helper returns a matplotlib Figure (seaborn for the statistical plots); :func:`save`
writes the PNG that ``reports/figures/`` collects and, in a notebook, shows that same PNG
inline with alt text and closes the figure. Images are the project's uint8 (H, W, C) arrays.
Nothing here reads a whole test set into memory: callers pass a few images or crops.

It only draws: what a figure shows is computed in `sgsr.analysis` (crops, second-order maps and
statistics), `sgsr.metrics` and `sgsr.readers` (metric directions, verdicts). `base` holds what
every figure shares, `images` the image figures, `results` the curves and result figures; the
names below are the ones the notebooks use.
"""

from sgsr.plotting.base import (
    BICUBIC_COLOR,
    FIGURE_SEED,
    fixed_jitter,
    run_palette,
    safe_name,
    save,
    theme,
    thumbnail,
)
from sgsr.plotting.images import (
    gradient_map_figure,
    gradient_stats_figure,
    lr_hr_figure,
    size_figure,
    value_hist_figure,
    zoom_figure,
)
from sgsr.plotting.results import (
    VERDICT_COLORS,
    curves_figure,
    forest_figure,
    metrics_figure,
    paired_heatmap,
    seed_figure,
    short_labels,
)

__all__ = [
    "BICUBIC_COLOR",
    "FIGURE_SEED",
    "VERDICT_COLORS",
    "curves_figure",
    "fixed_jitter",
    "forest_figure",
    "gradient_map_figure",
    "gradient_stats_figure",
    "lr_hr_figure",
    "metrics_figure",
    "paired_heatmap",
    "run_palette",
    "safe_name",
    "save",
    "seed_figure",
    "short_labels",
    "size_figure",
    "theme",
    "thumbnail",
    "value_hist_figure",
    "zoom_figure",
]
