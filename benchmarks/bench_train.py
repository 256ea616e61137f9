"""Training-step time in the study configuration with L1 alone and with L1 + SGL per operator.

    python benchmarks/bench_train.py [--quick] [--rounds N]

The study configuration: slim EDSR-baseline x4 (6 blocks x 32 features), batch 16 of 24 px LR
patches, Adam, the torch thread count of the process (2 on the reference machine). One full
optimizer step (forward, loss, backward, Adam, schedule) through ``sgsr.train.train_step`` on a
fixed batch, so data loading is excluded. The configurations are timed interleaved, one step
each per round, in one process, so drifts in machine load hit them alike.

- ``sgl_overhead[op]``: median over 120 rounds of the paired ratio step(L1 + 0.1 SGL[op]) /
  step(L1) - 1 (same round), for every op in sgsr.gradients.OPERATORS. One step jitters by
  more than SGL costs (a few % of ~170 ms against ~1 ms), hence the pairing and the many rounds:
  at 60 the median still moved by about 1 % between runs.
- ``loss_ms``: the loss alone, forward + backward on a fixed SR-sized tensor, for L1, every
  operator x distance of SGL (weight 1, no L1 beside it) and of the first-order ``grad1`` term,
  interleaved the same way (each timed call right after an untimed one of the same term);
  ``loss_vs_l1`` the paired median ratio to L1;
  ``sgl_overhead_from_loss[op]`` = loss_ms[op] / median L1 step: the extra work the SGL term
  adds to a step (the network's backward is the same whatever the loss), a stable estimate
  beside the paired one.
- ``loss_ms_torch_ops``, ``fused_speedup``, ``sgl_overhead_torch_ops``: with the fused CPU
  kernel (``fused_kernel``), the same terms and steps through the torch ops it replaces (the
  path of an install without the extension), timed in the same rounds; the speed-up is the
  ratio of the medians, the overhead paired with the same round's L1 step.
- ``malloc_thresholds_pinned``: glibc's allocator policy fixed for the process (`_pin_malloc`).
- ``load_avg``: the 1-minute load average before and after, to judge the contention.
"""

from __future__ import annotations

import argparse
import ctypes
import json
import os
import statistics
import time

import torch

FULL = dict(n_resblocks=6, n_feats=32, batch=16, lr_patch=24, rounds=120, warmup=3, loss_rounds=60)
QUICK = dict(n_resblocks=2, n_feats=16, batch=2, lr_patch=16, rounds=3, warmup=1, loss_rounds=3)
SCALE = 4
SGL_WEIGHT = 0.1
DISTANCES = ("l1", "l2", "charbonnier")


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _paired(times: dict[str, list[float]], base: str) -> dict[str, float]:
    return {
        k: statistics.median(a / b for a, b in zip(v, times[base], strict=True))
        for k, v in times.items()
        if k != base
    }


def _pin_malloc() -> bool:
    """Fix glibc's mmap and trim thresholds (32 and 64 MiB) for this process, so that every
    configuration runs under one allocator policy: glibc raises its mmap threshold to the
    largest block freed so far, so a loss's large temporaries would otherwise be served by
    fresh, page-faulting mappings or from the heap depending on what ran before (measured here:
    L1 alone from 0.8 to 2 ms). A training process has freed the network's activations (tens of
    MB) before any loss runs, which leaves it where the pin puts it. False where there is no
    glibc."""
    try:
        libc = ctypes.CDLL(None)
        return bool(libc.mallopt(-3, 32 << 20)) and bool(libc.mallopt(-1, 64 << 20))
    except (OSError, AttributeError):
        return False


def run(quick: bool = False, rounds: int | None = None) -> dict:
    from sgsr import cstencil
    from sgsr.config import TrainConfig
    from sgsr.gradients import OPERATORS
    from sgsr.losses import build_loss
    from sgsr.models import build_model
    from sgsr.train import build_state, train_step

    size = dict(QUICK if quick else FULL)
    if rounds is not None:
        size["rounds"] = size["loss_rounds"] = rounds
    pinned = _pin_malloc()
    load_before = os.getloadavg()[0]
    specs = {"l1": {"l1": 1.0}}
    for op in sorted(OPERATORS):
        specs[op] = {"l1": 1.0, "sgl": {"weight": SGL_WEIGHT, "operator": op}}
    opts = TrainConfig(iterations=10**6, batch_size=size["batch"], lr=5e-4, schedule="constant")
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
    fused = cstencil.available() and device.type == "cpu"
    lib = cstencil._lib
    # with the fused kernel, the SGL steps also through the torch ops it replaces, same rounds
    steps = [(name, name, False) for name in states]
    if fused:
        steps += [(f"{name}@torch_ops", name, True) for name in states if name != "l1"]

    def step(name: str, torch_ops: bool) -> float:
        cstencil._lib = None if torch_ops else lib
        try:
            _sync(device)
            t0 = time.perf_counter()
            train_step(states[name], lr, hr)
            _sync(device)
            return (time.perf_counter() - t0) * 1e3
        finally:
            cstencil._lib = lib

    for _ in range(size["warmup"]):
        for _key, name, torch_ops in steps:
            step(name, torch_ops)
    times: dict[str, list[float]] = {key: [] for key, _, _ in steps}
    for _ in range(size["rounds"]):
        for key, name, torch_ops in steps:
            times[key].append(step(name, torch_ops))
    torch_ops_steps = {
        k.removesuffix("@torch_ops"): times.pop(k) for k in [k for k in times if "@" in k]
    }

    # the loss alone, forward + backward, on an SR-sized tensor
    loss_specs = {"l1": {"l1": 1.0}}
    for op in sorted(OPERATORS):
        for distance in DISTANCES:
            key = op if distance == "l1" else f"{op}/{distance}"
            loss_specs[key] = {"sgl": {"weight": 1.0, "operator": op, "distance": distance}}
    for distance in DISTANCES:
        key = "grad1" if distance == "l1" else f"grad1/{distance}"
        loss_specs[key] = {"grad1": {"weight": 1.0, "distance": distance}}
    sr0 = torch.rand_like(hr).to(device)
    hr_d = hr.to(device)
    losses = {name: build_loss(spec).to(device) for name, spec in loss_specs.items()}
    # with the fused kernel, every term also through the torch ops it replaces, same rounds
    variants = [(name, name, False) for name in losses]
    if fused:
        variants += [(f"{name}@torch_ops", name, True) for name in losses if name != "l1"]
    loss_times: dict[str, list[float]] = {key: [] for key, _, _ in variants}
    for r in range(size["loss_rounds"] + 3):
        for key, name, torch_ops in variants:
            cstencil._lib = None if torch_ops else lib
            try:
                # one untimed call first: each term is timed in the cache and allocator state
                # its own call leaves, not the one the term before it left
                for _ in range(2):
                    sr = sr0.clone().requires_grad_(True)
                    _sync(device)
                    t0 = time.perf_counter()
                    losses[name](sr, hr_d)[0].backward()
                    _sync(device)
            finally:
                cstencil._lib = lib
            if r >= 3:
                loss_times[key].append((time.perf_counter() - t0) * 1e3)
    torch_ops_ms = {
        k.removesuffix("@torch_ops"): statistics.median(loss_times.pop(k))
        for k in [k for k in loss_times if k.endswith("@torch_ops")]
    }

    step_ms = {k: statistics.median(v) for k, v in times.items()}
    loss_ms = {k: statistics.median(v) for k, v in loss_times.items()}
    ops = [k for k in specs if k != "l1"]
    return {
        "model": f"edsr_baseline x{SCALE} ({size['n_resblocks']} blocks, {size['n_feats']} feats)",
        "batch": f"{size['batch']} x {size['lr_patch']}px LR",
        "optimizer": "adam",
        "device": str(device),
        "threads": torch.get_num_threads(),
        "malloc_thresholds_pinned": pinned,
        # CPU SGL through the fused C kernel (sgsr.cstencil) or, without the build, torch ops
        "fused_kernel": cstencil.available() and device.type == "cpu",
        "rounds": size["rounds"],
        "load_avg": {"before": load_before, "after": os.getloadavg()[0]},
        "step_ms": step_ms,
        "step_ms_min": {k: min(v) for k, v in times.items()},
        "sgl_overhead": {op: v - 1.0 for op, v in _paired(times, "l1").items()},
        "loss_rounds": size["loss_rounds"],
        "loss_ms": loss_ms,
        "loss_vs_l1": _paired(loss_times, "l1"),
        "sgl_overhead_from_loss": {op: loss_ms[op] / step_ms["l1"] for op in ops},
        # the same terms as torch ops (the path without the extension), interleaved with the
        # fused ones: the kernel's speed-up measured side by side
        "loss_ms_torch_ops": torch_ops_ms,
        "fused_speedup": {k: v / loss_ms[k] for k, v in torch_ops_ms.items()},
        "sgl_overhead_torch_ops": {
            op: v - 1.0 for op, v in _paired({**torch_ops_steps, "l1": times["l1"]}, "l1").items()
        },
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="tiny sizes (smoke test)")
    parser.add_argument(
        "--rounds", type=int, help="interleaved rounds (default 120 steps, 60 losses)"
    )
    args = parser.parse_args()
    print(json.dumps(run(quick=args.quick, rounds=args.rounds), indent=2))


if __name__ == "__main__":
    main()
