"""Paired statistics for "is loss B better than loss A?".

A mean difference alone does not make a claim (docs/evaluation.md, section 5). Two sources of
noise are measured apart:

- **test images**: the per-image differences of two runs on the same images are resampled with
  replacement (percentile bootstrap, :func:`paired_bootstrap`);
- **training runs**: runs that differ only in their seed differ too. With several seeds per
  configuration, the per-seed differences of run means get a t interval (:func:`t_interval`),
  and :func:`seed_effect` calls a difference an effect only when it also exceeds the
  baseline's own seed-to-seed spread.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

#: Bootstrap resamples are drawn in blocks of about this many indices, bounding memory.
_BLOCK = 1 << 22


def paired_bootstrap(
    diffs: Sequence[float] | np.ndarray,
    n_resamples: int = 10000,
    ci: float = 0.95,
    seed: int = 0,
) -> tuple[float, float, float]:
    """Mean of `diffs` and its percentile-bootstrap `ci` interval: ``(mean, low, high)``.

    Deterministic for a given `seed` (numpy PCG64). Vectorised: resamples are index matrices
    drawn in blocks, so memory stays bounded for any number of resamples.
    """
    d = np.asarray(diffs, dtype=np.float64).ravel()
    if d.size == 0:
        raise ValueError("paired_bootstrap needs at least one difference, got none")
    if not np.all(np.isfinite(d)):
        raise ValueError("paired_bootstrap: differences must be finite (drop inf/nan pairs first)")
    if not isinstance(n_resamples, int) or n_resamples < 1:
        raise ValueError(f"n_resamples must be a positive integer, got {n_resamples!r}")
    if not 0 < ci < 1:
        raise ValueError(f"ci must be in (0, 1), got {ci!r}")
    rng = np.random.default_rng(seed)
    n = d.size
    per_block = max(1, _BLOCK // n)
    means = np.empty(n_resamples)
    for start in range(0, n_resamples, per_block):
        stop = min(n_resamples, start + per_block)
        idx = rng.integers(0, n, size=(stop - start, n))
        means[start:stop] = d[idx].mean(axis=1)
    alpha = (1.0 - ci) / 2.0
    low, high = np.quantile(means, [alpha, 1.0 - alpha])
    return float(d.mean()), float(low), float(high)


def t_interval(
    values: Sequence[float] | np.ndarray, ci: float = 0.95
) -> tuple[float, float, float]:
    """Mean of `values` and its Student t interval ``mean -+ t(ci, n-1) * sd / sqrt(n)``:
    ``(mean, low, high)``.

    For differences over a handful of seeds (n = 2-5) rather than a bootstrap: with 3 seeds a
    bootstrap has 10 distinct resamples and its percentile interval is at most [min, max],
    which misses the mean 25 % of the time (2 * 0.5^3) whatever the nominal level; the t
    interval is exact for normal seed-to-seed noise and honest about how little 3 seeds say
    (t(0.975, 2) = 4.30).
    """
    # scipy.stats (~0.5 s to import): only small-sample intervals use it
    from scipy.stats import t as student_t

    v = np.asarray(values, dtype=np.float64).ravel()
    if v.size < 2:
        raise ValueError(f"t_interval needs at least 2 values, got {v.size}")
    if not np.all(np.isfinite(v)):
        raise ValueError("t_interval: values must be finite")
    if not 0 < ci < 1:
        raise ValueError(f"ci must be in (0, 1), got {ci!r}")
    mean = float(v.mean())
    half = float(student_t.ppf(0.5 + ci / 2.0, v.size - 1) * v.std(ddof=1) / math.sqrt(v.size))
    return mean, mean - half, mean + half


@dataclass(frozen=True)
class SeedEffect:
    """How a candidate - baseline difference compares with training noise (see seed_effect)."""

    mean_diff: float
    ci_low: float
    ci_high: float
    baseline_sd: float
    baseline_range: float
    exceeds_seed_spread: bool
    effect: str  # "better" | "worse" | "none"


def seed_effect(
    diffs: Sequence[float] | np.ndarray,
    baseline: Sequence[float] | np.ndarray,
    higher_is_better: bool,
    ci: float = 0.95,
) -> SeedEffect | None:
    """Is the difference larger than what another baseline seed gives?

    `diffs`: candidate - baseline per matched seed (same seed, same test images); `baseline`:
    the baseline's value per seed. ``exceeds_seed_spread`` is True only when **both**

    1. the t interval over seeds of `diffs` (:func:`t_interval`, level `ci`) excludes 0, and
    2. ``|mean(diffs)|`` is larger than the baseline's seed-to-seed **range** (max - min over
       its seeds): the candidate moves the metric further than the baseline moves it by
       changing nothing but the seed. The range, not the SD, because it is the larger of the
       two (by ~1.7x for 3 seeds), so the rule is the conservative one.

    ``effect`` says which way: "better" or "worse" (by `higher_is_better`) when it exceeds,
    else "none". Returns None (undefined: not False) with fewer than two seeds or a
    non-finite value, where no seed-to-seed spread can be measured.
    """
    d = np.asarray(diffs, dtype=np.float64).ravel()
    b = np.asarray(baseline, dtype=np.float64).ravel()
    if d.size != b.size:
        raise ValueError(f"seed_effect: {d.size} differences but {b.size} baseline values")
    if d.size < 2 or not (np.all(np.isfinite(d)) and np.all(np.isfinite(b))):
        return None
    mean, low, high = t_interval(d, ci)
    spread = float(b.max() - b.min())
    exceeds = bool((low > 0 or high < 0) and abs(mean) > spread)
    if not exceeds:
        effect = "none"
    else:
        effect = "better" if (mean > 0) == bool(higher_is_better) else "worse"
    return SeedEffect(mean, low, high, float(b.std(ddof=1)), spread, exceeds, effect)
