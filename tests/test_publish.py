"""The published remote (sgsr.publish, ``make pull``): which outputs it holds, the check that
names unpublished runs, that every profile reaches it, and a fresh clone's offline pull."""

from __future__ import annotations

import configparser
import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest
from conftest import git_clone, make_dry_run

from sgsr import publish
from sgsr.config import load_config

REPO = Path(__file__).resolve().parents[1]
PROFILES = sorted(p.parent for p in (REPO / "profiles").glob("*/params.yaml"))


def _lock(stages: dict[str, list[tuple[str, str]]]) -> str:
    body = {
        "schema": "2.0",
        "stages": {
            name: {"cmd": "x", "outs": [{"path": p, "hash": "md5", "md5": m} for p, m in outs]}
            for name, outs in stages.items()
        },
    }
    return json.dumps(body)  # JSON is YAML


@pytest.fixture()
def pipeline(tmp_path: Path) -> Path:
    """The default profile's params with a lock: two runs, one stale run, curves, prepare."""
    folder = tmp_path / "repo"
    folder.mkdir()
    (folder / ".git").mkdir()
    shutil.copy(REPO / "params.yaml", folder / "params.yaml")
    (folder / "dvc.lock").write_text(
        _lock(
            {
                "prepare": [("data/prepared", "p" * 32 + ".dir")],
                "train@edsr_tiny-l1-4": [
                    ("models/edsr_tiny-l1-x4", "a" * 32 + ".dir"),
                    ("models/live/edsr_tiny-l1-x4", "c" * 32 + ".dir"),
                ],
                "train@edsr_tiny-sgl-4": [("models/edsr_tiny-sgl-x4", "b" * 32 + ".dir")],
                "train@edsr_tiny-old-4": [("models/edsr_tiny-old-x4", "d" * 32 + ".dir")],
            }
        )
    )
    return folder


def _put(remote: Path, md5: str, data: bytes) -> None:
    path = publish.object_path(remote, md5)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)


def test_train_outs_are_the_run_folders_of_defined_runs_only(pipeline: Path) -> None:
    outs = publish.train_outs(pipeline)
    assert [(o.stage, o.path) for o in outs] == [
        ("train@edsr_tiny-l1-4", "models/edsr_tiny-l1-x4"),
        ("train@edsr_tiny-l1-4", "models/live/edsr_tiny-l1-x4"),
        ("train@edsr_tiny-sgl-4", "models/edsr_tiny-sgl-x4"),
    ]  # weights and curves; not prepare (recomputed), not a run params.yaml dropped


def test_check_names_every_unpublished_run_and_missing_file(pipeline: Path) -> None:
    remote = pipeline / "published"
    weights = [{"md5": "e" * 32, "relpath": "model.safetensors"}]
    card = [{"md5": "f" * 32, "relpath": "run.json"}]
    _put(remote, "a" * 32 + ".dir", json.dumps(weights + card).encode())
    _put(remote, "e" * 32, b"w")  # run.json of the l1 run is missing; the sgl run is absent
    with pytest.raises(publish.UnpublishedError) as err:
        publish.check(pipeline, remote)
    text = str(err.value)
    assert "2 of 2 train stage(s)" in text
    assert "models/edsr_tiny-l1-x4/run.json" in text and "models/edsr_tiny-sgl-x4" in text
    assert "model.safetensors" not in text
    _put(remote, "f" * 32, b"c")
    _put(remote, "b" * 32 + ".dir", b"[]")
    with pytest.raises(publish.UnpublishedError, match="1 of 2 train stage"):
        publish.check(pipeline, remote)  # the l1 run's curves are missing
    _put(remote, "c" * 32 + ".dir", b"[]")
    assert len(publish.check(pipeline, remote)) == 3
    assert publish.published_bytes(pipeline, remote) == len(json.dumps(weights + card)) + 6


def test_a_lock_without_train_stages_is_an_error(pipeline: Path) -> None:
    (pipeline / "dvc.lock").write_text(_lock({"prepare": [("data/prepared", "p" * 32 + ".dir")]}))
    with pytest.raises(publish.UnpublishedError, match="records no train stage"):
        publish.check(pipeline, pipeline / "published")
    (pipeline / "dvc.lock").unlink()
    with pytest.raises(FileNotFoundError, match=r"dvc\.lock not found"):
        publish.train_outs(pipeline)


@pytest.mark.parametrize("folder", [REPO, *PROFILES], ids=lambda p: "root" if p == REPO else p.name)
def test_every_project_reaches_the_published_remote_and_keeps_the_shared_default(
    folder: Path,
) -> None:
    config = configparser.ConfigParser()
    config.read(folder / ".dvc" / "config")
    assert config["core"]["remote"] == "shared"
    url = config["'remote \"published\"'"]["url"]
    assert not os.path.isabs(url)
    assert (folder / ".dvc" / url).resolve() == REPO / "published"


@pytest.mark.parametrize("folder", [REPO, *PROFILES], ids=lambda p: "root" if p == REPO else p.name)
def test_the_lock_is_published_or_pull_names_what_is_not(folder: Path) -> None:
    """For every committed lock: either all train outputs (weights and curves) are in
    published/ or `sgsr pull` refuses, naming exactly the unpublished stages. The curves are
    DVC outputs, so git never tracks them (DVC would refuse to commit them)."""
    tracked = subprocess.run(
        ["git", "ls-files", "models/live"], cwd=folder, capture_output=True, text=True
    )
    assert tracked.returncode == 0 and tracked.stdout == ""
    if not (folder / "dvc.lock").is_file():
        pytest.skip("no dvc.lock committed")
    remote = REPO / "published"
    outs = publish.train_outs(folder)
    if not outs:
        pytest.skip("the lock records no train stage")
    gaps = {o.stage for o in outs if publish.missing_objects(remote, o)}
    if not gaps:
        assert len(publish.check(folder, remote)) == len(outs)
        assert {o.path.startswith("models/live/") for o in outs} == {True, False}
        return
    with pytest.raises(publish.UnpublishedError) as err:
        publish.check(folder, remote)
    named = set(re.findall(r"^  (\S+):", str(err.value), flags=re.M))
    assert named == gaps


@pytest.mark.parametrize(
    "dvc_yaml", ["dvc.yaml", "profiles/finetune/dvc.yaml", "profiles/gan/dvc.yaml"]
)
def test_the_resume_checkpoint_is_a_working_file_not_a_stage_output(dvc_yaml: str) -> None:
    """An unpublished checkpoint output would leave a pulled train stage looking changed (and
    DVC would delete it before a rerun): it lives in an ignored working folder instead."""
    import yaml

    stages = yaml.safe_load((REPO / dvc_yaml).read_text())["stages"]
    trains = [s.get("do", s) for name, s in stages.items() if publish.is_train_stage(name)]
    assert trains
    for stage in trains:
        paths = [next(iter(o)) if isinstance(o, dict) else o for o in stage["outs"]]
        assert not [p for p in paths if "checkpoints" in p], paths
    for folder in [REPO, *PROFILES]:
        ckpt = (folder / "models/checkpoints/some-run/checkpoint.pt").relative_to(REPO)
        ignored = subprocess.run(["git", "check-ignore", "-q", str(ckpt)], cwd=REPO)
        assert ignored.returncode == 0, ckpt
        assert "/models/checkpoints/" in (folder / ".dvcignore").read_text().split()


def test_sgsr_pull_on_an_unpublished_lock_exits_2_with_the_message(pipeline: Path) -> None:
    from sgsr.cli import main

    assert main(["--params", str(pipeline / "params.yaml"), "pull"]) == 2


def test_pull_absent_skips_present_folders_and_reports_unpublished_runs(pipeline: Path) -> None:
    for folder in ("models/edsr_tiny-l1-x4", "models/live/edsr_tiny-l1-x4"):
        (pipeline / folder).mkdir(parents=True)  # in the workspace already
    pulled, unpublished = publish.pull_absent(pipeline)  # nothing in published/: no dvc pull
    assert pulled == []
    sgl = sorted(o.path for o in publish.train_outs(pipeline) if "sgl" in o.path)
    assert sgl and sorted(o.path for o in unpublished) == sgl
    for folder in ("models/edsr_tiny-sgl-x4", "models/live/edsr_tiny-sgl-x4"):
        (pipeline / folder).mkdir(parents=True)
    assert publish.pull_absent(pipeline) == ([], [])
    (pipeline / "dvc.lock").unlink()
    assert publish.pull_absent(pipeline) == ([], [])  # nothing trained yet: nothing to say


def test_pull_absent_fetches_no_curves_of_a_run_whose_weights_are_unpublished(
    pipeline: Path,
) -> None:
    _put(pipeline / "published", "c" * 32 + ".dir", b"[]")  # l1's curves only
    pulled, unpublished = publish.pull_absent(pipeline)  # would call dvc pull if it fetched any
    assert pulled == []
    assert {o.stage for o in unpublished} == {"train@edsr_tiny-l1-4", "train@edsr_tiny-sgl-4"}
    assert "models/live/edsr_tiny-l1-x4" in {o.path for o in unpublished}


def test_make_repro_pulls_absent_published_weights_before_dvc_repro() -> None:
    out = make_dry_run("repro")
    assert re.search(r"sgsr pull --absent && \\\n.*dvc repro; \} > repro\.log", out), out


def test_make_pull_runs_sgsr_pull_in_the_profile_folder() -> None:
    out = make_dry_run("pull", "PROFILE=study")
    assert re.search(r"cd profiles/study && .*sgsr pull", out)


@pytest.mark.slow
def test_a_fresh_clone_pulls_the_published_weights_offline(tmp_path: Path) -> None:
    """The README's path with no team remote: clone, pull, and DVC sees the train stages as
    up to date; what `dvc repro` would run is what depends on unpublished files. First what
    `make repro` does before `dvc repro` (`sgsr pull --absent`): fetch what is published and
    missing, silently nothing when all is there, one line for a lock whose runs are not."""
    if not (REPO / "dvc.lock").is_file():
        pytest.skip("the root dvc.lock is not committed")
    clone, env = git_clone(tmp_path / "clone")
    assert not (tmp_path / "sgsr-dvc-storage").exists()
    expected = {o.stage for o in publish.train_outs(clone)}
    assert len(expected) == len(load_config(clone / "params.yaml").runs)

    def sgsr(*args: str, cwd: Path = clone) -> subprocess.CompletedProcess:
        return subprocess.run(["sgsr", *args], cwd=cwd, env=env, capture_output=True, text=True)

    absent = sgsr("pull", "--absent")
    assert absent.returncode == 0, absent.stdout + absent.stderr
    assert f"{len(expected)} trained run(s) fetched from the published remote" in absent.stderr
    for out in publish.train_outs(clone):
        curves = out.path.startswith("models/live/")
        wanted = "plots/metrics/train/total.tsv" if curves else "model.safetensors"
        assert (clone / out.path / wanted).is_file(), out.path
    again = sgsr("pull", "--absent")
    assert again.returncode == 0 and again.stderr == "", again.stderr  # all there: a no-op
    study = clone / "profiles" / "study"
    if (study / "dvc.lock").is_file() and publish.unpublished(study, clone / "published"):
        other = sgsr("pull", "--absent", cwd=study)
        assert other.returncode == 0, other.stderr
        assert re.fullmatch(
            r"sgsr pull: \d+ run\(s\) in dvc.lock are not in the published remote; dvc repro "
            r"trains them\n",
            other.stderr,
        ), other.stderr
        assert not [p for p in (study / "models").glob("*-x*")]  # no run folder fetched

    pulled = sgsr("pull")
    assert pulled.returncode == 0, pulled.stdout + pulled.stderr
    status = subprocess.run(
        ["dvc", "status", "--json"], cwd=clone, env=env, capture_output=True, text=True
    )
    changed = set(json.loads(status.stdout))
    assert not changed & expected, changed
    dry = sgsr("dry")
    assert dry.returncode == 0, dry.stdout[-2000:] + dry.stderr[-2000:]
    would_run = re.findall(r"Running stage '([^']+)'", dry.stdout)
    assert would_run and not any(publish.is_train_stage(s) for s in would_run)
    assert "prepare" not in would_run and any(s.startswith("infer") for s in would_run)
    assert "summarize" in would_run  # past the first stage whose input is missing (results/sr)
    for out in publish.train_outs(clone):
        curves = out.path.startswith("models/live/")
        wanted = "plots/metrics/train/total.tsv" if curves else "model.safetensors"
        assert (clone / out.path / wanted).is_file(), out.path
