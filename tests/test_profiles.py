"""Profiles are DVC projects of their own (`dvc init --subdir`): the root project does not
collect their stages (so `dvc status` at the root speaks of the default profile only), while
each profile shares the root's cache and remote and keeps its own dvc.lock."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from dvc.repo import Repo

REPO = Path(__file__).resolve().parents[1]
PROFILES = sorted(p.parent for p in (REPO / "profiles").glob("*/params.yaml"))


def test_the_root_project_holds_only_the_default_stages() -> None:
    with Repo(str(REPO)) as root:
        stages = root.index.stages
        paths = {Path(os.path.abspath(s.path)) for s in stages}
        names = {s.addressing for s in stages}
    assert paths == {REPO / "dvc.yaml"}, paths  # no profiles/*/dvc.yaml
    assert {"download", "prepare", "summarize", "report"} <= names


@pytest.mark.parametrize("profile", PROFILES, ids=lambda p: p.name)
def test_each_profile_is_a_subrepo_sharing_cache_and_remote(profile: Path) -> None:
    assert (profile / ".dvc" / "config").is_file(), f"run `dvc init --subdir` in {profile}"
    with Repo(str(REPO)) as root, Repo(str(profile)) as sub:
        assert Path(sub.root_dir) == profile
        assert sub.config["core"].get("analytics") is False  # never phones home
        assert sub.cache.local.path == root.cache.local.path
        assert sub.config["core"].get("remote") == root.config["core"].get("remote")
        name = root.config["core"]["remote"]
        assert sub.cloud.get_remote_odb(name).path == root.cloud.get_remote_odb(name).path
        assert {Path(os.path.abspath(s.path)) for s in sub.index.stages} == {profile / "dvc.yaml"}


def test_the_study_lock_is_read_by_its_project() -> None:
    """The committed study results stay addressable: its stages carry their locked outputs."""
    study = REPO / "profiles" / "study"
    if not (study / "dvc.lock").is_file():
        pytest.skip("no committed study lock")
    with Repo(str(study)) as sub:
        summarize = next(s for s in sub.index.stages if s.name == "summarize")
        locked = {str(o.def_path): o.hash_info.value for o in summarize.outs}
    assert locked.get("results/summary.csv"), locked
