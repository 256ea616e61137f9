"""Training-step cost of an adversarial (ESRGAN-recipe) step against an L1 step.

    python benchmarks/bench_gan_step.py --pretrained DIR [--quick] [--sizes slim,baseline]

One full update on a fixed batch, batch 16 of 32 px LR patches at x4 (128 px HR, the VGG-style
discriminator's input): ``sgsr.step.train_step`` with L1 alone, and ``sgsr.gan.gan_step`` with
ESRGAN's recipe (pixel L1 1e-2, perceptual conv5_3 1.0, relativistic GAN 5e-3; the generator
update, then the discriminator's). Slim EDSR-baseline (6 x 32) and EDSR-baseline (16 x 64); the
two steps are timed interleaved, one each per round, in one process, so machine-load drifts hit
both alike; medians and the median paired ratio. DIR holds lpips_vgg.safetensors (the VGG16
trunk; `sgsr download` puts it in models/pretrained).
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import torch

SIZES = {"slim": (6, 32), "baseline": (16, 64)}
FULL = dict(batch=16, lr_patch=32, rounds=3, warmup=1, d_feat=64)
QUICK = dict(batch=2, lr_patch=8, rounds=1, warmup=1, d_feat=4)
SCALE = 4


def run(pretrained_dir: str, quick: bool = False, sizes: tuple[str, ...] = tuple(SIZES)) -> dict:
    from sgsr.config import TrainConfig
    from sgsr.gan import adversarial_term, attach_discriminator, build_gan_state, gan_step
    from sgsr.losses import build_loss
    from sgsr.models import build_model
    from sgsr.step import build_state, train_step

    size = QUICK if quick else FULL
    hr_side = size["lr_patch"] * SCALE
    opts = TrainConfig(iterations=10**6, batch_size=size["batch"], lr=1e-4, schedule="constant")
    g = torch.Generator().manual_seed(0)
    lr = torch.rand(size["batch"], 3, size["lr_patch"], size["lr_patch"], generator=g)
    hr = torch.rand(size["batch"], 3, hr_side, hr_side, generator=g)
    d_spec = {"arch": "vgg128", "num_feat": size["d_feat"], "input_size": hr_side}
    recipe = {
        "l1": 0.01,
        "perceptual": {"weight": 1.0, "layers": "esrgan"},
        "gan": {"weight": 0.005, "kind": "relativistic", "discriminator": d_spec},
    }
    out: dict = {
        "batch": f"{size['batch']} x {size['lr_patch']}px LR (x{SCALE}, {hr_side}px HR)",
        "threads": torch.get_num_threads(),
        "rounds": size["rounds"],
        "sizes": {},
    }
    for label in sizes:
        blocks, feats = SIZES[label]
        steps = {}
        for name, spec in (("l1", {"l1": 1.0}), ("esrgan", recipe)):
            torch.manual_seed(0)
            model = build_model("edsr_baseline", scale=SCALE, n_resblocks=blocks, n_feats=feats)
            loss = build_loss(spec, pretrained_dir=pretrained_dir)
            term = adversarial_term(loss)
            if term is not None:
                attach_discriminator(term)
            state = build_state(model, loss, opts)
            if term is None:
                steps[name] = lambda st=state: train_step(st, lr, hr)
            else:
                gs = build_gan_state(state, term)
                steps[name] = lambda st=state, gs=gs: gan_step(st, gs, lr, hr)
        for _ in range(size["warmup"]):
            for step in steps.values():
                step()
        times: dict[str, list[float]] = {name: [] for name in steps}
        for _ in range(size["rounds"]):
            for name, step in steps.items():
                t0 = time.perf_counter()
                step()
                times[name].append((time.perf_counter() - t0) * 1e3)
        out["sizes"][label] = {
            "model": f"edsr_baseline ({blocks} blocks, {feats} feats)",
            "step_ms": {k: statistics.median(v) for k, v in times.items()},
            "step_ms_all": times,
            "gan_step_ratio": statistics.median(
                a / b for a, b in zip(times["esrgan"], times["l1"], strict=True)
            ),
        }
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pretrained", required=True, help="folder with lpips_vgg.safetensors")
    parser.add_argument("--quick", action="store_true", help="tiny sizes (smoke test)")
    parser.add_argument("--sizes", default=",".join(SIZES), help="comma-separated of slim,baseline")
    args = parser.parse_args()
    sizes = tuple(args.sizes.split(","))
    print(json.dumps(run(args.pretrained, args.quick, sizes), indent=2))


if __name__ == "__main__":
    main()
