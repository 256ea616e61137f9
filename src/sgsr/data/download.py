"""The ``download`` stage: HR images as published into ``data/raw/<set>/``, metric weights into
``models/pretrained/`` with ``manifest.json``.

Sources (``data.source``):

- ``sample``: photographs bundled with scikit-image, written as PNG (offline, seconds).
- ``official``: DIV2K and the benchmark sets from their published URLs, sha256-pinned
  (sources.OFFICIAL); archives are cached outside the DVC outputs (common.download_cache) so a
  rerun downloads nothing.
- ``dir``: a local folder ``<dir>/<Set>/*.png`` (a lab mirror, ../shared/datasets): every image
  is decoded once to validate it, then copied byte-for-byte. Nothing is converted here; prepare
  normalises.

Metric weights are best effort: unreachable weights are recorded as absent in the manifest and
do not fail the stage (the evaluation stage skips LPIPS/FID and says why).
"""

from __future__ import annotations

import functools
import json
import logging
import os
import shutil
import warnings
from pathlib import Path
from typing import Any

import numpy as np

from sgsr import layout
from sgsr.config import Config
from sgsr.data import sources
from sgsr.data.archive import safe_extract
from sgsr.data.common import (
    download_cache,
    pipeline_root,
    read_checked,
    staging_dir,
    warn_skipped,
)
from sgsr.data.fetch import DownloadError, UnpinnedError, fetch
from sgsr.fsutil import atomic_write, replace_dir, sha256sum
from sgsr.imaging import IMAGE_SUFFIXES, list_images, write_image

log = logging.getLogger(__name__)

RAW_MANIFEST = "manifest.json"

WEIGHT_ALTERNATIVES = (
    "put the file in models/pretrained/ or $TORCH_HOME/hub/checkpoints/ yourself (its sha256 is "
    "checked), get it with `dvc pull`, or set data.metric_weights: false"
)


class WeightsAbsentWarning(UserWarning):
    """Metric weights could not be fetched; LPIPS/FID will be skipped by evaluation."""


def run(
    cfg: Config,
    root: str | os.PathLike[str] | None = None,
    cache_dir: str | os.PathLike[str] | None = None,
) -> dict[str, Any]:
    """Fetch every set in data.train_sets + data.test_sets, then the metric weights.

    Returns ``{"sets": {name: record}, "weights": manifest}``; paths are under `root` (default:
    the params file's folder).
    """
    base = pipeline_root(cfg, root)
    cache = download_cache(cache_dir)
    names = list(dict.fromkeys((*cfg.data.train_sets, *cfg.data.test_sets)))
    raw = base / layout.RAW
    source = cfg.data.source
    if source == "sample":
        records = download_sample(names, raw)
    elif source == "official":
        records = download_official(names, raw, cache)
    elif source == "dir":
        if not cfg.data.dir:
            raise ValueError("data.dir: must name a folder laid out <dir>/<Set>/*.png")
        folder = Path(cfg.data.dir)
        if not folder.is_absolute():
            folder = base / folder
        records = copy_from_dir(folder, names, raw, on_bad_image=cfg.data.on_bad_image)
    else:
        raise ValueError(f"data.source: must be one of sample, official, dir; got {source!r}")
    _write_raw_manifest(raw, records)
    weights = fetch_metric_weights(
        base / layout.PRETRAINED, cache, enabled=cfg.data.metric_weights, root=base
    )
    return {"sets": records, "weights": weights}


# --- sample ---------------------------------------------------------------------------------------


def download_sample(names: list[str], raw: Path) -> dict[str, dict[str, Any]]:
    """Write scikit-image's bundled photographs for sets `names` as PNG under `raw`."""
    unknown = [n for n in names if n not in sources.SAMPLE_SETS]
    if unknown:
        raise ValueError(
            f"data.source sample has no set(s) {', '.join(map(repr, unknown))}; its sets are "
            f"{', '.join(sources.SAMPLE_SETS)} (set data.train_sets/test_sets accordingly, or "
            "use data.source: dir or official)"
        )
    import skimage

    records = {}
    for name in names:
        final = raw / name
        staging = staging_dir(final)
        try:
            for stem, load in sources.SAMPLE_SETS[name].items():
                try:
                    image = np.asarray(load())
                except Exception as exc:
                    raise OSError(
                        f"scikit-image's bundled image {stem!r} could not be loaded offline "
                        f"({exc}); this scikit-image ({skimage.__version__}) may not ship it. "
                        "Use data.source: dir or official instead."
                    ) from exc
                if image.ndim == 2:
                    image = image[..., None]
                write_image(staging / f"{stem}.png", image.astype(np.uint8, copy=False))
            replace_dir(staging, final)
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise
        records[name] = _record(final, "sample", f"scikit-image {skimage.__version__}")
        log.debug("sample: wrote %d images to %s", len(records[name]["files"]), final)
    return records


# --- official -----------------------------------------------------------------------------------


def download_official(names: list[str], raw: Path, cache: Path) -> dict[str, dict[str, Any]]:
    """Download, verify and extract the published archives of sets `names` into `raw`."""
    unknown = [n for n in names if sources.canonical(n) not in sources.OFFICIAL]
    if unknown:
        raise ValueError(
            f"data.source official has no set(s) {', '.join(map(repr, unknown))}; known sets: "
            f"{', '.join(sources.known_official())}"
        )
    unpinned = [n for n in names if sources.OFFICIAL[sources.canonical(n)].sha256 is None]
    if unpinned:  # before any download, so a missing pin does not cost a 3 GB transfer first
        urls = "\n  ".join(f"{n}: {sources.OFFICIAL[sources.canonical(n)].url}" for n in unpinned)
        raise UnpinnedError(
            "data.source official: no verified sha256 is pinned for these archives "
            f"(TODO-unverified in sgsr/data/sources.py OFFICIAL), so they are not downloaded:\n  "
            f"{urls}\nCheck each file yourself and pin its sha256 in the table, or set "
            "`data.source: dir` with `data.dir` pointing at a local mirror (e.g. "
            "../shared/datasets), or get the outputs with `dvc pull`."
        )
    records = {}
    for name in names:
        remote = sources.OFFICIAL[sources.canonical(name)]
        records[name] = install_remote_set(remote, raw / name, cache)
    return records


def install_remote_set(remote: sources.Remote, final: Path, cache: Path, **fetch_kw: Any) -> dict:
    """Fetch `remote` into the cache (verified; no transfer if already there), extract it
    safely, and put its images flat in `final`. Returns the set's manifest record."""
    archive_name = remote.url.rstrip("/").rsplit("/", 1)[-1].split("?")[0]
    archive = fetch(
        remote.url, cache / "downloads" / archive_name, remote.sha256, size=remote.size, **fetch_kw
    )
    staging = staging_dir(final)
    unpack = final.with_name(f".{final.name}.unpack-{os.getpid()}")
    try:
        shutil.rmtree(unpack, ignore_errors=True)
        safe_extract(archive, unpack)
        top = unpack / remote.inner if remote.inner and (unpack / remote.inner).is_dir() else unpack
        images = sorted(
            p
            for p in top.rglob("*")
            if p.is_file()
            and p.suffix.lower() in IMAGE_SUFFIXES
            and not any(part.startswith((".", "__MACOSX")) for part in p.relative_to(top).parts)
        )
        if not images:
            raise ValueError(f"{remote.url}: the archive holds no images (looked in {top})")
        seen: dict[str, Path] = {}
        for p in images:
            if p.name in seen:
                raise ValueError(
                    f"{remote.url}: two images named {p.name} ({seen[p.name]} and {p}); cannot "
                    "flatten the archive into one set folder"
                )
            seen[p.name] = p
            os.replace(p, staging / p.name)
        replace_dir(staging, final)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    finally:
        shutil.rmtree(unpack, ignore_errors=True)
    log.debug("official: %s -> %s (%d images)", remote.url, final, len(seen))
    return _record(final, "official", remote.url, archive_sha256=remote.sha256)


# --- dir ------------------------------------------------------------------------------------------


def find_set_folder(folder: Path, name: str) -> Path:
    """`folder/<name>` or a folder named by one of its aliases (B100 = BSD100)."""
    for candidate in sources.equivalent_names(name):
        if (folder / candidate).is_dir():
            return folder / candidate
    present = sorted(p.name for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))
    tried = ", ".join(sources.equivalent_names(name))
    raise FileNotFoundError(
        f"data.dir {folder}: no folder for set {name!r} (looked for {tried}); it has: "
        f"{', '.join(present) or 'no folders'}. Fix data.train_sets/test_sets or the mirror."
    )


def copy_from_dir(
    folder: Path, names: list[str], raw: Path, on_bad_image: str = "error"
) -> dict[str, dict[str, Any]]:
    """Validate (decode) and copy byte-for-byte `folder/<Set>/*` into `raw/<Set>/`."""
    if not folder.is_dir():
        raise FileNotFoundError(
            f"data.dir {folder} does not exist; point it at a folder laid out <dir>/<Set>/*.png"
        )
    records = {}
    for name in names:
        src = find_set_folder(folder, name)
        files = list_images(src)
        if not files:
            raise FileNotFoundError(f"{src}: no images (.png, .bmp, .jpg, ...) in this set folder")
        skipped: list[Path] = []
        final = raw / name
        staging = staging_dir(final)
        try:
            for path in files:
                if read_checked(path, "keep", on_bad_image, skipped) is None:
                    continue
                shutil.copyfile(path, staging / path.name)
            if len(skipped) == len(files):
                raise ValueError(f"{src}: every image is unreadable; nothing to copy")
            replace_dir(staging, final)
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise
        warn_skipped(skipped, f"set {name} (copied from {src})")
        records[name] = _record(final, "dir", str(src), skipped=[str(p) for p in skipped])
        log.debug("dir: copied %d images %s -> %s", len(files) - len(skipped), src, final)
    return records


def _record(final: Path, source: str, origin: str, **extra: Any) -> dict[str, Any]:
    files = {p.name: sha256sum(p) for p in list_images(final)}
    return {"source": source, "origin": origin, **extra, "files": files}


def _write_raw_manifest(raw: Path, records: dict[str, dict[str, Any]]) -> None:
    with atomic_write(raw / RAW_MANIFEST, "w") as fh:
        json.dump(records, fh, indent=2, sort_keys=True)
        fh.write("\n")


# --- metric weights -------------------------------------------------------------------------------


def _torch_hub_checkpoints() -> Path:
    """torch.hub's checkpoint folder, computed without importing torch (which takes seconds)."""
    home = os.environ.get("TORCH_HOME")
    if home:
        return Path(home) / "hub" / "checkpoints"
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg) if xdg else Path.home() / ".cache") / "torch" / "hub" / "checkpoints"


def _place(src: Path, target: Path) -> None:
    """Put a verified file at `target`: a hard link when possible (no 240 MB copy), else a copy;
    either way via a temp name and a rename."""
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f".{target.name}.tmp-{os.getpid()}")
    tmp.unlink(missing_ok=True)
    try:
        try:
            os.link(src, tmp)
        except OSError:
            shutil.copyfile(src, tmp)
        os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)


def fetch_metric_weights(
    folder: Path,
    cache: Path | None = None,
    enabled: bool = True,
    root: Path | None = None,
    **fetch_kw: Any,
) -> dict[str, dict[str, Any]]:
    """Make the LPIPS/FID backbones available in `folder` when possible; always write
    ``folder/manifest.json``. Never raises for a weight that cannot be had: it is recorded as
    ``present: false`` with the reason."""
    cache = download_cache(cache)
    manifest: dict[str, dict[str, Any]] = {}
    for name, remote in sources.WEIGHTS.items():
        target = folder / name
        rel = os.path.relpath(target, root) if root is not None else str(target)
        entry: dict[str, Any] = {
            "path": Path(rel).as_posix(),
            "sha256": remote.sha256,
            "present": False,
            "reason": "",
            "role": sources.WEIGHT_ROLES[name],
            "url": remote.url,
        }
        if _hash_ok(target, remote.sha256):
            entry.update(present=True, reason="present, sha256 verified")
        elif not enabled:
            entry["reason"] = "not fetched: data.metric_weights is false"
        else:
            for candidate, how in (
                (cache / "weights" / name, "download cache"),
                (_torch_hub_checkpoints() / name, "torch hub cache"),
            ):
                if _hash_ok(candidate, remote.sha256):
                    _place(candidate, target)
                    entry.update(present=True, reason=f"copied from the {how} ({candidate})")
                    break
            else:
                try:
                    got = fetch(
                        remote.url,
                        cache / "weights" / name,
                        remote.sha256,
                        size=remote.size,
                        alternatives=WEIGHT_ALTERNATIVES,
                        **fetch_kw,
                    )
                    _place(got, target)
                    entry.update(present=True, reason=f"downloaded from {remote.url}")
                except DownloadError as exc:
                    entry["reason"] = str(exc)
                    warnings.warn(
                        f"metric weights {name} unavailable, LPIPS/FID will be skipped: {exc}",
                        WeightsAbsentWarning,
                        stacklevel=2,
                    )
        if not entry["present"]:
            target.unlink(missing_ok=True)  # never leave an unverified file under its real name
        manifest[name] = entry
    folder.mkdir(parents=True, exist_ok=True)
    with atomic_write(folder / layout.PRETRAINED_MANIFEST.name, "w") as fh:
        json.dump(manifest, fh, indent=2, sort_keys=True)
        fh.write("\n")
    return manifest


def load_manifest(path: str | os.PathLike[str] = layout.PRETRAINED_MANIFEST) -> dict[str, dict]:
    """Read ``models/pretrained/manifest.json``: ``{file name: {path, sha256, present, reason,
    role, url}}``. ``present`` says the download stage verified the file; call verified_weight
    to re-check the bytes before trusting them."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(
            f"{path} not found: run `sgsr download` (or `dvc repro download`) first"
        )
    try:
        data = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise ValueError(f"{path}: not valid JSON ({exc}); rerun `sgsr download`") from exc
    required = {"path", "sha256", "present", "reason"}
    if not isinstance(data, dict) or not all(
        isinstance(v, dict) and required <= v.keys() for v in data.values()
    ):
        raise ValueError(
            f"{path}: each entry must have {', '.join(sorted(required))}; rerun `sgsr download`"
        )
    return data


def verified_weight(name: str, folder: str | os.PathLike[str] = layout.PRETRAINED) -> Path | None:
    """`folder/name` if it exists and its sha256 matches the pinned one, else None.

    The pin comes from the code (sources.WEIGHTS), not from the manifest, so a tampered
    manifest cannot vouch for a tampered file. Hashes are memoised per (path, size, mtime).
    """
    if name not in sources.WEIGHTS:
        raise KeyError(f"unknown metric weight file {name!r}; known: {', '.join(sources.WEIGHTS)}")
    path = Path(folder) / name
    return path if _hash_ok(path, sources.WEIGHTS[name].sha256) else None


def _hash_ok(path: Path, sha256: str | None) -> bool:
    if sha256 is None or not path.is_file():
        return False
    st = path.stat()
    return _sha256_cached(str(path.resolve()), st.st_size, st.st_mtime_ns) == sha256


@functools.lru_cache(maxsize=64)
def _sha256_cached(path: str, size: int, mtime_ns: int) -> str:
    return sha256sum(path)
