"""One training update and everything it reads: the network on its device (wrapped in DDP
under torchrun), the loss, the optimizer and its learning-rate schedule, the grad scaler, EMA
and the autocast dtype.

:func:`build_state` assembles a :class:`TrainState`; :func:`train_step` is the single update
the loop in `sgsr.train` runs and the benchmarks time. The optimizer is chosen in
:func:`build_optimizer` and the schedule in :func:`build_scheduler`, nowhere else.
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Mapping
from dataclasses import dataclass

import torch
from torch import Tensor, nn
from torch.nn.parallel import DistributedDataParallel

from sgsr.config import TrainConfig
from sgsr.distributed import DistContext, all_mean, train_device
from sgsr.models.common import rgb_range_of, unit_forward
from sgsr.optim import adam_kwargs, portable


class TrainingDiverged(ArithmeticError):
    """The loss became NaN or infinite, or exploded (``train.diverge_factor``); the message
    gives the iteration, every component and, once the loop adds it, what to change."""

    def __init__(
        self, iteration: int, values: Mapping[str, float], reason: str = "non-finite loss"
    ) -> None:
        self.iteration = iteration
        self.values = dict(values)
        #: the non-finite terms (``total`` only when every term is finite but their sum is not)
        self.terms = [k for k, v in self.values.items() if k != "total" and not math.isfinite(v)]
        if not self.terms:
            self.terms = [k for k, v in self.values.items() if not math.isfinite(v)]
        if reason == "non-finite loss" and self.terms:
            reason = f"non-finite {', '.join(self.terms)}"
        self.reason = reason
        self.advice = (
            "Nothing of this iteration was saved. Lower train.lr, set train.grad_clip or use "
            "train.amp: off (a params change, so training restarts from scratch)."
        )
        super().__init__(self._text())

    def _text(self) -> str:
        parts = ", ".join(f"{k}={v!r}" for k, v in self.values.items())
        return (
            f"training diverged at iteration {self.iteration}: {self.reason} ({parts}). "
            f"{self.advice}"
        )

    def explain(self, opts: TrainConfig, checkpoint_at: int | None) -> TrainingDiverged:
        """Replace the generic advice by what these options make likely and what is on disk
        (`checkpoint_at`: the iteration of the last checkpoint written, None if none)."""
        self.advice = divergence_advice(opts, checkpoint_at, self.iteration)
        self.args = (self._text(),)
        return self


#: Learning rate and weight decay above which Adam on an SR network is likely to blow up
#: (published SR recipes use 1e-4 to 5e-4 and no decay).
_HIGH_LR, _HIGH_DECAY = 1e-2, 1e-2


def divergence_advice(opts: TrainConfig, checkpoint_at: int | None, iteration: int) -> str:
    """The likely causes among `opts`, most likely first, and whether a checkpoint exists."""
    causes = []
    if opts.lr > _HIGH_LR:
        causes.append(f"train.lr is {opts.lr:g}, high for Adam on an SR network (1e-4 to 5e-4 "
                      "is usual): lower it")  # fmt: skip
    if opts.weight_decay > _HIGH_DECAY:
        causes.append(f"train.weight_decay is {opts.weight_decay:g}, far above what SR uses "
                      "(0): lower it")  # fmt: skip
    if opts.init_from and iteration <= 2:
        causes.append(f"it failed at once, so the start weights train.init_from: "
                      f"{opts.init_from} may not suit this model or loss")  # fmt: skip
    if opts.amp == "fp16":
        causes.append("train.amp is fp16, whose range is small: use bf16 or off")
    if not causes:
        causes.append("lower train.lr")
    if opts.grad_clip <= 0:
        causes.append("set train.grad_clip (e.g. 1.0) to bound each update")
    saved = (
        f"The checkpoint on disk is from iteration {checkpoint_at}, before the failure (a "
        "params change restarts training from scratch anyway)."
        if checkpoint_at
        else "No checkpoint was written before the failure, so nothing of this run is kept."
    )
    return f"Likely: {'; '.join(causes)}. Nothing of this iteration was saved. {saved}"


def explosion(total: float, lowest: float, factor: float) -> bool:
    """The finite-explosion rule of ``train.diverge_factor``: the loss is more than `factor`
    times the lowest loss of this run so far (never for factor 0 or a non-positive minimum)."""
    return factor > 0 and lowest > 0 and total > factor * lowest


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


def build_optimizer(module: nn.Module, opts: TrainConfig) -> torch.optim.Optimizer:
    """The optimizer over `module`'s trainable parameters: Adam with ``train.lr``, ``betas`` and
    ``weight_decay``, in the implementation ``train.optimizer_impl`` picks for the device the
    parameters are on (`sgsr.optim`: fused on CUDA, torch's default on the CPU), with
    checkpoints that resume in any implementation. The one place an optimizer is chosen or
    configured."""
    params = [p for p in module.parameters() if p.requires_grad]
    device = params[0].device if params else torch.device("cpu")
    return portable(
        torch.optim.Adam(
            params,
            lr=opts.lr,
            betas=tuple(opts.betas),
            weight_decay=opts.weight_decay,
            **adam_kwargs(opts.optimizer_impl, device),
        )
    )


def build_scheduler(
    optimizer: torch.optim.Optimizer, opts: TrainConfig
) -> torch.optim.lr_scheduler.LRScheduler:
    """A LambdaLR over :func:`lr_factor`: warmup times ``train.schedule``."""

    def factor(step: int) -> float:
        return lr_factor(step, opts)

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


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
    """Move model and loss to the device, wrap in DDP under torchrun, build the optimizer and
    its LR schedule, the grad scaler (on only for fp16) and EMA."""
    ctx = ctx or DistContext(device=train_device(opts.device))
    device = ctx.device
    channels_last = opts.channels_last and device.type == "cuda"
    module = model.to(device, memory_format=torch.channels_last if channels_last else None)
    loss = loss.to(device)
    wrapped: nn.Module = module
    if ctx.enabled:
        ids = [device.index] if device.type == "cuda" else None
        wrapped = DistributedDataParallel(module, device_ids=ids)
    optimizer = build_optimizer(module, opts)
    scheduler = build_scheduler(optimizer, opts)
    dtype = amp_dtype(opts.amp, device)
    scaler = torch.amp.GradScaler(device.type, enabled=dtype == torch.float16)
    ema = EMA(module, opts.ema) if opts.ema > 0 else None
    module.train()
    return TrainState(
        wrapped, module, loss, opts, optimizer, scheduler, scaler, ema, device, dtype,
        channels_last, ctx,
    )  # fmt: skip


def forward_loss(
    state: TrainState, lr_batch: Tensor, hr_batch: Tensor, autocast_cache: bool = True
) -> tuple[Tensor, dict[str, Tensor], Tensor]:
    """The network on a device batch (under autocast) and the loss in fp32: ``(total,
    components, values)``, values the detached ``[total, *components]`` as one fp32 tensor.
    The forward half of :func:`train_step`, shared with the captured step
    (`sgsr.step_capture.step_body`) so that both compute the same thing. ``autocast_cache``
    must be False under CUDA-graph capture (cached casts would be freed inside the capture)."""
    with torch.autocast(
        state.device.type,
        dtype=state.dtype,
        enabled=state.dtype is not None,
        cache_enabled=autocast_cache,
    ):
        sr = unit_forward(state.model, lr_batch, rgb_range_of(state.module))
    total, components = state.loss(sr.float(), hr_batch.float())
    values = torch.stack([total.detach(), *(c.detach() for c in components.values())]).float()
    return total, components, values


def train_step(state: TrainState, lr_batch: Tensor, hr_batch: Tensor) -> dict[str, float]:
    """One update on a batch of low-resolution inputs and their high-resolution targets.

    Returns the loss components (weighted), ``total`` and ``lr``, the learning rate this update
    used (logged as ``train/lr``). Under DDP the logged values are averaged over ranks first, so
    every rank sees the same numbers and a non-finite loss stops all ranks together (no rank
    left waiting in all-reduce). Raises TrainingDiverged before touching the weights if the loss
    is NaN or infinite.
    """
    fmt = torch.channels_last if state.channels_last else torch.contiguous_format
    lr_batch = lr_batch.to(state.device, non_blocking=True).contiguous(memory_format=fmt)
    hr_batch = hr_batch.to(state.device, non_blocking=True)
    total, components, values = forward_loss(state, lr_batch, hr_batch)
    numbers = all_mean(state.ctx, values).tolist()
    out = dict(zip(["total", *components], numbers, strict=True))
    if not all(math.isfinite(v) for v in numbers):
        raise TrainingDiverged(state.iteration + 1, out)
    out["lr"] = state.optimizer.param_groups[0]["lr"]  # the learning rate
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
