"""The report notebooks execute under papermill against a small synthetic pipeline folder.

`build_fake_pipeline` writes every input the notebooks read, in the formats the stages write
(images via sgsr.imaging, dvclive TSVs, the declared CSV columns), in about a second; the tests
then run each notebook on this interpreter's kernel with non-default parameters.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import nbformat
import numpy as np
import pandas as pd
import pytest

from sgsr import layout, report
from sgsr.imaging import downscale, mod_crop, upscale_bicubic, write_image
from sgsr.metrics import psnr
from sgsr.runs import parse_run

REPO = Path(__file__).resolve().parents[1]
NOTEBOOKS = REPO / "notebooks"
MODEL = "tiny"
METRICS = ("psnr", "ssim", "ms_ssim", "gmsd", "haarpsi", "lpips")
HIGHER = {
    "psnr": True,
    "ssim": True,
    "ms_ssim": True,
    "gmsd": False,
    "haarpsi": True,
    "lpips": False,
}


def _scene(h: int, w: int, seed: int, channels: int = 3) -> np.ndarray:
    """A photo-like uint8 image: smooth shading, a sharp disc edge and fine stripes."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float64)
    base = 90 + 60 * np.sin(xx / 9 + seed) * np.cos(yy / 11)
    disc = ((yy - h / 2) ** 2 + (xx - w / 3) ** 2 < (h / 4) ** 2) * 70.0
    stripes = 25 * np.sign(np.sin(xx * 1.3 + yy * 0.4)) * (xx > w / 2)
    img = base + disc + stripes
    chans = [img + rng.normal(0, 3, img.shape) + 15 * c for c in range(channels)]
    return np.clip(np.stack(chans, -1), 0, 255).round().astype(np.uint8)


def _blend(a: np.ndarray, b: np.ndarray, t: float, rng: np.random.Generator) -> np.ndarray:
    out = (1 - t) * a.astype(np.float64) + t * b.astype(np.float64) + rng.normal(0, 2, a.shape)
    return np.clip(out, 0, 255).round().astype(np.uint8)


def build_fake_pipeline(
    root: Path, scale: int = 2, with_lpips: bool = False, replicates: tuple[int, ...] = ()
) -> dict:
    """A pipeline folder with prepared data, run cards, dvclive logs, SR outputs and CSVs.

    Two test sets (one with a grayscale image), a val split, runs bicubic/l1/sgl at ``scale``.
    LPIPS is left empty (as offline) unless ``with_lpips``. ``replicates`` adds summary rows
    (and summary_seeds.csv, paired seed columns) for those extra seeds of l1 and sgl.
    Returns the run names.
    """
    rng = np.random.default_rng(0)
    mark_pipeline(root)
    base = f"{MODEL}-l1-x{scale}"
    cand = f"{MODEL}-sgl-x{scale}"
    bic = f"bicubic-x{scale}"
    images = {"setA": [("alpha", 3), ("beta", 3)], "setB": [("gray", 1)], "val": [("v0", 3)]}
    per_image: dict[str, list[dict]] = {bic: [], base: [], cand: []}
    for set_name, items in images.items():
        for i, (stem, ch) in enumerate(items):
            hr = mod_crop(_scene(52 + 8 * i, 60, seed=i + len(set_name), channels=ch), scale)
            lr = downscale(hr, scale)
            prep = root / "data" / "prepared" / f"x{scale}" / set_name
            write_image(prep / "hr" / f"{stem}.png", hr)
            write_image(prep / "lr" / f"{stem}.png", lr)
            if set_name == "val":
                continue
            bicubic = upscale_bicubic(lr, scale)
            outs = {
                bic: bicubic,
                base: _blend(bicubic, hr, 0.45, rng),
                cand: _blend(bicubic, hr, 0.7, rng),
            }
            for run, sr in outs.items():
                write_image(root / "results" / "sr" / run / set_name / f"{stem}.png", sr)
                p = psnr(sr[scale:-scale, scale:-scale], hr[scale:-scale, scale:-scale], border=0)
                per_image[run].append(
                    {
                        "set": set_name,
                        "image": stem,
                        "scale": scale,
                        "psnr": p,
                        "ssim": 1 - 1 / p,
                        "ms_ssim": 1 - 0.8 / p,
                        "gmsd": 2 / p,
                        "haarpsi": 1 - 1.5 / p,
                        "lpips": 3 / p if with_lpips else math.nan,
                    }
                )
    meta = {
        "count": 120,
        "patch_size": 48,
        "scale": scale,
        "sources": [f"train_{i}.png" for i in range(5)],
    }
    (root / "data" / "prepared" / f"x{scale}" / "patches").mkdir(parents=True)
    (root / "data" / "prepared" / f"x{scale}" / "patches" / "meta.json").write_text(
        json.dumps(meta)
    )
    summary, paired = [], []
    for run, rows in per_image.items():
        df = pd.DataFrame(rows)
        mdir = root / "results" / "metrics" / run
        mdir.mkdir(parents=True)
        df.to_csv(mdir / "per_image.csv", index=False)
        info = parse_run(run)
        seeds = (None,) if info["model"] == "bicubic" else (0, *replicates)
        for seed in seeds:
            for set_name, sub in df.groupby("set"):
                shift = 0.0 if not seed else 0.3 * math.sin(seed + len(run))  # seed noise
                summary.append(
                    {
                        "run": run if not seed else f"{run}-s{seed}",
                        "model": info["model"],
                        "loss": info["loss"],
                        "scale": scale,
                        "seed": seed,
                        "set": set_name,
                        "n_images": len(sub),
                        **{m: sub[m].mean() + (shift if m == "psnr" else 0.0) for m in METRICS},
                    }
                )
        sets = {
            name: {m: (float(sub[m].mean()) if sub[m].notna().any() else None) for m in METRICS}
            for name, sub in df.groupby("set")
        }
        (mdir / "metrics.json").write_text(json.dumps(sets))
        unavailable = {} if with_lpips else {"lpips": "alexnet weights absent (offline)"}
        doc = {"run": run, "scale": scale, "sets": {}, "unavailable": unavailable}
        (mdir / "metrics_info.json").write_text(json.dumps(doc))
    a = pd.DataFrame(per_image[base]).set_index(["set", "image"])
    b = pd.DataFrame(per_image[cand]).set_index(["set", "image"])
    for set_name in ("setA", "setB"):
        for m in METRICS:
            d = (b.loc[set_name, m] - a.loc[set_name, m]).to_numpy()
            mean = float(d.mean())
            # haarpsi straddles zero, so the forest plot has an inconclusive row too
            half = float(d.std() + (1.5 if m == "haarpsi" else 0.05) * abs(mean))
            paired.append(
                {
                    "set": set_name,
                    "scale": scale,
                    "model": MODEL,
                    "baseline": base,
                    "candidate": cand,
                    "metric": m,
                    "mean_diff": mean,
                    "ci_low": mean - half,
                    "ci_high": mean + half,
                    "n": len(d),
                    "higher_is_better": HIGHER[m],
                }
            )
    summary_df = pd.DataFrame(summary)
    if replicates:
        spread = []
        trained = summary_df[summary_df["model"] != "bicubic"]
        for (loss, set_name), sub in trained.groupby(["loss", "set"], sort=False):
            for m in METRICS:
                if sub[m].notna().any():
                    v = sub[m].to_numpy(float)
                    spread.append(
                        {"model": MODEL, "loss": loss, "scale": scale, "set": set_name,
                         "metric": m, "n_seeds": len(v), "mean": v.mean(), "sd": v.std(ddof=1)}
                    )  # fmt: skip
        pd.DataFrame(spread).to_csv(root / "results" / "summary_seeds.csv", index=False)
        for row in paired:
            row.update(n_seeds=1 + len(replicates), seed_ci_low=row["ci_low"] * 2,
                       seed_ci_high=row["ci_high"] * 2, baseline_seed_range=0.2,
                       effect="better" if row["metric"] == "psnr" else "none")  # fmt: skip
    summary_df.to_csv(root / "results" / "summary.csv", index=False)
    pd.DataFrame(paired).to_csv(root / "results" / "paired.csv", index=False)
    for run, loss in (
        (base, {"l1": 1.0}),
        (cand, {"l1": 1.0, "sgl": {"weight": 0.1, "operator": "laplacian"}}),
    ):
        card = {
            "run": run,
            "arch": "edsr_baseline",
            "model_kwargs": {"n_feats": 8},
            "scale": scale,
            "loss": run.split("-")[1],
            "loss_spec": loss,
            "iterations": 30,
            "wall_time_s": 4.2,
        }
        (root / "models" / run).mkdir(parents=True)
        (root / "models" / run / "run.json").write_text(json.dumps(card))
        metrics = root / "models" / "live" / run / "plots" / "metrics"
        series = {
            "train/l1": [0.2 / (s + 1) for s in range(30)],
            "train/total": [0.25 / (s + 1) for s in range(30)],
            "train/lr": [5e-4] * 20 + [2.5e-4] * 10,  # where sgsr.train logs it
            "images_per_s": [40.0 + s % 3 for s in range(30)],
        }
        if "sgl" in loss:
            series["train/sgl"] = [0.5 / (s + 1) for s in range(30)]
        for name, values in series.items():
            _tsv(metrics / f"{name}.tsv", name.rsplit("/", 1)[-1], range(30), values)
        _tsv(metrics / "val" / "psnr.tsv", "psnr", (9, 19, 29), (24.0, 25.5, 26.1))
        (metrics.parent.parent / "metrics.json").write_text(
            json.dumps({"train": {"l1": 0.01}, "val": {"psnr": 26.1}, "step": 29})
        )
    return {"baseline": base, "candidate": cand, "bicubic": bic, "scale": scale}


def mark_pipeline(root: Path) -> Path:
    """What makes a folder a pipeline for the notebooks' walk up: dvc.yaml and params.yaml."""
    root.mkdir(parents=True, exist_ok=True)
    (root / "dvc.yaml").write_text("stages: {}\n")
    (root / "params.yaml").write_text("seed: 0\n")
    return root


def _tsv(path: Path, column: str, steps, values) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    lines = [f"step\t{column}"] + [f"{s}\t{v}" for s, v in zip(steps, values, strict=True)]
    path.write_text("\n".join(lines) + "\n")


@pytest.fixture(scope="module")
def fake_pipeline(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    root = tmp_path_factory.mktemp("pipeline")
    return root, build_fake_pipeline(root)


def _execute(name: str, root: Path, params: dict, tmp_path: Path) -> nbformat.NotebookNode:
    out = tmp_path / f"{name}.out.ipynb"
    report.execute_notebook(NOTEBOOKS / f"{name}.ipynb", out, params, cwd=root)
    return nbformat.read(str(out), as_version=4)


def _outputs(nb: nbformat.NotebookNode) -> tuple[str, int]:
    """All text the notebook printed/displayed, and how many PNGs it shows inline."""
    text, pngs = [], 0
    for cell in nb.cells:
        for o in cell.get("outputs", []):
            text.append(o.get("text", ""))
            data = o.get("data", {})
            text.append(data.get("text/plain", "") + data.get("text/markdown", ""))
            pngs += "image/png" in data
    return "\n".join(text), pngs


def test_notebooks_are_stored_clean_with_a_parameters_cell() -> None:
    import papermill as pm

    for name in report.NOTEBOOKS:
        path = NOTEBOOKS / f"{name}.ipynb"
        nb = nbformat.read(str(path), as_version=4)
        nbformat.validate(nb)
        declared = report.declared_parameters(path)
        assert {"scale", "figures_dir"} <= set(declared), name
        # papermill's own parser (used by `papermill --help-notebook`) sees every parameter
        assert list(pm.inspect_notebook(str(path))) == declared, name
        for cell in nb.cells:
            if cell.cell_type == "code":
                assert cell.outputs == [] and cell.execution_count is None, name


@pytest.mark.slow
def test_01_data(fake_pipeline, tmp_path: Path) -> None:
    root, runs = fake_pipeline
    figs = tmp_path / "figs01"
    nb = _execute(
        "01_data",
        root,
        {
            "scale": 2,
            "n_examples": 2,
            "figures_dir": str(figs),
            "test_sets": ["setA", "setB", "nosuch"],
        },
        tmp_path,
    )
    text, pngs = _outputs(nb)
    assert sorted(p.name for p in figs.iterdir()) == ["01_image_sizes.png", "01_lr_hr_pairs.png"]
    assert pngs == 2
    assert "'nosuch' has no prepared HR images" in text
    assert runs["candidate"] in text and "wall_time_s" in text  # run-card table
    assert "120" in text  # patch count from meta.json


@pytest.mark.slow
def test_02_gradient_maps(fake_pipeline, tmp_path: Path) -> None:
    root, runs = fake_pipeline
    figs = tmp_path / "figs02"
    nb = _execute(
        "02_gradient_maps",
        root,
        {
            "scale": 2,
            "zoom_size": 20,
            "operator": "hessian",
            "zoom_image": "setB/gray",
            "baseline_run": runs["baseline"],
            "candidate_run": runs["candidate"],
            "figures_dir": str(figs),
        },
        tmp_path,
    )
    text, pngs = _outputs(nb)
    assert {p.name for p in figs.iterdir()} == {
        "02_gradient_maps.png",
        "02_second_order_histogram.png",
        "02_second_order_stats.png",
    }
    assert pngs == 3
    assert "operator: hessian" in text
    assert "setB/gray: crop at" in text and "20x20 px" in text
    assert "energy ratio" in text


@pytest.mark.slow
def test_03_training(fake_pipeline, tmp_path: Path) -> None:
    root, runs = fake_pipeline
    figs = tmp_path / "figs03"
    nb = _execute(
        "03_training",
        root,
        {
            "scale": 2,
            "smooth": 3,
            "figures_dir": str(figs),
            "runs": [runs["baseline"], runs["candidate"], "absent-l1-x2"],
        },
        tmp_path,
    )
    text, pngs = _outputs(nb)
    # one figure per logged folder; the names come from the files, not from the notebook
    assert {p.name for p in figs.iterdir()} == {
        "03_curves_train.png",
        "03_curves_val.png",
        "03_curves_schedule.png",  # train/lr: a schedule, not a loss
        "03_curves_other.png",
    }
    assert pngs == 4
    assert "absent-l1-x2: no dvclive logs" in text
    assert "train/sgl" in text and "val/psnr" in text


@pytest.mark.slow
def test_04_results(fake_pipeline, tmp_path: Path) -> None:
    root, runs = fake_pipeline
    figs = tmp_path / "figs04"
    nb = _execute(
        "04_results",
        root,
        {
            "scale": 2,
            "zoom_size": 24,
            "n_zoom": 2,
            "figures_dir": str(figs),
            "runs": [runs["bicubic"], runs["baseline"], runs["candidate"]],
        },
        tmp_path,
    )
    text, pngs = _outputs(nb)
    names = {p.name for p in figs.iterdir()}
    assert {"04_metrics_per_run.png", "04_paired_heatmap.png", "04_paired_differences.png"} <= names
    zooms = sorted(n for n in names if n.startswith("04_zoom_"))
    assert len(zooms) == 2 and pngs == 5
    # the zoomed images are the two with the largest |SGL - L1| PSNR difference
    a = pd.read_csv(root / "results" / "metrics" / runs["baseline"] / "per_image.csv")
    b = pd.read_csv(root / "results" / "metrics" / runs["candidate"] / "per_image.csv")
    d = (b.set_index(["set", "image"])["psnr"] - a.set_index(["set", "image"])["psnr"]).abs()
    top = d.sort_values(ascending=False).index[:2]
    assert zooms == sorted(f"04_zoom_{s}_{i}.png" for s, i in top)
    # offline LPIPS is said, with evaluate's reason, not hidden
    assert "lpips: no values, column left out: alexnet weights absent" in text
    assert "comparisons at x2" in text


@pytest.mark.slow
def test_04_results_with_seeds(tmp_path: Path) -> None:
    root = tmp_path / "pipeline"
    runs = build_fake_pipeline(root, replicates=(1, 2))
    figs = tmp_path / "figs04"
    nb = _execute(
        "04_results",
        root,
        {"scale": 2, "zoom_size": 24, "n_zoom": 1, "figures_dir": str(figs)},
        tmp_path,
    )
    text, _ = _outputs(nb)
    assert (figs / "04_seeds.png").is_file()
    # the per-run figure still shows each configuration once (primary seeds only)
    assert f"runs: {runs['bicubic']}, {runs['baseline']}, {runs['candidate']};" in text
    assert "Against the seed-to-seed noise (3 seeds)" in text and "within the noise" in text


@pytest.mark.slow
def test_04_results_says_there_is_no_seed_spread_with_one_seed(fake_pipeline, tmp_path) -> None:
    pytest.importorskip("papermill")
    root, _ = fake_pipeline
    nb = _execute("04_results", root, {"scale": 2, "n_zoom": 0, "figures_dir": str(tmp_path)},
                  tmp_path)  # fmt: skip
    text, _ = _outputs(nb)
    assert "One seed per configuration" in text and not (tmp_path / "04_seeds.png").exists()


EMPTY_MESSAGES = {
    "01_data": ["No prepared test set", "No patch store metadata", "No trained run at x3"],
    "02_gradient_maps": ["No L1/SGL pair of runs found", "No SR outputs to measure"],
    "03_training": ["No training logs under models/live at x3"],
    "04_results": ["run `sgsr summarize`", "No per-image metrics to plot"],
}


@pytest.mark.slow
@pytest.mark.parametrize("name", report.NOTEBOOKS)
def test_notebook_on_an_empty_pipeline_says_what_is_missing(name: str, tmp_path: Path) -> None:
    root = mark_pipeline(tmp_path / "empty")
    figs = tmp_path / "figs"
    nb = _execute(name, root, {"scale": 3, "figures_dir": str(figs)}, tmp_path)
    text, pngs = _outputs(nb)
    for message in EMPTY_MESSAGES[name]:
        assert message in text, (name, message, text)
    assert pngs == 0
    assert not figs.exists() or not any(figs.iterdir())


def test_find_pipeline_walks_up_or_takes_the_parameter(tmp_path: Path) -> None:
    root = mark_pipeline(tmp_path / "repo")
    study = mark_pipeline(root / "profiles" / "study")
    (root / "notebooks").mkdir()
    assert layout.find_pipeline(start=root / "notebooks") == Path("..")
    assert layout.find_pipeline(start=root) == Path(".")
    assert layout.find_pipeline(start=study) == Path(".")  # the nearest one
    # an explicit folder: relative to the kernel's folder, else to the pipeline found above it
    assert layout.find_pipeline("profiles/study", start=root / "notebooks") == Path(
        "../profiles/study"
    )
    assert layout.find_pipeline("../profiles/study", start=root / "notebooks") == Path(
        "../profiles/study"
    )
    with pytest.raises(FileNotFoundError, match="'profiles/nosuch' is not a folder"):
        layout.find_pipeline("profiles/nosuch", start=root / "notebooks")
    with pytest.raises(FileNotFoundError, match="pass the `pipeline` parameter"):
        layout.find_pipeline(start=tmp_path)
    # a hand run never writes into reports/figures (a DVC output) unless told to
    assert layout.notebook_figures(None, Path("..")) == Path("figures")
    assert layout.notebook_figures("reports/figures", Path("..")) == Path("../reports/figures")


@pytest.mark.slow
def test_notebooks_run_from_their_folder_with_nbconvert(tmp_path: Path) -> None:
    """What a user does: `jupyter nbconvert --execute` (or Jupyter, which also starts the
    kernel in the notebook's folder) on the notebooks of a pipeline, with default parameters."""
    import shutil
    import subprocess
    import sys

    root = tmp_path / "repo"
    runs = build_fake_pipeline(root, scale=4)
    shutil.copytree(NOTEBOOKS, root / "notebooks")
    out = tmp_path / "executed"
    names = [f"{n}.ipynb" for n in report.NOTEBOOKS]
    cmd = [sys.executable, "-m", "jupyter", "nbconvert", "--to", "notebook", "--execute",
           "--output-dir", str(out), *names]  # fmt: skip
    done = subprocess.run(cmd, cwd=root / "notebooks", capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-3000:]
    texts = {n: _outputs(nbformat.read(str(out / f"{n}.ipynb"), as_version=4))
             for n in report.NOTEBOOKS}  # fmt: skip
    run_list = f"runs: {runs['bicubic']}, {runs['baseline']}, {runs['candidate']};"
    assert run_list in texts["04_results"][0], texts["04_results"][0]
    assert "No results/summary.csv" not in texts["04_results"][0]
    assert runs["candidate"] in texts["01_data"][0] and "train/sgl" in texts["03_training"][0]
    for name, (text, pngs) in texts.items():
        assert pngs >= 2, (name, text)
        assert "pipeline: ..; figures saved to figures" in text, name
    figures = sorted(p.name for p in (root / "notebooks" / "figures").iterdir())
    assert "04_paired_heatmap.png" in figures and "03_curves_train.png" in figures
    assert "01_lr_hr_pairs.png" in figures and "02_gradient_maps.png" in figures
    assert not (root / "reports").exists()  # the DVC output is left alone
