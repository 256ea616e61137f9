"""The ``runs:`` block of params.yaml: every run by name, for dvc.yaml to expand over.

DVC names a stage generated from a dict by its key (``train@<key>``) and can do no arithmetic
on params, so the cross product of ``experiment`` (models x losses x scales x seeds) cannot be
taken in dvc.yaml; this block spells it out, keyed by run name, so the stage a researcher types
is the run name ``sgsr runs`` prints: ``dvc repro train@edsr_tiny-l1-x4``. It is generated from
``experiment`` (``sgsr runs --write``, which ``make repro`` runs first), and params validation
refuses a block that disagrees with ``experiment``, naming the fix.

It also renames the stage keys of a ``dvc.lock`` written before this block existed (the matrix
names ``train@<model>-<loss>-<scale>``, ``train_seed@<model>-<loss>-<scale>-<seed>``,
``bicubic@<scale>``), so finished runs stay finished: nothing is retrained.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import yaml

from sgsr import fsutil
from sgsr.runs import Run, bicubic_run

#: The top-level params key of the block.
KEY = "runs"
#: Its parts: trained runs (train, infer, evaluate stages), bicubic baselines (one stage each)
#: and zero-shot runs (one stage each: the starting weights written, inferred, evaluated).
TRAINED, BICUBIC, ZERO_SHOT = "trained", "bicubic", "zeroshot"
PARTS = (TRAINED, BICUBIC, ZERO_SHOT)
#: The per-run stage families of dvc.yaml.
FAMILIES = ("train", "infer", "evaluate")

_HEADER = """\
# Every run by name: dvc.yaml's per-run stages expand over this block, so a stage is named
# after its run (dvc repro train@<run>, infer@<run>, evaluate@<run>, bicubic@bicubic-x<s>,
# zeroshot@<model>-zeroshot-x<s>).
# Generated from experiment: above by `sgsr runs --write` (make repro runs it first); every
# sgsr command refuses params where the two disagree. Edit experiment:, not this block.
"""


def expected(runs: Iterable[Run], scales: Iterable[int]) -> dict[str, dict[str, Any]]:
    """The block the runs and the experiment's scales call for."""
    runs = list(runs)
    trained = {
        r.name: {"model": r.model, "loss": r.loss, "scale": r.scale}
        for r in runs
        if not r.zero_shot
    }
    bicubic = {bicubic_run(s): {"scale": s} for s in dict.fromkeys(scales)}
    zero_shot = {r.name: {"model": r.model, "scale": r.scale} for r in runs if r.zero_shot}
    return {TRAINED: trained, BICUBIC: bicubic, ZERO_SHOT: zero_shot}


def problems(block: Any, want: Mapping[str, Any]) -> list[str]:
    """How a params ``runs:`` block differs from `want`, one message per difference."""
    fix = "run `sgsr runs --write` to regenerate it from experiment:"
    if not isinstance(block, Mapping):
        return [f"{KEY}: must be the generated mapping of run names, got {block!r}; {fix}"]
    out = []
    for part in PARTS:
        have = block.get(part)
        if not isinstance(have, Mapping):
            out.append(f"{KEY}.{part}: missing or not a mapping; {fix}")
            continue
        missing = [n for n in want[part] if n not in have]
        extra = [n for n in have if n not in want[part]]
        changed = [n for n in want[part] if n in have and have[n] != want[part][n]]
        if missing:
            out.append(f"{KEY}.{part}: lacks {', '.join(missing)} (defined by experiment:); {fix}")
        if extra:
            out.append(
                f"{KEY}.{part}: lists {', '.join(map(str, extra))}, which experiment: does not "
                f"define; {fix}"
            )
        if changed:
            out.append(f"{KEY}.{part}: {', '.join(changed)} disagree with experiment:; {fix}")
    for key in block:
        if key not in PARTS:
            out.append(f"{KEY}.{key}: unknown key (the block has {', '.join(PARTS)}); {fix}")
    return out


def render(want: Mapping[str, Mapping[str, Any]]) -> str:
    """The block as params.yaml text: a comment, then one flow mapping per run."""

    def entry(fields: Mapping[str, Any]) -> str:
        return "{" + ", ".join(f"{k}: {v}" for k, v in fields.items()) + "}"

    lines = [_HEADER.rstrip("\n"), f"{KEY}:"]
    for part in PARTS:
        items = want[part]
        if not items:
            lines.append(f"  {part}: {{}}")
            continue
        lines.append(f"  {part}:")
        lines += [f"    {name}: {entry(fields)}" for name, fields in items.items()]
    return "\n".join(lines) + "\n"


def _block_span(lines: list[str]) -> tuple[int, int] | None:
    """[start, end) of the ``runs:`` block in params lines, its header comment included."""
    start = next((i for i, line in enumerate(lines) if re.match(rf"{KEY}\s*:", line)), None)
    if start is None:
        return None
    end = start + 1
    while end < len(lines) and (not lines[end].strip() or lines[end][0] in " \t"):
        end += 1
    while end > start + 1 and not lines[end - 1].strip():
        end -= 1  # blank lines after the block belong to what follows
    first = start
    while first > 0 and lines[first - 1].startswith("#"):
        first -= 1
    return first, end


def rewrite(text: str, want: Mapping[str, Mapping[str, Any]]) -> str:
    """`text` (a params file) with its ``runs:`` block replaced by `want`, or appended; every
    other line, comments included, is kept as it was."""
    lines = text.splitlines(keepends=True)
    block = render(want).splitlines(keepends=True)
    span = _block_span(lines)
    if span is None:
        if lines and not lines[-1].endswith("\n"):
            lines[-1] += "\n"
        sep = ["\n"] if lines and lines[-1].strip() else []
        return "".join([*lines, *sep, *block])
    first, end = span
    return "".join([*lines[:first], *block, *lines[end:]])


_MATRIX = r"(?P<model>.+)-(?P<loss>[^-]+)-(?P<scale>\d+)"
_OLD_RUN = re.compile(rf"^(?P<fam>train|infer|evaluate)@{_MATRIX}$")
_OLD_SEED = re.compile(rf"^(?P<fam>train|infer|evaluate)_seed@{_MATRIX}-(?P<seed>\d+)$")
_OLD_BICUBIC = re.compile(r"^bicubic@(?P<scale>\d+)$")


def new_stage_name(old: str) -> str | None:
    """The run-named stage a matrix-named one became, or None if `old` is not matrix-named
    (a stage already renamed, download, summarize, ...)."""
    if m := _OLD_RUN.match(old):
        return f"{m['fam']}@{m['model']}-{m['loss']}-x{m['scale']}"
    if m := _OLD_SEED.match(old):
        return f"{m['fam']}@{m['model']}-{m['loss']}-x{m['scale']}-s{m['seed']}"
    if m := _OLD_BICUBIC.match(old):
        return f"bicubic@{bicubic_run(int(m['scale']))}"
    return None


def rename_lock_stages(lock: Mapping[str, Any], seed: int) -> tuple[dict[str, Any], int]:
    """A dvc.lock's content with matrix-named stages renamed to run names, and how many were.

    The replicate family (``train_seed``) became the one ``train`` family, whose params include
    the top-level ``seed`` (the primary run's seed): a renamed replicate's recorded params gain
    ``seed`` with the value given, so DVC sees the stage unchanged. Renaming twice is renaming
    once; a name already taken by a run-named entry is left alone (that entry is newer).
    """
    stages = lock.get("stages")
    if not isinstance(stages, Mapping):
        return dict(lock), 0
    out: dict[str, Any] = {}
    renamed = 0
    for name, entry in stages.items():
        new = new_stage_name(name)
        if new is None or new in stages or new in out:
            out.setdefault(name, entry)
            continue
        if name.startswith("train_seed@") and isinstance(entry, Mapping):
            entry = _with_seed_param(entry, seed)
        out[new] = entry
        renamed += 1
    return {**lock, "stages": out}, renamed


def _with_seed_param(entry: Mapping[str, Any], seed: int) -> dict[str, Any]:
    params = dict(entry.get("params") or {})
    for file, values in params.items():
        if isinstance(values, Mapping) and "seed" not in values:
            params[file] = {"seed": seed, **values}
    return {**entry, "params": params}


def rename_lock_file(lock: str | os.PathLike[str], seed: int) -> int:
    """:func:`rename_lock_stages` on a dvc.lock file, rewritten atomically if anything was
    renamed (in DVC's own layout); how many stages were."""
    content = yaml.safe_load(Path(lock).read_text()) or {}
    renamed, n = rename_lock_stages(content, seed)
    if n:
        text = yaml.safe_dump(renamed, sort_keys=False, default_flow_style=False, width=1000)
        fsutil.write_text(lock, text)
    return n
