"""Training-step cost of the LPIPS-VGG loss term against L1 alone, at the study's size.

    python benchmarks/bench_lpips_loss.py [--quick] [--pretrained models/pretrained]

One full optimizer step (forward, loss, backward, Adam) through ``sgsr.train.train_step`` on a
fixed batch: slim EDSR-baseline (6 blocks x 32 features), batch 16 of 24 px LR patches, x4 (the
study profile's size). L1 and L1 + 0.1 LPIPS-VGG are timed interleaved, one step each per round,
in one process, so machine-load drifts hit both alike; medians and the median paired ratio.

The VGG16 weights do not change the arithmetic: without ``--pretrained`` a random backbone is
timed (never a reportable LPIPS value, only a cost).
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import torch

FULL = dict(n_resblocks=6, n_feats=32, batch=16, lr_patch=24, rounds=9, warmup=2)
QUICK = dict(n_resblocks=1, n_feats=8, batch=2, lr_patch=8, rounds=2, warmup=1)
SCALE = 4


def run(quick: bool = False, pretrained_dir: str | None = None) -> dict:
    from sgsr.config import TrainConfig
    from sgsr.losses import CompositeLoss, L1Loss, LPIPSVGGLoss
    from sgsr.models import build_model
    from sgsr.train import build_state, train_step

    size = QUICK if quick else FULL
    opts = TrainConfig(iterations=10**6, batch_size=size["batch"], lr=1e-4, schedule="constant")
    g = torch.Generator().manual_seed(0)
    lr = torch.rand(size["batch"], 3, size["lr_patch"], size["lr_patch"], generator=g)
    hr = torch.rand(
        size["batch"], 3, size["lr_patch"] * SCALE, size["lr_patch"] * SCALE, generator=g
    )
    lpips = LPIPSVGGLoss(pretrained_dir, random_backbone=pretrained_dir is None)
    losses = {
        "l1": CompositeLoss({"l1": (1.0, L1Loss())}),
        "l1+lpips_vgg": CompositeLoss({"l1": (1.0, L1Loss()), "lpips_vgg": (0.1, lpips)}),
    }
    states = {}
    for name, loss in losses.items():
        torch.manual_seed(0)
        model = build_model(
            "edsr_baseline", scale=SCALE, n_resblocks=size["n_resblocks"], n_feats=size["n_feats"]
        )
        states[name] = build_state(model, loss, opts)
    for _ in range(size["warmup"]):
        for st in states.values():
            train_step(st, lr, hr)
    times: dict[str, list[float]] = {name: [] for name in states}
    for _ in range(size["rounds"]):
        for name, st in states.items():
            t0 = time.perf_counter()
            train_step(st, lr, hr)
            times[name].append((time.perf_counter() - t0) * 1e3)
    ratio = statistics.median(
        a / b for a, b in zip(times["l1+lpips_vgg"], times["l1"], strict=True)
    )
    return {
        "model": f"edsr_baseline x{SCALE} ({size['n_resblocks']} blocks, {size['n_feats']} feats)",
        "batch": f"{size['batch']} x {size['lr_patch']}px LR",
        "weights": pretrained_dir or "random VGG16 backbone (timing only)",
        "threads": torch.get_num_threads(),
        "rounds": size["rounds"],
        "step_ms": {k: statistics.median(v) for k, v in times.items()},
        "step_ms_all": times,
        "lpips_vgg_step_ratio": ratio,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="tiny sizes (smoke test)")
    parser.add_argument("--pretrained", help="folder with lpips_vgg.safetensors")
    args = parser.parse_args()
    print(json.dumps(run(quick=args.quick, pretrained_dir=args.pretrained), indent=2))


if __name__ == "__main__":
    main()
