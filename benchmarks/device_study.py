"""Train the ``gpu`` and ``study`` profiles on a lent GPU machine and bring the weights home.

The machine has no network and no DVC; one call carries at most 64 MiB in and returns at most
8 files of at most 16 MiB (64 MiB together). So the work is split in four steps, each one
command (docs/training.md, "On a GPU"):

1. here, ``pack``: the training images (T91, BSD200 and the small Set5 as the one test set
   prepare needs) as lossless WebP with the sha256 of every decoded image, and the pure-Python
   packages training imports that the device image lacks (dvclive and what it loads), into
   ``.device/`` (git-excluded; the call carries it);
2. there, ``train``: decode the images (checked against their sha256), copy each profile as the
   repository lays it out with only ``data.dir``, ``data.test_sets`` and ``data.metric_weights``
   changed (none of them reaches a run's fingerprint), run ``sgsr download`` and ``sgsr prepare``,
   then every run of the ``gpu`` profile in ``sgsr runs`` order (its ``runs_per_process``
   trains five at once) with the study's runs beside it in parallel processes; stops at a
   deadline and resumes from the checkpoints on the next call;
3. there, ``collect --part K``: the finished runs' ``models/<run>/`` and ``models/live/<run>/``
   as tar chunks of at most ``--chunk-mib`` into ``$OUT``, four chunks a call, and a manifest
   saying how many parts there are (call again with the next K while the machine is warm);
4. here, ``import``: check the chunks' sha256, check every run card's params hash against the
   one computed from this machine's own patch store (prepared from the same images, so equal
   hashes mean the device trained on the same data with the same params), place the folders,
   record them with ``dvc commit`` and publish them (``sgsr publish``).

Run on the CPU at tiny size with ``--overrides`` (tests/test_device_study.py does all four).
"""

from __future__ import annotations

import argparse
import hashlib
import importlib.metadata as md
import io
import json
import os
import shutil
import signal
import subprocess
import sys
import tarfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
for _path in (REPO, REPO / "src"):  # run as a script, on a machine where sgsr is not installed
    if str(_path) not in sys.path:
        sys.path.insert(0, str(_path))

from sgsr.pipeline_copy import deep_update, make_profile_copy, sgsr_shim, tool_env  # noqa: E402

PACK = REPO / ".device"
SHARED = Path(os.environ.get("SGSR_SHARED_DATASETS", REPO.parent / "shared" / "datasets"))
PROFILES = ("gpu", "study")
TEST_SET = "Set5"
CHUNK_MIB = 15.5
CHUNKS_PER_CALL = 4  # 4 x 15.5 MiB and the manifest stay under a call's 64 MiB
#: Modules `sgsr download`, `prepare` and `train` import; with what they import, the packages
#: to carry are those among them that the device image does not hold.
TRAINING_MODULES = ("sgsr.cli", "sgsr.gpu_share", "sgsr.data.download", "sgsr.data.prepare")
#: Distributions the device image holds (its package list, 2026-11), normalised names.
DEVICE_HAS = frozenset(
    {
        "certifi",
        "charset-normalizer",
        "colorama",
        "filelock",
        "fsspec",
        "idna",
        "jinja2",
        "markupsafe",
        "numpy",
        "packaging",
        "pandas",
        "pillow",
        "psutil",
        "python-dateutil",
        "pyyaml",
        "requests",
        "safetensors",
        "scikit-image",
        "scipy",
        "six",
        "tabulate",
        "torch",
        "torchvision",
        "tqdm",
        "typing-extensions",
        "urllib3",
        "nvidia-ml-py",
        "imageio",
        "tifffile",
        "lazy-loader",
        "networkx",
        "sympy",
        "mpmath",
        "triton",
        "setuptools",
        "pyparsing",
    }
)


def _norm(name: str) -> str:
    return name.lower().replace("_", "-").replace(".", "-")


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def pixels_sha(image) -> str:
    """sha256 of the decoded pixels (mode, size and bytes): what prepare reads."""
    return _sha(f"{image.mode}{image.size}".encode() + image.tobytes())


# --- 1. pack (here) -----------------------------------------------------------------------------


def training_sets(profiles: tuple[str, ...]) -> list[str]:
    sets: list[str] = []
    for profile in profiles:
        raw = yaml.safe_load((REPO / "profiles" / profile / "params.yaml").read_text())
        sets += [s for s in raw["data"]["train_sets"] if s not in sets]
    return [*sets, TEST_SET]


def pack_datasets(
    source: Path, sets: list[str], dest: Path, max_images: int | None, method: int
) -> dict:
    """Every image of `sets` as lossless WebP in ``dest/datasets.tar`` with a manifest of the
    original names, modes and decoded-pixel sha256; re-decoded here to prove it is lossless."""
    from PIL import Image

    manifest: dict[str, dict] = {}
    with tarfile.open(dest / "datasets.tar", "w") as tar:
        for name in sets:
            files = sorted(p for p in (source / name).iterdir() if p.suffix.lower() != ".tsv")
            files = [p for p in files if p.is_file() and not p.name.startswith(".")]
            for path in files[:max_images]:
                with Image.open(path) as im:
                    im.load()
                    mode = im.mode
                    rgb = im.convert("RGBA" if "A" in mode else "RGB")
                buf = io.BytesIO()
                rgb.save(buf, "WEBP", lossless=True, quality=100, method=method, exact=True)
                with Image.open(io.BytesIO(buf.getvalue())) as back:
                    back = back.convert(mode)
                    with Image.open(path) as im:
                        if pixels_sha(back) != pixels_sha(im.convert(mode)):
                            raise ValueError(f"{path}: WebP round trip is not lossless")
                info = tarfile.TarInfo(f"{name}/{path.name}.webp")
                info.size = buf.tell()
                tar.addfile(info, io.BytesIO(buf.getvalue()))
                manifest.setdefault(name, {})[path.name] = {"mode": mode, "sha": pixels_sha(back)}
    (dest / "datasets.json").write_text(json.dumps(manifest, indent=1, sort_keys=True))
    return manifest


def carried_distributions() -> list[md.Distribution]:
    """Pure-Python distributions that training imports and the device image lacks."""
    probe = (
        "import importlib, json, sys\n"
        f"for m in {TRAINING_MODULES!r}: importlib.import_module(m)\n"
        "from sgsr.live import open_live\n"
        "import dvclive, dvclive.live\n"
        "print(json.dumps(sorted({m.split('.')[0] for m in sys.modules})))"
    )
    env = tool_env(REPO / "src")
    out = subprocess.run(
        [sys.executable, "-c", probe], env=env, capture_output=True, text=True, check=True
    )
    top = set(json.loads(out.stdout.strip().splitlines()[-1]))
    owners = md.packages_distributions()
    names = {_norm(d) for m in top for d in owners.get(m, [])}
    names = {n for n in names - DEVICE_HAS - {"sgsr"} if not n.startswith(("nvidia-", "cuda-"))}
    return [md.distribution(n) for n in sorted(names)]


def pack_site(dest: Path) -> list[str]:
    """The carried distributions' files as ``dest/site.tar`` (unpacked onto PYTHONPATH there)."""
    carried = []
    with tarfile.open(dest / "site.tar", "w:gz") as tar:
        for dist in carried_distributions():
            files = [f for f in dist.files or [] if not str(f).startswith("..")]
            tags = (dist.read_text("WHEEL") or "").split("Tag:")[-1].strip()
            portable = "abi3" in tags and "x86_64" in tags  # any CPython >= its minimum there
            if any(str(f).endswith((".so", ".pyd")) for f in files) and not portable:
                raise ValueError(
                    f"{dist.metadata['Name']} has compiled extensions for this Python only "
                    f"({tags}): carry a wheel built for the device's Python instead"
                )
            for f in files:
                path = Path(dist.locate_file(f))
                if path.is_file() and "__pycache__" not in path.parts:
                    tar.add(path, arcname=str(f))
            carried.append(f"{dist.metadata['Name']}=={dist.version}")
    return carried


def pack(
    dest: Path = PACK,
    profiles: tuple[str, ...] = PROFILES,
    source: Path = SHARED,
    max_images: int | None = None,
    method: int = 0,
    pretrained: Path | None = None,
) -> dict:
    """Build `dest` (what the device call carries): datasets.tar/json, site.tar, pack.json."""
    if dest.exists():
        shutil.rmtree(dest)
    dest.mkdir(parents=True)
    t0 = time.perf_counter()
    sets = training_sets(profiles)
    pack_datasets(source, sets, dest, max_images, method)
    carried = pack_site(dest)
    if pretrained is not None:
        shutil.copy2(pretrained, dest / pretrained.name)
    sizes = {p.name: p.stat().st_size for p in sorted(dest.iterdir())}
    info = {
        "profiles": list(profiles),
        "sets": sets,
        "carried": carried,
        "bytes": sizes,
        "total_mib": round(sum(sizes.values()) / 2**20, 2),
        "seconds": round(time.perf_counter() - t0, 1),
    }
    (dest / "pack.json").write_text(json.dumps(info, indent=1))
    return info


# --- 2. train (there) ---------------------------------------------------------------------------


def unpack(pack_dir: Path, work: Path) -> Path:
    """Decode the images into ``work/datasets/<Set>/<original name>`` (checked) and the site
    packages into ``work/site``, once; returns the datasets folder."""
    from PIL import Image

    datasets = work / "datasets"
    done = work / ".unpacked"
    if done.is_file():
        return datasets
    manifest = json.loads((pack_dir / "datasets.json").read_text())
    with tarfile.open(pack_dir / "datasets.tar") as tar:
        for member in tar.getmembers():
            set_name, webp = member.name.split("/", 1)
            original = webp.removesuffix(".webp")
            entry = manifest[set_name][original]
            data = tar.extractfile(member).read()
            with Image.open(io.BytesIO(data)) as im:
                im = im.convert(entry["mode"])
            if pixels_sha(im) != entry["sha"]:
                raise ValueError(f"{member.name}: decoded pixels do not match the pack's sha256")
            target = datasets / set_name / original
            target.parent.mkdir(parents=True, exist_ok=True)
            im.save(target)
    site = work / "site"
    with tarfile.open(pack_dir / "site.tar") as tar:
        tar.extractall(site, filter="data")
    done.write_text("ok\n")
    return datasets


def device_params(datasets: Path, overrides: dict | None) -> dict:
    """What differs from the profile there: the image folder, one small test set, no metric
    weights (prepare and train use none of these, and no run's fingerprint holds them)."""
    params = {"data": {"dir": str(datasets), "test_sets": [TEST_SET], "metric_weights": False}}
    return deep_update(params, overrides or {})


def _sgsr(folder: Path, env: dict, *args: str) -> subprocess.Popen:
    return subprocess.Popen(
        ["sgsr", *args],
        cwd=folder,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )


def _wait(proc: subprocess.Popen, deadline: float) -> tuple[int | str, str]:
    try:
        out, _ = proc.communicate(timeout=max(1.0, deadline - time.monotonic()))
        return proc.returncode, out[-3000:]
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)  # resumes from its last checkpoint next call
        out, _ = proc.communicate()
        return "deadline", (out or "")[-3000:]


def run_names(folder: Path, env: dict) -> list[str]:
    out = subprocess.run(
        ["sgsr", "runs"], cwd=folder, env=env, capture_output=True, text=True, check=True
    )
    return out.stdout.split()


def profile_dir(work: Path, profile: str) -> Path:
    return work / profile / "profiles" / profile


def _train_profile(folder: Path, env: dict, deadline: float, parallel: int) -> dict:
    """Every run of the profile, `parallel` processes at a time; runs with finished weights
    are skipped (a run trained beside another by runs_per_process only writes its weights)."""
    log: dict = {}

    def one(run: str) -> None:
        if (folder / "models" / run / "run.json").is_file():
            log[run] = {"rc": "done before"}
            return
        if time.monotonic() > deadline:
            log[run] = {"rc": "not started"}
            return
        t0 = time.perf_counter()
        rc, tail = _wait(_sgsr(folder, env, "train", "--run", run), deadline)
        log[run] = {"rc": rc, "seconds": round(time.perf_counter() - t0, 1), "tail": tail}

    runs = run_names(folder, env)
    if parallel <= 1:
        for run in runs:
            one(run)
    else:
        with ThreadPoolExecutor(parallel) as pool:
            list(pool.map(one, runs))
    return log


def device_train(
    pack_dir: Path = PACK,
    work: Path = Path("/tmp/sgsr-device"),
    profiles: tuple[str, ...] = PROFILES,
    seconds: float = 540.0,
    overrides: dict | None = None,
    study_parallel: int = 8,
) -> dict:
    """Prepare and train every profile within `seconds`; safe to call again (it resumes).
    The first profile trains one stage at a time (its runs_per_process shares the card), the
    others meanwhile in `study_parallel` processes each."""
    t_start = time.monotonic()
    deadline = t_start + seconds
    work.mkdir(parents=True, exist_ok=True)
    datasets = unpack(pack_dir, work)
    env = tool_env(REPO / "src", sgsr_shim(work / "bin"))
    env["PYTHONPATH"] = os.pathsep.join([env["PYTHONPATH"], str(work / "site")])
    status: dict = {"unpack_s": round(time.monotonic() - t_start, 1), "profiles": {}}
    folders = {}
    for profile in profiles:
        folder = profile_dir(work, profile)
        if not folder.is_dir():
            params = device_params(datasets, (overrides or {}).get(profile))
            make_profile_copy(
                REPO, work / profile, params, profile, env, dvc=False, datasets=SHARED
            )
            vgg = pack_dir / "lpips_vgg.safetensors"  # for lpips_vgg runs, if carried
            if vgg.is_file():
                (folder / "models" / "pretrained").mkdir(parents=True, exist_ok=True)
                shutil.copy2(vgg, folder / "models" / "pretrained" / vgg.name)
        t0 = time.monotonic()
        for stage in ("download", "prepare"):
            if not (folder / "data" / "prepared").is_dir():
                rc, tail = _wait(_sgsr(folder, env, stage), deadline)
                if rc != 0:
                    raise RuntimeError(f"sgsr {stage} failed in {folder}:\n{tail}")
        status["profiles"][profile] = {"data_s": round(time.monotonic() - t0, 1)}
        folders[profile] = folder

    def train(profile: str, parallel: int) -> None:
        t0 = time.monotonic()
        runs = _train_profile(folders[profile], env, deadline, parallel)
        status["profiles"][profile].update(train_s=round(time.monotonic() - t0, 1), runs=runs)

    first, *others = profiles
    with ThreadPoolExecutor(len(profiles)) as pool:
        jobs = [pool.submit(train, first, 1)]
        jobs += [pool.submit(train, p, study_parallel) for p in others]
        for job in jobs:
            job.result()
    for profile, folder in folders.items():
        names = run_names(folder, env)
        done = [r for r in names if (folder / "models" / r / "run.json").is_file()]
        status["profiles"][profile].update(runs_total=len(names), runs_done=len(done))
    status["seconds"] = round(time.monotonic() - t_start, 1)
    (work / "status.json").write_text(json.dumps(status, indent=1))
    return status


# --- 3. collect (there) -------------------------------------------------------------------------


def result_files(work: Path, profiles: tuple[str, ...]) -> list[list[tuple[Path, str]]]:
    """Per finished run, its files as (path there, name in the archive), in a fixed order."""
    groups = []
    for profile in profiles:
        folder = profile_dir(work, profile)
        models = folder / "models"
        for card in sorted(models.glob("*/run.json")):
            run = card.parent.name
            group = []
            for root in (models / run, models / "live" / run):
                for path in sorted(p for p in root.rglob("*") if p.is_file()):
                    group.append((path, f"{profile}/{path.relative_to(folder).as_posix()}"))
            groups.append(group)
    return groups


def plan_chunks(groups: list[list[tuple[Path, str]]], limit: int) -> list[list[tuple[Path, str]]]:
    """Runs packed whole into chunks of at most `limit` bytes (a run larger than that is split
    between files); the same files always give the same plan, so every call agrees on it."""
    chunks: list[list[tuple[Path, str]]] = [[]]
    used = 0
    for group in groups:
        size = sum(p.stat().st_size + 1024 for p, _ in group)
        if used and used + size > limit:
            chunks.append([])
            used = 0
        for path, name in group:
            item = path.stat().st_size + 1024
            if item > limit:
                raise ValueError(f"{path} is {item} bytes, over the chunk limit {limit}")
            if used and used + item > limit:
                chunks.append([])
                used = 0
            chunks[-1].append((path, name))
            used += item
    return [c for c in chunks if c]


def collect(
    work: Path,
    out: Path,
    part: int,
    profiles: tuple[str, ...] = PROFILES,
    chunk_bytes: int = int(CHUNK_MIB * 2**20),
    per_call: int = CHUNKS_PER_CALL,
) -> dict:
    """Write part `part` (1-based) of the results into `out`: its chunks and manifest.json."""
    chunks = plan_chunks(result_files(work, profiles), chunk_bytes)
    parts = max(1, -(-len(chunks) // per_call))
    if not 1 <= part <= parts:
        raise ValueError(f"--part {part}: the results make {parts} part(s)")
    out.mkdir(parents=True, exist_ok=True)
    mine = range((part - 1) * per_call, min(len(chunks), part * per_call))
    shas = {}
    for i in mine:
        target = out / f"chunk-{i:02d}.tar"
        with tarfile.open(target, "w") as tar:
            for path, name in chunks[i]:
                tar.add(path, arcname=name)
        shas[target.name] = _sha(target.read_bytes())
    status = work / "status.json"
    manifest = {
        "part": part,
        "parts": parts,
        "chunks": {f"chunk-{i:02d}.tar": [n for _, n in c] for i, c in enumerate(chunks)},
        "sha256": shas,
        "status": json.loads(status.read_text()) if status.is_file() else None,
    }
    (out / f"manifest-{part}.json").write_text(json.dumps(manifest, indent=1))
    return {"part": part, "parts": parts, "chunks": list(shas)}


# --- 4. import (here) ---------------------------------------------------------------------------


def gather(parts: list[Path]) -> tuple[dict, dict[str, Path]]:
    """The chunks of every returned folder, sha256-checked; refuses an incomplete set."""
    manifests = [
        json.loads(m.read_text()) for d in parts for m in sorted(d.glob("manifest-*.json"))
    ]
    if not manifests:
        raise FileNotFoundError(f"no manifest-*.json in {', '.join(map(str, parts))}")
    chunks: dict[str, Path] = {}
    for d in parts:
        for m in d.glob("manifest-*.json"):
            for name, sha in json.loads(m.read_text())["sha256"].items():
                if _sha((d / name).read_bytes()) != sha:
                    raise ValueError(f"{d / name}: sha256 differs from its manifest: fetch again")
                chunks[name] = d / name
    wanted = manifests[-1]["chunks"]
    missing = sorted(set(wanted) - set(chunks))
    if missing:
        have = sorted({m["part"] for m in manifests})
        raise FileNotFoundError(
            f"chunks {', '.join(missing)} not returned (parts {have} of {manifests[-1]['parts']}"
            " are here): run `collect --part K` for the others"
        )
    return manifests[-1], chunks


def import_results(
    parts: list[Path],
    profiles: dict[str, Path],
    publish: bool = True,
    env: dict | None = None,
) -> dict:
    """Place the returned runs into each profile folder (`profiles`: name -> pipeline folder):
    ``dvc repro prepare`` there first, then each run card's params hash is checked against the
    one from this machine's patch store, the folders are placed, ``dvc commit`` records the
    train stages and ``sgsr publish`` copies them to the published remote."""
    from sgsr.config import load_config
    from sgsr.fsutil import staged_dir, staging_dir
    from sgsr.layout import patch_store
    from sgsr.train import params_hash

    env = env or tool_env(REPO / "src")
    manifest, chunks = gather(parts)
    staging = Path(staging_dir(next(iter(profiles.values())).resolve() / ".device-import"))
    try:
        for path in chunks.values():
            with tarfile.open(path) as tar:
                tar.extractall(staging, filter="data")
        report: dict = {}
        for profile, folder in profiles.items():
            if not (staging / profile).is_dir():
                continue
            subprocess.run(["dvc", "repro", "prepare"], cwd=folder, env=env, check=True)
            cfg = load_config(folder / "params.yaml")
            runs = {r.name: r for r in cfg.runs}
            placed = []
            for card_path in sorted((staging / profile / "models").glob("*/run.json")):
                run = card_path.parent.name
                if run not in runs:
                    raise ValueError(f"{card_path}: run {run} is not in {folder}/params.yaml")
                card = json.loads(card_path.read_text())
                store = folder / patch_store(runs[run].scale)
                expected = params_hash(cfg, runs[run], store)
                if card.get("params_hash") != expected:
                    raise ValueError(
                        f"{card_path}: params_hash {card.get('params_hash')} differs from "
                        f"{expected}, this machine's for {run} (other params or other data): "
                        "not imported"
                    )
                for sub in (Path("models") / run, Path("models") / "live" / run):
                    src = staging / profile / sub
                    if src.is_dir():
                        final = folder / sub
                        with staged_dir(final) as tmp:
                            shutil.copytree(src, tmp, dirs_exist_ok=True)
                placed.append(run)
            if placed:
                targets = [f"models/{r}" for r in placed] + [f"models/live/{r}" for r in placed]
                subprocess.run(["dvc", "commit", "-f", *targets], cwd=folder, env=env, check=True)
                if publish:
                    subprocess.run(["sgsr", "publish"], cwd=folder, env=env, check=True)
            report[profile] = placed
        return {"imported": report, "device": manifest.get("status")}
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _json_arg(text: str | None) -> dict:
    if not text:
        return {}
    path = Path(text)
    return json.loads(path.read_text() if path.is_file() else text)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("pack", help="here: images and packages into .device/")
    p.add_argument("--dest", type=Path, default=PACK)
    p.add_argument("--profiles", nargs="+", default=list(PROFILES))
    p.add_argument("--max-images", type=int, default=None, help="per set (for a tiny dry run)")
    p.add_argument("--webp-method", type=int, default=0, help="0 fast .. 6 smallest")
    p.add_argument("--pretrained", type=Path, help="lpips_vgg.safetensors, for lpips_vgg runs")
    p = sub.add_parser("train", help="there: prepare and train (resumes)")
    p.add_argument("--pack", type=Path, default=PACK)
    p.add_argument("--work", type=Path, default=Path("/tmp/sgsr-device"))
    p.add_argument("--profiles", nargs="+", default=list(PROFILES))
    p.add_argument("--seconds", type=float, default=540.0, help="stop (and resume later) here")
    p.add_argument("--overrides", help="JSON (or a JSON file): profile -> params to merge")
    p.add_argument("--study-parallel", type=int, default=8)
    p = sub.add_parser("collect", help="there: part K of the finished runs into a folder")
    p.add_argument("--work", type=Path, default=Path("/tmp/sgsr-device"))
    p.add_argument("--out", type=Path, default=Path(os.environ.get("OUT", "device-out")))
    p.add_argument("--part", type=int, default=1)
    p.add_argument("--profiles", nargs="+", default=list(PROFILES))
    p.add_argument("--chunk-mib", type=float, default=CHUNK_MIB)
    p = sub.add_parser("import", help="here: place, dvc commit and publish the returned runs")
    p.add_argument("parts", nargs="+", type=Path, help="folders holding the returned files")
    p.add_argument("--profile", action="append", help="NAME=FOLDER (default profiles/NAME)")
    p.add_argument("--no-publish", action="store_true")
    args = parser.parse_args(argv)
    if args.command == "pack":
        result = pack(
            args.dest, tuple(args.profiles), SHARED, args.max_images, args.webp_method,
            args.pretrained,
        )  # fmt: skip
    elif args.command == "train":
        result = device_train(
            args.pack, args.work, tuple(args.profiles), args.seconds, _json_arg(args.overrides),
            args.study_parallel,
        )  # fmt: skip
    elif args.command == "collect":
        chunk = int(args.chunk_mib * 2**20)
        result = collect(args.work, args.out, args.part, tuple(args.profiles), chunk)
    else:
        pairs = [s.split("=", 1) for s in args.profile or []]
        folders = {k: Path(v) for k, v in pairs} or {p: REPO / "profiles" / p for p in PROFILES}
        result = import_results(args.parts, folders, publish=not args.no_publish)
    print(json.dumps(result, indent=1)[-6000:])
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
