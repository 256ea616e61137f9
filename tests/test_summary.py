"""sgsr.summary against a case small enough to compute by hand.

Three seeds (primary 0, replicates 1 and 2) of two losses (l1 = baseline, sgl) on one set of
two images. The evaluate outputs are written directly in their documented formats (so this
also pins what summarize reads); every expected number below is worked out in the comments.
"""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import numpy as np
import pytest
import yaml

from sgsr.config import load_config
from sgsr.summary import PAIRED_COLUMNS, SEEDS_COLUMNS, metric_keys, summarize

# per run: {image: (psnr, gmsd)}, FID of the set, FID of 4 image resamples
RUNS = {
    "m-l1-x4": ({"i0": (30.0, 0.10), "i1": (32.0, 0.10)}, 10.0, [10.0, 11.0, 9.0, 12.0]),
    "m-l1-x4-s1": ({"i0": (30.5, 0.12), "i1": (32.5, 0.12)}, 12.0, [12.0, 13.0, 11.0, 12.5]),
    "m-l1-x4-s2": ({"i0": (29.5, 0.08), "i1": (31.5, 0.08)}, 11.0, [11.0, 10.0, 12.0, 11.5]),
    "m-sgl-x4": ({"i0": (31.0, 0.11), "i1": (33.0, 0.11)}, 8.0, [8.0, 9.0, 8.5, 7.0]),
    "m-sgl-x4-s1": ({"i0": (31.5, 0.13), "i1": (33.5, 0.13)}, 9.0, [9.0, 9.5, 8.0, 10.0]),
    "m-sgl-x4-s2": ({"i0": (31.0, 0.09), "i1": (34.0, 0.09)}, 10.0, [10.0, 11.0, 9.0, 9.5]),
    "bicubic-x4": ({"i0": (28.0, 0.20), "i1": (29.0, 0.20)}, 30.0, [30.0, 31.0, 29.0, 30.5]),
}


def _write_run(base: Path, name: str, images: dict, fid: float, boot: list[float]) -> None:
    folder = base / "results" / "metrics" / name
    folder.mkdir(parents=True)
    with open(folder / "per_image.csv", "w", newline="") as fh:
        w = csv.writer(fh, lineterminator="\n")
        w.writerow(["set", "image", "scale", "psnr", "gmsd"])
        for stem, (p, g) in images.items():
            w.writerow(["A", stem, 4, repr(p), repr(g)])
    with open(folder / "fid_bootstrap.csv", "w", newline="") as fh:
        w = csv.writer(fh, lineterminator="\n")
        w.writerow(["set", "resample", "fid"])
        for i, v in reversed(list(enumerate(boot))):  # order on disk must not matter
            w.writerow(["A", i, repr(v)])
    psnr = float(np.mean([p for p, _ in images.values()]))
    gmsd = float(np.mean([g for _, g in images.values()]))
    numbers = {"A": {"psnr": psnr, "gmsd": gmsd, "fid": fid, "n_images": len(images)}}
    (folder / "metrics.json").write_text(json.dumps(numbers))
    parts = name.split("-")  # m-<loss>-x4[-s<seed>] or bicubic-x4
    model, loss, rest = parts[0], parts[1], parts[3:]
    seed = int(rest[0][1:]) if rest else (None if model == "bicubic" else 0)
    info = {
        "run": name,
        "model": model,
        "loss": None if model == "bicubic" else loss,
        "scale": 4,
        "seed": seed,
        "replicate": bool(rest),
        "metrics": ["psnr", "gmsd", "fid"],
        "unavailable": {},
        "sets": {"A": {"n_images": 2, "fid": {"patches": 8, "bootstrap": 4, "plan_sha256": "p"}}},
    }
    (folder / "metrics_info.json").write_text(json.dumps(info))


@pytest.fixture
def pipeline(tmp_path: Path) -> Path:
    params = {
        "seed": 0,
        "data": {"test_sets": ["A"]},
        "models": {"m": {"arch": "edsr_baseline", "n_resblocks": 1, "n_feats": 8}},
        "losses": {"l1": {"l1": 1.0}, "sgl": {"l1": 1.0, "sgl": 0.1}},
        "experiment": {
            "models": ["m"],
            "losses": ["l1", "sgl"],
            "scales": [4],
            "replicates": [1, 2],
        },
        "evaluate": {"metrics": ["psnr", "gmsd", "fid"], "bootstrap": 200, "ci": 0.5},
    }
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    for name, (images, fid, boot) in RUNS.items():
        _write_run(tmp_path, name, images, fid, boot)
    return tmp_path


def _rows(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


def test_summary_rows_per_run_with_seed_and_fid_ci(pipeline: Path) -> None:
    summary, _, _ = summarize(load_config(pipeline / "params.yaml"))
    rows = _rows(summary)
    assert [r["run"] for r in rows] == ["bicubic-x4", *[n for n in RUNS if n != "bicubic-x4"]]
    assert [r["seed"] for r in rows] == ["", "0", "1", "2", "0", "1", "2"]
    l1_s1 = rows[2]
    assert float(l1_s1["psnr"]) == 31.5 and float(l1_s1["fid"]) == 12.0
    # FID CI at ci 0.5: the 25th and 75th percentiles of [12, 13, 11, 12.5] (linear): 11.75, 12.625
    assert float(l1_s1["fid_ci_low"]) == pytest.approx(11.75)
    assert float(l1_s1["fid_ci_high"]) == pytest.approx(12.625)


def test_one_dvc_metrics_file_with_short_keys(pipeline: Path) -> None:
    """What `dvc exp show` lists: one file, a key per run (the loss, with the seed for a
    replicate), set level and model left out where there is only one of them."""
    summarize(load_config(pipeline / "params.yaml"))
    doc = json.loads((pipeline / "results" / "metrics.json").read_text())
    assert list(doc) == ["bicubic", "l1", "l1-s1", "l1-s2", "sgl", "sgl-s1", "sgl-s2"]
    assert doc["l1-s1"] == {"psnr": 31.5, "gmsd": pytest.approx(0.12), "fid": 12.0}
    assert doc["bicubic"]["psnr"] == 28.5


def test_dvc_metrics_pick_what_the_metrics_file_holds(pipeline: Path) -> None:
    params = yaml.safe_load((pipeline / "params.yaml").read_text())
    params["evaluate"]["dvc_metrics"] = ["psnr"]
    (pipeline / "params.yaml").write_text(yaml.safe_dump(params))
    summary, _, _ = summarize(load_config(pipeline / "params.yaml"))
    doc = json.loads((pipeline / "results" / "metrics.json").read_text())
    assert doc["sgl"] == {"psnr": 32.0} and "gmsd" in _rows(summary)[0]  # summary keeps all
    params["evaluate"]["dvc_metrics"] = ["lpips"]
    (pipeline / "params.yaml").write_text(yaml.safe_dump(params))
    with pytest.raises(ValueError, match=r"evaluate.dvc_metrics: each must be one of evaluate"):
        load_config(pipeline / "params.yaml")


def test_metric_keys_keep_the_parts_that_vary() -> None:
    names = ["bicubic-x2", "bicubic-x4", "a-l1-x2", "b-l1-x4", "a-sgl-x4-s1"]
    assert list(metric_keys(names).values()) == [
        "bicubic-x2", "bicubic-x4", "a-l1-x2", "b-l1-x4", "a-sgl-x4-s1",
    ]  # fmt: skip
    assert metric_keys(["bicubic-x4", "m-l1-x4", "n-l1-x4"]) == {
        "bicubic-x4": "bicubic", "m-l1-x4": "m-l1", "n-l1-x4": "n-l1",
    }  # fmt: skip
    # a loss named like the baseline: short keys would collide, so full names
    assert metric_keys(["bicubic-x4", "m-bicubic-x4"]) == {
        "bicubic-x4": "bicubic-x4", "m-bicubic-x4": "m-bicubic-x4",
    }  # fmt: skip


def test_seed_table_mean_sd_and_traceable_values(pipeline: Path) -> None:
    _, seeds, _ = summarize(load_config(pipeline / "params.yaml"))
    rows = _rows(seeds)
    assert list(rows[0]) == list(SEEDS_COLUMNS)
    assert {(r["loss"], r["metric"]) for r in rows} == {
        (loss, m) for loss in ("l1", "sgl") for m in ("psnr", "gmsd", "fid")
    }  # no bicubic: it has no seeds
    r = next(r for r in rows if (r["loss"], r["metric"]) == ("l1", "psnr"))
    # set means per seed 31, 31.5, 30.5: mean 31, SD 0.5 (ddof 1), min 30.5, max 31.5
    assert (r["n_seeds"], r["seeds"], r["values"]) == ("3", "0;1;2", "31.0;31.5;30.5")
    assert r["runs"] == "m-l1-x4;m-l1-x4-s1;m-l1-x4-s2"
    stats = [float(r[k]) for k in ("mean", "sd", "min", "max")]
    assert stats == pytest.approx([31, 0.5, 30.5, 31.5])
    f = next(r for r in rows if (r["loss"], r["metric"]) == ("sgl", "fid"))
    assert [float(f[k]) for k in ("mean", "sd")] == pytest.approx([9.0, 1.0])


def test_paired_psnr_is_an_effect_beyond_the_seed_spread(pipeline: Path) -> None:
    _, _, paired = summarize(load_config(pipeline / "params.yaml"))
    rows = _rows(paired)
    assert list(rows[0]) == list(PAIRED_COLUMNS)
    assert [(r["metric"], r["baseline"], r["candidate"]) for r in rows] == [
        (m, "m-l1-x4", "m-sgl-x4") for m in ("psnr", "gmsd", "fid")
    ]
    r = rows[0]
    # per-seed differences of set means: 32 - 31, 32.5 - 31.5, 32.5 - 30.5 = 1, 1, 2
    assert r["seed_diffs"] == "1.0;1.0;2.0" and (r["n_seeds"], r["seeds"]) == ("3", "0;1;2")
    # their mean 4/3 equals the mean over images of the seed-averaged differences
    assert float(r["mean_diff"]) == pytest.approx(4 / 3)
    # baseline set means 31, 31.5, 30.5: SD 0.5, range 1.0
    assert (float(r["baseline_seed_sd"]), float(r["baseline_seed_range"])) == (0.5, 1.0)
    # per-image values averaged over seeds: baseline 30, 32; candidate 31.1667, 33.5
    assert float(r["baseline_mean"]) == pytest.approx(31.0)
    assert float(r["candidate_mean"]) == pytest.approx((31 + 31.5 + 31 + 33 + 33.5 + 34) / 6)
    # image diffs 7/6 and 1.5: every bootstrap mean lies between them
    assert 7 / 6 - 1e-12 <= float(r["ci_low"]) <= float(r["ci_high"]) <= 1.5 + 1e-12
    assert (r["n"], r["excluded"], r["resamples"]) == ("2", "0", "200")


def test_seed_interval_uses_the_t_quantile_of_the_ci_level(pipeline: Path) -> None:
    _, _, paired = summarize(load_config(pipeline / "params.yaml"))
    r = _rows(paired)[0]
    # evaluate.ci = 0.5: t quantile 0.75 with 2 df = 1/sqrt(1.5); SD of (1, 1, 2) = sqrt(1/3)
    t_75 = 0.8164965809277261
    half = t_75 * math.sqrt(1 / 3) / math.sqrt(3)
    assert float(r["seed_ci_low"]) == pytest.approx(4 / 3 - half)
    assert float(r["seed_ci_high"]) == pytest.approx(4 / 3 + half)
    # interval [1.06, 1.61] excludes 0 and |4/3| > range 1.0: an effect, in the good direction
    assert (r["exceeds_seed_spread"], r["effect"]) == ("True", "better")


def test_a_consistent_difference_inside_the_seed_spread_is_no_effect(pipeline: Path) -> None:
    _, _, paired = summarize(load_config(pipeline / "params.yaml"))
    g = _rows(paired)[1]
    # gmsd (lower is better): every seed +0.01, so the t interval is [0.01, 0.01] (excludes 0)
    # but the baseline's seeds span 0.08..0.12 (range 0.04) > 0.01: not beyond the noise
    assert g["higher_is_better"] == "False"
    assert float(g["mean_diff"]) == pytest.approx(0.01)
    assert float(g["seed_ci_low"]) == pytest.approx(0.01) and float(g["baseline_seed_range"]) == (
        pytest.approx(0.04)
    )
    assert (g["exceeds_seed_spread"], g["effect"]) == ("False", "none")


def test_paired_fid_uses_the_same_resamples_of_every_run(pipeline: Path) -> None:
    _, _, paired = summarize(load_config(pipeline / "params.yaml"))
    f = _rows(paired)[2]
    # per seed FID differences: 8 - 10, 9 - 12, 10 - 11 = -2, -3, -1
    assert f["seed_diffs"] == "-2.0;-3.0;-1.0" and float(f["mean_diff"]) == -2.0
    assert (float(f["baseline_mean"]), float(f["candidate_mean"])) == (11.0, 9.0)
    # resample by resample, averaged over seeds:
    #   r0: (-2 - 3 - 1)/3 = -2;   r1: (-2 - 3.5 + 1)/3 = -1.5
    #   r2: (-0.5 - 3 - 3)/3 = -13/6;   r3: (-5 - 2.5 - 2)/3 = -19/6
    diffs = np.array([-2.0, -1.5, -13 / 6, -19 / 6])
    assert float(f["ci_low"]) == pytest.approx(np.quantile(diffs, 0.25))
    assert float(f["ci_high"]) == pytest.approx(np.quantile(diffs, 0.75))
    assert (f["n"], f["resamples"]) == ("2", "4")
    # seed SD 1 -> t interval -2 -+ 0.8165 / sqrt(3) excludes 0, but the baseline's FIDs span
    # 10..12 (range 2) and |-2| is not larger: no effect
    assert (f["exceeds_seed_spread"], f["effect"]) == ("False", "none")


def test_images_not_finite_in_every_matched_run_are_left_out(pipeline: Path) -> None:
    per_image = pipeline / "results/metrics/m-l1-x4-s1/per_image.csv"
    per_image.write_text(per_image.read_text().replace("32.5", "inf"))
    _, _, paired = summarize(load_config(pipeline / "params.yaml"))
    r = _rows(paired)[0]
    # i1 is inf in one baseline seed: only i0 counts, in every seed
    assert (r["n"], r["excluded"]) == ("1", "1")
    # i0 differences per seed: 31 - 30, 31.5 - 30.5, 31 - 29.5 = 1, 1, 1.5
    assert r["seed_diffs"] == "1.0;1.0;1.5"


def test_one_seed_leaves_every_seed_statistic_undefined(pipeline: Path) -> None:
    raw = yaml.safe_load((pipeline / "params.yaml").read_text())
    raw["experiment"]["replicates"] = []
    (pipeline / "params.yaml").write_text(yaml.safe_dump(raw))
    summary, seeds, paired = summarize(load_config(pipeline / "params.yaml"))
    assert [r["run"] for r in _rows(summary)] == ["bicubic-x4", "m-l1-x4", "m-sgl-x4"]
    assert all(r["sd"] == "" and r["n_seeds"] == "1" for r in _rows(seeds))
    for r in _rows(paired):
        assert r["seed_diffs"] != "" and r["n_seeds"] == "1"
        for col in (
            "seed_ci_low",
            "seed_ci_high",
            "baseline_seed_sd",
            "baseline_seed_range",
            "exceeds_seed_spread",
            "effect",
        ):
            assert r[col] == "", col


def test_mismatched_fid_plans_are_refused(pipeline: Path) -> None:
    path = pipeline / "results/metrics/m-sgl-x4-s2/metrics_info.json"
    info = json.loads(path.read_text())
    info["sets"]["A"]["fid"]["plan_sha256"] = "other"
    path.write_text(json.dumps(info))
    with pytest.raises(ValueError, match=r"different resampling plans.*m-sgl-x4-s2"):
        summarize(load_config(pipeline / "params.yaml"))


def test_a_missing_replicate_is_named(pipeline: Path) -> None:
    (pipeline / "results/metrics/m-sgl-x4-s1/fid_bootstrap.csv").unlink()
    with pytest.raises(FileNotFoundError, match=r"m-sgl-x4-s1/fid_bootstrap\.csv"):
        summarize(load_config(pipeline / "params.yaml"))


def test_without_fid_resamples_the_fid_intervals_are_empty(pipeline: Path) -> None:
    for name in RUNS:
        folder = pipeline / "results/metrics" / name
        (folder / "fid_bootstrap.csv").write_text("set,resample,fid\n")
        info = json.loads((folder / "metrics_info.json").read_text())
        info["sets"]["A"]["fid"] = {"patches": 8, "bootstrap": 0}
        (folder / "metrics_info.json").write_text(json.dumps(info))
    summary, _, paired = summarize(load_config(pipeline / "params.yaml"))
    assert all(r["fid_ci_low"] == r["fid_ci_high"] == "" for r in _rows(summary))
    f = next(r for r in _rows(paired) if r["metric"] == "fid")
    assert (f["ci_low"], f["ci_high"], f["resamples"]) == ("", "", "0")
    assert float(f["mean_diff"]) == -2.0 and f["effect"] == "none"  # seed statistics still there
