"""Smoke test: every benchmark runs at tiny sizes and its JSON has every field the report needs."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from benchmarks import run as bench

FIELDS = {
    "train": ["sgl_overhead"],
    "data": ["patches_per_s", "ratio_w0"],
    "infer": ["models", "tile", "overlap"],
    "eval": ["seconds_per_image"],
    "eval_study": ["per_mp", "run", "load_average_at_start"],
    "fid": ["seconds_per_patch", "study_fid_minutes", "summarize_minutes"],
    "gpu": ["measured", "steps", "sgl_overhead", "unmeasured_variants", "sharing", "loader"],
    "pipeline": ["noop_repro_seconds", "stage_seconds", "pipeline_seconds"],
}


@pytest.mark.slow
def test_every_benchmark_runs_quick_and_writes_json_and_markdown(tmp_path: Path) -> None:
    report = bench.main(["--quick", "--out", str(tmp_path)])
    written = json.loads((tmp_path / "quick.json").read_text())
    assert written == json.loads(json.dumps(report))
    assert set(written["results"]) == set(bench.BENCHMARKS)
    for key in ("cpu", "cores", "torch", "gpu"):
        assert key in written["machine"]
    for name, fields in FIELDS.items():
        if "skipped" in written["results"][name]:  # e.g. fid without ../shared/datasets
            continue
        for field in fields:
            assert field in written["results"][name], f"{name} lacks {field}"
    overhead = written["results"]["train"]["sgl_overhead"]
    assert set(overhead) >= {"laplacian", "hessian", "gog"}
    assert all(isinstance(v, float) for v in overhead.values())
    assert "## train" in (tmp_path / "quick.md").read_text()
    goals = written["goals"]
    assert "sgl_overhead_laplacian <= 0.02" in goals and "noop_dvc_repro <= 2 s" in goals
    assert all(isinstance(g["met"], bool) for g in goals.values())


def test_unknown_benchmark_is_refused(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        bench.main(["--only", "nope"])
    assert "nope" in capsys.readouterr().err
