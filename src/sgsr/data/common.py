"""Small helpers shared by the download and prepare stages."""

from __future__ import annotations

import os
import shutil
import warnings
from collections.abc import Iterable
from pathlib import Path

import numpy as np

from sgsr.config import Config
from sgsr.imaging import ImageReadError, read_image


class BadImageWarning(UserWarning):
    """Images skipped under ``data.on_bad_image: skip`` (the message lists them)."""


class SkippedImageWarning(UserWarning):
    """Images left out for a reason other than corruption (e.g. smaller than a patch)."""


def pipeline_root(cfg: Config, root: str | os.PathLike[str] | None = None) -> Path:
    """The folder that layout.py paths are relative to: `root` if given, else the params
    file's folder (the pipeline folder; "." when the stage runs there, as DVC does)."""
    if root is not None:
        return Path(root)
    return Path(cfg.source_path).parent


def download_cache(cache_dir: str | os.PathLike[str] | None = None) -> Path:
    """Where downloaded archives and weights are kept between runs.

    Outside the DVC outputs on purpose: ``dvc repro`` deletes a stage's outputs before it runs,
    and a multi-gigabyte archive must survive that. ``$SGSR_CACHE_DIR``, else
    ``$XDG_CACHE_HOME/sgsr``, else ``~/.cache/sgsr``.
    """
    if cache_dir is not None:
        return Path(cache_dir)
    if os.environ.get("SGSR_CACHE_DIR"):
        return Path(os.environ["SGSR_CACHE_DIR"])
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg) if xdg else Path.home() / ".cache") / "sgsr"


def read_checked(path: Path, mode: str, policy: str, skipped: list[Path]) -> np.ndarray | None:
    """read_image under ``data.on_bad_image``: "error" re-raises (the message names the file),
    "skip" records the file in `skipped` and returns None."""
    try:
        return read_image(path, mode=mode)
    except ImageReadError:
        if policy != "skip":
            raise
        skipped.append(path)
        return None


def warn_skipped(skipped: Iterable[Path], what: str) -> None:
    skipped = list(skipped)
    if skipped:
        listing = "\n  ".join(str(p) for p in skipped)
        warnings.warn(
            f"data.on_bad_image is skip: {len(skipped)} unreadable image(s) left out of {what}:"
            f"\n  {listing}",
            BadImageWarning,
            stacklevel=3,
        )


def staging_dir(final: Path) -> Path:
    """A fresh hidden folder beside `final` (same filesystem, so replace_dir can rename)."""
    final.parent.mkdir(parents=True, exist_ok=True)
    staging = final.with_name(f".{final.name}.tmp-{os.getpid()}")
    if staging.exists():
        shutil.rmtree(staging)
    staging.mkdir()
    return staging
