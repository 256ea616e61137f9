"""Training checkpoints: what they hold, writing them atomically, reading them without ever
running pickled code, and deciding whether one is resumed.

A checkpoint is a plain dict of tensors, numbers, strings, lists/tuples and dicts, saved with
``torch.save``. Loading uses ``torch.load(weights_only=True)``: the restricted unpickler accepts
only those types, so a file crafted to run code when unpickled (a ``__reduce__`` payload) is
refused with :class:`UnsafeCheckpointError` before anything in it executes. Everything that is
not natively one of the allowed types (numpy and Python RNG states) is converted here.

Writing goes to a temp file in the same folder and is then renamed over the old checkpoint
(``os.replace``), so a crash mid-write leaves the previous checkpoint intact.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import os
import pickle
import random
import zipfile
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import Tensor

from sgsr.config import TrainConfig
from sgsr.fsutil import atomic_path
from sgsr.optim import IMPLEMENTATION_KEYS

if TYPE_CHECKING:
    from sgsr.step import TrainState

#: Bumped when the checkpoint layout changes incompatibly; other versions are not resumed.
FORMAT = 1
CHECKPOINT_NAME = "checkpoint.pt"

log = logging.getLogger(__name__)


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


# --- what a training checkpoint holds, and resuming -------------------------------------------


#: TrainConfig keys that change only bookkeeping, never the trained weights; a checkpoint stays
#: resumable when they change. Every other key (and seed, model, loss, scale, data) is hashed.
BOOKKEEPING_KEYS = (
    "checkpoint_every", "val_every", "log_every", "num_workers", "device", "diverge_factor",
    *IMPLEMENTATION_KEYS,  # how a step runs, not what it computes (sgsr.optim)
)  # fmt: skip


def cpu_state(sd: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """A detached CPU copy of a state dict (what checkpoints and results hold)."""
    return {k: v.detach().to("cpu", copy=True).contiguous() for k, v in sd.items()}


def global_batch(opts: TrainConfig, world_size: int) -> int:
    """Samples per update over all processes: (batch_size // world_size) * world_size."""
    return opts.batch_size // world_size * world_size


def training_checkpoint(
    state: TrainState, fingerprint: str, samples: int, extra: dict[str, Any]
) -> dict[str, Any]:
    """Every piece of state the next iteration reads, plus the loop's own (`extra`)."""
    return {
        "format": FORMAT,
        "fingerprint": fingerprint,
        "iteration": state.iteration,
        "samples": samples,
        "world_size": state.ctx.world_size,
        "global_batch": global_batch(state.opts, state.ctx.world_size),
        "model": cpu_state(state.module.state_dict()),
        "optimizer": state.optimizer.state_dict(),
        "scheduler": state.scheduler.state_dict(),
        "scaler": state.scaler.state_dict(),
        "ema": cpu_state(state.ema.state_dict()) if state.ema is not None else None,
        "rng": rng_state(),
        **extra,
    }


def restore_state(state: TrainState, ck: Mapping[str, Any]) -> None:
    """Load a checkpoint's weights, optimizer, schedule, scaler, EMA, iteration and RNGs."""
    state.module.load_state_dict(ck["model"])
    state.optimizer.load_state_dict(ck["optimizer"])
    state.scheduler.load_state_dict(ck["scheduler"])
    state.scaler.load_state_dict(ck["scaler"])
    if state.ema is not None:
        if ck.get("ema") is None:
            raise ValueError("checkpoint has no EMA state but train.ema is on")
        state.ema.load_state_dict(ck["ema"])
    state.iteration = int(ck["iteration"])
    set_rng_state(ck["rng"])


#: train keys added later, hashed only when not at their default, so the fingerprints (and the
#: params_hash in every model.safetensors) of runs that do not use them stay as they were.
HASHED_WHEN_SET = ("init_from", "freeze")


def options_fingerprint(opts: TrainConfig, seed: int, **more: Any) -> str:
    """Hash of everything that shapes the trained weights (not BOOKKEEPING_KEYS)."""
    defaults = TrainConfig()
    train = {
        k: v
        for k, v in dataclasses.asdict(opts).items()
        if k not in BOOKKEEPING_KEYS and not (k in HASHED_WHEN_SET and v == getattr(defaults, k))
    }
    payload = {"seed": seed, "train": train, **more}
    text = json.dumps(payload, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


#: What resuming reads from a checkpoint ("ema" too when train.ema > 0).
RESUME_KEYS = (
    "iteration",
    "model",
    "optimizer",
    "scheduler",
    "scaler",
    "rng",
    "log_window",
    "wall_time",
    "last_losses",
)


def resume_checkpoint(
    state: TrainState, checkpoint: Path | None, fingerprint: str
) -> dict[str, Any] | None:
    """Restore `state` from `checkpoint` when it was written for these params (`fingerprint`
    and global batch) and return it; None to start fresh. A checkpoint of other params is the
    normal leftover of a params edit (``dvc exp run -S ...``), not a fault: it is left to be
    replaced at the first checkpoint, with one info line. An unsafe, corrupt or unfitting
    checkpoint raises, naming it."""
    if checkpoint is None or not checkpoint.exists():
        return None
    ck = load_checkpoint(checkpoint)  # unsafe/corrupt files raise: never silently discarded
    batch = global_batch(state.opts, state.ctx.world_size)
    if ck.get("fingerprint") != fingerprint or ck.get("global_batch") != batch:
        log.info(
            "starting at iteration 0: %s holds a run of other params (fingerprint %s, global "
            "batch %s; now %s, %s) and is replaced at the first checkpoint",
            checkpoint, ck.get("fingerprint"), ck.get("global_batch"), fingerprint, batch,
        )  # fmt: skip
        return None
    fresh = "; delete it to start fresh (training then restarts from iteration 0)"
    missing = [k for k in RESUME_KEYS if k not in ck]
    if missing:
        raise CheckpointError(
            f"checkpoint {checkpoint} matches these params but has no {', '.join(missing)} "
            f"(incomplete: edited, or written by another sgsr version){fresh}"
        )
    try:
        iteration = int(ck["iteration"])
    except (TypeError, ValueError) as exc:
        raise CheckpointError(
            f"checkpoint {checkpoint}: iteration {ck['iteration']!r} is not a number{fresh}"
        ) from exc
    if iteration > state.opts.iterations:
        raise ValueError(f"{checkpoint} is at iteration {ck['iteration']}, past the end")
    try:
        restore_state(state, ck)
        int(ck["log_window"]["n"])
        dict(ck["log_window"]["sums"])
        float(ck["wall_time"])
        dict(ck["last_losses"])
    except (KeyError, RuntimeError, ValueError, TypeError, IndexError, AttributeError) as exc:
        detail = " ".join(str(exc).split())[:400]
        raise CheckpointError(
            f"checkpoint {checkpoint} matches these params but its contents do not fit the "
            f"model, optimizer or state being trained ({type(exc).__name__}: {detail}){fresh}"
        ) from exc
    return ck
