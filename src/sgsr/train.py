"""The training loop: iteration-based Adam with schedule, AMP, EMA, checkpoint/resume, DDP, dvclive.

Two layers:

- :func:`train` is the library loop. It takes any model, any loss with the
  :class:`sgsr.losses.CompositeLoss` contract (``loss(sr, hr) -> (total, components)``), a
  *batch source* and a :class:`sgsr.config.TrainConfig`, so it runs on a toy model and toy
  batches in a test as well as on EDSR and the patch store.
- :func:`run` is the pipeline stage ``sgsr train --run NAME``: it builds the model, loss, patch
  dataset and validation set of one run of the params matrix, calls :func:`train`, and writes
  ``models/<run>/model.safetensors`` and ``models/<run>/run.json``.

Resume is exact on the CPU: a checkpoint holds every piece of state the next iteration reads
(weights, optimizer, scheduler, EMA, grad scaler, RNG states, data position, the partial logging
window), and the batch source is a pure function of the iteration number. See docs/training.md.
"""

from __future__ import annotations

import bisect
import copy
import dataclasses
import hashlib
import itertools
import json
import logging
import math
import os
import random
import time
import warnings
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from sgsr import layout
from sgsr.checkpoint import (
    CHECKPOINT_NAME,
    FORMAT,
    CheckpointError,
    load_checkpoint,
    rng_state,
    save_checkpoint,
    set_rng_state,
)
from sgsr.config import DEFAULT_MAX_PIXELS, Config, Run, TrainConfig, allows_import
from sgsr.distributed import DistContext, all_mean, barrier, init_from_env, resolve_device
from sgsr.fsutil import atomic_write, sha256sum, write_text
from sgsr.optim import IMPLEMENTATION_KEYS, make_adam  # [gpu] optimizer factory
from sgsr.prefetch import prefetched  # [gpu] background batch loading
from sgsr.step_capture import make_step  # [gpu] eager / CUDA graph / compile step

log = logging.getLogger(__name__)

#: A batch source maps the index of the first iteration to run (0 for a fresh start) to an
#: iterator of (lr, hr) batches for that iteration onward. It must be a pure function of that
#: index for resume to be exact.
BatchSource = Callable[[int], Iterator[tuple[Tensor, Tensor]]]

#: TrainConfig keys that change only bookkeeping, never the trained weights; a checkpoint stays
#: resumable when they change. Every other key (and seed, model, loss, scale, data) is hashed.
BOOKKEEPING_KEYS = (
    "checkpoint_every", "val_every", "log_every", "num_workers", "device",
    *IMPLEMENTATION_KEYS,  # [gpu] how a step runs, not what it computes
)  # fmt: skip

#: File holding the non-averaged weights beside model.safetensors when EMA is on.
RAW_WEIGHTS_NAME = "model-raw.safetensors"


class TrainingDiverged(ArithmeticError):
    """The loss became NaN or infinite; the message gives the iteration and every component."""

    def __init__(self, iteration: int, values: Mapping[str, float]) -> None:
        self.iteration = iteration
        self.values = dict(values)
        parts = ", ".join(f"{k}={v!r}" for k, v in self.values.items())
        super().__init__(
            f"training diverged at iteration {iteration}: non-finite loss ({parts}). Nothing of "
            "this iteration was saved; the checkpoint on disk is the last good one. Lower "
            "train.lr, set train.grad_clip or use train.amp: off (a params change, so training "
            "restarts from scratch)."
        )


class ResumeWarning(UserWarning):
    """A checkpoint was found but not resumed (written for different params)."""


@dataclass
class TrainResult:
    """What a finished :func:`train` call hands back (tensors on the CPU)."""

    iterations: int
    resumed_from: int
    model_state: dict[str, Tensor]
    ema_state: dict[str, Tensor] | None
    last_losses: dict[str, float] = field(default_factory=dict)
    val_psnr: float | None = None
    wall_time: float = 0.0
    fingerprint: str = ""

    @property
    def weights(self) -> dict[str, Tensor]:
        """The weights to ship: EMA when EMA is on, else the raw ones."""
        return self.ema_state if self.ema_state is not None else self.model_state


# --- small building blocks -------------------------------------------------------------------


def seed_everything(seed: int) -> None:
    """Seed Python, numpy and torch (all devices)."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def lr_factor(step: int, opts: TrainConfig) -> float:
    """Multiplier of train.lr for the update after `step` completed updates.

    Linear warmup over ``warmup`` updates (from 1/warmup up to 1), times the schedule:
    ``multistep`` multiplies by gamma at each milestone (update m+1 onward uses the decayed
    rate), ``cosine`` anneals from 1 to 0 over the updates after warmup, ``constant`` is 1.
    """
    warm = min(1.0, (step + 1) / opts.warmup) if opts.warmup > 0 else 1.0
    if opts.schedule == "multistep":
        return warm * opts.gamma ** bisect.bisect_right(sorted(opts.milestones), step)
    if opts.schedule == "cosine":
        span = max(1, opts.iterations - opts.warmup)
        t = min(max(step - opts.warmup, 0), span) / span
        return warm * 0.5 * (1.0 + math.cos(math.pi * t))
    return warm


class EMA:
    """Exponential moving average of a model's state: ``avg = decay * avg + (1 - decay) * w``
    after every update, starting from the initial weights. Buffers that are not floating point
    are copied. Its state is a plain tensor dict (checkpointed, exported)."""

    def __init__(self, model: nn.Module, decay: float) -> None:
        self.decay = decay
        self.shadow = {k: v.detach().clone() for k, v in model.state_dict().items()}

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        current = model.state_dict()
        floats = [k for k, v in self.shadow.items() if v.is_floating_point()]
        if floats:
            torch._foreach_lerp_(
                [self.shadow[k] for k in floats], [current[k] for k in floats], 1.0 - self.decay
            )
        for k, v in self.shadow.items():
            if not v.is_floating_point():
                v.copy_(current[k])

    def state_dict(self) -> dict[str, Tensor]:
        return self.shadow

    @torch.no_grad()
    def load_state_dict(self, state: Mapping[str, Tensor]) -> None:
        missing = set(self.shadow) ^ set(state)
        if missing:
            raise ValueError(f"EMA state does not match the model (keys {sorted(missing)[:5]})")
        for k, v in self.shadow.items():
            v.copy_(state[k])


def amp_dtype(amp: str, device: torch.device) -> torch.dtype | None:
    """Autocast dtype: ``auto`` = bf16 on CUDA, none (fp32) on CPU; ``off`` = none."""
    if amp == "auto":
        return torch.bfloat16 if device.type == "cuda" else None
    return {"off": None, "bf16": torch.bfloat16, "fp16": torch.float16}[amp]


@dataclass
class TrainState:
    """Everything a training step reads and writes (see :func:`build_state`)."""

    model: nn.Module  # what forward runs: the DDP wrapper under torchrun
    module: nn.Module  # the bare network (weights, EMA, validation)
    loss: nn.Module
    opts: TrainConfig
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    scaler: torch.amp.GradScaler
    ema: EMA | None
    device: torch.device
    dtype: torch.dtype | None
    channels_last: bool
    ctx: DistContext
    iteration: int = 0


def build_state(
    model: nn.Module, loss: nn.Module, opts: TrainConfig, ctx: DistContext | None = None
) -> TrainState:
    """Move model and loss to the device, wrap in DDP under torchrun, build Adam, the LR
    schedule (a LambdaLR over :func:`lr_factor`), the grad scaler (on only for fp16) and EMA."""
    ctx = ctx or DistContext(device=resolve_device(opts.device))
    device = ctx.device
    channels_last = opts.channels_last and device.type == "cuda"
    module = model.to(device, memory_format=torch.channels_last if channels_last else None)
    loss = loss.to(device)
    wrapped: nn.Module = module
    if ctx.enabled:
        from torch.nn.parallel import DistributedDataParallel

        ids = [device.index] if device.type == "cuda" else None
        wrapped = DistributedDataParallel(module, device_ids=ids)
    params = [p for p in module.parameters() if p.requires_grad]
    optimizer = make_adam(params, opts, device)  # [gpu] train.optimizer_impl

    def factor(step: int) -> float:
        return lr_factor(step, opts)

    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, factor)
    dtype = amp_dtype(opts.amp, device)
    scaler = torch.amp.GradScaler(device.type, enabled=dtype == torch.float16)
    ema = EMA(module, opts.ema) if opts.ema > 0 else None
    module.train()
    return TrainState(
        wrapped, module, loss, opts, optimizer, scheduler, scaler, ema, device, dtype,
        channels_last, ctx,
    )  # fmt: skip


def train_step(state: TrainState, lr: Tensor, hr: Tensor) -> dict[str, float]:
    """One update. Returns the loss components (weighted), ``total`` and the ``lr`` used.

    Under DDP the logged values are averaged over ranks first, so every rank sees the same
    numbers and a non-finite loss stops all ranks together (no rank left waiting in all-reduce).
    Raises TrainingDiverged before touching the weights if the loss is NaN or infinite.
    """
    fmt = torch.channels_last if state.channels_last else torch.contiguous_format
    lr = lr.to(state.device, non_blocking=True).contiguous(memory_format=fmt)
    hr = hr.to(state.device, non_blocking=True)
    with torch.autocast(state.device.type, dtype=state.dtype, enabled=state.dtype is not None):
        sr = state.model(lr)
    total, components = state.loss(sr.float(), hr.float())
    values = torch.stack([total.detach(), *(c.detach() for c in components.values())]).float()
    numbers = all_mean(state.ctx, values).tolist()
    out = dict(zip(["total", *components], numbers, strict=True))
    if not all(math.isfinite(v) for v in numbers):
        raise TrainingDiverged(state.iteration + 1, out)
    out["lr"] = state.optimizer.param_groups[0]["lr"]
    state.optimizer.zero_grad(set_to_none=True)
    state.scaler.scale(total).backward()
    if state.opts.grad_clip > 0:
        state.scaler.unscale_(state.optimizer)
        nn.utils.clip_grad_norm_(state.module.parameters(), state.opts.grad_clip)
    state.scaler.step(state.optimizer)
    state.scaler.update()
    state.scheduler.step()
    if state.ema is not None:
        state.ema.update(state.module)
    state.iteration += 1
    return out


def _cpu_state(sd: Mapping[str, Tensor]) -> dict[str, Tensor]:
    return {k: v.detach().to("cpu", copy=True).contiguous() for k, v in sd.items()}


def global_batch(opts: TrainConfig, world_size: int) -> int:
    """Samples per update over all processes: (batch_size // world_size) * world_size."""
    return opts.batch_size // world_size * world_size


def _checkpoint_state(
    state: TrainState, fingerprint: str, samples: int, extra: dict[str, Any]
) -> dict[str, Any]:
    return {
        "format": FORMAT,
        "fingerprint": fingerprint,
        "iteration": state.iteration,
        "samples": samples,
        "world_size": state.ctx.world_size,
        "global_batch": global_batch(state.opts, state.ctx.world_size),
        "model": _cpu_state(state.module.state_dict()),
        "optimizer": state.optimizer.state_dict(),
        "scheduler": state.scheduler.state_dict(),
        "scaler": state.scaler.state_dict(),
        "ema": _cpu_state(state.ema.state_dict()) if state.ema is not None else None,
        "rng": rng_state(),
        **extra,
    }


def _restore(state: TrainState, ck: Mapping[str, Any]) -> None:
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


def options_fingerprint(opts: TrainConfig, seed: int, **more: Any) -> str:
    """Hash of everything that shapes the trained weights (not BOOKKEEPING_KEYS)."""
    payload = {
        "seed": seed,
        "train": {k: v for k, v in dataclasses.asdict(opts).items() if k not in BOOKKEEPING_KEYS},
        **more,
    }
    text = json.dumps(payload, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


# --- batch sources -----------------------------------------------------------------------------


def fixed_batch(lr: Tensor, hr: Tensor) -> BatchSource:
    """The same (lr, hr) batch every iteration (overfitting tests, benchmarks)."""
    return lambda start: itertools.repeat((lr, hr))


def iterable_source(batches: Iterable[tuple[Tensor, Tensor]]) -> BatchSource:
    """Wrap a re-iterable (e.g. a DataLoader with a deterministic sampler): on resume the first
    `start` batches are drawn and dropped, so exactness needs the same sequence every time."""
    return lambda start: itertools.islice(iter(batches), start, None)


def patch_batches(
    dataset: Any,
    batch_size: int,
    seed: int,
    rank: int = 0,
    world_size: int = 1,
    num_workers: int = 0,
    pin_memory: bool = False,
) -> BatchSource:
    """Batches of the patch store: a DataLoader over a :class:`PatchSampler` that starts
    ``start * batch_size`` samples into this rank's infinite deterministic key stream.

    The loader gets its own generator, so creating it does not draw from the global torch RNG
    (which a resumed run restores from the checkpoint).
    """
    from torch.utils.data import DataLoader

    from sgsr.data.patches import PatchSampler

    def source(start: int) -> Iterator[tuple[Tensor, Tensor]]:
        sampler = PatchSampler(
            len(dataset),
            batch_size,
            seed,
            start=start * batch_size,
            rank=rank,
            world_size=world_size,
        )
        loader = DataLoader(
            dataset,
            batch_size=batch_size,
            sampler=sampler,
            num_workers=num_workers,
            pin_memory=pin_memory,
            drop_last=True,
            generator=torch.Generator().manual_seed(seed),
        )
        return iter(loader)

    return source


# --- dvclive -----------------------------------------------------------------------------------


def open_live(live_dir: Path, resume_at: int | None) -> Any:
    """A dvclive logger that writes under `live_dir` only.

    Only the metric TSVs are written (``plots/metrics/{train,val}/*.tsv``; no metrics.json,
    dvc.yaml or report). ``save_dvc_exp=False, dvcyaml=None`` and the repository lookup is skipped:
    stock dvclive opens the DVC repo from the working directory and, in a git repository that
    has no ``.dvc``, *initialises one* (``Repo.init``). We need none of that: the stage declares
    the folder an output and ``dvc plots`` reads its TSV files. Nothing is sent anywhere:
    DVC Studio is never contacted, even with a Studio token configured.

    ``resume_at`` (the checkpoint's iteration) first drops rows logged after it by a run that
    died before its next checkpoint, so steps are never duplicated; None starts a fresh log
    (dvclive deletes the old curves).
    """
    from dvclive import Live

    class _LocalLive(Live):
        def _init_dvc(self) -> None:
            self._inside_dvc_pipeline = bool(os.getenv("DVC_ROOT"))
            self._save_dvc_exp = False
            self._dvc_file = "dvc.yaml"

        def _init_studio(self) -> None:  # never contact DVC Studio, token or not
            self._dvc_studio_config = {}
            self._studio_events_to_skip = {"start", "data", "done"}

        def make_summary(self) -> None:
            """No metrics.json: ``dvc plots show`` on models/live would fail to plot it, and
            run.json already holds the final values."""

    if resume_at is not None:
        truncate_live(live_dir, resume_at)
    return _LocalLive(
        dir=str(live_dir), resume=resume_at is not None, save_dvc_exp=False, dvcyaml=None
    )


def truncate_live(live_dir: Path, step: int) -> None:
    """Drop rows with step > `step` from every dvclive metric TSV under `live_dir`."""
    metrics = Path(live_dir) / "plots" / "metrics"
    if not metrics.is_dir():
        return
    for tsv in sorted(metrics.rglob("*.tsv")):
        lines = tsv.read_text().splitlines(keepends=True)
        if not lines:
            continue
        header = lines[0].rstrip("\r\n").split("\t")
        col = header.index("step") if "step" in header else None
        if col is None:
            continue
        keep = [lines[0]]
        for line in lines[1:]:
            cells = line.rstrip("\r\n").split("\t")
            try:
                if int(cells[col]) <= step:
                    keep.append(line)
            except (ValueError, IndexError):
                continue
        if len(keep) != len(lines):
            write_text(tsv, "".join(keep))


# --- the loop ----------------------------------------------------------------------------------


@dataclass
class _LogWindow:
    """Running sums of logged values since the last log step (checkpointed for exact logs)."""

    n: int = 0
    sums: dict[str, float] = field(default_factory=dict)

    def add(self, values: Mapping[str, float]) -> None:
        self.n += 1
        for k, v in values.items():
            self.sums[k] = self.sums.get(k, 0.0) + v

    def mean_and_reset(self) -> dict[str, float]:
        out = {k: v / max(self.n, 1) for k, v in self.sums.items()}
        self.n, self.sums = 0, {}
        return out


def train(
    model: nn.Module,
    loss: nn.Module,
    batches: BatchSource | Iterable[tuple[Tensor, Tensor]],
    opts: TrainConfig,
    *,
    seed: int = 0,
    checkpoint: str | os.PathLike[str] | None = None,
    live_dir: str | os.PathLike[str] | None = None,
    validate: Callable[[nn.Module], float] | None = None,
    fingerprint: str | None = None,
    ctx: DistContext | None = None,
    progress: bool | None = None,
    desc: str = "train",
) -> TrainResult:
    """Train `model` for ``opts.iterations`` updates, resuming from `checkpoint` if it exists.

    - batches: a :data:`BatchSource` (``start -> iterator of (lr, hr)``) or a re-iterable;
      each batch is this rank's share.
    - checkpoint: path of ``checkpoint.pt``; written every ``opts.checkpoint_every`` updates and
      at the end, loaded with the weights-only unpickler. A checkpoint whose fingerprint differs
      (other params) is not resumed: a :class:`ResumeWarning` is issued and training starts
      fresh. A checkpoint that is unsafe or corrupt raises (sgsr.checkpoint errors).
    - live_dir: dvclive folder; train/<component>, train/total and train/lr (means over the last
      ``log_every`` updates) every ``log_every`` updates, val/psnr_y every ``val_every``.
    - validate: called on the bare network in eval mode under no_grad, with EMA weights when EMA
      is on; returns PSNR-Y in dB (rank 0 only).
    - fingerprint: identifies the params; default hashes `opts` (minus bookkeeping) and seed.
    - ctx: the distributed context (device, rank); default single process on ``opts.device``.

    Returns the final weights (CPU) and statistics; raises TrainingDiverged on a NaN/inf loss.
    """
    ctx = ctx or DistContext(device=resolve_device(opts.device))
    fingerprint = fingerprint or options_fingerprint(opts, seed)
    source: BatchSource = batches if callable(batches) else iterable_source(batches)
    checkpoint = Path(checkpoint) if checkpoint is not None else None
    det_before = torch.are_deterministic_algorithms_enabled()
    det_warn_before = torch.is_deterministic_algorithms_warn_only_enabled()
    cudnn_before = (torch.backends.cudnn.benchmark, torch.backends.cudnn.deterministic)
    if ctx.device.type == "cpu":
        if opts.deterministic:
            torch.use_deterministic_algorithms(True, warn_only=True)
    else:
        torch.backends.cudnn.benchmark = not opts.deterministic
        torch.backends.cudnn.deterministic = opts.deterministic
    try:
        seed_everything(seed)
        state = build_state(model, loss, opts, ctx)
        return _loop(
            state, source, opts, checkpoint, live_dir, validate, fingerprint, progress, desc
        )
    finally:
        torch.use_deterministic_algorithms(det_before, warn_only=det_warn_before)
        torch.backends.cudnn.benchmark, torch.backends.cudnn.deterministic = cudnn_before


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


def _resume(state: TrainState, checkpoint: Path | None, fingerprint: str) -> dict[str, Any] | None:
    if checkpoint is None or not checkpoint.exists():
        return None
    ck = load_checkpoint(checkpoint)  # unsafe/corrupt files raise: never silently discarded
    batch = global_batch(state.opts, state.ctx.world_size)
    if ck.get("fingerprint") != fingerprint or ck.get("global_batch") != batch:
        warnings.warn(
            f"{checkpoint} was written for different params (fingerprint "
            f"{ck.get('fingerprint')}, global batch {ck.get('global_batch')}; now {fingerprint}, "
            f"{batch}): not resuming, training starts fresh and overwrites it at the first "
            "checkpoint",
            ResumeWarning,
            stacklevel=3,
        )
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
        _restore(state, ck)
        _LogWindow(int(ck["log_window"]["n"]), dict(ck["log_window"]["sums"]))
        float(ck["wall_time"])
        dict(ck["last_losses"])
    except (KeyError, RuntimeError, ValueError, TypeError, IndexError, AttributeError) as exc:
        detail = " ".join(str(exc).split())[:400]
        raise CheckpointError(
            f"checkpoint {checkpoint} matches these params but its contents do not fit the "
            f"model, optimizer or state being trained ({type(exc).__name__}: {detail}){fresh}"
        ) from exc
    return ck


def _loop(
    state: TrainState,
    source: BatchSource,
    opts: TrainConfig,
    checkpoint: Path | None,
    live_dir: str | os.PathLike[str] | None,
    validate: Callable[[nn.Module], float] | None,
    fingerprint: str,
    progress: bool | None,
    desc: str,
) -> TrainResult:
    from tqdm.auto import tqdm

    ctx = state.ctx
    ck = _resume(state, checkpoint, fingerprint)
    step = make_step(state)  # [gpu] train.capture; after _resume (a graph holds the tensors)
    start = state.iteration
    window = _LogWindow()
    wall_before = 0.0
    last: dict[str, float] = {}
    val_psnr: float | None = None
    if ck is not None:
        window = _LogWindow(int(ck["log_window"]["n"]), dict(ck["log_window"]["sums"]))
        wall_before = float(ck["wall_time"])
        last = dict(ck["last_losses"])
        val_psnr = ck.get("val_psnr")
    batch_size: int | None = None
    live = None
    if ctx.is_main and live_dir is not None and start < opts.iterations:
        live = open_live(Path(live_dir), start if ck is not None else None)
    bar = tqdm(
        total=opts.iterations,
        initial=start,
        desc=desc,
        unit="it",
        dynamic_ncols=True,
        leave=False,  # the stage's summary line replaces it
        disable=(not ctx.is_main) or (None if progress is None else not progress),
    )
    t0 = time.perf_counter()
    eval_model: nn.Module | None = None
    try:
        batch_iter = source(start) if start < opts.iterations else iter(())
        while state.iteration < opts.iterations:
            try:
                lr, hr = next(batch_iter)
            except StopIteration:
                raise ValueError(
                    f"the batch source ran out after iteration {state.iteration}; it must yield "
                    f"a batch for every one of the {opts.iterations} iterations"
                ) from None
            batch_size = int(lr.shape[0])
            values = step(lr, hr)  # [gpu] was train_step(state, lr, hr)
            it = state.iteration
            window.add(values)
            last = values
            bar.update(1)
            bar.set_postfix(loss=f"{values['total']:.4g}", refresh=False)
            done = it == opts.iterations
            log_now = it % opts.log_every == 0 or done
            if log_now:
                means = window.mean_and_reset()
                if live is not None:
                    live.step = it
                    for name, value in means.items():
                        live.log_metric(f"train/{name}", value)
            if validate is not None and ctx.is_main and (it % opts.val_every == 0 or done):
                eval_model = _eval_model(state, eval_model)
                with torch.no_grad():
                    val_psnr = float(validate(eval_model))
                state.module.train()
                if live is not None:
                    live.step = it
                    live.log_metric("val/psnr_y", val_psnr)
            if checkpoint is not None and ctx.is_main and (it % opts.checkpoint_every == 0 or done):
                extra = {
                    "log_window": {"n": window.n, "sums": dict(window.sums)},
                    "wall_time": wall_before + time.perf_counter() - t0,
                    "last_losses": dict(last),
                    "val_psnr": val_psnr,
                }
                samples = it * (batch_size or 0)  # this rank's PatchSampler start
                save_checkpoint(checkpoint, _checkpoint_state(state, fingerprint, samples, extra))
    finally:
        # No live.end(): it would only write metrics.json and talk to Studio/DVC experiments,
        # none of which we use; every TSV row is already on disk.
        bar.close()
    ran = state.iteration > start
    wall = wall_before + (time.perf_counter() - t0 if ran else 0.0)
    return TrainResult(
        iterations=state.iteration,
        resumed_from=start if ck is not None else 0,
        model_state=_cpu_state(state.module.state_dict()),
        ema_state=_cpu_state(state.ema.state_dict()) if state.ema is not None else None,
        last_losses=last,
        val_psnr=val_psnr,
        wall_time=wall,
        fingerprint=fingerprint,
    )


def _eval_model(state: TrainState, cached: nn.Module | None) -> nn.Module:
    """The network to validate, in eval mode: a copy holding the EMA weights, or the model."""
    if state.ema is None:
        return state.module.eval()
    if cached is None:
        cached = copy.deepcopy(state.module)
    cached.load_state_dict(state.ema.state_dict())
    return cached.eval()


# --- validation --------------------------------------------------------------------------------


def load_val_pairs(
    folder: str | os.PathLike[str], max_pixels: int | None = DEFAULT_MAX_PIXELS
) -> list[tuple[str, np.ndarray, np.ndarray]]:
    """(name, lr, hr) uint8 RGB images from ``<folder>/{lr,hr}/``, matched by file name."""
    from sgsr.imaging import list_images, read_image

    folder = Path(folder)
    if not (folder / "hr").is_dir() or not (folder / "lr").is_dir():
        return []
    hr_files = {p.stem: p for p in list_images(folder / "hr")}
    lr_files = {p.stem: p for p in list_images(folder / "lr")}
    unmatched = sorted(set(hr_files) ^ set(lr_files))
    if unmatched:
        raise ValueError(
            f"validation split {folder}: hr/ and lr/ differ ({', '.join(unmatched[:5])}); "
            "rerun sgsr prepare"
        )
    return [
        (
            stem,
            read_image(lr_files[stem], mode="rgb", max_pixels=max_pixels),
            read_image(hr_files[stem], mode="rgb", max_pixels=max_pixels),
        )
        for stem in sorted(hr_files)
    ]


def psnr_validator(
    pairs: list[tuple[str, np.ndarray, np.ndarray]], scale: int
) -> Callable[[nn.Module], float]:
    """Mean PSNR-Y (dB, `scale` border cropped) of whole validation images, computed in fp32."""
    from sgsr.imaging import to_tensor, to_uint8
    from sgsr.metrics import psnr

    def validate(model: nn.Module) -> float:
        device = next(model.parameters()).device
        scores = []
        for _, lr, hr in pairs:
            sr = model(to_tensor(lr).to(device)).float().cpu()
            scores.append(psnr(to_uint8(sr), hr, border=scale))
        return float(np.mean(scores))

    return validate


# --- the pipeline stage ------------------------------------------------------------------------


def params_hash(cfg: Config, run: Run, store: Path | None = None) -> str:
    """Fingerprint of one run: its seed, train options (minus bookkeeping), model, loss, scale
    and the patch store's meta.json (so re-prepared data does not resume an old checkpoint)."""
    meta = store / "meta.json" if store is not None else None
    return options_fingerprint(
        cfg.train,
        run.seed,
        arch=run.arch,
        model_kwargs=dict(run.model_kwargs),
        loss_spec=run.loss_spec,
        scale=run.scale,
        data=sha256sum(meta) if meta is not None and meta.is_file() else None,
    )


def per_rank_batch(batch_size: int, world_size: int) -> int:
    """train.batch_size is the global batch; each of N processes gets batch_size // N."""
    if batch_size < world_size:
        raise ValueError(
            f"train.batch_size ({batch_size}) is smaller than the number of processes "
            f"({world_size}); each process needs at least one sample"
        )
    if batch_size % world_size:
        warnings.warn(
            f"train.batch_size {batch_size} is not divisible by {world_size} processes: each "
            f"uses {batch_size // world_size}, a global batch of "
            f"{batch_size // world_size * world_size}",
            stacklevel=2,
        )
    return batch_size // world_size


def run(cfg: Config, run_name: str, root: str | os.PathLike[str] | None = None) -> Path:
    """Pipeline stage: train one run of the matrix and write its weights and run card.

    Paths are sgsr.layout's, under `root` (default: the params file's folder, as for every
    stage). Under torchrun every process calls this; rank 0 alone logs, validates and writes.
    Returns the path of ``<root>/models/<run>/model.safetensors``.
    """
    from sgsr import __version__
    from sgsr.data.common import pipeline_root
    from sgsr.losses import build_loss
    from sgsr.models import build_model

    spec = cfg.run(run_name)
    seed = spec.seed  # the primary seed (params `seed`) or a replicate's: init and data order
    opts = cfg.train
    base = pipeline_root(cfg, root)
    store = base / layout.patch_store(spec.scale)
    if not store.is_dir():
        raise FileNotFoundError(
            f"patch store {store} not found: run `sgsr prepare` (or `dvc repro prepare`) first"
        )
    # before anything else: a loss on pretrained weights (lpips_vgg) fails here, naming the file,
    # and its network's random initialisation happens before seeding (no effect on the run)
    loss = build_loss(spec.loss_spec, pretrained_dir=base / layout.PRETRAINED)
    ctx = init_from_env(opts.device)
    try:
        batch = per_rank_batch(opts.batch_size, ctx.world_size)
        from sgsr.data.patches import PatchDataset

        dataset = PatchDataset(store, opts.lr_patch, augment=True, seed=seed)
        if len(dataset) == 0:
            raise ValueError(
                f"patch store {store} holds no patches: no training image is at least "
                "prepare.patch_size on a side; lower prepare.patch_size or add images"
            )
        seed_everything(seed)
        model = build_model(
            spec.arch,
            allow_import=allows_import(cfg, spec.model),
            scale=spec.scale,
            **spec.model_kwargs,
        )
        validate = None
        if ctx.is_main:
            val_dir = base / layout.prepared_set(spec.scale, layout.VAL_SET)
            pairs = load_val_pairs(val_dir, cfg.data.max_pixels)
            if pairs:
                validate = psnr_validator(pairs, spec.scale)
            else:
                warnings.warn(
                    f"no validation images under {val_dir}; "
                    "val/psnr_y is not logged (prepare.val_images is 0?)",
                    stacklevel=2,
                )
        fingerprint = params_hash(cfg, spec, store)
        result = train(
            model,
            loss,
            prefetched(  # [gpu] train.prefetch
                patch_batches(
                    dataset,
                    batch,
                    seed,
                    rank=ctx.rank,
                    world_size=ctx.world_size,
                    num_workers=opts.num_workers,
                    pin_memory=ctx.device.type == "cuda",
                ),
                opts.prefetch,
                pin=ctx.device.type == "cuda",
            ),
            opts,
            seed=seed,
            checkpoint=base / layout.checkpoint_dir(run_name) / CHECKPOINT_NAME,
            live_dir=base / layout.live_dir(run_name),
            validate=validate,
            fingerprint=fingerprint,
            ctx=ctx,
            desc=run_name,
        )
        if ctx.is_main:
            card = {
                "run": spec.name,
                "model": spec.model,
                "arch": spec.arch,
                "model_kwargs": dict(spec.model_kwargs),
                "scale": spec.scale,
                "loss": spec.loss,
                "loss_spec": spec.loss_spec,
                "iterations": result.iterations,
                "batch_size": batch * ctx.world_size,
                "world_size": ctx.world_size,
                "seed": seed,
                "params_hash": fingerprint,
                "weights": "ema" if result.ema_state is not None else "raw",
                "raw_weights": RAW_WEIGHTS_NAME if result.ema_state is not None else None,
                "n_parameters": sum(p.numel() for p in model.parameters()),
                "val_psnr_y": result.val_psnr,
                "last_losses": result.last_losses,
                "wall_time_s": round(result.wall_time, 3),
                "device": str(ctx.device),
                "sgsr_version": __version__,
                "torch_version": torch.__version__,
                "train": dataclasses.asdict(opts),
            }
            write_weights(result, base / layout.run_dir(run_name), card)
            resumed = f", resumed at {result.resumed_from}" if result.resumed_from else ""
            val = f", validation PSNR-Y {result.val_psnr:.2f} dB" if result.val_psnr else ""
            log.info(
                "%s: %d iterations in %.0f s%s%s, weights in %s",
                run_name, result.iterations, result.wall_time, resumed, val,
                base / layout.run_dir(run_name),
            )  # fmt: skip
        barrier(ctx)
    finally:
        from sgsr.distributed import shutdown

        shutdown(ctx)
    return base / layout.weights(run_name)


#: Run-card keys copied into the safetensors header (metadata ``sgsr_run``): enough to rebuild
#: the network from the weights file alone (sgsr.infer falls back to it without run.json), and
#: nothing that varies between identical runs, so identical trainings give identical bytes.
WEIGHTS_METADATA_KEYS = ("run", "arch", "model_kwargs", "scale", "loss", "params_hash")


def save_safetensors(
    tensors: Mapping[str, Tensor], path: str | os.PathLike[str], metadata: Mapping[str, str]
) -> None:
    """safetensors file with a canonical header, written atomically.

    safetensors serialises the metadata map in random order, so the same tensors give different
    bytes from run to run (and DVC sees a changed output). The header is re-emitted with sorted
    keys; tensor offsets are relative to the data block, which is copied unchanged.
    """
    from safetensors.torch import save

    blob = save(
        {k: v.detach().cpu().contiguous().clone() for k, v in tensors.items()}, dict(metadata)
    )
    n = int.from_bytes(blob[:8], "little")
    header = json.loads(blob[8 : 8 + n])
    meta = header.pop("__metadata__", None)
    ordered: dict[str, Any] = {"__metadata__": dict(sorted(meta.items()))} if meta else {}
    ordered.update(sorted(header.items()))
    text = json.dumps(ordered, separators=(",", ":")).encode()
    text += b" " * (-len(text) % 8)  # the format pads the header to 8 bytes with spaces
    with atomic_write(path) as fh:
        fh.write(len(text).to_bytes(8, "little"))
        fh.write(text)
        fh.write(blob[8 + n :])


def write_weights(result: TrainResult, out_dir: Path, card: Mapping[str, Any]) -> Path:
    """``model.safetensors`` (EMA weights if EMA is on), ``model-raw.safetensors`` (EMA on only)
    and ``run.json``, each written atomically.

    Each weights file is a plain state dict; its metadata says ``sgsr_weights`` ("ema" or "raw")
    and ``sgsr_run`` (JSON of :data:`WEIGHTS_METADATA_KEYS` from the run card).
    """
    out_dir = Path(out_dir)
    files = [("model.safetensors", result.weights, card["weights"])]
    if result.ema_state is not None:
        files.append((RAW_WEIGHTS_NAME, result.model_state, "raw"))
    else:
        stale = out_dir / RAW_WEIGHTS_NAME
        if stale.exists():
            stale.unlink()
    summary = json.dumps(
        {k: card[k] for k in WEIGHTS_METADATA_KEYS if k in card}, sort_keys=True, default=str
    )
    for name, tensors, kind in files:
        meta = {"format": "pt", "sgsr_run": summary, "sgsr_weights": kind}
        save_safetensors(tensors, out_dir / name, meta)
    write_text(out_dir / "run.json", json.dumps(card, indent=2, default=str) + "\n")
    return out_dir / "model.safetensors"
