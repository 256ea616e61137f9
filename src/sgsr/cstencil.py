"""The fused CPU kernels of SGL and the first-order gradient loss, from the C extension
``sgsr._cstencil`` (built by ``pip install``; optional).

As torch ops, the loss makes one pass over memory per stencil tap and per elementwise step
(about 30 for ``gog``, forward and backward); the kernel runs pad, stencil, distance, sum and,
when a gradient is wanted, the derivative, the transposed stencil and the padding's adjoint on
one image plane at a time in the cache, with the planes split over
``torch.get_num_threads()`` threads. The gradient of the sum is computed in the forward pass,
so the backward only scales it. Same values as the torch path to float rounding (sums in
double, per plane in a fixed order, so independent of the thread count). Used for float32
and float64 CPU inputs of one dtype; anything else, or a machine where the extension was not
built, takes the torch path: :func:`available` says which.
"""

from __future__ import annotations

import hashlib
import struct
import warnings
from functools import cache
from pathlib import Path

import torch
from torch import Tensor

from sgsr.gradients import check_size, stencil_plan

try:
    import sgsr._cstencil as _lib
except ImportError:  # not built (no compiler at install time): the torch path
    _lib = None

#: The extension's distance codes.
DISTANCE_CODES: dict[str, int] = {"l1": 0, "l2": 1, "charbonnier": 2}
SOURCES = ("_cstencil.c", "_cstencil_impl.h")
DTYPES = (torch.float32, torch.float64)


def _stale(lib: object) -> bool:
    """A build from other sources than those beside this file (an editable install whose C was
    edited since): warn once and do not use it. An installed wheel ships no sources."""
    here = Path(__file__).resolve().parent
    files = [here / name for name in SOURCES]
    if not all(f.is_file() for f in files):
        return False
    digest = hashlib.sha256(b"".join(f.read_bytes() for f in files)).hexdigest()
    if digest == getattr(lib, "source_hash", None):
        return False
    warnings.warn(
        f"sgsr._cstencil was built from other sources than {files[0]}: rebuild it (`pip install "
        "-e .` or `make setup`); until then the losses run as torch ops",
        RuntimeWarning,
        stacklevel=2,
    )
    return True


if _lib is not None and _stale(_lib):
    _lib = None


def available() -> bool:
    """Whether the fused kernels are built and current on this install."""
    return _lib is not None


def supports(sr: Tensor, hr: Tensor) -> bool:
    """Whether the kernels take this pair: both on the CPU, one float32 or float64 dtype, no
    empty tensor, no tensor subclass (which may expect its own ops)."""
    return (
        _lib is not None
        and sr.device.type == "cpu"
        and hr.device.type == "cpu"
        and sr.dtype == hr.dtype
        and sr.dtype in DTYPES
        and sr.numel() > 0
        and type(sr) is Tensor
        and type(hr) is Tensor
    )


@cache
def _encoded_plan(operator: str) -> bytes:
    """The extension's flat float64 plan of `operator` (see _cstencil.c's parse_plan)."""
    plan = stencil_plan(operator)
    values: list[float] = [plan.radius, len(plan.direct)]
    for k, taps in enumerate(plan.direct):
        values += [len(taps), *(v for tap in taps for v in tap)]
        terms = [t for t, of in zip(plan.separable, plan.separable_of, strict=True) if of == k]
        values.append(len(terms))
        for htaps, vtaps in terms:
            for taps1 in (htaps, vtaps):
                values += [len(taps1), *(v for tap in taps1 for v in tap)]
    return struct.pack(f"<{len(values)}d", *values)


def _run(
    kind: int,
    sr: Tensor,
    hr: Tensor,
    grads: tuple[Tensor | None, Tensor | None],
    operator: str,
    padding: str,
    distance: str,
    eps: float,
    grad_eps: float,
) -> float:
    assert _lib is not None
    b, c, h, w = sr.shape
    check_size(sr, stencil_plan(operator).radius, padding)
    gs, gh = grads
    return _lib.run(
        kind,
        int(sr.dtype == torch.float64),
        sr.data_ptr(),
        hr.data_ptr(),
        0 if gs is None else gs.data_ptr(),
        0 if gh is None else gh.data_ptr(),
        b * c,
        h,
        w,
        _encoded_plan(operator),
        int(padding == "reflect"),
        DISTANCE_CODES[distance],
        eps,
        grad_eps,
        torch.get_num_threads(),
    )


def sgl(
    sr: Tensor, hr: Tensor, operator: str, padding: str, distance: str, eps: float, gradient: bool
) -> tuple[float, Tensor | None]:
    """The sum over all elements of distance(op(sr - hr)) and, if `gradient`, its gradient by
    sr (by hr it is the negative), computed in the same pass. The pair must pass
    :func:`supports`; both are made contiguous (a copy for channels_last)."""
    assert _lib is not None
    sr, hr = sr.contiguous(), hr.contiguous()
    g = torch.empty_like(sr) if gradient else None
    total = _run(_lib.KIND_SGL, sr, hr, (g, None), operator, padding, distance, eps, 0.0)
    return total, g


def first_order(
    sr: Tensor,
    hr: Tensor,
    padding: str,
    distance: str,
    eps: float,
    grad_eps: float,
    need: tuple[bool, bool],
) -> tuple[float, Tensor | None, Tensor | None]:
    """The sum over all elements of distance(|grad sr| - |grad hr|), ``grad_eps`` inside the
    magnitude's sqrt, and its gradients by sr and by hr where `need` asks, in the same pass."""
    assert _lib is not None
    sr, hr = sr.contiguous(), hr.contiguous()
    gs = torch.empty_like(sr) if need[0] else None
    gh = torch.empty_like(hr) if need[1] else None
    total = _run(_lib.KIND_GRAD1, sr, hr, (gs, gh), "grad1", padding, distance, eps, grad_eps)
    return total, gs, gh
