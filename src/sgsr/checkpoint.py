"""Training checkpoints: write atomically, read without ever running pickled code.

A checkpoint is a plain dict of tensors, numbers, strings, lists/tuples and dicts, saved with
``torch.save``. Loading uses ``torch.load(weights_only=True)``: the restricted unpickler accepts
only those types, so a file crafted to run code when unpickled (a ``__reduce__`` payload) is
refused with :class:`UnsafeCheckpointError` before anything in it executes. Everything that is
not natively one of the allowed types (numpy and Python RNG states) is converted here.

Writing goes to a temp file in the same folder and is then renamed over the old checkpoint
(``os.replace``), so a crash mid-write leaves the previous checkpoint intact.
"""

from __future__ import annotations

import os
import pickle
import random
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import torch

from sgsr.fsutil import atomic_path

#: Bumped when the checkpoint layout changes incompatibly; other versions are not resumed.
FORMAT = 1
CHECKPOINT_NAME = "checkpoint.pt"


class CheckpointError(ValueError):
    """A checkpoint exists but cannot be used; the message names the file and what to do."""


class UnsafeCheckpointError(CheckpointError):
    """The file holds pickled objects outside the tensor/number allowlist (possibly code)."""


def save_checkpoint(path: str | os.PathLike[str], state: dict[str, Any]) -> Path:
    """torch.save `state` to `path` atomically (temp file beside it, then os.replace)."""
    path = Path(path)
    with atomic_path(path) as tmp:
        torch.save(state, tmp)
    return path


def load_checkpoint(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Load a checkpoint onto the CPU with the weights-only unpickler.

    Raises FileNotFoundError if it is absent, UnsafeCheckpointError if it contains anything but
    tensors and plain containers (nothing in it is executed), CheckpointError if it is corrupt.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint {path} does not exist")
    if not zipfile.is_zipfile(path):
        # torch.save has written zip archives since torch 1.6 and so does save_checkpoint;
        # anything else (random bytes, a truncated file) is not unpickled at all.
        raise CheckpointError(
            f"checkpoint {path} is not a checkpoint sgsr wrote: torch.save writes a zip archive "
            "and this file is not one (it is truncated, corrupt, or another kind of file). "
            "Nothing in it was loaded or run; delete it to start fresh"
        )
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        raise UnsafeCheckpointError(
            f"refusing to load checkpoint {path}: it contains pickled objects other than "
            "tensors and plain containers, which could run code on load, and sgsr never writes "
            f"such files. Nothing from it was executed. Delete it if you did not create it "
            f"(training then starts fresh). Detail: {str(exc).splitlines()[0]}"
        ) from exc
    except (RuntimeError, EOFError, OSError, ValueError) as exc:
        raise CheckpointError(
            f"checkpoint {path} is unreadable or truncated ({exc}); delete it to start fresh"
        ) from exc
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        found = state.get("format") if isinstance(state, dict) else type(state).__name__
        raise CheckpointError(
            f"checkpoint {path} is not an sgsr checkpoint of format {FORMAT} (found {found!r}); "
            "delete it to start fresh"
        )
    return state


# --- RNG states in weights-only-loadable form ---------------------------------------------------


def rng_state() -> dict[str, Any]:
    """Python, numpy and torch (CPU and every CUDA device) generator states."""
    version, py_state, gauss = random.getstate()
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    state: dict[str, Any] = {
        "python": [version, list(py_state), gauss],
        "numpy": {
            "kind": str(kind),
            "keys": torch.from_numpy(np.asarray(keys, dtype=np.int64)),
            "pos": int(pos),
            "has_gauss": int(has_gauss),
            "cached": float(cached),
        },
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    """Inverse of :func:`rng_state`; CUDA states are restored only when CUDA is in use."""
    version, py_state, gauss = state["python"]
    random.setstate((version, tuple(py_state), gauss))
    n = state["numpy"]
    keys = n["keys"].numpy().astype(np.uint32)
    np.random.set_state((n["kind"], keys, n["pos"], n["has_gauss"], n["cached"]))
    torch.set_rng_state(state["torch"])
    cuda = state.get("cuda")
    if cuda and torch.cuda.is_available() and len(cuda) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(cuda)
