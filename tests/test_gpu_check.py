"""benchmarks/gpu_check.py on the CPU: it names what is missing and how to fetch it, stops
without a GPU, runs the gpu profile's stage commands without DVC (what a bare GPU machine
does), and projects the full profile's time from a short run."""

from __future__ import annotations

import copy
import json
import math
import sys
from pathlib import Path

import pytest
import torch
from conftest import GPU_TINY

from benchmarks import gpu_check
from sgsr.pipeline_copy import deep_update


def test_missing_modules_are_named_with_the_pinned_wheels_to_fetch(monkeypatch) -> None:
    monkeypatch.setattr(
        gpu_check, "NEEDS", {"core": {"numpy": "numpy"}, "train": {"dvclive": "dvclive",
                             "sgsr_absent_module": "sgsr-absent"}},
    )  # fmt: skip
    pre = gpu_check.prerequisites(gpu_check._env(None))
    assert pre["missing"] == {
        "train": {"sgsr_absent_module": "ModuleNotFoundError: No module named 'sgsr_absent_module'"}
    }
    assert "sgsr-absent" in pre["fetch_elsewhere"] and "--no-deps" in pre["fetch_elsewhere"]
    assert pre["torch"] == torch.__version__ and pre["cuda"] == torch.cuda.is_available()


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the CPU-only refusal")
def test_without_a_gpu_it_stops_and_says_so(tmp_path: Path) -> None:
    code = gpu_check.main(["--out", str(tmp_path / "check.json")])
    report = json.loads((tmp_path / "check.json").read_text())
    assert code == 2
    assert report["stopped"] == "no CUDA device: this check is for a GPU machine"
    assert report["prerequisites"]["python"] == ".".join(map(str, sys.version_info[:3]))


def test_projection_scales_training_by_iterations_and_the_rest_by_runs() -> None:
    profile = {
        "ok": True, "iterations": 400, "mode": "dvc repro",
        "data": {"seconds": 20.0}, "train": {"seconds": 40.0}, "rest": {"seconds": 60.0},
        "runs": {f"r{i}": {"wall_time_s": 30.0 - i, "samples": 6400} for i in range(5)},
        "groups": [["r0", "r1", "r2", "r3", "r4"]],
    }  # fmt: skip
    p = gpu_check.project(profile)
    # 3 groups of 5 x (10 s overhead + 30 s x 8000/400) = 1830 s; rest 60 s x 16/6 = 160 s
    assert p["train_seconds_full"] == 1830.0 and p["rest_seconds_full"] == 160.0
    assert p["total_minutes_full"] == round((20 + 1830 + 160) / 60, 2)
    assert p["samples_per_s_all_runs"] == round(5 * 6400 / 30.0, 1)
    assert gpu_check.project({"ok": False}) == {}
    # one run at a time (runs_per_process 1): five loops of ~28 s one after another
    alone = gpu_check.project({**profile, "groups": [], "train": {"seconds": 150.0}})
    assert alone["train_seconds_full"] == 3 * (10 + 140 * 20)


@pytest.mark.slow
@pytest.mark.dataset
def test_short_profile_without_dvc_runs_the_stage_commands(shared_datasets: Path) -> None:
    overrides = deep_update(copy.deepcopy(GPU_TINY), {
        "experiment": {"replicates": []},
        "train": {"iterations": 4, "checkpoint_every": 4, "val_every": 4},
    })  # fmt: skip
    env = gpu_check._env(None)
    env["OMP_NUM_THREADS"] = "1"
    out = gpu_check.short_profile(env, overrides, 600, use_dvc=False, report=False)
    assert out["ok"], out
    assert out["mode"] == "sgsr stage commands (no dvc)"
    assert set(out["runs"]) == {"edsr_baseline-l1-x4", "edsr_baseline-sgl_hess-x4"}
    assert out["groups"] == [["edsr_baseline-l1-x4", "edsr_baseline-sgl_hess-x4"]]  # at once
    assert 27.5 < out["set5_psnr"]["bicubic-x4"] < 29.5
    p = gpu_check.project(out)
    assert math.isfinite(p["total_minutes_full"]) and p["total_minutes_full"] > 0
