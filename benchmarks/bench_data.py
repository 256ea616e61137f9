"""Training-data throughput: the patch store versus decoding PNGs per sample (BasicSR's disk
backend), side by side.

    python benchmarks/bench_data.py [--quick]

Both sides serve the same keys from one PatchSampler (batch 16, LR crops of 48, x4) through a
torch DataLoader with num_workers 0 and 2:

- ``store``: sgsr.data.patches.PatchDataset over a patch store built by prepare (memory-mapped
  uint8 arrays; a crop, a flip and a float conversion per sample).
- ``disk``: what BasicSR's PairedImageDataset does with ``io_backend: disk``: read the whole HR
  and LR PNG of the sample's source image, decode, convert the whole image to float32, random
  crop, flip/rotate, HWC -> CHW.

Images: T91 + BSD200 from ../shared/datasets when present, else scikit-image's sample photos.
The configurations run interleaved, a block of batches each per round, each from a fresh loader
whose start-up and prefetched batches are consumed before timing (steady state, and no worker
prefetching in the background while another configuration is timed); figures are medians over
rounds. ``ratio_w<k>`` = store / disk
patches per second at k workers.
"""

from __future__ import annotations

import argparse
import io
import itertools
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset

HERE = Path(__file__).resolve().parent
SHARED = Path(os.environ.get("SGSR_SHARED_DATASETS", HERE.parent.parent / "shared" / "datasets"))

SCALE, BATCH, LR_PATCH = 4, 16, 48
PATCH, STRIDE = 200, 200  # stored HR side (LR 50, so the 48 crop still moves), little overlap
FULL = dict(images=None, batches=16, rounds=5)
QUICK = dict(images=12, batches=4, rounds=3)
WORKERS = (0, 2)


class DiskPairs(Dataset):
    """BasicSR-style disk backend: decode full HR and LR PNGs per sample, then crop."""

    def __init__(self, pairs: list[tuple[Path, Path]], source_of: np.ndarray, seed: int = 0):
        self.pairs = pairs
        self.source_of = source_of  # patch index -> image index: the same sampling as the store
        self.seed = seed

    def __len__(self) -> int:
        return len(self.source_of)

    @staticmethod
    def _read(path: Path) -> np.ndarray:
        data = path.read_bytes()  # BasicSR: FileClient.get() then imfrombytes(float32=True)
        with Image.open(io.BytesIO(data)) as im:
            arr = np.asarray(im.convert("RGB"))
        return arr.astype(np.float32) / 255.0

    def __getitem__(self, key: tuple[int, int]) -> tuple[torch.Tensor, torch.Tensor]:
        from sgsr.data.patches import augment

        index, draw = key
        hr_path, lr_path = self.pairs[int(self.source_of[index])]
        hr, lr = self._read(hr_path), self._read(lr_path)
        rng = np.random.default_rng((self.seed, draw))
        h, w = lr.shape[:2]
        y = int(rng.integers(0, h - LR_PATCH + 1))
        x = int(rng.integers(0, w - LR_PATCH + 1))
        lr = lr[y : y + LR_PATCH, x : x + LR_PATCH]
        hr = hr[y * SCALE : (y + LR_PATCH) * SCALE, x * SCALE : (x + LR_PATCH) * SCALE]
        hflip, vflip, rot = (bool(v) for v in rng.integers(0, 2, size=3))
        lr, hr = (augment(a, hflip, vflip, rot) for a in (lr, hr))
        return (
            torch.from_numpy(np.ascontiguousarray(lr.transpose(2, 0, 1))),
            torch.from_numpy(np.ascontiguousarray(hr.transpose(2, 0, 1))),
        )


def _images(limit: int | None, work: Path) -> tuple[str, list[tuple[str, Path]]]:
    from sgsr.imaging import list_images

    if (SHARED / "BSD200").is_dir() and (SHARED / "T91").is_dir():
        found = [("T91", p) for p in list_images(SHARED / "T91")]
        found += [("BSD200", p) for p in list_images(SHARED / "BSD200")]
        if limit:  # a mix of both sets
            found = found[:: max(1, len(found) // limit)][:limit]
        return f"T91+BSD200 ({SHARED})", found
    from sgsr.data.download import download_sample

    download_sample(["sample_train"], work / "raw")
    found = [("sample_train", p) for p in list_images(work / "raw" / "sample_train")]
    return "scikit-image sample_train", found[:limit] if limit else found


def _loader(ds: Dataset, n: int, workers: int) -> DataLoader:
    from sgsr.data.patches import PatchSampler

    sampler = PatchSampler(n, batch_size=BATCH, seed=0)
    return DataLoader(ds, batch_size=BATCH, sampler=sampler, num_workers=workers)


def _measure(ds: Dataset, n: int, workers: int, batches: int) -> float:
    """Patches per second in steady state. A fresh loader per measurement, shut down after it,
    so no workers prefetch in the background while another configuration is timed; the
    batches a loader prefetches at start-up are consumed before the clock starts."""
    loader = _loader(ds, n, workers)
    it = iter(loader)
    for _ in range(1 + workers * (loader.prefetch_factor or 0)):
        next(it)
    t = time.perf_counter()
    for _ in range(batches):
        next(it)
    elapsed = time.perf_counter() - t
    del it
    return batches * BATCH / elapsed


def run(quick: bool = False) -> dict:
    from sgsr.data.patches import PatchDataset
    from sgsr.data.prepare import build_patch_store, write_pairs

    size = QUICK if quick else FULL
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with tempfile.TemporaryDirectory(prefix="sgsr-bench-data-") as tmp:
            work = Path(tmp)
            source, images = _images(size["images"], work)
            t0 = time.perf_counter()
            meta = build_patch_store(images, work / "store", SCALE, PATCH, STRIDE)
            build_s = time.perf_counter() - t0
            used = [(s["set"], s["file"]) for s in meta["sources"]]
            by_key = {(label, p.name): p for label, p in images}
            pairs_dir = work / "pairs"
            write_pairs([(lab, by_key[(lab, f)]) for lab, f in used], pairs_dir, SCALE)
            stems = [Path(f).stem for _, f in used]
            pairs = [(pairs_dir / "hr" / f"{s}.png", pairs_dir / "lr" / f"{s}.png") for s in stems]
            coords = np.load(work / "store" / "coords.npy")
            n = meta["count"]
            datasets = {
                "store": PatchDataset(work / "store", lr_patch=LR_PATCH, seed=0),
                "disk": DiskPairs(pairs, coords[:, 0], seed=0),
            }
            configs = list(itertools.product(datasets, WORKERS))
            rates: dict[str, list[float]] = {f"{name}_w{w}": [] for name, w in configs}
            for _ in range(size["rounds"]):
                for name, w in configs:
                    rates[f"{name}_w{w}"].append(_measure(datasets[name], n, w, size["batches"]))
            med = {k: statistics.median(v) for k, v in rates.items()}
            store_bytes = sum(p.stat().st_size for p in (work / "store").iterdir())
            png_bytes = sum(a.stat().st_size + b.stat().st_size for a, b in pairs)
    finally:
        torch.set_num_threads(threads)
    return {
        "source": source,
        "images": len(used),
        "patches": n,
        "batch": BATCH,
        "lr_patch": LR_PATCH,
        "scale": SCALE,
        "patch_size": PATCH,
        "rounds": size["rounds"],
        "batches_per_round": size["batches"],
        "patches_per_s": {k: round(v, 1) for k, v in med.items()},
        **{f"ratio_w{w}": round(med[f"store_w{w}"] / med[f"disk_w{w}"], 1) for w in WORKERS},
        "store_build_s": round(build_s, 2),
        "store_mb": round(store_bytes / 2**20, 1),
        "png_mb": round(png_bytes / 2**20, 1),
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="tiny sizes (smoke test)")
    args = parser.parse_args(argv)
    print(json.dumps(run(quick=args.quick), indent=2))


if __name__ == "__main__":
    sys.path.insert(0, str(HERE.parent))
    main()
