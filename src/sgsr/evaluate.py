"""Score SR images against HR under the benchmark protocol, and summarise runs.

- `run(cfg, run)`: the pipeline stage; writes ``results/metrics/<run>/per_image.csv`` and
  ``metrics.json`` (a DVC metrics file: valid JSON, numbers or null).
- `summarize(cfg)`: ``results/summary.csv`` (one row per run x set) and ``results/paired.csv``
  (per-image differences between runs that differ only in their loss, with bootstrap CIs).
- `score_folders(sr_dir, hr_dir, scale)`: any folder pair, matched by file stem (``sgsr evaluate
  --sr --hr --scale``).

JSON outputs write a non-finite value as null: PSNR of identical images is infinite, so a null
PSNR means "identical" (PSNR is never unavailable); CSV files write ``inf``. A metric whose
weights are missing is null everywhere and listed under ``unavailable`` with the reason.
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from sgsr import layout
from sgsr.config import DEFAULT_MAX_PIXELS, Config
from sgsr.fsutil import write_text
from sgsr.imaging import list_images, read_image
from sgsr.infer import bicubic_scale, resolve_device
from sgsr.metrics import (
    LPIPS_NOTE,
    METRICS,
    check_metric_names,
    fid_features,
    frechet_distance,
    load_backbones,
)
from sgsr.stats import paired_bootstrap

PER_IMAGE_KEYS = ("set", "image", "scale")
SUMMARY_KEYS = ("run", "model", "loss", "scale", "set", "n_images")
PAIRED_COLUMNS = (
    "model",
    "scale",
    "set",
    "metric",
    "higher_is_better",
    "baseline",
    "candidate",
    "n",
    "baseline_mean",
    "candidate_mean",
    "mean_diff",
    "ci_low",
    "ci_high",
    "ci",
    "resamples",
    "excluded",
)


def metric_notes(metrics: Iterable[str], fid_patch: int) -> dict[str, str]:
    """Short per-metric notes (they show up as columns in ``dvc metrics show``; the full
    protocol is docs/evaluation.md). Every metric sees the image with `scale` px cropped."""
    notes = {
        "psnr": "dB, Y BT.601 rounded (gray: own channel); null = identical (inf)",
        "ssim": "Y, Gaussian 11x11 sigma 1.5, valid window",
        "ms_ssim": "piq, RGB [0,1]",
        "gmsd": "piq, RGB [0,1], lower is better",
        "haarpsi": "piq, RGB [0,1]",
        "lpips": LPIPS_NOTE,
        "fid": f"pytorch-fid InceptionV3 over {fid_patch}x{fid_patch} patches",
    }
    return {m: notes[m] for m in metrics if m in notes}


def _finite_or_none(value: float | None) -> float | None:
    return None if value is None or not math.isfinite(value) else float(value)


def _csv_value(value: float | None) -> str:
    if value is None:
        return ""
    return "inf" if value == math.inf else repr(float(value))


# --------------------------------------------------------------------------------------------
# scoring one folder pair
# --------------------------------------------------------------------------------------------
def pair_files(
    sr_dir: str | os.PathLike[str], hr_dir: str | os.PathLike[str]
) -> list[tuple[str, Path, Path]]:
    """(stem, SR path, HR path) for every HR image; a missing or extra SR image is an error."""
    sr_dir, hr_dir = Path(sr_dir), Path(hr_dir)

    def by_stem(files: list[Path]) -> dict[str, Path]:
        out: dict[str, Path] = {}
        for p in files:
            if p.stem in out:
                raise ValueError(f"{p}: two images share the stem {p.stem!r} ({out[p.stem].name})")
            out[p.stem] = p
        return out

    hr = by_stem(list_images(hr_dir))
    if not hr:
        raise FileNotFoundError(f"{hr_dir} holds no HR images")
    sr = by_stem(list_images(sr_dir))
    for stem, path in hr.items():
        if stem not in sr:
            raise FileNotFoundError(
                f"no SR image for {path} (expected {sr_dir / (stem + '.png')}); run inference "
                "for every HR image"
            )
    for stem, path in sr.items():
        if stem not in hr:
            raise FileNotFoundError(f"{path}: no HR image with stem {stem!r} in {hr_dir}")
    return [(stem, sr[stem], hr[stem]) for stem in sorted(hr)]


@dataclass
class SetScore:
    """Scores of one folder pair: per-image floats (inf kept) and the set values."""

    images: list[dict[str, Any]] = field(default_factory=list)
    mean: dict[str, float | None] = field(default_factory=dict)


class Scorer:
    """Holds the metric networks so that several sets are scored with one load."""

    def __init__(
        self,
        metrics: Sequence[str] = ("psnr", "ssim"),
        pretrained: str | os.PathLike[str] | None = None,
        fid_patch: int = 64,
        device: str = "auto",
        nets: dict[str, Any] | None = None,
        max_pixels: int | None = DEFAULT_MAX_PIXELS,
    ) -> None:
        self.metrics = check_metric_names(metrics)
        self.max_pixels = max_pixels  # images declaring more are refused before decoding
        if fid_patch < 1:
            raise ValueError(f"fid_patch must be a positive integer, got {fid_patch}")
        self.fid_patch = fid_patch
        if nets is None:
            nets, unavailable = load_backbones(self.metrics, pretrained, resolve_device(device))
        else:  # injected (tests, benchmarks): metrics without a net are unavailable
            unavailable = {
                m: "no network given" for m in self.metrics if METRICS[m].backbone and m not in nets
            }
        self.nets = nets
        self.unavailable = unavailable

    @property
    def image_metrics(self) -> tuple[str, ...]:
        return tuple(m for m in self.metrics if METRICS[m].scope == "image")

    def score(
        self,
        sr_dir: str | os.PathLike[str],
        hr_dir: str | os.PathLike[str],
        scale: int,
        border: int | None = None,
    ) -> SetScore:
        """Score every pair; `border` px (default: `scale`, the protocol) cropped per side."""
        from tqdm import tqdm

        border = scale if border is None else border

        pairs = pair_files(sr_dir, hr_dir)
        result = SetScore()
        use_fid = "fid" in self.metrics and "fid" not in self.unavailable
        sr_feats, hr_feats = [], []
        for stem, sr_path, hr_path in tqdm(pairs, desc=f"score {Path(sr_dir).name}", leave=False):
            sr = read_image(sr_path, max_pixels=self.max_pixels)
            hr = read_image(hr_path, max_pixels=self.max_pixels)
            if sr.shape != hr.shape:
                raise ValueError(
                    f"{sr_path}: size {sr.shape[1]}x{sr.shape[0]}x{sr.shape[2]} differs from "
                    f"HR {hr_path} {hr.shape[1]}x{hr.shape[0]}x{hr.shape[2]} (W x H x C)"
                )
            row: dict[str, Any] = {"image": stem}
            for name in self.image_metrics:
                if name in self.unavailable:
                    row[name] = None
                    continue
                metric = METRICS[name]
                try:
                    if metric.backbone:
                        row[name] = metric(sr, hr, border, self.nets[name])
                    else:
                        row[name] = metric(sr, hr, border)
                except ValueError as exc:
                    raise ValueError(f"{sr_path}: {name}: {exc}") from exc
            if use_fid:
                sr_feats.append(fid_features([sr], border, self.fid_patch, self.nets["fid"]))
                hr_feats.append(fid_features([hr], border, self.fid_patch, self.nets["fid"]))
            result.images.append(row)
        for name in self.image_metrics:
            values = [r[name] for r in result.images if r[name] is not None]
            result.mean[name] = float(np.mean(values)) if values else None
        if "fid" in self.metrics:
            result.mean["fid"] = None
            if use_fid:
                feats_sr = np.concatenate([f for f in sr_feats if f.size] or [np.zeros((0, 1))])
                feats_hr = np.concatenate([f for f in hr_feats if f.size] or [np.zeros((0, 1))])
                try:
                    result.mean["fid"] = frechet_distance(feats_sr, feats_hr)
                except ValueError as exc:
                    raise ValueError(
                        f"{sr_dir}: FID over {self.fid_patch}px patches: {exc} (use a smaller "
                        "evaluate.fid_patch or drop fid)"
                    ) from exc
        return result


def _as_json(
    score: SetScore, scorer: Scorer, scale: int, sr_dir: Path, hr_dir: Path, border: int
) -> dict:
    return {
        "sr": str(sr_dir),
        "hr": str(hr_dir),
        "scale": scale,
        "border": border,
        "metrics": list(scorer.metrics),
        "n_images": len(score.images),
        "mean": {k: _finite_or_none(v) for k, v in score.mean.items()},
        "images": [
            {k: (v if k == "image" else _finite_or_none(v)) for k, v in row.items()}
            for row in score.images
        ],
        "unavailable": dict(scorer.unavailable),
        "notes": metric_notes(scorer.metrics, scorer.fid_patch),
    }


def score_folders(
    sr_dir: str | os.PathLike[str],
    hr_dir: str | os.PathLike[str],
    scale: int,
    metrics: Sequence[str] = ("psnr", "ssim"),
    pretrained: str | os.PathLike[str] | None = None,
    fid_patch: int = 64,
    device: str = "auto",
    max_pixels: int | None = DEFAULT_MAX_PIXELS,
    border: int | None = None,
) -> dict:
    """Score every SR image against the HR image with the same stem; `border` px (default:
    `scale`, the protocol) cropped from every side.

    Returns JSON-ready ``{"sr", "hr", "scale", "metrics", "n_images", "mean": {metric: value},
    "images": [{"image": stem, metric: value}], "unavailable": {metric: reason}, "notes"}``.
    ``mean`` holds per-image means plus the set-level FID. Non-finite values are null (a null
    PSNR means identical images). Missing, extra or size-mismatched images raise an error
    naming the file.
    """
    if not isinstance(scale, int) or scale < 1:
        raise ValueError(f"scale must be a positive integer, got {scale!r}")
    border = scale if border is None else border
    if not isinstance(border, int) or border < 0:
        raise ValueError(f"border must be an integer >= 0, got {border!r}")
    scorer = Scorer(metrics, pretrained, fid_patch, device, max_pixels=max_pixels)
    score = scorer.score(sr_dir, hr_dir, scale, border)
    return _as_json(score, scorer, scale, Path(sr_dir), Path(hr_dir), border)


def format_table(result: dict) -> str:
    """A fixed-width table of `score_folders` output: one row per image, then the mean."""
    metrics = [m for m in result["metrics"] if METRICS[m].scope == "image"]
    unavailable = result.get("unavailable", {})

    def fmt(name: str, value: float | None) -> str:
        if value is None:
            return "inf" if name == "psnr" and name not in unavailable else "n/a"
        return f"{value:.4f}"

    header = ["image", *metrics]
    rows = [[r["image"], *(fmt(m, r.get(m)) for m in metrics)] for r in result["images"]]
    rows.append([f"mean ({result['n_images']})", *(fmt(m, result["mean"].get(m)) for m in metrics)])
    widths = [max(len(str(row[i])) for row in [header, *rows]) for i in range(len(header))]
    lines = [
        "  ".join(
            str(c).ljust(w) if i == 0 else str(c).rjust(w)
            for i, (c, w) in enumerate(zip(row, widths, strict=True))
        )
        for row in [header, *rows]
    ]
    lines.insert(1, "-" * len(lines[0]))
    lines.insert(-1, "-" * len(lines[0]))
    if "fid" in result["metrics"]:
        lines.append(f"fid (set-level): {fmt('fid', result['mean'].get('fid'))}")
    border = result.get("border", result["scale"])
    lines.append(f"scale {result['scale']}: {border} px border cropped; Y channel for PSNR/SSIM")
    for name, reason in unavailable.items():
        lines.append(f"{name}: unavailable ({reason})")
    return "\n".join(lines)


# --------------------------------------------------------------------------------------------
# the pipeline stage
# --------------------------------------------------------------------------------------------
def _base(cfg: Config) -> Path:
    return Path(cfg.source_path).parent


def _run_identity(cfg: Config, run_name: str) -> tuple[str, str | None, int]:
    """(model, loss, scale) of a run or of the ``bicubic-x<s>`` baseline."""
    scale = bicubic_scale(run_name)
    if scale is not None:
        return "bicubic", None, scale
    run = cfg.run(run_name)
    return run.model, run.loss, run.scale


def run(cfg: Config, run_name: str) -> dict:
    """Score ``results/sr/<run>/<set>`` for every test set; write per_image.csv and
    metrics.json under ``results/metrics/<run>/``. Returns the metrics.json content."""
    base = _base(cfg)
    model, loss, scale = _run_identity(cfg, run_name)
    ev = cfg.evaluate
    scorer = Scorer(
        ev.metrics,
        base / layout.PRETRAINED,
        ev.fid_patch,
        cfg.infer.device,
        max_pixels=cfg.data.max_pixels,
    )
    sets: dict[str, dict[str, Any]] = {}
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow([*PER_IMAGE_KEYS, *scorer.image_metrics])
    for set_name in cfg.data.test_sets:
        score = scorer.score(
            base / layout.sr_set(run_name, set_name),
            base / layout.prepared_set(scale, set_name) / "hr",
            scale,
        )
        for row in score.images:
            writer.writerow(
                [set_name, row["image"], scale, *(_csv_value(row[m]) for m in scorer.image_metrics)]
            )
        entry: dict[str, Any] = {m: _finite_or_none(v) for m, v in score.mean.items()}
        entry["n_images"] = len(score.images)
        sets[set_name] = entry
    out = {
        "run": run_name,
        "model": model,
        "loss": loss,
        "scale": scale,
        "fid_patch": ev.fid_patch,
        "sets": sets,
        "unavailable": dict(scorer.unavailable),
        "notes": metric_notes(scorer.metrics, ev.fid_patch),
    }
    folder = base / layout.metrics_dir(run_name)
    write_text(folder / "per_image.csv", buf.getvalue())
    write_text(folder / "metrics.json", json.dumps(out, indent=2, allow_nan=False) + "\n")
    return out


# --------------------------------------------------------------------------------------------
# summary and paired statistics
# --------------------------------------------------------------------------------------------
def _read_json(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise ValueError(f"{path}: not valid JSON ({exc}); rerun sgsr evaluate") from exc


def _read_per_image(path: Path) -> dict[tuple[str, str], dict[str, float | None]]:
    """{(set, image): {metric: float or None}} from a per_image.csv."""
    with open(path, newline="") as fh:
        rows = list(csv.DictReader(fh))
    out = {}
    for row in rows:
        values = {
            k: (float(v) if v not in ("", None) else None)
            for k, v in row.items()
            if k not in PER_IMAGE_KEYS
        }
        out[(row["set"], row["image"])] = values
    return out


def summary_runs(cfg: Config) -> list[str]:
    """Runs a summary covers: every bicubic-x<s> baseline, then cfg.runs in order."""
    scales = sorted({r.scale for r in cfg.runs})
    return [layout.bicubic_run(s) for s in scales] + [r.name for r in cfg.runs]


def summarize(cfg: Config) -> tuple[Path, Path]:
    """Write results/summary.csv and results/paired.csv; returns their paths.

    Every run of the experiment (and its bicubic baseline) must have been evaluated: a missing
    metrics file is an error listing each missing file.
    """
    base = _base(cfg)
    names = summary_runs(cfg)
    missing = [
        str(base / layout.metrics_dir(n) / f)
        for n in names
        for f in ("metrics.json", "per_image.csv")
        if not (base / layout.metrics_dir(n) / f).is_file()
    ]
    if missing:
        raise FileNotFoundError(
            "summarize needs every run evaluated; missing: "
            + ", ".join(missing)
            + " (run sgsr evaluate --run <run>, or dvc repro)"
        )
    docs = {n: _read_json(base / layout.metrics_dir(n) / "metrics.json") for n in names}
    metrics = list(cfg.evaluate.metrics)
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow([*SUMMARY_KEYS, *metrics])
    for name in names:
        doc = docs[name]
        unavailable = doc.get("unavailable", {})
        for set_name in cfg.data.test_sets:
            entry = doc.get("sets", {}).get(set_name)
            if entry is None:
                raise ValueError(
                    f"{base / layout.metrics_dir(name) / 'metrics.json'}: no set {set_name!r}; "
                    "rerun sgsr evaluate for this run"
                )
            values = []
            for m in metrics:
                v = entry.get(m)
                if v is None and m == "psnr" and m in entry and m not in unavailable:
                    values.append("inf")
                else:
                    values.append(_csv_value(v))
            writer.writerow(
                [
                    name,
                    doc.get("model"),
                    doc.get("loss") or "",
                    doc.get("scale"),
                    set_name,
                    entry.get("n_images"),
                    *values,
                ]
            )
    summary = base / layout.SUMMARY_CSV
    write_text(summary, buf.getvalue())
    paired = base / layout.PAIRED_CSV
    write_text(paired, _paired_csv(cfg, base, docs))
    return summary, paired


def _paired_csv(cfg: Config, base: Path, docs: dict[str, dict]) -> str:
    losses = list(dict.fromkeys(r.loss for r in cfg.runs))
    image_metrics = [m for m in cfg.evaluate.metrics if METRICS[m].scope == "image"]
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(PAIRED_COLUMNS)
    baseline_loss = losses[0] if losses else None
    for run in cfg.runs:
        if run.loss == baseline_loss:
            continue
        base_name = run.sibling(baseline_loss)
        files = {n: base / layout.metrics_dir(n) / "per_image.csv" for n in (base_name, run.name)}
        rows_b, rows_c = _read_per_image(files[base_name]), _read_per_image(files[run.name])
        if set(rows_b) != set(rows_c):
            only = sorted(set(rows_b) ^ set(rows_c))[:3]
            raise ValueError(
                f"{files[run.name]} and {files[base_name]} cover different images (e.g. {only}); "
                "re-run infer and evaluate for both"
            )
        skip = set(docs[base_name].get("unavailable", {})) | set(
            docs[run.name].get("unavailable", {})
        )
        for set_name in cfg.data.test_sets:
            keys = sorted(k for k in rows_b if k[0] == set_name)
            for m in image_metrics:
                if m in skip:
                    continue
                b = np.array([_num(rows_b[k].get(m)) for k in keys])
                c = np.array([_num(rows_c[k].get(m)) for k in keys])
                ok = np.isfinite(b) & np.isfinite(c)
                n = int(ok.sum())
                if n == 0:
                    continue
                mean, low, high = paired_bootstrap(
                    c[ok] - b[ok], cfg.evaluate.bootstrap, cfg.evaluate.ci, cfg.seed
                )
                writer.writerow(
                    [
                        run.model,
                        run.scale,
                        set_name,
                        m,
                        METRICS[m].higher_is_better,
                        base_name,
                        run.name,
                        n,
                        repr(float(b[ok].mean())),
                        repr(float(c[ok].mean())),
                        repr(mean),
                        repr(low),
                        repr(high),
                        cfg.evaluate.ci,
                        cfg.evaluate.bootstrap,
                        len(keys) - n,
                    ]
                )
    return buf.getvalue()


def _num(value: float | None) -> float:
    return math.nan if value is None else float(value)
