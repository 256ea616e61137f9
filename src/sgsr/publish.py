"""The published remote: trained weights carried in the repository, so a clone pulls them offline.

``published/`` at the repository root is a DVC local remote (registered as ``published`` in the
root's and every profile's ``.dvc/config``), written by ``dvc push`` and so laid out exactly as
DVC lays out any remote: ``files/md5/<2 hex>/<30 hex>`` per file and ``<...>.dir`` per folder
listing. It holds only what a train stage outputs into the DVC cache: ``models/<run>/``
(``model.safetensors``, ``run.json``) and the curves ``models/live/<run>/`` (a few kB of TSV).
Data, SR images and metrics are recomputed; the raw weights of an EMA run and the checkpoint
are working files of the trainer, never published.

DVC itself does the copying both ways (``dvc push -r published`` / ``dvc pull -r published``);
this module picks the targets from ``dvc.lock`` and checks, before pulling, that every one of
them is in the remote, so a profile whose weights were never published fails with one message
that names the runs instead of a warning per missing file.
"""

from __future__ import annotations

import json
import os
import subprocess
from dataclasses import dataclass
from pathlib import Path

import yaml

from sgsr import layout
from sgsr.config import load_config

REMOTE = "published"
#: Where the remote lives, relative to the repository root.
REMOTE_DIR = Path("published")
LOCK = "dvc.lock"


class UnpublishedError(ValueError):
    """Some train outputs recorded in dvc.lock are not in the published remote."""


@dataclass(frozen=True)
class TrainOut:
    stage: str  # as dvc.lock names it, e.g. "train@edsr_tiny-l1-4"
    path: str  # relative to the pipeline folder: "models/<run>" or "models/live/<run>"
    md5: str  # of the folder listing: "<32 hex>.dir"


def is_train_stage(name: str) -> bool:
    """Every training family: ``train@<run>``, and e.g. ``pretrain@<run>`` or ``train_seed@``."""
    base = name.split("@", 1)[0]
    return base.startswith("train") or base.endswith("train")


def train_outs(pipeline: str | os.PathLike[str]) -> list[TrainOut]:
    """The run folders and curve folders that dvc.lock records for the runs `pipeline`'s
    params.yaml defines; entries the lock still holds for runs no longer defined are left out."""
    runs = {
        folder(r.name).as_posix()
        for r in load_config(Path(pipeline) / "params.yaml").runs
        for folder in (layout.run_dir, layout.live_dir)
    }
    lock_path = Path(pipeline) / LOCK
    if not lock_path.is_file():
        raise FileNotFoundError(
            f"{lock_path} not found: nothing was trained and committed in {pipeline}; run "
            "`dvc repro` there (or `make repro PROFILE=...`) first"
        )
    lock = yaml.safe_load(lock_path.read_text()) or {}
    found = []
    for stage, entry in (lock.get("stages") or {}).items():
        if not is_train_stage(stage):
            continue
        for out in entry.get("outs") or []:
            path = str(out.get("path", ""))
            if path not in runs:
                continue
            md5 = str(out.get("md5", ""))
            if not md5.endswith(".dir"):
                raise ValueError(
                    f"{lock_path}: stage {stage} output {path} has no folder hash ({md5!r}); "
                    "a train stage outputs folders: models/<run> and models/live/<run>"
                )
            found.append(TrainOut(stage, path, md5))
    return found


def object_path(remote: str | os.PathLike[str], md5: str) -> Path:
    """Where DVC 3 keeps the object `md5` in a local remote or cache."""
    return Path(remote) / "files" / "md5" / md5[:2] / md5[2:]


def missing_objects(remote: str | os.PathLike[str], out: TrainOut) -> list[str]:
    """Names of `out`'s objects absent from `remote`: its folder listing, or files listed in it."""
    listing = object_path(remote, out.md5)
    if not listing.is_file():
        return [f"{out.path} (folder listing {out.md5})"]
    entries = json.loads(listing.read_text())
    return [
        f"{out.path}/{e['relpath']}" for e in entries if not object_path(remote, e["md5"]).is_file()
    ]


def unpublished(pipeline: str | os.PathLike[str], remote: str | os.PathLike[str]) -> dict:
    """stage -> missing objects, for every train stage of `pipeline` not fully in `remote`."""
    gaps: dict[str, list[str]] = {}
    for out in train_outs(pipeline):
        missing = missing_objects(remote, out)
        if missing:
            gaps.setdefault(out.stage, []).extend(missing)
    return gaps


def repo_root(pipeline: str | os.PathLike[str]) -> Path:
    """The git repository's top folder above `pipeline` (where ``published/`` lives)."""
    here = Path(pipeline).resolve()
    for folder in (here, *here.parents):
        if (folder / ".git").exists():
            return folder
    raise FileNotFoundError(f"{pipeline} is not inside a git repository")


def _dvc(args: list[str], cwd: Path) -> None:
    proc = subprocess.run(["dvc", *args], cwd=cwd)
    if proc.returncode != 0:
        raise OSError(f"`dvc {' '.join(args)}` in {cwd} failed (exit {proc.returncode})")


def check(pipeline: str | os.PathLike[str], remote: Path | None = None) -> list[TrainOut]:
    """Every train output of `pipeline`, after checking all are published (else raise)."""
    remote = remote if remote is not None else repo_root(pipeline) / REMOTE_DIR
    outs = train_outs(pipeline)
    if not outs:
        raise UnpublishedError(f"{Path(pipeline) / LOCK} records no train stage: nothing to pull")
    gaps = unpublished(pipeline, remote)
    if gaps:
        where = Path(pipeline).resolve()
        shown = (
            where.relative_to(remote.resolve().parent).as_posix()
            if where.is_relative_to(remote.resolve().parent)
            else str(where)
        )
        lines = "\n".join(f"  {stage}: {', '.join(m[:2])}" for stage, m in sorted(gaps.items()))
        raise UnpublishedError(
            f"{len(gaps)} of {len({o.stage for o in outs})} train stage(s) of {shown} are not "
            "in the published "
            f"remote {remote}, so `dvc pull` cannot bring them (first missing objects):\n{lines}\n"
            "Their weights exist only where they were trained: retrain them (`dvc repro`) and "
            "publish them (`make publish PROFILE=...`), or pull from the team's remote "
            "(`dvc pull -r shared`) if it holds them."
        )
    return outs


def pull(pipeline: str | os.PathLike[str] = ".") -> list[TrainOut]:
    """Fetch the published weights of `pipeline` (no network), then rebuild the data they depend
    on (``dvc repro prepare``: download from the configured source, then prepare), so the
    train stages are up to date; the stages after them are left to ``dvc repro``."""
    pipeline = Path(pipeline)
    outs = check(pipeline)
    _dvc(["pull", "--remote", REMOTE, *sorted({o.path for o in outs})], pipeline)
    _dvc(["repro", "prepare"], pipeline)
    return outs


def pull_absent(pipeline: str | os.PathLike[str] = ".") -> tuple[list[TrainOut], list[TrainOut]]:
    """What ``make repro`` does before ``dvc repro``: fetch, from the published remote, the
    outputs of every train stage in dvc.lock whose run folder is not in the workspace, so a
    fresh clone retrains none of the published runs (retraining on another machine gives
    different floats, so new hashes in dvc.lock). Returns (pulled, absent and not published);
    no lock, or every run folder present, pulls nothing. Unlike :func:`pull`, a run that is
    not published is no error (``dvc repro`` trains it) and ``prepare`` is left to ``dvc repro``.
    """
    pipeline = Path(pipeline)
    if not (pipeline / LOCK).is_file():
        return [], []
    absent = [o for o in train_outs(pipeline) if not (pipeline / o.path).exists()]
    if not absent:
        return [], []
    try:
        remote = repo_root(pipeline) / REMOTE_DIR
    except FileNotFoundError:  # not in a git checkout: no published remote to pull from
        return [], absent
    # a stage is fetched whole or not at all: its curves without its weights retrain anyway
    partial = {o.stage for o in absent if missing_objects(remote, o)}
    ready = [o for o in absent if o.stage not in partial]
    if ready:
        _dvc(["pull", "--remote", REMOTE, *sorted({o.path for o in ready})], pipeline)
    return ready, [o for o in absent if o not in ready]


def publish(pipeline: str | os.PathLike[str] = ".") -> list[TrainOut]:
    """Copy the train outputs recorded in dvc.lock from the DVC cache into the published remote
    (``dvc push -r published``, which lays them out as DVC does), then check all arrived."""
    pipeline = Path(pipeline)
    outs = train_outs(pipeline)
    if not outs:
        raise ValueError(f"{pipeline / LOCK} records no train stage: nothing to publish")
    _dvc(["push", "--remote", REMOTE, *sorted({o.path for o in outs})], pipeline)
    check(pipeline)
    return outs


def published_bytes(pipeline: str | os.PathLike[str], remote: Path | None = None) -> int:
    """Bytes `pipeline`'s train outputs take in the remote (listings included): its git cost."""
    remote = remote if remote is not None else repo_root(pipeline) / REMOTE_DIR
    seen: set[Path] = set()
    for out in train_outs(pipeline):
        listing = object_path(remote, out.md5)
        seen.add(listing)
        seen.update(object_path(remote, e["md5"]) for e in json.loads(listing.read_text()))
    return sum(p.stat().st_size for p in seen if p.is_file())
