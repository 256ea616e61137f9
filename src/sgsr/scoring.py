"""Score SR images against HR under the benchmark protocol (docs/evaluation.md).

- :class:`Scorer` holds the metric networks and scores one folder pair (SR vs HR, matched by
  file stem) into a :class:`SetScore`: per-image values, set means with the reason for any
  non-finite one, and FID features of the same patches for both sides.
- :func:`score_folders` / :func:`format_table`: any folder pair as JSON or a table (``sgsr
  evaluate --sr --hr --scale``). The pipeline stage writing ``results/metrics/<run>/`` is
  `sgsr.evaluate`.

Identical and undefined are never confused: PSNR of identical images is ``inf``; a value that
cannot be computed (e.g. no pixel left after the border crop) is ``nan`` with its reason. CSV
files write ``inf`` / ``nan`` and leave an unavailable metric (weights missing) empty; JSON has
neither, so it writes null for all three and says which and why beside the numbers.
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from sgsr.config import DEFAULT_MAX_PIXELS
from sgsr.devices import resolve_device
from sgsr.fsutil import sha256sum
from sgsr.imaging import list_images, read_image
from sgsr.metric_registry import REGISTRY, check_metric_names
from sgsr.metrics import (
    METRICS,
    fid_patch_features,
    fid_patches,
    frechet_distance,
    load_backbones,
)

#: Batch of patches per InceptionV3 call (batches of 4 are ~1.7x slower per patch on a CPU).
FID_BATCH = 32


def metric_notes(
    metrics: Iterable[str], fid_patch: int, fid_patches_per_image: int = 0
) -> dict[str, str]:
    """Short per-metric notes (metrics_info.json; the full protocol is docs/evaluation.md).
    Every metric sees the image with `scale` px cropped."""
    per_image = (
        f"up to {fid_patches_per_image} seeded per image"
        if fid_patches_per_image
        else "all non-overlapping"
    )
    return {
        m: REGISTRY[m].note.format(patch=fid_patch, per_image=per_image)
        for m in metrics
        if m in REGISTRY
    }


def finite_or_none(value: float | None) -> float | None:
    return None if value is None or not math.isfinite(value) else float(value)


def csv_value(value: float | None) -> str:
    """'' = unavailable, 'inf' / '-inf' / 'nan' as such, else the float's repr."""
    if value is None:
        return ""
    value = float(value)
    if math.isnan(value):
        return "nan"
    if math.isinf(value):
        return "inf" if value > 0 else "-inf"
    return repr(value)


def nonfinite_label(value: float | None) -> str | None:
    """'inf', '-inf' or 'nan' for a non-finite float, else None."""
    if value is None or math.isfinite(value):
        return None
    return "nan" if math.isnan(value) else ("inf" if value > 0 else "-inf")


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
    """Scores of one folder pair.

    - images: ``{"image": stem, metric: float}`` per image (inf/nan kept; None = unavailable);
    - mean: per-image means (inf if an image is identical, nan if one is undefined) and FID;
    - why: ``{metric: reason}`` for every non-finite mean (which images, and why);
    - fid_sr / fid_hr: FID features (n_patches, dims) of the same patches, fid_groups the
      image index of each row (for the bootstrap over images); None without FID.
    """

    images: list[dict[str, Any]] = field(default_factory=list)
    mean: dict[str, float | None] = field(default_factory=dict)
    why: dict[str, str] = field(default_factory=dict)
    fid_sr: np.ndarray | None = None
    fid_hr: np.ndarray | None = None
    fid_groups: np.ndarray | None = None

    @property
    def stems(self) -> list[str]:
        return [r["image"] for r in self.images]


def _undefined_reason(metric: str, shape: tuple[int, ...], border: int) -> str:
    h, w = shape[:2]
    if h <= 2 * border or w <= 2 * border:
        return f"{w}x{h} px, nothing left after the {border} px border crop"
    return f"{metric} is undefined (NaN) on this image"


def _set_means(images: list[dict[str, Any]], names: Sequence[str]) -> tuple[dict, dict]:
    """Per-metric means over images and a reason for each non-finite one."""
    mean: dict[str, float | None] = {}
    why: dict[str, str] = {}
    for name in names:
        values = [r[name] for r in images]
        if not values or any(v is None for v in values):
            mean[name] = None
            continue
        arr = np.asarray(values, np.float64)
        nan = [r["image"] for r in images if math.isnan(r[name])]
        if nan:  # never averaged over a subset, never taken for "identical"
            mean[name] = math.nan
            reasons = [f"{r['image']}: {r['_why'][name]}" for r in images if name in r["_why"]]
            why[name] = (
                f"undefined for {len(nan)} of {len(values)} images ("
                + "; ".join(reasons[:5])
                + (", ..." if len(reasons) > 5 else "")
                + ")"
            )
            continue
        mean[name] = float(arr.mean())
        if math.isinf(mean[name]):
            inf = [r["image"] for r in images if math.isinf(r[name])]
            why[name] = f"infinite for {len(inf)} of {len(values)} images (identical to HR: " + (
                ", ".join(inf[:5]) + (", ..." if len(inf) > 5 else "") + ")"
            )
    return mean, why


class Scorer:
    """Holds the metric networks so that several sets are scored with one load.

    ``fid_patches_per_image`` caps the patches each image gives FID (0 = all; see
    `sgsr.metrics.patch_cells`); ``feature_cache`` (a `sgsr.fid.FeatureCache`) keeps the HR
    side's features so that every run of a pipeline computes them once.
    """

    def __init__(
        self,
        metrics: Sequence[str] = ("psnr", "ssim"),
        pretrained: str | os.PathLike[str] | None = None,
        fid_patch: int = 64,
        device: str = "auto",
        nets: dict[str, Any] | None = None,
        fid_patches_per_image: int = 0,
        feature_cache: Any = None,
        max_pixels: int | None = DEFAULT_MAX_PIXELS,
    ) -> None:
        self.metrics = check_metric_names(metrics)
        self.max_pixels = max_pixels  # images declaring more are refused before decoding
        if fid_patch < 1:
            raise ValueError(f"fid_patch must be a positive integer, got {fid_patch}")
        if fid_patches_per_image < 0:
            raise ValueError(
                f"fid_patches_per_image must be >= 0 (0 = all), got {fid_patches_per_image}"
            )
        self.fid_patch = fid_patch
        self.fid_patches_per_image = fid_patches_per_image
        self.feature_cache = feature_cache
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

    @property
    def use_fid(self) -> bool:
        return "fid" in self.metrics and "fid" not in self.unavailable

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
        fid = _FidCollector(self, border) if self.use_fid else None
        for i, (stem, sr_path, hr_path) in enumerate(
            tqdm(pairs, desc=f"score {Path(sr_dir).name}", leave=False)
        ):
            sr = read_image(sr_path, max_pixels=self.max_pixels)
            hr = read_image(hr_path, max_pixels=self.max_pixels)
            if sr.shape != hr.shape:
                raise ValueError(
                    f"{sr_path}: size {sr.shape[1]}x{sr.shape[0]}x{sr.shape[2]} differs from "
                    f"HR {hr_path} {hr.shape[1]}x{hr.shape[0]}x{hr.shape[2]} (W x H x C)"
                )
            row: dict[str, Any] = {"image": stem, "_why": {}}
            empty = min(sr.shape[:2]) <= 2 * border  # nothing left after the border crop
            for name in self.image_metrics:
                if name in self.unavailable:
                    row[name] = None
                    continue
                if empty:
                    row[name] = math.nan
                    row["_why"][name] = _undefined_reason(name, sr.shape, border)
                    continue
                metric = METRICS[name]
                try:
                    if metric.backbone:
                        value = metric(sr, hr, border, self.nets[name])
                    else:
                        value = metric(sr, hr, border)
                except ValueError as exc:
                    raise ValueError(f"{sr_path}: {name}: {exc}") from exc
                row[name] = float(value)
                if math.isnan(row[name]):
                    row["_why"][name] = _undefined_reason(name, sr.shape, border)
            if fid is not None:
                fid.add(i, stem, sr, hr, hr_path)
            result.images.append(row)
        result.mean, result.why = _set_means(result.images, self.image_metrics)
        if "fid" in self.metrics:
            result.mean["fid"] = None
            if fid is not None:
                result.fid_sr, result.fid_hr, result.fid_groups = fid.finish()
                try:
                    result.mean["fid"] = frechet_distance(result.fid_sr, result.fid_hr)
                except ValueError as exc:
                    raise ValueError(
                        f"{sr_dir}: FID over {self.fid_patch}px patches: {exc} (use a smaller "
                        "evaluate.fid_patch or drop fid)"
                    ) from exc
        for row in result.images:
            row.pop("_why")
        return result


class _FidCollector:
    """Patches of one set in image order, run through InceptionV3 in batches of FID_BATCH
    across images; HR features come from the scorer's cache when present."""

    def __init__(self, scorer: Scorer, border: int) -> None:
        from sgsr.fid import net_fingerprint

        self.scorer, self.border = scorer, border
        self.net = scorer.nets["fid"]
        self.net_sha = net_fingerprint(self.net) if scorer.feature_cache is not None else ""
        self.sr: dict[int, np.ndarray] = {}
        self.hr: dict[int, np.ndarray] = {}
        self.pending: list[tuple[str, int, np.ndarray, str | None]] = []
        self.count = 0

    def add(self, index: int, stem: str, sr: np.ndarray, hr: np.ndarray, hr_path: Path) -> None:
        s = self.scorer
        cut = (self.border, s.fid_patch, s.fid_patches_per_image, stem)
        key = None
        if s.feature_cache is not None:
            from sgsr.fid import feature_key

            key = feature_key(sha256sum(hr_path), *cut, self.net_sha)
            cached = s.feature_cache.get(key)
            if cached is not None:
                self.hr[index] = cached
                key = "cached"
        if key != "cached":
            self._queue("hr", index, fid_patches(hr, *cut), key)
        self._queue("sr", index, fid_patches(sr, *cut), None)
        if self.count >= FID_BATCH:
            self._flush()

    def _queue(self, side: str, index: int, p: np.ndarray, key: str | None) -> None:
        self.pending.append((side, index, p, key))
        self.count += len(p)

    def _flush(self) -> None:
        if not self.pending:
            return
        batch = np.concatenate([p for _, _, p, _ in self.pending])
        feats = fid_patch_features(batch, self.net, FID_BATCH) if len(batch) else batch
        start = 0
        for side, index, p, key in self.pending:
            f = feats[start : start + len(p)] if len(p) else np.zeros((0, 0))
            start += len(p)
            (self.sr if side == "sr" else self.hr)[index] = f
            if key is not None and self.scorer.feature_cache is not None:
                self.scorer.feature_cache.put(key, f)
        self.pending, self.count = [], 0

    def finish(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        self._flush()
        order = sorted(self.sr)
        sr = [self.sr[i] for i in order if len(self.sr[i])]
        hr = [self.hr[i] for i in order if len(self.hr[i])]
        groups = [np.full(len(self.sr[i]), i) for i in order if len(self.sr[i])]
        if not sr:
            return np.zeros((0, 1)), np.zeros((0, 1)), np.zeros(0, np.int64)
        return np.concatenate(sr), np.concatenate(hr), np.concatenate(groups)


def _nonfinite_entries(score: SetScore, metrics: Sequence[str]) -> list[dict[str, Any]]:
    """``[{"image": stem or None (the mean), "metric", "value": "inf"|"nan", "why"}]``."""
    out = []
    for row in score.images:
        for m in metrics:
            label = nonfinite_label(row.get(m))
            if label:
                why = "identical to HR" if label == "inf" else "undefined"
                out.append({"image": row["image"], "metric": m, "value": label, "why": why})
    for m, v in score.mean.items():
        label = nonfinite_label(v)
        if label:
            out.append({"image": None, "metric": m, "value": label, "why": score.why.get(m, "")})
    return out


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
        "mean": {k: finite_or_none(v) for k, v in score.mean.items()},
        "images": [
            {k: (v if k == "image" else finite_or_none(v)) for k, v in row.items()}
            for row in score.images
        ],
        "nonfinite": _nonfinite_entries(score, scorer.image_metrics),
        "unavailable": dict(scorer.unavailable),
        "notes": metric_notes(scorer.metrics, scorer.fid_patch, scorer.fid_patches_per_image),
    }


def score_folders(
    sr_dir: str | os.PathLike[str],
    hr_dir: str | os.PathLike[str],
    scale: int,
    metrics: Sequence[str] = ("psnr", "ssim"),
    pretrained: str | os.PathLike[str] | None = None,
    fid_patch: int = 64,
    device: str = "auto",
    fid_patches_per_image: int = 0,
    max_pixels: int | None = DEFAULT_MAX_PIXELS,
    border: int | None = None,
) -> dict:
    """Score every SR image against the HR image with the same stem; `border` px (default:
    `scale`, the protocol) cropped from every side.

    Returns JSON-ready ``{"sr", "hr", "scale", "metrics", "n_images", "mean": {metric: value},
    "images": [{"image": stem, metric: value}], "nonfinite": [{"image", "metric", "value",
    "why"}], "unavailable": {metric: reason}, "notes"}``. ``mean`` holds per-image means plus
    the set-level FID. A non-finite value is null in ``mean``/``images`` and listed in
    ``nonfinite`` as "inf" (identical images) or "nan" (undefined; ``image`` null = the
    mean). Missing, extra or size-mismatched images raise an error naming the file.
    """
    if not isinstance(scale, int) or scale < 1:
        raise ValueError(f"scale must be a positive integer, got {scale!r}")
    border = scale if border is None else border
    if not isinstance(border, int) or border < 0:
        raise ValueError(f"border must be an integer >= 0, got {border!r}")
    scorer = Scorer(
        metrics,
        pretrained,
        fid_patch,
        device,
        fid_patches_per_image=fid_patches_per_image,
        max_pixels=max_pixels,
    )
    score = scorer.score(sr_dir, hr_dir, scale, border)
    return _as_json(score, scorer, scale, Path(sr_dir), Path(hr_dir), border)


def format_table(result: dict) -> str:
    """A fixed-width table of `score_folders` output: one row per image, then the mean."""
    metrics = [m for m in result["metrics"] if METRICS[m].scope == "image"]
    unavailable = result.get("unavailable", {})
    labels = {(e["image"], e["metric"]): e["value"] for e in result.get("nonfinite", [])}

    def fmt(image: str | None, name: str, value: float | None) -> str:
        if value is None:
            return labels.get((image, name), "n/a")
        return f"{value:.4f}"

    header = ["image", *metrics]
    rows = [
        [r["image"], *(fmt(r["image"], m, r.get(m)) for m in metrics)] for r in result["images"]
    ]
    rows.append(
        [f"mean ({result['n_images']})", *(fmt(None, m, result["mean"].get(m)) for m in metrics)]
    )
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
        lines.append(f"fid (set-level): {fmt(None, 'fid', result['mean'].get('fid'))}")
    for e in result.get("nonfinite", []):
        if e["image"] is None and e["value"] == "nan":
            lines.append(f"{e['metric']}: mean undefined: {e['why']}")
    border = result.get("border", result["scale"])
    lines.append(f"scale {result['scale']}: {border} px border cropped; Y channel for PSNR/SSIM")
    for name, reason in unavailable.items():
        lines.append(f"{name}: unavailable ({reason})")
    return "\n".join(lines)
