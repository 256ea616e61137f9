"""Throwaway copies of a checkout's pipeline, each a git + DVC project of its own, where
``dvc repro`` can run without touching the checkout's outputs: what the end-to-end tests, the
pipeline benchmark and the GPU checks drive.

A copy holds the root ``dvc.yaml``, the notebooks and the library's source files (the stages
depend on them through ``${root}``), plus either the default ``params.yaml``
(:func:`make_pipeline_copy`) or ``profiles/<name>/`` laid out as in the repository
(:func:`make_profile_copy`); params are merged with overrides (:func:`deep_update`) and the
``runs:`` block regenerated, as ``sgsr runs --write`` does.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

from sgsr.config import write_run_index
from sgsr.yamlio import load_yaml

_GIT_IDENTITY = {
    "GIT_AUTHOR_NAME": "sgsr",
    "GIT_AUTHOR_EMAIL": "sgsr@localhost",
    "GIT_COMMITTER_NAME": "sgsr",
    "GIT_COMMITTER_EMAIL": "sgsr@localhost",
}


def deep_update(base: dict, extra: Mapping[str, Any]) -> dict:
    """`base` with `extra` merged in, mappings key by key (other values replaced)."""
    for key, value in extra.items():
        if isinstance(value, Mapping) and isinstance(base.get(key), dict):
            deep_update(base[key], value)
        else:
            base[key] = value
    return base


def tool_env(src: Path | None = None, extra_path: Path | None = None) -> dict[str, str]:
    """The environment for dvc and sgsr in a copy: this Python's bin first (then `extra_path`),
    `src` (a checkout's ``src``) first on PYTHONPATH, and a git identity for the copy's commit
    (kept where the caller's environment has one)."""
    env = dict(os.environ)
    bins = [str(Path(sys.executable).parent)] + ([str(extra_path)] if extra_path else [])
    env["PATH"] = os.pathsep.join([*bins, env.get("PATH", "")])
    if src is not None:
        env["PYTHONPATH"] = os.pathsep.join(p for p in (str(src), env.get("PYTHONPATH", "")) if p)
    for key, value in _GIT_IDENTITY.items():
        env.setdefault(key, value)
    return env


def sgsr_shim(folder: Path) -> Path:
    """A folder holding an ``sgsr`` command that runs this Python's ``-m sgsr.cli``: the DVC
    stages call ``sgsr``, which a checkout that was copied, not pip-installed, lacks."""
    folder.mkdir(parents=True, exist_ok=True)
    shim = folder / "sgsr"
    shim.write_text(f'#!/bin/sh\nexec "{sys.executable}" -m sgsr.cli "$@"\n')
    shim.chmod(0o755)
    return folder


def copy_sources(repo: Path, dest: Path) -> None:
    """`repo`'s notebooks and library source files into `dest`: what dvc.yaml's stages depend
    on through ``${root}`` (the stages run the installed sgsr; the copy is what DVC hashes)."""
    shutil.copytree(repo / "notebooks", dest / "notebooks", dirs_exist_ok=True)
    shutil.copytree(
        repo / "src" / "sgsr",
        dest / "src" / "sgsr",
        dirs_exist_ok=True,
        ignore=shutil.ignore_patterns("__pycache__"),
    )


def _write_params(source: Path, dest: Path, params: Mapping[str, Any], **set_: Any) -> None:
    raw = load_yaml(source)  # duplicate keys refused, as load_config does
    for section, values in set_.items():
        raw.setdefault(section, {}).update(values)
    deep_update(raw, params)
    dest.write_text(yaml.safe_dump(raw, sort_keys=False))
    write_run_index(dest)  # the runs: block dvc.yaml expands over


def _git_commit(dest: Path, env: Mapping[str, str], message: str) -> None:
    subprocess.run(["git", "add", "-A"], cwd=dest, check=True, env=env)
    subprocess.run(["git", "commit", "-qm", message], cwd=dest, check=True, env=env)


def make_pipeline_copy(
    repo: Path, dest: Path, params: Mapping[str, Any] | None = None, env: dict | None = None
) -> Path:
    """`dest`: a git + DVC project holding `repo`'s default profile (dvc.yaml, params.yaml with
    `params` merged in, .dvcignore, the notebooks and the library's source files)."""
    env = env or tool_env(repo / "src")
    dest.mkdir(parents=True, exist_ok=True)
    for name in ("dvc.yaml", "params.yaml", ".dvcignore"):
        if (repo / name).exists():
            shutil.copy2(repo / name, dest / name)
    copy_sources(repo, dest)
    if params:
        _write_params(repo / "params.yaml", dest / "params.yaml", params)
    subprocess.run(["git", "init", "-q"], cwd=dest, check=True, env=env)
    subprocess.run(["dvc", "init", "-q"], cwd=dest, check=True, env=env)
    subprocess.run(["dvc", "config", "core.analytics", "false"], cwd=dest, check=True, env=env)
    _git_commit(dest, env, "pipeline copy")
    return dest


def make_profile_copy(
    repo: Path,
    dest: Path,
    params: Mapping[str, Any] | None = None,
    profile: str = "gpu",
    env: dict | None = None,
    dvc: bool = True,
    datasets: Path | None = None,
) -> Path:
    """Copy `repo`'s ``profiles/<profile>`` (params merged with `params`; ``data.dir`` set to
    `datasets` when given) into `dest`; return the copy's profile folder, ready for ``dvc
    repro``. Uses git when it is installed (DVC's usual setting), else a DVC project without
    SCM; ``dvc=False``: no DVC project (for running the stage commands by hand where DVC is not
    installed)."""
    env = env or tool_env(repo / "src")
    dest.mkdir(parents=True, exist_ok=True)
    shutil.copy2(repo / "dvc.yaml", dest / "dvc.yaml")
    copy_sources(repo, dest)
    folder = dest / "profiles" / profile
    folder.mkdir(parents=True)
    (folder / "dvc.yaml").symlink_to(Path("..", "..", "dvc.yaml"))
    data = {"dir": str(datasets)} if datasets is not None else {}
    _write_params(repo / "profiles" / profile / "params.yaml", folder / "params.yaml",
                  params or {}, data=data)  # fmt: skip
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
        _git_commit(dest, env, "profile copy")
    return folder


def dvc(args: list[str], cwd: Path, env: dict | None = None) -> tuple[float, str]:
    """``dvc <args>`` (this Python's DVC) in `cwd`: (seconds, stdout + stderr). Raises on
    failure with the output's tail."""
    start = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, "-m", "dvc", *args],
        cwd=cwd,
        env=env or tool_env(),
        capture_output=True,
        text=True,
    )
    seconds = time.perf_counter() - start
    out = proc.stdout + proc.stderr
    if proc.returncode != 0:
        raise RuntimeError(f"dvc {' '.join(args)} failed in {cwd}:\n{out[-6000:]}")
    return seconds, out


def dvc_repro(folder: Path, *targets: str, env: dict | None = None) -> tuple[float, str]:
    """``dvc repro [targets]`` in `folder` (:func:`dvc`)."""
    return dvc(["repro", *targets], folder, env)


def stages_run(output: str) -> list[str]:
    """Names of the stages a ``dvc repro`` output says it ran, in order."""
    return re.findall(r"Running stage '([^']+)'", output)
