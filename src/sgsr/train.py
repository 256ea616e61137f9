"""The training loop and the train stage.

- :func:`train` is the library loop: iterations of `sgsr.step.train_step` (eager, or as one
  CUDA graph or compiled, per ``train.capture``: `sgsr.step_capture`) with logging
  (`sgsr.live`), validation, checkpoints and resume (`sgsr.checkpoint`). It takes any model,
  any loss with the :class:`sgsr.losses.CompositeLoss` contract (``loss(sr, hr) -> (total,
  components)``), a *batch source* (`sgsr.data.batches`) and a
  :class:`sgsr.config.TrainConfig`, so it runs on a toy model and toy batches in a test as well
  as on EDSR and the patch store.
- :func:`run` is the pipeline stage ``sgsr train --run NAME``: it builds the model, loss, patch
  dataset and validation set of one run of the params matrix, calls :func:`train`, and writes
  ``models/<run>/model.safetensors`` and ``models/<run>/run.json`` (`sgsr.weights`).

Resume is exact on the CPU: a checkpoint holds every piece of state the next iteration reads
(weights, optimizer, scheduler, EMA, grad scaler, RNG states, data position, the partial logging
window), and the batch source is a pure function of the iteration number. See docs/training.md.

The names a training loop of one's own needs are importable from here too (``__all__``).
"""

from __future__ import annotations

import copy
import dataclasses
import functools
import logging
import math
import os
import random
import shutil
import time
import warnings
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from sgsr import layout
from sgsr.checkpoint import (
    CHECKPOINT_NAME,
    CheckpointError,
    cpu_state,
    options_fingerprint,
    resume_checkpoint,
    save_checkpoint,
    training_checkpoint,
)
from sgsr.config import Config, Run, TrainConfig, allows_import
from sgsr.data.batches import BatchSource, fixed_batch, iterable_source, patch_batches
from sgsr.data.prefetch import prefetched
from sgsr.distributed import DistContext, barrier, init_from_env, train_device
from sgsr.fsutil import replace_dir, sha256sum, staging_dir
from sgsr.gan import (
    DISCRIMINATOR_NAME,
    GanState,
    adversarial_term,
    attach_discriminator,
    build_gan_state,
    gan_state_dict,
    gan_step,
    restore_gan,
    write_discriminator,
)
from sgsr.live import open_live
from sgsr.step import (
    EMA,
    TrainingDiverged,
    TrainState,
    build_optimizer,
    build_state,
    explosion,
    lr_factor,
    train_step,
)
from sgsr.step_capture import make_step
from sgsr.validation import BelowBicubicWarning, bicubic_psnr, load_val_pairs, psnr_validator
from sgsr.warmstart import warm_start
from sgsr.weights import write_weights

__all__ = [
    "EMA",
    "BatchSource",
    "TrainResult",
    "TrainState",
    "TrainingDiverged",
    "build_optimizer",
    "build_state",
    "fixed_batch",
    "iterable_source",
    "lr_factor",
    "patch_batches",
    "run",
    "train",
    "train_step",
]

log = logging.getLogger(__name__)


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
    #: adversarial runs: the discriminator's final weights
    discriminator_state: dict[str, Tensor] | None = None

    @property
    def weights(self) -> dict[str, Tensor]:
        """The weights to ship: EMA when EMA is on, else the raw ones."""
        return self.ema_state if self.ema_state is not None else self.model_state


def seed_everything(seed: int) -> None:
    """Seed Python, numpy and torch (all devices)."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


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
      (other params) is not resumed: training starts fresh (an info line says so) and replaces
      it. A checkpoint that is unsafe or corrupt raises (sgsr.checkpoint errors).
    - live_dir: dvclive folder; train/<component>, train/total and train/lr (means over the last
      ``log_every`` updates) every ``log_every`` updates, val/psnr_y every ``val_every``.
    - validate: called on the bare network in eval mode under no_grad, with EMA weights when EMA
      is on; returns PSNR-Y in dB (rank 0 only).
    - fingerprint: identifies the params; default hashes `opts` (minus bookkeeping) and seed.
    - ctx: the distributed context (device, rank); default single process on ``opts.device``.

    A loss with a ``gan`` term of weight > 0 trains a discriminator beside the model
    (`sgsr.gan`: alternating updates, its state in the checkpoint; train/d_loss, d_real,
    d_fake and d_lr logged too); any other loss trains exactly as before.

    Returns the final weights (CPU) and statistics; raises TrainingDiverged on a NaN/inf loss
    or one over ``opts.diverge_factor`` times the lowest so far, saying what likely caused it.
    """
    ctx = ctx or DistContext(device=train_device(opts.device))
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
        term = adversarial_term(loss)
        if term is not None:
            attach_discriminator(term)  # seeded: its initial weights follow the run's seed
        state = build_state(model, loss, opts, ctx)
        gan = build_gan_state(state, term) if term is not None else None
        return _loop(
            state, source, opts, checkpoint, live_dir, validate, fingerprint, progress, desc, gan
        )
    finally:
        torch.use_deterministic_algorithms(det_before, warn_only=det_warn_before)
        torch.backends.cudnn.benchmark, torch.backends.cudnn.deterministic = cudnn_before


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
    gan: GanState | None = None,
) -> TrainResult:
    from tqdm.auto import tqdm

    ctx = state.ctx
    ck = resume_checkpoint(state, checkpoint, fingerprint)
    if gan is None:
        step = make_step(state)  # train.capture; after resuming (a graph holds the tensors)
    else:
        if ck is not None:
            _resume_gan(gan, ck, checkpoint)
        if opts.capture != "off":
            warnings.warn(
                f"train.capture: {opts.capture} does not capture adversarial training; the "
                "generator and discriminator updates run eagerly",
                stacklevel=3,
            )
        step = functools.partial(gan_step, state, gan)
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
    # the finite-explosion rule (train.diverge_factor) compares with the lowest loss seen since
    # this process started (a resumed run starts afresh: it only decides when to stop)
    lowest = math.inf
    saved_at: int | None = start if ck is not None else None
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
                lr_batch, hr_batch = next(batch_iter)
            except StopIteration:
                raise ValueError(
                    f"the batch source ran out after iteration {state.iteration}; it must yield "
                    f"a batch for every one of the {opts.iterations} iterations"
                ) from None
            batch_size = int(lr_batch.shape[0])
            try:
                values = step(lr_batch, hr_batch)
                if explosion(values["total"], lowest, opts.diverge_factor):
                    raise TrainingDiverged(
                        state.iteration,
                        values,
                        f"the loss is over train.diverge_factor ({opts.diverge_factor:g}) times "
                        f"its lowest value so far ({lowest:.4g})",
                    )
            except TrainingDiverged as exc:
                raise exc.explain(opts, saved_at) from None
            lowest = min(lowest, values["total"])
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
                if gan is not None:
                    extra["gan"] = gan_state_dict(gan)
                samples = it * (batch_size or 0)  # this rank's PatchSampler start
                save_checkpoint(checkpoint, training_checkpoint(state, fingerprint, samples, extra))
                saved_at = it
    finally:
        # No live.end(): it would only write metrics.json and talk to Studio/DVC experiments,
        # none of which we use; every TSV row is already on disk.
        bar.close()
    ran = state.iteration > start
    wall = wall_before + (time.perf_counter() - t0 if ran else 0.0)
    return TrainResult(
        iterations=state.iteration,
        resumed_from=start if ck is not None else 0,
        model_state=cpu_state(state.module.state_dict()),
        ema_state=cpu_state(state.ema.state_dict()) if state.ema is not None else None,
        last_losses=last,
        val_psnr=val_psnr,
        wall_time=wall,
        fingerprint=fingerprint,
        discriminator_state=cpu_state(gan.discriminator.state_dict()) if gan else None,
    )


def _resume_gan(gan: GanState, ck: Mapping[str, Any], checkpoint: Path | None) -> None:
    """Restore the discriminator's part of a checkpoint that matched these params."""
    try:
        restore_gan(gan, ck["gan"])
    except (KeyError, RuntimeError, ValueError, TypeError, IndexError) as exc:
        detail = " ".join(str(exc).split())[:300]
        raise CheckpointError(
            f"checkpoint {checkpoint} matches these params but its discriminator state is "
            f"missing or does not fit ({type(exc).__name__}: {detail}); delete it to start "
            "fresh (training then restarts from iteration 0)"
        ) from exc


def _eval_model(state: TrainState, cached: nn.Module | None) -> nn.Module:
    """The network to validate, in eval mode: a copy holding the EMA weights, or the model."""
    if state.ema is None:
        return state.module.eval()
    if cached is None:
        cached = copy.deepcopy(state.module)
    cached.load_state_dict(state.ema.state_dict())
    return cached.eval()


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


def _validator(cfg: Config, run_cfg: Run, base: Path) -> Callable[[nn.Module], float] | None:
    """PSNR-Y on the prepared validation split, or None (with a warning) when it is empty."""
    val_dir = base / layout.prepared_set(run_cfg.scale, layout.VAL_SET)
    pairs = load_val_pairs(val_dir, cfg.data.max_pixels)
    if pairs:
        return psnr_validator(pairs, run_cfg.scale)
    warnings.warn(
        f"no validation images under {val_dir}; "
        "val/psnr_y is not logged (prepare.val_images is 0?)",
        stacklevel=3,
    )
    return None


def _compare_with_bicubic(cfg: Config, run_cfg: Run, base: Path, val_psnr: float | None) -> None:
    """Warn when the trained network validates below bicubic on the same images: a loss
    that exploded and came back, or a run far too short, would otherwise read as a result."""
    if val_psnr is None:
        return
    val_dir = base / layout.prepared_set(run_cfg.scale, layout.VAL_SET)
    reference = bicubic_psnr(load_val_pairs(val_dir, cfg.data.max_pixels), run_cfg.scale)
    if val_psnr < reference:
        warnings.warn(
            f"{run_cfg.name}: validation PSNR-Y {val_psnr:.2f} dB is below bicubic's "
            f"{reference:.2f} dB on the same images: the network does worse than no network "
            "(too few train.iterations, or a training that blew up: see train/total in the "
            "curves)",
            BelowBicubicWarning,
            stacklevel=3,
        )


def run_card(
    run_cfg: Run,
    opts: TrainConfig,
    result: TrainResult,
    model: nn.Module,
    ctx: DistContext,
    global_batch: int,
) -> dict[str, Any]:
    """``models/<run>/run.json``: what was trained and how (docs/training.md lists the keys)."""
    from sgsr import __version__

    return {
        "run": run_cfg.name,
        "model": run_cfg.model,
        "arch": run_cfg.arch,
        "model_kwargs": dict(run_cfg.model_kwargs),
        "scale": run_cfg.scale,
        "loss": run_cfg.loss,
        "loss_spec": run_cfg.loss_spec,
        "iterations": result.iterations,
        "batch_size": global_batch,
        "world_size": ctx.world_size,
        "seed": run_cfg.seed,
        "params_hash": result.fingerprint,
        "weights": "ema" if result.ema_state is not None else "raw",
        # a working file beside the checkpoint (relative to the pipeline folder), not an output
        "raw_weights": (
            layout.raw_weights(run_cfg.name).as_posix() if result.ema_state is not None else None
        ),
        "n_parameters": sum(p.numel() for p in model.parameters()),
        "val_psnr_y": result.val_psnr,
        "last_losses": result.last_losses,
        "wall_time_s": round(result.wall_time, 3),
        "device": str(ctx.device),
        "sgsr_version": __version__,
        "torch_version": torch.__version__,
        "train": dataclasses.asdict(opts),
    }


def _starting_model(
    cfg: Config, run_cfg: Run, base: Path, freeze: tuple[str, ...]
) -> tuple[nn.Module, dict[str, Any]]:
    """The run's network as training starts it (built, ``train.init_from`` loaded, `freeze`
    applied) and what was done, for the run card."""
    from sgsr.models import build_model, canonical_arch

    context = {}  # where a community model's pretrained weights are (not a params key)
    if canonical_arch(run_cfg.arch) == "community":
        context["pretrained_dir"] = base / layout.PRETRAINED
    model = build_model(
        run_cfg.arch,
        allow_import=allows_import(cfg, run_cfg.model),
        scale=run_cfg.scale,
        **run_cfg.model_kwargs,
        **context,
    )
    return model, warm_start(model, cfg.train.init_from, freeze, base, run_cfg.name)


def _zero_shot(cfg: Config, run_cfg: Run, base: Path) -> Path:
    """A zero-shot run (``experiment.zero_shot``): the starting weights written as they are,
    with a run card like every run's; no loss, optimizer or patch is touched, so the row is
    exactly the unmodified network."""
    seed_everything(run_cfg.seed)
    model, start = _starting_model(cfg, run_cfg, base, ())
    opts = dataclasses.replace(cfg.train, iterations=0, ema=0.0)
    result = TrainResult(
        iterations=0,
        resumed_from=0,
        model_state=cpu_state(model.state_dict()),
        ema_state=None,
        fingerprint=params_hash(cfg, run_cfg),
    )
    card = run_card(run_cfg, opts, result, model, DistContext(), global_batch=0)
    card.update(start)
    folder = base / layout.run_dir(run_cfg.name)
    write_weights(folder, result.weights, card)
    log.info("%s: zero-shot, the starting weights as they are in %s", run_cfg.name, folder)
    return base / layout.weights(run_cfg.name)


def publish_curves(work: Path | None, out: Path) -> Path:
    """Copy the trainer's curves (`work`, its dvclive folder; None or absent: no curves) to the
    stage's output folder `out`, replacing it in one rename.

    Why two folders: DVC deletes a stage's outputs before running it (what lets its run cache
    restore them), so the curves a resumed run continues live in the working folder beside the
    checkpoint, and the output is written once, complete, when training ends."""
    staging = staging_dir(out)
    try:
        if work is not None and work.is_dir():
            shutil.copytree(work, staging, dirs_exist_ok=True)
        replace_dir(staging, out)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return out


def run(cfg: Config, run_name: str, root: str | os.PathLike[str] | None = None) -> Path:
    """Pipeline stage: train one run of the matrix and write its weights and run card.

    Paths are sgsr.layout's, under `root` (default: the params file's folder, as for every
    stage). Under torchrun every process calls this; rank 0 alone logs, validates and writes.
    Returns the path of ``<root>/models/<run>/model.safetensors``.
    """
    from sgsr.losses import build_loss

    run_cfg = cfg.run(run_name)
    seed = run_cfg.seed  # the primary seed (params `seed`) or a replicate's: init and data order
    opts = cfg.train
    base = layout.pipeline_root(cfg, root)
    if run_cfg.zero_shot:
        return _zero_shot(cfg, run_cfg, base)
    store = base / layout.patch_store(run_cfg.scale)
    if not store.is_dir():
        raise FileNotFoundError(
            f"patch store {store} not found: run `sgsr prepare` (or `dvc repro prepare`) first"
        )
    # before anything else: a loss on pretrained weights (lpips_vgg) fails here, naming the file,
    # and its network's random initialisation happens before seeding (no effect on the run)
    loss = build_loss(run_cfg.loss_spec, pretrained_dir=base / layout.PRETRAINED)
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
        if batch > len(dataset):
            raise ValueError(
                f"train.batch_size ({opts.batch_size}; {batch} per process) is larger than the "
                f"patch store {store} ({len(dataset)} patches): every batch would repeat "
                "patches. Lower train.batch_size, or add images / lower prepare.stride"
            )
        seed_everything(seed)
        model, start = _starting_model(cfg, run_cfg, base, opts.freeze)
        validate = _validator(cfg, run_cfg, base) if ctx.is_main else None
        fingerprint = params_hash(cfg, run_cfg, store)
        result = train(
            model,
            loss,
            prefetched(
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
            live_dir=base / layout.live_work_dir(run_name),
            validate=validate,
            fingerprint=fingerprint,
            ctx=ctx,
            desc=run_name,
        )
        if ctx.is_main:
            # zero-shot (train.iterations 0) trains nothing, so its curves folder is empty (an
            # output DVC expects to exist), whatever an earlier run left in the working folder
            curves = base / layout.live_work_dir(run_name) if opts.iterations else None
            publish_curves(curves, base / layout.live_dir(run_name))
            card = run_card(run_cfg, opts, result, model, ctx, batch * ctx.world_size)
            card.update(start)
            raw = result.model_state if result.ema_state is not None else None
            if result.discriminator_state is not None:
                term = adversarial_term(loss)
                assert term is not None
                card["discriminator"] = {"spec": term.spec, "file": DISCRIMINATOR_NAME}
                write_discriminator(
                    base / layout.run_dir(run_name), result.discriminator_state, term.spec
                )
            write_weights(
                base / layout.run_dir(run_name), result.weights, card,
                raw=raw, raw_dir=base / layout.checkpoint_dir(run_name),
            )  # fmt: skip
            if opts.iterations:
                _compare_with_bicubic(cfg, run_cfg, base, result.val_psnr)
            else:
                log.info(
                    "%s: zero-shot (train.iterations 0), the initial weights in %s",
                    run_name, base / layout.run_dir(run_name),
                )  # fmt: skip
        if ctx.is_main and opts.iterations:
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
