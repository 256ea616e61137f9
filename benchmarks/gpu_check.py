"""The GPU check, in one command, for a person with a GPU machine (under 8 minutes):

    python3 benchmarks/gpu_check.py [--out FILE] [--site DIR] [--iterations N]

from the repository root. It writes one JSON (default ``benchmarks/results/gpu_check.json``)
and prints a summary. Steps, each recorded with its outcome, none stopping the others:

1. prerequisites: Python, torch, the CUDA device, every module each later step imports, the
   datasets, git; what is missing is named with the pinned wheel to fetch elsewhere;
2. the CUDA tests (``pytest -m cuda`` on tests/test_gpu_trainer.py, and
   tests/test_losses.py::test_cuda_matches_cpu);
3. a short run of the ``gpu`` profile in a throwaway copy (``--iterations``, default 400, and
   the primary seed only: 5 runs, trained 5 at once as the profile does, every test set, every
   metric): through ``dvc repro`` where DVC is installed, else the same stage commands in the
   same order; timed per phase, and projected to the full profile (15 runs x 8000 iterations);
4. ``benchmarks/bench_gpu.py`` with the time that is left.

A bare machine with only the repository copied works (Python 3.12, torch,
torchvision, numpy, scipy, scikit-image, pandas, safetensors, psutil preinstalled, no network):
``--site DIR`` (or ``$SGSR_SITE``) names a folder of extra pure-Python packages installed with
``pip install --no-index --no-deps --target DIR wheels/*.whl``; ``src/`` is put on the path,
and an ``sgsr`` command is provided for the pipeline's stages. The datasets come from
``$SGSR_SHARED_DATASETS`` (default ``../shared/datasets`` beside the repository).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("SGSR_SHARED_DATASETS", REPO.parent / "shared" / "datasets"))
TOTAL_BUDGET_S = 420  # the check must end within 8 minutes: this leaves a margin
FULL_ITERATIONS = 8000
FULL_RUNS = 15

#: module -> the distribution (requirements.lock name) that provides it, per step.
NEEDS: dict[str, dict[str, str]] = {
    "core": {
        "torch": "torch", "numpy": "numpy", "scipy": "scipy", "PIL": "pillow", "yaml": "pyyaml",
        "tqdm": "tqdm", "safetensors": "safetensors", "pandas": "pandas",
    },
    "train": {"dvclive": "dvclive"},
    "evaluate": {"piq": "piq"},
    "tests": {"pytest": "pytest"},
    "dvc": {"dvc": "dvc"},
    "report": {
        "papermill": "papermill", "nbformat": "nbformat", "nbconvert": "nbconvert",
        "ipykernel": "ipykernel", "matplotlib": "matplotlib", "seaborn": "seaborn",
    },
}  # fmt: skip
DATASETS = ("T91", "BSD200", "Set5", "Set14", "BSD100", "Urban100")


def _env(site: Path | None, shim: Path | None = None) -> dict[str, str]:
    env = dict(os.environ)
    paths = [str(REPO / "src"), str(REPO)] + ([str(site)] if site else [])
    env["PYTHONPATH"] = os.pathsep.join([*paths, env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    bins = [str(Path(sys.executable).parent)] + ([str(shim)] if shim else [])
    env["PATH"] = os.pathsep.join([*bins, env.get("PATH", "")])
    env["SGSR_SHARED_DATASETS"] = str(SHARED)
    env.setdefault("PYTHONHASHSEED", "0")
    return env


def _run(cmd: list[str], env: dict, timeout: float, cwd: Path = REPO) -> dict:
    """Run `cmd`: exit code, seconds, the output's tail; never raises (a timeout is a result)."""
    t0 = time.perf_counter()
    try:
        proc = subprocess.run(
            cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=max(1.0, timeout)
        )
        rc, out = proc.returncode, proc.stdout + proc.stderr
    except subprocess.TimeoutExpired as exc:
        rc = "timeout"
        parts = (exc.stdout, exc.stderr)
        out = "".join(
            p.decode(errors="replace") if isinstance(p, bytes) else p or "" for p in parts
        )
    return {"rc": rc, "seconds": round(time.perf_counter() - t0, 1), "tail": out[-4000:]}


def _pins() -> dict[str, str]:
    pins = {}
    lock = REPO / "requirements.lock"
    if lock.is_file():
        for line in lock.read_text().splitlines():
            if "==" in line and not line.startswith("#"):
                name, version = line.split("==", 1)
                pins[name.strip().lower().replace("_", "-")] = version.strip()
    return pins


_PROBE = """
import importlib, json, sys
out = {}
for name in sys.argv[1:]:
    try:
        importlib.import_module(name)
        out[name] = None
    except Exception as exc:
        out[name] = f"{type(exc).__name__}: {exc}"
print(json.dumps(out))
"""


def prerequisites(env: dict) -> dict:
    """What each step needs and what is missing, with the wheels to fetch for it."""
    modules = [m for group in NEEDS.values() for m in group]
    probe = subprocess.run(
        [sys.executable, "-c", _PROBE, *modules], env=env, capture_output=True, text=True
    )
    try:
        found = json.loads(probe.stdout.strip().splitlines()[-1])
    except (ValueError, IndexError):
        found = {m: f"probe failed: {probe.stderr[-300:]}" for m in modules}
    pins = _pins()
    missing: dict[str, dict[str, str]] = {}
    for step, group in NEEDS.items():
        for module in group:
            if found.get(module):
                missing.setdefault(step, {})[module] = found[module]
    wheels = set()
    for step, mods in missing.items():
        for module, why in mods.items():
            wheels.add(NEEDS[step][module])
            named = re.search(r"No module named '([\w.]+)'", why)
            if named and named.group(1).split(".")[0] != module:  # a dependency of it
                wheels.add(named.group(1).split(".")[0].replace("_", "-"))
    pinned = sorted(f"{w}=={pins[w]}" if w in pins else w for w in wheels)
    cuda = {}
    torch_info = subprocess.run(
        [sys.executable, "-c", "import torch, json; print(json.dumps({'torch': torch.__version__,"
         " 'cuda': torch.cuda.is_available(), 'device': torch.cuda.get_device_name(0) if "
         "torch.cuda.is_available() else None, 'cuda_version': torch.version.cuda}))"],
        env=env, capture_output=True, text=True,
    )  # fmt: skip
    try:
        cuda = json.loads(torch_info.stdout.strip().splitlines()[-1])
    except (ValueError, IndexError):
        cuda = {"error": torch_info.stderr[-500:]}
    data = {name: (SHARED / name).is_dir() for name in DATASETS}
    out = {
        "python": platform.python_version(),
        **cuda,
        "datasets": str(SHARED),
        "datasets_present": data,
        "git": shutil.which("git") is not None,
        "missing": missing,
    }
    if pinned:
        out["fetch_elsewhere"] = (
            "pip download --no-deps --only-binary=:all: --python-version "
            f"{sys.version_info.major}.{sys.version_info.minor} -d wheels " + " ".join(pinned)
        )
        out["install_here"] = "pip install --no-index --no-deps --target /tmp/site wheels/*.whl"
    return out


def cuda_tests(env: dict, budget: float) -> dict:
    pytest = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-rs"]
    ours = _run([*pytest, "-m", "cuda", "tests/test_gpu_trainer.py"], env, budget * 0.8)
    losses = _run([*pytest, "tests/test_losses.py::test_cuda_matches_cpu"], env, budget * 0.2)
    return {"test_gpu_trainer_cuda": _summary(ours), "test_losses_cuda": _summary(losses)}


def _summary(result: dict) -> dict:
    counts = dict(
        (k, int(v))
        for v, k in re.findall(r"(\d+) (passed|failed|skipped|errors?|deselected)", result["tail"])
    )
    return {**result, "counts": counts, "ok": result["rc"] == 0 and "passed" in counts}


def short_overrides(iterations: int) -> dict:
    """The gpu profile with `iterations` and the primary seed only (5 runs: one group)."""
    return {
        "experiment": {"replicates": []},
        "train": {
            "iterations": iterations,
            "checkpoint_every": iterations,
            "val_every": iterations,
            "log_every": max(1, iterations // 10),
            "warmup": max(1, iterations * 400 // FULL_ITERATIONS),
        },
    }


def short_profile(env: dict, overrides: dict, budget: float, use_dvc: bool, report: bool) -> dict:
    """A copy of the gpu profile with `overrides`, run phase by phase (data, train, the rest)
    with ``dvc repro`` or, without DVC, dvc.yaml's commands; timings, run cards, Set5 PSNR."""
    from sgsr.pipeline_copy import deep_update, make_profile_copy

    deadline = time.monotonic() + budget
    iterations = deep_update({"train": {"iterations": FULL_ITERATIONS}}, overrides)["train"][
        "iterations"
    ]
    with tempfile.TemporaryDirectory(prefix="sgsr-gpu-check-") as tmp:
        folder = make_profile_copy(
            REPO, Path(tmp) / "repo", overrides, env=env, dvc=use_dvc, datasets=SHARED
        )
        last = "report" if report else "summarize"
        if use_dvc:
            dvc = [sys.executable, "-m", "dvc", "repro"]
            phases = {
                "data": [[*dvc, "prepare"]],
                "train": [[*dvc, "train"]],
                "rest": [[*dvc, last]],
            }
        else:
            phases = _direct_commands(folder, last)
        timings: dict = {"mode": "dvc repro" if use_dvc else "sgsr stage commands (no dvc)"}
        logs = ""
        for phase, commands in phases.items():
            t0 = time.perf_counter()
            for cmd in commands:
                left = deadline - time.monotonic()
                r = _run(cmd, env, left, cwd=folder)
                logs += r["tail"]
                if r["rc"] != 0:
                    timings[phase] = {"failed": " ".join(cmd[-3:]), **r}
                    return {"ok": False, **timings}
            timings[phase] = {"seconds": round(time.perf_counter() - t0, 1)}
        runs = _run_cards(folder)
        psnr = _set5_psnr(folder)
        groups = [
            [leader, *others.split(", ")]
            for leader, others in re.findall(
                r"(\S+): training \d+ runs at once in this process \(([^)]*)\)", logs
            )
        ]
    return {"ok": True, "iterations": iterations, **timings, "runs": runs, "set5_psnr": psnr,
            "groups": groups}  # fmt: skip


def _direct_commands(folder: Path, last: str) -> dict[str, list[list[str]]]:
    """dvc.yaml's commands for the copy, in DVC's order, for a machine without DVC."""
    from sgsr.config import load_config

    cfg = load_config(folder / "params.yaml")
    sgsr = [sys.executable, "-m", "sgsr.cli"]
    names = [r.name for r in cfg.runs if not r.replicate]
    names += [r.name for r in cfg.runs if r.replicate]
    bicubic = [f"bicubic-x{s}" for s in cfg.experiment.scales]
    rest = [[*sgsr, "infer", "--run", n] for n in names + bicubic]
    rest += [[*sgsr, "evaluate", "--run", n] for n in names + bicubic]
    rest += [[*sgsr, "summarize"]] + ([[*sgsr, "report"]] if last == "report" else [])
    return {
        "data": [[*sgsr, "download"], [*sgsr, "prepare"]],
        "train": [[*sgsr, "train", "--run", n] for n in names],
        "rest": rest,
    }


def _run_cards(folder: Path) -> dict:
    out = {}
    for card in sorted((folder / "models").glob("*/run.json")):
        c = json.loads(card.read_text())
        out[c["run"]] = {"wall_time_s": c["wall_time_s"], "val_psnr_y": c.get("val_psnr_y"),
                         "samples": c["iterations"] * c["batch_size"]}  # fmt: skip
    return out


def _set5_psnr(folder: Path) -> dict:
    out = {}
    for m in sorted((folder / "results" / "metrics").glob("*/metrics.json")):
        value = json.loads(m.read_text()).get("Set5", {}).get("psnr")
        out[m.parent.name] = value
    return out


def project(profile: dict) -> dict:
    """The full profile's wall time from the short run: data and the rest scale with the
    number of runs, training loops with iterations and runs (runs_per_process runs at once, as
    measured), the per-process overhead of a train stage with the number of stages."""
    if not profile.get("ok"):
        return {}
    runs = profile["runs"]
    n = len(runs)
    groups = [g for g in profile.get("groups", []) if set(g) <= set(runs)]
    grouped = {name for g in groups for name in g}
    groups += [[name] for name in runs if name not in grouped]  # trained alone
    # runs of one group train at once: the group takes as long as its slowest run
    loop = sum(max(runs[name]["wall_time_s"] for name in g) for g in groups)
    samples = sum(r["samples"] for r in runs.values())
    train_s = profile["train"]["seconds"]
    overhead = max(0.0, train_s - loop)  # process start, data workers, capture, weights
    scale_iter = FULL_ITERATIONS / profile["iterations"]
    # the full profile: 15 runs, the same grouping repeated 15 / n times
    full_train = FULL_RUNS / n * (overhead + loop * scale_iter)
    rest = profile["rest"]["seconds"] * (FULL_RUNS + 1) / (n + 1)  # infer+evaluate per run
    total = profile["data"]["seconds"] + full_train + rest
    return {
        "samples_per_s_all_runs": round(samples / loop, 1) if loop else None,
        "train_seconds_full": round(full_train, 1),
        "rest_seconds_full": round(rest, 1),
        "total_minutes_full": round(total / 60, 2),
        "goal_minutes": 15,
        "note": "projection from the short run (linear in iterations and runs); "
        + ("report included" if "report" in profile.get("mode", "") else "see 'report' below"),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", default=str(REPO / "benchmarks" / "results" / "gpu_check.json"))
    parser.add_argument("--site", default=os.environ.get("SGSR_SITE"), help="extra packages")
    parser.add_argument("--iterations", type=int, default=400, help="for the short profile run")
    args = parser.parse_args(argv)
    default_site = Path("/tmp/site")
    site = Path(args.site) if args.site else (default_site if default_site.is_dir() else None)
    if site:
        sys.path.insert(0, str(site))
    start = time.monotonic()
    left = lambda: TOTAL_BUDGET_S - (time.monotonic() - start)  # noqa: E731
    shim_dir = Path(tempfile.mkdtemp(prefix="sgsr-shim-"))
    from sgsr.pipeline_copy import sgsr_shim

    env = _env(site, sgsr_shim(shim_dir))
    report: dict = {
        "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "repository": str(REPO),
        "commit": _git_commit(),
        "site": str(site) if site else None,
    }
    pre = prerequisites(env)
    report["prerequisites"] = pre
    _say(f"device: {pre.get('device')} (torch {pre.get('torch')}, CUDA {pre.get('cuda_version')})")
    if pre.get("missing"):
        _say(f"missing: {json.dumps(pre['missing'])}")
        if pre.get("fetch_elsewhere"):
            _say(f"fetch on a machine with network: {pre['fetch_elsewhere']}")
            _say(f"then here: {pre['install_here']} and rerun with --site /tmp/site")
    if not pre.get("cuda"):
        report["stopped"] = "no CUDA device: this check is for a GPU machine"
        return _finish(report, args.out, 2)
    missing = pre.get("missing", {})
    if "core" in missing or "train" in missing:
        report["stopped"] = "core or training modules missing (see prerequisites.missing)"
        return _finish(report, args.out, 2)
    if "tests" in missing:
        report["tests"] = {"skipped": "pytest missing"}
    else:
        _say("CUDA tests ...")
        report["tests"] = cuda_tests(env, min(120.0, left() * 0.3))
        _say(json.dumps({k: v["counts"] for k, v in report["tests"].items()}))
    if not all(pre["datasets_present"].values()):
        report["profile"] = {"skipped": f"datasets missing under {SHARED}"}
    elif "evaluate" in missing:
        report["profile"] = {"skipped": "piq missing (the evaluate stage's metrics)"}
    else:
        use_dvc = "dvc" not in missing
        with_report = use_dvc and "report" not in missing
        _say(f"short gpu profile run ({args.iterations} iterations, 5 runs) ...")
        report["profile"] = short_profile(
            env, short_overrides(args.iterations), max(60.0, left() - 120), use_dvc, with_report
        )
        if not with_report:
            report["profile"]["report"] = "not run (dvc or papermill/jupyter missing)"
        report["projection"] = project(report["profile"])
        _say(json.dumps(report["projection"]))
    _say("bench_gpu ...")
    bench_out = Path(tempfile.mkdtemp(prefix="sgsr-bench-gpu-")) / "bench.json"
    budget = max(45.0, left())
    r = _run([sys.executable, "benchmarks/bench_gpu.py", "--budget", str(budget), "--out",
              str(bench_out)], env, budget + 45)  # fmt: skip
    if bench_out.is_file():
        report["bench_gpu"] = json.loads(bench_out.read_text())
        _say(json.dumps(report["bench_gpu"].get("goals", {})))
    else:
        report["bench_gpu"] = {"failed": r}
    report["seconds"] = round(time.monotonic() - start, 1)
    ok = report["tests"].get("skipped") is None and all(
        v.get("ok") for v in report["tests"].values()
    )
    return _finish(report, args.out, 0 if ok and report.get("profile", {}).get("ok") else 1)


def _git_commit() -> str | None:
    try:
        return subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=REPO, capture_output=True, text=True, check=True
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return None


def _say(text: str) -> None:
    print(f"[gpu_check] {text}", flush=True)


def _finish(report: dict, out: str, code: int) -> int:
    path = Path(out)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(report, indent=2, default=str) + "\n")
    os.replace(tmp, path)
    _say(f"wrote {path} (exit {code})")
    return code


if __name__ == "__main__":
    sys.path[:0] = [str(REPO / "src"), str(REPO)]
    sys.exit(main())
