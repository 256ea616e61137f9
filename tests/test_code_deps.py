"""Code is a DVC dependency: each stage lists the source files its command imports, transitively.

The lists in every dvc.yaml must equal the import closure code_deps.py computes (so a new import
cannot escape them), and `dvc status` on a copy of the pipeline shows what an edit makes stale.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest
from code_deps import EXTENSIONS, PREFIX, REPO, dvc_files, expected, listed, relock, rewrite
from conftest import copy_pipeline_sources


@pytest.mark.parametrize("dvc_yaml", dvc_files(), ids=lambda p: str(p.relative_to(REPO)))
def test_every_stage_lists_the_import_closure_of_its_command(dvc_yaml: Path) -> None:
    want, have = expected(dvc_yaml), listed(dvc_yaml)
    wrong = {
        stage: {
            "missing": sorted(set(want[stage]) - set(have[stage])),
            "extra": sorted(set(have[stage]) - set(want[stage])),
        }
        for stage in want
        if want[stage] != have[stage]
    }
    assert not wrong, (
        f"{dvc_yaml.relative_to(REPO)}: code dependencies differ from the import closure "
        f"(python tests/code_deps.py --write rewrites them): {json.dumps(wrong, indent=1)}"
    )


def test_each_stage_depends_on_the_code_it_runs_and_no_other() -> None:
    deps = listed(REPO / "dvc.yaml")
    has = {name: {p.removeprefix(PREFIX + "sgsr/") for p in paths} for name, paths in deps.items()}
    assert {name for name, files in has.items() if "losses.py" in files} == {
        "train",
        "zeroshot",  # runs sgsr train, which writes the starting weights
        "report",
    }
    assert {name for name, files in has.items() if "plotting/base.py" in files} == {"report"}
    # train reads the patch store through data.patches, which takes its format from prepare
    assert {name for name, files in has.items() if "data/prepare.py" in files} == {
        "prepare",
        "train",
        "zeroshot",
    }
    assert "models/edsr.py" in has["train"] and "models/edsr.py" in has["infer"]
    assert "metrics.py" in has["evaluate"] and "metrics.py" not in has["infer"]
    assert not any("cli.py" in files for files in has.values())
    assert "__init__.py" in has["train"]  # train writes sgsr.__version__ into its manifest
    assert "__init__.py" not in has["report"]
    # the fused loss kernel is C: training depends on its sources, inference does not
    assert {"_cstencil.c", "_cstencil_impl.h"} <= has["train"]
    assert "_cstencil.c" not in has["infer"]


def test_every_c_source_belongs_to_an_extension_that_setup_py_builds() -> None:
    """code_deps.EXTENSIONS names the C files of each compiled module; setup.py builds exactly
    those, so a new C file is a code dependency as soon as it is compiled."""
    on_disk = {p.relative_to(REPO / "src").as_posix() for p in (REPO / "src").rglob("*.[ch]")}
    listed_c = {f for files in EXTENSIONS.values() for f in files}
    assert listed_c == on_disk
    setup = (REPO / "setup.py").read_text(encoding="utf-8")
    for path in listed_c:
        assert f'"src/{path}"' in setup, f"setup.py does not build src/{path}"


@pytest.mark.parametrize(
    "params", [REPO / "params.yaml", *sorted((REPO / "profiles").glob("*/params.yaml"))],
    ids=lambda p: str(p.relative_to(REPO)),
)  # fmt: skip
def test_preflight_hands_back_the_config_that_config_parses(params: Path) -> None:
    """Why preflight's builders are not code dependencies: the gate returns config's result."""
    from sgsr import preflight
    from sgsr.config import load_config

    assert preflight.load(params) == load_config(params)


def test_rewrite_replaces_the_code_entries_and_adds_a_deps_key_where_there_is_none() -> None:
    text = (
        "stages:\n"
        "  a:\n    cmd: sgsr download\n    params:\n      - data\n"
        "  b:\n    foreach: ${runs}\n    do:\n      cmd: sgsr train\n      deps:\n"
        "        - data/x\n        - ${root}/src/sgsr/old.py\n      outs:\n        - m\n"
        "plots:\n  - p: {}\n"
    )
    code = {"a": ["${root}/src/sgsr/a.py"], "b": ["${root}/src/sgsr/b.py", "${root}/src/sgsr/c.py"]}
    out = rewrite(text, code)
    assert out == (
        "stages:\n"
        "  a:\n    cmd: sgsr download\n    deps:\n      - ${root}/src/sgsr/a.py\n"
        "    params:\n      - data\n"
        "  b:\n    foreach: ${runs}\n    do:\n      cmd: sgsr train\n      deps:\n"
        "        - data/x\n        - ${root}/src/sgsr/b.py\n        - ${root}/src/sgsr/c.py\n"
        "      outs:\n        - m\n"
        "plots:\n  - p: {}\n"
    )
    assert rewrite(out, code) == out
    assert rewrite(out, {"a": [], "b": []}) == text.replace(
        "        - ${root}/src/sgsr/old.py\n", ""
    )


def _dvc(cwd: Path, *args: str) -> str:
    env = {**os.environ, "DVC_NO_ANALYTICS": "1"}
    done = subprocess.run(
        ["dvc", *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, f"dvc {' '.join(args)}: {done.stdout}\n{done.stderr}"
    return done.stdout


def _stale(project: Path) -> set[str]:
    return set(json.loads(_dvc(project, "status", "--json") or "{}"))


def _placeholder(path: Path) -> None:
    """A stand-in for a data dependency or output: a file where the name has a suffix, else a
    folder holding one file."""
    if path.exists():
        return
    if path.suffix:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("placeholder\n")
    else:
        path.mkdir(parents=True)
        (path / "placeholder").write_text("placeholder\n")


@pytest.mark.slow
def test_dvc_status_after_an_edit_marks_exactly_the_stages_whose_code_it_is(
    tmp_path: Path,
) -> None:
    """The default pipeline, copied with placeholder data and committed, then edited."""
    from dvc.repo import Repo

    project = tmp_path / "sgsr"
    copy_pipeline_sources(project)
    for name in ("dvc.yaml", "params.yaml"):
        shutil.copy(REPO / name, project / name)
    _dvc(project, "init", "--no-scm", "-q")
    with Repo(str(project)) as repo:
        stages = list(repo.index.stages)
        names = {s.name for s in stages}
        for stage in stages:
            for entry in [*stage.deps, *stage.outs]:
                if not hasattr(entry, "params"):
                    _placeholder(Path(entry.fs_path))
    # a lock of the stages without their code, completed by relock: what `dvc commit` writes
    full = (project / "dvc.yaml").read_text(encoding="utf-8")
    (project / "dvc.yaml").write_text(rewrite(full, {n: [] for n in listed(REPO / "dvc.yaml")}))
    _dvc(project, "commit", "--force", "-q")
    (project / "dvc.yaml").write_text(full)
    assert set(relock(project)) == names
    relocked = (project / "dvc.lock").read_text(encoding="utf-8")
    _dvc(project, "commit", "--force", "-q")  # the help-text case below finds it up to date
    assert (project / "dvc.lock").read_text(encoding="utf-8") == relocked
    trains = {n for n in names if n.startswith("train@")}
    assert trains, names
    assert "report" in names and "prepare" in names

    def edit(relpath: str, old: str, new: str) -> set[str]:
        path = project / relpath
        before = path.read_text(encoding="utf-8")
        assert old in before, f"{relpath} no longer contains {old!r}"
        path.write_text(before.replace(old, new, 1), encoding="utf-8")
        try:
            return _stale(project)
        finally:
            path.write_text(before, encoding="utf-8")

    # the SGL operator: the train stages, and the report, whose gradient maps draw it
    sgl = "def sgl_operator("
    assert edit("src/sgsr/losses.py", sgl, "# edited\n" + sgl) == trains | {"report"}
    assert edit("notebooks/04_results.ipynb", '"# Results', '"# Edited results') == {"report"}
    assert edit("src/sgsr/plotting/base.py", '"""', '"""Edited. ') == {"report"}
    help_text = "fetch the data sets and the LPIPS/FID/LPIPS-VGG weights"
    assert edit("src/sgsr/cli.py", help_text, help_text + " (edited)") == set()
