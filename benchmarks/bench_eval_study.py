"""One run's evaluation of the test sets, and each metric's cost per megapixel beside its
reference library, measured side by side in one process.

- ``per_mp``: seconds per megapixel (of SR + HR pixels scored, i.e. 2 x the image) for each
  metric, the project's implementation and the reference library on the same images: PSNR and
  SSIM vs torchmetrics, MS-SSIM/GMSD/HaarPSI vs piq called directly, LPIPS vs the lpips package
  called directly, DISTS vs DISTS_pytorch, Inception features vs pytorch-fid's ``InceptionV3``
  at its defaults (batch 50, contiguous layout), KID vs torch-fidelity, the Frechet distance vs
  pytorch-fid's ``calculate_frechet_distance``. Images: Set5 + Set14 (x4 bicubic SR).
- ``run``: `sgsr.scoring.Scorer` over Set5, Set14, BSD100 and Urban100 with the default seven
  metrics (patch FID at 4 per image), twice: cold (HR FID features computed) and warm (read
  from the feature cache, as every run after the first); seconds per metric from the scorer.
  ``SGSR_BENCH_EVAL_RUN=0`` leaves it out; ``SGSR_BENCH_EVAL_SAMPLE=Set5`` narrows ``per_mp``.

Real weights when folder scoring finds them (`sgsr.scoring.pretrained_search`), else random
backbones, labelled (timing only). ``--quick``: two synthetic images, random backbones.
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("SGSR_SHARED_DATASETS", REPO.parent / "shared" / "datasets"))
SETS = ("Set5", "Set14", "BSD100", "Urban100")
SAMPLE_SETS = ("Set5", "Set14")


def _prepare(root: Path, quick: bool, sets: tuple[str, ...] = SETS) -> dict[str, int]:
    """HR (mod-cropped) and bicubic x4 SR of every set under `root`; {set: pixels}."""
    from sgsr import imaging

    pixels: dict[str, int] = {}
    if quick or not (SHARED / "Set5").is_dir():
        rng = np.random.default_rng(0)
        sources = {"synthetic": [rng.integers(0, 256, (176, 184, 3), dtype=np.uint8)] * 2}
    else:
        sources = {
            s: [imaging.read_image(p) for p in imaging.list_images(SHARED / s)] for s in sets
        }
    for name, images in sources.items():
        pixels[name] = 0
        for i, img in enumerate(images):
            hr = imaging.mod_crop(img, 4)
            sr = imaging.upscale_bicubic(imaging.downscale(hr, 4), 4)
            imaging.write_image(root / "hr" / name / f"{i:03d}.png", hr)
            imaging.write_image(root / "sr" / name / f"{i:03d}.png", sr)
            pixels[name] += hr.shape[0] * hr.shape[1]
    return pixels


def _nets(quick: bool) -> tuple[dict, str]:
    from sgsr import metrics, scoring

    names = ("lpips", "fid", "dists")
    if not quick:
        found, missing = scoring.resolve_pretrained(names, scoring.pretrained_search())
        if not missing:
            nets = {m: metrics.LOADERS[m](found[m]) for m in names}
            return {**nets, "kid": nets["fid"]}, "real weights"
    nets = {m: metrics.LOADERS[m](None, random_backbone=True) for m in names}
    return {**nets, "kid": nets["fid"]}, "random backbones (timing only)"


def _clock(fn: Callable[[], object]) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def per_mp(root: Path, sets: tuple[str, ...], nets: dict) -> dict:
    """Seconds per megapixel, ours vs the reference library, interleaved image by image."""
    import torch
    from pytorch_fid.fid_score import calculate_frechet_distance
    from torch_fidelity.metric_kid import kid_features_to_metric

    from sgsr import fid, imaging

    pairs = []
    for s in sets:
        for p in imaging.list_images(root / "sr" / s):
            pairs.append((imaging.read_image(p), imaging.read_image(root / "hr" / s / p.name)))
    mp = sum(2 * hr.shape[0] * hr.shape[1] for _, hr in pairs) / 1e6
    t: dict[str, dict[str, float]] = {}

    def add(metric: str, side: str, seconds: float) -> None:
        t.setdefault(metric, {"ours": 0.0, "reference": 0.0})[side] += seconds

    dists_ref = _dists_pytorch(nets["dists"])
    for sr, hr in pairs:
        for (metric, side), seconds in _time_pair(sr, hr, nets, dists_ref).items():
            add(metric, side, seconds)

    # FID/KID features: the whole-image protocol's samples, both sides
    samples = np.concatenate([fid.whole_image(im) for pair in pairs for im in pair])
    inception = nets["fid"]
    ref_net = _pytorch_fid_layout(inception)
    add("fid_features_whole", "ours", _clock(lambda: fid.inception_features(samples, inception)))

    def reference_features() -> None:
        with torch.inference_mode():
            for i in range(0, len(samples), 50):
                ref_net(torch.from_numpy(samples[i : i + 50]))

    add("fid_features_whole", "reference", _clock(reference_features))
    feats = fid.inception_features(samples, inception)
    a, b = feats[0::2], feats[1::2]
    add("kid", "ours", _clock(lambda: fid.kid(a, b)))
    ta, tb = torch.from_numpy(a), torch.from_numpy(b)
    add("kid", "reference", _clock(lambda: kid_features_to_metric(
        ta, tb, kid_subset_size=len(a), verbose=False)))  # fmt: skip
    add("fid_distance", "ours", _clock(lambda: fid.frechet_distance(a, b)))
    mu_a, mu_b, s_a, s_b = a.mean(0), b.mean(0), np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    ref_fd = _clock(lambda: calculate_frechet_distance(mu_a, s_a, mu_b, s_b))
    add("fid_distance", "reference", ref_fd)
    out = {}
    for m, v in t.items():
        per_set = m in ("kid", "fid_distance")
        scale = 1.0 if per_set else mp
        out[m] = {
            ("seconds" if per_set else "ours_s_per_mp"): v["ours"] / scale,
            ("reference_seconds" if per_set else "reference_s_per_mp"): v["reference"] / scale,
            "ours_over_fastest": v["ours"] / min(v["ours"], v["reference"]),
        }
    return {"images": len(pairs), "megapixels_scored": mp, "metrics": out}


def _time_pair(
    sr: np.ndarray, hr: np.ndarray, nets: dict, dists_ref: object
) -> dict[tuple[str, str], float]:
    """{(metric, "ours" | "reference"): seconds} for one image pair, interleaved."""
    import piq
    import torch
    import torchmetrics.functional as tmf

    from sgsr import imaging, metrics

    ya = torch.from_numpy(metrics.crop_border(imaging.luminance(sr), 4))[None, None]
    yb = torch.from_numpy(metrics.crop_border(imaging.luminance(hr), 4))[None, None]
    x32, y32 = metrics._rgb01(sr, 4, torch.float32), metrics._rgb01(hr, 4, torch.float32)
    x64, y64 = metrics._rgb01(sr, 4), metrics._rgb01(hr, 4)
    lp, dn = nets["lpips"], nets["dists"]

    def lpips_ref() -> None:
        with torch.inference_mode():
            lp(x32, y32, normalize=True)

    def dists_reference() -> None:
        with torch.inference_mode():
            dists_ref(x32, y32)

    jobs = {
        ("psnr", "ours"): lambda: metrics.psnr(sr, hr, 4),
        ("psnr", "reference"): lambda: tmf.peak_signal_noise_ratio(ya, yb, data_range=255.0),
        ("ssim", "ours"): lambda: metrics.ssim(sr, hr, 4),
        ("ssim", "reference"): lambda: tmf.structural_similarity_index_measure(
            ya, yb, data_range=255.0
        ),
        ("ms_ssim", "ours"): lambda: metrics.ms_ssim(sr, hr, 4),
        ("ms_ssim", "reference"): lambda: piq.multi_scale_ssim(x32, y32, data_range=1.0),
        ("gmsd", "ours"): lambda: metrics.gmsd(sr, hr, 4),
        ("gmsd", "reference"): lambda: piq.gmsd(x64, y64, data_range=1.0),
        ("haarpsi", "ours"): lambda: metrics.haarpsi(sr, hr, 4),
        ("haarpsi", "reference"): lambda: piq.haarpsi(x64, y64, data_range=1.0),
        ("lpips", "ours"): lambda: metrics.lpips_distance(sr, hr, 4, lp),
        ("lpips", "reference"): lpips_ref,
        ("dists", "ours"): lambda: metrics.dists_distance(sr, hr, 4, dn),
        ("dists", "reference"): dists_reference,
    }
    return {k: _clock(fn) for k, fn in jobs.items()}


def _dists_pytorch(ours: object) -> object:
    """DISTS_pytorch's own module with our network's tensors (no download)."""
    import torch
    import torchvision
    from DISTS_pytorch import DISTS_pt

    build = torchvision.models.vgg16
    DISTS_pt.models.vgg16 = lambda pretrained=False, **_: build(weights=None)
    try:
        ref = DISTS_pt.DISTS(load_weights=False)
    finally:
        DISTS_pt.models.vgg16 = build
    mine = [m for s in ours.stages for m in s if isinstance(m, torch.nn.Conv2d)]
    theirs = [m for m in ref.modules() if isinstance(m, torch.nn.Conv2d) and m.groups == 1]
    for a, b in zip(mine, theirs, strict=True):
        b.weight.data, b.bias.data = a.weight.data.clone(), a.bias.data.clone()
    ref.alpha.data, ref.beta.data = ours.alpha.clone(), ours.beta.clone()
    return ref.eval()


def _pytorch_fid_layout(net: object) -> object:
    """The same Inception in pytorch-fid's default memory layout (a copy: ours is
    channels-last once it has run)."""
    import copy

    import torch

    ref = copy.deepcopy(net).to(memory_format=torch.contiguous_format)
    return ref


def study_run(
    root: Path,
    sets: tuple[str, ...],
    nets: dict,
    reference: bool = True,
    cache_dir: Path | None = None,
    labels: tuple[str, ...] = ("cold", "warm"),
) -> dict:
    """One run's evaluation as the study's evaluate stage does it (the default seven metrics,
    4 FID patches per image, 1000 FID bootstrap resamples per set), cold (the HR side computed
    and cached) then warm (the HR side read back, as every run after the first); the run is
    bicubic x4 SR. `reference`: cache LPIPS's HR side too. Seconds per metric from the scorer,
    "fid_bootstrap" beside them. `cache_dir`: keep the caches there (default: a temporary
    folder); `labels`: the passes, in order (each "warm" after a first pass reads the caches).
    """
    from sgsr import fid, scoring
    from sgsr.metric_registry import DEFAULT_NAMES
    from sgsr.refcache import ReferenceCache

    out = {}
    with tempfile.TemporaryDirectory() as tmp:
        where = Path(cache_dir or tmp)  # a given folder persists (passes in other processes)
        cache = fid.FeatureCache(where / "fid")
        ref = ReferenceCache(where / "ref") if reference else None
        for label in labels:
            load = os.getloadavg()[0]
            scorer = scoring.Scorer(
                DEFAULT_NAMES, nets={k: nets[k] for k in ("lpips", "fid")},
                fid_patches_per_image=4, feature_cache=cache, reference_cache=ref,
            )  # fmt: skip
            t0 = time.perf_counter()
            boot = 0.0
            for s in sets:
                score = scorer.score(root / "sr" / s, root / "hr" / s, 4)
                t1 = time.perf_counter()
                plan = fid.resample_plan(len(score.images), 1000, s)
                fid.bootstrap_fid(score.fid_sr, score.fid_hr, score.fid_groups, plan)
                boot += time.perf_counter() - t1
            seconds = dict(scorer.seconds, fid_bootstrap=boot)
            out[label] = {
                "seconds": time.perf_counter() - t0,
                "per_metric_seconds": dict(sorted(seconds.items())),
                "load_average_before": load,
                "load_average_after": os.getloadavg()[0],
            }
    return out


def new_metrics_cost(per_mp_result: dict, sets: dict) -> dict:
    """DISTS, whole-image FID features and KID beside the run: seconds per megapixel scored
    (SR + HR) from `per_mp`, and what that costs for these sets (the HR side included:
    DISTS cannot reuse it, see `sgsr.refcache`; FID/KID features of HR images are cached)."""
    m = per_mp_result["metrics"]
    scored = 2 * sum(v["megapixels"] for v in sets.values())
    return {
        "dists_s_per_mp": m["dists"]["ours_s_per_mp"],
        "dists_seconds_for_these_sets": m["dists"]["ours_s_per_mp"] * scored,
        "fid_whole_features_s_per_mp": m["fid_features_whole"]["ours_s_per_mp"],
        "kid_seconds_per_set": m["kid"]["seconds"],
        "megapixels_scored": scored,
    }


def run(quick: bool = False) -> dict:
    import torch

    full = not quick and os.environ.get("SGSR_BENCH_EVAL_RUN", "1") != "0"
    wanted = tuple(os.environ.get("SGSR_BENCH_EVAL_SAMPLE", ",".join(SAMPLE_SETS)).split(","))
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        pixels = _prepare(root, quick, SETS if full else wanted)
        sets = tuple(pixels)
        nets, weights = _nets(quick)
        sample = tuple(s for s in wanted if s in sets) or sets
        load = os.getloadavg()[0]
        out = {
            "weights": weights,
            "threads": torch.get_num_threads(),
            "load_average_at_start": load,
            "sets": {s: {"megapixels": pixels[s] / 1e6} for s in sets},
            "per_mp": per_mp(root, sample, nets),
        }
        out["new_metrics"] = new_metrics_cost(out["per_mp"], out["sets"])
        if full or quick:
            out["run"] = study_run(root, sets, nets)
        out["load_average_at_end"] = os.getloadavg()[0]
    return out


if __name__ == "__main__":
    print(json.dumps(run(quick="--quick" in sys.argv), indent=2))
