"""GPU training throughput: fp32 vs bf16 autocast vs bf16 + channels_last (+ torch.compile).

EDSR-baseline x4, batch 16 of 48 px LR, L1 + SGL. Where no CUDA device is present the result
says so instead of a number.
"""

from __future__ import annotations

import json
import statistics
import sys
import time

import torch


def _variant(name: str, quick: bool) -> dict:
    from sgsr.losses import build_loss
    from sgsr.models import build_model

    batch, lr_px, steps = (4, 16, 3) if quick else (16, 48, 30)
    device = torch.device("cuda")
    model = build_model("edsr_baseline", scale=4).to(device)
    loss_fn = build_loss({"l1": 1.0, "sgl": 0.1}).to(device)
    channels_last = "channels_last" in name
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    step_model = torch.compile(model) if "compile" in name else model
    opt = torch.optim.Adam(model.parameters(), lr=1e-4)
    lr = torch.rand(batch, 3, lr_px, lr_px, device=device)
    hr = torch.rand(batch, 3, lr_px * 4, lr_px * 4, device=device)
    if channels_last:
        lr = lr.contiguous(memory_format=torch.channels_last)
    amp = name.startswith("bf16")
    torch.cuda.reset_peak_memory_stats()

    def step() -> None:
        with torch.autocast("cuda", dtype=torch.bfloat16, enabled=amp):
            sr = step_model(lr)
            total, _ = loss_fn(sr.float(), hr)
        opt.zero_grad(set_to_none=True)
        total.backward()
        opt.step()

    for _ in range(3 if quick else 10):
        step()
    torch.cuda.synchronize()
    times = []
    for _ in range(steps):
        start = time.perf_counter()
        step()
        torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    med = statistics.median(times)
    return {
        "ms_per_step": med * 1000,
        "samples_per_second": batch / med,
        "peak_memory_mib": torch.cuda.max_memory_allocated() / 2**20,
    }


def run(quick: bool = False) -> dict:
    if not torch.cuda.is_available():
        return {
            "measured": False,
            "reason": "no CUDA device on this machine; GPU part not measured",
        }
    variants = ["fp32", "bf16", "bf16_channels_last", "bf16_channels_last_compile"]
    results = {v: _variant(v, quick) for v in variants}
    base = results["fp32"]["samples_per_second"]
    for v in variants:
        results[v]["speedup_vs_fp32"] = results[v]["samples_per_second"] / base
    return {"measured": True, "gpu": torch.cuda.get_device_name(0), "variants": results}


if __name__ == "__main__":
    print(json.dumps(run(quick="--quick" in sys.argv), indent=2))
