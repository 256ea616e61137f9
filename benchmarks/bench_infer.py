"""Inference speed and peak memory: whole image vs tiled, EDSR-baseline x4 and RCAN x4.

Input: the largest Urban100 image of ../shared/datasets (1280x960 HR -> 320x240 LR) when
present, else a synthetic 256x256 LR. Weights are random (seeded): speed and memory do not
depend on them. Each mode runs in its own subprocess so its peak RSS (VmHWM; torch's
allocations are invisible to tracemalloc) is its own; the SR outputs are compared afterwards to
give the tiling error of that network. EDSR-baseline also runs whole in the contiguous layout
(what inference used before channels_last on the CPU): ``layout_speedup`` and the largest
difference in grey levels. ``gflop_per_s``: convolution FLOPs of the whole image (see
`conv_gflop`) over the median time.
"""

from __future__ import annotations

import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("SGSR_SHARED_DATASETS", REPO.parent / "shared" / "datasets"))

FULL = {
    "edsr_baseline_x4": ("edsr_baseline", {}),
    "rcan_x4": ("rcan", {}),
}
QUICK = {
    "edsr_baseline_x4": ("edsr_baseline", {"n_resblocks": 2, "n_feats": 16}),
    "rcan_x4": ("rcan", {"n_groups": 1, "n_resblocks": 2, "n_feats": 16}),
}
TILE, OVERLAP = 128, 16  # LR pixels; overlap 16 covers EDSR-baseline's receptive field well


def _input(quick: bool) -> tuple[np.ndarray, str]:
    from sgsr import imaging

    if quick:
        rng = np.random.default_rng(0)
        return rng.integers(0, 256, (32, 40, 3), dtype=np.uint8), "synthetic 32x40 LR"
    folder = SHARED / "Urban100"
    if folder.is_dir():
        files = imaging.list_images(folder)
        sizes = {p: imaging.read_image(p).shape for p in files}
        path = max(files, key=lambda p: sizes[p][0] * sizes[p][1])
        hr = imaging.mod_crop(imaging.read_image(path, mode="rgb"), 4)
        lr = imaging.downscale(hr, 4)
        return lr, f"Urban100/{path.name} HR {hr.shape[1]}x{hr.shape[0]} -> LR"
    rng = np.random.default_rng(0)
    return rng.integers(0, 256, (256, 256, 3), dtype=np.uint8), "synthetic 256x256 LR"


def _rss_mib() -> float:
    with open("/proc/self/statm") as fh:
        return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def _peak_rss_mib() -> float:
    """This process's RSS high-water mark. Not ``ru_maxrss``: Linux keeps that across execve, so
    a child spawned by a large parent would report the parent's peak."""
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def conv_gflop(model, shape: tuple[int, ...]) -> float:
    """GFLOP of one whole-image forward: 2 x the multiply-adds of every convolution, as
    ``torch.utils.flop_counter`` counts them, on a meta-device copy (nothing is computed).
    Elementwise work (ReLU, residual adds, pixel shuffle) is left out; tiled inference does
    more work than this (the overlaps), so its rate is the useful one."""
    import copy

    import torch
    from torch.utils.flop_counter import FlopCounterMode

    meta = copy.deepcopy(model).to("meta")
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        meta(torch.empty(shape, device="meta"))
    return counter.get_total_flops() / 1e9


def child(args: dict) -> dict:
    """One mode, in a fresh process: build, run `repeats` times, report the median time and the
    process's peak RSS."""
    import torch

    from sgsr import imaging
    from sgsr.devices import resolve_device
    from sgsr.infer import upscale
    from sgsr.models import build_model

    device = resolve_device("auto")
    torch.manual_seed(0)
    model = build_model(args["arch"], scale=4, **args["kwargs"]).eval().to(device)
    lr = imaging.to_tensor(np.load(args["input"]))
    fmt = {None: None, "contiguous": torch.contiguous_format}[args.get("memory_format")]
    rss_before = _rss_mib()
    upscale(model, lr[..., :16, :16], 4, memory_format=fmt)  # warm-up: lazy init, CUDA kernels
    if device.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    times = []
    for _ in range(args.get("repeats", 1)):
        start = time.perf_counter()
        sr = upscale(model, lr, 4, tile=args["tile"], overlap=args["overlap"], memory_format=fmt)
        if device.type == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    seconds = statistics.median(times)
    np.save(args["output"], sr[0].numpy())
    gflop = conv_gflop(model, lr.shape)
    out = {
        "seconds": seconds,
        "repeats": len(times),
        "megapixels_per_s": sr.shape[-1] * sr.shape[-2] / 1e6 / seconds,
        "gflop": gflop,
        "gflop_per_s": gflop / seconds,
        "peak_rss_mib": _peak_rss_mib(),
        "rss_before_mib": rss_before,
        "device": str(device),
    }
    if device.type == "cuda":
        out["peak_cuda_mib"] = torch.cuda.max_memory_allocated() / 2**20
    return out


def _spawn(args: dict) -> dict:
    code = "import json,sys; from benchmarks.bench_infer import child; "
    code += "print(json.dumps(child(json.loads(sys.argv[1]))))"
    env = {**os.environ, "PYTHONPATH": f"{REPO}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    proc = subprocess.run(
        [sys.executable, "-c", code, json.dumps(args)],
        capture_output=True,
        text=True,
        env=env,
        cwd=REPO,
        check=False,
    )
    if proc.returncode != 0:
        raise RuntimeError(f"bench_infer child failed: {proc.stderr[-2000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def run(quick: bool = False) -> dict:
    lr, source = _input(quick)
    tile, overlap = (16, 4) if quick else (TILE, OVERLAP)
    results: dict = {
        "input": f"{source} {lr.shape[1]}x{lr.shape[0]}",
        "weights": "random (seeded): speed and memory only",
        "tile": tile,
        "overlap": overlap,
        "models": {},
    }
    with tempfile.TemporaryDirectory() as tmp:
        np.save(Path(tmp) / "lr.npy", lr)
        for name, (arch, kwargs) in (QUICK if quick else FULL).items():
            modes = {}
            runs = [("whole", 0, None), ("tiled", tile, None)]
            if name.startswith("edsr"):  # the layout before channels_last, side by side
                runs.append(("whole_contiguous", 0, "contiguous"))
            for mode, t, fmt in runs:
                args = {
                    "arch": arch,
                    "kwargs": kwargs,
                    "input": str(Path(tmp) / "lr.npy"),
                    "output": str(Path(tmp) / f"{name}-{mode}.npy"),
                    "tile": t,
                    "overlap": overlap,
                    "repeats": 1 if quick or name.startswith("rcan") else 3,  # RCAN: ~70 s a run
                    "memory_format": fmt,
                }
                load = os.getloadavg()[0]
                modes[mode] = {**_spawn(args), "load_average_before": load}
            whole = np.load(Path(tmp) / f"{name}-whole.npy")
            tiled = np.load(Path(tmp) / f"{name}-tiled.npy")
            diff = np.abs(whole - tiled)
            q = np.abs(np.round(whole * 255).astype(int) - np.round(tiled * 255).astype(int))
            modes["tiling_error"] = {
                "max_abs": float(diff.max()),
                "mean_abs": float(diff.mean()),
                "max_uint8_levels": int(q.max()),
                "fraction_uint8_changed": float((q > 0).mean()),
            }
            modes["tiled_vs_whole_speed"] = (
                modes["tiled"]["megapixels_per_s"] / modes["whole"]["megapixels_per_s"]
            )
            modes["tiled_vs_whole_peak_rss"] = (
                modes["tiled"]["peak_rss_mib"] / modes["whole"]["peak_rss_mib"]
            )
            if "whole_contiguous" in modes:
                plain = np.load(Path(tmp) / f"{name}-whole_contiguous.npy")
                q = np.abs(np.round(whole * 255).astype(int) - np.round(plain * 255).astype(int))
                modes["layout_max_uint8_levels"] = int(q.max())
                modes["layout_speedup"] = (
                    modes["whole_contiguous"]["seconds"] / modes["whole"]["seconds"]
                )
            results["models"][name] = modes
    return results


if __name__ == "__main__":
    print(json.dumps(run(quick="--quick" in sys.argv), indent=2))
