"""Training-step time for EDSR-baseline x4 with L1 alone and with L1 + SGL per operator.

    python benchmarks/bench_train.py [--quick]

One full optimizer step (forward, loss, backward, Adam, schedule) through ``sgsr.train.train_step``
on a fixed batch, so data loading is excluded. The configurations are timed interleaved, one step
each per round, in one process, so drifts in machine load hit them alike.

- ``sgl_overhead[op]``: median over rounds of the paired ratio step(L1 + SGL[op]) / step(L1) - 1
  (same round), for every op in sgsr.gradients.OPERATORS. On a shared 2-core machine one CPU
  step jitters by a few percent, more than SGL costs, so also:
- ``loss_ms``: the loss alone (forward + backward on a fixed SR-sized tensor), many repeats;
  ``sgl_overhead_from_loss[op]`` = (loss_ms[op] - loss_ms[l1]) / fastest L1 step: the extra work
  SGL adds (the network's backward is the same whatever the loss), a stable estimate.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import torch

FULL = dict(n_resblocks=16, n_feats=64, batch=16, lr_patch=48, rounds=7, warmup=1)
QUICK = dict(n_resblocks=2, n_feats=16, batch=2, lr_patch=16, rounds=3, warmup=1)
SCALE = 4
SGL_WEIGHT = 0.1


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def run(quick: bool = False) -> dict:
    from sgsr.config import TrainConfig
    from sgsr.gradients import OPERATORS
    from sgsr.losses import build_loss
    from sgsr.models import build_model
    from sgsr.train import build_state, train_step

    size = QUICK if quick else FULL
    specs = {"l1": {"l1": 1.0}}
    for op in sorted(OPERATORS):
        specs[op] = {"l1": 1.0, "sgl": {"weight": SGL_WEIGHT, "operator": op}}
    opts = TrainConfig(iterations=10**6, batch_size=size["batch"], lr=1e-4, schedule="constant")
    g = torch.Generator().manual_seed(0)
    lr = torch.rand(size["batch"], 3, size["lr_patch"], size["lr_patch"], generator=g)
    hr = torch.rand(
        size["batch"], 3, size["lr_patch"] * SCALE, size["lr_patch"] * SCALE, generator=g
    )

    states = {}
    for name, spec in specs.items():
        torch.manual_seed(0)
        model = build_model(
            "edsr_baseline", scale=SCALE, n_resblocks=size["n_resblocks"], n_feats=size["n_feats"]
        )
        states[name] = build_state(model, build_loss(spec), opts)
    device = next(iter(states.values())).device

    for _ in range(size["warmup"]):
        for st in states.values():
            train_step(st, lr, hr)
    times: dict[str, list[float]] = {name: [] for name in states}
    for _ in range(size["rounds"]):
        for name, st in states.items():
            _sync(device)
            t0 = time.perf_counter()
            train_step(st, lr, hr)
            _sync(device)
            times[name].append((time.perf_counter() - t0) * 1e3)

    # the loss alone, forward + backward, on an SR-sized tensor
    sr0 = torch.rand_like(hr).to(device)
    hr_d = hr.to(device)
    loss_times: dict[str, list[float]] = {name: [] for name in specs}
    losses = {name: build_loss(spec).to(device) for name, spec in specs.items()}
    for r in range(22):
        for name, fn in losses.items():
            sr = sr0.clone().requires_grad_(True)
            _sync(device)
            t0 = time.perf_counter()
            fn(sr, hr_d)[0].backward()
            _sync(device)
            if r >= 2:
                loss_times[name].append((time.perf_counter() - t0) * 1e3)

    step_ms = {k: statistics.median(v) for k, v in times.items()}
    loss_ms = {k: statistics.median(v) for k, v in loss_times.items()}
    fastest = min(times["l1"])
    ops = [k for k in specs if k != "l1"]
    return {
        "model": f"edsr_baseline x{SCALE} ({size['n_resblocks']} blocks, {size['n_feats']} feats)",
        "batch": f"{size['batch']} x {size['lr_patch']}px LR",
        "device": str(device),
        "threads": torch.get_num_threads(),
        "rounds": size["rounds"],
        "step_ms": step_ms,
        "step_ms_min": {k: min(v) for k, v in times.items()},
        "step_ms_all": times,
        "sgl_overhead": {
            op: statistics.median(a / b - 1.0 for a, b in zip(times[op], times["l1"], strict=True))
            for op in ops
        },
        "loss_ms": loss_ms,
        "sgl_overhead_from_loss": {op: (loss_ms[op] - loss_ms["l1"]) / fastest for op in ops},
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="tiny sizes (smoke test)")
    args = parser.parse_args()
    print(json.dumps(run(quick=args.quick), indent=2))


if __name__ == "__main__":
    main()
