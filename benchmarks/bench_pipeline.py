"""Pipeline wall times: the default profile from a fresh copy, each stage, and a no-op repro.

Copies the tracked pipeline files into a temporary git+DVC repository (never touching this
checkout's outputs), runs ``dvc repro`` there, then times a second, no-op ``dvc repro``.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def copy_sources(dest: Path) -> None:
    """The notebooks and the library's source files into `dest`: what dvc.yaml's stages depend
    on through ``${root}`` (the stages run the installed sgsr; the copy is what DVC hashes)."""
    shutil.copytree(REPO / "notebooks", dest / "notebooks", dirs_exist_ok=True)
    shutil.copytree(
        REPO / "src" / "sgsr",
        dest / "src" / "sgsr",
        dirs_exist_ok=True,
        ignore=shutil.ignore_patterns("__pycache__"),
    )


def make_pipeline_copy(dest: Path, params: dict | None = None) -> Path:
    """A throwaway repo holding the default profile (dvc.yaml, params.yaml, notebooks, code)."""
    dest.mkdir(parents=True, exist_ok=True)
    for name in ("dvc.yaml", "params.yaml", ".dvcignore"):
        if (REPO / name).exists():
            shutil.copy2(REPO / name, dest / name)
    copy_sources(dest)
    if params:
        import yaml

        from sgsr.config import write_run_index
        from sgsr.yamlio import load_yaml  # duplicate keys refused, as load_config does

        raw = load_yaml(dest / "params.yaml")
        deep_update(raw, params)
        (dest / "params.yaml").write_text(yaml.safe_dump(raw, sort_keys=False))
        write_run_index(dest / "params.yaml")  # the runs: block dvc.yaml expands over
    env = tool_env()
    subprocess.run(["git", "init", "-q"], cwd=dest, check=True, env=env)
    subprocess.run(["dvc", "init", "-q"], cwd=dest, check=True, env=env)
    subprocess.run(["dvc", "config", "core.analytics", "false"], cwd=dest, check=True, env=env)
    subprocess.run(["git", "add", "-A"], cwd=dest, check=True, env=env)
    subprocess.run(["git", "commit", "-qm", "pipeline copy"], cwd=dest, check=True, env=env)
    return dest


def deep_update(base: dict, extra: dict) -> dict:
    """`base` with `extra` merged in, mappings key by key (other values replaced)."""
    for key, value in extra.items():
        if isinstance(value, dict) and isinstance(base.get(key), dict):
            deep_update(base[key], value)
        else:
            base[key] = value
    return base


def tool_env() -> dict[str, str]:
    env = dict(os.environ)
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    env.setdefault("GIT_AUTHOR_NAME", "sgsr")
    env.setdefault("GIT_AUTHOR_EMAIL", "sgsr@localhost")
    env.setdefault("GIT_COMMITTER_NAME", "sgsr")
    env.setdefault("GIT_COMMITTER_EMAIL", "sgsr@localhost")
    return env


def dvc(args: list[str], cwd: Path) -> tuple[float, str]:
    start = time.perf_counter()
    proc = subprocess.run(["dvc", *args], cwd=cwd, env=tool_env(), capture_output=True, text=True)
    elapsed = time.perf_counter() - start
    if proc.returncode != 0:
        raise RuntimeError(f"dvc {' '.join(args)} failed in {cwd}:\n{proc.stdout}\n{proc.stderr}")
    return elapsed, proc.stdout + proc.stderr


def stage_times(cwd: Path) -> dict[str, float]:
    """Each stage timed on its own, in pipeline order (``dvc repro -s`` per stage)."""
    listing = subprocess.run(
        ["dvc", "stage", "list", "--name-only"],
        cwd=cwd,
        env=tool_env(),
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    times = {}
    for stage in listing:
        times[stage], _ = dvc(["repro", "-s", stage], cwd)
    return times


def run(quick: bool = False) -> dict:
    overrides = None
    if quick:
        overrides = {
            "train": {
                "iterations": 4,
                "checkpoint_every": 2,
                "val_every": 2,
                "log_every": 1,
                "milestones": [2],
            },
            "evaluate": {"bootstrap": 200, "metrics": ["psnr", "ssim"], "dvc_metrics": []},
        }
    with tempfile.TemporaryDirectory(prefix="sgsr-bench-pipeline-") as tmp:
        work = make_pipeline_copy(Path(tmp) / "repo", overrides)
        start = time.perf_counter()
        stages = stage_times(work)
        total = time.perf_counter() - start
        noop = [dvc(["repro"], work)[0] for _ in range(3)]
        _, out = dvc(["repro"], work)
        ran = re.findall(r"Running stage '([^']+)'", out)
    return {
        "profile": "default (quick overrides)" if quick else "default",
        "stage_seconds": stages,
        "pipeline_seconds": total,
        "noop_repro_seconds": statistics.median(noop),
        "noop_repro_reran_stages": ran,
        "goal_noop_seconds": 2.0,
        "meets_noop_goal": statistics.median(noop) <= 2.0,
    }


if __name__ == "__main__":
    print(json.dumps(run(quick="--quick" in sys.argv), indent=2))
