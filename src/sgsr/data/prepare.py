"""The ``prepare`` stage: LR/HR pairs for evaluation and a patch store for training.

For each scale s in ``prepare.scales``:

- ``data/prepared/x<s>/<set>/{hr,lr}/<stem>.png`` for every test set and for the validation
  split ``val`` (the last ``prepare.val_images`` training images by file name): HR mod-cropped
  to s, LR = MATLAB bicubic (imaging.downscale). Read in mode "keep", so a grayscale image stays
  one channel and is scored on it.
- ``data/prepared/x<s>/patches/``: every other training image (read as RGB) cut into HR patches
  of ``prepare.patch_size`` with ``prepare.stride``, and their LR counterparts cut from the LR
  of the *whole* image at HR/s coordinates (no border effects from cropping before resizing).
  Stored as uint8 ``.npy`` (memory-mappable) with ``meta.json``; see patches.py for the reader.

Every output folder is built beside its destination and renamed into place when complete.
"""

from __future__ import annotations

import json
import logging
import os
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from sgsr import layout
from sgsr.config import DEFAULT_MAX_PIXELS, Config
from sgsr.data.common import (
    ImageTooSmallError,
    SkippedImage,
    SkippedImageWarning,
    pipeline_advice,
    read_checked,
    warn_alpha,
    warn_skipped,
)
from sgsr.fsutil import atomic_write, staged_dir
from sgsr.imaging import (
    ImageReadError,
    downscale,
    image_size,
    list_images,
    mod_crop,
    write_image,
)
from sgsr.metric_registry import REGISTRY

log = logging.getLogger(__name__)

STORE_FORMAT = 1
HR_FILE, LR_FILE, COORDS_FILE, META_FILE = "hr.npy", "lr.npy", "coords.npy", "meta.json"

#: An image with its display label (the set it came from).
Labeled = tuple[str, Path]


def protocol_min_side(scale: int, metrics: Sequence[str]) -> int:
    """Smallest HR side (after mod-crop) that `metrics` can score at `scale`: the border crop
    of `scale` pixels on each side plus what the most demanding metric needs. A smaller test
    image would score NaN (PSNR of zero pixels) or fail at evaluation time."""
    return 2 * scale + max((REGISTRY[m].min_side for m in metrics if m in REGISTRY), default=1)


def run(cfg: Config, root: str | os.PathLike[str] | None = None) -> dict[str, Any]:
    """Build every prepared output for `cfg`; returns a summary (counts per scale and set)."""
    base = layout.pipeline_root(cfg, root)
    p, policy, max_px = cfg.prepare, cfg.data.on_bad_image, cfg.data.max_pixels
    check_geometry(p.scales, p.patch_size, p.stride)
    raw = base / layout.RAW
    train = training_images(raw, cfg.data.train_sets)
    if p.val_images >= len(train):
        raise ValueError(
            f"prepare.val_images ({p.val_images}) must be less than the number of training "
            f"images ({len(train)} in {', '.join(cfg.data.train_sets)}): the rest is the patch "
            "store"
        )
    split = len(train) - p.val_images
    fit, val = train[:split], train[split:]
    tests = {name: [(name, f) for f in _set_images(raw, name)] for name in cfg.data.test_sets}
    # transparency is reported once per set, from the first scale's pass
    alpha: dict[str, list[tuple[Path, str]]] = {}
    summary: dict[str, Any] = {}
    for s in p.scales:
        first = s == p.scales[0]
        per: dict[str, Any] = {}
        for name, images in tests.items():
            per[name] = write_pairs(
                images,
                base / layout.prepared_set(s, name),
                s,
                policy,
                max_pixels=max_px,
                min_side=protocol_min_side(s, cfg.evaluate.metrics),
                alpha=alpha.setdefault(f"test set {name}", []) if first else None,
            )
        per[layout.VAL_SET] = write_pairs(
            val,
            base / layout.prepared_set(s, layout.VAL_SET),
            s,
            policy,
            unique_names=True,
            max_pixels=max_px,
            min_side=protocol_min_side(s, ("psnr",)),  # validation scores PSNR-Y only
            alpha=alpha.setdefault("the validation split", []) if first else None,
        )
        meta = build_patch_store(
            fit,
            base / layout.patch_store(s),
            s,
            p.patch_size,
            p.stride,
            on_bad_image=policy,
            max_pixels=max_px,
            alpha=alpha.setdefault("the training images", []) if first else None,
        )
        per["patches"] = meta["count"]
        summary[f"x{s}"] = per
        log.debug("prepare x%d: %s", s, per)
    for what, files in alpha.items():
        warn_alpha(files, what)
    return summary


def check_geometry(scales: Sequence[int], patch_size: int, stride: int) -> None:
    """Patch corners must land on the LR grid: patch_size and stride multiples of each scale."""
    bad = [s for s in scales if patch_size % s or stride % s]
    if bad:
        raise ValueError(
            f"prepare.patch_size ({patch_size}) and prepare.stride ({stride}) must be multiples "
            f"of every scale; not of {', '.join(map(str, bad))} (e.g. 96 and 48 suit 2, 3, 4)"
        )


def _set_images(raw: Path, name: str) -> list[Path]:
    folder = layout.raw_set(name, raw)
    if not folder.is_dir():
        raise FileNotFoundError(
            f"{folder} not found: set {name!r} was not downloaded; run `sgsr download` (or `dvc "
            "repro download`) with this params file first"
        )
    files = list_images(folder)
    if not files:
        raise FileNotFoundError(f"{folder}: no images in set {name!r}")
    return files


def training_images(raw: Path, names: Sequence[str]) -> list[Labeled]:
    """Every training image, sorted by file name across the sets (set name breaks ties): the
    order that decides which images are held out as ``val``."""
    pool = [(name, f) for name in dict.fromkeys(names) for f in _set_images(raw, name)]
    return sorted(pool, key=lambda item: (item[1].name, item[0]))


def _output_names(images: Sequence[Labeled], unique_names: bool) -> list[str]:
    """Output stems. Within one set a stem must be unique; across sets (``val``) a clash is
    resolved by prefixing the set name."""
    stems = [path.stem for _, path in images]
    counts: dict[str, int] = {}
    for stem in stems:
        counts[stem] = counts.get(stem, 0) + 1
    names = []
    for (label, _), stem in zip(images, stems, strict=True):
        if counts[stem] > 1:
            if not unique_names:
                twins = [str(p) for _, p in images if p.stem == stem]
                raise ValueError(
                    f"two images would both be written as {stem}.png: {', '.join(twins)}; "
                    "rename one"
                )
            stem = f"{label}-{stem}"
        names.append(stem)
    return names


def write_pairs(
    images: Sequence[Labeled],
    final: Path,
    scale: int,
    on_bad_image: str = "error",
    unique_names: bool = False,
    max_pixels: int | None = DEFAULT_MAX_PIXELS,
    min_side: int | None = None,
    alpha: list[tuple[Path, str]] | None = None,
) -> int:
    """Write ``final/hr/<stem>.png`` (mod-cropped) and ``final/lr/<stem>.png`` (MATLAB bicubic)
    for `images`; returns how many pairs were written.

    An image that cannot be read, declares more than `max_pixels`, or is smaller than
    `min_side` after mod-crop (default: `scale`, the least that yields an LR pixel) is an
    error naming the file, or under ``on_bad_image: skip`` left out with one warning.
    """
    names = _output_names(images, unique_names)
    min_side = scale if min_side is None else min_side
    skipped: list[SkippedImage] = []
    written = 0
    with staged_dir(final) as staging:
        (staging / "hr").mkdir()
        (staging / "lr").mkdir()
        for (_, path), stem in zip(images, names, strict=True):
            image = read_checked(path, "keep", on_bad_image, skipped, max_pixels, alpha)
            if image is None:
                continue
            hr = mod_crop(image, scale)
            if min(hr.shape[:2]) < min_side:
                problem = (
                    f"{path}: {image.shape[1]}x{image.shape[0]} px ({hr.shape[1]}x{hr.shape[0]} "
                    f"after mod-crop to x{scale}) is too small for the evaluation protocol, "
                    f"which needs at least {min_side}x{min_side} px here: {scale} px are cropped "
                    "from every border, then the metrics need their window (SSIM 11x11; see "
                    "evaluate.metrics)"
                )
                if on_bad_image != "skip":
                    raise ImageTooSmallError(
                        f"{problem}. Remove it from the set, or set data.on_bad_image: skip to "
                        "leave it out"
                    )
                skipped.append(SkippedImage(path, problem))
                continue
            write_image(staging / "hr" / f"{stem}.png", np.ascontiguousarray(hr))
            write_image(staging / "lr" / f"{stem}.png", downscale(hr, scale))
            written += 1
    warn_skipped(skipped, str(final))
    return written


def grid(length: int, patch: int, stride: int) -> list[int]:
    """Patch origins along one axis: every `stride`, plus a last one flush with the end so the
    whole image is covered (as BasicSR's extract_subimages). Empty if the side is too short."""
    if length < patch:
        return []
    starts = list(range(0, length - patch + 1, stride))
    if starts[-1] != length - patch:
        starts.append(length - patch)
    return starts


def build_patch_store(
    images: Sequence[Labeled],
    final: Path,
    scale: int,
    patch_size: int,
    stride: int,
    on_bad_image: str = "error",
    max_pixels: int | None = DEFAULT_MAX_PIXELS,
    alpha: list[tuple[Path, str]] | None = None,
) -> dict[str, Any]:
    """Cut `images` into aligned HR/LR patches and write the store at `final`; returns meta.

    Memory stays bounded by one image: patches go straight into memory-mapped ``.npy`` files
    sized from the image headers (a pass that decodes nothing).
    """
    check_geometry([scale], patch_size, stride)
    lp = patch_size // scale
    skipped: list[SkippedImage] = []
    too_small: list[str] = []
    plan: list[tuple[str, Path, list[int], list[int], tuple[int, int]]] = []
    for label, path in images:
        try:
            h, w = image_size(path, max_pixels)  # header only: bombs never get decoded
        except ImageReadError as exc:
            if on_bad_image != "skip":
                raise pipeline_advice(exc, max_pixels) from exc
            skipped.append(SkippedImage(path, str(exc)))
            continue
        hc, wc = h - h % scale, w - w % scale
        ys, xs = grid(hc, patch_size, stride), grid(wc, patch_size, stride)
        if not ys or not xs:
            too_small.append(f"{path} ({w}x{h})")
            continue
        plan.append((label, path, ys, xs, (hc, wc)))
    capacity = sum(len(ys) * len(xs) for *_, ys, xs, _ in plan)
    with staged_dir(final) as staging:
        hr_shape, lr_shape = (patch_size, patch_size, 3), (lp, lp, 3)
        hr = _open(staging / HR_FILE, (capacity, *hr_shape))
        lr = _open(staging / LR_FILE, (capacity, *lr_shape))
        coords = np.zeros((capacity, 3), dtype=np.int32)
        sources: list[dict[str, Any]] = []
        n = 0
        for label, path, ys, xs, (hc, wc) in plan:
            image = read_checked(path, "rgb", on_bad_image, skipped, max_pixels, alpha)
            if image is None:
                continue
            image = mod_crop(image, scale)
            if image.shape[:2] != (hc, wc):
                raise ImageReadError(
                    f"{path}: decoded size {image.shape[1]}x{image.shape[0]} differs from its "
                    f"header ({wc}x{hc} after mod-crop); the file is inconsistent"
                )
            low = downscale(image, scale)  # LR of the whole image, then cut at HR/scale coords
            first = n
            for y in ys:
                for x in xs:
                    hr[n] = image[y : y + patch_size, x : x + patch_size]
                    ly, lx = y // scale, x // scale
                    lr[n] = low[ly : ly + lp, lx : lx + lp]
                    coords[n] = (len(sources), y, x)
                    n += 1
            sources.append(
                {
                    "set": label,
                    "file": path.name,
                    "first": first,
                    "count": n - first,
                    "height": hc,
                    "width": wc,
                }
            )
        for arr in (hr, lr):
            if isinstance(arr, np.memmap):
                arr.flush()
        del hr, lr
        if n < capacity:  # images that failed to decode under on_bad_image: skip
            _shrink(staging / HR_FILE, n)
            _shrink(staging / LR_FILE, n)
        np.save(staging / COORDS_FILE, coords[:n])
        meta = {
            "format": STORE_FORMAT,
            "count": n,
            "scale": scale,
            "patch_size": patch_size,
            "lr_patch_size": lp,
            "stride": stride,
            "channels": 3,
            "dtype": "uint8",
            "layout": "NHWC",
            "hr": HR_FILE,
            "lr": LR_FILE,
            "coords": COORDS_FILE,
            "coords_columns": ["source", "y", "x"],
            "sources": sources,
            "skipped_small": too_small,
            "skipped_bad": [str(p.path) for p in skipped],
        }
        with atomic_write(staging / META_FILE, "w") as fh:
            json.dump(meta, fh, indent=1)
            fh.write("\n")
    warn_skipped(skipped, f"the patch store {final}")
    if too_small:
        warnings.warn(
            f"{len(too_small)} training image(s) smaller than a {patch_size}x{patch_size} patch "
            f"(after mod-crop to {scale}) left out of {final}: " + ", ".join(too_small),
            SkippedImageWarning,
            stacklevel=2,
        )
    if n == 0:
        warnings.warn(
            f"the patch store {final} is empty: no training image yields a "
            f"{patch_size}x{patch_size} patch; training on it is impossible",
            SkippedImageWarning,
            stacklevel=2,
        )
    return meta


def _open(path: Path, shape: tuple[int, ...]) -> np.ndarray:
    """A writable uint8 array backed by a ``.npy`` file (a plain array when empty: mmap cannot
    map zero bytes)."""
    if shape[0] == 0:
        np.save(path, np.zeros(shape, dtype=np.uint8))
        return np.load(path)
    return np.lib.format.open_memmap(path, mode="w+", dtype=np.uint8, shape=shape)


def _shrink(path: Path, n: int, chunk: int = 1024) -> None:
    """Rewrite ``path`` keeping its first `n` rows (chunked, so memory stays bounded)."""
    src = np.load(path, mmap_mode="r")
    tmp = path.with_name(f".{path.name}.shrink")
    dst = _open(tmp, (n, *src.shape[1:]))
    for i in range(0, n, chunk):
        j = min(i + chunk, n)
        dst[i:j] = src[i:j]
    if isinstance(dst, np.memmap):
        dst.flush()
    del dst, src
    os.replace(tmp, path)
