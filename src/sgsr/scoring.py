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

import logging
import math
import os
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from sgsr import layout
from sgsr.config import DEFAULT_MAX_PIXELS
from sgsr.data.common import download_cache
from sgsr.devices import resolve_device
from sgsr.fid import FID_BATCH as FID_BATCH  # re-exported (benchmarks)
from sgsr.fid import (
    PROTOCOLS,
    FeatureCollector,
    few_samples_warning,
    frechet_distance,
    kid,
    net_fingerprint,
)
from sgsr.fsutil import sha256sum
from sgsr.imaging import list_images, read_image
from sgsr.metric_registry import QUICK_NAMES, REGISTRY, SET_NAMES, check_metric_names
from sgsr.metrics import METRICS, load_backbones, lpips_distance, lpips_features
from sgsr.pretrained import WEIGHTS
from sgsr.refcache import ReferenceCache, reference_key

log = logging.getLogger(__name__)

#: The weights files each network metric needs (DISTS reads lpips_vgg's VGG16 trunk too).
METRIC_FILES: dict[str, tuple[str, ...]] = {
    name: (("lpips_vgg", "dists") if name == "dists" else (info.backbone,))
    for name, info in REGISTRY.items()
    if info.backbone
}


def fid_samples_note(protocol: str, fid_patch: int, fid_patches_per_image: int) -> str:
    """What one FID sample is under `protocol`."""
    if protocol == "whole":
        return "whole images, uncropped, resized to 299x299 bilinearly (BasicSR/LDL, pytorch-fid)"
    per_image = (
        f"up to {fid_patches_per_image} seeded per image"
        if fid_patches_per_image
        else "all non-overlapping"
    )
    return f"{fid_patch}x{fid_patch} patches of the border-cropped image ({per_image})"


def metric_notes(
    metrics: Iterable[str],
    fid_patch: int,
    fid_patches_per_image: int = 0,
    fid_protocol: str = "patches",
) -> dict[str, str]:
    """Short per-metric notes (metrics_info.json; the full protocol is docs/evaluation.md).
    Every image metric sees the image with `scale` px cropped."""
    samples = fid_samples_note(fid_protocol, fid_patch, fid_patches_per_image)
    return {
        m: REGISTRY[m].note.format(protocol=fid_protocol, samples=samples)
        for m in metrics
        if m in REGISTRY
    }


def project_root(start: str | os.PathLike[str] | None = None) -> Path | None:
    """The nearest folder at or above `start` (default: the working directory) holding a
    ``params.yaml`` and a ``dvc.yaml``: the checkout (or profile) the command runs in."""
    here = Path(start or Path.cwd()).resolve()
    for folder in (here, *here.parents):
        if (folder / "params.yaml").is_file() and (folder / "dvc.yaml").is_file():
            return folder
    return None


def pretrained_search(explicit: str | os.PathLike[str] | None = None) -> list[Path]:
    """Where folder scoring looks for pretrained weights, in order: `explicit`
    (``--pretrained``), the project's ``models/pretrained`` when run inside a checkout, and the
    user cache the download stage fills (``<download cache>/converted``)."""
    places = [Path(explicit)] if explicit is not None else []
    root = project_root()
    if root is not None:
        places.append(root / layout.PRETRAINED)
    places.append(download_cache() / "converted")
    return list(dict.fromkeys(places))


def resolve_pretrained(
    metrics: Iterable[str], places: Sequence[Path]
) -> tuple[dict[str, Path], dict[str, str]]:
    """{metric: the first of `places` holding every file it needs}, and {metric: why none
    does} for the others (the missing file, where it was looked for, what fetches it)."""
    found: dict[str, Path] = {}
    missing: dict[str, str] = {}
    for m in metrics:
        if m not in METRIC_FILES:
            continue
        files = [WEIGHTS[w].filename for w in METRIC_FILES[m]]
        for place in places:
            if all((place / f).is_file() for f in files):
                found[m] = place
                break
        else:
            absent = [f for f in files if not any((p / f).is_file() for p in places)] or files
            missing[m] = (
                f"{' and '.join(absent)} not found in "
                + ", ".join(str(p) for p in places)
                + "; fetch it with `sgsr download` run in a checkout (it fills models/pretrained "
                f"and {download_cache() / 'converted'}), or pass --pretrained DIR"
            )
    return found, missing


#: Folder scoring's default cap on FID patches per image (the pipeline's evaluate default):
#: every 64 px cell of large images would cost minutes per image pair on a CPU.
FOLDER_FID_PATCHES_PER_IMAGE = 16


#: Image metrics whose HR side (`sgsr.metrics.lpips_features`) the reference cache keeps.
REFERENCE_METRICS = ("lpips", "lpips_vgg")


class MetricsUnavailable(ValueError):
    """Metrics asked for by name that cannot be computed here (the message says why)."""


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
    - fid_sr / fid_hr: FID features (n_samples, dims) of the same patches or images,
      fid_groups the image index of each row (for the bootstrap over images); None without
      FID/KID; kid: its mean, SD and subsets (None without KID);
    - warnings: for set-level metrics resting on few samples (`sgsr.fid.few_samples_warning`).
    """

    images: list[dict[str, Any]] = field(default_factory=list)
    mean: dict[str, float | None] = field(default_factory=dict)
    why: dict[str, str] = field(default_factory=dict)
    fid_sr: np.ndarray | None = None
    fid_hr: np.ndarray | None = None
    fid_groups: np.ndarray | None = None
    kid: Any = None
    warnings: list[str] = field(default_factory=list)

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

    `pretrained`: the pipeline's one folder, or a search list (each metric's weights from the
    first folder holding them, :func:`resolve_pretrained`). ``fid_protocol`` is "patches" or
    "whole" (`sgsr.fid`); ``fid_patches_per_image`` caps the patches each image gives FID (0 =
    all; see `sgsr.fid.patch_cells`); ``feature_cache`` (a `sgsr.fid.FeatureCache`) keeps the
    HR side's features so that every run of a pipeline computes them once;
    ``reference_cache`` (a `sgsr.refcache.ReferenceCache`) does the same for LPIPS's HR side.
    """

    def __init__(
        self,
        metrics: Sequence[str] = QUICK_NAMES,
        pretrained: str | os.PathLike[str] | list[Path] | None = None,
        fid_patch: int = 64,
        device: str = "auto",
        nets: dict[str, Any] | None = None,
        fid_patches_per_image: int = 0,
        feature_cache: Any = None,
        max_pixels: int | None = DEFAULT_MAX_PIXELS,
        fid_protocol: str = "patches",
        reference_cache: ReferenceCache | None = None,
    ) -> None:
        self.metrics = check_metric_names(metrics)
        if fid_protocol not in PROTOCOLS:
            raise ValueError(
                f"fid_protocol must be one of {', '.join(PROTOCOLS)}, got {fid_protocol!r}"
            )
        self.fid_protocol = fid_protocol
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
        self.reference_cache = reference_cache
        if nets is None:
            nets, unavailable = {}, {}
            places = [Path(p) for p in pretrained] if isinstance(pretrained, list) else None
            if places is None:  # one folder: the pipeline's models/pretrained
                nets, unavailable = load_backbones(self.metrics, pretrained, resolve_device(device))
            else:  # a search list (folder scoring): each metric from the first that has it
                found, unavailable = resolve_pretrained(self.metrics, places)
                for place in dict.fromkeys(found.values()):
                    names = [m for m in self.metrics if found.get(m) == place]
                    got, why = load_backbones(names, place, resolve_device(device))
                    nets.update(got)
                    unavailable.update(why)
                self.pretrained_from = {m: str(p) for m, p in found.items() if m in nets}
        else:  # injected (tests, benchmarks): metrics without a net are unavailable
            unavailable = {
                m: "no network given" for m in self.metrics if METRICS[m].backbone and m not in nets
            }
        self.nets = nets
        self.unavailable = unavailable
        if not hasattr(self, "pretrained_from"):
            self.pretrained_from = {}
        #: wall seconds spent per metric (and "decode", "fid_features") over every score call
        self.seconds: dict[str, float] = {}

    def _tick(self, what: str, since: float) -> None:
        self.seconds[what] = self.seconds.get(what, 0.0) + time.perf_counter() - since

    def _reference(
        self, metric: str, hr: np.ndarray, hr_path: Path, border: int, net: Any
    ) -> list[torch.Tensor]:
        """The HR side's LPIPS features from the reference cache, computed and stored on a
        miss (float32 as computed: the value equals the uncached one exactly)."""
        cache = self.reference_cache
        assert cache is not None
        key = reference_key(metric, sha256sum(hr_path), border, net_fingerprint(net))
        arrays = cache.get(key)
        if arrays is not None:  # on the network's device, where the SR side's features are
            device = next(net.parameters()).device
            return [torch.from_numpy(a).to(device) for a in arrays]
        features = lpips_features(hr, border, net)
        cache.put(key, [f.cpu().numpy() for f in features])
        return features

    @property
    def image_metrics(self) -> tuple[str, ...]:
        return tuple(m for m in self.metrics if METRICS[m].scope == "image")

    @property
    def set_metrics(self) -> tuple[str, ...]:
        """FID and KID when asked for and available (both from one feature pass)."""
        return tuple(m for m in SET_NAMES if m in self.metrics and m not in self.unavailable)

    @property
    def use_fid(self) -> bool:
        return bool(self.set_metrics)

    def score(
        self,
        sr_dir: str | os.PathLike[str],
        hr_dir: str | os.PathLike[str],
        scale: int,
        border: int | None = None,
    ) -> SetScore:
        """Score every pair; `border` px (default: `scale`, the protocol) cropped per side."""
        border = scale if border is None else border
        pairs = pair_files(sr_dir, hr_dir)
        result = SetScore()
        fid = None
        if self.use_fid:
            fid = FeatureCollector(
                self.nets[self.set_metrics[0]], self.fid_protocol, border, self.fid_patch,
                self.fid_patches_per_image, self.feature_cache,
            )  # fmt: skip
        for i, (stem, sr_path, hr_path) in enumerate(
            tqdm(pairs, desc=f"score {Path(sr_dir).name}", leave=False)
        ):
            t0 = time.perf_counter()
            sr = read_image(sr_path, max_pixels=self.max_pixels)
            hr = read_image(hr_path, max_pixels=self.max_pixels)
            self._tick("decode", t0)
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
                t0 = time.perf_counter()
                try:
                    if name in REFERENCE_METRICS and self.reference_cache is not None:
                        net = self.nets[name]
                        ref = self._reference(name, hr, hr_path, border, net)
                        value = lpips_distance(sr, hr, border, net, reference=ref)
                    elif metric.backbone:
                        value = metric(sr, hr, border, self.nets[name])
                    else:
                        value = metric(sr, hr, border)
                except ValueError as exc:
                    raise ValueError(f"{sr_path}: {name}: {exc}") from exc
                self._tick(name, t0)
                row[name] = float(value)
                if math.isnan(row[name]):
                    row["_why"][name] = _undefined_reason(name, sr.shape, border)
            if fid is not None:
                t0 = time.perf_counter()
                fid.add(i, stem, sr, hr, hr_path)
                self._tick("fid_features", t0)
            result.images.append(row)
        result.mean, result.why = _set_means(result.images, self.image_metrics)
        for m in SET_NAMES:
            if m in self.metrics:
                result.mean[m] = None
        if fid is not None:
            t0 = time.perf_counter()
            result.fid_sr, result.fid_hr, result.fid_groups = fid.finish()
            self._tick("fid_features", t0)
            what = "whole images" if self.fid_protocol == "whole" else f"{self.fid_patch}px patches"
            advice = (
                "use a smaller evaluate.fid_patch, the whole protocol, or drop fid/kid"
                if self.fid_protocol == "patches"
                else "score at least 2 images, or drop fid/kid"
            )
            try:
                if "fid" in self.set_metrics:
                    t0 = time.perf_counter()
                    result.mean["fid"] = frechet_distance(result.fid_sr, result.fid_hr)
                    self._tick("fid_distance", t0)
                if "kid" in self.set_metrics:
                    t0 = time.perf_counter()
                    result.kid = kid(result.fid_sr, result.fid_hr)
                    result.mean["kid"] = result.kid.mean
                    self._tick("kid", t0)
            except ValueError as exc:
                raise ValueError(f"{sr_dir}: FID/KID over {what}: {exc} ({advice})") from exc
            for m in self.set_metrics:
                note = few_samples_warning(
                    m.upper(), len(result.fid_sr), f"{Path(sr_dir).name} ({what})"
                )
                if note:
                    result.warnings.append(note)
        for row in result.images:
            row.pop("_why")
        return result


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
        "notes": metric_notes(
            scorer.metrics, scorer.fid_patch, scorer.fid_patches_per_image, scorer.fid_protocol
        ),
        **_set_level_json(score, scorer),
        "pretrained": dict(scorer.pretrained_from),
        "warnings": list(score.warnings),
    }


def _set_level_json(score: SetScore, scorer: Scorer) -> dict[str, Any]:
    """The FID/KID protocol and samples, and KID's SD (``{}`` without set-level metrics)."""
    if not any(m in scorer.metrics for m in SET_NAMES):
        return {}
    out: dict[str, Any] = {
        "fid_protocol": scorer.fid_protocol,
        "fid_samples": None if score.fid_sr is None else len(score.fid_sr),
    }
    if score.kid is not None:
        out["kid"] = {
            "mean": score.kid.mean,
            "sd": score.kid.sd,
            "subsets": score.kid.subsets,
            "subset_size": score.kid.subset_size,
        }
    return out


def score_folders(
    sr_dir: str | os.PathLike[str],
    hr_dir: str | os.PathLike[str],
    scale: int,
    metrics: Sequence[str] = QUICK_NAMES,
    pretrained: str | os.PathLike[str] | None = None,
    fid_patch: int = 64,
    device: str = "auto",
    fid_patches_per_image: int = FOLDER_FID_PATCHES_PER_IMAGE,
    max_pixels: int | None = DEFAULT_MAX_PIXELS,
    border: int | None = None,
    fid_protocol: str = "patches",
    strict: bool = True,
) -> dict:
    """Score every SR image against the HR image with the same stem; `border` px (default:
    `scale`, the protocol) cropped from every side.

    Returns JSON-ready ``{"sr", "hr", "scale", "metrics", "n_images", "mean": {metric: value},
    "images": [{"image": stem, metric: value}], "nonfinite": [{"image", "metric", "value",
    "why"}], "unavailable": {metric: reason}, "notes"}``. ``mean`` holds per-image means plus
    the set-level FID. A non-finite value is null in ``mean``/``images`` and listed in
    ``nonfinite`` as "inf" (identical images) or "nan" (undefined; ``image`` null = the
    mean). Missing, extra or size-mismatched images raise an error naming the file.

    Weights are looked for where :func:`pretrained_search` says (`pretrained` first). With
    `strict` (the default) a metric in `metrics` that is still unavailable raises
    :class:`MetricsUnavailable` naming the missing file and what fetches it; otherwise it is
    null with its reason in ``unavailable``.
    """
    if not isinstance(scale, int) or scale < 1:
        raise ValueError(f"scale must be a positive integer, got {scale!r}")
    border = scale if border is None else border
    if not isinstance(border, int) or border < 0:
        raise ValueError(f"border must be an integer >= 0, got {border!r}")
    scorer = Scorer(
        metrics,
        pretrained_search(pretrained),
        fid_patch,
        device,
        fid_patches_per_image=fid_patches_per_image,
        max_pixels=max_pixels,
        fid_protocol=fid_protocol,
    )
    if strict and scorer.unavailable:
        raise MetricsUnavailable(
            "; ".join(f"{m} unavailable: {why}" for m, why in scorer.unavailable.items())
        )
    score = scorer.score(sr_dir, hr_dir, scale, border)
    for note in score.warnings:
        log.warning("%s", note)
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
    protocol = result.get("fid_protocol", "patches")
    samples = result.get("fid_samples")
    if "fid" in result["metrics"]:
        lines.append(
            f"fid (set-level, {protocol} protocol, {samples} samples): "
            f"{fmt(None, 'fid', result['mean'].get('fid'))}"
        )
    if "kid" in result["metrics"]:
        k = result.get("kid")
        sd = f" +- {k['sd']:.5f} ({k['subsets']} subsets of {k['subset_size']})" if k else ""
        lines.append(
            f"kid (set-level, {protocol} protocol, {samples} samples): "
            f"{fmt(None, 'kid', result['mean'].get('kid'))}{sd}"
        )
    for note in result.get("warnings", []):
        lines.append(f"warning: {note}")
    for e in result.get("nonfinite", []):
        if e["image"] is None and e["value"] == "nan":
            lines.append(f"{e['metric']}: mean undefined: {e['why']}")
    border = result.get("border", result["scale"])
    lines.append(f"scale {result['scale']}: {border} px border cropped; Y channel for PSNR/SSIM")
    for name, reason in unavailable.items():
        lines.append(f"{name}: unavailable ({reason})")
    return "\n".join(lines)
