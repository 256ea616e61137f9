"""Reference-side (HR) network features kept on disk, so that every run of a pipeline computes
them once: the HR images are the same for every run, only the SR side changes.

Used for LPIPS (the unit-normalised trunk features of the HR image, `sgsr.metrics`); FID's
Inception features are in `sgsr.fid.FeatureCache`, whose file layout and miss handling this
cache shares. An entry is keyed by the HR file's sha256, the metric, the border crop and the
network's fingerprint (every parameter and buffer), so another image, crop or set of weights
never matches. Entries are float32 exactly as
the network computed them, so a metric from a cached entry equals the one computed afresh.

Size: LPIPS-AlexNet keeps ~10 floats per HR pixel (~38 bytes: 2.1 GB measured for the 57
megapixels of Set5, Set14, BSD100 and half of Urban100). DISTS is not cached: its VGG16 maps at
full resolution are ~122 floats per pixel (~28 GB for the same sets).
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np

from sgsr.fid import FeatureCache

#: Bump when a metric's reference features change in a way the key cannot see.
REFERENCE_VERSION = 1


def reference_key(metric: str, hr_sha256: str, border: int, net_sha: str) -> str:
    """Cache key of one HR image's reference features for `metric`."""
    parts = (REFERENCE_VERSION, metric, hr_sha256, border, net_sha)
    return hashlib.sha256("|".join(str(p) for p in parts).encode()).hexdigest()


class ReferenceCache(FeatureCache):
    """``<root>/<k[:2]>/<k>.npz``: a list of float32 arrays per key, written atomically; a file
    that does not load is a miss (and is rewritten)."""

    SUFFIX = ".npz"

    def get(self, key: str) -> list[np.ndarray] | None:  # type: ignore[override]
        def read(path: Path) -> list[np.ndarray]:
            with np.load(path, allow_pickle=False) as data:
                return [data[f"a{i}"] for i in range(len(data.files))]

        return self._load(key, read)

    def put(self, key: str, arrays: list[np.ndarray]) -> None:  # type: ignore[override]
        self._save(
            key,
            lambda buf: np.savez(
                buf, **{f"a{i}": np.asarray(a, np.float32) for i, a in enumerate(arrays)}
            ),
        )
