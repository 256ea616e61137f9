"""The default profile end to end through real `dvc repro`, in a throwaway copy of the pipeline.

Slow (minutes): marked, and still run in CI. Two module-scoped pipeline runs serve every test:
the default profile as shipped (its results judged), and the same stages at tiny size with a
replicate seed (DVC's bookkeeping: seeded stages, what a params change reruns).
"""

from __future__ import annotations

import contextlib
import functools
import json
import re
import subprocess
import threading
from collections.abc import Iterator
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from conftest import REPO

from sgsr.pipeline_copy import dvc, make_pipeline_copy, tool_env

pytestmark = pytest.mark.slow

RUNS = ("edsr_tiny-l1-x4", "edsr_tiny-sgl-x4")
#: Overrides for the tests that drive the default profile's stages without judging its results:
#: a one-block network trained for two updates, PSNR and SSIM only, no metric backbones.
TINY = {
    "data": {"metric_weights": False},
    "prepare": {"stride": 96},
    "models": {"edsr_tiny": {"n_resblocks": 1, "n_feats": 8}},
    "train": {"iterations": 2, "warmup": 0, "checkpoint_every": 1, "val_every": 2, "log_every": 1},
    "evaluate": {"metrics": ["psnr", "ssim"], "dvc_metrics": [], "bootstrap": 200,
                 "fid_bootstrap": 0},
}  # fmt: skip


def _ran(output: str) -> set[str]:
    return set(re.findall(r"Running stage '([^']+)'", output))


@pytest.fixture(scope="module")
def pipeline(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    repo = make_pipeline_copy(REPO, tmp_path_factory.mktemp("e2e") / "repo")
    remote = repo.parent / "remote"
    dvc(["remote", "add", "-d", "local", str(remote)], repo)
    _, out = dvc(["repro"], repo)
    return repo, out


@pytest.fixture(scope="module")
def tiny_pipeline(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    """The default profile's stages, report included, with the TINY overrides and one
    replicate seed: for the tests of DVC's bookkeeping, which do not judge the results."""
    params = TINY | {"experiment": {"replicates": [1]}}
    repo = make_pipeline_copy(REPO, tmp_path_factory.mktemp("tiny") / "repo", params)
    _, out = dvc(["repro"], repo)
    return repo, out


def test_default_profile_produces_report_metrics_and_figures(pipeline: tuple[Path, str]) -> None:
    repo, out = pipeline
    assert {f"train@{r}" for r in RUNS} | {"bicubic@bicubic-x4"} <= _ran(out)
    for run in (*RUNS, "bicubic-x4"):
        metrics = json.loads((repo / "results/metrics" / run / "metrics.json").read_text())
        assert list(metrics) == ["sample_test"]  # numbers only: one dvc column per metric
        psnr = metrics["sample_test"]["psnr"]
        assert isinstance(psnr, float) and 15 < psnr < 60, psnr
        info = json.loads((repo / "results/metrics" / run / "metrics_info.json").read_text())
        assert info["run"] == run and info["sets"]["sample_test"]["n_images"] >= 1
    bicubic = json.loads((repo / "results/metrics/bicubic-x4/metrics.json").read_text())
    for run in RUNS:
        assert (repo / "models" / run / "model.safetensors").stat().st_size > 10_000
        # the default profile must show super-resolution working: >= 0.5 dB over bicubic
        metrics = json.loads((repo / "results/metrics" / run / "metrics.json").read_text())
        gain = metrics["sample_test"]["psnr"] - bicubic["sample_test"]["psnr"]
        assert gain >= 0.5, (run, gain)
    summary = (repo / "results/summary.csv").read_text().splitlines()
    assert len(summary) == 1 + 3  # header + two trained runs + bicubic, one test set
    assert "edsr_tiny-sgl-x4" in (repo / "results/paired.csv").read_text()
    html = (repo / "reports/report.html").read_text()
    assert html.count("data:image/png;base64") >= 4
    figures = list((repo / "reports/figures").glob("*.png"))
    assert len(figures) >= 4
    assert sorted(p.name for p in (repo / "reports").glob("*.ipynb")) == [
        "01_data.ipynb",
        "02_gradient_maps.ipynb",
        "03_training.ipynb",
        "04_results.ipynb",
    ]


def test_second_repro_is_a_noop(pipeline: tuple[Path, str]) -> None:
    repo, _ = pipeline
    _, out = dvc(["repro"], repo)
    assert _ran(out) == set(), out
    _, status = dvc(["status"], repo)
    assert "up to date" in status


def test_teammate_clones_pulls_and_recomputes_nothing(pipeline: tuple[Path, str]) -> None:
    """The README's team workflow: dvc push + git commit; a fresh clone, dvc pull, dvc repro."""
    repo, _ = pipeline
    dvc(["push"], repo)
    env = tool_env(REPO / "src")
    subprocess.run(["git", "add", "-A"], cwd=repo, check=True, env=env)
    subprocess.run(["git", "commit", "-qm", "results"], cwd=repo, check=True, env=env)
    mate = repo.parent / "teammate"
    subprocess.run(["git", "clone", "-q", str(repo), str(mate)], check=True, env=env)
    assert not (mate / "models" / RUNS[1] / "model.safetensors").exists()
    dvc(["pull"], mate)
    assert (mate / "models" / RUNS[1] / "model.safetensors").is_file()
    assert (mate / "reports" / "report.html").is_file()
    _, status = dvc(["status"], mate)
    assert "up to date" in status, status
    _, out = dvc(["repro"], mate)
    assert _ran(out) == set(), out


@contextlib.contextmanager
def serve(folder: Path) -> Iterator[tuple[str, list[str]]]:
    """A real static web server for `folder` on 127.0.0.1: (its URL, the paths requested)."""
    requested: list[str] = []

    class Handler(SimpleHTTPRequestHandler):
        def log_message(self, format: str, *args: object) -> None:  # quiet, but recorded
            requested.append(self.path)

    server = ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(Handler, directory=folder))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", requested
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


def test_teammate_pulls_over_http_and_recomputes_nothing(pipeline: tuple[Path, str]) -> None:
    """The README's web publishing: the pushed remote folder served by any static web server,
    a fresh clone pulls from it with DVC's read-only http remote and recomputes nothing."""
    repo, _ = pipeline
    dvc(["push"], repo)
    env = tool_env(REPO / "src")
    subprocess.run(["git", "add", "-A"], cwd=repo, check=True, env=env)
    subprocess.run(
        ["git", "commit", "-qm", "results", "--allow-empty"], cwd=repo, check=True, env=env
    )
    mate = repo.parent / "web-teammate"
    subprocess.run(["git", "clone", "-q", str(repo), str(mate)], check=True, env=env)
    with serve(repo.parent / "remote") as (url, requested):
        dvc(["remote", "add", "--local", "web", url], mate)
        dvc(["pull", "-r", "web"], mate)
    assert any(p.startswith("/files/md5/") for p in requested), requested[:5]
    for run in RUNS:
        assert (mate / "models" / run / "model.safetensors").is_file()
    assert (mate / "reports" / "report.html").is_file()
    _, status = dvc(["status"], mate)
    assert "up to date" in status, status
    _, out = dvc(["repro"], mate)
    assert _ran(out) == set(), out


def test_metrics_show_has_one_column_per_run_and_metric(pipeline: tuple[Path, str]) -> None:
    """One metrics file (results/metrics.json) with short keys: `<loss>.<metric>` for the
    default profile's one model, scale and test set; the per-run files are not DVC metrics."""
    repo, _ = pipeline
    _, out = dvc(["metrics", "show"], repo)
    lines = out.splitlines()
    header = lines[0].split()
    assert {"l1.psnr", "sgl.psnr", "sgl.ssim", "bicubic.psnr"} <= set(header), header
    assert not [h for h in header if "/" in h or h.split(".")[-1] in ("notes", "n_images")]
    assert [ln.split()[0] for ln in lines[1:] if ln.strip()] == ["results/metrics.json"]


def test_replicate_seeds_run_through_dvc_and_summarize(tiny_pipeline: tuple[Path, str]) -> None:
    """One replicate seed: the seeded stages run, and summarize reports seed statistics for
    every paired difference."""
    import csv

    repo, out = tiny_pipeline
    assert {"train@edsr_tiny-l1-x4-s1", "evaluate@edsr_tiny-sgl-x4-s1"} <= _ran(out)
    card = json.loads((repo / "models/edsr_tiny-sgl-x4-s1/run.json").read_text())
    assert card["seed"] == 1 and card["run"] == "edsr_tiny-sgl-x4-s1"
    with open(repo / "results/summary_seeds.csv", newline="") as fh:
        spread = [r for r in csv.DictReader(fh) if r["metric"] == "psnr"]
    assert {r["n_seeds"] for r in spread} == {"2"} and all(float(r["sd"]) >= 0 for r in spread)
    with open(repo / "results/paired.csv", newline="") as fh:
        paired = list(csv.DictReader(fh))
    assert paired and all(r["n_seeds"] == "2" and r["seeds"] == "0;1" for r in paired)
    assert all(r["exceeds_seed_spread"] in ("True", "False") for r in paired)
    assert all(float(r["seed_ci_low"]) <= float(r["seed_ci_high"]) for r in paired)


def test_changing_the_sgl_weight_reruns_exactly_its_dependants(
    tiny_pipeline: tuple[Path, str],
) -> None:
    """Both seeds of the sgl run train with the new weight; the l1 runs, bicubic and the data
    stages stay."""
    repo, _ = tiny_pipeline
    _, out = dvc(["exp", "run", "-S", "losses.sgl.sgl.weight=0.05"], repo)
    runs = ("edsr_tiny-sgl-x4", "edsr_tiny-sgl-x4-s1")
    stages = {f"{fam}@{run}" for fam in ("train", "infer", "evaluate") for run in runs}
    assert _ran(out) == stages | {"summarize", "report"}, out
