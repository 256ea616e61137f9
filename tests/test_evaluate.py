from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from conftest import noisy

from sgsr import evaluate, imaging, metrics, scoring
from sgsr.config import ConfigError, load_config, parse_config
from sgsr.metric_registry import QUICK_NAMES
from sgsr.refcache import ReferenceCache, reference_key
from sgsr.runs import parse_run
from sgsr.stats import paired_bootstrap
from sgsr.summary import PAIRED_COLUMNS, SEEDS_COLUMNS, SUMMARY_KEYS, summarize

SCALE = 2
METRIC_NAMES = ["psnr", "ssim", "ms_ssim", "gmsd", "haarpsi", "lpips", "fid"]


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
        imaging.write_image(tmp_path / f"results/sr/m-l1-x2/tiny/img{i}.png", noisy(bicubic, 6, i))
        imaging.write_image(tmp_path / f"results/sr/m-sgl-x2/tiny/img{i}.png", noisy(hr, 3, i))
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

    # metrics.json: numbers only (one dvc metrics column per metric), per set
    folder = pipeline / "results/metrics/m-l1-x2"
    doc = json.loads((folder / "metrics.json").read_text())
    assert list(doc) == ["tiny"]
    tiny = doc["tiny"]
    assert set(tiny) == {*METRIC_NAMES, "n_images"}
    assert all(v is None or isinstance(v, int | float) for v in tiny.values())
    assert tiny["n_images"] == 3
    psnrs = [float(r["psnr"]) for r in per_image]
    assert tiny["psnr"] == pytest.approx(np.mean(psnrs), abs=1e-12)
    assert tiny["lpips"] is None and tiny["fid"] is None
    # ... and everything else in the sidecar
    info = json.loads((folder / "metrics_info.json").read_text())
    assert (info["run"], info["model"], info["loss"], info["scale"]) == ("m-l1-x2", "m", "l1", 2)
    assert (info["seed"], info["replicate"]) == (0, False)
    assert set(info["unavailable"]) == {"lpips", "fid"}
    assert "manifest.json" in info["unavailable"]["fid"]
    assert "AlexNet" in info["notes"]["lpips"] and "16x16 patches" in info["notes"]["fid"]
    assert info["fid"]["patch"] == 16 and info["sets"]["tiny"]["n_images"] == 3
    assert "nonfinite" not in info["sets"]["tiny"]
    # FID unavailable: the bootstrap file is there (a DVC output) with its header only
    assert (folder / "fid_bootstrap.csv").read_text() == "set,resample,fid\n"

    summary_path, seeds_path, paired_path = summarize(cfg)
    summary = _read_csv(summary_path)
    assert list(summary[0]) == [
        *SUMMARY_KEYS, *METRIC_NAMES, "fid_ci_low", "fid_ci_high", "fid_protocol", "notes"
    ]  # fmt: skip
    assert [r["run"] for r in summary] == ["bicubic-x2", "m-l1-x2", "m-sgl-x2"]
    assert summary[0]["model"] == "bicubic" and summary[0]["loss"] == ""
    assert summary[0]["seed"] == "" and summary[1]["seed"] == "0"
    assert float(summary[1]["psnr"]) == pytest.approx(tiny["psnr"], abs=1e-9)
    assert summary[1]["lpips"] == "" and summary[1]["notes"] == ""

    seeds = _read_csv(seeds_path)
    assert list(seeds[0]) == list(SEEDS_COLUMNS)
    row = next(r for r in seeds if r["loss"] == "l1" and r["metric"] == "psnr")
    assert (row["n_seeds"], row["seeds"], row["runs"]) == ("1", "0", "m-l1-x2")
    assert float(row["mean"]) == pytest.approx(tiny["psnr"], abs=1e-9) and row["sd"] == ""
    assert not any(r["metric"] in ("lpips", "fid") for r in seeds)  # unavailable: no rows

    paired = _read_csv(paired_path)
    assert list(paired[0]) == list(PAIRED_COLUMNS)
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
    # one seed: the seed statistics are undefined (empty), not "no effect"
    assert (row["n_seeds"], row["seeds"]) == ("1", "0")
    assert float(row["seed_diffs"]) == pytest.approx(np.mean(diffs), abs=1e-9)
    for col in ("seed_ci_low", "seed_ci_high", "baseline_seed_sd", "exceeds_seed_spread", "effect"):
        assert row[col] == "", col
    gmsd_row = next(r for r in paired if r["metric"] == "gmsd")
    assert gmsd_row["higher_is_better"] == "False" and float(gmsd_row["mean_diff"]) < 0


def test_identical_images_are_inf_and_never_confused_with_undefined(pipeline: Path) -> None:
    """SR == HR: PSNR is inf; metrics.json stays strict JSON (null) and the sidecar says
    "inf", identical; CSVs say inf."""
    hr_dir = pipeline / "data/prepared/x2/tiny/hr"
    for p in imaging.list_images(hr_dir):
        imaging.write_image(pipeline / "results/sr/m-l1-x2/tiny" / p.name, imaging.read_image(p))
    _set_metrics(pipeline, ["psnr", "ssim"])
    cfg = load_config(pipeline / "params.yaml")
    evaluate.run(cfg, "m-l1-x2")
    folder = pipeline / "results/metrics/m-l1-x2"
    text = (folder / "metrics.json").read_text()
    doc = json.loads(text, parse_constant=lambda c: pytest.fail(f"non-JSON constant {c}"))
    assert doc["tiny"]["psnr"] is None and doc["tiny"]["ssim"] == 1.0
    info = json.loads((folder / "metrics_info.json").read_text())
    entry = info["sets"]["tiny"]["nonfinite"]["psnr"]
    assert entry["value"] == "inf" and "identical" in entry["why"] and "img0" in entry["why"]
    rows = _read_csv(folder / "per_image.csv")
    assert all(r["psnr"] == "inf" for r in rows)
    for run in ("bicubic-x2", "m-sgl-x2"):
        evaluate.run(cfg, run)
    summary_path, _, paired_path = summarize(cfg)
    row = _read_csv(summary_path)[1]
    assert row["psnr"] == "inf" and "psnr infinite" in row["notes"]
    psnr_rows = [r for r in _read_csv(paired_path) if r["metric"] == "psnr"]
    # every pair had an infinite PSNR: the row stays, its difference empty, with the reason
    assert [(r["n"], r["mean_diff"]) for r in psnr_rows] == [("0", "")]
    assert "no image of 3 has a finite psnr" in psnr_rows[0]["notes"]
    ssim_row = next(r for r in _read_csv(paired_path) if r["metric"] == "ssim")
    assert ssim_row["excluded"] == "0" and float(ssim_row["mean_diff"]) < 0


def test_psnr_with_nothing_left_after_the_crop_is_undefined_not_identical(pipeline: Path) -> None:
    """A 4x4 image at x2 loses every pixel to the 2 px border: its PSNR is NaN. The set's PSNR
    is undefined with the reason, in every output; nothing says "identical"."""
    tiny_hr = np.full((4, 4, 3), 100, np.uint8)
    imaging.write_image(pipeline / "data/prepared/x2/tiny/hr/zz.png", tiny_hr)
    for run in ("bicubic-x2", "m-l1-x2", "m-sgl-x2"):
        imaging.write_image(pipeline / f"results/sr/{run}/tiny/zz.png", tiny_hr + 1)
    _set_metrics(pipeline, ["psnr"])
    cfg = load_config(pipeline / "params.yaml")
    for run in ("bicubic-x2", "m-l1-x2", "m-sgl-x2"):
        evaluate.run(cfg, run)
    folder = pipeline / "results/metrics/m-l1-x2"
    rows = {r["image"]: r for r in _read_csv(folder / "per_image.csv")}
    assert rows["zz"]["psnr"] == "nan" and math.isfinite(float(rows["img0"]["psnr"]))
    assert json.loads((folder / "metrics.json").read_text())["tiny"]["psnr"] is None
    info = json.loads((folder / "metrics_info.json").read_text())
    entry = info["sets"]["tiny"]["nonfinite"]["psnr"]
    assert entry["value"] == "nan"
    assert "zz: 4x4 px, nothing left after the 2 px border crop" in entry["why"]
    assert "identical" not in json.dumps(info["sets"])
    summary_path, _, paired_path = summarize(cfg)
    row = _read_csv(summary_path)[1]
    assert row["psnr"] == "nan" and "psnr undefined" in row["notes"] and "zz" in row["notes"]
    (pair,) = [r for r in _read_csv(paired_path) if r["metric"] == "psnr"]
    assert (pair["n"], pair["excluded"]) == ("3", "1")  # the undefined image is left out
    sr_dir, hr_dir = folder.parents[1] / "sr/m-l1-x2/tiny", pipeline / "data/prepared/x2/tiny/hr"
    table = scoring.format_table(scoring.score_folders(sr_dir, hr_dir, SCALE, ["psnr"]))
    assert "nan" in table and "mean undefined" in table and "inf" not in table


def _set_metrics(pipeline: Path, names: list[str]) -> None:
    raw = yaml.safe_load((pipeline / "params.yaml").read_text())
    raw["evaluate"]["metrics"] = names
    (pipeline / "params.yaml").write_text(yaml.safe_dump(raw))


def test_summarize_names_a_missing_metrics_file(pipeline: Path) -> None:
    _set_metrics(pipeline, ["psnr"])
    cfg = load_config(pipeline / "params.yaml")
    evaluate.run(cfg, "bicubic-x2")
    evaluate.run(cfg, "m-l1-x2")
    with pytest.raises(FileNotFoundError, match=r"m-sgl-x2/metrics\.json"):
        summarize(cfg)


def test_summarize_refuses_an_old_format_metrics_json(pipeline: Path) -> None:
    _set_metrics(pipeline, ["psnr"])
    cfg = load_config(pipeline / "params.yaml")
    for run in ("bicubic-x2", "m-l1-x2", "m-sgl-x2"):
        evaluate.run(cfg, run)
    old = {"run": "m-l1-x2", "sets": {"tiny": {"psnr": 30.0}}, "unavailable": {}}
    (pipeline / "results/metrics/m-l1-x2/metrics.json").write_text(json.dumps(old))
    with pytest.raises(ValueError, match=r"m-l1-x2/metrics\.json is in the old format.*rerun"):
        summarize(cfg)


# --------------------------------------------------------------------------------------------
# folder pairs and the CLI
# --------------------------------------------------------------------------------------------
def test_score_folders_errors_name_the_file(pipeline: Path, tmp_path: Path) -> None:
    hr_dir = pipeline / "data/prepared/x2/tiny/hr"
    sr_dir = tmp_path / "sr"
    for p in imaging.list_images(hr_dir)[:2]:
        imaging.write_image(sr_dir / p.name, imaging.read_image(p))
    with pytest.raises(FileNotFoundError, match=r"img2\.png"):
        scoring.score_folders(sr_dir, hr_dir, SCALE)
    imaging.write_image(sr_dir / "img2.png", np.zeros((40, 42, 1), np.uint8))
    with pytest.raises(ValueError, match=r"sr/img2\.png: size 42x40x1 differs"):
        scoring.score_folders(sr_dir, hr_dir, SCALE)
    imaging.write_image(sr_dir / "img2.png", imaging.read_image(hr_dir / "img2.png"))
    imaging.write_image(sr_dir / "extra.png", np.zeros((40, 44, 1), np.uint8))
    with pytest.raises(FileNotFoundError, match=r"extra\.png"):
        scoring.score_folders(sr_dir, hr_dir, SCALE)


def test_score_folders_with_random_backbones_plumbs_lpips_and_fid(pipeline: Path) -> None:
    """Injected random networks (never the pipeline's path) exercise the per-set wiring."""
    nets = {
        "lpips": metrics.load_lpips(None, random_backbone=True),
        "fid": metrics.load_fid(None, random_backbone=True, dims=64),
    }
    scorer = scoring.Scorer(["psnr", "lpips", "fid"], fid_patch=16, nets=nets)
    hr_dir = pipeline / "data/prepared/x2/tiny/hr"
    same = scorer.score(hr_dir, hr_dir, SCALE)
    assert same.mean["lpips"] == 0.0 and abs(same.mean["fid"]) < 1e-6
    other = scorer.score(pipeline / "results/sr/m-l1-x2/tiny", hr_dir, SCALE)
    assert other.mean["lpips"] > 0 and other.mean["fid"] > same.mean["fid"]


def test_lpips_from_the_reference_cache_equals_the_uncached_value(
    pipeline: Path, tmp_path: Path
) -> None:
    """A cold and a warm reference cache and no cache give the same LPIPS, image by image;
    the warm pass reads every HR entry and computes none."""
    nets = {"lpips": metrics.load_lpips(None, random_backbone=True)}
    hr_dir = pipeline / "data/prepared/x2/tiny/hr"
    sr_dir = pipeline / "results/sr/m-l1-x2/tiny"
    plain = scoring.Scorer(["lpips"], nets=nets).score(sr_dir, hr_dir, SCALE)
    cache = ReferenceCache(tmp_path / "ref")
    cold = scoring.Scorer(["lpips"], nets=nets, reference_cache=cache).score(sr_dir, hr_dir, SCALE)
    assert cache.hits == 0 and cache.misses == len(plain.images)
    warm = scoring.Scorer(["lpips"], nets=nets, reference_cache=cache).score(sr_dir, hr_dir, SCALE)
    assert cache.hits == len(plain.images)
    assert [r["lpips"] for r in cold.images] == [r["lpips"] for r in plain.images]
    assert [r["lpips"] for r in warm.images] == [r["lpips"] for r in plain.images]
    assert plain.mean["lpips"] != 0
    other = metrics.load_lpips(None, random_backbone=True)  # other weights: another key
    torch.manual_seed(1)
    for p in other.lins.parameters():
        p.data.uniform_()
    scoring.Scorer(["lpips"], nets={"lpips": other}, reference_cache=cache).score(
        sr_dir, hr_dir, SCALE
    )
    assert cache.misses == 2 * len(plain.images)


def test_reference_cache_round_trip_and_a_corrupt_entry_is_a_miss(tmp_path: Path) -> None:
    cache = ReferenceCache(tmp_path)
    key = reference_key("lpips", "ab" * 32, 4, "net")
    assert key != reference_key("lpips", "ab" * 32, 2, "net")
    arrays = [np.arange(6, dtype=np.float32).reshape(1, 2, 3), np.ones((1, 1, 2, 2), np.float32)]
    assert cache.get(key) is None
    cache.put(key, arrays)
    got = cache.get(key)
    assert got is not None and len(got) == 2
    assert all(
        np.array_equal(a, b) and b.dtype == np.float32 for a, b in zip(arrays, got, strict=True)
    )
    (tmp_path / key[:2] / f"{key}.npz").write_bytes(b"not a zip")
    assert cache.get(key) is None and cache.misses == 2 and cache.hits == 1


def test_cli_evaluate_json_and_table(
    pipeline: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    from sgsr.cli import main

    elsewhere = tmp_path_factory.mktemp("elsewhere")  # no checkout, an empty user cache
    monkeypatch.chdir(elsewhere)
    monkeypatch.setenv("SGSR_CACHE_DIR", str(elsewhere / "cache"))
    sr_dir = pipeline / "results/sr/m-l1-x2/tiny"
    hr_dir = pipeline / "data/prepared/x2/tiny/hr"
    args = ["evaluate", "--sr", str(sr_dir), "--hr", str(hr_dir), "--scale", "2"]
    # a metric asked for by name that cannot run is an error naming the file and the fix
    assert main([*args, "--json", "--metrics", "psnr,ssim,lpips"]) == 2
    err = capsys.readouterr().err
    assert "lpips unavailable" in err and "lpips_alex.safetensors" in err
    assert "sgsr download" in err and str(elsewhere / "cache" / "converted") in err
    assert main([*args, "--json", "--metrics", "psnr,ssim"]) == 0
    out = capsys.readouterr().out
    doc = json.loads(out, parse_constant=lambda c: pytest.fail(f"non-JSON constant {c}"))
    assert set(doc) >= {"scale", "n_images", "mean", "images", "nonfinite", "unavailable", "notes"}
    assert doc["n_images"] == 3 and [r["image"] for r in doc["images"]] == ["img0", "img1", "img2"]
    sr0 = imaging.read_image(sr_dir / "img0.png")
    hr0 = imaging.read_image(hr_dir / "img0.png")
    assert doc["images"][0]["psnr"] == pytest.approx(metrics.psnr(sr0, hr0, 2), abs=1e-12)
    assert doc["unavailable"] == {} and "lpips" not in doc["mean"]

    assert main(args) == 0
    table = capsys.readouterr().out
    assert "img1" in table and "mean (3)" in table and f"{doc['mean']['ssim']:.4f}" in table

    # one default subset (metric_registry.QUICK_NAMES): the command, score_folders and Scorer
    assert main([*args, "--json"]) == 0
    default = json.loads(capsys.readouterr().out)
    assert default["metrics"] == list(QUICK_NAMES) == ["psnr", "ssim"]
    assert set(default["mean"]) == set(QUICK_NAMES)
    assert scoring.score_folders(sr_dir, hr_dir, 2)["metrics"] == list(QUICK_NAMES)
    assert scoring.Scorer().metrics == QUICK_NAMES

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
    default = scoring.score_folders(tmp_path / "sr", tmp_path / "hr", 2, metrics=["psnr"])
    assert default["border"] == 2 and default["images"][0]["psnr"] is None  # cropped: identical
    whole = scoring.score_folders(tmp_path / "sr", tmp_path / "hr", 2, ["psnr"], border=0)
    assert whole["border"] == 0 and 0 < whole["images"][0]["psnr"] < 40
    assert "0 px border cropped" in scoring.format_table(whole)
    with pytest.raises(ValueError, match="border must be an integer >= 0"):
        scoring.score_folders(tmp_path / "sr", tmp_path / "hr", 2, ["psnr"], border=-1)


def test_folder_scoring_looks_for_weights_in_order(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """--pretrained, then the checkout's models/pretrained, then the user cache; each metric
    from the first place holding every file it needs (DISTS: its own and LPIPS-VGG's)."""
    checkout = tmp_path / "checkout"
    (checkout / "sub").mkdir(parents=True)
    (checkout / "params.yaml").write_text("{}\n")
    (checkout / "dvc.yaml").write_text("stages: {}\n")
    monkeypatch.chdir(checkout / "sub")
    monkeypatch.setenv("SGSR_CACHE_DIR", str(tmp_path / "cache"))
    given, project, cache = (
        tmp_path / "given",
        checkout / "models/pretrained",
        tmp_path / "cache/converted",
    )
    assert scoring.pretrained_search(given) == [given, project.resolve(), cache]
    for folder, files in (
        (given, ["lpips_alex"]),
        (project, ["lpips_alex", "fid_inception", "dists"]),
        (cache, ["lpips_vgg", "dists"]),
    ):
        folder.mkdir(parents=True, exist_ok=True)
        for name in files:
            (folder / f"{name}.safetensors").write_bytes(b"x")
    found, missing = scoring.resolve_pretrained(
        ["psnr", "lpips", "fid", "kid", "dists", "lpips_vgg"], scoring.pretrained_search(given)
    )
    assert found == {
        "lpips": given, "fid": project.resolve(), "kid": project.resolve(), "dists": cache,
        "lpips_vgg": cache,
    }  # fmt: skip
    assert missing == {}
    (cache / "lpips_vgg.safetensors").unlink()
    found, missing = scoring.resolve_pretrained(["dists"], scoring.pretrained_search(given))
    assert found == {} and "lpips_vgg.safetensors not found in" in missing["dists"]


def test_one_image_has_no_interval_and_every_note_has_a_reason(pipeline: Path) -> None:
    """One test image: a bootstrap of one difference is a zero-width interval that claims
    certainty, so the interval is empty (undefined) with the reason; a non-finite value whose
    reason was not recorded still gets a note that says where to look."""
    runs = ("bicubic-x2", "m-l1-x2", "m-sgl-x2")
    prepared = pipeline / "data/prepared/x2/tiny"
    for folder in [
        prepared / "hr",
        prepared / "lr",
        *(pipeline / f"results/sr/{r}/tiny" for r in runs),
    ]:
        for name in ("img1.png", "img2.png"):
            (folder / name).unlink()
    _set_metrics(pipeline, ["psnr"])
    cfg = load_config(pipeline / "params.yaml")
    for run in ("bicubic-x2", "m-l1-x2", "m-sgl-x2"):
        evaluate.run(cfg, run)
    _, _, paired_path = summarize(cfg)
    (pair,) = [r for r in _read_csv(paired_path) if r["metric"] == "psnr"]
    assert pair["n"] == "1" and float(pair["mean_diff"]) != 0
    assert (pair["ci_low"], pair["ci_high"]) == ("", "")
    assert "one image" in pair["notes"]
    folder = pipeline / "results/metrics/m-l1-x2"
    numbers = json.loads((folder / "metrics.json").read_text())
    info = json.loads((folder / "metrics_info.json").read_text())
    numbers["tiny"]["psnr"] = None
    info["sets"]["tiny"]["nonfinite"] = {"psnr": {"value": "nan", "why": ""}}
    (folder / "metrics.json").write_text(json.dumps(numbers))
    (folder / "metrics_info.json").write_text(json.dumps(info))
    summary_path, _, _ = summarize(cfg)
    row = next(r for r in _read_csv(summary_path) if r["run"] == "m-l1-x2")
    assert "psnr undefined: no reason recorded" in row["notes"]


def test_run_identity_is_parse_run_plus_the_seed_the_run_trained_with() -> None:
    """runs.parse_run owns the name rule; the stage adds only what the params know."""
    raw = yaml.safe_load((Path(__file__).resolve().parents[1] / "params.yaml").read_text())
    raw.pop("runs")
    raw["seed"], raw["experiment"]["replicates"] = 7, [3]
    cfg = parse_config(raw)
    for name, seed, replicate in [
        ("edsr_tiny-l1-x4", 7, False),
        ("edsr_tiny-sgl-x4-s3", 3, True),
        ("bicubic-x4", None, False),
    ]:
        ident = evaluate.run_identity(cfg, name)
        assert ident == {**parse_run(name), "seed": seed, "replicate": replicate}
        assert list(ident) == ["run", "model", "loss", "scale", "seed", "replicate"]
    with pytest.raises(ConfigError, match="edsr_tiny-l1-x4"):
        evaluate.run_identity(cfg, "edsr_tiny-l1-x4-s9")  # a well-formed name the params lack
