"""params.yaml's runs: block (every run by name, what dvc.yaml expands over): generated from the
experiment matrix, refused when stale, and old matrix-named dvc.lock stages renamed to it."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

from sgsr import run_index
from sgsr.cli import main
from sgsr.config import ConfigError, load_config, write_run_index

REPO = Path(__file__).resolve().parents[1]
PARAMS = sorted([REPO / "params.yaml", *(REPO / "profiles").glob("*/params.yaml")])

SMALL = """\
seed: 0   # the primary seed
models:
  m: {arch: edsr_baseline, n_resblocks: 1, n_feats: 8}
losses:
  l1: {l1: 1.0}
  sgl: {l1: 1.0, sgl: 0.1}
experiment:
  models: [m]
  losses: [l1, sgl]
  scales: [4]
  replicates: [1]
"""


@pytest.mark.parametrize("params", PARAMS, ids=lambda p: p.parent.name)
def test_every_shipped_params_file_carries_its_current_runs_block(params: Path) -> None:
    raw = yaml.safe_load(params.read_text())
    cfg = load_config(params)  # a stale block would raise
    block = raw[run_index.KEY]
    assert list(block[run_index.TRAINED]) == [r.name for r in cfg.runs if not r.zero_shot]
    assert list(block[run_index.ZERO_SHOT]) == [r.name for r in cfg.runs if r.zero_shot]
    assert params.read_text() == run_index.rewrite(
        params.read_text(), run_index.expected(cfg.runs, cfg.experiment.scales)
    )


def test_write_generates_the_block_and_keeps_every_other_line(tmp_path: Path) -> None:
    params = tmp_path / "params.yaml"
    params.write_text(SMALL)
    assert write_run_index(params) is True
    text = params.read_text()
    assert text.startswith(SMALL)  # comments and order kept
    block = yaml.safe_load(text)["runs"]
    assert block["trained"] == {
        "m-l1-x4": {"model": "m", "loss": "l1", "scale": 4},
        "m-l1-x4-s1": {"model": "m", "loss": "l1", "scale": 4},
        "m-sgl-x4": {"model": "m", "loss": "sgl", "scale": 4},
        "m-sgl-x4-s1": {"model": "m", "loss": "sgl", "scale": 4},
    }
    assert block["bicubic"] == {"bicubic-x4": {"scale": 4}}
    assert block["zeroshot"] == {}  # none asked for; DVC's foreach still needs the mapping
    assert write_run_index(params) is False and params.read_text() == text  # idempotent
    # a matrix edit, then --write: the block follows, and stays the file's last section
    params.write_text(text.replace("replicates: [1]", "replicates: []") + "report: {}\n")
    write_run_index(params)
    again = params.read_text()
    assert "m-l1-x4-s1" not in again and again.count("runs:") == 1
    assert again.rstrip().endswith("report: {}")


def test_a_stale_block_is_refused_with_the_fix(tmp_path: Path) -> None:
    params = tmp_path / "params.yaml"
    params.write_text(SMALL)
    write_run_index(params)
    params.write_text(params.read_text().replace("losses: [l1, sgl]", "losses: [l1]"))
    with pytest.raises(ConfigError) as err:
        load_config(params)
    msg = str(err.value)
    assert "runs.trained: lists m-sgl-x4, m-sgl-x4-s1, which experiment: does not define" in msg
    assert "sgsr runs --write" in msg
    assert main(["--params", str(params), "runs", "--write"]) == 0
    assert [r.name for r in load_config(params).runs] == ["m-l1-x4", "m-l1-x4-s1"]


def test_zero_shot_runs_are_outside_the_matrix_with_their_own_stage(tmp_path: Path) -> None:
    params = tmp_path / "params.yaml"
    text = SMALL.replace("scales: [4]", "scales: [2, 4]")
    text = text.replace("replicates: [1]", "replicates: [1]\n  zero_shot: [m]")
    params.write_text(text + "prepare: {scales: [2, 4]}\ntrain: {init_from: w}\n")
    assert main(["--params", str(params), "runs", "--write"]) == 0
    runs = load_config(params).runs
    assert [r.name for r in runs if r.zero_shot] == ["m-zeroshot-x2", "m-zeroshot-x4"]
    assert runs[-1].loss == "zeroshot" and runs[-1].loss_spec == {} and runs[-1].seed == 0
    assert not [r for r in runs if r.zero_shot and r.replicate]  # one row: nothing is trained
    block = yaml.safe_load(params.read_text())["runs"]
    assert block["zeroshot"] == {
        "m-zeroshot-x2": {"model": "m", "scale": 2},
        "m-zeroshot-x4": {"model": "m", "scale": 4},
    }
    assert not [n for n in block["trained"] if "zeroshot" in n]  # no train@ stage for them
    stages = yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"]
    assert stages["zeroshot"]["foreach"] == "${runs.zeroshot}"
    assert stages["zeroshot"]["do"]["cmd"].startswith("sgsr train --run ${key} &&")


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        ("zero_shot: [x]", "experiment.zero_shot: 'x' is not one of experiment.models (m)"),
        ("zero_shot: [m, m]", "experiment.zero_shot: 'm' is listed twice"),
        ("zero_shot: [m]", "experiment.zero_shot: must start from trained weights: models.m"),
    ],
)
def test_zero_shot_names_a_model_that_starts_from_weights(edit: str, message: str) -> None:
    from sgsr.config import parse_config

    raw = yaml.safe_load(SMALL)
    raw["experiment"].update(yaml.safe_load(edit))
    with pytest.raises(ConfigError, match=re.escape(message)):
        parse_config(raw)
    raw = yaml.safe_load(SMALL)
    raw["losses"]["zeroshot"] = {"l1": 1.0}
    with pytest.raises(ConfigError, match=r"losses\.zeroshot: the name is reserved"):
        parse_config(raw)


def test_old_matrix_stage_names_map_to_run_names() -> None:
    assert run_index.new_stage_name("train@edsr_tiny-l1-4") == "train@edsr_tiny-l1-x4"
    assert run_index.new_stage_name("evaluate@my-net-sgl_hess-2") == "evaluate@my-net-sgl_hess-x2"
    assert run_index.new_stage_name("infer_seed@edsr_slim-l1-4-2") == "infer@edsr_slim-l1-x4-s2"
    assert run_index.new_stage_name("bicubic@3") == "bicubic@bicubic-x3"
    for current in ("train@edsr_tiny-l1-x4", "train@edsr_slim-l1-x4-s1", "bicubic@bicubic-x4"):
        assert run_index.new_stage_name(current) is None  # renaming is idempotent
    assert run_index.new_stage_name("summarize") is None


def test_lock_renaming_keeps_entries_and_gives_replicates_the_seed_param() -> None:
    entry = {"cmd": "sgsr train --run m-l1-x4-s1", "params": {"params.yaml": {"train": {}}}}
    lock = {
        "schema": "2.0",
        "stages": {
            "download": {"cmd": "sgsr download"},
            "train@m-l1-4": {"cmd": "sgsr train --run m-l1-x4"},
            "train_seed@m-l1-4-1": entry,
            "bicubic@4": {"cmd": "b"},
        },
    }
    new, n = run_index.rename_lock_stages(lock, seed=7)
    assert n == 3 and new["schema"] == "2.0"
    assert list(new["stages"]) == [
        "download",
        "train@m-l1-x4",
        "train@m-l1-x4-s1",
        "bicubic@bicubic-x4",
    ]
    assert new["stages"]["train@m-l1-x4-s1"]["params"]["params.yaml"] == {"seed": 7, "train": {}}
    assert run_index.rename_lock_stages(new, seed=7) == (new, 0)


def test_committed_locks_use_run_names() -> None:
    for lock in [REPO / "dvc.lock", *(REPO / "profiles").glob("*/dvc.lock")]:
        if lock.is_file():
            stages = yaml.safe_load(lock.read_text())["stages"]
            assert not [s for s in stages if run_index.new_stage_name(s)], lock


def test_a_lock_file_is_renamed_in_place_and_a_second_run_changes_nothing(tmp_path: Path) -> None:
    lock = tmp_path / "dvc.lock"
    lock.write_text(
        "schema: '2.0'\nstages:\n  bicubic@4:\n    cmd: b\n    outs:\n    - path: results/sr\n"
        "      md5: 0a1e.dir\n"
    )
    assert run_index.rename_lock_file(lock, seed=0) == 1
    text = lock.read_text()
    assert "bicubic@bicubic-x4:" in text and "md5: 0a1e.dir" in text
    assert run_index.rename_lock_file(lock, seed=0) == 0 and lock.read_text() == text
