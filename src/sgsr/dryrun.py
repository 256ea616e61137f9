"""``dvc repro --dry`` that also works on a clone with no data yet (``sgsr dry``, ``make dry``).

DVC 3.67's dry run looks every changed stage up in its run cache, and the lookup hashes each of
the stage's dependencies. On a fresh clone the first stage that reads another stage's output
(``prepare`` reads ``data/raw``) has a dependency that does not exist yet, so the dry run stops
there with ``[Errno 2] No such file or directory`` instead of listing what would run (DVC issue
https://github.com/treeverse/dvc/issues/9818; no release has the fix yet). DVC's development
branch skips the lookup when a dependency does not exist (a run whose inputs do not exist yet
cannot be in the run cache). :func:`dry_run` runs DVC's own ``repro --dry`` in this process with
that same rule, so it prints what DVC prints, stage by stage, and changes nothing on disk.

Neither of the other ways out works: a pinned DVC that has the fix does not exist on the package
index (3.67.1 is the newest), and no stage graph avoids the lookup (it hashes every dependency of
every stage that has a command, dependencies and outputs; only ``always_changed`` stages skip it).
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)


def _inputs_exist(stage: Any) -> bool:
    """False when a local file or folder the stage reads does not exist (yet)."""
    return all(dep.exists for dep in stage.deps if dep.protocol == "local" and dep.def_path)


@contextlib.contextmanager
def run_cache_lookup_skips_missing_inputs() -> Iterator[None]:
    """While inside: DVC's run-cache lookup treats a stage with a missing input as not cached
    (instead of hashing the missing path). Restored on exit."""
    from dvc.stage import cache

    original = getattr(cache, "_can_hash", None)
    if original is None:  # a DVC laid out differently: run it as it is
        log.debug("dvc.stage.cache._can_hash not found; dvc repro --dry runs unchanged")
        yield
        return

    def can_hash(stage: Any) -> bool:
        return _inputs_exist(stage) and original(stage)

    cache._can_hash = can_hash
    try:
        yield
    finally:
        cache._can_hash = original


def dry_run(pipeline: str | os.PathLike[str] = ".", args: Sequence[str] = ()) -> int:
    """``dvc repro --dry [args]`` in `pipeline` (a DVC project folder); DVC's exit status."""
    from dvc.cli import main as dvc_main

    dvc_log = logging.getLogger("dvc")
    propagate = dvc_log.propagate
    dvc_log.propagate = False  # DVC prints its own lines; sgsr's console handler would repeat them
    try:
        with contextlib.chdir(Path(pipeline)), run_cache_lookup_skips_missing_inputs():
            return dvc_main(["repro", "--dry", *args])
    finally:
        dvc_log.propagate = propagate
