"""FID at study scale: patch choice, the n-space Frechet distance, the HR feature cache and
the bootstrap over images. Random backbones only (plumbing; never reported as FID)."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from sgsr import evaluate, fid, metrics, scoring
from sgsr.config import load_config
from sgsr.summary import summarize


def _dspace_fid(a: np.ndarray, b: np.ndarray) -> float:
    """The 2048-space formula (sqrt(S1) S2 sqrt(S1) eigenvalues), written out independently."""
    diff = a.mean(0) - b.mean(0)
    s1, s2 = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    w, v = np.linalg.eigh(s1)
    r = (v * np.sqrt(np.clip(w, 0, None))) @ v.T
    m = r @ s2 @ r
    tr = np.sqrt(np.clip(np.linalg.eigvalsh((m + m.T) / 2), 0, None)).sum()
    return float(diff @ diff + np.trace(s1) + np.trace(s2) - 2 * tr)


def _features(n: int, d: int, seed: int, shift: float = 0.0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return rng.normal(size=(n, d)) @ rng.normal(size=(d, d)) / np.sqrt(d) + shift


# --------------------------------------------------------------------------------------------
# which patches


def test_patch_cells_are_a_fixed_seeded_choice_per_image_key() -> None:
    a = metrics.patch_cells(100, 4, "baby")
    assert np.array_equal(a, metrics.patch_cells(100, 4, "baby"))  # same key, same cells
    assert not np.array_equal(a, metrics.patch_cells(100, 4, "bird"))
    assert len(set(a.tolist())) == 4 and np.all(np.diff(a) > 0) and a.max() < 100
    assert np.array_equal(metrics.patch_cells(3, 4, "x"), [0, 1, 2])  # fewer cells: all
    assert np.array_equal(metrics.patch_cells(10, 0, "x"), np.arange(10))  # 0 = all


def test_capped_patches_are_those_cells_of_the_full_grid() -> None:
    rng = np.random.default_rng(0)
    img = rng.integers(0, 256, (72, 104, 3), dtype=np.uint8)
    full = metrics.fid_patches(img, 4, 16)  # (64 // 16) x (96 // 16) = 24 cells
    capped = metrics.fid_patches(img, 4, 16, max_patches=5, key="img")
    assert full.shape == (24, 3, 16, 16) and capped.shape == (5, 3, 16, 16)
    assert np.array_equal(capped, full[metrics.patch_cells(24, 5, "img")])


# --------------------------------------------------------------------------------------------
# the Frechet distance


@pytest.mark.parametrize(("n", "d"), [(40, 128), (40, 41), (200, 64)])
def test_frechet_distance_n_space_and_d_space_agree(n: int, d: int) -> None:
    """n < d uses the n-space. (The d-space form takes square roots of the ~1e-14 round-off
    eigenvalues of a singular covariance, so it is the less exact of the two: 1e-7 here.)"""
    a, b = _features(n, d, 1), _features(n + 7, d, 2, shift=0.3)
    assert metrics.frechet_distance(a, b) == pytest.approx(_dspace_fid(a, b), rel=1e-7)


def test_weights_count_rows_like_copies() -> None:
    a, b = _features(30, 96, 3), _features(30, 96, 4, shift=0.1)
    w = np.random.default_rng(5).integers(0, 3, size=30).astype(float)
    rows = np.repeat(np.arange(30), w.astype(int))
    copied = metrics.frechet_distance(a[rows], b[rows])
    assert metrics.frechet_distance(a, b, w, w) == pytest.approx(copied, rel=1e-9)


# --------------------------------------------------------------------------------------------
# the bootstrap over images


@pytest.mark.parametrize("gram_max", [fid.GRAM_MAX, 1])
def test_bootstrap_equals_the_distance_of_each_resampled_set(
    gram_max: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(fid, "GRAM_MAX", gram_max)  # 1: the feature path for large sets
    n_images, k, d = 9, 3, 80
    sr, hr = _features(n_images * k, d, 6, shift=0.2), _features(n_images * k, d, 7)
    groups = np.repeat(np.arange(n_images), k)
    plan = fid.resample_plan(n_images, 6, "SetX")
    values = fid.bootstrap_fid(sr, hr, groups, plan)
    for draw, value in zip(plan, values, strict=True):
        rows = np.concatenate([np.flatnonzero(groups == i) for i in draw])
        assert value == pytest.approx(metrics.frechet_distance(sr[rows], hr[rows]), rel=1e-7)


def test_resample_plan_depends_on_the_set_only() -> None:
    a = fid.resample_plan(20, 50, "Set14")
    assert a.shape == (50, 20) and a.min() >= 0 and a.max() < 20
    assert np.array_equal(a, fid.resample_plan(20, 50, "Set14"))
    assert not np.array_equal(a, fid.resample_plan(20, 50, "Set5"))
    assert fid.plan_fingerprint(a, ["x"]) != fid.plan_fingerprint(a, ["y"])


def test_percentile_ci() -> None:
    assert fid.percentile_ci(np.arange(101.0), 0.9) == pytest.approx((5.0, 95.0))
    low, high = fid.percentile_ci(np.array([]), 0.95)
    assert np.isnan(low) and np.isnan(high)


# --------------------------------------------------------------------------------------------
# the feature cache


def test_feature_cache_round_trip_and_a_corrupt_entry_is_a_miss(tmp_path: Path) -> None:
    cache = fid.FeatureCache(tmp_path)
    key = fid.feature_key("ab" * 32, 4, 64, 4, "baby", "cd" * 32)
    assert cache.get(key) is None
    feats = np.random.default_rng(0).normal(size=(4, 8)).astype(np.float32).astype(np.float64)
    cache.put(key, feats)
    assert np.array_equal(cache.get(key), feats) and (cache.hits, cache.misses) == (1, 1)
    (tmp_path / key[:2] / f"{key}.npy").write_bytes(b"not numpy")
    assert cache.get(key) is None
    assert key != fid.feature_key("ab" * 32, 4, 64, 8, "baby", "cd" * 32)  # cap is in the key


def test_net_fingerprint_tells_weights_apart() -> None:
    """What the feature cache needs: two networks built apart with the same weights share a
    key (so a new process reuses the cache), any other weights do not."""
    a = torch.nn.Conv2d(3, 4, 3)
    same = torch.nn.Conv2d(3, 4, 3)
    same.load_state_dict(a.state_dict())
    b = torch.nn.Conv2d(3, 4, 3)
    assert fid.net_fingerprint(a) == fid.net_fingerprint(same) != fid.net_fingerprint(b)
    nudged = torch.nn.Conv2d(3, 4, 3)
    nudged.load_state_dict(a.state_dict())
    with torch.no_grad():
        nudged.bias[0] += 1e-6
    assert fid.net_fingerprint(nudged) != fid.net_fingerprint(a)


@pytest.fixture(scope="module")
def fid_net() -> torch.nn.Module:
    torch.manual_seed(0)
    return metrics.load_fid(None, random_backbone=True, dims=64)


def test_channels_last_features_equal_the_default_layout(fid_net: torch.nn.Module) -> None:
    x = np.random.default_rng(0).random((3, 3, 32, 32)).astype(np.float32)
    with torch.inference_mode():
        ref = fid_net.to(memory_format=torch.contiguous_format)(torch.from_numpy(x))[0]
    ref = torch.nn.functional.adaptive_avg_pool2d(ref, 1).flatten(1).double().numpy()
    fid_net.sgsr_channels_last = False
    out = metrics.fid_patch_features(x, fid_net)
    assert out.shape == (3, 64)
    assert np.allclose(out, ref, rtol=1e-4, atol=1e-6 * np.abs(ref).max())


# --------------------------------------------------------------------------------------------
# through the evaluate stage and summarize


@pytest.fixture
def pipeline(tmp_path: Path) -> Path:
    from conftest import noisy

    from sgsr import imaging

    scale = 2

    params = {
        "seed": 0,
        "data": {"test_sets": ["tiny"]},
        "prepare": {"scales": [scale], "patch_size": 48},
        "train": {"lr_patch": 12},
        "models": {"m": {"arch": "edsr_baseline", "n_resblocks": 2, "n_feats": 16}},
        "losses": {"l1": {"l1": 1.0}, "sgl": {"l1": 1.0, "sgl": 0.1}},
        "experiment": {"models": ["m"], "losses": ["l1", "sgl"], "scales": [scale]},
        "evaluate": {
            "metrics": ["psnr", "fid"],
            "fid_patch": 16,
            "fid_patches_per_image": 2,
            "fid_bootstrap": 20,
            "bootstrap": 200,
        },
    }
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    rng = np.random.default_rng(0)
    for i in range(4):
        hr = rng.integers(40, 220, (40, 44, 3), dtype=np.uint8)
        imaging.write_image(tmp_path / f"data/prepared/x2/tiny/hr/img{i}.png", hr)
        for run, sigma in (("bicubic-x2", 30), ("m-l1-x2", 12), ("m-sgl-x2", 6)):
            sr = noisy(hr, sigma, i)
            imaging.write_image(tmp_path / f"results/sr/{run}/tiny/img{i}.png", sr)
    return tmp_path


def test_fid_through_evaluate_and_summarize(pipeline: Path, fid_net: torch.nn.Module) -> None:
    cfg = load_config(pipeline / "params.yaml")
    cache = fid.FeatureCache(pipeline / "cache")
    nets = {"fid": fid_net}
    out = {}
    for run in ("bicubic-x2", "m-l1-x2", "m-sgl-x2"):
        out[run] = evaluate.run(cfg, run, feature_cache=cache, nets=nets)
    # the HR side was computed once (4 images) and then read from the cache (2 x 4 images)
    assert (cache.misses, cache.hits) == (4, 8)
    assert len(list((pipeline / "cache").rglob("*.npy"))) == 4
    # the cache changes nothing: the same run scored without it gives the same FID
    fresh = evaluate.run(cfg, "m-l1-x2", feature_cache=None, nets=nets)
    assert fresh["tiny"]["fid"] == out["m-l1-x2"]["tiny"]["fid"]
    assert out["m-sgl-x2"]["tiny"]["fid"] < out["m-l1-x2"]["tiny"]["fid"]  # less noise, closer

    folder = pipeline / "results/metrics/m-l1-x2"
    info = json.loads((folder / "metrics_info.json").read_text())
    tiny = info["sets"]["tiny"]["fid"]
    assert tiny["patches"] == 8 and tiny["bootstrap"] == 20  # 2 of the 2 x 2 cells per image
    assert info["fid"] == {
        "protocol": "patches", "patch": 16, "patches_per_image": 2, "bootstrap": 20
    }  # fmt: skip
    plans = {
        json.loads((pipeline / f"results/metrics/{r}/metrics_info.json").read_text())["sets"][
            "tiny"
        ]["fid"]["plan_sha256"]
        for r in out
    }
    assert len(plans) == 1  # every run resampled identically
    with open(folder / "fid_bootstrap.csv", newline="") as fh:
        boot = list(csv.DictReader(fh))
    assert [int(r["resample"]) for r in boot] == list(range(20))
    # a resample is the FID of the drawn images' patches (here recomputed from scratch)
    plan = fid.resample_plan(4, 20, "tiny")
    sr_dir, hr_dir = pipeline / "results/sr/m-l1-x2/tiny", pipeline / "data/prepared/x2/tiny/hr"
    scorer = scoring.Scorer(["fid"], fid_patch=16, nets=nets, fid_patches_per_image=2)
    score = scorer.score(sr_dir, hr_dir, 2)
    rows = np.concatenate([np.flatnonzero(score.fid_groups == i) for i in plan[3]])
    expect = metrics.frechet_distance(score.fid_sr[rows], score.fid_hr[rows])
    assert float(boot[3]["fid"]) == pytest.approx(expect, rel=1e-6)

    summary, _, paired = summarize(cfg)
    with open(summary, newline="") as fh:
        srow = next(r for r in csv.DictReader(fh) if r["run"] == "m-l1-x2")
    values = np.array([float(r["fid"]) for r in boot])
    assert float(srow["fid_ci_low"]) == pytest.approx(np.quantile(values, 0.025))
    assert float(srow["fid_ci_high"]) == pytest.approx(np.quantile(values, 0.975))
    with open(paired, newline="") as fh:
        prow = next(r for r in csv.DictReader(fh) if r["metric"] == "fid")
    assert float(prow["mean_diff"]) == pytest.approx(
        out["m-sgl-x2"]["tiny"]["fid"] - out["m-l1-x2"]["tiny"]["fid"]
    )
    assert prow["resamples"] == "20" and float(prow["ci_low"]) <= float(prow["ci_high"])


# --------------------------------------------------------------------------------------------
# the whole-image protocol and KID


def test_whole_image_resize_is_pytorch_fids_own(fid_net: torch.nn.Module) -> None:
    """Resizing to 299 before the network (so images of any size batch) gives the features
    pytorch-fid's InceptionV3 gives when it resizes the image itself."""
    img = np.random.default_rng(1).integers(0, 256, (37, 53, 3), dtype=np.uint8)
    x = fid.whole_image(img)
    assert x.shape == (1, 3, 299, 299)
    raw = torch.from_numpy(img).permute(2, 0, 1)[None].float() / 255.0
    with torch.inference_mode():
        ref = fid_net.to(memory_format=torch.contiguous_format)(raw)[0]
    ref = torch.nn.functional.adaptive_avg_pool2d(ref, 1).flatten(1).double().numpy()
    fid_net.sgsr_channels_last = False
    ours = fid.inception_features(x, fid_net)
    assert np.allclose(ours, ref, rtol=1e-4, atol=1e-6 * np.abs(ref).max())
    gray = fid.whole_image(img[..., :1])  # gray is replicated, as PIL's convert("RGB")
    assert np.array_equal(gray[0, 0], gray[0, 2])


@pytest.mark.parametrize(("n1", "n2", "size"), [(60, 70, 50), (30, 40, 1000)])
def test_kid_equals_torch_fidelity(n1: int, n2: int, size: int) -> None:
    """The same subsets (one RandomState, the same draws) and the same unbiased MMD^2; a subset
    size above the set's is capped (torch-fidelity refuses it, so it is given the cap)."""
    from torch_fidelity.metric_kid import (
        KEY_METRIC_KID_MEAN,
        KEY_METRIC_KID_STD,
        kid_features_to_metric,
    )

    a, b = _features(n1, 16, 0), _features(n2, 16, 1, shift=0.3)
    ours = fid.kid(a, b, subsets=20, subset_size=size)
    cap = min(size, n1, n2)
    ref = kid_features_to_metric(
        torch.from_numpy(a), torch.from_numpy(b), kid_subsets=20, kid_subset_size=cap,
        rng_seed=fid.KID_SEED, verbose=False,
    )  # fmt: skip
    assert ours.subset_size == cap and ours.subsets == 20
    assert ours.mean == pytest.approx(ref[KEY_METRIC_KID_MEAN], rel=1e-9)
    assert ours.sd == pytest.approx(ref[KEY_METRIC_KID_STD], rel=1e-9)
    assert ours.mean > 0.0
    assert fid.kid(a, b + 0.3, subsets=20, subset_size=size).mean > ours.mean  # farther apart
    with pytest.raises(ValueError, match="at least 2"):
        fid.kid(a[:1], b)


def test_whole_protocol_and_kid_through_evaluate_and_summarize(
    pipeline: Path, fid_net: torch.nn.Module
) -> None:
    params = yaml.safe_load((pipeline / "params.yaml").read_text())
    params["evaluate"].update(metrics=["psnr", "fid", "kid"], fid_protocol="whole")
    (pipeline / "params.yaml").write_text(yaml.safe_dump(params))
    cfg = load_config(pipeline / "params.yaml")
    cache = fid.FeatureCache(pipeline / "cache")
    nets = {"fid": fid_net, "kid": fid_net}
    out = {r: evaluate.run(cfg, r, feature_cache=cache, nets=nets) for r in ("m-l1-x2", "m-sgl-x2")}
    assert (cache.misses, cache.hits) == (4, 4)  # whole-image HR features: once per image
    info = json.loads((pipeline / "results/metrics/m-l1-x2/metrics_info.json").read_text())
    tiny = info["sets"]["tiny"]
    assert tiny["fid"]["protocol"] == "whole" and tiny["fid"]["samples"] == 4  # 1 per image
    assert tiny["kid"]["subset_size"] == 4 and tiny["kid"]["sd"] < 1e-12  # capped: whole set
    assert any("rests on 4 sample(s)" in w for w in tiny["warnings"])
    assert "whole images" in info["notes"]["fid"] and "protocol whole" in info["notes"]["kid"]
    # the numbers are the distances of the whole images' features
    scorer = scoring.Scorer(["fid", "kid"], nets=nets, fid_protocol="whole")
    score = scorer.score(
        pipeline / "results/sr/m-l1-x2/tiny", pipeline / "data/prepared/x2/tiny/hr", 2
    )
    feats = fid.inception_features(
        np.concatenate([fid.whole_image(imaging_read(p)) for p in sorted(
            (pipeline / "results/sr/m-l1-x2/tiny").glob("*.png"))]), fid_net,
    )  # fmt: skip
    assert np.allclose(score.fid_sr, feats)
    assert out["m-l1-x2"]["tiny"]["fid"] == pytest.approx(fid.frechet_distance(feats, score.fid_hr))
    assert out["m-l1-x2"]["tiny"]["kid"] == pytest.approx(fid.kid(feats, score.fid_hr).mean)
    assert out["m-sgl-x2"]["tiny"]["kid"] < out["m-l1-x2"]["tiny"]["kid"]  # less noise, closer

    evaluate.run(cfg, "bicubic-x2", feature_cache=cache, nets=nets)
    summary, _, paired = summarize(cfg)
    with open(summary, newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert {r["fid_protocol"] for r in rows} == {"whole"}
    assert float(next(r for r in rows if r["run"] == "m-l1-x2")["kid"]) == pytest.approx(
        out["m-l1-x2"]["tiny"]["kid"]
    )
    with open(paired, newline="") as fh:
        prow = next(r for r in csv.DictReader(fh) if r["metric"] == "kid")
    assert prow["higher_is_better"] == "False"
    assert float(prow["mean_diff"]) == pytest.approx(
        out["m-sgl-x2"]["tiny"]["kid"] - out["m-l1-x2"]["tiny"]["kid"]
    )


def imaging_read(path: Path) -> np.ndarray:
    from sgsr.imaging import read_image

    return read_image(path)


def test_few_samples_warning_states_the_rule() -> None:
    assert fid.few_samples_warning("FID", fid.MIN_SAMPLES_WARN, "x") is None
    note = fid.few_samples_warning("FID", 5, "Set5 (whole images)")
    assert note is not None and "5 sample(s)" in note and str(fid.MIN_SAMPLES_WARN) in note
