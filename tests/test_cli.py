from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from sgsr.cli import main

REPO = Path(__file__).resolve().parents[1]


def test_runs_lists_the_matrix(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--params", str(REPO / "params.yaml"), "runs"]) == 0
    assert capsys.readouterr().out.split() == ["edsr_tiny-l1-x4", "edsr_tiny-sgl-x4"]


def test_bad_params_exit_2_with_the_key(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    params = tmp_path / "params.yaml"
    params.write_text((REPO / "params.yaml").read_text().replace("batch_size: 8", "batch_size: 0"))
    assert main(["--params", str(params), "train", "--run", "edsr_tiny-l1-x4"]) == 2
    err = capsys.readouterr().err
    assert "train.batch_size" in err and str(params) in err


def test_unknown_run_names_the_available_ones(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--params", str(REPO / "params.yaml"), "train", "--run", "x-y-x4"]) == 2
    assert "edsr_tiny-sgl-x4" in capsys.readouterr().err


def test_console_script_help_is_fast_and_lists_stages() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "sgsr.cli", "--help"], capture_output=True, text=True, check=True
    ).stdout
    for stage in (
        "download",
        "prepare",
        "train",
        "infer",
        "evaluate",
        "summarize",
        "report",
        "upscale",
    ):
        assert stage in out
