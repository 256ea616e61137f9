"""The paired-difference figures: the at-a-glance heatmap and the forest plot's layout."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from sgsr.plotting import (
    forest_figure,
    paired_heatmap,
    save,
    short_labels,
)
from sgsr.readers import evidence

REPO = Path(__file__).resolve().parents[1]


def _paired(seed_flag: bool = False) -> pd.DataFrame:
    """Two candidates x two sets x (psnr up, gmsd down), with known verdicts."""
    rows = []
    for cand, psnr, gmsd in (("net-sgl-x4", 0.30, -0.002), ("net-grad-x4", -0.05, 0.001)):
        for set_name in ("SetA", "SetB"):
            rows.append((cand, set_name, "psnr", True, psnr, psnr - 0.1, psnr + 0.1))
            rows.append((cand, set_name, "gmsd", False, gmsd, gmsd - 0.004, gmsd + 0.004))
    df = pd.DataFrame(
        rows,
        columns=[
            "candidate",
            "set",
            "metric",
            "higher_is_better",
            "mean_diff",
            "ci_low",
            "ci_high",
        ],
    )
    df["baseline"] = "net-l1-x4"
    df["scale"] = 4
    df["ci"] = 0.95
    if seed_flag:
        df["exceeds_seed_spread"] = df["candidate"].eq("net-sgl-x4") & df["metric"].eq("psnr")
    return df


def _texts(fig) -> list[str]:
    return [t.get_text() for ax in fig.axes for t in ax.texts]


def test_short_labels_drop_the_shared_parts() -> None:
    names = ["edsr_slim-sgl_lap-x4", "edsr_slim-grad1-x4", "edsr_slim-sgl_hess_w1-x4"]
    assert list(short_labels(names).values()) == ["sgl_lap", "grad1", "sgl_hess_w1"]
    assert short_labels(["a-b-x4"]) == {"a-b-x4": "a-b-x4"}  # nothing to compare with


def test_evidence_follows_the_metric_direction() -> None:
    df = _paired()
    ev = evidence(df)
    psnr_sgl = ev[(df["candidate"] == "net-sgl-x4") & (df["metric"] == "psnr")]
    gmsd_sgl = ev[(df["candidate"] == "net-sgl-x4") & (df["metric"] == "gmsd")]
    assert np.allclose(psnr_sgl, 3.0)  # +0.3 over a half width of 0.1: better
    assert np.allclose(gmsd_sgl, 0.5)  # gmsd fell (better) but the CI includes 0
    assert (ev[(df["candidate"] == "net-grad-x4") & (df["metric"] == "psnr")] < 0).all()


def test_heatmap_cells_labels_and_marks(tmp_path: Path) -> None:
    fig = paired_heatmap(_paired())
    ax = fig.axes[0]
    image = ax.images[0].get_array()
    assert image.shape == (4, 2)  # (metric, set) x candidates
    assert [t.get_text() for t in ax.get_xticklabels()] == ["sgl", "grad"]
    assert [t.get_text() for t in ax.get_yticklabels()] == ["SetA", "SetB"] * 2
    metric_labels = [t.get_text() for a in ax.child_axes for t in a.get_yticklabels()]
    assert "psnr ↑" in metric_labels and "gmsd ↓" in metric_labels
    texts = _texts(fig)
    assert texts.count("+0.30*") == 2  # significant: starred, 2 decimals for ~0.3 dB
    assert texts.count("-0.0020") == 2  # not significant: no star
    assert image[0, 0] > 0 > image[0, 1]  # better is one colour, worse the other
    assert 0 < image[2, 0] < image[0, 0]  # inconclusive improvement (lower gmsd): paler
    assert not any("†" in t for t in texts)
    assert "net-l1-x4" in fig.get_suptitle()
    path = save(fig, "glance", tmp_path)
    assert path.stat().st_size > 5_000


def test_heatmap_marks_effects_beyond_the_seed_spread() -> None:
    texts = _texts(paired_heatmap(_paired(seed_flag=True)))
    assert texts.count("+0.30*†") == 2
    assert sum("†" in t for t in texts) == 2


def test_forest_is_a_grid_of_sets_by_metrics_labelled_once() -> None:
    fig = forest_figure(_paired())
    axes = np.array(fig.axes).reshape(2, 2)
    assert [ax.get_ylabel() for ax in axes[:, 0]] == ["SetA", "SetB"]
    assert axes[0, 0].get_title().startswith("psnr") and "lower" in axes[0, 1].get_title()
    assert [t.get_text() for t in axes[0, 0].get_yticklabels()] == ["sgl", "grad"]
    assert not any(t.get_visible() and t.get_text() for t in axes[0, 1].get_yticklabels())


@pytest.mark.skipif(
    not (REPO / "profiles/study/results/paired.csv").is_file(), reason="study results absent"
)
def test_study_figures_stay_readable(tmp_path: Path) -> None:
    """The study's 120 comparisons: both figures fit a page's width, so their labels stay
    readable there (the old forest plot was 29 x 30 inches of repeated labels); taller
    scrolls."""
    paired = pd.read_csv(REPO / "profiles/study/results/paired.csv")
    for name, fig in (("forest", forest_figure(paired)), ("heat", paired_heatmap(paired))):
        width, height = fig.get_size_inches()
        assert width <= 13 and height <= 16, (name, width, height)
        save(fig, name, tmp_path)


PAGE_PX = 1200  # the report's page width (its main column) in CSS pixels


def _smallest_text_px(fig) -> float:
    """The smallest visible text of `fig`, in pixels as the report shows it: savefig's dpi,
    then scaled down to PAGE_PX when the tight-cropped PNG is wider."""
    import matplotlib.pyplot as plt
    from matplotlib.text import Text

    fig.canvas.draw()
    dpi = plt.rcParams["savefig.dpi"]
    width_px = fig.get_tightbbox().width * dpi
    scale = min(1.0, PAGE_PX / width_px)
    sizes = [t.get_fontsize() for t in fig.findobj(Text) if t.get_visible() and t.get_text()]
    return min(sizes) * dpi / 72 * scale


def _labelled_yticks(ax) -> list[str]:
    lo, hi = sorted(ax.get_ylim())
    return [
        t.get_text()
        for t, v in zip(ax.get_yticklabels(), ax.get_yticks(), strict=False)
        if t.get_visible() and t.get_text() and lo <= v <= hi
    ]


def test_figures_are_readable_at_page_width() -> None:
    """Text at least 9 px tall once the report scales a figure to its page, and every curve
    panel with at least three labelled y ticks (a log axis over less than a decade had none:
    training losses from 0.05 to 0.02, a constant learning rate)."""
    from sgsr.plotting import curves_figure, theme

    theme()
    steps = np.arange(0, 400, 10)
    rows = []
    for run in ("m-l1-x4", "m-sgl-x4"):
        for metric, values in (
            ("train/l1", 0.05 - 0.03 * steps / 400),
            ("train/total", 0.06 - 0.03 * steps / 400),
            ("train/sgl", 0.2 - 0.05 * steps / 400),
        ):
            rows += [(run, metric, "train", s, v) for s, v in zip(steps, values, strict=True)]
        lr = np.minimum(1.0, (steps + 10) / 50) * 2e-3  # warmup, then constant
        rows += [(run, "train/lr", "schedule", s, v) for s, v in zip(steps, lr, strict=True)]
    df = pd.DataFrame(rows, columns=["run", "metric", "group", "step", "value"])
    palette = {"m-l1-x4": "C0", "m-sgl-x4": "C1"}
    for group in ("train", "schedule"):
        fig = curves_figure(df[df["group"] == group], group, palette, log_y=True)
        for ax in fig.axes:
            labels = _labelled_yticks(ax)
            assert len(labels) >= 3, (group, ax.get_title(), ax.get_ylim())
            assert len(set(labels)) == len(labels), labels  # no two ticks read the same
            assert ax.get_xlabel() and ax.get_ylabel()
        assert _smallest_text_px(fig) >= 9, group
    forest = forest_figure(_paired())
    assert _smallest_text_px(forest) >= 9
    seven = pd.concat(
        [_paired().assign(metric=f"{m}{k}") for k in range(4) for m in ("psnr", "gmsd")][:7]
    )  # seven metrics, as the default profile has: wrapped, not a 16-inch strip
    fig = forest_figure(seven)
    assert fig.get_size_inches()[0] <= 13 and _smallest_text_px(fig) >= 9


def _png_chunks(data: bytes) -> list[tuple[bytes, bytes]]:
    """(type, payload) of every chunk of a PNG file."""
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    chunks, i = [], 8
    while i < len(data):
        n = int.from_bytes(data[i : i + 4], "big")
        chunks.append((data[i + 4 : i + 8], data[i + 8 : i + 8 + n]))
        i += 12 + n
    return chunks


def test_jittered_figures_draw_the_same_png_whatever_the_global_rng(tmp_path: Path) -> None:
    """The strip plots' jitter (numpy's global RNG inside seaborn) and the pointplots'
    bootstrap CIs come from a fixed seed: reports/ is a DVC output, so the same data must give
    the same bytes. The caller's global RNG stream is left where it was."""
    import matplotlib.pyplot as plt

    from sgsr.plotting import gradient_stats_figure, metrics_figure

    rng = np.random.default_rng(3)
    runs = ["bicubic-x2", "net-l1-x2", "net-sgl-x2"]
    per_image = pd.DataFrame(
        {
            "run": np.repeat(runs, 12),
            "set": "s",
            "image": np.tile([f"i{k}" for k in range(12)], 3),
            "psnr": rng.normal(28, 1, 36),
            "ssim": rng.uniform(0.7, 0.9, 36),
        }
    )
    stats = pd.DataFrame(
        {
            "output": np.repeat(["HR", *runs], 8),
            "energy_ratio": rng.uniform(0.5, 1.2, 32),
            "distance": rng.uniform(0.0, 0.1, 32),
        }
    )
    palette = {"HR": "black", **dict(zip(runs, ["0.5", "C0", "C1"], strict=True))}
    draws = {
        "metrics": lambda: metrics_figure(per_image, ["psnr", "ssim"], runs, palette),
        "stats": lambda: gradient_stats_figure(stats, palette),
    }
    for name, draw in draws.items():
        pngs = []
        for global_seed in (1, 2):
            np.random.seed(global_seed)
            fig = draw()
            after = np.random.random()
            np.random.seed(global_seed)
            assert after == np.random.random(), name  # the caller's stream is untouched
            pngs.append(save(fig, f"{name}{global_seed}", tmp_path).read_bytes())
            plt.close(fig)
        assert pngs[0] == pngs[1], name


def test_saved_png_carries_no_date(tmp_path: Path) -> None:
    """matplotlib writes a "Software" text chunk (its pinned version) and no tIME chunk or
    creation date: nothing in a figure's bytes depends on when it was drawn."""
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(2, 2))
    ax.plot([0, 1], [1, 0])
    chunks = _png_chunks(save(fig, "tiny", tmp_path).read_bytes())
    plt.close(fig)
    kinds = {kind for kind, _ in chunks}
    assert b"tIME" not in kinds
    text_keys = {payload.split(b"\0")[0] for kind, payload in chunks if kind in {b"tEXt", b"iTXt"}}
    assert text_keys <= {b"Software"}, text_keys
