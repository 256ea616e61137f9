"""Pipeline wall times: the default profile from a fresh copy, each stage, and a no-op repro.

Copies the tracked pipeline files into a temporary git+DVC repository (never touching this
checkout's outputs), runs ``dvc repro`` there, then times a second, no-op ``dvc repro``.
"""

from __future__ import annotations

import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from sgsr.pipeline_copy import dvc, make_pipeline_copy, stages_run, tool_env

REPO = Path(__file__).resolve().parents[1]


def stage_times(cwd: Path) -> dict[str, float]:
    """Each stage timed on its own, in pipeline order (``dvc repro -s`` per stage)."""
    listing = subprocess.run(
        ["dvc", "stage", "list", "--name-only"],
        cwd=cwd,
        env=tool_env(REPO / "src"),
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    times = {}
    for stage in listing:
        times[stage], _ = dvc(["repro", "-s", stage], cwd, tool_env(REPO / "src"))
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
        work = make_pipeline_copy(REPO, Path(tmp) / "repo", overrides)
        env = tool_env(REPO / "src")
        start = time.perf_counter()
        stages = stage_times(work)
        total = time.perf_counter() - start
        noop = [dvc(["repro"], work, env)[0] for _ in range(3)]
        _, out = dvc(["repro"], work, env)
        ran = stages_run(out)
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
