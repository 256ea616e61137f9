"""sgsr.report: the readers the notebooks share, and the report stage end to end."""

from __future__ import annotations

import json
import os
import re
import shutil
from pathlib import Path

import nbformat
import numpy as np
import pandas as pd
import pytest
from fake_pipeline import build_fake_pipeline, mark_pipeline

from sgsr import readers, report, runs
from sgsr.analysis import max_diff_box
from sgsr.config import parse_config
from sgsr.live import read_live
from sgsr.readers import verdicts

REPO = Path(__file__).resolve().parents[1]
IMG = re.compile(r"<img\b[^>]*\bsrc=\"data:image/png;base64,")


def _config(pipeline: Path, root: Path, scale: int = 2, zoom_image: str | None = None):
    raw = {
        "root": str(root),
        "prepare": {"scales": [scale]},
        "models": {"tiny": {"arch": "edsr_baseline", "n_resblocks": 1, "n_feats": 8}},
        "losses": {
            "l1": {"l1": 1.0},
            "sgl": {"l1": 1.0, "sgl": {"weight": 0.1, "operator": "laplacian"}},
        },
        "experiment": {"models": ["tiny"], "losses": ["l1", "sgl"], "scales": [scale]},
        "data": {"test_sets": ["setA", "setB"]},
        "report": {"zoom_image": zoom_image, "zoom_size": 16},
    }
    return parse_config(raw, source=str(pipeline / "params.yaml"))


# ---------------------------------------------------------------------------------------------
# Fast unit tests of the readers


def test_parse_run_names() -> None:
    assert runs.parse_run("edsr_tiny-sgl-x4") == {
        "run": "edsr_tiny-sgl-x4",
        "model": "edsr_tiny",
        "loss": "sgl",
        "scale": 4,
        "seed": None,
    }
    assert runs.parse_run("edsr_tiny-sgl-x4-s2")["seed"] == 2
    assert runs.parse_run("my-net-l1-x3")["model"] == "my-net"
    assert runs.parse_run("bicubic-x2")["model"] == "bicubic"
    with pytest.raises(ValueError, match="checkpoints"):
        runs.parse_run("checkpoints")


def test_pair_from_config_follows_the_experiment_baseline(tmp_path: Path) -> None:
    """The baseline is experiment.baseline (summarize's rule), whatever the names; the
    candidate the first other loss with an sgl term. Replicate runs are not in the figures."""
    raw = {
        "models": {"m": {"arch": "edsr_baseline"}},
        "losses": {
            "plain": {"l1": 1.0},
            "grad": {"l1": 1.0, "grad1": 0.1},
            "ours": {"l1": 1.0, "sgl": 0.1},
        },
        "experiment": {
            "models": ["m"],
            "losses": ["ours", "grad", "plain"],
            "scales": [4],
            "baseline": "plain",
            "replicates": [1],
        },
    }
    cfg = parse_config(raw, source=str(tmp_path / "params.yaml"))
    assert report.pair_from_config(cfg, 4) == ("m-plain-x4", "m-ours-x4")
    default = {**raw, "experiment": {**raw["experiment"], "baseline": None}}
    cfg_default = parse_config(default, source=str(tmp_path / "params.yaml"))
    assert report.pair_from_config(cfg_default, 4) == ("m-ours-x4", "m-grad-x4")
    params = report.notebook_parameters(cfg, "x/figures")
    assert params["runs"] == ["bicubic-x4", "m-ours-x4", "m-grad-x4", "m-plain-x4"]
    assert params["operator"] == "laplacian" and params["scale"] == 4
    assert (params["baseline_run"], params["candidate_run"]) == ("m-plain-x4", "m-ours-x4")
    # once summarize has written paired.csv, the report compares the pair it wrote
    (tmp_path / "results").mkdir()
    row = {
        "set": "s",
        "scale": 4,
        "baseline": "m-ours-x4",
        "candidate": "m-plain-x4",
        "metric": "psnr",
        "mean_diff": 0.1,
        "ci_low": 0,
        "ci_high": 0.2,
    }
    pd.DataFrame([row]).to_csv(tmp_path / "results" / "paired.csv", index=False)
    params = report.notebook_parameters(cfg, "x/figures")
    assert (params["baseline_run"], params["candidate_run"]) == ("m-ours-x4", "m-plain-x4")


def test_pick_pair_prefers_paired_csv_then_names(tmp_path: Path) -> None:
    runs = ["bicubic-x4", "a-l1-x4", "a-sgl-x4", "b-l1-x4", "b-sgl-x4"]
    assert readers.pick_pair(runs, tmp_path, 4) == ("a-l1-x4", "a-sgl-x4")
    assert readers.pick_pair(runs, tmp_path, 4, baseline="b-l1-x4") == ("b-l1-x4", "b-sgl-x4")
    assert readers.pick_pair(["a-l1-x4"], tmp_path, 4) == (None, None)
    pd.DataFrame(
        [
            {
                "set": "s",
                "scale": 4,
                "baseline": "b-l1-x4",
                "candidate": "b-sgl-x4",
                "metric": "psnr",
                "mean_diff": 0.1,
                "ci_low": 0,
                "ci_high": 0.2,
            }
        ]
    ).to_csv(tmp_path / "paired.csv", index=False)
    assert readers.pick_pair(runs, tmp_path, 4) == ("b-l1-x4", "b-sgl-x4")


def test_read_live_plots_whatever_dvclive_wrote(tmp_path: Path) -> None:
    base = tmp_path / "r-l1-x4" / "plots" / "metrics"
    (base / "loss" / "parts").mkdir(parents=True)
    (base / "loss" / "parts" / "grad.tsv").write_text(
        "timestamp\tstep\tgrad\n1\t0\t0.5\n2\t5\t0.25\n"
    )
    (base / "learning_rate.tsv").write_text("step\tlearning_rate\n0\t0.001\n")
    (base / "throughput.tsv").write_text("step\tthroughput\n0\t12.5\n")
    df = read_live(tmp_path)
    assert set(df["metric"]) == {"loss/parts/grad", "learning_rate", "throughput"}
    groups = df.drop_duplicates("metric").set_index("metric")["group"].to_dict()
    assert groups == {"loss/parts/grad": "loss", "learning_rate": "schedule", "throughput": "other"}
    assert df.loc[df["metric"] == "loss/parts/grad", "value"].tolist() == [0.5, 0.25]
    (base / "bad.tsv").write_text("a\tb\tc\n1\t2\t3\n")
    with pytest.raises(ValueError, match=r"bad\.tsv"):
        read_live(tmp_path)


def test_rank_and_select_images() -> None:
    per_image = pd.DataFrame(
        {
            "run": ["b"] * 3 + ["c"] * 3,
            "set": ["s"] * 6,
            "image": ["x", "y", "z"] * 2,
            "psnr": [30.0, 30.0, 30.0, 30.5, 28.0, float("nan")],
        }
    )
    ranked = readers.rank_images(per_image, "b", "c")
    assert ranked["image"].tolist() == ["y", "x"]  # |-2| before |+0.5|; NaN dropped
    pairs = [("s", "x"), ("s", "y"), ("s", "z")]
    chosen, how = readers.select_images(pairs, per_image, "b", "c", n=1)
    assert chosen == [("s", "y")] and "largest" in how
    assert readers.select_images(pairs, per_image, "b", "c", zoom_image="s/z")[0] == [("s", "z")]
    with pytest.raises(ValueError, match="nope"):
        readers.select_images(pairs, per_image, "b", "c", zoom_image="nope")


def test_max_diff_box_finds_the_changed_window() -> None:
    a = np.full((40, 50, 3), 100, np.uint8)
    b = a.copy()
    b[22:30, 31:39] = 160
    y, x, size = max_diff_box(a, b, 8)
    assert (y, x, size) == (22, 31, 8)
    assert max_diff_box(a, b, 500)[2] == 40  # clamped to the image


def test_verdicts_respect_direction() -> None:
    df = pd.DataFrame(
        {
            "set": ["s"] * 3,
            "metric": ["psnr", "lpips", "ssim"],
            "baseline": "b",
            "candidate": "c",
            "mean_diff": [0.2, 0.02, 0.0],
            "ci_low": [0.1, 0.01, -0.01],
            "ci_high": [0.3, 0.03, 0.01],
            "higher_is_better": [True, False, True],
        }
    )
    assert verdicts(df)["verdict"].tolist() == ["better", "worse", "inconclusive"]


def test_missing_notebook_is_named(tmp_path: Path) -> None:
    cfg = _config(tmp_path, tmp_path / "nowhere")
    with pytest.raises(FileNotFoundError, match="01_data"):
        report.run(cfg)


def test_render_html_is_offline_and_has_a_toc(tmp_path: Path) -> None:
    nbs = []
    for i, title in enumerate(("First", "Second")):
        nb = nbformat.v4.new_notebook()
        png = (
            "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNk+M9QDwADhgGAWjR9"
            "awAAAABJRU5ErkJggg=="
        )
        code = nbformat.v4.new_code_cell("secret_code()")
        code.outputs = [nbformat.v4.new_output("display_data", data={"image/png": png})]
        nb.cells = [nbformat.v4.new_markdown_cell(f"# {title}\n\ntext {i}"), code]
        path = tmp_path / f"0{i}_x.ipynb"
        nbformat.write(nb, str(path))
        nbs.append(path)
    out = tmp_path / "r.html"
    report.render_html(nbs, out, "T")
    html = out.read_text()
    report.render_html(nbs, tmp_path / "again.html", "T")
    assert (tmp_path / "again.html").read_text() == html  # no random cell ids, no clock
    assert len(IMG.findall(html)) == 2
    assert '<a href="#sec-00_x">First</a>' in html and 'id="sec-01_x"' in html
    assert "secret_code" not in html  # inputs hidden
    assert not re.search(r"<(script|link)\b[^>]*(src|href)=[\"']?https?://", html)


def _papermill_output(clock: str, cell_id: str, tmp: str) -> nbformat.NotebookNode:
    """A notebook as papermill writes it (the keys of papermill 2.x and nbclient), executed at
    the time ``clock`` into the temp folder ``tmp``."""
    nb = nbformat.v4.new_notebook()
    timing = {"start_time": clock, "end_time": clock, "duration": 0.5}
    nb.metadata["papermill"] = {
        **timing,
        "input_path": "/some/checkout/notebooks/x.ipynb",
        "output_path": f"/some/checkout/{tmp}/x.ipynb",
        "parameters": {"figures_dir": f"{tmp}/figures", "scale": 2},
        "version": "2.7.0",
    }
    params = nbformat.v4.new_code_cell("scale = 4", execution_count=1)
    params.metadata["tags"] = ["parameters"]
    injected = nbformat.v4.new_code_cell(
        f'scale = 2\nfigures_dir = "{tmp}/figures"\n', execution_count=2
    )
    injected.id = cell_id
    injected.metadata["tags"] = ["injected-parameters"]
    shown = nbformat.v4.new_code_cell("print(scale)", execution_count=3)
    shown.outputs = [nbformat.v4.new_output("stream", name="stdout", text="2\n")]
    for cell in (params, injected, shown):
        cell.metadata["papermill"] = {**timing, "exception": False, "status": "completed"}
        cell.metadata["execution"] = {"iopub.execute_input": clock, "shell.execute_reply": clock}
    params.id, shown.id = "cell-00", "cell-01"  # the stored notebook's ids
    nb.cells = [params, injected, shown]
    return nb


def test_scrub_notebook_drops_the_clock_and_the_temp_paths() -> None:
    """Two executions that differ only in when and where they ran save the same bytes; what a
    reader needs (counts, outputs, status, parameters) is kept."""
    how = {"input_path": "notebooks/x.ipynb", "output_path": "reports/x.ipynb",
           "final_figures": "reports/figures"}  # fmt: skip
    saved = []
    for clock, cell_id, tmp in (
        ("2026-01-01T10:00:00.1+00:00", "ab12cd34", ".reports.tmp-111"),
        ("2026-03-04T11:22:33.4+00:00", "9f8e7d6c", ".reports.tmp-222"),
    ):
        nb = report.scrub_notebook(
            _papermill_output(clock, cell_id, tmp), tmp_figures=f"{tmp}/figures", **how
        )
        nbformat.validate(nb)
        saved.append(nbformat.writes(nb))
    assert saved[0] == saved[1]
    text = saved[0]
    for volatile in ("2026-", "start_time", "end_time", "duration", "iopub", ".reports.tmp",
                     "/some/checkout"):  # fmt: skip
        assert volatile not in text, volatile
    nb = nbformat.reads(text, as_version=4)
    meta = nb.metadata["papermill"]
    assert (meta["input_path"], meta["output_path"]) == ("notebooks/x.ipynb", "reports/x.ipynb")
    assert meta["parameters"] == {"figures_dir": "reports/figures", "scale": 2}
    assert [c.execution_count for c in nb.cells] == [1, 2, 3]
    assert nb.cells[1].id == "injected-parameters"
    assert 'figures_dir = "reports/figures"' in nb.cells[1].source
    assert nb.cells[2].outputs[0]["text"] == "2\n"
    assert all(c.metadata["papermill"]["status"] == "completed" for c in nb.cells)


def test_generated_note_dates_only_from_source_date_epoch() -> None:
    assert report.generated_note({}) == "Generated by `sgsr report`."
    assert not re.search(r"\d", report.generated_note({"SOURCE_DATE_EPOCH": " "}))
    note = report.generated_note({"SOURCE_DATE_EPOCH": "1767225600"})
    assert "2026-01-01 00:00 UTC" in note and "SOURCE_DATE_EPOCH" in note
    for bad in ("yesterday", "-5", "1.5", "9" * 30):
        with pytest.raises(ValueError, match=r"SOURCE_DATE_EPOCH=.*git log"):
            report.generated_note({"SOURCE_DATE_EPOCH": bad})


# ---------------------------------------------------------------------------------------------
# The stage end to end (kernel start per notebook: slow)


def _fake_kernelspec(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A `python3` kernelspec that would start a nonexistent interpreter, found first."""
    spec = tmp_path / "jupyter" / "kernels" / "python3"
    spec.mkdir(parents=True)
    (spec / "kernel.json").write_text(
        json.dumps(
            {
                "argv": [
                    "/nonexistent/bin/python",
                    "-m",
                    "ipykernel_launcher",
                    "-f",
                    "{connection_file}",
                ],
                "display_name": "wrong python",
                "language": "python",
            }
        )
    )
    monkeypatch.setenv("JUPYTER_PATH", str(tmp_path / "jupyter"))


@pytest.mark.slow
def test_report_stage_end_to_end(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    pipeline = tmp_path / "pipe"
    build_fake_pipeline(pipeline, scale=2)
    _fake_kernelspec(tmp_path, monkeypatch)  # the stage must still use this interpreter
    monkeypatch.delenv("SOURCE_DATE_EPOCH", raising=False)
    cfg = _config(pipeline, REPO)
    html_path = report.run(cfg)

    reports = pipeline / "reports"
    assert html_path == reports / "report.html"
    assert sorted(p.name for p in reports.glob("*.ipynb")) == [
        f"{n}.ipynb" for n in report.NOTEBOOKS
    ]
    figures = sorted(p.name for p in (reports / "figures").glob("*.png"))
    for prefix in ("01_", "02_", "03_", "04_"):
        assert any(f.startswith(prefix) for f in figures), prefix
    # zoom_size 16 from params reached the notebooks
    nb02 = nbformat.read(str(reports / "02_gradient_maps.ipynb"), as_version=4)
    injected = [c for c in nb02.cells if "injected-parameters" in c.metadata.get("tags", [])]
    assert "zoom_size = 16" in injected[0].source
    assert 'figures_dir = "reports/figures"' in injected[0].source  # not the temp folder

    html = html_path.read_text()
    for n in report.NOTEBOOKS:
        assert f'id="sec-{n}"' in html and f'href="#sec-{n}"' in html
    # results first, then the curves, then the data
    order = [html.index(f'id="sec-{n}"') for n in report.SHOWN_ORDER]
    assert order == sorted(order) and report.SHOWN_ORDER[0] == "04_results"
    assert html.index("Summary per set") < html.index("At a glance") < html.index("Each metric per")
    # no internal dumps or truncated specs
    for noise in ("no reason recorded", "hr.npy", "dtype", "notes:", "...</td>"):
        assert noise not in html, noise
    assert "{l1: 1.0, sgl: {weight: 0.1, operator: laplacian}}" in html  # the full loss spec
    _check_layout(html_path, tmp_path)
    assert len(IMG.findall(html)) >= len(figures)
    assert not re.search(r"<(script|link)\b[^>]*(src|href)=[\"']?https?://", html)
    assert not list(pipeline.glob(".reports*"))  # no temp folder left behind
    umask = os.umask(0)
    os.umask(umask)
    assert reports.stat().st_mode & 0o777 == 0o777 & ~umask  # not mkdtemp's 0700

    # reports/ is a DVC output: a second run on the same inputs (other clock, fresh kernels
    # with their own random state) writes the same bytes, so dvc.lock keeps its hash
    first = _digests(reports)
    for path, _ in first:
        if path.endswith((".ipynb", ".html")):
            text = (reports / path).read_text()
            assert ".reports.tmp" not in text and str(tmp_path) not in text, path
    assert report.run(cfg) == html_path
    assert _digests(reports) == first


def _digests(folder: Path) -> list[tuple[str, str]]:
    """(relative path, sha256) of every file under ``folder``, sorted."""
    import hashlib

    return sorted(
        (p.relative_to(folder).as_posix(), hashlib.sha256(p.read_bytes()).hexdigest())
        for p in folder.rglob("*")
        if p.is_file()
    )


@pytest.mark.slow
def test_failing_notebook_keeps_previous_reports(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    pipeline = mark_pipeline(tmp_path / "pipe")  # the notebooks find it, then fail on purpose
    previous = pipeline / "reports"
    (previous / "figures").mkdir(parents=True)
    (previous / "report.html").write_text("previous report")
    (previous / "figures" / "old.png").write_bytes(b"png")

    root = tmp_path / "repo"
    shutil.copytree(REPO / "notebooks", root / "notebooks")
    nb_path = root / "notebooks" / "01_data.ipynb"
    nb = nbformat.read(str(nb_path), as_version=4)
    nb.cells.append(nbformat.v4.new_code_cell("raise RuntimeError('boom in the data notebook')"))
    nbformat.write(nb, str(nb_path))

    with pytest.raises(report.ReportError, match=r"01_data\.ipynb.*RuntimeError.*boom") as err:
        report.run(_config(pipeline, root))
    assert "raise RuntimeError(" in str(err.value)  # the failing line is quoted
    kept = Path(re.search(r"traceback: (.+\.ipynb)\)", str(err.value)).group(1))
    assert kept.is_file() and "boom in the data notebook" in kept.read_text()
    assert pipeline not in kept.parents
    shutil.rmtree(kept.parent)
    assert (previous / "report.html").read_text() == "previous report"
    assert sorted(p.name for p in previous.rglob("*")) == ["figures", "old.png", "report.html"]
    assert not list(pipeline.glob(".reports*"))


def test_kernel_manager_uses_unix_sockets_and_no_shutdown_interrupt() -> None:
    """The causes of papermill's console noise: unencrypted TCP (ipykernel warns on every
    start) and the SIGINT jupyter_client sends before a shutdown request (it races the kernel's
    last reply: "KeyboardInterrupt caught in kernel")."""
    import asyncio

    manager = report._venv_kernel_manager()(kernel_name="python3")
    try:
        if os.name == "posix":
            assert manager.transport == "ipc"
            assert len(manager.ip) < 90  # Unix socket paths are limited to ~107 bytes
        manager.shutting_down = True
        asyncio.run(manager._async_interrupt_kernel())  # no kernel, yet no error: skipped
        manager.shutting_down = False
        with pytest.raises(RuntimeError, match="No kernel is running"):
            asyncio.run(manager._async_interrupt_kernel())  # outside shutdown: jupyter's own
    finally:
        asyncio.run(manager._async_cleanup_resources())
    if os.name == "posix":
        assert not Path(manager.ip).parent.exists()  # its socket folder is removed


@pytest.mark.slow
def test_executing_notebooks_prints_nothing_from_the_kernel(tmp_path: Path) -> None:
    """Three notebook runs in a fresh process: stderr holds no kernel or papermill lines."""
    import subprocess
    import sys

    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {"name": "python3", "language": "python", "display_name": "P"}
    nb.metadata["language_info"] = {"name": "python"}
    params = nbformat.v4.new_code_cell("x = 0")
    params.metadata["tags"] = ["parameters"]
    nb.cells = [params, nbformat.v4.new_code_cell("print(x * 2)")]
    nbformat.write(nb, str(tmp_path / "src.ipynb"))
    script = (
        "from sgsr import console, report; console.setup('sgsr report')\n"
        "for i in range(3):\n"
        "    report.execute_notebook('src.ipynb', f'out{i}.ipynb', {'x': i}, cwd='.')\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", script], cwd=tmp_path, capture_output=True, text=True, timeout=300
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr.strip() == "", proc.stderr
    out = nbformat.read(str(tmp_path / "out2.ipynb"), as_version=4)
    assert out.cells[-1].outputs[0]["text"].strip() == "4"


@pytest.mark.slow
def test_the_kernel_processs_own_stderr_goes_to_the_debug_log(tmp_path: Path) -> None:
    """What the kernel process writes to its fd 2 (teardown noise such as libzmq's assertion)
    stays out of the stage's stderr and is shown with SGSR_LOG_LEVEL=DEBUG."""
    import subprocess
    import sys

    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {"name": "python3", "language": "python", "display_name": "P"}
    nb.metadata["language_info"] = {"name": "python"}
    params = nbformat.v4.new_code_cell("x = 0")
    params.metadata["tags"] = ["parameters"]
    nb.cells = [
        params,
        nbformat.v4.new_code_cell("import os; os.write(2, b'raw-kernel-stderr-marker')"),
    ]
    nbformat.write(nb, str(tmp_path / "src.ipynb"))
    script = (
        "from sgsr import console, report; console.setup('sgsr report')\n"
        "report.execute_notebook('src.ipynb', 'out.ipynb', {'x': 1}, cwd='.')\n"
    )
    runs = {}
    for level in ("INFO", "DEBUG"):
        env = {**os.environ, "SGSR_LOG_LEVEL": level}
        runs[level] = subprocess.run(
            [sys.executable, "-c", script],
            cwd=tmp_path, capture_output=True, text=True, timeout=300, env=env,
        )  # fmt: skip
        assert runs[level].returncode == 0, runs[level].stderr
    assert "raw-kernel-stderr-marker" not in runs["INFO"].stderr
    assert "raw-kernel-stderr-marker" in runs["DEBUG"].stderr


PAGE_PX = 1400  # the browser window the report is checked at


def _check_layout(html_path: Path, tmp_path: Path) -> None:
    """Every table and figure of the report fits the page at PAGE_PX, measured by headless
    Chromium when it is installed (the layout a reader gets), else estimated from the cell
    text (7.5 px per character) and the PNG widths."""
    import base64
    import io
    import shutil
    import subprocess

    from PIL import Image

    html = html_path.read_text()
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium:
        probe = tmp_path / "probe.html"
        script = """<script>
        const main = document.querySelector('main') || document.body;
        const page = main.clientWidth;
        const t = [...document.querySelectorAll('table')].map(e => e.scrollWidth);
        const i = [...document.querySelectorAll('img')].map(e => [e.naturalWidth, e.width]);
        const out = document.createElement('pre'); out.id = 'measured';
        out.textContent = JSON.stringify({page: page, tables: t, images: i});
        document.body.appendChild(out);</script>"""
        probe.write_text(html.replace("</body>", script + "</body>"))
        cmd = [chromium, "--headless", "--no-sandbox", "--disable-gpu", "--dump-dom",
               f"--window-size={PAGE_PX},2000", probe.as_uri()]  # fmt: skip
        dom = subprocess.run(cmd, capture_output=True, text=True, timeout=120).stdout
        found = re.search(r'<pre id="measured">(.*?)</pre>', dom, re.S)
        assert found, dom[-2000:]
        measured = json.loads(found.group(1).replace("&quot;", '"'))
        page, tables = measured["page"], measured["tables"]
        assert 900 <= page <= 1200, measured  # main's max-width
        assert tables and max(tables) <= page, measured
        assert all(shown <= page for _, shown in measured["images"]), measured
        return
    page = 1200
    for table in re.findall(r"<table.*?</table>", html, re.S):
        rows = [re.findall(r"<t[hd][^>]*>(.*?)</t[hd]>", r, re.S)
                for r in re.findall(r"<tr.*?</tr>", table, re.S)]  # fmt: skip
        cols = max(len(r) for r in rows)
        widths = [max(len(re.sub("<[^>]+>", "", r[k]).strip()) for r in rows if k < len(r))
                  for k in range(cols)]  # fmt: skip
        assert sum(7.5 * w + 16 for w in widths) <= page, widths
    for data in re.findall(r'src="data:image/png;base64,([^"]+)"', html):
        with Image.open(io.BytesIO(base64.b64decode(data))) as im:
            assert im.width >= 300, im.size  # large enough to read once scaled to the page
