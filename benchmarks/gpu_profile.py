"""The ``gpu`` profile in a throwaway copy: the CPU smoke test runs it with tiny params, and
``benchmarks/gpu_check.py`` with fewer iterations on a GPU machine.

The copy is laid out as in the repository (``<dest>/profiles/<name>/`` with ``dvc.yaml``
linking to ``<dest>/dvc.yaml`` and the notebooks at ``<dest>/notebooks``), is a DVC project of
its own with a private cache, and reads the datasets from ``$SGSR_SHARED_DATASETS`` (default
``../shared/datasets`` beside the repository). Nothing in this checkout is written.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import yaml

from benchmarks.bench_pipeline import copy_sources, deep_update

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("SGSR_SHARED_DATASETS", REPO.parent / "shared" / "datasets"))

#: Overrides that make the gpu profile a CPU smoke test: tiny network, 4 iterations, T91 only,
#: Set5 only, two losses x two seeds, and two runs per process (the sharing path through DVC).
TINY = {
    "data": {"train_sets": ["T91"], "test_sets": ["Set5"]},
    "prepare": {"patch_size": 64, "stride": 64, "val_images": 1},
    "models": {"edsr_baseline": {"arch": "edsr_baseline", "n_resblocks": 1, "n_feats": 8}},
    "experiment": {"losses": ["l1", "sgl_hess"], "replicates": [1]},
    "train": {
        "iterations": 4, "batch_size": 4, "lr_patch": 12, "warmup": 1, "checkpoint_every": 2,
        "val_every": 2, "log_every": 1, "num_workers": 0, "runs_per_process": 2,
    },
    "evaluate": {"metrics": ["psnr", "ssim"], "bootstrap": 200, "fid_bootstrap": 0},
}  # fmt: skip


def tool_env(extra_path: Path | None = None) -> dict[str, str]:
    """The environment for dvc and sgsr: this Python's bin first (and `extra_path`), this
    checkout's src on PYTHONPATH, git identity for the copy's commit."""
    env = dict(os.environ)
    bins = [str(Path(sys.executable).parent)] + ([str(extra_path)] if extra_path else [])
    env["PATH"] = os.pathsep.join([*bins, env.get("PATH", "")])
    env["PYTHONPATH"] = os.pathsep.join(
        p for p in (str(REPO / "src"), env.get("PYTHONPATH", "")) if p
    )
    for key, value in (
        ("GIT_AUTHOR_NAME", "sgsr"),
        ("GIT_AUTHOR_EMAIL", "sgsr@localhost"),
        ("GIT_COMMITTER_NAME", "sgsr"),
        ("GIT_COMMITTER_EMAIL", "sgsr@localhost"),
    ):
        env.setdefault(key, value)  # fmt: skip
    return env


def sgsr_shim(folder: Path) -> Path:
    """A folder holding an ``sgsr`` command that runs this Python's ``-m sgsr.cli``: the DVC
    stages call ``sgsr``, which a checkout that was copied, not pip-installed, lacks."""
    folder.mkdir(parents=True, exist_ok=True)
    shim = folder / "sgsr"
    shim.write_text(f'#!/bin/sh\nexec "{sys.executable}" -m sgsr.cli "$@"\n')
    shim.chmod(0o755)
    return folder


def make_profile_copy(
    dest: Path,
    params: dict | None = None,
    profile: str = "gpu",
    env: dict | None = None,
    dvc: bool = True,
) -> Path:
    """Copy ``profiles/<profile>`` (params merged with `params`) into `dest`; return the copy's
    profile folder, ready for ``dvc repro``. Uses git when it is installed (DVC's usual
    setting), else a DVC project without SCM; ``dvc=False``: no DVC project (for running the
    stage commands by hand where DVC is not installed)."""
    env = env or tool_env()
    dest.mkdir(parents=True, exist_ok=True)
    shutil.copy2(REPO / "dvc.yaml", dest / "dvc.yaml")
    copy_sources(dest)
    folder = dest / "profiles" / profile
    folder.mkdir(parents=True)
    (folder / "dvc.yaml").symlink_to(Path("..", "..", "dvc.yaml"))
    from sgsr.config import write_run_index
    from sgsr.yamlio import load_yaml  # duplicate keys refused, as load_config does

    raw = load_yaml(REPO / "profiles" / profile / "params.yaml")
    raw.setdefault("data", {})["dir"] = str(SHARED)
    deep_update(raw, params or {})
    (folder / "params.yaml").write_text(yaml.safe_dump(raw, sort_keys=False))
    write_run_index(folder / "params.yaml")  # the runs: block dvc.yaml expands over
    if not dvc:
        return folder
    git = shutil.which("git", path=env["PATH"]) is not None
    dvc_cmd = [sys.executable, "-m", "dvc"]
    if git:
        subprocess.run(["git", "init", "-q"], cwd=dest, check=True, env=env)
        subprocess.run([*dvc_cmd, "init", "-q", "--subdir"], cwd=folder, check=True, env=env)
    else:
        subprocess.run([*dvc_cmd, "init", "-q", "--no-scm"], cwd=folder, check=True, env=env)
    subprocess.run([*dvc_cmd, "config", "core.analytics", "false"], cwd=folder, check=True, env=env)
    if git:
        subprocess.run(["git", "add", "-A"], cwd=dest, check=True, env=env)
        subprocess.run(["git", "commit", "-qm", "profile copy"], cwd=dest, check=True, env=env)
    return folder


def dvc_repro(folder: Path, *targets: str, env: dict | None = None) -> tuple[float, str]:
    """``dvc repro [targets]`` in `folder`: (seconds, stdout + stderr). Raises on failure with
    the output."""
    env = env or tool_env()
    start = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, "-m", "dvc", "repro", *targets],
        cwd=folder,
        env=env,
        capture_output=True,
        text=True,
    )
    seconds = time.perf_counter() - start
    out = proc.stdout + proc.stderr
    if proc.returncode != 0:
        raise RuntimeError(f"dvc repro {' '.join(targets)} failed in {folder}:\n{out[-6000:]}")
    return seconds, out


def stages_run(output: str) -> list[str]:
    """Names of the stages a ``dvc repro`` output says it ran, in order."""
    return re.findall(r"Running stage '([^']+)'", output)
