"""Training data from the patch store: a keyed Dataset and the infinite sampler that feeds it.

Keys, not indices: every item is ``(patch_index, draw)`` and all its randomness (crop position,
flips, rotation) comes from ``np.random.default_rng((seed, draw))``. An item is therefore a pure
function of its key, whatever the worker count or process, and resuming a run at sample g gives
exactly the batches an uninterrupted run would have seen.

Usage (the training loop)::

    ds = PatchDataset(layout.patch_store(4), lr_patch=48, seed=cfg.seed)
    sampler = PatchSampler(len(ds), batch_size=16, seed=cfg.seed, start=step * 16)
    loader = DataLoader(ds, batch_size=16, sampler=sampler, num_workers=2)
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from sgsr.data.prepare import META_FILE, STORE_FORMAT


def _chw(patch: np.ndarray) -> torch.Tensor:
    """uint8 (H, W, C) view -> float32 (C, H, W) in [0, 1] (the copy makes it contiguous)."""
    arr = np.ascontiguousarray(patch.transpose(2, 0, 1))
    return torch.from_numpy(arr).to(torch.float32).div_(255.0)


def augment(patch: np.ndarray, hflip: bool, vflip: bool, rot90: bool) -> np.ndarray:
    """One of the 8 symmetries of the square on an (H, W, C) array: flips then a transpose (a
    90-degree rotation up to a flip). Applied identically to LR and HR, it keeps them aligned."""
    if hflip:
        patch = patch[:, ::-1]
    if vflip:
        patch = patch[::-1]
    if rot90:
        patch = patch.transpose(1, 0, 2)
    return patch


def read_meta(store: str | os.PathLike[str]) -> dict[str, Any]:
    path = Path(store) / META_FILE
    if not path.is_file():
        raise FileNotFoundError(
            f"{path} not found: {store} is not a patch store; run `sgsr prepare` (or `dvc repro "
            "prepare`) first"
        )
    meta = json.loads(path.read_text())
    if meta.get("format") != STORE_FORMAT:
        raise ValueError(
            f"{path}: patch store format {meta.get('format')!r}, this code reads {STORE_FORMAT}; "
            "rerun `sgsr prepare`"
        )
    return meta


class PatchDataset(Dataset):
    """(lr, hr) float32 CHW tensors in [0, 1] from a patch store, keyed by (patch_index, draw).

    A random ``lr_patch`` crop of the stored LR patch and the aligned ``lr_patch * scale`` HR crop,
    then (``augment``) random h/v flips and a 90-degree rotation; every random choice comes from
    ``default_rng((seed, draw))``. A plain int key ``i`` means ``(i, 0)``. The arrays are
    memory-mapped lazily, per process, so DataLoader workers each map their own after the fork
    (and pickling for spawn carries no mapping).
    """

    def __init__(
        self,
        store_dir: str | os.PathLike[str],
        lr_patch: int,
        augment: bool = True,
        seed: int = 0,
    ) -> None:
        self.store_dir = Path(store_dir)
        self.meta = read_meta(self.store_dir)
        self.scale: int = int(self.meta["scale"])
        self.lr_size: int = int(self.meta["lr_patch_size"])
        self.count: int = int(self.meta["count"])
        if not isinstance(lr_patch, int) or not 0 < lr_patch <= self.lr_size:
            raise ValueError(
                f"lr_patch must be an integer in 1..{self.lr_size} (the store's LR patch side, "
                f"prepare.patch_size / scale = {self.meta['patch_size']} / {self.scale}); got "
                f"{lr_patch!r}"
            )
        if not isinstance(seed, int) or seed < 0:
            raise ValueError(f"seed must be a non-negative integer, got {seed!r}")
        self.lr_patch = lr_patch
        self.augment = augment
        self.seed = seed
        self._arrays: tuple[np.ndarray, np.ndarray] | None = None
        self._pid: int | None = None

    def __len__(self) -> int:
        return self.count

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_arrays"] = None
        state["_pid"] = None
        return state

    def arrays(self) -> tuple[np.ndarray, np.ndarray]:
        """(hr, lr) uint8 NHWC arrays, memory-mapped read-only on first use in this process."""
        if self._arrays is None or self._pid != os.getpid():
            hr = np.load(self.store_dir / self.meta["hr"], mmap_mode="r")
            lr = np.load(self.store_dir / self.meta["lr"], mmap_mode="r")
            if hr.shape[0] != self.count or lr.shape[0] != self.count:
                raise ValueError(
                    f"{self.store_dir}: arrays hold {hr.shape[0]}/{lr.shape[0]} patches but "
                    f"meta.json says {self.count}; rerun `sgsr prepare`"
                )
            self._arrays, self._pid = (hr, lr), os.getpid()
        return self._arrays

    def __getitem__(self, key: tuple[int, int] | int) -> tuple[torch.Tensor, torch.Tensor]:
        if isinstance(key, tuple | list):
            index, draw = (int(k) for k in key)
        else:
            index, draw = int(key), 0
        if not 0 <= index < self.count:
            raise IndexError(f"patch index {index} out of range 0..{self.count - 1}")
        if draw < 0:
            raise ValueError(f"draw must be >= 0, got {draw}")
        hr_all, lr_all = self.arrays()
        rng = np.random.default_rng((self.seed, draw))
        lp, s = self.lr_patch, self.scale
        y, x = (int(v) for v in rng.integers(0, self.lr_size - lp + 1, size=2))
        lr = lr_all[index, y : y + lp, x : x + lp]
        hr = hr_all[index, y * s : (y + lp) * s, x * s : (x + lp) * s]
        if self.augment:
            hflip, vflip, rot = (bool(v) for v in rng.integers(0, 2, size=3))
            lr = augment(lr, hflip, vflip, rot)
            hr = augment(hr, hflip, vflip, rot)
        return _chw(lr), _chw(hr)


class PatchSampler:
    """Infinite, deterministic stream of ``(patch_index, draw)`` keys for PatchDataset.

    Global sample g = 0, 1, 2, ... has ``draw = g`` and ``patch_index = perm_e[g % n]`` where
    ``perm_e`` is the permutation of epoch ``e = g // n`` seeded by ``(seed, e)``: every patch once
    per epoch, a fresh order each epoch.

    For an iteration-based loop this replaces torch's DistributedSampler (which is finite and
    needs set_epoch): with ``world_size`` W, global batch b is samples
    ``[b*B*W, (b+1)*B*W)`` and rank r takes the slice ``[b*B*W + r*B, b*B*W + (r+1)*B)``, so ranks
    are disjoint and together see exactly what one process with batch B*W would see.

    ``start`` skips this rank's first `start` samples in O(1) (resume: ``start = step * B``);
    the stream is then identical to the uninterrupted one from that point.
    """

    def __init__(
        self,
        n_patches: int,
        batch_size: int,
        seed: int,
        start: int = 0,
        rank: int = 0,
        world_size: int = 1,
    ) -> None:
        for name, value, low in (
            ("n_patches", n_patches, 1),
            ("batch_size", batch_size, 1),
            ("world_size", world_size, 1),
            ("seed", seed, 0),
            ("start", start, 0),
            ("rank", rank, 0),
        ):
            if not isinstance(value, int) or isinstance(value, bool) or value < low:
                raise ValueError(f"PatchSampler {name} must be an integer >= {low}, got {value!r}")
        if rank >= world_size:
            raise ValueError(f"PatchSampler rank {rank} must be < world_size {world_size}")
        self.n = n_patches
        self.batch_size = batch_size
        self.seed = seed
        self.start = start
        self.rank = rank
        self.world_size = world_size

    def global_index(self, i: int) -> int:
        """Global sample number of this rank's i-th sample."""
        b, j = divmod(i, self.batch_size)
        return (b * self.world_size + self.rank) * self.batch_size + j

    def permutation(self, epoch: int) -> np.ndarray:
        return np.random.default_rng((self.seed, epoch)).permutation(self.n)

    def __iter__(self) -> Iterator[tuple[int, int]]:
        i = self.start
        epoch, perm = -1, np.empty(0, dtype=np.int64)
        while True:
            g = self.global_index(i)
            e, pos = divmod(g, self.n)
            if e != epoch:
                epoch, perm = e, self.permutation(e)
            yield int(perm[pos]), g
            i += 1
