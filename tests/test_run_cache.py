"""`dvc exp run` back to params already run restores the train stage from DVC's run cache.

What makes it possible: every output of a train stage (weights, run card, curves) is cached
and none is persistent, while the trainer's resume state (checkpoint, curves as they grow, an
EMA run's raw weights) lives in an ignored working folder beside them (sgsr.layout)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import yaml
from conftest import copy_pipeline_sources, tiny_profile

from sgsr import layout
from sgsr.checkpoint import load_checkpoint
from sgsr.config import write_run_index

REPO = Path(__file__).resolve().parents[1]
RUN = "edsr_tiny-l1-x4"
STAGE = f"train@{RUN}"

TINY = {
    "data": {"source": "dir", "dir": "datasets", "train_sets": ["tr"], "test_sets": ["te"],
             "metric_weights": False},
    "prepare": {"patch_size": 32, "stride": 32, "val_images": 1},
    "experiment": {"losses": ["l1"]},
    "train": {"iterations": 2, "batch_size": 2, "lr_patch": 8, "warmup": 0,
              "checkpoint_every": 1, "val_every": 1, "log_every": 1},
}  # fmt: skip


def test_every_train_output_is_cached_and_none_persists() -> None:
    """DVC saves no run-cache entry for a stage with a persistent output, nor with an uncached
    one that is not a metric or plot (dvc.stage.Stage.run), so neither may appear here."""
    for dvc_yaml in ("dvc.yaml", "profiles/finetune/dvc.yaml", "profiles/gan/dvc.yaml"):
        stages = yaml.safe_load((REPO / dvc_yaml).read_text())["stages"]
        trains = [s.get("do", s) for name, s in stages.items() if name.endswith("train")]
        assert trains, dvc_yaml
        for stage in trains:
            flags = [o for o in stage["outs"] if isinstance(o, dict)]
            assert not flags, (dvc_yaml, flags)  # plain paths: cached, not persistent


def _checkpoint_warnings(output: str) -> list[str]:
    """Warning lines about checkpoints or resuming (DVC's own, about outputs it has not
    restored yet, are not ours to judge)."""
    lines = [ln for ln in output.splitlines() if "warn" in ln.lower()]
    return [ln for ln in lines if "checkpoint" in ln or "resum" in ln]


def _state(repo: Path) -> dict[str, bytes]:
    files = [*(repo / layout.run_dir(RUN)).rglob("*"), *(repo / layout.live_dir(RUN)).rglob("*")]
    return {p.relative_to(repo).as_posix(): p.read_bytes() for p in files if p.is_file()}


@pytest.mark.slow
def test_exp_run_back_to_earlier_params_restores_without_training(tmp_path: Path) -> None:
    repo = tmp_path / "exp"
    repo.mkdir()
    shutil.copy2(REPO / "dvc.yaml", repo / "dvc.yaml")
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    for key, value in TINY.items():
        params[key] = {**params[key], **value}
    (repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    write_run_index(repo / "params.yaml")
    shutil.copy2(REPO / ".gitignore", repo / ".gitignore")
    copy_pipeline_sources(repo)  # the code the stages depend on (root: .)
    sh = tiny_profile(repo, (48, 44))
    sh("git", "init", "-q")
    sh("dvc", "init", "-q")
    sh("dvc", "config", "core.analytics", "false")
    sh("git", "add", "-A")
    sh("git", "commit", "-qm", "tiny")

    first = sh("dvc", "exp", "run", "-S", "train.iterations=2", STAGE)
    assert "sgsr train" in first and not _checkpoint_warnings(first), first  # fresh: silent
    at_2 = _state(repo)
    assert json.loads(at_2[f"models/{RUN}/run.json"])["iterations"] == 2
    assert f"models/live/{RUN}/plots/metrics/train/total.tsv" in at_2
    assert not (repo / "models/live/.gitignore").exists()  # git ignores the curves already

    second = sh("dvc", "exp", "run", "-S", "train.iterations=3", STAGE)
    # the checkpoint of the first experiment is for other params: an info line, no warning
    assert "starting at iteration 0" in second and not _checkpoint_warnings(second), second
    ck = repo / layout.checkpoint_dir(RUN) / "checkpoint.pt"
    at_3 = load_checkpoint(ck)
    assert at_3["iteration"] == 3

    third = sh("dvc", "exp", "run", "-S", "train.iterations=2", STAGE)
    assert f"Stage '{STAGE}' is cached - skipping run" in third, third
    assert "sgsr train" not in third  # the trainer never started ...
    again = load_checkpoint(ck)  # ... so the working checkpoint is still the second one's
    assert (again["iteration"], again["fingerprint"]) == (3, at_3["fingerprint"])
    assert _state(repo) == at_2  # weights, run card and curves, byte for byte
