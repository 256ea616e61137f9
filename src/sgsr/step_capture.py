"""How one training step reaches the device (``train.capture``): eager, one CUDA graph, or
``torch.compile``.

Why: on a GPU the step of a small SR network is bound by kernel launches and Python, not by
arithmetic (measured on an H200: 10.9 ms eager against ~0.6 ms of arithmetic for EDSR-baseline
x4 at batch 16). Shapes are static, so the whole update (forward, loss, backward, Adam, EMA)
can be recorded once as a CUDA graph and replayed each iteration with one launch.

- ``off``: :func:`sgsr.step.train_step` itself (the CPU path, unchanged).
- ``cuda_graph``: :class:`GraphStep`. The first call warms up on the first batch (cuDNN
  autotuning, Adam's lazy state), puts every tensor back as it was, and captures; each call
  then copies the batch into the graph's input buffers, replays and reads the losses. The
  learning rate lives in a device tensor that the scheduler fills between replays; Adam runs
  with ``capturable=True``. Needs CUDA and one process; anything else falls back to eager with
  a :class:`CaptureFallbackWarning` saying why (fp16 is refused by the config: its GradScaler
  decides on the CPU). Difference from eager: a non-finite loss is detected after the update
  has run on the GPU, so the weights *in memory* are spoiled; as in eager mode nothing of that
  iteration reaches the disk (the checkpoint stays the last good one) and
  :class:`sgsr.step.TrainingDiverged` is raised.
- ``compile``: the eager step with the network's forward compiled by ``torch.compile``
  (``mode="reduce-overhead"``, i.e. CUDA graphs under the compiler, on CUDA; the default
  mode elsewhere). Works on the CPU too.

Every mode computes the same update: :func:`step_body` is the math of ``train_step`` without
its host synchronisation, and tests/test_gpu_trainer.py checks it bitwise against
``train_step`` on the CPU.
"""

from __future__ import annotations

import functools
import math
import threading
import warnings
from collections.abc import Callable

import torch
from torch import Tensor, nn

from sgsr.step import TrainingDiverged, TrainState, forward_loss, train_step

#: A training step: (lr, hr) batch on the host -> {"total", <components>..., "lr"} as floats.
Step = Callable[[Tensor, Tensor], dict[str, float]]

#: Warm-up updates run (and undone) before capture: cuDNN autotuning, allocator, Adam state.
WARMUP_STEPS = 3

#: Per thread: what to call once a step function has run its first step (its set-up, capture
#: or compilation included, is over). sgsr.gpu_share starts the next run's set-up only then:
#: model initialisation draws from the global RNG, and capture and compilation are not meant
#: to run in two threads at once.
_hooks = threading.local()


def set_first_step_hook(hook: Callable[[], None] | None) -> None:
    """Set (None: clear) this thread's hook for the step functions it makes from now on."""
    _hooks.first_step_done = hook


class CaptureFallbackWarning(UserWarning):
    """train.capture asked for something this device or process cannot do; the step is eager."""


def resolve_capture(state: TrainState) -> tuple[str, str | None]:
    """(mode to use, reason it differs from ``train.capture`` or None)."""
    mode = state.opts.capture
    if mode == "off":
        return mode, None
    if state.ctx.enabled:
        return "off", (
            f"train.capture: {mode} is for one process; under torchrun ({state.ctx.world_size} "
            "processes) each runs the eager step"
        )
    if mode == "cuda_graph" and state.device.type != "cuda":
        return "off", (
            f"train.capture: cuda_graph needs a CUDA device; training on {state.device} runs "
            "the eager step (same numbers, no capture)"
        )
    if mode == "cuda_graph" and state.scaler.is_enabled():
        return "off", "train.capture: cuda_graph cannot capture the fp16 GradScaler; eager step"
    return mode, None


def make_step(state: TrainState, hook: Callable[[], None] | None = None) -> Step:
    """The step function for ``state.opts.capture`` (see the module docstring).

    Call it after the checkpoint is restored: a captured graph holds the addresses of the
    weights and of Adam's state, which restoring replaces. `hook` (default: the one this thread
    set with :func:`set_first_step_hook`) runs after the first step.
    """
    mode, reason = resolve_capture(state)
    if reason is not None:
        warnings.warn(reason, CaptureFallbackWarning, stacklevel=2)
    step: Step
    if mode == "cuda_graph":
        step = GraphStep(state)
    elif mode == "compile":
        step = compiled_step(state)
    else:
        step = functools.partial(train_step, state)
    hook = hook if hook is not None else getattr(_hooks, "first_step_done", None)
    return step if hook is None else _after_first(step, hook)


def _after_first(step: Step, hook: Callable[[], None]) -> Step:
    done = False

    def wrapped(lr: Tensor, hr: Tensor) -> dict[str, float]:
        nonlocal done
        if done:
            return step(lr, hr)
        try:
            return step(lr, hr)
        finally:
            done = True
            hook()

    return wrapped


# --- the math of one update, without host synchronisation ---------------------------------------


def step_body(
    state: TrainState, lr: Tensor, hr: Tensor, autocast_cache: bool = True
) -> tuple[Tensor, list[str]]:
    """Forward and loss (:func:`sgsr.step.forward_loss`, the same code as
    :func:`sgsr.step.train_step`), backward, (clip), Adam, EMA: the update of ``train_step``
    in the same order, for a GradScaler that is off. Returns the stacked ``[total,
    *components]`` (a device tensor, not read) and the component names. ``autocast_cache``
    must be False under graph capture (cached casts would be freed inside the capture)."""
    total, components, values = forward_loss(state, lr, hr, autocast_cache)
    state.optimizer.zero_grad(set_to_none=True)
    total.backward()
    if state.opts.grad_clip > 0:
        nn.utils.clip_grad_norm_(state.module.parameters(), state.opts.grad_clip)
    state.optimizer.step()
    if state.ema is not None:
        state.ema.update(state.module)
    return values, list(components)


def current_lr(state: TrainState) -> float:
    """The learning rate of the next update as a float, without reading a device tensor.

    For the trainer's LambdaLR this is ``base_lr * factor(last_epoch)``, the very expression
    LambdaLR assigns, so the logged value equals the eager step's."""
    sched = state.scheduler
    if isinstance(sched, torch.optim.lr_scheduler.LambdaLR):
        return float(sched.base_lrs[0] * sched.lr_lambdas[0](sched.last_epoch))
    lr = state.optimizer.param_groups[0]["lr"]
    return float(lr)


class GraphStep:
    """The whole update as one CUDA graph (``capture=True``), or :func:`step_body` run
    eagerly with the same bookkeeping (``capture=False``: what the CPU tests exercise)."""

    def __init__(self, state: TrainState, capture: bool = True) -> None:
        self.state = state
        self.capture = capture
        self.graph: torch.cuda.CUDAGraph | None = None
        self.names: list[str] | None = None
        self.static: tuple[Tensor, Tensor] | None = None
        self.values: Tensor | None = None
        self.host: Tensor | None = None
        self.fmt = torch.channels_last if state.channels_last else torch.contiguous_format
        if capture:
            prepare_capturable(state.optimizer, state.device)

    def __call__(self, lr: Tensor, hr: Tensor) -> dict[str, float]:
        state = self.state
        lr_used = current_lr(state)
        if self.capture:
            if self.graph is None:
                self._capture(lr, hr)
            assert self.static is not None and self.values is not None
            static_lr, static_hr = self.static
            if lr.shape != static_lr.shape or hr.shape != static_hr.shape:
                raise ValueError(
                    f"train.capture: cuda_graph replays fixed shapes, captured for lr "
                    f"{tuple(static_lr.shape)} / hr {tuple(static_hr.shape)}, but iteration "
                    f"{state.iteration + 1} got {tuple(lr.shape)} / {tuple(hr.shape)}; every "
                    "batch must have the same shape (or use train.capture: off)"
                )
            static_lr.copy_(lr, non_blocking=True)
            static_hr.copy_(hr, non_blocking=True)
            self.graph.replay()
            numbers = self._read(self.values)
        else:
            lr = lr.to(state.device, non_blocking=True).contiguous(memory_format=self.fmt)
            hr = hr.to(state.device, non_blocking=True)
            values, self.names = step_body(state, lr, hr)
            numbers = values.tolist()
        assert self.names is not None
        out = dict(zip(["total", *self.names], numbers, strict=True))
        if not all(math.isfinite(v) for v in numbers):
            raise TrainingDiverged(state.iteration + 1, out)
        out["lr"] = lr_used
        state.scheduler.step()
        state.iteration += 1
        return out

    def _read(self, values: Tensor) -> list[float]:
        """Device values to the host; the wait releases the GIL (other runs' threads go on)."""
        if self.host is None:
            self.host = torch.empty(values.shape, dtype=values.dtype, pin_memory=True)
            self.event = torch.cuda.Event()
        self.host.copy_(values, non_blocking=True)
        self.event.record()
        self.event.synchronize()
        return self.host.tolist()

    def _capture(self, lr: Tensor, hr: Tensor) -> None:
        state = self.state
        device = state.device
        static_lr = torch.empty(lr.shape, dtype=lr.dtype, device=device).contiguous(
            memory_format=self.fmt
        )
        static_hr = torch.empty(hr.shape, dtype=hr.dtype, device=device)
        static_lr.copy_(lr)
        static_hr.copy_(hr)
        saved = snapshot(state)
        side = torch.cuda.Stream(device)
        side.wait_stream(torch.cuda.current_stream(device))
        with torch.cuda.stream(side):
            for _ in range(WARMUP_STEPS):
                step_body(state, static_lr, static_hr, autocast_cache=False)
        torch.cuda.current_stream(device).wait_stream(side)
        restore(state, saved)
        state.optimizer.zero_grad(set_to_none=True)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph, stream=side, capture_error_mode="thread_local"):
            values, names = step_body(state, static_lr, static_hr, autocast_cache=False)
        torch.cuda.current_stream(device).wait_stream(side)
        self.graph, self.static, self.values, self.names = (
            graph,
            (static_lr, static_hr),
            values,
            names,
        )


def compiled_step(state: TrainState) -> Step:
    """The eager step with ``state.model`` compiled (reduce-overhead on CUDA). The bare network
    (``state.module``: weights, EMA, validation) is untouched."""
    cuda = state.device.type == "cuda"
    state.model = torch.compile(state.model, mode="reduce-overhead" if cuda else None)

    def step(lr: Tensor, hr: Tensor) -> dict[str, float]:
        if cuda:  # the graphs' outputs of the last step are dead: let the next replay reuse them
            torch.compiler.cudagraph_mark_step_begin()
        return train_step(state, lr, hr)

    return step


# --- optimizer and state plumbing for capture --------------------------------------------------


def prepare_capturable(
    optimizer: torch.optim.Optimizer, device: torch.device, capturable: bool = True
) -> None:
    """Make an Adam safe to capture: ``capturable`` on, step counters on the device, the
    learning rate a device tensor (filled in place by the scheduler between replays).

    The optimizer's checkpoints stay portable: :func:`sgsr.optim.portable` registered hooks
    that save the rate as a float and load any checkpoint into this implementation.
    (``capturable=False``: only the learning-rate tensor, which the CPU tests exercise.)"""
    for group in optimizer.param_groups:
        group["capturable"] = group.get("capturable", False) or capturable
        if not isinstance(group["lr"], Tensor):
            group["lr"] = torch.tensor(float(group["lr"]), device=device)
        for p in group["params"]:
            st = optimizer.state.get(p)
            if st and isinstance(st.get("step"), Tensor) and st["step"].device != p.device:
                st["step"] = st["step"].to(p.device, torch.float32)


def _state_tensors(state: TrainState) -> list[Tensor]:
    tensors = [t for t in state.module.state_dict().values()]
    for group in state.optimizer.param_groups:
        for p in group["params"]:
            tensors.extend(
                v for v in state.optimizer.state.get(p, {}).values() if torch.is_tensor(v)
            )
    if state.ema is not None:
        tensors.extend(state.ema.state_dict().values())
    return tensors


def snapshot(state: TrainState) -> tuple[list[Tensor], list[Tensor], set[int]]:
    """Copies of everything an update writes (weights, buffers, Adam state, EMA), so warm-up
    updates can be undone in place (a captured graph keeps the original tensors' addresses)."""
    tensors = _state_tensors(state)
    had_state = {id(p) for p in state.optimizer.state}
    return tensors, [t.detach().clone() for t in tensors], had_state


@torch.no_grad()
def restore(state: TrainState, saved: tuple[list[Tensor], list[Tensor], set[int]]) -> None:
    """Undo the updates since :func:`snapshot`, in place. Adam state created since then (a
    fresh run's first steps) is zeroed: a zero step count and zero moments are exactly the
    state Adam creates lazily, so the next update is the first one again."""
    tensors, copies, had_state = saved
    for t, c in zip(tensors, copies, strict=True):
        t.copy_(c)
    for p, st in state.optimizer.state.items():
        if id(p) not in had_state:
            for v in st.values():
                if torch.is_tensor(v):
                    v.zero_()
