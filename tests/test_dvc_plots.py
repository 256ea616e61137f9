"""dvc.yaml's top-level plots overlay the runs, and `sgsr plots` renders them offline."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import pandas as pd
import pytest
import yaml

from sgsr import dvc_plots, layout
from sgsr.live import overlay_tables

REPO = Path(__file__).resolve().parents[1]


def test_overlay_tables_put_every_run_in_one_file_per_folder() -> None:
    curves = pd.DataFrame(
        [
            ("a-l1-x4", "train/l1", "train", 10, 0.5),
            ("a-sgl-x4", "train/l1", "train", 10, 0.6),
            ("a-sgl-x4", "train/sgl", "train", 10, 0.1),
            ("a-l1-x4", "val/psnr", "val", 10, 25.0),
            ("a-l1-x4", "train/lr", "schedule", 10, 1e-3),
        ],
        columns=["run", "metric", "group", "step", "value"],
    )
    tables = overlay_tables(curves)
    assert set(tables) == {"train", "val"}
    assert tables["train"]["metric"].tolist() == ["l1", "l1", "sgl"]  # no lr: not a loss
    assert set(tables["train"]["run"]) == {"a-l1-x4", "a-sgl-x4"}
    assert overlay_tables(curves[curves["group"] == "val"])["train"].empty  # still a table


@pytest.mark.slow
def test_dvc_plots_render_offline_with_runs_overlaid(tmp_path: Path) -> None:
    """The repository's plots section and templates, on two runs' curves, through
    `dvc plots show`: one chart per definition (not one per file per run), each holding both
    runs, and a page that loads no script from the network."""
    spec = yaml.safe_load((REPO / "dvc.yaml").read_text())
    (tmp_path / "dvc.yaml").write_text(yaml.safe_dump({"plots": spec["plots"]}))
    (tmp_path / "params.yaml").write_text("root: .\n")
    shutil.copytree(REPO / ".dvc" / "plots", tmp_path / ".dvc" / "plots")
    subprocess.run(["dvc", "init", "--no-scm", "-q", "-f"], cwd=tmp_path, check=True)
    shutil.copytree(REPO / ".dvc" / "plots", tmp_path / ".dvc" / "plots", dirs_exist_ok=True)
    rows = [
        (run, f"{group}/{m}", group, s, v + s)
        for run in ("m-l1-x4", "m-sgl-x4")
        for group, m, v in (("train", "l1", 0.1), ("train", "total", 0.2), ("val", "psnr", 20))
        for s in (10, 20)
    ]
    tables = overlay_tables(pd.DataFrame(rows, columns=["run", "metric", "group", "step", "value"]))
    for group, df in tables.items():
        path = tmp_path / layout.CURVES / f"{group}.csv"
        path.parent.mkdir(parents=True, exist_ok=True)
        df.to_csv(path, index=False)

    index = dvc_plots.show(tmp_path)
    html = index.read_text()
    assert index == tmp_path / "dvc_plots" / "index.html"
    assert dvc_plots.network_scripts(html) == []
    assert "window.vegaEmbed" in html  # the library is inline
    specs = [json.loads(s) for s in re.findall(r"var spec = (\{.*?\});\n", html, re.S)]
    assert len(specs) == 2, len(specs)
    for chart in specs:
        runs = {p["run"] for p in chart["data"]["values"]}
        assert runs == {"m-l1-x4", "m-sgl-x4"}, chart["title"]
        assert chart["spec"]["encoding"]["color"]["field"] == "run"
    assert {m["metric"] for m in specs[1]["data"]["values"]} == {"l1", "total"}
