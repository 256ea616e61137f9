"""The report stage: the parameters each notebook gets, executing the notebooks with papermill
and rendering one offline HTML report. What the notebooks read is `sgsr.readers`.

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
- Byte-reproducible: ``reports/`` is a DVC output, so the same inputs must give the same bytes
  or every ``dvc repro`` changes dvc.lock. The executed notebooks lose the clock times papermill
  and nbclient record (:func:`scrub_notebook`) and name paths relative to the pipeline, the
  HTML shows a date only from ``SOURCE_DATE_EPOCH`` (:func:`generated_note`), and the figures
  draw their jitter and bootstrap from a fixed seed (``sgsr.plotting``).
"""

from __future__ import annotations

import ast
import datetime as _dt
import logging
import os
import re
import shutil
import tempfile
from collections.abc import Mapping, Sequence
from html import escape as html_escape
from pathlib import Path
from typing import Any

from sgsr import layout
from sgsr.config import Config, Run
from sgsr.fsutil import staged_dir, write_text
from sgsr.losses import sgl_operator
from sgsr.readers import read_paired
from sgsr.runs import bicubic_run, pairs

log = logging.getLogger(__name__)

#: The notebooks, executed in this order; ``<root>/notebooks/<name>.ipynb``.
NOTEBOOKS: tuple[str, ...] = ("01_data", "02_gradient_maps", "03_training", "04_results")
#: The order report.html shows them in: the results a reader came for first, then how
#: training went and what the operator sees, then the data (others after these).
SHOWN_ORDER: tuple[str, ...] = ("04_results", "03_training", "02_gradient_maps", "01_data")
REPORT_HTML = "report.html"
#: The tag of papermill's injected-parameters cell, and the id that cell gets in the saved
#: notebook (papermill gives it a random one).
INJECTED_CELL_ID = "injected-parameters"
#: What papermill (``papermill``) and nbclient (``execution``) record of the clock, per cell
#: and per notebook: it differs on every run and tells a reader nothing about the results.
CLOCK_KEYS: frozenset[str] = frozenset({"start_time", "end_time", "duration"})


class ReportError(ValueError):
    """A notebook failed; the message names the notebook, the cell and the error.

    A ValueError so that ``sgsr report`` prints it as one line, like the other stages' errors.
    """


# --------------------------------------------------------------------------------------------
# The parameters the notebooks get


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
      races the kernel's last reply and makes it log "KeyboardInterrupt caught in kernel";
    - sends the kernel process's own stderr to a file and logs it at debug level
      (``SGSR_LOG_LEVEL=DEBUG``): cell errors reach the notebook and the stage through the
      kernel's messages, so what is left there is teardown noise, e.g. libzmq's
      ``Assertion failed: pfd.revents & POLLIN`` when the process exits under load.
    """
    # Jupyter's kernel machinery: only when notebooks are executed
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

        async def _async_launch_kernel(self, kernel_cmd: list[str], **kw: Any) -> None:
            if "stderr" not in kw:
                self._stderr_file = tempfile.TemporaryFile(prefix="sgsr-kernel-stderr-")  # noqa: SIM115 (closed in cleanup)
                kw["stderr"] = self._stderr_file
            await super()._async_launch_kernel(kernel_cmd, **kw)

        async def _async_cleanup_resources(self, restart: bool = False) -> None:
            await super()._async_cleanup_resources(restart=restart)
            stderr = getattr(self, "_stderr_file", None)
            if stderr is not None and not restart:
                stderr.seek(0)
                text = stderr.read().decode(errors="replace").strip()
                stderr.close()
                self._stderr_file = None
                if text:
                    log.debug("notebook kernel stderr:\n%s", text)
            if not restart and getattr(self, "_ipc_dir", None):
                shutil.rmtree(self._ipc_dir, ignore_errors=True)

    return VenvKernelManager


def declared_parameters(source: str | os.PathLike[str]) -> list[str]:
    """Names assigned in the notebook's cell tagged ``parameters``, in order.

    Read with ``ast`` rather than ``papermill.inspect_notebook``, whose line parser skips any
    line holding more than one ``=`` (e.g. a comment with one) and would drop that parameter.
    """
    # nbformat: only when a notebook is read
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
    # papermill (imports nbclient, jupyter): only when notebooks are executed
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


def generated_note(env: Mapping[str, str] | None = None) -> str:
    """The report's "Generated ..." sentence: with a date only when ``SOURCE_DATE_EPOCH`` is set
    (the reproducible-builds convention; e.g. ``$(git log -1 --format=%ct)``), since a wall-clock
    date would change ``reports/`` (a DVC output) on every run of the same inputs."""
    env = os.environ if env is None else env
    raw = env.get("SOURCE_DATE_EPOCH", "").strip()
    if not raw:
        return "Generated by `sgsr report`."
    try:
        if not re.fullmatch(r"[0-9]+", raw):
            raise ValueError(raw)
        stamp = _dt.datetime.fromtimestamp(int(raw), _dt.UTC).strftime("%Y-%m-%d %H:%M UTC")
    except (ValueError, OverflowError, OSError) as exc:
        raise ValueError(
            f"SOURCE_DATE_EPOCH={raw!r} is not a whole number of seconds since 1970-01-01 UTC: "
            "unset it, or set it to e.g. $(git log -1 --format=%ct)"
        ) from exc
    return f"Generated {stamp} (from `SOURCE_DATE_EPOCH`) by `sgsr report`."


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
    # nbconvert and jinja2 (slow to import): only when the page is rendered
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
        # every cell id is fixed (nbformat's new cells get random ones; the HTML shows them)
        body.append(nbformat.v4.new_markdown_cell(f'<a id="{anchor}"></a>', id=f"nb{i}-anchor"))
        for cell in nb.cells:  # cell ids must stay unique across the merged notebook
            cell.id = f"nb{i}-{cell.get('id', len(body))}"[:64]
            body.append(cell)
        for key in ("kernelspec", "language_info"):
            if key in nb.metadata and key not in merged.metadata:
                merged.metadata[key] = nb.metadata[key]
    head = (
        f"# {title}\n\n{intro}\n\n{generated_note()} The executed notebooks "
        "(with their code) are beside this file; the figures are in `figures/`.\n\n"
        '<nav class="sgsr-toc"><strong>Contents</strong>\n<ol>\n' + "\n".join(toc) + "\n</ol></nav>"
    )
    merged.cells = [nbformat.v4.new_markdown_cell(head, id="report-head"), *body]
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
    with staged_dir(final) as tmp:
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
            _finalize_notebook(
                out,
                input_path=os.path.relpath(sources / f"{name}.ipynb", pipeline),
                output_path=(layout.REPORTS / out.name).as_posix(),
                tmp_figures=tmp_figures,
                final_figures=layout.FIGURES.as_posix(),
            )
            executed.append(out)
        title = f"sgsr report: x{params['scale']}"
        runs = ", ".join(f"`{r}`" for r in params["runs"])
        intro = f"Scale x{params['scale']}; runs {runs}; test sets {', '.join(cfg.data.test_sets)}."
        if params["baseline_run"]:
            intro += (
                f" The paired comparison is `{params['candidate_run']}` minus "
                f"`{params['baseline_run']}` (the baseline loss, `experiment.baseline`)."
            )
        rank = {name: i for i, name in enumerate(SHOWN_ORDER)}
        executed.sort(key=lambda path: rank.get(path.stem, len(rank)))
        render_html(executed, tmp / REPORT_HTML, title, intro)
    return final / REPORT_HTML


def _keep_failed(notebook: Path) -> Path:
    """Move a failed executed notebook out of the doomed temp folder into the system temp
    dir (outside the pipeline, so DVC never sees it), where its traceback can be read."""
    if not notebook.is_file():
        return notebook
    dest = Path(tempfile.mkdtemp(prefix="sgsr-report-failed-")) / notebook.name
    shutil.move(notebook, dest)
    return dest


def scrub_notebook(
    nb: Any,
    input_path: str,
    output_path: str,
    tmp_figures: str,
    final_figures: str,
) -> Any:
    """An executed notebook as the same inputs always write it (``nb``, changed in place).

    Drops the clock (``CLOCK_KEYS`` in papermill's notebook and cell metadata, nbclient's
    per-cell ``execution`` timestamps); keeps execution counts, outputs, each cell's status and
    the parameters. Papermill's ``input_path``/``output_path`` become the given pipeline-relative
    paths (not this checkout's absolute ones nor the temp folder's), the injected cell gets a
    fixed id, and its ``figures_dir`` (source and recorded parameter) names ``final_figures``
    rather than the temp folder, so re-running the saved notebook by hand writes where it should.
    """
    meta = nb.metadata.get("papermill")
    if meta is not None:
        for key in CLOCK_KEYS:
            meta.pop(key, None)
        meta["input_path"], meta["output_path"] = input_path, output_path
        if meta.get("parameters", {}).get("figures_dir") == tmp_figures:
            meta["parameters"]["figures_dir"] = final_figures
    for cell in nb.cells:
        cell.metadata.pop("execution", None)
        for key in CLOCK_KEYS:
            cell.metadata.get("papermill", {}).pop(key, None)
        if INJECTED_CELL_ID in cell.metadata.get("tags", []):
            cell.source = cell.source.replace(tmp_figures, final_figures)
            cell.id = INJECTED_CELL_ID
    return nb


def _finalize_notebook(path: Path, **how: str) -> None:
    """:func:`scrub_notebook` on the executed notebook at ``path``, rewritten in place."""
    # nbformat: only when a notebook is read
    import nbformat

    nb = scrub_notebook(nbformat.read(str(path), as_version=4), **how)
    nbformat.write(nb, str(path))
