"""The one check every set of weights passes before a network uses it.

Weights arrive as data (``dvc pull``, a downloaded ``.pth``, ``train.init_from``), and two
kinds of tensor cannot be right yet load without a word: non-finite values (an all-NaN file
upscales to a black image, a NaN ``init_from`` trains a dead network) and non-floating dtypes
(``load_state_dict`` casts a bool or int64 tensor to float, so weights of 0/1 or of integers
run as if they were trained). So every tensor must be floating point and finite; the one
exception is an integer counter a model keeps as state (BatchNorm's ``num_batches_tracked``).
Inference, ``sgsr upscale``, ``init_from`` and community (spandrel) networks all call
:func:`check_weights`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch

#: State-dict entries that are integer counters by design, not weights.
INTEGER_STATE_SUFFIXES = ("num_batches_tracked",)


class BadWeightsError(ValueError):
    """Weights that cannot be a trained network's (non-finite or not floating point)."""


def weight_problems(state: Mapping[str, Any], limit: int = 5) -> list[str]:
    """``"<key>: <why>"`` for the first `limit` tensors of `state` that break the rule."""
    out: list[str] = []
    for key, value in state.items():
        if len(out) >= limit:
            break
        if not torch.is_tensor(value):
            continue  # structure is the loaders' business; they name non-tensor entries
        if not value.is_floating_point():
            if str(key).endswith(INTEGER_STATE_SUFFIXES) and not value.is_complex():
                continue
            out.append(
                f"{key}: dtype {str(value.dtype).removeprefix('torch.')}, not floating point"
            )
        elif value.numel() and not bool(torch.isfinite(value).all()):
            bad = int((~torch.isfinite(value)).sum())
            out.append(f"{key}: {bad} of {value.numel()} values are NaN or infinite")
    return out


def check_weights(state: Mapping[str, Any], source: str) -> None:
    """Raise BadWeightsError naming `source` and the offending tensors, if any."""
    problems = weight_problems(state)
    if problems:
        raise BadWeightsError(
            f"{source}: these weights cannot be a trained network's ({'; '.join(problems)}"
            f"{' ...' if len(problems) >= 5 else ''}). Every weight must be a finite floating-"
            "point number: the file is corrupt, was saved from a diverged training, or was "
            "converted with the wrong dtype. Nothing was run with it."
        )
