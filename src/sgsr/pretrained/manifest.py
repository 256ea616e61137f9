"""``models/pretrained/manifest.json``: which weights the download stage verified, from which
source, or why none worked. Written by `sgsr.pretrained.fetching`, read by the loaders (to say
why a file is absent)."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from sgsr import layout
from sgsr.fsutil import atomic_write
from sgsr.pretrained.registry import Weight

MANIFEST_NAME = layout.PRETRAINED_MANIFEST.name
MANIFEST_FORMAT = 2


def manifest_entry(weight: Weight, rel: str) -> dict[str, Any]:
    """A weight's manifest entry before any source is tried: absent, no reason yet."""
    return {
        "path": rel,
        "sha256": weight.sha256,
        "present": False,
        "reason": "",
        "role": weight.role,
        "source": None,
        "artifact": None,
        "artifact_sha256": None,
        "member": None,
        "member_sha256": None,
    }


def write_manifest(folder: Path, entries: dict[str, dict[str, Any]]) -> None:
    """``<folder>/manifest.json`` with `entries`, atomically."""
    folder.mkdir(parents=True, exist_ok=True)
    with atomic_write(folder / MANIFEST_NAME, "w") as fh:
        json.dump({"format": MANIFEST_FORMAT, "weights": entries}, fh, indent=2, sort_keys=True)
        fh.write("\n")


def load_manifest(path: str | os.PathLike[str] = layout.PRETRAINED_MANIFEST) -> dict[str, dict]:
    """``{weight name: entry}`` from a manifest written by `fetch_weights`; ValueError or
    FileNotFoundError with what to do when it is absent or not in this format."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found: run `sgsr download` (or `dvc repro download`)")
    try:
        data = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise ValueError(f"{path}: not valid JSON ({exc}); rerun `sgsr download`") from exc
    required = {"path", "sha256", "present", "reason", "source"}
    entries = data.get("weights") if isinstance(data, dict) else None
    if (
        not isinstance(data, dict)
        or data.get("format") != MANIFEST_FORMAT
        or not isinstance(entries, dict)
        or not all(isinstance(e, dict) and required <= e.keys() for e in entries.values())
    ):
        raise ValueError(
            f"{path}: not a format-{MANIFEST_FORMAT} weights manifest (each entry needs "
            f"{', '.join(sorted(required))}); rerun `sgsr download`"
        )
    return entries
