"""A small synthetic pipeline folder for the report and notebook tests.

`build_fake_pipeline` writes every input the notebooks read, in the formats the stages write
(images via sgsr.imaging, dvclive TSVs, the declared CSV columns), in about a second.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pandas as pd

from sgsr.imaging import downscale, mod_crop, upscale_bicubic, write_image
from sgsr.metrics import psnr
from sgsr.runs import parse_run

REPO = Path(__file__).resolve().parents[1]
NOTEBOOKS = REPO / "notebooks"
MODEL = "tiny"
METRICS = ("psnr", "ssim", "ms_ssim", "gmsd", "haarpsi", "lpips")
HIGHER = {
    "psnr": True,
    "ssim": True,
    "ms_ssim": True,
    "gmsd": False,
    "haarpsi": True,
    "lpips": False,
}


def _scene(h: int, w: int, seed: int, channels: int = 3) -> np.ndarray:
    """A photo-like uint8 image: smooth shading, a sharp disc edge and fine stripes."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float64)
    base = 90 + 60 * np.sin(xx / 9 + seed) * np.cos(yy / 11)
    disc = ((yy - h / 2) ** 2 + (xx - w / 3) ** 2 < (h / 4) ** 2) * 70.0
    stripes = 25 * np.sign(np.sin(xx * 1.3 + yy * 0.4)) * (xx > w / 2)
    img = base + disc + stripes
    chans = [img + rng.normal(0, 3, img.shape) + 15 * c for c in range(channels)]
    return np.clip(np.stack(chans, -1), 0, 255).round().astype(np.uint8)


def _blend(a: np.ndarray, b: np.ndarray, t: float, rng: np.random.Generator) -> np.ndarray:
    out = (1 - t) * a.astype(np.float64) + t * b.astype(np.float64) + rng.normal(0, 2, a.shape)
    return np.clip(out, 0, 255).round().astype(np.uint8)


def build_fake_pipeline(
    root: Path, scale: int = 2, with_lpips: bool = False, replicates: tuple[int, ...] = ()
) -> dict:
    """A pipeline folder with prepared data, run cards, dvclive logs, SR outputs and CSVs.

    Two test sets (one with a grayscale image), a val split, runs bicubic/l1/sgl at ``scale``.
    LPIPS is left empty (as offline) unless ``with_lpips``. ``replicates`` adds summary rows
    (and summary_seeds.csv, paired seed columns) for those extra seeds of l1 and sgl.
    Returns the run names.
    """
    rng = np.random.default_rng(0)
    mark_pipeline(root)
    base = f"{MODEL}-l1-x{scale}"
    cand = f"{MODEL}-sgl-x{scale}"
    bic = f"bicubic-x{scale}"
    images = {"setA": [("alpha", 3), ("beta", 3)], "setB": [("gray", 1)], "val": [("v0", 3)]}
    per_image: dict[str, list[dict]] = {bic: [], base: [], cand: []}
    for set_name, items in images.items():
        for i, (stem, ch) in enumerate(items):
            hr = mod_crop(_scene(52 + 8 * i, 60, seed=i + len(set_name), channels=ch), scale)
            lr = downscale(hr, scale)
            prep = root / "data" / "prepared" / f"x{scale}" / set_name
            write_image(prep / "hr" / f"{stem}.png", hr)
            write_image(prep / "lr" / f"{stem}.png", lr)
            if set_name == "val":
                continue
            bicubic = upscale_bicubic(lr, scale)
            outs = {
                bic: bicubic,
                base: _blend(bicubic, hr, 0.45, rng),
                cand: _blend(bicubic, hr, 0.7, rng),
            }
            for run, sr in outs.items():
                write_image(root / "results" / "sr" / run / set_name / f"{stem}.png", sr)
                p = psnr(sr[scale:-scale, scale:-scale], hr[scale:-scale, scale:-scale], border=0)
                per_image[run].append(
                    {
                        "set": set_name,
                        "image": stem,
                        "scale": scale,
                        "psnr": p,
                        "ssim": 1 - 1 / p,
                        "ms_ssim": 1 - 0.8 / p,
                        "gmsd": 2 / p,
                        "haarpsi": 1 - 1.5 / p,
                        "lpips": 3 / p if with_lpips else math.nan,
                    }
                )
    meta = {
        "count": 120,
        "patch_size": 48,
        "scale": scale,
        "sources": [f"train_{i}.png" for i in range(5)],
    }
    (root / "data" / "prepared" / f"x{scale}" / "patches").mkdir(parents=True)
    (root / "data" / "prepared" / f"x{scale}" / "patches" / "meta.json").write_text(
        json.dumps(meta)
    )
    summary, paired = [], []
    for run, rows in per_image.items():
        df = pd.DataFrame(rows)
        mdir = root / "results" / "metrics" / run
        mdir.mkdir(parents=True)
        df.to_csv(mdir / "per_image.csv", index=False)
        info = parse_run(run)
        seeds = (None,) if info["model"] == "bicubic" else (0, *replicates)
        for seed in seeds:
            for set_name, sub in df.groupby("set"):
                shift = 0.0 if not seed else 0.3 * math.sin(seed + len(run))  # seed noise
                summary.append(
                    {
                        "run": run if not seed else f"{run}-s{seed}",
                        "model": info["model"],
                        "loss": info["loss"],
                        "scale": scale,
                        "seed": seed,
                        "set": set_name,
                        "n_images": len(sub),
                        **{m: sub[m].mean() + (shift if m == "psnr" else 0.0) for m in METRICS},
                    }
                )
        sets = {
            name: {m: (float(sub[m].mean()) if sub[m].notna().any() else None) for m in METRICS}
            for name, sub in df.groupby("set")
        }
        (mdir / "metrics.json").write_text(json.dumps(sets))
        unavailable = {} if with_lpips else {"lpips": "alexnet weights absent (offline)"}
        doc = {"run": run, "scale": scale, "sets": {}, "unavailable": unavailable}
        (mdir / "metrics_info.json").write_text(json.dumps(doc))
    a = pd.DataFrame(per_image[base]).set_index(["set", "image"])
    b = pd.DataFrame(per_image[cand]).set_index(["set", "image"])
    for set_name in ("setA", "setB"):
        for m in METRICS:
            d = (b.loc[set_name, m] - a.loc[set_name, m]).to_numpy()
            mean = float(d.mean())
            # haarpsi straddles zero, so the forest plot has an inconclusive row too
            half = float(d.std() + (1.5 if m == "haarpsi" else 0.05) * abs(mean))
            paired.append(
                {
                    "set": set_name,
                    "scale": scale,
                    "model": MODEL,
                    "baseline": base,
                    "candidate": cand,
                    "metric": m,
                    "mean_diff": mean,
                    "ci_low": mean - half,
                    "ci_high": mean + half,
                    "n": len(d),
                    "higher_is_better": HIGHER[m],
                }
            )
    summary_df = pd.DataFrame(summary)
    if replicates:
        spread = []
        trained = summary_df[summary_df["model"] != "bicubic"]
        for (loss, set_name), sub in trained.groupby(["loss", "set"], sort=False):
            for m in METRICS:
                if sub[m].notna().any():
                    v = sub[m].to_numpy(float)
                    spread.append(
                        {"model": MODEL, "loss": loss, "scale": scale, "set": set_name,
                         "metric": m, "n_seeds": len(v), "mean": v.mean(), "sd": v.std(ddof=1)}
                    )  # fmt: skip
        pd.DataFrame(spread).to_csv(root / "results" / "summary_seeds.csv", index=False)
        for row in paired:
            row.update(n_seeds=1 + len(replicates), seed_ci_low=row["ci_low"] * 2,
                       seed_ci_high=row["ci_high"] * 2, baseline_seed_range=0.2,
                       effect="better" if row["metric"] == "psnr" else "none")  # fmt: skip
    summary_df.to_csv(root / "results" / "summary.csv", index=False)
    pd.DataFrame(paired).to_csv(root / "results" / "paired.csv", index=False)
    for run, loss in (
        (base, {"l1": 1.0}),
        (cand, {"l1": 1.0, "sgl": {"weight": 0.1, "operator": "laplacian"}}),
    ):
        card = {
            "run": run,
            "arch": "edsr_baseline",
            "model_kwargs": {"n_feats": 8},
            "scale": scale,
            "loss": run.split("-")[1],
            "loss_spec": loss,
            "iterations": 30,
            "wall_time_s": 4.2,
        }
        (root / "models" / run).mkdir(parents=True)
        (root / "models" / run / "run.json").write_text(json.dumps(card))
        metrics = root / "models" / "live" / run / "plots" / "metrics"
        series = {
            "train/l1": [0.2 / (s + 1) for s in range(30)],
            "train/total": [0.25 / (s + 1) for s in range(30)],
            "train/lr": [5e-4] * 20 + [2.5e-4] * 10,  # where sgsr.train logs it
            "images_per_s": [40.0 + s % 3 for s in range(30)],
        }
        if "sgl" in loss:
            series["train/sgl"] = [0.5 / (s + 1) for s in range(30)]
        for name, values in series.items():
            _tsv(metrics / f"{name}.tsv", name.rsplit("/", 1)[-1], range(30), values)
        _tsv(metrics / "val" / "psnr.tsv", "psnr", (9, 19, 29), (24.0, 25.5, 26.1))
        (metrics.parent.parent / "metrics.json").write_text(
            json.dumps({"train": {"l1": 0.01}, "val": {"psnr": 26.1}, "step": 29})
        )
    return {"baseline": base, "candidate": cand, "bicubic": bic, "scale": scale}


def mark_pipeline(root: Path) -> Path:
    """What makes a folder a pipeline for the notebooks' walk up: dvc.yaml and params.yaml."""
    root.mkdir(parents=True, exist_ok=True)
    (root / "dvc.yaml").write_text("stages: {}\n")
    (root / "params.yaml").write_text("seed: 0\n")
    return root


def _tsv(path: Path, column: str, steps, values) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    lines = [f"step\t{column}"] + [f"{s}\t{v}" for s, v in zip(steps, values, strict=True)]
    path.write_text("\n".join(lines) + "\n")
