"""Reused scratch buffers: a buffer is handed out again only when no view of it is alive."""

from __future__ import annotations

import pytest
import torch

from sgsr import scratch
from sgsr.losses import FirstOrderGradientLoss, SecondOrderGradientLoss

pytestmark = pytest.mark.skipif(
    not scratch.enabled(torch.empty(1)), reason="this torch has no storage use counts"
)


def _ptr(t: torch.Tensor) -> int:
    return t.untyped_storage().data_ptr()


def test_a_live_buffer_is_not_handed_out_again_and_a_dropped_one_is() -> None:
    scratch.clear()
    like = torch.empty(1)
    a = scratch.take((4, 5), like)
    b = scratch.take((20,), like)  # same size: must not share a's storage while a lives
    assert _ptr(a) != _ptr(b)
    view = a[1:]  # a view keeps the buffer busy too
    pa = _ptr(a)
    del a
    c = scratch.take((2, 10), like)
    assert _ptr(c) != pa
    del view, c
    assert _ptr(scratch.take((5, 4), like)) == pa


def test_inference_mode_and_other_dtypes_get_their_own_tensors() -> None:
    scratch.clear()
    like = torch.empty(1)
    a = scratch.take((8,), like, torch.float64)
    assert a.dtype == torch.float64 and a.shape == (8,)
    with torch.inference_mode():
        b = scratch.take((8,), like)
    assert b.is_inference() and not a.is_inference()


@pytest.mark.parametrize("make", [lambda: SecondOrderGradientLoss("gog"), FirstOrderGradientLoss])
def test_pending_backwards_and_retained_graphs_keep_their_buffers(make: object) -> None:
    """Two forwards before either backward, and a retained graph run twice, give the gradients
    of separate fresh computations: nothing saved for a backward is overwritten."""
    loss = make()  # type: ignore[operator]
    g = torch.Generator().manual_seed(0)
    hr = torch.rand(2, 3, 12, 13, generator=g)
    srs = [torch.rand(2, 3, 12, 13, generator=g) for _ in range(2)]
    want = []
    for sr in srs:
        a = sr.clone().requires_grad_(True)
        loss(a, hr).backward()
        want.append(a.grad)
    a, b = (sr.clone().requires_grad_(True) for sr in srs)
    la, lb = loss(a, hr), loss(b, hr)
    lb.backward(retain_graph=True)
    la.backward()
    lb.backward()
    assert torch.equal(a.grad, want[0]) and torch.equal(b.grad, 2 * want[1])


def test_requests_past_the_byte_cap_are_plain_allocations(monkeypatch: pytest.MonkeyPatch) -> None:
    scratch.clear()
    monkeypatch.setattr(scratch, "_MAX_BYTES", 400)
    like = torch.empty(1)
    small = scratch.take((60,), like)  # 240 bytes: pooled
    pa = _ptr(small)
    del small
    big = scratch.take((200,), like)  # 240 + 800 bytes > 400: a plain tensor, not kept
    assert big.shape == (200,)
    kept = [b.numel() for entries in scratch._POOL.bases.values() for b, _ in entries]
    assert kept == [60]
    assert _ptr(scratch.take((60,), like)) == pa
