"""The ``gpu`` profile end to end through real ``dvc repro`` on the CPU, with tiny params
(conftest.GPU_TINY): download from the local mirror, prepare, four runs trained two
per process, infer, evaluate, summarize and the report. On the CPU its ``capture: cuda_graph``
falls back to the eager step and says so. Slow (minutes) and needs ../shared/datasets."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import GPU_TINY, REPO

from sgsr.config import load_config
from sgsr.pipeline_copy import dvc_repro, make_profile_copy, stages_run, tool_env

pytestmark = [pytest.mark.slow, pytest.mark.dataset]

RUNS = ("edsr_baseline-l1-x4", "edsr_baseline-l1-x4-s1", "edsr_baseline-sgl_hess-x4",
        "edsr_baseline-sgl_hess-x4-s1")  # fmt: skip


def test_the_shipped_gpu_profile_is_the_issue_matrix_with_the_gpu_options() -> None:
    cfg = load_config(REPO / "profiles" / "gpu" / "params.yaml")
    assert len(cfg.runs) == 15 and cfg.experiment.replicates == (1, 2)
    assert cfg.run("edsr_baseline-l1-x4").model_kwargs == {}  # EDSR-baseline 16 x 64
    t = cfg.train
    assert (t.iterations, t.batch_size, t.lr_patch, t.lr, t.warmup, t.ema) == (
        8000, 16, 48, 3e-4, 400, 0.999,
    )  # fmt: skip
    assert (t.capture, t.optimizer_impl) == ("cuda_graph", "auto") and t.runs_per_process > 1
    assert "lpips_vgg" in cfg.losses and "lpips_vgg" not in cfg.experiment.losses


def test_gpu_profile_runs_end_to_end_on_cpu_with_tiny_params(
    tmp_path: Path, shared_datasets: Path
) -> None:
    env = tool_env(REPO / "src")
    env["OMP_NUM_THREADS"] = "1"
    folder = make_profile_copy(REPO, tmp_path / "repo", GPU_TINY, env=env, datasets=shared_datasets)
    _, out = dvc_repro(folder, env=env)
    ran = stages_run(out)
    assert {"download", "prepare", "bicubic@bicubic-x4", "summarize", "report"} <= set(ran)
    trains = [s for s in ran if s.startswith("train")]
    assert len(trains) == 4, ran
    # two runs per process: the first train stage of each pair trained its companion too
    assert out.count("training 2 runs at once in this process") == 2, out[-3000:]
    assert "train.capture: cuda_graph needs a CUDA device" in out
    bicubic = json.loads((folder / "results/metrics/bicubic-x4/metrics.json").read_text())
    assert 27.5 < bicubic["Set5"]["psnr"] < 29.5  # the protocol: 28.42 dB on Set5 x4
    for run in RUNS:
        card = json.loads((folder / "models" / run / "run.json").read_text())
        assert card["iterations"] == 4 and card["train"]["capture"] == "cuda_graph"
        metrics = json.loads((folder / "results/metrics" / run / "metrics.json").read_text())
        assert 10 < metrics["Set5"]["psnr"] < 40
    summary = (folder / "results/summary_seeds.csv").read_text()
    assert "sgl_hess" in summary
    assert (folder / "reports/report.html").stat().st_size > 10_000
    _, again = dvc_repro(folder, env=env)
    assert stages_run(again) == []
