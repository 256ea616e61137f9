"""FID at study scale: HR features computed once, and a confidence interval over images.

FID runs InceptionV3 on every patch it sees (~0.2-0.4 s per 64 px patch on 2 CPU cores), so
its cost is set by how many patches it sees and how often the same ones are seen again:

- **which patches**: ``evaluate.fid_patches_per_image`` caps each image's contribution at a
  fixed, seeded choice of grid cells (`sgsr.metrics.patch_cells`), the same for SR and HR and
  for every run;
- **HR features once**: the HR side of every run is the same images, so its features are
  cached on disk (:class:`FeatureCache`, outside the DVC outputs, like the download cache),
  keyed by the HR file's sha256, the patch settings, the image key and the network's weights;
- **a CI over images**: the images of a set are resampled with replacement (their patches
  kept together) by a plan that depends only on the set's name and size (:func:`resample_plan`),
  so every run of a pipeline is resampled identically and a paired difference of two runs'
  FIDs is taken resample by resample. Each resample is one weighted Frechet distance in the
  n-space (`sgsr.metrics.frechet_distance`), no copies of rows.
"""

from __future__ import annotations

import hashlib
import io
import os
import zlib
from pathlib import Path

import numpy as np
import torch

from sgsr.fsutil import atomic_write
from sgsr.metrics import frechet_distance

#: Bump when the feature extraction changes in a way the key cannot see (invalidates caches).
FEATURE_VERSION = 1
#: Seeds the image resampling plan (with the set's name); a fixed protocol choice.
PLAN_SEED = 20151205


def net_fingerprint(net: torch.nn.Module) -> str:
    """sha256 of every parameter and buffer (names, dtypes, shapes, bytes), computed once per
    network object: the cache key's part for "which weights" (real or random alike)."""
    cached = getattr(net, "sgsr_fingerprint", None)
    if cached:
        return cached
    h = hashlib.sha256()
    for name, tensor in sorted(net.state_dict().items()):
        t = tensor.detach().cpu().contiguous()
        h.update(f"{name}|{t.dtype}|{tuple(t.shape)}|".encode())
        h.update(t.numpy().tobytes() if t.dtype != torch.bfloat16 else t.float().numpy().tobytes())
    net.sgsr_fingerprint = h.hexdigest()
    return net.sgsr_fingerprint


def feature_key(
    hr_sha256: str, border: int, patch: int, max_patches: int, key: str, net_sha: str
) -> str:
    """Cache key of one HR image's FID features."""
    text = "|".join(
        str(p) for p in (FEATURE_VERSION, hr_sha256, border, patch, max_patches, key, net_sha)
    )
    return hashlib.sha256(text.encode()).hexdigest()


class FeatureCache:
    """``<root>/<k[:2]>/<k>.npy`` float32 arrays, written atomically; a file that does not
    load is treated as absent (and rewritten)."""

    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = Path(root)
        self.hits = 0
        self.misses = 0

    def _path(self, key: str) -> Path:
        return self.root / key[:2] / f"{key}.npy"

    def get(self, key: str) -> np.ndarray | None:
        path = self._path(key)
        try:
            arr = np.load(path, allow_pickle=False)
        except (OSError, ValueError):
            self.misses += 1
            return None
        self.hits += 1
        return arr.astype(np.float64)

    def put(self, key: str, features: np.ndarray) -> None:
        buf = io.BytesIO()
        np.save(buf, np.asarray(features, np.float32), allow_pickle=False)
        with atomic_write(self._path(key)) as fh:
            fh.write(buf.getvalue())


def resample_plan(n_images: int, n_resamples: int, set_name: str) -> np.ndarray:
    """(n_resamples, n_images) image indices drawn with replacement; a function of the set's
    name and size only, so every run of a pipeline gets the same plan."""
    rng = np.random.default_rng([PLAN_SEED, zlib.crc32(set_name.encode("utf-8")), n_images])
    return rng.integers(0, n_images, size=(n_resamples, n_images), dtype=np.int64)


def plan_fingerprint(plan: np.ndarray, stems: list[str]) -> str:
    """Identifies a plan and the images it indexes (summarize pairs runs only when equal)."""
    h = hashlib.sha256(np.ascontiguousarray(plan, np.int64).tobytes())
    h.update("\0".join(stems).encode("utf-8"))
    return h.hexdigest()


#: Above this many patches per set the bootstrap works on the features (Gram matrices of
#: n x n float64 would take over 3 x 128 MiB).
GRAM_MAX = 4096


def bootstrap_fid(
    sr: np.ndarray, hr: np.ndarray, groups: np.ndarray, plan: np.ndarray
) -> np.ndarray:
    """FID of each resample of the plan: image ``i`` drawn ``c`` times counts each of its
    patches (rows of `sr` and `hr` with ``groups == i``) ``c`` times on both sides.

    Equal to ``frechet_distance(sr, hr, w, w)`` per resample (tested). Up to :data:`GRAM_MAX`
    patches it is computed from the three n x n Gram matrices, formed once: a resample then
    costs O(u^2) plus one u x u symmetric eigendecomposition (u = patches of the distinct drawn
    images), whatever the feature dimension. The small per-resample problems run on one
    thread: a second BLAS thread makes them 10-50x *slower* on a shared 2-core machine
    (measured: 252 x 252 eigvalsh, 2.2 ms on one thread vs ~50 ms on two).
    """
    sr, hr = np.asarray(sr, np.float64), np.asarray(hr, np.float64)
    groups = np.asarray(groups)
    n_images = plan.shape[1] if plan.ndim == 2 else 0
    out = np.empty(len(plan))
    if len(sr) > GRAM_MAX:
        for r, draw in enumerate(plan):
            w = np.bincount(draw, minlength=n_images).astype(np.float64)[groups]
            out[r] = frechet_distance(sr, hr, w, w)
        return out
    g_aa = torch.from_numpy(sr @ sr.T)
    g_bb = torch.from_numpy(hr @ hr.T)
    g_ab = torch.from_numpy(sr @ hr.T)
    d_aa, d_bb = torch.diagonal(g_aa), torch.diagonal(g_bb)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        for r, draw in enumerate(plan):
            w_all = np.bincount(draw, minlength=n_images).astype(np.float64)[groups]
            idx = torch.from_numpy(np.flatnonzero(w_all))
            w = torch.from_numpy(w_all).index_select(0, idx)
            total = float(w.sum())
            if total < 2:
                raise ValueError(f"FID needs at least 2 patches per side, got {total:g}")
            aa = g_aa.index_select(0, idx).index_select(1, idx)
            bb = g_bb.index_select(0, idx).index_select(1, idx)
            ab = g_ab.index_select(0, idx).index_select(1, idx)
            aa_w, bb_w, ab_w, ba_w = aa @ w, bb @ w, ab @ w, ab.T @ w  # (A mu_a) * total, ...
            mu_aa = float(w @ aa_w) / total**2
            mu_bb = float(w @ bb_w) / total**2
            mu_ab = float(w @ ab_w) / total**2
            mean_term = mu_aa + mu_bb - 2.0 * mu_ab  # |mu_a - mu_b|^2
            trace_a = (float(w @ d_aa.index_select(0, idx)) - total * mu_aa) / (total - 1.0)
            trace_b = (float(w @ d_bb.index_select(0, idx)) - total * mu_bb) / (total - 1.0)
            # (A - 1 mu_a^T)(B - 1 mu_b^T)^T, then scaled by sqrt(w_i w_j) / (total - 1)
            cross = ab - ab_w[:, None] / total - ba_w[None, :] / total + mu_ab
            sq = torch.sqrt(w)
            k = cross * sq[:, None] * sq[None, :] / (total - 1.0)
            # singular values of k = sqrt of the eigenvalues of k k^T: eigvalsh is 2-5x faster
            # than an SVD and agrees to ~1e-10 relative (tested against frechet_distance)
            eig = torch.linalg.eigvalsh(k @ k.T)
            tr_covmean = float(eig.clamp_min(0.0).sqrt().sum())
            out[r] = max(mean_term + trace_a + trace_b - 2.0 * tr_covmean, 0.0)
    finally:
        torch.set_num_threads(threads)
    return out


def percentile_ci(values: np.ndarray, ci: float) -> tuple[float, float]:
    """Percentile interval of bootstrap values at level `ci` (NaN, NaN if there are none)."""
    values = np.asarray(values, np.float64)
    values = values[np.isfinite(values)]
    if values.size == 0:
        return float("nan"), float("nan")
    alpha = (1.0 - ci) / 2.0
    low, high = np.quantile(values, [alpha, 1.0 - alpha])
    return float(low), float(high)
