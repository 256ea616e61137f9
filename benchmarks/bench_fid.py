"""FID and summarize at the study's scale: is FID (with its bootstrap CI) affordable on 2 cores?

Measured side by side in one process, with a *random* InceptionV3 (timing only, never a FID
value to report):

1. seconds per 64 px patch: default vs channels-last memory layout, batches of 4 vs 32;
2. one run's FID over the study's test sets (Set5, Set14, BSD100, the first 50 of Urban100
   from ../shared/datasets; bicubic SR) with ``patches_per_image`` patches per image: first
   with an empty HR feature cache (SR and HR features), then again with the cache filled (SR
   only, as every later run of a pipeline), then the bootstrap over images;
3. ``sgsr summarize`` over a synthetic results folder of the study's shape (13 runs: 4 losses
   x 3 seeds + bicubic, 169 images, 6 image metrics + FID with its resamples).

The study estimate is first + (runs - 1) x cached + runs x bootstrap.
"""

from __future__ import annotations

import csv
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("SGSR_SHARED_DATASETS", REPO.parent / "shared" / "datasets"))
STUDY_SETS = {"Set5": None, "Set14": None, "BSD100": None, "Urban100": 50}
STUDY_RUNS = 13


def _layout_timing(net, quick: bool) -> dict:
    import torch

    from sgsr import metrics

    n = 8 if quick else 32
    x = np.random.default_rng(0).random((n, 3, 64, 64)).astype(np.float32)
    plain = {"default_b32": [], "channels_last_b32": [], "channels_last_b4": []}

    def default(batch: int) -> None:
        net.to(memory_format=torch.contiguous_format)
        net.sgsr_channels_last = True  # keep fid_patch_features from converting it
        with torch.inference_mode():
            for i in range(0, n, batch):
                net(torch.from_numpy(x[i : i + batch]))

    def channels_last(batch: int) -> None:
        net.sgsr_channels_last = False
        metrics.fid_patch_features(x, net, batch)

    channels_last(32)  # warm-up
    for _ in range(1 if quick else 3):  # alternate, so load on the shared machine hits both
        for key, fn in (
            ("default_b32", lambda: default(32)),
            ("channels_last_b32", lambda: channels_last(32)),
            ("channels_last_b4", lambda: channels_last(4)),
        ):
            start = time.perf_counter()
            fn()
            plain[key].append((time.perf_counter() - start) / n)
    out = {k: statistics.median(v) for k, v in plain.items()}
    out["channels_last_speedup"] = out["default_b32"] / out["channels_last_b32"]
    out["batch32_vs_batch4_speedup"] = out["channels_last_b4"] / out["channels_last_b32"]
    return out


def _study_folders(root: Path, quick: bool) -> dict[str, tuple[Path, Path]]:
    """HR (mod-cropped) and bicubic SR PNGs of the study's test sets under `root`."""
    from sgsr import imaging

    sets = {"Set5": 2} if quick else STUDY_SETS
    out = {}
    for name, limit in sets.items():
        files = imaging.list_images(SHARED / name)[:limit]
        hr_dir, sr_dir = root / name / "hr", root / name / "sr"
        for path in files:
            hr = imaging.mod_crop(imaging.read_image(path), 4)
            if quick:
                hr = hr[:96, :96]
            sr = imaging.upscale_bicubic(imaging.downscale(hr, 4), 4)
            imaging.write_image(hr_dir / f"{path.stem}.png", hr)
            imaging.write_image(sr_dir / f"{path.stem}.png", sr)
        out[name] = (sr_dir, hr_dir)
    return out


def _one_run(net, folders: dict, per_image: int, patch: int, resamples: int, cache) -> dict:
    from sgsr import fid, scoring

    scorer = scoring.Scorer(
        ["fid"], fid_patch=patch, nets={"fid": net}, fid_patches_per_image=per_image,
        feature_cache=cache,
    )  # fmt: skip
    timings = {"features_s": 0.0, "features_cpu_s": 0.0, "bootstrap_s": 0.0,
               "bootstrap_cpu_s": 0.0, "patches": {}}  # fmt: skip
    for name, (sr_dir, hr_dir) in folders.items():
        start, cpu = time.perf_counter(), time.process_time()
        score = scorer.score(sr_dir, hr_dir, 4)
        timings["features_s"] += time.perf_counter() - start
        timings["features_cpu_s"] += time.process_time() - cpu
        timings["patches"][name] = len(score.fid_sr)
        start, cpu = time.perf_counter(), time.process_time()
        plan = fid.resample_plan(len(score.images), resamples, name)
        fid.bootstrap_fid(score.fid_sr, score.fid_hr, score.fid_groups, plan)
        timings["bootstrap_s"] += time.perf_counter() - start
        timings["bootstrap_cpu_s"] += time.process_time() - cpu
    return timings


def _all_patches(folders: dict, patch: int) -> int:
    from sgsr import imaging, metrics

    total = 0
    for _, hr_dir in folders.values():
        for path in imaging.list_images(hr_dir):
            h, w = imaging.read_image(path).shape[:2]
            total += ((h - 8) // patch) * ((w - 8) // patch)
    del metrics
    return total


def _summarize_timing(root: Path, quick: bool, resamples: int) -> dict:
    """summarize over a synthetic study-shaped results folder (files as evaluate writes them)."""
    import yaml

    from sgsr.config import load_config
    from sgsr.summary import summarize

    losses = ["l1", "sgl", "grad1", "lpips"]
    sets = {"Set5": 5, "Set14": 14, "BSD100": 100, "Urban100": 50}
    if quick:
        losses, sets = losses[:2], {"Set5": 5}
    metrics = ["psnr", "ssim", "ms_ssim", "gmsd", "haarpsi", "lpips", "fid"]
    params = {
        "seed": 0,
        "data": {"test_sets": list(sets)},
        "models": {"m": {"arch": "edsr_baseline"}},
        "losses": {loss: {"l1": 1.0} for loss in losses},
        "experiment": {"models": ["m"], "losses": losses, "scales": [4], "replicates": [1, 2]},
        "evaluate": {"metrics": metrics, "bootstrap": 10000},
    }
    (root / "params.yaml").write_text(yaml.safe_dump(params))
    cfg = load_config(root / "params.yaml")
    rng = np.random.default_rng(0)
    for run in ["bicubic-x4", *(r.name for r in cfg.runs)]:
        folder = root / "results" / "metrics" / run
        folder.mkdir(parents=True)
        numbers, info_sets = {}, {}
        with (
            open(folder / "per_image.csv", "w", newline="") as fh,
            open(folder / "fid_bootstrap.csv", "w", newline="") as bf,
        ):
            w, b = csv.writer(fh), csv.writer(bf)
            w.writerow(["set", "image", "scale", *metrics[:-1]])
            b.writerow(["set", "resample", "fid"])
            for set_name, n in sets.items():
                vals = rng.normal(30, 2, size=(n, len(metrics) - 1))
                for i in range(n):
                    w.writerow([set_name, f"img{i:03d}", 4, *(repr(float(v)) for v in vals[i])])
                for r, v in enumerate(rng.normal(20, 1, resamples)):
                    b.writerow([set_name, r, repr(float(v))])
                means = vals.mean(0)
                numbers[set_name] = {m: float(x) for m, x in zip(metrics, means, strict=False)}
                numbers[set_name].update(fid=20.0, n_images=n)
                info_sets[set_name] = {"n_images": n, "fid": {"plan_sha256": "same"}}
        (folder / "metrics.json").write_text(json.dumps(numbers))
        info = {"run": run, "model": "m", "loss": "l1", "scale": 4, "seed": 0,
                "unavailable": {}, "sets": info_sets}  # fmt: skip
        (folder / "metrics_info.json").write_text(json.dumps(info))
    start = time.perf_counter()
    summarize(cfg)
    return {
        "runs": len(cfg.runs) + 1,
        "images": sum(sets.values()),
        "seconds": time.perf_counter() - start,
    }


def run(quick: bool = False) -> dict:
    import torch

    from sgsr import fid, metrics

    if not (SHARED / "Set5").is_dir():
        return {"skipped": f"{SHARED} not present (set SGSR_SHARED_DATASETS)"}
    torch.manual_seed(0)
    net = metrics.load_fid(None, random_backbone=True, dims=64 if quick else metrics.FID_DIMS)
    per_image = 2 if quick else 4
    patch = 32 if quick else 64
    resamples = 20 if quick else 1000
    out: dict = {
        "note": "random InceptionV3 (timing only); 2 shared CPU cores unless stated",
        "threads": torch.get_num_threads(),
        "seconds_per_patch": _layout_timing(net, quick),
        "patches_per_image": per_image,
        "bootstrap_resamples": resamples,
    }
    tmp = Path(tempfile.mkdtemp(prefix="sgsr-bench-fid-"))
    try:
        folders = _study_folders(tmp / "data", quick)
        cache = fid.FeatureCache(tmp / "cache")
        first = _one_run(net, folders, per_image, patch, resamples, cache)
        cached = _one_run(net, folders, per_image, patch, resamples, cache)
        out["first_run"] = first
        out["cached_run"] = cached
        out["all_patches_per_run"] = _all_patches(folders, patch)

        def study(suffix: str) -> float:
            boot = statistics.mean([first[f"bootstrap{suffix}"], cached[f"bootstrap{suffix}"]])
            return (
                first[f"features{suffix}"]
                + (STUDY_RUNS - 1) * cached[f"features{suffix}"]
                + STUDY_RUNS * boot
            )

        out["study_fid_minutes"] = study("_s") / 60  # wall, on this (possibly shared) machine
        # CPU time of this process over 2 cores: the wall time on 2 otherwise idle cores if both
        # threads were busy all along (an estimate, labelled as such)
        out["study_fid_cpu_minutes"] = study("_cpu_s") / 60
        out["study_fid_minutes_on_2_idle_cores_estimate"] = study("_cpu_s") / 60 / 2
        out["study_runs"] = STUDY_RUNS
        per_patch = out["seconds_per_patch"]["channels_last_b32"]
        out["all_patches_study_hours_estimate"] = (
            out["all_patches_per_run"] * per_patch * (STUDY_RUNS + 1) / 3600
        )
        summ = tmp / "summarize"
        summ.mkdir()
        out["summarize"] = _summarize_timing(summ, quick, resamples)
        out["summarize_minutes"] = out["summarize"]["seconds"] / 60
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return out


if __name__ == "__main__":
    print(json.dumps(run(quick="--quick" in sys.argv), indent=2))
