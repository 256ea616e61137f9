"""`sgsr dry` / `make dry` (sgsr.dryrun): `dvc repro --dry` that lists every stage on a fresh
clone, where DVC 3.67's own dry run stops at the first stage whose input does not exist yet."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest
from conftest import git_clone, make_dry_run


def _run(cmd: list[str], cwd: Path, env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True)


def _files(clone: Path, env: dict[str, str]) -> list[str]:
    """Every untracked, ignored or changed path of the clone but DVC's own state (.dvc/tmp, and
    .dvc/cache, where hashing a committed folder stores its listing)."""
    cmd = ["git", "status", "--porcelain", "--ignored", "--untracked-files=all"]
    lines = _run(cmd, clone, env).stdout.splitlines()
    return [line for line in lines if ".dvc/tmp" not in line and ".dvc/cache" not in line]


@pytest.mark.slow
@pytest.mark.parametrize("folder", [".", "profiles/study"])
def test_sgsr_dry_lists_every_stage_of_a_fresh_clone_and_writes_nothing(
    tmp_path: Path, folder: str
) -> None:
    clone, env = git_clone(tmp_path / "clone")
    where = clone / folder
    stages = _run(["dvc", "stage", "list", "--name-only"], where, env).stdout.split()
    assert "prepare" in stages and any(s.startswith("train@") for s in stages)
    before = _files(clone, env)
    dry = _run(["sgsr", "dry"], where, env)
    assert dry.returncode == 0, dry.stdout[-2000:] + dry.stderr[-2000:]
    listed = re.findall(r"^Running stage '([^']+)':$", dry.stdout, flags=re.M)
    assert sorted(listed) == sorted(stages)  # nothing exists yet, so every stage would run
    assert listed[:2] == ["download", "prepare"]  # in the order DVC would run them
    assert "sgsr dry:" not in dry.stdout + dry.stderr  # DVC's lines once, not echoed by sgsr
    assert _files(clone, env) == before  # a dry run: nothing written
    if folder == ".":
        # DVC's own dry run: when this starts to pass, DVC has released the fix and `sgsr dry`
        # can give way to plain `dvc repro --dry` (README, Makefile)
        plain = _run(["dvc", "repro", "--dry"], where, env)
        assert plain.returncode != 0 and "No such file or directory" in plain.stderr, (
            "DVC's own `dvc repro --dry` now lists a fresh clone's stages: drop sgsr dry"
        )


def test_make_dry_runs_sgsr_dry_in_the_profile_folder() -> None:
    out = make_dry_run("dry", "PROFILE=study")
    assert re.search(r"cd profiles/study && .*sgsr dry$", out, flags=re.M)
