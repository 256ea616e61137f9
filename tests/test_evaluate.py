from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import numpy as np
import pytest
import yaml

from sgsr import evaluate, imaging, metrics
from sgsr.config import load_config
from sgsr.stats import paired_bootstrap

SCALE = 2
METRIC_NAMES = ["psnr", "ssim", "ms_ssim", "gmsd", "haarpsi", "lpips", "fid"]


def _noisy(image: np.ndarray, sigma: float, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return np.clip(image + rng.normal(0, sigma, image.shape), 0, 255).astype(np.uint8)


@pytest.fixture
def pipeline(tmp_path: Path) -> Path:
    """A tiny pipeline folder: params, prepared x2 HR/LR (3 images, one grayscale), SR images
    for bicubic-x2 (real bicubic) and two 'trained' runs (bicubic plus different noise)."""
    params = {
        "seed": 0,
        "data": {"test_sets": ["tiny"]},
        "prepare": {"scales": [SCALE], "patch_size": 48},
        "train": {"lr_patch": 12},
        "models": {"m": {"arch": "edsr_baseline", "n_resblocks": 2, "n_feats": 16}},
        "losses": {"l1": {"l1": 1.0}, "sgl": {"l1": 1.0, "sgl": 0.1}},
        "experiment": {"models": ["m"], "losses": ["l1", "sgl"], "scales": [SCALE]},
        "evaluate": {"metrics": METRIC_NAMES, "fid_patch": 16, "bootstrap": 500},
    }
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[:40, :44]
    for i, channels in enumerate([3, 3, 1]):
        base = 128 + 70 * np.sin(xx / (3.0 + i))[..., None] * np.cos(yy / 5.0)[..., None]
        hr = np.clip(base + rng.normal(0, 15, (40, 44, channels)), 0, 255).astype(np.uint8)
        root = tmp_path / "data/prepared/x2/tiny"
        imaging.write_image(root / "hr" / f"img{i}.png", hr)
        lr = imaging.downscale(hr, SCALE)
        imaging.write_image(root / "lr" / f"img{i}.png", lr)
        bicubic = imaging.upscale_bicubic(lr, SCALE)
        imaging.write_image(tmp_path / f"results/sr/bicubic-x2/tiny/img{i}.png", bicubic)
        imaging.write_image(tmp_path / f"results/sr/m-l1-x2/tiny/img{i}.png", _noisy(bicubic, 6, i))
        imaging.write_image(tmp_path / f"results/sr/m-sgl-x2/tiny/img{i}.png", _noisy(hr, 3, i))
    return tmp_path


def _read_csv(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


def test_run_and_summarize_write_the_declared_files(pipeline: Path) -> None:
    cfg = load_config(pipeline / "params.yaml")
    for run in ("bicubic-x2", "m-l1-x2", "m-sgl-x2"):
        evaluate.run(cfg, run)

    per_image = _read_csv(pipeline / "results/metrics/m-l1-x2/per_image.csv")
    image_metrics = [m for m in METRIC_NAMES if m != "fid"]
    assert list(per_image[0]) == ["set", "image", "scale", *image_metrics]
    assert [r["image"] for r in per_image] == ["img0", "img1", "img2"]
    hr0 = imaging.read_image(pipeline / "data/prepared/x2/tiny/hr/img0.png")
    sr0 = imaging.read_image(pipeline / "results/sr/m-l1-x2/tiny/img0.png")
    assert float(per_image[0]["psnr"]) == pytest.approx(metrics.psnr(sr0, hr0, SCALE), abs=1e-12)
    assert float(per_image[0]["ssim"]) == pytest.approx(metrics.ssim(sr0, hr0, SCALE), abs=1e-12)
    assert per_image[0]["lpips"] == ""  # no weights here: empty, not a number

    doc = json.loads((pipeline / "results/metrics/m-l1-x2/metrics.json").read_text())
    assert (doc["run"], doc["model"], doc["loss"], doc["scale"]) == ("m-l1-x2", "m", "l1", 2)
    tiny = doc["sets"]["tiny"]
    assert tiny["n_images"] == 3
    psnrs = [float(r["psnr"]) for r in per_image]
    assert tiny["psnr"] == pytest.approx(np.mean(psnrs), abs=1e-12)
    assert tiny["lpips"] is None and tiny["fid"] is None
    assert set(doc["unavailable"]) == {"lpips", "fid"}
    assert "manifest.json" in doc["unavailable"]["fid"]
    assert "AlexNet" in doc["notes"]["lpips"] and "16x16 patches" in doc["notes"]["fid"]
    assert doc["fid_patch"] == 16

    summary_path, paired_path = evaluate.summarize(cfg)
    summary = _read_csv(summary_path)
    assert list(summary[0]) == [*evaluate.SUMMARY_KEYS, *METRIC_NAMES]
    assert [r["run"] for r in summary] == ["bicubic-x2", "m-l1-x2", "m-sgl-x2"]
    assert summary[0]["model"] == "bicubic" and summary[0]["loss"] == ""
    assert float(summary[1]["psnr"]) == pytest.approx(tiny["psnr"], abs=1e-9)

    paired = _read_csv(paired_path)
    assert list(paired[0]) == list(evaluate.PAIRED_COLUMNS)
    assert {r["metric"] for r in paired} == {"psnr", "ssim", "ms_ssim", "gmsd", "haarpsi"}
    row = next(r for r in paired if r["metric"] == "psnr")
    assert (row["baseline"], row["candidate"]) == ("m-l1-x2", "m-sgl-x2")
    base = {r["image"]: float(r["psnr"]) for r in per_image}
    cand = {
        r["image"]: float(r["psnr"])
        for r in _read_csv(pipeline / "results/metrics/m-sgl-x2/per_image.csv")
    }
    diffs = [cand[k] - base[k] for k in sorted(base)]
    assert float(row["mean_diff"]) == pytest.approx(np.mean(diffs), abs=1e-9)
    expected = paired_bootstrap(diffs, 500, 0.95, 0)
    assert float(row["ci_low"]) == pytest.approx(expected[1], abs=1e-9)
    assert float(row["ci_high"]) == pytest.approx(expected[2], abs=1e-9)
    assert int(row["n"]) == 3 and row["higher_is_better"] == "True"
    assert float(row["mean_diff"]) > 0  # SR near HR beats noisy bicubic
    gmsd_row = next(r for r in paired if r["metric"] == "gmsd")
    assert gmsd_row["higher_is_better"] == "False" and float(gmsd_row["mean_diff"]) < 0


def test_metrics_json_is_strict_json_when_psnr_is_infinite(pipeline: Path) -> None:
    """SR == HR: PSNR is inf; metrics.json must still be valid JSON (null), CSV says inf."""
    hr_dir = pipeline / "data/prepared/x2/tiny/hr"
    for p in imaging.list_images(hr_dir):
        imaging.write_image(pipeline / "results/sr/m-l1-x2/tiny" / p.name, imaging.read_image(p))
    raw = yaml.safe_load((pipeline / "params.yaml").read_text())
    raw["evaluate"]["metrics"] = ["psnr", "ssim"]
    (pipeline / "params.yaml").write_text(yaml.safe_dump(raw))
    cfg = load_config(pipeline / "params.yaml")
    evaluate.run(cfg, "m-l1-x2")
    text = (pipeline / "results/metrics/m-l1-x2/metrics.json").read_text()
    doc = json.loads(text, parse_constant=lambda c: pytest.fail(f"non-JSON constant {c}"))
    assert doc["sets"]["tiny"]["psnr"] is None and doc["sets"]["tiny"]["ssim"] == 1.0
    rows = _read_csv(pipeline / "results/metrics/m-l1-x2/per_image.csv")
    assert all(math.isinf(float(r["psnr"])) for r in rows)
    for run in ("bicubic-x2", "m-sgl-x2"):
        evaluate.run(cfg, run)
    summary_path, paired_path = evaluate.summarize(cfg)
    assert _read_csv(summary_path)[1]["psnr"] == "inf"
    psnr_rows = [r for r in _read_csv(paired_path) if r["metric"] == "psnr"]
    assert psnr_rows == []  # every pair had an infinite PSNR: no finite difference to report
    ssim_row = next(r for r in _read_csv(paired_path) if r["metric"] == "ssim")
    assert ssim_row["excluded"] == "0" and float(ssim_row["mean_diff"]) < 0


def test_summarize_names_a_missing_metrics_file(pipeline: Path) -> None:
    cfg = load_config(pipeline / "params.yaml")
    raw = yaml.safe_load((pipeline / "params.yaml").read_text())
    raw["evaluate"]["metrics"] = ["psnr"]
    (pipeline / "params.yaml").write_text(yaml.safe_dump(raw))
    cfg = load_config(pipeline / "params.yaml")
    evaluate.run(cfg, "bicubic-x2")
    evaluate.run(cfg, "m-l1-x2")
    with pytest.raises(FileNotFoundError, match=r"m-sgl-x2/metrics\.json"):
        evaluate.summarize(cfg)


# --------------------------------------------------------------------------------------------
# folder pairs and the CLI
# --------------------------------------------------------------------------------------------
def test_score_folders_errors_name_the_file(pipeline: Path, tmp_path: Path) -> None:
    hr_dir = pipeline / "data/prepared/x2/tiny/hr"
    sr_dir = tmp_path / "sr"
    for p in imaging.list_images(hr_dir)[:2]:
        imaging.write_image(sr_dir / p.name, imaging.read_image(p))
    with pytest.raises(FileNotFoundError, match=r"img2\.png"):
        evaluate.score_folders(sr_dir, hr_dir, SCALE)
    imaging.write_image(sr_dir / "img2.png", np.zeros((40, 42, 1), np.uint8))
    with pytest.raises(ValueError, match=r"sr/img2\.png: size 42x40x1 differs"):
        evaluate.score_folders(sr_dir, hr_dir, SCALE)
    imaging.write_image(sr_dir / "img2.png", imaging.read_image(hr_dir / "img2.png"))
    imaging.write_image(sr_dir / "extra.png", np.zeros((40, 44, 1), np.uint8))
    with pytest.raises(FileNotFoundError, match=r"extra\.png"):
        evaluate.score_folders(sr_dir, hr_dir, SCALE)


def test_score_folders_with_random_backbones_plumbs_lpips_and_fid(pipeline: Path) -> None:
    """Injected random networks (never the pipeline's path) exercise the per-set wiring."""
    nets = {
        "lpips": metrics.load_lpips(None, random_backbone=True),
        "fid": metrics.load_fid(None, random_backbone=True, dims=64),
    }
    scorer = evaluate.Scorer(["psnr", "lpips", "fid"], fid_patch=16, nets=nets)
    hr_dir = pipeline / "data/prepared/x2/tiny/hr"
    same = scorer.score(hr_dir, hr_dir, SCALE)
    assert same.mean["lpips"] == 0.0 and abs(same.mean["fid"]) < 1e-6
    other = scorer.score(pipeline / "results/sr/m-l1-x2/tiny", hr_dir, SCALE)
    assert other.mean["lpips"] > 0 and other.mean["fid"] > same.mean["fid"]


def test_cli_evaluate_json_and_table(pipeline: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from sgsr.cli import main

    sr_dir = pipeline / "results/sr/m-l1-x2/tiny"
    hr_dir = pipeline / "data/prepared/x2/tiny/hr"
    args = ["evaluate", "--sr", str(sr_dir), "--hr", str(hr_dir), "--scale", "2"]
    assert main([*args, "--json", "--metrics", "psnr,ssim,lpips"]) == 0
    out = capsys.readouterr().out
    doc = json.loads(out, parse_constant=lambda c: pytest.fail(f"non-JSON constant {c}"))
    assert set(doc) >= {"scale", "n_images", "mean", "images", "unavailable", "notes"}
    assert doc["n_images"] == 3 and [r["image"] for r in doc["images"]] == ["img0", "img1", "img2"]
    sr0 = imaging.read_image(sr_dir / "img0.png")
    hr0 = imaging.read_image(hr_dir / "img0.png")
    assert doc["images"][0]["psnr"] == pytest.approx(metrics.psnr(sr0, hr0, 2), abs=1e-12)
    assert (
        doc["mean"]["lpips"] is None
        and "no pretrained-weights folder" in doc["unavailable"]["lpips"]
    )

    assert main(args) == 0
    table = capsys.readouterr().out
    assert "img1" in table and "mean (3)" in table and f"{doc['mean']['ssim']:.4f}" in table

    assert (
        main(["evaluate", "--sr", str(sr_dir), "--hr", str(pipeline / "nope"), "--scale", "2"]) == 2
    )
    assert "nope" in capsys.readouterr().err


def test_border_defaults_to_the_scale_and_can_be_overridden(tmp_path: Path) -> None:
    from sgsr.imaging import write_image

    rng = np.random.default_rng(4)
    hr = rng.integers(0, 256, (40, 40, 3), dtype=np.uint8)
    sr = hr.copy()
    sr[:2] = 255 - sr[:2]  # differs only in the two top rows
    write_image(tmp_path / "hr" / "a.png", hr)
    write_image(tmp_path / "sr" / "a.png", sr)
    default = evaluate.score_folders(tmp_path / "sr", tmp_path / "hr", 2, metrics=["psnr"])
    assert default["border"] == 2 and default["images"][0]["psnr"] is None  # cropped: identical
    whole = evaluate.score_folders(tmp_path / "sr", tmp_path / "hr", 2, ["psnr"], border=0)
    assert whole["border"] == 0 and 0 < whole["images"][0]["psnr"] < 40
    assert "0 px border cropped" in evaluate.format_table(whole)
    with pytest.raises(ValueError, match="border must be an integer >= 0"):
        evaluate.score_folders(tmp_path / "sr", tmp_path / "hr", 2, ["psnr"], border=-1)
