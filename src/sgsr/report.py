"""The report stage: execute the notebooks with papermill and render one offline HTML report.

Also the small readers the notebooks share (run discovery, the L1/SGL pair, CSVs, dvclive
logs), so that a notebook run by hand (``papermill notebooks/04_results.ipynb out.ipynb``)
finds its inputs by the same rules as the pipeline, and the notebooks stay short.

Why the pieces look the way they do:

- Kernel: papermill looks the kernel up by name, and a ``python3`` kernelspec in the user's
  ``~/.local/share/jupyter`` (or ``$JUPYTER_PATH``) wins over the venv's, so it may start another
  interpreter without ``sgsr``. :func:`execute_notebook` therefore always launches ipykernel on
  ``sys.executable``, whatever kernelspecs the machine has.
- Atomic: notebooks and figures are built in a hidden temp folder beside ``reports/`` and swapped
  in only when all four notebooks ran, so a failing notebook leaves the previous report intact.
  (``dvc repro`` deletes a stage's outputs before running it; the atomicity helps hand runs.)
- Offline HTML: nbconvert's lab template loads require.js, MathJax and mermaid from a CDN; the
  template below removes those blocks (the notebooks use no widgets, maths or diagrams), images
  are already base64 PNG in the executed notebooks, and CSS is inlined.
"""

from __future__ import annotations

import datetime as _dt
import json
import math
import os
import re
import shutil
import tempfile
from collections.abc import Iterable, Mapping, Sequence
from html import escape as html_escape
from pathlib import Path
from typing import Any

import pandas as pd

from sgsr import layout
from sgsr.config import Config, Run
from sgsr.fsutil import replace_dir, staging_dir, write_text
from sgsr.losses import sgl_operator
from sgsr.runs import bicubic_run, is_bicubic, is_run_name, pair_names, pairs, parse_run

#: The notebooks, executed in this order; ``<root>/notebooks/<name>.ipynb``.
NOTEBOOKS: tuple[str, ...] = ("01_data", "02_gradient_maps", "03_training", "04_results")
REPORT_HTML = "report.html"


class ReportError(ValueError):
    """A notebook failed; the message names the notebook, the cell and the error.

    A ValueError so that ``sgsr report`` prints it as one line, like the other stages' errors.
    """


# --------------------------------------------------------------------------------------------
# Run discovery and the pair to show (names and the pairing rule: sgsr.runs)


def discover_runs(
    results_dir: str | os.PathLike[str] = layout.RESULTS,
    scale: int = 4,
    replicates: bool = False,
) -> list[str]:
    """Runs at ``scale`` that have SR images or metrics under ``results_dir``, bicubic first;
    replicate-seed runs (``...-s<seed>``) only with ``replicates=True`` (the per-run figures
    show each configuration once; the seed figure reads summary.csv)."""
    results_dir = Path(results_dir)
    found: set[str] = set()

    def wanted(name: str) -> bool:
        if not is_run_name(name):
            return False
        info = parse_run(name)
        return info["scale"] == scale and (replicates or info["seed"] is None)

    for folder in (layout.sr_root(results_dir), layout.metrics_root(results_dir)):
        if folder.is_dir():
            found.update(p.name for p in folder.iterdir() if p.is_dir() and wanted(p.name))
    return sorted(found, key=lambda r: (not is_bicubic(r), r))


def pick_pair(
    names: Sequence[str],
    results_dir: str | os.PathLike[str] = layout.RESULTS,
    scale: int = 4,
    baseline: str | None = None,
    candidate: str | None = None,
) -> tuple[str | None, str | None]:
    """The (baseline, candidate) pair the figures compare.

    Explicit names win; else the first pair ``summarize`` wrote to ``paired.csv`` at this
    scale; else (no paired.csv: a notebook run by hand) the first pair that the pairing rule
    (`sgsr.runs.pair_names`) finds among ``names`` with ``l1`` as the baseline loss. Returns
    None for a side that cannot be found (the notebooks say so and skip the figure).
    """
    if baseline and candidate:
        return baseline, candidate
    paired = read_paired(results_dir)
    if paired is not None and not paired.empty:
        rows = paired[paired["scale"] == scale]
        if baseline:
            rows = rows[rows["baseline"] == baseline]
        if candidate:
            rows = rows[rows["candidate"] == candidate]
        if not rows.empty:
            return str(rows["baseline"].iloc[0]), str(rows["candidate"].iloc[0])
    for base, cand in pair_names(names, "l1", scale):
        if baseline in (None, base) and candidate in (None, cand):
            return base, cand
    return baseline, candidate


def pair_from_config(cfg: Config, scale: int) -> tuple[str | None, str | None]:
    """The pair to show when paired.csv is not there yet: among the pairs of the primary-seed
    runs at ``scale`` (`sgsr.runs.pairs`: each candidate against ``experiment.baseline``), the
    first whose candidate has an ``sgl`` term in its spec, else the first."""
    found = pairs([r for r in cfg.primary_runs if r.scale == scale], cfg.baseline_loss)
    sgl = [p for p in found if "sgl" in p.candidate[0].loss_spec]
    if not found:
        return None, None
    chosen = (sgl or found)[0]
    return chosen.baseline[0].name, chosen.candidate[0].name


def read_run_card(models_dir: str | os.PathLike[str], run: str) -> dict[str, Any] | None:
    """``models/<run>/run.json`` as a dict, or None when the run has not been trained."""
    path = layout.run_card(run, models_dir)
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise ValueError(f"{path}: not valid JSON ({exc}); rerun `sgsr train --run {run}`") from exc


def card_loss_spec(card: Mapping[str, Any] | None) -> Mapping[str, Any] | None:
    """The loss spec a run card records (``loss_spec``, as `sgsr train` writes it), or None."""
    spec = card.get("loss_spec") if isinstance(card, Mapping) else None
    return spec if isinstance(spec, Mapping) else None


# --------------------------------------------------------------------------------------------
# Readers


def read_csv_if_present(path: str | os.PathLike[str]) -> pd.DataFrame | None:
    """A CSV as a DataFrame, or None when the file is absent (an empty file is an error)."""
    path = Path(path)
    if not path.is_file():
        return None
    try:
        return pd.read_csv(path)
    except pd.errors.EmptyDataError as exc:
        raise ValueError(f"{path} is empty; rerun the stage that writes it") from exc


def _require_columns(df: pd.DataFrame, columns: Iterable[str], path: Path) -> pd.DataFrame:
    missing = [c for c in columns if c not in df.columns]
    if missing:
        raise ValueError(
            f"{path}: missing column(s) {', '.join(missing)} (has {', '.join(df.columns)}); "
            "it was written by another version of sgsr: rerun `sgsr summarize`/`sgsr evaluate`"
        )
    return df


def read_summary(results_dir: str | os.PathLike[str] = layout.RESULTS) -> pd.DataFrame | None:
    path = Path(results_dir) / layout.SUMMARY_CSV.name
    df = read_csv_if_present(path)
    return None if df is None else _require_columns(df, ("run", "scale", "set"), path)


def read_paired(results_dir: str | os.PathLike[str] = layout.RESULTS) -> pd.DataFrame | None:
    path = Path(results_dir) / layout.PAIRED_CSV.name
    df = read_csv_if_present(path)
    cols = ("set", "scale", "baseline", "candidate", "metric", "mean_diff", "ci_low", "ci_high")
    return None if df is None else _require_columns(df, cols, path)


def read_seeds(results_dir: str | os.PathLike[str] = layout.RESULTS) -> pd.DataFrame | None:
    """``summary_seeds.csv``: per configuration x set x metric, the spread over seeds."""
    path = Path(results_dir) / layout.SEEDS_CSV.name
    df = read_csv_if_present(path)
    cols = ("model", "loss", "scale", "set", "metric", "n_seeds", "mean", "sd")
    return None if df is None else _require_columns(df, cols, path)


def metric_columns(df: pd.DataFrame) -> list[str]:
    """The numeric metric columns of a summary or per-image table, in file order."""
    skip = {"run", "model", "loss", "scale", "seed", "set", "image", "n_images", "n"}
    return [c for c in df.columns if c not in skip and pd.api.types.is_numeric_dtype(df[c])]


def read_per_image(
    results_dir: str | os.PathLike[str], runs: Sequence[str]
) -> tuple[pd.DataFrame, list[str]]:
    """Per-image metrics of ``runs`` stacked with a ``run`` column, and the runs that had none."""
    frames, missing = [], []
    for run in runs:
        path = layout.metrics_dir(run, results_dir) / layout.PER_IMAGE_CSV
        df = read_csv_if_present(path)
        if df is None:
            missing.append(run)
            continue
        _require_columns(df, ("set", "image"), path)
        df = df.assign(run=run, image=df["image"].astype(str).map(lambda s: Path(s).stem))
        frames.append(df)
    if not frames:
        return pd.DataFrame(columns=["run", "set", "image"]), missing
    return pd.concat(frames, ignore_index=True), missing


def unavailable_metrics(results_dir: str | os.PathLike[str], runs: Sequence[str]) -> dict[str, str]:
    """{metric: why} that evaluate recorded as unavailable (``metrics_info.json``
    ``unavailable``), e.g. LPIPS without its AlexNet weights offline; the first reason found
    per metric."""
    out: dict[str, str] = {}
    for run in runs:
        path = layout.metrics_dir(run, results_dir) / layout.METRICS_INFO_JSON
        if not path.is_file():
            continue
        try:
            doc = json.loads(path.read_text())
        except json.JSONDecodeError as exc:
            raise ValueError(f"{path}: not valid JSON ({exc}); rerun `sgsr evaluate`") from exc
        for metric, why in (doc.get("unavailable") or {}).items():
            out.setdefault(metric, str(why))
    return out


def rank_images(
    per_image: pd.DataFrame, baseline: str, candidate: str, metric: str = "psnr"
) -> pd.DataFrame:
    """Test images sorted by |candidate - baseline| in ``metric``, largest first.

    Columns: set, image, baseline, candidate, diff. Empty when either run has no values.
    """
    cols = ["set", "image", "baseline", "candidate", "diff"]
    if per_image.empty or metric not in per_image.columns:
        return pd.DataFrame(columns=cols)
    keyed = per_image.set_index(["set", "image"])
    a = keyed[per_image["run"].to_numpy() == baseline][metric]
    b = keyed[per_image["run"].to_numpy() == candidate][metric]
    both = pd.concat({"baseline": a, "candidate": b}, axis=1, join="inner").dropna()
    both = both[both.map(math.isfinite).all(axis=1)]
    both["diff"] = both["candidate"] - both["baseline"]
    both = both.reindex(both["diff"].abs().sort_values(ascending=False).index)
    return both.reset_index()[cols]


# --------------------------------------------------------------------------------------------
# Images on disk


def test_sets(data_dir: str | os.PathLike[str], scale: int) -> list[str]:
    """Prepared sets at ``scale`` that hold ``hr/`` images (the validation split excluded)."""
    base = layout.prepared_scale(scale, data_dir)
    if not base.is_dir():
        return []
    return sorted(
        p.name for p in base.iterdir() if (p / "hr").is_dir() and p.name != layout.VAL_SET
    )


def list_pairs(
    data_dir: str | os.PathLike[str], scale: int, sets: Sequence[str] | None = None
) -> list[tuple[str, str]]:
    """(set, stem) of every prepared HR image of ``sets`` (default: all test sets), sorted."""
    from sgsr.imaging import list_images

    out = []
    for name in sets if sets is not None else test_sets(data_dir, scale):
        folder = layout.prepared_set(scale, name, data_dir) / "hr"
        if folder.is_dir():
            out.extend((name, p.stem) for p in list_images(folder))
    return out


def select_images(
    pairs: Sequence[tuple[str, str]],
    per_image: pd.DataFrame,
    baseline: str,
    candidate: str,
    zoom_image: str | None = None,
    n: int = 3,
    metric: str = "psnr",
    results_dir: str | os.PathLike[str] | None = None,
    max_scan: int = 50,
) -> tuple[list[tuple[str, str]], str]:
    """The test images to zoom into, and a sentence saying how they were chosen.

    ``zoom_image`` (``stem`` or ``set/stem``) picks one explicitly (ValueError if unknown);
    else the ``n`` with the largest |candidate - baseline| in ``metric``; without per-image
    metrics and given ``results_dir``, the largest mean |SR_candidate - SR_baseline| over at
    most ``max_scan`` images, read one pair at a time.
    """
    if zoom_image:
        want_set, _, want_stem = zoom_image.rpartition("/")
        hits = [p for p in pairs if p[1] == want_stem and want_set in ("", p[0])]
        if not hits:
            shown = ", ".join("/".join(p) for p in pairs[:10])
            raise ValueError(
                f"zoom_image {zoom_image!r} is not a prepared test image; "
                f"some that are: {shown or '(none)'} (use <stem> or <set>/<stem>)"
            )
        return hits[:1], f"`{zoom_image}`, chosen by the zoom_image parameter"
    available = set(pairs)
    ranked = rank_images(per_image, baseline, candidate, metric)
    keys = list(zip(ranked["set"], ranked["image"], strict=True))
    ranked = ranked[[k in available for k in keys]]
    if not ranked.empty:
        chosen = list(zip(ranked["set"].head(n), ranked["image"].head(n), strict=True))
        how = f"the {len(chosen)} image(s) with the largest |{candidate} - {baseline}| in {metric}"
        return chosen, how
    if results_dir is None:
        return [], f"no per-image {metric} for both runs, so no image could be ranked"
    import numpy as np

    from sgsr.imaging import read_image

    scores = []
    for set_name, stem in list(pairs)[:max_scan]:
        a = layout.sr_image(baseline, set_name, stem, results_dir)
        b = layout.sr_image(candidate, set_name, stem, results_dir)
        if a.is_file() and b.is_file():
            diff = read_image(a).astype(np.int16) - read_image(b).astype(np.int16)
            scores.append((float(np.abs(diff).mean()), set_name, stem))
    scores.sort(reverse=True)
    chosen = [(s, i) for _, s, i in scores[:n]]
    how = (
        f"the {len(chosen)} image(s) where the two SR outputs differ most in mean absolute "
        f"pixel value (no per-image {metric} available)"
    )
    return chosen, how if chosen else "no image has SR outputs from both runs"


# --------------------------------------------------------------------------------------------
# Executing and rendering


def notebook_dir(cfg: Config, pipeline_dir: str | os.PathLike[str] | None = None) -> Path:
    """``<pipeline>/<cfg.root>/notebooks``: the notebook sources the stage executes."""
    return (layout.pipeline_root(cfg, pipeline_dir) / cfg.root / "notebooks").resolve()


def report_scale(cfg: Config) -> int:
    """The scale the report shows: that of the first run in the matrix (else prepare's first)."""
    return cfg.runs[0].scale if cfg.runs else cfg.prepare.scales[0]


def notebook_parameters(
    cfg: Config,
    figures_dir: str | os.PathLike[str],
    pipeline_dir: str | os.PathLike[str] | None = None,
) -> dict[str, Any]:
    """Every parameter a notebook may take, from the params; each notebook gets its subset.

    The L1/SGL pair is the first one ``summarize`` wrote to ``results/paired.csv`` at the
    report's scale (so the zooms and the forest plot compare the same runs), else the one
    :func:`pair_from_config` finds in the loss specs.
    """
    scale = report_scale(cfg)
    runs: list[Run] = [r for r in cfg.primary_runs if r.scale == scale]
    names = [r.name for r in runs]
    paired = read_paired(layout.pipeline_root(cfg, pipeline_dir) / layout.RESULTS)
    rows = (
        paired[(paired["scale"] == scale) & paired["baseline"].isin(names)]
        if paired is not None
        else None
    )
    if rows is not None and not rows.empty:
        baseline, candidate = str(rows["baseline"].iloc[0]), str(rows["candidate"].iloc[0])
    else:
        baseline, candidate = pair_from_config(cfg, scale)
    cand = next((r for r in runs if r.name == candidate), None)
    return {
        "data_dir": layout.PREPARED.as_posix(),
        "models_dir": layout.MODELS.as_posix(),
        "results_dir": layout.RESULTS.as_posix(),
        "figures_dir": Path(figures_dir).as_posix(),
        "scale": scale,
        "runs": [bicubic_run(scale), *(r.name for r in runs)],
        "baseline_run": baseline,
        "candidate_run": candidate,
        "test_sets": list(cfg.data.test_sets),
        "operator": sgl_operator(cand.loss_spec) if cand else None,
        "zoom_image": cfg.report.zoom_image,
        "zoom_size": cfg.report.zoom_size,
    }


def _venv_kernel_manager() -> type:
    """An AsyncKernelManager for batch execution (see the module doc):

    - starts ipykernel on ``sys.executable``;
    - talks to it over Unix sockets in a private temp folder (``ipc``) on POSIX, rather than
      unencrypted TCP ports on localhost that any local user could connect to (ipykernel warns
      about exactly that on every start);
    - does not interrupt the kernel on shutdown. jupyter_client sends SIGINT before its
      shutdown request to stop running code, but papermill shuts down only after the last
      cell finished (a timed-out cell is interrupted by nbclient itself), so the signal only
      races the kernel's last reply and makes it log "KeyboardInterrupt caught in kernel".
    """
    import tempfile

    from ipykernel.kernelspec import RESOURCES, get_kernel_dict
    from jupyter_client import AsyncKernelManager
    from jupyter_client.kernelspec import KernelSpec

    class VenvKernelManager(AsyncKernelManager):
        def __init__(self, **kwargs: Any) -> None:
            super().__init__(**kwargs)
            if os.name == "posix" and "transport" not in kwargs:
                self._ipc_dir = tempfile.mkdtemp(prefix="sgsr-kernel-")
                self.transport = "ipc"
                self.ip = os.path.join(self._ipc_dir, "k")  # short: socket paths are limited

        @property
        def kernel_spec(self) -> KernelSpec:
            if self._kernel_spec is None:
                self._kernel_spec = KernelSpec(resource_dir=RESOURCES, **get_kernel_dict())
            return self._kernel_spec

        async def _async_interrupt_kernel(self) -> None:
            if self.shutting_down:
                return
            await super()._async_interrupt_kernel()

        async def _async_cleanup_resources(self, restart: bool = False) -> None:
            await super()._async_cleanup_resources(restart=restart)
            if not restart and getattr(self, "_ipc_dir", None):
                shutil.rmtree(self._ipc_dir, ignore_errors=True)

    return VenvKernelManager


def declared_parameters(source: str | os.PathLike[str]) -> list[str]:
    """Names assigned in the notebook's cell tagged ``parameters``, in order.

    Read with ``ast`` rather than ``papermill.inspect_notebook``, whose line parser skips any
    line holding more than one ``=`` (e.g. a comment with one) and would drop that parameter.
    """
    import ast

    import nbformat

    nb = nbformat.read(str(source), as_version=4)
    cells = [c for c in nb.cells if "parameters" in c.metadata.get("tags", [])]
    if len(cells) != 1:
        raise ValueError(f"{source}: needs exactly one cell tagged 'parameters', has {len(cells)}")
    names = []
    for node in ast.parse(cells[0].source).body:
        targets = node.targets if isinstance(node, ast.Assign) else [getattr(node, "target", None)]
        names += [t.id for t in targets if isinstance(t, ast.Name)]
    return names


def execute_notebook(
    source: str | os.PathLike[str],
    output: str | os.PathLike[str],
    parameters: Mapping[str, Any],
    cwd: str | os.PathLike[str],
    timeout: float | None = None,
) -> None:
    """Run one notebook with papermill on this interpreter; parameters it does not declare in
    its ``parameters`` cell are dropped. Raises ReportError naming the notebook and the cell."""
    import papermill as pm

    source = Path(source)
    if not source.is_file():
        raise FileNotFoundError(f"notebook {source} does not exist (is cfg.root right?)")
    declared = declared_parameters(source)
    params = {k: v for k, v in parameters.items() if k in declared}
    try:
        pm.execute_notebook(
            str(source),
            str(output),
            parameters=params,
            kernel_name="python3",
            kernel_manager_class=_venv_kernel_manager(),
            cwd=str(cwd),
            progress_bar=False,
            log_output=False,
            request_save_on_cell_execute=False,
            execution_timeout=timeout,
        )
    except pm.PapermillExecutionError as exc:
        raise ReportError(
            f"notebook {source.name} failed in {_where(exc)}: {exc.ename}: {exc.evalue} "
            f"(executed notebook with the traceback: {output})"
        ) from exc


def _where(exc: Any) -> str:
    """'cell [n], line `...`' from an IPython traceback (its first ``---->`` marker)."""
    text = re.sub(r"\x1b\[[0-9;]*m", "", "\n".join(exc.traceback or []))
    arrows = [ln for ln in text.splitlines() if re.match(r"\s*-+>\s*\d+", ln)]
    where = f"cell [{exc.exec_count}]"
    if arrows:
        code = re.sub(r"^\s*-+>\s*\d+\s?", "", arrows[0]).strip()
        where += f" at `{code[:100]}`"
    return where


_TEMPLATE = r"""{%- extends 'lab/index.html.j2' -%}
{%- block html_head_js -%}{%- endblock html_head_js -%}
{% block jupyter_widgets %}{% endblock jupyter_widgets %}
{%- block html_head_js_mathjax -%}{%- endblock html_head_js_mathjax -%}
{%- block html_head_js_mermaidjs -%}{%- endblock html_head_js_mermaidjs -%}
{% block data_png scoped %}
<div class="jp-RenderedImage jp-OutputArea-output">
<img src="data:image/png;base64,{{ output.data['image/png'] | escape_html }}"
 alt="{{ (output | get_metadata('alt', 'image/png') or 'figure') | escape_html }}"/>
</div>
{% endblock data_png %}
{% block extra_css %}
<style type="text/css">
main { max-width: 1200px; margin: 0 auto; }
nav.sgsr-toc { border: 1px solid #ccc; padding: 0.5em 1.5em; margin: 1em 0; }
.jp-OutputArea-output img { max-width: 100%; height: auto; }
</style>
{% endblock extra_css %}
"""


def _first_heading(nb: Any, default: str) -> str:
    for cell in nb.cells:
        if cell.cell_type == "markdown":
            for line in cell.source.splitlines():
                if line.startswith("#"):
                    return line.lstrip("#").strip()
    return default


def render_html(
    notebooks: Sequence[str | os.PathLike[str]],
    dest: str | os.PathLike[str],
    title: str,
    intro: str = "",
) -> None:
    """Concatenate executed notebooks into one self-contained HTML with a table of contents.

    Code inputs are hidden (the executed ``.ipynb`` files beside it keep them); every image is
    a ``data:image/png;base64`` URI and no script or stylesheet is fetched from the network.
    """
    import nbformat
    from jinja2 import DictLoader
    from nbconvert import HTMLExporter

    merged = nbformat.v4.new_notebook()
    merged.metadata["title"] = title
    toc, body = [], []
    for i, path in enumerate(notebooks, 1):
        nb = nbformat.read(str(path), as_version=4)
        anchor = f"sec-{Path(path).stem}"
        title_i = html_escape(_first_heading(nb, Path(path).stem))
        toc.append(f'<li><a href="#{anchor}">{title_i}</a></li>')
        body.append(nbformat.v4.new_markdown_cell(f'<a id="{anchor}"></a>'))
        for cell in nb.cells:  # cell ids must stay unique across the merged notebook
            cell.id = f"nb{i}-{cell.get('id', len(body))}"[:64]
            body.append(cell)
        for key in ("kernelspec", "language_info"):
            if key in nb.metadata and key not in merged.metadata:
                merged.metadata[key] = nb.metadata[key]
    stamp = _dt.datetime.now(_dt.UTC).strftime("%Y-%m-%d %H:%M UTC")
    head = (
        f"# {title}\n\n{intro}\n\nGenerated {stamp} by `sgsr report`. The executed notebooks "
        "(with their code) are beside this file; the figures are in `figures/`.\n\n"
        '<nav class="sgsr-toc"><strong>Contents</strong>\n<ol>\n' + "\n".join(toc) + "\n</ol></nav>"
    )
    merged.cells = [nbformat.v4.new_markdown_cell(head), *body]
    exporter = HTMLExporter(
        extra_loaders=[DictLoader({"sgsr_report.html.j2": _TEMPLATE})],
        template_file="sgsr_report.html.j2",
        exclude_input=True,
        exclude_input_prompt=True,
        exclude_output_prompt=True,
        embed_images=True,
    )
    html, _ = exporter.from_notebook_node(merged)
    bad = re.findall(r"<(?:script|link)\b[^>]*\b(?:src|href)\s*=\s*[\"']?https?://", html)
    if bad:  # a template change upstream; fail loudly rather than ship an online-only page
        raise ReportError(f"report HTML would load from the network: {bad[:3]}")
    write_text(dest, html)


def run(
    cfg: Config,
    pipeline_dir: str | os.PathLike[str] | None = None,
    notebooks: Sequence[str] = NOTEBOOKS,
) -> Path:
    """The ``report`` stage: execute ``notebooks`` and write ``reports/`` atomically.

    ``pipeline_dir`` (default: the params file's folder) is the notebooks' cwd and holds
    ``reports/``. Returns the path of ``report.html``. On a notebook error raises ReportError
    and leaves any previous ``reports/`` untouched.
    """
    pipeline = layout.pipeline_root(cfg, pipeline_dir).resolve()
    sources = notebook_dir(cfg, pipeline)
    missing = [n for n in notebooks if not (sources / f"{n}.ipynb").is_file()]
    if missing:
        raise FileNotFoundError(
            f"notebook(s) {', '.join(missing)} not found in {sources} "
            f"(root: {cfg.root!r} in {cfg.source_path} must point at the repository root)"
        )
    final = pipeline / layout.REPORTS
    tmp = staging_dir(final)
    try:
        tmp_figures = (tmp / "figures").relative_to(pipeline).as_posix()
        params = notebook_parameters(cfg, tmp_figures, pipeline)
        (tmp / "figures").mkdir()
        executed = []
        for name in notebooks:
            out = tmp / f"{name}.ipynb"
            try:
                execute_notebook(sources / f"{name}.ipynb", out, params, cwd=pipeline)
            except ReportError as exc:
                kept = _keep_failed(out)
                raise ReportError(str(exc).replace(str(out), str(kept))) from exc.__cause__
            _point_at_final_figures(out, tmp_figures, layout.FIGURES.as_posix())
            executed.append(out)
        title = f"sgsr report: x{params['scale']}"
        runs = ", ".join(f"`{r}`" for r in params["runs"])
        intro = f"Scale x{params['scale']}; runs {runs}; test sets {', '.join(cfg.data.test_sets)}."
        if params["baseline_run"]:
            intro += (
                f" The paired comparison is `{params['candidate_run']}` minus "
                f"`{params['baseline_run']}` (the baseline loss, `experiment.baseline`)."
            )
        render_html(executed, tmp / REPORT_HTML, title, intro)
        replace_dir(tmp, final)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return final / REPORT_HTML


def _keep_failed(notebook: Path) -> Path:
    """Move a failed executed notebook out of the doomed temp folder into the system temp
    dir (outside the pipeline, so DVC never sees it), where its traceback can be read."""
    if not notebook.is_file():
        return notebook
    dest = Path(tempfile.mkdtemp(prefix="sgsr-report-failed-")) / notebook.name
    shutil.move(notebook, dest)
    return dest


def _point_at_final_figures(path: Path, tmp_figures: str, final_figures: str) -> None:
    """Make the executed notebook's injected ``figures_dir`` name ``reports/figures`` rather
    than the temp folder, so re-running the saved notebook by hand writes where it should."""
    import nbformat

    nb = nbformat.read(str(path), as_version=4)
    for cell in nb.cells:
        if "injected-parameters" in cell.metadata.get("tags", []):
            cell.source = cell.source.replace(tmp_figures, final_figures)
    nbformat.write(nb, str(path))
