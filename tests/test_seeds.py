"""Seed replicates: run names, params errors, the DVC stage families, training.

A configuration (model, loss, scale) is trained once per seed: the primary seed (params
``seed``) keeps the name ``<model>-<loss>-x<scale>``; each ``experiment.replicates`` seed adds
``<model>-<loss>-x<scale>-s<seed>``, trained identically except for the seed.
"""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from sgsr.config import ConfigError, parse_config
from sgsr.pipeline_copy import make_pipeline_copy, tool_env
from sgsr.runs import parse_run, run_name

REPO = Path(__file__).resolve().parents[1]
FAMILIES = ("train", "infer", "evaluate")


def _raw(**experiment: Any) -> dict:
    return {
        "seed": 0,
        "models": {"m": {"arch": "edsr_baseline", "n_resblocks": 1, "n_feats": 8}},
        "losses": {"l1": {"l1": 1.0}, "sgl": {"l1": 1.0, "sgl": 0.1}},
        "experiment": {"models": ["m"], "losses": ["l1", "sgl"], "scales": [4], **experiment},
    }


# --------------------------------------------------------------------------------------------
# names and params


def test_replicates_add_seeded_runs_and_keep_primary_names() -> None:
    cfg = parse_config(_raw(replicates=[1, 2]))
    assert [r.name for r in cfg.runs] == [
        "m-l1-x4",
        "m-l1-x4-s1",
        "m-l1-x4-s2",
        "m-sgl-x4",
        "m-sgl-x4-s1",
        "m-sgl-x4-s2",
    ]
    assert cfg.seeds == (0, 1, 2)
    assert [r.name for r in cfg.primary_runs] == ["m-l1-x4", "m-sgl-x4"]
    rep = cfg.run("m-sgl-x4-s2")
    assert (rep.seed, rep.replicate, rep.configuration) == (2, True, ("m", "sgl", 4))
    assert rep.primary_name == "m-sgl-x4"
    assert rep.sibling_name("l1") == "m-l1-x4-s2"  # pairs keep the seed
    prim = cfg.run("m-sgl-x4")
    assert (prim.seed, prim.replicate) == (0, False) and prim.sibling_name("l1") == "m-l1-x4"
    assert run_name("m", "l1", 4) == "m-l1-x4" and run_name("m", "l1", 4, 7) == "m-l1-x4-s7"
    # without replicates nothing changes
    assert [r.name for r in parse_config(_raw()).runs] == ["m-l1-x4", "m-sgl-x4"]
    assert [r.name for r in parse_config(_raw(replicates=[])).runs] == ["m-l1-x4", "m-sgl-x4"]


def test_the_primary_seed_follows_params_seed() -> None:
    raw = _raw(replicates=[0, 1])
    raw["seed"] = 5
    cfg = parse_config(raw)
    assert cfg.seeds == (5, 0, 1)
    assert [(r.name, r.seed) for r in cfg.runs[:3]] == [
        ("m-l1-x4", 5),
        ("m-l1-x4-s0", 0),
        ("m-l1-x4-s1", 1),
    ]


def test_baseline_defaults_to_the_first_loss_and_must_be_a_listed_loss() -> None:
    assert parse_config(_raw()).baseline_loss == "l1"
    assert parse_config(_raw(losses=["sgl", "l1"])).baseline_loss == "sgl"
    assert parse_config(_raw(baseline="sgl")).baseline_loss == "sgl"
    with pytest.raises(ConfigError, match=r"experiment\.baseline: must be one of .*l1, sgl.*'l2'"):
        parse_config(_raw(baseline="l2"))


@pytest.mark.parametrize(
    ("replicates", "message"),
    [
        ([1, 1], r"experiment\.replicates: seed 1 is listed twice"),
        ([0, 1], r"experiment\.replicates: 0 is the primary seed \(top-level seed: 0\)"),
        ([-1], r"experiment\.replicates: each seed must be a non-negative integer, got -1"),
        ([True], r"experiment\.replicates: each seed must be a non-negative integer, got True"),
        (["1"], r"experiment\.replicates: each seed must be a non-negative integer, got '1'"),
        (3, r"experiment\.replicates: must be a list of extra training seeds .* got 3"),
    ],
)
def test_bad_replicates_name_the_key(replicates: Any, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        parse_config(_raw(replicates=replicates), source="p.yaml")


def test_unknown_run_lists_the_seeded_names() -> None:
    cfg = parse_config(_raw(replicates=[1]))
    with pytest.raises(ConfigError, match=r"m-sgl-x4-s1.*-s<seed>"):
        cfg.run("m-sgl-x4-s9")


def test_every_shipped_params_lists_replicates_for_dvc() -> None:
    """dvc.yaml interpolates ${experiment.replicates}: a params file without it fails to parse
    in DVC, so every profile states it (an empty list is fine)."""
    for params in [REPO / "params.yaml", *sorted((REPO / "profiles").glob("*/params.yaml"))]:
        raw = yaml.safe_load(params.read_text())
        assert isinstance(raw["experiment"].get("replicates"), list), params


def test_report_parses_seeded_names() -> None:
    assert parse_run("my-net-sgl_hess-x4-s12") == {
        "run": "my-net-sgl_hess-x4-s12",
        "model": "my-net",
        "loss": "sgl_hess",
        "scale": 4,
        "seed": 12,
    }
    assert parse_run("m-l1-x4")["seed"] is None


def test_cli_runs_lists_replicates(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from sgsr.cli import main

    (tmp_path / "params.yaml").write_text(yaml.safe_dump(_raw(replicates=[3])))
    assert main(["--params", str(tmp_path / "params.yaml"), "runs"]) == 0
    assert capsys.readouterr().out.split() == ["m-l1-x4", "m-l1-x4-s3", "m-sgl-x4", "m-sgl-x4-s3"]


# --------------------------------------------------------------------------------------------
# dvc.yaml: one stage per run, named after it


def test_per_run_stages_expand_over_the_runs_block_by_name() -> None:
    """Replicates are runs like the others: one family, keyed by run name, so adding seeds
    renames no stage; train depends on the primary seed (summarize's bootstrap too)."""
    stages = yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"]
    for fam in FAMILIES:
        assert stages[fam]["foreach"] == "${runs.trained}"
        assert stages[fam]["do"]["cmd"] == f"sgsr {fam} --run ${{key}}"
    assert not [s for s in stages if s.endswith("_seed")]
    assert "seed" in stages["train"]["do"]["params"]
    assert "seed" in stages["summarize"]["params"]


def _stage_list(replicates: list[int], tmp_path: Path) -> dict[str, str]:
    repo = make_pipeline_copy(REPO, tmp_path / "repo", {"experiment": {"replicates": replicates}})
    out = subprocess.run(
        ["dvc", "stage", "list"],
        cwd=repo,
        env=tool_env(REPO / "src"),
        capture_output=True,
        text=True,
    )
    assert out.returncode == 0, out.stderr
    return dict(re.split(r"\s+", line.strip(), maxsplit=1) for line in out.stdout.splitlines())


def test_dvc_names_each_stage_after_its_run_replicates_included(tmp_path: Path) -> None:
    stages = _stage_list([1, 2], tmp_path / "with")
    runs = [run_name("edsr_tiny", loss, 4, seed) for loss in ("l1", "sgl") for seed in (None, 1, 2)]
    per_run = sorted(s for s in stages if s.split("@")[0] in FAMILIES)
    assert per_run == sorted(f"{fam}@{r}" for fam in FAMILIES for r in runs)
    assert "models/edsr_tiny-sgl-x4-s2" in stages["train@edsr_tiny-sgl-x4-s2"]
    assert "results/sr/edsr_tiny-l1-x4-s1" in stages["infer@edsr_tiny-l1-x4-s1"]
    assert "models/edsr_tiny-l1-x4," in stages["train@edsr_tiny-l1-x4"] + ","
    assert "bicubic@bicubic-x4" in stages
    without = _stage_list([], tmp_path / "without")
    assert set(without) == {s for s in stages if not re.search(r"-s\d+$", s)}


# --------------------------------------------------------------------------------------------
# training: a replicate is the primary run with another seed


@pytest.mark.slow
def test_a_replicate_trains_exactly_like_a_primary_run_with_its_seed(tmp_path: Path) -> None:
    """Replicate s5 under primary seed 3 gives bitwise the weights of the primary run of a
    params file whose seed is 5: its seed reaches init, data order and every RNG, and nothing
    else differs. And it differs from the seed-3 run."""
    from train_helpers import build_store, load_weights, stage_dir

    from sgsr.config import load_config
    from sgsr.train import run

    store = tmp_path / "store"
    build_store(store)

    def train(folder: Path, seed: int, replicates: list[int], name: str) -> tuple[dict, dict]:
        stage_dir(folder, store / "data", iterations=3, checkpoint_every=3, val_every=3)
        raw = yaml.safe_load((folder / "params.yaml").read_text())
        raw["seed"] = seed
        raw["experiment"]["replicates"] = replicates
        (folder / "params.yaml").write_text(yaml.safe_dump(raw))
        cfg = load_config(folder / "params.yaml")
        out = run(cfg, name, root=folder)
        card = json.loads((out.parent / "run.json").read_text())
        return load_weights(out), card

    rep_w, rep_card = train(tmp_path / "rep", 3, [5], "tiny-l1-x2-s5")
    ref_w, ref_card = train(tmp_path / "ref", 5, [], "tiny-l1-x2")
    base_w, base_card = train(tmp_path / "base", 3, [], "tiny-l1-x2")
    assert rep_card["seed"] == 5 and base_card["seed"] == 3
    assert rep_card["params_hash"] == ref_card["params_hash"] != base_card["params_hash"]
    import torch

    assert rep_w.keys() == ref_w.keys()
    assert all(torch.equal(rep_w[k], ref_w[k]) for k in rep_w)
    assert any(not torch.equal(rep_w[k], base_w[k]) for k in rep_w)
