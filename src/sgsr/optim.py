"""Adam's implementation for the device (``train.optimizer_impl``), and optimizer checkpoints
that do not depend on it. :func:`sgsr.step.build_optimizer` builds the optimizer with these.

On a GPU the training step of a small SR network is bound by kernel launches, not arithmetic
(EDSR-baseline x4 at batch 16 took 10.9 ms with torch's default foreach Adam and
7.4 ms with the fused one on an H200), so ``auto`` picks the fused kernel there. On the CPU
``auto`` builds Adam exactly as the trainer always did (torch's default, the for-loop
implementation), so CPU runs and the study's weights stay bitwise what they were.

Every implementation computes the same update; they differ in rounding only (tested to
tolerance in tests/test_gpu_trainer.py), their state dicts are interchangeable, and so the
choice, like the device, is bookkeeping: not part of a run's fingerprint
(:data:`IMPLEMENTATION_KEYS`).
"""

from __future__ import annotations

from typing import Any

import torch

from sgsr.config import OPTIMIZER_IMPLS

#: TrainConfig keys that choose how a step runs, never what it computes: the trainer leaves
#: them out of a run's fingerprint (sgsr.checkpoint.BOOKKEEPING_KEYS), as it does ``device``.
IMPLEMENTATION_KEYS = ("optimizer_impl", "capture", "prefetch", "runs_per_process")


def adam_kwargs(impl: str, device: torch.device) -> dict[str, Any]:
    """The implementation arguments of ``torch.optim.Adam`` for ``train.optimizer_impl``
    (what :func:`sgsr.step.build_optimizer` passes).

    ``auto``: fused on CUDA; on any other device nothing (torch's default, which on the CPU is
    the for-loop implementation: the trainer's behaviour before this option existed).
    """
    if impl not in OPTIMIZER_IMPLS:
        raise ValueError(
            f"train.optimizer_impl: {impl!r} is not one of {', '.join(OPTIMIZER_IMPLS)}"
        )
    if impl == "auto":
        impl = "fused" if device.type == "cuda" else "default"
    return {
        "default": {},
        "for_loop": {"foreach": False, "fused": False},
        "foreach": {"foreach": True, "fused": False},
        "fused": {"fused": True},
    }[impl]


def portable(optimizer: torch.optim.Optimizer) -> torch.optim.Optimizer:
    """`optimizer` with implementation-neutral checkpoints (hooks below): the learning rate is
    saved as a float even when a captured step keeps it in a device tensor, and loading keeps
    this instance's implementation (torch would otherwise adopt the saved ``fused``/
    ``foreach``/``capturable`` flags, so a CPU checkpoint resumed on a GPU would lose the fused
    kernel). Neither hook changes a state dict of torch's default Adam on the CPU."""
    optimizer.register_state_dict_post_hook(_float_lr)
    optimizer.register_load_state_dict_pre_hook(_keep_implementation)
    return optimizer


#: Adam's per-group flags that choose the kernels, not the update.
_IMPL_FLAGS = ("foreach", "fused", "capturable")


def _float_lr(optimizer: torch.optim.Optimizer, state_dict: dict[str, Any]) -> dict[str, Any]:
    for group in state_dict["param_groups"]:
        if isinstance(group.get("lr"), torch.Tensor):
            group["lr"] = float(group["lr"])
    return state_dict


def _keep_implementation(
    optimizer: torch.optim.Optimizer, state_dict: dict[str, Any]
) -> dict[str, Any]:
    """Saved groups with this instance's implementation flags, so that step counters are
    placed for this implementation and the saved flags do not replace the live ones. (Load
    before capturing a step: loading replaces the state tensors a graph would point at.)"""
    groups = []
    for live, saved in zip(optimizer.param_groups, state_dict["param_groups"], strict=False):
        saved = dict(saved)
        for flag in _IMPL_FLAGS:
            if flag in live:
                saved[flag] = live[flag]
        groups.append(saved)
    groups.extend(state_dict["param_groups"][len(groups) :])
    return {**state_dict, "param_groups": groups}


def implementation(optimizer: torch.optim.Optimizer) -> str:
    """Which kernel family an Adam instance runs: fused, foreach or for_loop (as torch decides
    it at step time for the default: foreach for CUDA tensors, the for-loop otherwise)."""
    group = optimizer.param_groups[0]
    if group.get("fused"):
        return "fused"
    if group.get("foreach") is not None:
        return "foreach" if group["foreach"] else "for_loop"
    device = group["params"][0].device.type if group["params"] else "cpu"
    return "foreach" if device == "cuda" else "for_loop"
