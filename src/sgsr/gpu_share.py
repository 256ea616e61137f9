"""Several runs of the matrix trained at once in one process (``train.runs_per_process``).

Why: one run of a small SR network leaves most of a GPU idle, even as one CUDA graph per step
(its kernels are small), and DVC runs stages one after another (``dvc repro`` has no parallel
jobs). Separate processes on one GPU are time-sliced, not concurrent (five processes gave 1.4x
the throughput of one); runs in one process, each in its own thread with its own CUDA
stream, can have their kernels on the GPU at the same time.

How it fits DVC: every run keeps its own ``train`` stage. When the stage of run A runs ``sgsr
train --run A`` with ``runs_per_process: N``, A is trained together with up to N-1 other runs
of the matrix (the next ones after A, in ``sgsr runs`` order) that are neither finished
(``models/<run>/run.json`` with the same params hash) nor complete in their persistent
checkpoint. Each of them is trained exactly as its own stage would (``sgsr.train.run``: same
seed, data order, checkpoints, curves and weights files). When DVC reaches their stages, the
checkpoint is complete and ``sgsr train`` only writes the weights from it (seconds). A run
that fails beside A is reported as a warning and left to its own stage, which resumes from its
last checkpoint and fails (or not) on its own account.

Thread safety: set-ups run one at a time (the next run starts once the previous one has done
its first step), because model initialisation draws from the global RNG and graph capture and
``torch.compile`` are not for concurrent use; after set-up the trainer draws no global random
numbers. The global determinism flags that ``sgsr.train.train`` sets are saved before the
group and restored after it.
"""

from __future__ import annotations

import logging
import os
import threading
import warnings
from pathlib import Path

import torch

from sgsr import layout, step_capture
from sgsr.config import Config

log = logging.getLogger(__name__)


class CompanionRunWarning(UserWarning):
    """A run trained beside another one failed; its own stage will report it."""


def is_trained(cfg: Config, run_name: str, base: Path) -> bool:
    """Whether `run_name` needs no training: finished weights for these params, or a
    checkpoint for these params at the last iteration."""
    import json

    from sgsr.checkpoint import CHECKPOINT_NAME, load_checkpoint
    from sgsr.train import params_hash

    spec = cfg.run(run_name)
    fingerprint = params_hash(cfg, spec, base / layout.patch_store(spec.scale))
    card = base / layout.run_card(run_name)
    if card.is_file() and (base / layout.weights(run_name)).is_file():
        try:
            done = json.loads(card.read_text())
        except (OSError, ValueError):
            done = {}
        if (
            done.get("params_hash") == fingerprint
            and done.get("iterations") == cfg.train.iterations
        ):
            return True
    ck = base / layout.checkpoint_dir(run_name) / CHECKPOINT_NAME
    if not ck.is_file():
        return False
    try:
        saved = load_checkpoint(ck)
    except Exception:  # a bad checkpoint is its own stage's business (it raises there)
        return False
    return (
        saved.get("fingerprint") == fingerprint and saved.get("iteration") == cfg.train.iterations
    )


def companions(cfg: Config, run_name: str, base: Path) -> list[str]:
    """Up to ``runs_per_process - 1`` runs to train beside `run_name`: the runs after it in
    the matrix order (wrapping around) that still need training."""
    want = cfg.train.runs_per_process - 1
    names = [r.name for r in cfg.runs if not r.zero_shot]  # a zero-shot run trains nothing
    if want <= 0 or run_name not in names:
        return []
    i = names.index(run_name)
    out: list[str] = []
    for name in names[i + 1 :] + names[:i]:
        if len(out) == want:
            break
        if not is_trained(cfg, name, base):
            out.append(name)
    return out


def run(cfg: Config, run_name: str, root: str | os.PathLike[str] | None = None) -> Path:
    """``sgsr train --run NAME``: :func:`sgsr.train.run` for `run_name`, and at the same time
    for its :func:`companions` when ``train.runs_per_process`` > 1 (see the module docstring).
    Raises what training `run_name` raises; returns its weights path."""
    from sgsr import train

    if cfg.train.runs_per_process <= 1 or int(os.environ.get("WORLD_SIZE", "1")) > 1:
        if cfg.train.runs_per_process > 1:
            warnings.warn(
                "train.runs_per_process is ignored under torchrun: every process trains the "
                "same run",
                stacklevel=2,
            )
        return train.run(cfg, run_name, root)
    base = layout.pipeline_root(cfg, root)
    if is_trained(cfg, run_name, base):  # trained beside another run: only write its weights
        return train.run(cfg, run_name, root)
    others = companions(cfg, run_name, base)
    if not others:
        return train.run(cfg, run_name, root)
    names = [run_name, *others]
    log.info("%s: training %d runs at once in this process (%s)", run_name, len(names),
             ", ".join(others))  # fmt: skip
    results: dict[str, Path | BaseException] = {}
    flags = _global_flags()
    threads = []
    try:
        for name in names:
            ready = threading.Event()
            t = threading.Thread(
                target=_train_one, args=(cfg, name, root, ready, results), name=f"sgsr-{name}"
            )
            t.start()
            threads.append(t)
            ready.wait()  # set-up done (first step taken) or the run ended
        for t in threads:
            t.join()
    finally:
        _set_global_flags(flags)
    for name in others:
        outcome = results.get(name)
        if isinstance(outcome, BaseException):
            warnings.warn(
                f"{name}, trained beside {run_name}, failed ({type(outcome).__name__}: "
                f"{outcome}); its own train stage resumes it from its last checkpoint",
                CompanionRunWarning,
                stacklevel=2,
            )
    outcome = results[run_name]
    if isinstance(outcome, BaseException):
        raise outcome
    return outcome


def _train_one(
    cfg: Config,
    name: str,
    root: str | os.PathLike[str] | None,
    ready: threading.Event,
    results: dict[str, Path | BaseException],
) -> None:
    from sgsr import train
    from sgsr.distributed import train_device

    step_capture.set_first_step_hook(ready.set)
    try:
        device = train_device(cfg.train.device)
        if device.type == "cuda":  # this thread's work on its own stream, beside the others
            torch.cuda.set_device(device)
            torch.cuda.set_stream(torch.cuda.Stream(device))
        results[name] = train.run(cfg, name, root)
    except BaseException as exc:
        results[name] = exc
    finally:
        step_capture.set_first_step_hook(None)
        ready.set()


def _global_flags() -> tuple[bool, bool, bool, bool]:
    return (
        torch.are_deterministic_algorithms_enabled(),
        torch.is_deterministic_algorithms_warn_only_enabled(),
        torch.backends.cudnn.benchmark,
        torch.backends.cudnn.deterministic,
    )


def _set_global_flags(flags: tuple[bool, bool, bool, bool]) -> None:
    det, warn_only, bench, cudnn_det = flags
    torch.use_deterministic_algorithms(det, warn_only=warn_only)
    torch.backends.cudnn.benchmark, torch.backends.cudnn.deterministic = bench, cudnn_det
