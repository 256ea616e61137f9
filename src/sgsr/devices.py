"""Which torch device a device setting names: one rule for training, inference and evaluation."""

from __future__ import annotations

import torch

from sgsr.config import device_problem


def resolve_device(
    pref: str | torch.device = "auto", *, local_rank: int | None = None, key: str = "device"
) -> torch.device:
    """``auto`` = CUDA when available, else the CPU; ``cpu``; ``cuda:N`` as given.

    A bare ``cuda`` is ``cuda:<local_rank>`` when `local_rank` is given (training: one GPU per
    torchrun process, ``cuda:0`` in a single process) and torch's current CUDA device otherwise
    (inference and evaluation). `key` names the setting in error messages (``train.device``).
    """
    if isinstance(pref, torch.device):
        return pref
    if (problem := device_problem(pref)) is not None:
        raise ValueError(f"{key} {problem}, got {pref!r}")
    if pref == "auto":
        pref = "cuda" if torch.cuda.is_available() else "cpu"
    if pref.startswith("cuda"):
        if not torch.cuda.is_available():
            raise ValueError(
                f"{key} is {pref!r} but CUDA is not available here; set {key}: cpu (or auto)"
            )
        if pref == "cuda" and local_rank is not None:
            return torch.device(f"cuda:{local_rank}")
        return torch.device(pref)
    return torch.device("cpu")
