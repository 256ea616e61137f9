"""Run every benchmark and write a JSON and a markdown table to benchmarks/results/.

    python benchmarks/run.py [--quick] [--only data,train,...] [--out DIR]

Each figure is a ratio measured side by side in one process run, with medians over repeats.
Not part of the test suite (a smoke test runs it with --quick sizes).
"""

from __future__ import annotations

import argparse
import datetime as dt
import importlib
import json
import os
import platform
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

BENCHMARKS = {
    "train": "benchmarks.bench_train",
    "data": "benchmarks.bench_data",
    "infer": "benchmarks.bench_infer",
    "eval": "benchmarks.bench_eval",
    "pipeline": "benchmarks.bench_pipeline",
    "gpu": "benchmarks.bench_gpu",
}


def machine() -> dict:
    import torch

    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        "torch": torch.__version__,
        "python": platform.python_version(),
        "platform": platform.platform(),
    }


def flatten(prefix: str, value, rows: list[tuple[str, str]]) -> None:
    if isinstance(value, dict):
        for key, sub in value.items():
            flatten(f"{prefix}.{key}" if prefix else str(key), sub, rows)
    elif isinstance(value, float):
        rows.append((prefix, f"{value:.4g}"))
    else:
        rows.append((prefix, json.dumps(value) if isinstance(value, list) else str(value)))


def to_markdown(report: dict) -> str:
    lines = [f"# Benchmarks ({report['date']}{', quick' if report['quick'] else ''})", ""]
    lines += ["| machine | |", "|---|---|"]
    lines += [f"| {k} | {v} |" for k, v in report["machine"].items()]
    for name, result in report["results"].items():
        rows: list[tuple[str, str]] = []
        flatten("", result, rows)
        lines += ["", f"## {name}", "", "| field | value |", "|---|---|"]
        lines += [f"| {k} | {v} |" for k, v in rows]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="tiny sizes (smoke test)")
    parser.add_argument("--only", help=f"comma-separated subset of {', '.join(BENCHMARKS)}")
    parser.add_argument("--out", default=str(HERE / "results"))
    args = parser.parse_args(argv)
    names = args.only.split(",") if args.only else list(BENCHMARKS)
    unknown = [n for n in names if n not in BENCHMARKS]
    if unknown:
        parser.error(f"unknown benchmark(s) {unknown}; choose from {', '.join(BENCHMARKS)}")
    report = {
        "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "quick": args.quick,
        "machine": machine(),
        "results": {},
    }
    for name in names:
        print(f"[bench] {name} ...", file=sys.stderr, flush=True)
        report["results"][name] = importlib.import_module(BENCHMARKS[name]).run(quick=args.quick)
    out = Path(args.out)
    stem = "quick" if args.quick else "latest"
    from sgsr.fsutil import write_text

    write_text(out / f"{stem}.json", json.dumps(report, indent=2) + "\n")
    write_text(out / f"{stem}.md", to_markdown(report))
    print(to_markdown(report))
    return report


if __name__ == "__main__":
    main()
