"""`sgsr results`: the run x set table printed at the end of `make repro`."""

from __future__ import annotations

import io
from pathlib import Path

import pandas as pd
import pytest

from sgsr.cli import main
from sgsr.results import format_results, gains_over_bicubic, show

SUMMARY = """run,model,loss,scale,set,n_images,psnr,ssim,lpips,fid
bicubic-x4,bicubic,,4,A,3,27.50,0.7600,,
bicubic-x4,bicubic,,4,B,2,30.00,0.8000,,
net-l1-x4,net,l1,4,A,3,28.25,0.7900,,
net-l1-x4,net,l1,4,B,2,29.75,0.7950,,
net-sgl-x4,net,sgl,4,A,3,28.40,0.7920,,
net-sgl-x4,net,sgl,4,B,2,30.10,0.8010,,
"""


def _summary(tmp_path: Path, text: str = SUMMARY) -> Path:
    (tmp_path / "results").mkdir(exist_ok=True)
    (tmp_path / "results" / "summary.csv").write_text(text)
    return tmp_path


def test_gain_is_against_bicubic_of_the_same_set() -> None:
    df = pd.read_csv(io.StringIO(SUMMARY))
    gains = gains_over_bicubic(df).round(6)
    assert gains[:2].isna().all()  # the baseline has no gain over itself
    assert gains[2:].tolist() == [0.75, -0.25, 0.9, 0.1]


def test_table_rows_columns_and_signs(tmp_path: Path) -> None:
    text = show(_summary(tmp_path))
    lines = text.splitlines()
    assert lines[0].split() == ["run", "set", "PSNR-Y", "dB", "SSIM", "vs", "bicubic"]
    rows = {tuple(ln.split()[:2]): ln for ln in lines[2:8]}
    assert rows[("net-l1-x4", "A")].endswith("+0.75 dB")
    assert rows[("net-l1-x4", "B")].endswith("-0.25 dB")  # worse than bicubic shows as such
    assert rows[("bicubic-x4", "A")].rstrip().endswith("0.7600")  # no gain for the baseline
    assert "LPIPS" not in lines[0]  # never computed: no column of n/a
    assert "LPIPS and FID not computed" in text
    assert "Tables: " in text and "Report:" not in text  # no report yet


def test_lpips_column_and_report_path_when_present(tmp_path: Path) -> None:
    with_lpips = SUMMARY.replace("0.7900,,", "0.7900,0.3125,")
    base = _summary(tmp_path, with_lpips)
    (base / "reports").mkdir()
    (base / "reports" / "report.html").write_text("<html></html>")
    text = show(base)
    assert "LPIPS" in text.splitlines()[0]
    assert "0.3125" in text and "n/a" in text  # the other rows have none
    assert "LPIPS and FID" not in text and "FID not computed" in text
    assert f"Report: {base / 'reports' / 'report.html'}" in text


def test_seed_replicates_are_averaged() -> None:
    rows = SUMMARY.splitlines()
    header = rows[0] + ",seed"
    body = [r + ",0" for r in rows[1:]] + [rows[3].replace("28.25", "28.75") + ",1"]
    df = pd.read_csv(io.StringIO("\n".join([header, *body])))
    table = format_results(df)
    line = next(ln for ln in table.splitlines() if ln.startswith("net-l1-x4") and " A " in ln)
    assert "28.50" in line and line.endswith("+1.00 dB")


def test_cli_results_and_missing_summary(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    base = _summary(tmp_path)
    (base / "params.yaml").write_text("seed: 0\n")
    assert main(["--params", str(base / "params.yaml"), "results"]) == 0
    assert "net-sgl-x4" in capsys.readouterr().out
    empty = tmp_path / "empty"
    empty.mkdir()
    assert main(["--params", str(empty / "params.yaml"), "results"]) == 2
    err = capsys.readouterr().err
    assert "summary.csv not found" in err and "make repro" in err
