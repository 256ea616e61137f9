"""The ``sgsr`` command: one subcommand per pipeline stage, plus tools for users' own images.

Each subcommand is a thin wrapper: parse arguments, load params, call one library function.
Heavy modules are imported inside the handlers so ``sgsr --help`` stays instant.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

from sgsr.config import DEFAULT_MAX_PIXELS, Config, ConfigError, load_config

#: Each pipeline stage ends with one INFO line on this logger (``sgsr <stage>: ...``).
log = logging.getLogger("sgsr.cli")


def _cfg(args: argparse.Namespace) -> Config:
    return load_config(args.params)


def _download(args: argparse.Namespace) -> None:
    cfg = _cfg(args)
    from sgsr.data.download import run

    out = run(cfg)
    sets = ", ".join(f"{k} {len(v.get('files', {}))}" for k, v in out["sets"].items())
    weights = out.get("weights") or {}
    ready = sum(1 for e in weights.values() if isinstance(e, dict) and e.get("present"))
    log.info(
        "%s images in data/raw (%s); pretrained weights: %d of %d verified in models/pretrained",
        cfg.data.source, sets, ready, len(weights),
    )  # fmt: skip


def _prepare(args: argparse.Namespace) -> None:
    cfg = _cfg(args)
    from sgsr.data.prepare import run

    for scale, counts in run(cfg).items():
        counts = dict(counts)
        patches, val = counts.pop("patches", 0), counts.pop("val", 0)
        tests = ", ".join(f"{k} {v}" for k, v in counts.items())
        log.info(
            "%s: %d training patches, %d validation image(s), test images %s in data/prepared",
            scale, patches, val, tests,
        )  # fmt: skip


def _train(args: argparse.Namespace) -> None:
    cfg = _cfg(args)
    from sgsr.gpu_share import run  # sgsr.train.run, plus train.runs_per_process

    run(cfg, args.run)


def _infer(args: argparse.Namespace) -> None:
    cfg = _cfg(args)
    from sgsr import layout
    from sgsr.imaging import list_images
    from sgsr.infer import run

    run(cfg, args.run)
    base = layout.pipeline_root(cfg)
    n = sum(len(list_images(base / layout.sr_set(args.run, s))) for s in cfg.data.test_sets)
    log.info("%s: %d images in %s", args.run, n, layout.sr_run(args.run))


def _evaluate(args: argparse.Namespace) -> None:
    from sgsr import evaluate, scoring
    from sgsr.metric_registry import REGISTRY

    if args.sr or args.hr:
        if not (args.sr and args.hr and args.scale is not None):
            raise ValueError("scoring folders needs all of --sr DIR --hr DIR --scale S")
        metrics = tuple(args.metrics.split(",")) if args.metrics else ("psnr", "ssim")
        result = scoring.score_folders(
            Path(args.sr),
            Path(args.hr),
            args.scale,
            metrics=metrics,
            pretrained=Path(args.pretrained) if args.pretrained else None,
            max_pixels=args.max_pixels,
            border=args.border,
        )
        if args.json:
            print(json.dumps(result, indent=2, allow_nan=True))
        else:
            print(scoring.format_table(result))
        return
    if not args.run:
        raise ValueError("sgsr evaluate needs --run NAME (pipeline) or --sr/--hr/--scale")
    out = evaluate.run(_cfg(args), args.run)
    for set_name, entry in out.items():  # metrics.json: {set: {metric: value, n_images}}
        shown = [
            f"{info.label} {entry[m]:{info.fmt}}" + (f" {info.unit}" if info.unit else "")
            for m, info in ((m, REGISTRY[m]) for m in ("psnr", "ssim"))
            if isinstance(entry.get(m), float)
        ]
        log.info(
            "%s on %s (%s images): %s", args.run, set_name, entry.get("n_images"),
            ", ".join(shown) or "scored",
        )  # fmt: skip


def _summarize(args: argparse.Namespace) -> None:
    cfg = _cfg(args)
    from sgsr.summary import summarize

    paths = summarize(cfg)
    log.info("%s", ", ".join(str(p) for p in paths))


def _report(args: argparse.Namespace) -> None:
    cfg = _cfg(args)
    from sgsr.report import run

    html = run(cfg)
    figures = len(list((html.parent / "figures").glob("*.png")))
    shown = os.path.relpath(html) if html.is_relative_to(Path.cwd()) else html
    log.info("%s (%d figures; the executed notebooks are beside it)", shown, figures)


def _results(args: argparse.Namespace) -> None:
    from sgsr.results import show

    print(show(Path(args.params).parent))


def _upscale(args: argparse.Namespace) -> None:
    from sgsr.infer import upscale_path

    upscale_path(
        Path(args.input),
        Path(args.output),
        weights=Path(args.weights),
        tile=args.tile,
        overlap=args.overlap,
        device=args.device,
        on_bad_image=args.on_bad_image,
        max_pixels=args.max_pixels,
    )


def _runs(args: argparse.Namespace) -> None:
    for run in _cfg(args).runs:
        print(run.name)


def _pull(args: argparse.Namespace) -> None:
    from sgsr.publish import pull

    outs = pull(Path(args.params).parent)
    log.info("%d trained run(s) pulled from the published remote; data prepared", len(outs))


def _publish(args: argparse.Namespace) -> None:
    from sgsr.publish import publish, published_bytes

    outs = publish(Path(args.params).parent)
    size = published_bytes(Path(args.params).parent) / 1e6
    log.info("%d trained run(s) in the published remote (%.1f MB)", len(outs), size)


def _positive_int(text: str) -> int:
    """argparse type: an integer >= 1 (the message names the value)."""
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text!r}")
    return value


def _non_negative_int(text: str) -> int:
    """argparse type: an integer >= 0 (the message names the value)."""
    try:
        value = int(text)
    except ValueError:
        value = -1
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be an integer >= 0, got {text!r}")
    return value


def _add_max_pixels(p: argparse.ArgumentParser, note: str = "") -> None:
    p.add_argument(
        "--max-pixels",
        type=_positive_int,
        default=DEFAULT_MAX_PIXELS,
        help="refuse images whose header declares more pixels (width x height) than this, "
        f"before decoding them (default: %(default)s){note}",
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="sgsr",
        description="Super-resolution with a second-order gradient loss: stages and tools.",
    )
    parser.add_argument(
        "--params", default="params.yaml", help="params file (default: %(default)s)"
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def add(
        name: str, fn: Callable[[argparse.Namespace], None], help: str
    ) -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=help, description=help)
        p.add_argument("--params", default=argparse.SUPPRESS, help="params file")
        p.set_defaults(func=fn)
        return p

    add("download", _download, "fetch the data sets and the LPIPS/FID/LPIPS-VGG weights")
    add("prepare", _prepare, "mod-crop HR, make MATLAB-bicubic LR, build the patch store")
    p = add("train", _train, "train one run (resumes from its checkpoint)")
    p.add_argument(
        "--run", required=True, help="run name <model>-<loss>-x<scale>[-s<seed>] (sgsr runs)"
    )
    p = add("infer", _infer, "upscale every test set with one run (or bicubic-x<s>)")
    p.add_argument("--run", required=True)
    p = add("evaluate", _evaluate, "score a run's SR images, or any folder pair with --sr/--hr")
    p.add_argument("--run", help="pipeline run to score")
    p.add_argument("--sr", help="folder of SR images (matched to --hr by file stem)")
    p.add_argument("--hr", help="folder of ground-truth HR images")
    p.add_argument(
        "--scale", type=_positive_int, help="SR scale; also the border cropped before scoring"
    )
    p.add_argument(
        "--border",
        type=_non_negative_int,
        help="pixels cropped from every side before scoring (default: the scale, the protocol; "
        "0 for calibration against published whole-image values)",
    )
    p.add_argument("--metrics", help="comma-separated metrics (default: psnr,ssim)")
    p.add_argument("--pretrained", help="folder with LPIPS/FID weights (models/pretrained)")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    _add_max_pixels(p, "; with --run, data.max_pixels applies")
    add(
        "summarize",
        _summarize,
        "results/summary.csv, summary_seeds.csv (spread over seeds) and paired.csv (each loss "
        "vs the baseline loss)",
    )
    add("report", _report, "execute the notebooks and render reports/report.html")
    p = add("upscale", _upscale, "apply trained weights to any image file or folder")
    p.add_argument("input", help="image file or folder")
    p.add_argument("output", help="output file (for a file) or folder")
    p.add_argument("--weights", required=True, help="models/<run>/model.safetensors")
    p.add_argument("--tile", type=int, default=0, help="tile side in LR pixels (0 = whole image)")
    p.add_argument("--overlap", type=int, default=16, help="tile overlap in LR pixels")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    p.add_argument(
        "--on-bad-image",
        choices=("error", "skip"),
        default="error",
        help="an unreadable or too large input stops the run (error, default) or is left out "
        "with a warning (skip)",
    )
    _add_max_pixels(p)
    add("runs", _runs, "list the runs the params define (replicate seeds included)")
    add("results", _results, "print run x set metrics, the gain over bicubic and the report's path")
    add(
        "pull",
        _pull,
        "fetch the published weights of every train stage (offline), then `dvc repro prepare`",
    )
    add("publish", _publish, "push every train stage's weights to the published remote")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from sgsr import console

    console.setup(f"sgsr {args.command}")
    try:
        args.func(args)
    except (ConfigError, ValueError, OSError, ArithmeticError) as exc:
        if os.environ.get("SGSR_DEBUG"):
            raise
        print(f"sgsr {args.command}: error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
