"""The report notebooks execute under papermill against a small synthetic pipeline folder.

`build_fake_pipeline` writes every input the notebooks read, in the formats the stages write
(images via sgsr.imaging, dvclive TSVs, the declared CSV columns), in about a second; the tests
then run each notebook on this interpreter's kernel with non-default parameters.
"""

from __future__ import annotations

from pathlib import Path

import nbformat
import pandas as pd
import pytest
from fake_pipeline import (  # the pipeline the notebooks run against
    NOTEBOOKS,
    build_fake_pipeline,
    mark_pipeline,
)

from sgsr import layout, report


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
