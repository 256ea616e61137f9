"""Small helpers shared by the download and prepare stages."""

from __future__ import annotations

import os
import warnings
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from sgsr.config import DEFAULT_MAX_PIXELS
from sgsr.imaging import (
    AlphaDroppedWarning,
    ImageReadError,
    ImageTooLargeError,
    alpha_note,
    decode_image,
    with_advice,
)


class BadImageWarning(UserWarning):
    """Images skipped under ``data.on_bad_image: skip``: unreadable, over ``data.max_pixels``,
    or too small for the protocol (the message lists each file and why)."""


class SkippedImageWarning(UserWarning):
    """Images left out for a reason other than corruption (e.g. smaller than a patch)."""


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


@dataclass(frozen=True)
class SkippedImage:
    """An image left out under ``data.on_bad_image: skip``; `reason` names the file."""

    path: Path
    reason: str

    def __str__(self) -> str:
        return self.reason


class ImageTooSmallError(ValueError):
    """An image too small for what the stage needs (e.g. the evaluation protocol)."""


def pipeline_advice(exc: ImageReadError, max_pixels: int | None) -> ImageReadError:
    """`exc` with what a pipeline user can do about it (the params keys that apply)."""
    if isinstance(exc, ImageTooLargeError):
        return with_advice(
            exc,
            f"If the image is genuine, raise data.max_pixels (now {max_pixels:,}); otherwise "
            "remove it, or set data.on_bad_image: skip to leave it out",
        )
    return with_advice(exc, "Replace or remove it, or set data.on_bad_image: skip to leave it out")


def read_checked(
    path: Path,
    mode: str,
    policy: str,
    skipped: list[SkippedImage],
    max_pixels: int | None = DEFAULT_MAX_PIXELS,
    alpha: list[tuple[Path, str]] | None = None,
) -> np.ndarray | None:
    """read_image under ``data.on_bad_image``: "error" raises (the message names the file and
    the params keys that apply), "skip" records the file in `skipped` and returns None. An image
    declaring more than `max_pixels` pixels is refused from its header, like a broken one.
    Whether an alpha channel was dropped goes to `alpha` (for one warning per set)."""
    try:
        decoded = decode_image(path, mode=mode, max_pixels=max_pixels)
    except ImageReadError as exc:
        if policy != "skip":
            raise pipeline_advice(exc, max_pixels) from exc
        skipped.append(SkippedImage(path, str(exc)))
        return None
    if alpha is not None:
        alpha.append((path, decoded.alpha))
    return decoded.array


def warn_skipped(skipped: Iterable[SkippedImage], what: str) -> None:
    skipped = list(skipped)
    if skipped:
        listing = "\n  ".join(str(p) for p in skipped)
        warnings.warn(
            f"data.on_bad_image is skip: {len(skipped)} image(s) left out of {what}:\n  {listing}",
            BadImageWarning,
            stacklevel=3,
        )


def warn_alpha(files: list[tuple[Path, str]], what: str) -> None:
    """One AlphaDroppedWarning for `what` (a set) naming every image that lost transparency."""
    note = alpha_note(files, what)
    if note:
        warnings.warn(note, AlphaDroppedWarning, stacklevel=3)
