"""Reused scratch buffers for the CPU loss kernels.

Why: on the CPU a freshly allocated map-sized tensor is fresh pages from the system allocator,
and the first write to each page faults. For a stencil loss those first touches cost more than
the arithmetic (several times over on a virtual machine). Handing the same storage back out on
the next call keeps the pages mapped.

Safety does not rest on callers giving buffers back: :func:`take` returns a *view* of a pooled
base tensor, and a base is only handed out again when no view of it is alive anywhere (autograd's
saved tensors, a gradient a caller keeps, ...): the storage's use count tells. So a buffer saved
for a backward that never runs, or kept by ``retain_graph``, simply stays busy. One pool per
thread; a few bases per (dtype, numel), a few sizes, least recently used dropped first, at most
256 MiB in all (a larger request is a plain allocation).
"""

from __future__ import annotations

import threading
from collections import OrderedDict

import torch
from torch import Tensor

_PER_SIZE = 6  # bases kept per (dtype, numel): the most a loss call holds at once, and spare
_SIZES = 8  # (dtype, numel) keys kept; older ones are dropped (their memory freed)
_MAX_BYTES = 256 * 2**20  # all bases of a thread together; past it, plain allocations
_use_count = getattr(torch._C, "_storage_Use_Count", None)


def _storage_uses(t: Tensor) -> int:
    assert _use_count is not None
    return int(_use_count(t.untyped_storage()._cdata))


def _counts_views() -> bool:
    """Whether the storage use count sees a view come and go (the private API's meaning this
    module relies on); if not, every request is a plain allocation."""
    if _use_count is None:
        return False
    base = torch.empty(4)
    idle = _storage_uses(base)
    view = base[1:]
    busy = _storage_uses(base)
    del view
    return busy == idle + 1 and _storage_uses(base) == idle


if not _counts_views():
    _use_count = None


class _Pool(threading.local):
    def __init__(self) -> None:
        # (dtype, numel) -> [(base, use count of an idle base)]
        self.bases: OrderedDict[tuple[torch.dtype, int], list[tuple[Tensor, int]]] = OrderedDict()


_POOL = _Pool()


def enabled(like: Tensor) -> bool:
    """Whether :func:`take` reuses memory for tensors like `like` (CPU, outside inference mode,
    on a torch that exposes storage use counts)."""
    return (
        _use_count is not None
        and like.device.type == "cpu"
        and not torch.is_inference_mode_enabled()
    )


def take(
    shape: tuple[int, ...] | list[int], like: Tensor, dtype: torch.dtype | None = None
) -> Tensor:
    """An uninitialised contiguous tensor of `shape` on `like`'s device (dtype: `like`'s unless
    given), backed by a pooled buffer when one is idle; a plain ``torch.empty`` otherwise."""
    dtype = like.dtype if dtype is None else dtype
    if not enabled(like):
        return torch.empty(shape, dtype=dtype, device=like.device)
    numel = 1
    for n in shape:
        numel *= int(n)
    key = (dtype, numel)
    bases = _POOL.bases.get(key)
    if bases is None:
        bases = _POOL.bases[key] = []
        while len(_POOL.bases) > _SIZES:
            _POOL.bases.popitem(last=False)
    else:
        _POOL.bases.move_to_end(key)
    for base, idle in bases:
        if _storage_uses(base) == idle:
            return base.view(shape)
    size = numel * torch.empty(0, dtype=dtype).element_size()
    held = sum(b.nbytes for entries in _POOL.bases.values() for b, _ in entries)
    if len(bases) >= _PER_SIZE or held + size > _MAX_BYTES:
        return torch.empty(shape, dtype=dtype)
    base = torch.empty(numel, dtype=dtype)
    bases.append((base, _storage_uses(base)))
    return base.view(shape)


def clear() -> None:
    """Drop this thread's pooled buffers (their memory is freed once no view is alive)."""
    _POOL.bases.clear()
