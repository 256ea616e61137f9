"""Training curves: the dvclive writer the trainer logs through, and the reader the report's
notebooks plot from (``models/live/<run>/plots/metrics/**/*.tsv``), side by side so the format
has one home."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sgsr.fsutil import write_text

if TYPE_CHECKING:
    import pandas as pd

#: Leaf names of learning-rate series: plotted apart from the losses even under ``train/``.
SCHEDULE_NAMES: frozenset[str] = frozenset({"lr", "learning_rate", "learning-rate"})


def open_live(live_dir: Path, resume_at: int | None) -> Any:
    """A dvclive logger that writes under `live_dir` only.

    Only the metric TSVs are written (``plots/metrics/{train,val}/*.tsv``; no metrics.json,
    dvc.yaml or report). ``save_dvc_exp=False, dvcyaml=None`` and the repository lookup is skipped:
    stock dvclive opens the DVC repo from the working directory and, in a git repository that
    has no ``.dvc``, *initialises one* (``Repo.init``). We need none of that: the stage declares
    the folder an output and ``dvc plots`` reads its TSV files. Nothing is sent anywhere:
    DVC Studio is never contacted, even with a Studio token configured.

    ``resume_at`` (the checkpoint's iteration) first drops rows logged after it by a run that
    died before its next checkpoint, so steps are never duplicated; None starts a fresh log
    (dvclive deletes the old curves).
    """
    # dvclive pulls in much of DVC: only a writer pays
    from dvclive import Live

    class _LocalLive(Live):
        def _init_dvc(self) -> None:
            self._inside_dvc_pipeline = bool(os.getenv("DVC_ROOT"))
            self._save_dvc_exp = False
            self._dvc_file = "dvc.yaml"

        def _init_studio(self) -> None:  # never contact DVC Studio, token or not
            self._dvc_studio_config = {}
            self._studio_events_to_skip = {"start", "data", "done"}

        def make_summary(self) -> None:
            """No metrics.json: ``dvc plots show`` on models/live would fail to plot it, and
            run.json already holds the final values."""

    if resume_at is not None:
        truncate_live(live_dir, resume_at)
    return _LocalLive(
        dir=str(live_dir), resume=resume_at is not None, save_dvc_exp=False, dvcyaml=None
    )


def truncate_live(live_dir: Path, step: int) -> None:
    """Drop rows with step > `step` from every dvclive metric TSV under `live_dir`."""
    metrics = Path(live_dir) / "plots" / "metrics"
    if not metrics.is_dir():
        return
    for tsv in sorted(metrics.rglob("*.tsv")):
        lines = tsv.read_text().splitlines(keepends=True)
        if not lines:
            continue
        header = lines[0].rstrip("\r\n").split("\t")
        col = header.index("step") if "step" in header else None
        if col is None:
            continue
        keep = [lines[0]]
        for line in lines[1:]:
            cells = line.rstrip("\r\n").split("\t")
            try:
                if int(cells[col]) <= step:
                    keep.append(line)
            except (ValueError, IndexError):
                continue
        if len(keep) != len(lines):
            write_text(tsv, "".join(keep))


def read_live(live_root: str | os.PathLike[str], runs: Sequence[str] | None = None) -> pd.DataFrame:
    """Every dvclive series under ``<live_root>/<run>/plots/metrics/**/*.tsv``, long form.

    Columns: run, metric (the path below plots/metrics without .tsv, e.g. ``train/l1``),
    group (its first folder, ``other`` at top level, ``schedule`` for a learning-rate series
    named in SCHEDULE_NAMES wherever it is), step, value. No other name is assumed.
    """
    # pandas: only readers of the curves pay, not the training loop
    import pandas as pd

    live_root = Path(live_root)
    names = runs if runs is not None else sorted(p.name for p in live_root.glob("*") if p.is_dir())
    frames = []
    for run in names:
        base = live_root / run / "plots" / "metrics"
        for tsv in sorted(base.rglob("*.tsv")):
            df = pd.read_csv(tsv, sep="\t")
            values = [c for c in df.columns if c not in ("step", "timestamp")]
            if "step" not in df.columns or len(values) != 1:
                raise ValueError(
                    f"{tsv}: expected dvclive columns step[, timestamp], <name>; "
                    f"got {', '.join(df.columns)}"
                )
            rel = tsv.relative_to(base).with_suffix("")
            group = rel.parts[0] if len(rel.parts) > 1 else "other"
            if rel.name.lower() in SCHEDULE_NAMES:  # a schedule, not a loss, wherever logged
                group = "schedule"
            frames.append(
                pd.DataFrame(
                    {
                        "run": run,
                        "metric": rel.as_posix(),
                        "group": group,
                        "step": pd.to_numeric(df["step"]),
                        "value": pd.to_numeric(df[values[0]], errors="coerce"),
                    }
                )
            )
    if not frames:
        return pd.DataFrame(columns=["run", "metric", "group", "step", "value"])
    return pd.concat(frames, ignore_index=True)


#: The dvclive folders whose series ``dvc plots show`` overlays, one chart per series.
OVERLAY_GROUPS = ("train", "val")


def overlay_tables(curves: pd.DataFrame) -> dict[str, pd.DataFrame]:
    """Per group of OVERLAY_GROUPS, the runs' series of :func:`read_live` as one table
    (run, metric, step, value; metric is the leaf name, e.g. ``l1``): DVC draws one line per
    file, so runs share a chart only when they share a file. An absent group is an empty
    table, so the file DVC's plots name always exists."""
    # pandas: only readers of the curves pay, not the training loop
    import pandas as pd

    out = {}
    for group in OVERLAY_GROUPS:
        sub = curves[curves["group"] == group]
        out[group] = pd.DataFrame(
            {
                "run": sub["run"],
                "metric": sub["metric"].str.rsplit("/", n=1).str[-1],
                "step": sub["step"],
                "value": sub["value"],
            }
        ).reset_index(drop=True)
    return out
