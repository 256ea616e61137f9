"""The ``sgsr`` command: one subcommand per pipeline stage, plus tools for users' own images.

Each subcommand is a thin wrapper: parse arguments, load params, call one library function.
Heavy modules are imported inside the handlers, so ``sgsr --help``, ``sgsr runs`` and
``sgsr results`` never import torch (tests/test_cli.py pins it); a pipeline stage loads its
params through sgsr.preflight, which checks that every model and loss can be built.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

import yaml

from sgsr import __version__, console, dvc_plots, layout, run_index
from sgsr.config import DEFAULT_MAX_PIXELS, Config, ConfigError, load_config, write_run_index
from sgsr.dryrun import dry_run
from sgsr.metric_registry import NAMES as METRIC_NAMES
from sgsr.metric_registry import QUICK_NAMES, REGISTRY
from sgsr.publish import publish, published_bytes, pull, pull_absent

#: Each pipeline stage ends with one INFO line on this logger (``sgsr <stage>: ...``).
log = logging.getLogger("sgsr.cli")


def _cfg(args: argparse.Namespace) -> Config:
    """The params a pipeline stage runs on, checked to be buildable (sgsr.preflight)."""
    from sgsr import preflight  # builds models and losses: torch, only for pipeline stages

    return preflight.load(args.params)


def _download(args: argparse.Namespace) -> None:
    cfg = _cfg(args)
    from sgsr.data.download import run  # torch (via imaging), only for this stage

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
    from sgsr.data.prepare import run  # torch (via imaging), only for this stage

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
    from sgsr.gpu_share import run  # torch; sgsr.train.run, plus train.runs_per_process

    run(cfg, args.run)


def _infer(args: argparse.Namespace) -> None:
    cfg = _cfg(args)
    from sgsr.imaging import list_images  # these two import torch: only for this stage
    from sgsr.infer import run

    run(cfg, args.run)
    base = layout.pipeline_root(cfg)
    n = sum(len(list_images(base / layout.sr_set(args.run, s))) for s in cfg.data.test_sets)
    log.info("%s: %d images in %s", args.run, n, layout.sr_run(args.run))


def _evaluate(args: argparse.Namespace) -> None:
    from sgsr import evaluate, scoring  # torch and the metric packages, only for this stage

    if args.sr or args.hr:
        if not (args.sr and args.hr and args.scale is not None):
            raise ValueError("scoring folders needs all of --sr DIR --hr DIR --scale S")
        metrics = QUICK_NAMES
        if args.metrics is not None:
            metrics = tuple(m.strip() for m in args.metrics.split(",") if m.strip())
            if not metrics:
                raise ValueError(
                    f"--metrics {args.metrics!r} names no metric; leave it out for "
                    + ",".join(QUICK_NAMES)
                )
        result = scoring.score_folders(
            Path(args.sr),
            Path(args.hr),
            args.scale,
            metrics=metrics,
            pretrained=Path(args.pretrained) if args.pretrained else None,
            max_pixels=args.max_pixels,
            border=args.border,
            fid_protocol=args.fid_protocol,
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
            for m, info in ((m, REGISTRY[m]) for m in QUICK_NAMES)
            if isinstance(entry.get(m), float)
        ]
        log.info(
            "%s on %s (%s images): %s", args.run, set_name, entry.get("n_images"),
            ", ".join(shown) or "scored",
        )  # fmt: skip


def _summarize(args: argparse.Namespace) -> None:
    cfg = _cfg(args)
    from sgsr.summary import summarize  # torch (via scoring), only for this stage

    paths = summarize(cfg)
    log.info("%s", ", ".join(str(p) for p in paths))


def _report(args: argparse.Namespace) -> None:
    cfg = _cfg(args)
    from sgsr.report import run  # torch, papermill and nbconvert, only for this stage

    html = run(cfg)
    figures = len(list((html.parent / "figures").glob("*.png")))
    shown = os.path.relpath(html) if html.is_relative_to(Path.cwd()) else html
    log.info("%s (%d figures; the executed notebooks are beside it)", shown, figures)


def _plots(args: argparse.Namespace) -> None:
    index = dvc_plots.show(Path(args.params).parent, args.out, args.targets)
    log.info("%s (offline: vega is inline)", index)


def _results(args: argparse.Namespace) -> None:
    from sgsr.results import show  # pandas: `sgsr --help` and `sgsr runs` do without it

    print(show(Path(args.params).parent))


def _upscale(args: argparse.Namespace) -> None:
    from sgsr.infer import upscale_path  # torch, only for this command

    written = upscale_path(
        args.input,  # as typed: Path("") would be the current folder
        args.output,
        weights=Path(args.weights),
        tile=args.tile,
        overlap=args.overlap,
        device=args.device,
        on_bad_image=args.on_bad_image,
        max_pixels=args.max_pixels,
    )
    where = written[0] if written and Path(args.input).is_file() else Path(args.output)
    log.info("%d image(s) upscaled with %s -> %s", len(written), args.weights, where)


def _runs(args: argparse.Namespace) -> None:
    if args.write:
        _write_runs(Path(args.params))
    for run in load_config(args.params).runs:
        print(run.name)


def _pull(args: argparse.Namespace) -> None:
    if args.absent:
        pulled, unpublished = pull_absent(Path(args.params).parent)
        # a run's weights and curves are two outputs of one stage: count and name runs
        fetched = list(dict.fromkeys(Path(o.path).name for o in pulled))
        if fetched:
            log.info(
                "%d trained run(s) fetched from the published remote, so dvc repro does not "
                "retrain them: %s", len(fetched), ", ".join(fetched),
            )  # fmt: skip
        if unpublished:
            log.info(
                "%d run(s) in dvc.lock are not in the published remote; dvc repro trains them",
                len({o.stage for o in unpublished}),
            )
        return
    outs = pull(Path(args.params).parent)
    runs = len({o.stage for o in outs})  # a run's weights and curves are two outputs
    log.info("%d trained run(s) pulled from the published remote; data prepared", runs)


def _dry(args: argparse.Namespace) -> None:
    status = dry_run(Path(args.params).parent, args.targets)
    if status:
        raise SystemExit(status)


def _publish(args: argparse.Namespace) -> None:
    outs = publish(Path(args.params).parent)
    size = published_bytes(Path(args.params).parent) / 1e6
    runs = len({o.stage for o in outs})  # a run's weights and curves are two outputs
    log.info("%d trained run(s) in the published remote (%.1f MB)", runs, size)


def _write_runs(params: Path) -> None:
    """``sgsr runs --write``: the params' runs: block, then the stage names of the lock beside."""
    if write_run_index(params):
        print(f"{params}: runs: block regenerated from experiment:", file=sys.stderr)
    lock = params.parent / "dvc.lock"
    seed = (yaml.safe_load(params.read_text()) or {}).get("seed", 0)
    if lock.is_file() and (n := run_index.rename_lock_file(lock, seed)):
        print(f"{lock}: {n} stage(s) renamed to run names", file=sys.stderr)


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
    parser.add_argument("--version", action="version", version=f"sgsr {__version__}")
    parser.add_argument(
        "--params",
        default="params.yaml",
        help="params file of the pipeline commands (default: %(default)s)",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def add(
        name: str, fn: Callable[[argparse.Namespace], None], help: str, params: bool = True
    ) -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=help, description=help)
        if params:
            p.add_argument(
                "--params",
                default=argparse.SUPPRESS,
                help="params file (default: params.yaml, or the --params before the command)",
            )
        p.set_defaults(func=fn)
        return p

    run_help = "run name <model>-<loss>-x<scale>[-s<seed>] as `sgsr runs` lists it"
    add("download", _download, "fetch the data sets and the LPIPS/FID/LPIPS-VGG weights")
    add("prepare", _prepare, "mod-crop HR, make MATLAB-bicubic LR, build the patch store")
    p = add("train", _train, "train one run (resumes from its checkpoint)")
    p.add_argument("--run", required=True, help=run_help)
    p = add("infer", _infer, "upscale every test set with one run (or bicubic-x<s>)")
    p.add_argument("--run", required=True, help=f"{run_help}, or bicubic-x<scale>")
    p = add("evaluate", _evaluate, "score a run's SR images, or any folder pair with --sr/--hr")
    p.add_argument("--run", help=f"pipeline run to score ({run_help}, or bicubic-x<scale>)")
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
    p.add_argument(
        "--metrics",
        help=f"comma-separated metrics, of: {', '.join(METRIC_NAMES)} "
        f"(default: {','.join(QUICK_NAMES)})",
    )
    p.add_argument(
        "--pretrained",
        help="folder with the metric weights `sgsr download` fetched, looked in first (then the "
        "checkout's models/pretrained, then the user cache)",
    )
    p.add_argument(
        "--fid-protocol",
        choices=("patches", "whole"),
        default="patches",
        help="FID/KID samples: seeded 64 px patches (default) or whole images resized to 299 "
        "(the field's protocol: BasicSR, LDL, pytorch-fid)",
    )
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    _add_max_pixels(p, "; with --run, data.max_pixels applies")
    add(
        "summarize",
        _summarize,
        "results/summary.csv, summary_seeds.csv (spread over seeds) and paired.csv (each loss "
        "vs the baseline loss)",
    )
    add("report", _report, "execute the notebooks and render reports/report.html")
    p = add(
        "plots",
        _plots,
        "dvc plots show with vega inline, so the page works offline (runs overlaid per chart)",
    )
    p.add_argument("targets", nargs="*", help="plot ids or files (default: dvc.yaml's plots)")
    p.add_argument("-o", "--out", default="dvc_plots", help="output folder (default: %(default)s)")
    p = add("upscale", _upscale, "apply trained weights to any image file or folder", False)
    p.add_argument("input", help="image file or folder")
    p.add_argument("output", help="output file (for a file) or folder")
    p.add_argument("--weights", required=True, help="models/<run>/model.safetensors")
    p.add_argument(
        "--tile",
        type=_non_negative_int,
        default=0,
        help="tile side in LR pixels, to bound memory on large images (default: %(default)s, "
        "the whole image at once)",
    )
    p.add_argument(
        "--overlap",
        type=_non_negative_int,
        default=16,
        help="tile overlap in LR pixels; less than half of --tile (default: %(default)s)",
    )
    p.add_argument(
        "--device", default="auto", help="auto, cpu, cuda or cuda:N (default: %(default)s)"
    )
    p.add_argument(
        "--on-bad-image",
        choices=("error", "skip"),
        default="error",
        help="an unreadable or too large input stops the run (error, default) or is left out "
        "with a warning (skip)",
    )
    _add_max_pixels(p)
    p = add("runs", _runs, "list the runs the params define (replicate seeds included)")
    p.add_argument(
        "--write",
        action="store_true",
        help="first regenerate the params' runs: block (the stage names dvc.yaml expands) from "
        "experiment:, and rename matrix-named stages in the dvc.lock beside it to run names",
    )
    add("results", _results, "print run x set metrics, the gain over bicubic and the report's path")
    p = add(
        "pull",
        _pull,
        "fetch the published weights of every train stage (offline), then `dvc repro prepare`",
    )
    p.add_argument(
        "--absent",
        action="store_true",
        help="only the runs whose folder is not in the workspace and that are published, no "
        "error for the others and no prepare (what `make repro` runs before `dvc repro`)",
    )
    add("publish", _publish, "push every train stage's weights to the published remote")
    p = add(
        "dry",
        _dry,
        "list what `dvc repro` would run, also on a fresh clone with no data yet (`dvc repro "
        "--dry` with DVC's run-cache lookup skipped for inputs that do not exist yet)",
    )
    p.add_argument("targets", nargs="*", help="stages to list (default: every stage)")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)

    console.setup(f"sgsr {args.command}")
    try:
        args.func(args)
    except Exception as exc:  # every failure is one message and exit status 2, no traceback
        if os.environ.get("SGSR_DEBUG"):
            raise
        print(f"sgsr {args.command}: error: {failure_message(exc)}", file=sys.stderr)
        return 2
    return 0


def failure_message(exc: BaseException) -> str:
    """What `main` prints for `exc`. sgsr's own errors (ValueError, OSError, ArithmeticError and
    their kinds) already name the key or file; anything else is described by its kind, with
    what to try for running out of memory or nesting, and how to see the traceback."""
    if isinstance(exc, ConfigError | ValueError | OSError | ArithmeticError):
        return str(exc)
    text = str(exc).strip().splitlines()[0][:500] if str(exc).strip() else ""
    if isinstance(exc, MemoryError) or any(
        m in text.lower() for m in ("out of memory", "not enough memory")
    ):  # torch reports its allocators' failures as RuntimeError (OutOfMemoryError on CUDA)
        return (
            f"out of memory ({type(exc).__name__}{': ' + text[:200] if text else ''}). Lower "
            "what sizes the work: train.batch_size, "
            "infer.tile (or --tile), data.max_pixels (or --max-pixels)"
        )
    if isinstance(exc, RecursionError):
        return f"an input is nested too deeply to read (RecursionError: {exc})"
    return (
        f"unexpected {type(exc).__name__}{': ' + text if text else ''}. This is sgsr's bug or an "
        "input it does not check yet; rerun with SGSR_DEBUG=1 for the traceback and report it"
    )


if __name__ == "__main__":
    sys.exit(main())
