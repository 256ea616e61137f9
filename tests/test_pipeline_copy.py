"""sgsr.pipeline_copy: the throwaway pipeline copies that the end-to-end tests, the pipeline
benchmark and the GPU checks run `dvc repro` in (those drive it with DVC; here, without)."""

from __future__ import annotations

import os
from pathlib import Path

import yaml
from conftest import GPU_TINY, REPO

from sgsr.config import load_config
from sgsr.pipeline_copy import deep_update, make_profile_copy, stages_run, tool_env


def test_deep_update_merges_mappings_key_by_key_and_replaces_the_rest() -> None:
    base = {"train": {"iterations": 9, "lr": 1.0}, "data": {"sets": ["a", "b"]}, "seed": 0}
    out = deep_update(base, {"train": {"iterations": 4}, "data": {"sets": ["c"]}, "new": 1})
    assert out is base
    assert base == {"train": {"iterations": 4, "lr": 1.0}, "data": {"sets": ["c"]}, "seed": 0,
                    "new": 1}  # fmt: skip


def test_a_profile_copy_holds_the_merged_params_and_their_runs(tmp_path: Path) -> None:
    folder = make_profile_copy(
        REPO, tmp_path / "copy", GPU_TINY, env=tool_env(REPO / "src"), dvc=False,
        datasets=tmp_path / "mirror",
    )  # fmt: skip
    assert folder == tmp_path / "copy" / "profiles" / "gpu"
    assert (folder / "dvc.yaml").resolve() == (tmp_path / "copy" / "dvc.yaml").resolve()
    assert (tmp_path / "copy" / "notebooks").is_dir() and not (folder / ".dvc").exists()
    copied = tmp_path / "copy" / "src" / "sgsr"  # what the stages' code dependencies hash
    assert (copied / "losses.py").read_bytes() == (REPO / "src/sgsr/losses.py").read_bytes()
    assert not list(copied.rglob("__pycache__"))
    cfg = load_config(folder / "params.yaml")  # the runs: block matches the merged matrix
    assert cfg.train.iterations == 4 and cfg.data.test_sets == ("Set5",)
    assert yaml.safe_load((folder / "params.yaml").read_text())["data"]["dir"] == str(
        tmp_path / "mirror"
    )
    assert (
        len(cfg.runs) == 4
        and cfg.train.lr == load_config(REPO / "profiles" / "gpu" / "params.yaml").train.lr
    ), "what the overrides leave out stays the profile's"


def test_tool_env_puts_this_checkout_first_and_stages_run_reads_dvc_output() -> None:
    env = tool_env(REPO / "src", Path("/opt/shim"))
    assert env["PYTHONPATH"].split(os.pathsep)[0] == str(REPO / "src")
    assert env["PATH"].split(os.pathsep)[1] == "/opt/shim" and env["GIT_AUTHOR_NAME"]
    out = "Running stage 'prepare':\n> sgsr prepare\nRunning stage 'train@m-l1-x4':\n"
    assert stages_run(out) == ["prepare", "train@m-l1-x4"]
