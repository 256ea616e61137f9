"""Evaluation cost: seconds per image for each metric.

Image: Set5 ``baby`` x4 (512x512 HR, bicubic SR) from ../shared/datasets when present, else a
synthetic 512x512 pair. LPIPS and FID use *random* backbones here (weights are not needed to
time them, and a number from them would mean nothing): labelled as such in the output. FID is
timed in two parts: InceptionV3 features of one image's SR and HR patches (per image) and the
Frechet distance over 2048-d features (once per set).
"""

from __future__ import annotations

import json
import os
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("SGSR_SHARED_DATASETS", REPO.parent / "shared" / "datasets"))


def _pair(quick: bool) -> tuple[np.ndarray, np.ndarray, str]:
    from sgsr import imaging

    path = SHARED / "Set5" / "baby.png"
    if quick or not path.is_file():
        side = 96 if quick else 512
        rng = np.random.default_rng(0)
        hr = rng.integers(0, 256, (side, side, 3), dtype=np.uint8)
        source = f"synthetic {side}x{side}"
    else:
        hr = imaging.mod_crop(imaging.read_image(path), 4)
        source = f"Set5/baby.png {hr.shape[1]}x{hr.shape[0]}"
    sr = imaging.upscale_bicubic(imaging.downscale(hr, 4), 4)
    return sr, hr, source


def _time(fn: Callable[[], object], repeats: int) -> float:
    fn()  # warm-up (lazy imports, allocator)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def run(quick: bool = False) -> dict:
    import torch

    from sgsr import metrics

    sr, hr, source = _pair(quick)
    repeats = 1 if quick else 3
    patch = 32 if quick else 64
    out: dict = {"image": source, "border": 4, "repeats": repeats, "seconds_per_image": {}}
    per_image = out["seconds_per_image"]
    for name in ("psnr", "ssim", "ms_ssim", "gmsd", "haarpsi"):
        fn = metrics.METRICS[name]
        per_image[name] = _time(lambda fn=fn: fn(sr, hr, 4), repeats)

    torch.manual_seed(0)
    lp = metrics.load_lpips(None, random_backbone=True)
    per_image["lpips_random_backbone"] = _time(
        lambda: metrics.lpips_distance(sr, hr, 4, lp), repeats
    )

    dims = 64 if quick else metrics.FID_DIMS
    fid_net = metrics.load_fid(None, random_backbone=True, dims=dims)
    n_patches = len(metrics.fid_patches(hr, 4, patch))
    feats: dict[str, np.ndarray] = {}

    def features() -> None:
        feats["sr"] = metrics.fid_features([sr], 4, patch, fid_net)
        feats["hr"] = metrics.fid_features([hr], 4, patch, fid_net)

    per_image["fid_features_random_backbone"] = _time(features, 1)
    rng = np.random.default_rng(0)
    a, b = rng.normal(size=(400, dims)), rng.normal(size=(400, dims))
    out["fid_frechet_seconds_per_set"] = _time(lambda: metrics.frechet_distance(a, b), 1)
    out["fid"] = {"patch": patch, "patches_per_image_side": n_patches, "dims": dims}
    out["note"] = "lpips/fid timed with random backbones (timing only, not a metric value)"
    out["threads"] = torch.get_num_threads()
    return out


if __name__ == "__main__":
    print(json.dumps(run(quick="--quick" in sys.argv), indent=2))
