"""Paired statistics for "is loss B better than loss A on these images?".

A mean difference alone does not make a claim (DESIGN.md section 4): the per-image differences
of two runs on the same images are resampled with replacement (percentile bootstrap) to give a
confidence interval for their mean.
"""

from __future__ import annotations

from collections.abc import Sequence

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
