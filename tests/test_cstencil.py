"""The fused CPU kernel of SGL and the first-order loss (`sgsr.cstencil`, the C extension
`sgsr._cstencil`) against the torch ops it replaces: values and gradients to float rounding,
independent of the thread count, and the cases it leaves to torch."""

from __future__ import annotations

import itertools
import struct

import pytest
import torch

from sgsr import cstencil
from sgsr.losses import FirstOrderGradientLoss, SecondOrderGradientLoss

OPERATORS = ("laplacian", "hessian", "gog", "grad1")
DISTANCES = ("l1", "l2", "charbonnier")

pytestmark = pytest.mark.skipif(
    not cstencil.available(), reason="the fused kernel is not built (test_losses fails for it)"
)


def _loss(operator: str, distance: str, padding: str = "reflect", reduction: str = "mean"):
    if operator == "grad1":
        return FirstOrderGradientLoss(distance, reduction, padding=padding)
    return SecondOrderGradientLoss(operator, distance, reduction, padding=padding)


def _value_and_grads(
    loss, sr: torch.Tensor, hr: torch.Tensor, need: tuple[bool, bool] = (True, True)
) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None]:
    a = sr.clone().requires_grad_(need[0])
    b = hr.clone().requires_grad_(need[1])
    out = loss(a, b)
    out.backward()
    return out.detach(), a.grad, b.grad


def _both_paths(monkeypatch: pytest.MonkeyPatch, fn):
    fused = fn()
    with monkeypatch.context() as mp:
        mp.setattr(cstencil, "_lib", None)
        reference = fn()
    return fused, reference


def _close(got: torch.Tensor | None, want: torch.Tensor | None, rtol: float) -> None:
    assert (got is None) == (want is None)
    if got is None or want is None:
        return
    assert got.dtype == want.dtype and got.shape == want.shape
    scale = max(want.abs().max().item(), 1e-30)
    assert torch.allclose(got, want, rtol=rtol, atol=rtol * scale), (got - want).abs().max()


# shapes at the edges of the kernel's loops: the smallest plane each radius allows, widths
# around the 4-vector blocks, one channel, more threads than planes, a wide plane
SHAPES = [(1, 1, 3, 3), (2, 3, 9, 13), (1, 1, 5, 33), (3, 1, 17, 65), (1, 2, 40, 71)]


@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "x".join(map(str, s)))
@pytest.mark.parametrize("operator", OPERATORS)
def test_the_kernel_gives_the_torch_paths_values_and_gradients(
    monkeypatch: pytest.MonkeyPatch, operator: str, shape: tuple[int, int, int, int]
) -> None:
    radius = 2 if operator == "gog" else 1
    if min(shape[2:]) <= radius:
        pytest.skip("smaller than the operator's padding (its own test)")
    g = torch.Generator().manual_seed(sum(shape))
    for dtype, rtol in ((torch.float64, 1e-12), (torch.float32, 1e-5)):
        sr = torch.rand(shape, generator=g, dtype=torch.float64).to(dtype)
        hr = torch.rand(shape, generator=g, dtype=torch.float64).to(dtype)
        for distance, padding, reduction, need in itertools.product(
            DISTANCES, ("reflect", "replicate"), ("mean", "sum"), ((True, True), (False, True))
        ):
            loss = _loss(operator, distance, padding, reduction)
            fused, reference = _both_paths(
                monkeypatch,
                lambda: _value_and_grads(loss, sr, hr, need),  # noqa: B023
            )
            for got, want in zip(fused, reference, strict=True):
                _close(got, want, rtol)


@pytest.mark.parametrize("operator", OPERATORS)
def test_results_do_not_depend_on_the_thread_count(operator: str) -> None:
    """Planes are summed in their order whatever thread computed them: bitwise equal."""
    g = torch.Generator().manual_seed(1)
    sr, hr = torch.rand(4, 3, 21, 30, generator=g), torch.rand(4, 3, 21, 30, generator=g)
    loss = _loss(operator, "charbonnier")
    before = torch.get_num_threads()
    results = []
    try:
        for threads in (1, 2, 3, 1):
            torch.set_num_threads(threads)
            results.append(_value_and_grads(loss, sr, hr))
    finally:
        torch.set_num_threads(before)
    for other in results[1:]:
        for x, y in zip(other, results[0], strict=True):
            assert torch.equal(x, y)


def test_a_large_plane_matches_the_torch_path(monkeypatch: pytest.MonkeyPatch) -> None:
    g = torch.Generator().manual_seed(2)
    sr, hr = torch.rand(1, 3, 203, 517, generator=g), torch.rand(1, 3, 203, 517, generator=g)
    for operator in ("gog", "grad1"):
        fused, reference = _both_paths(
            monkeypatch,
            lambda: _value_and_grads(_loss(operator, "l1"), sr, hr),  # noqa: B023
        )
        for got, want in zip(fused, reference, strict=True):
            _close(got, want, 1e-5)


def test_no_gradient_is_computed_without_grad_mode(monkeypatch: pytest.MonkeyPatch) -> None:
    """The forward computes the gradient of the sum only when a backward can follow."""
    asked: list[bool] = []
    real = cstencil.sgl

    def spy(*args, **kwargs):
        asked.append(args[-1])
        return real(*args, **kwargs)

    monkeypatch.setattr(cstencil, "sgl", spy)
    sr = torch.rand(2, 3, 16, 16, requires_grad=True)
    hr = torch.rand(2, 3, 16, 16)
    loss = SecondOrderGradientLoss("hessian")
    with torch.no_grad():
        quiet = loss(sr, hr)
    loud = loss(sr, hr)
    assert asked == [False, True]
    assert torch.equal(quiet, loud.detach())
    assert loss(sr.detach(), hr).requires_grad is False and asked[-1] is False


def test_a_retained_graph_gives_the_same_gradient_twice() -> None:
    sr = torch.rand(2, 3, 16, 16, requires_grad=True)
    out = SecondOrderGradientLoss("gog")(sr, torch.rand(2, 3, 16, 16))
    (first,) = torch.autograd.grad(out, sr, retain_graph=True)
    (second,) = torch.autograd.grad(out * 3, sr)
    assert torch.allclose(second, 3 * first, rtol=1e-6)


@pytest.mark.parametrize("distance", DISTANCES)
@pytest.mark.parametrize("operator", OPERATORS)
def test_a_nan_gives_a_nan_loss_and_the_torch_paths_gradient(
    monkeypatch: pytest.MonkeyPatch, operator: str, distance: str
) -> None:
    """A diverged network's NaN is not hidden from the loss; its gradient is the torch ops'
    (torch.sign(NaN) is 0, so l1 keeps the gradient finite, l2 and charbonnier spread it)."""
    sr, hr = torch.rand(1, 3, 12, 12), torch.rand(1, 3, 12, 12)
    sr[0, 1, 5, 6] = float("nan")
    fused, reference = _both_paths(
        monkeypatch, lambda: _value_and_grads(_loss(operator, distance), sr, hr)
    )
    assert fused[0].isnan() and reference[0].isnan()
    for got, want in zip(fused[1:], reference[1:], strict=True):
        assert got is not None and want is not None
        assert torch.equal(got.isnan(), want.isnan())
        assert torch.allclose(got, want, rtol=1e-5, atol=1e-7, equal_nan=True)


def test_the_kernel_takes_cpu_float32_and_float64_pairs_of_one_dtype_only() -> None:
    a = torch.rand(1, 1, 4, 4)
    assert cstencil.supports(a, a) and cstencil.supports(a.double(), a.double())
    assert not cstencil.supports(a.half(), a.half())
    assert not cstencil.supports(a.bfloat16(), a.bfloat16())
    assert not cstencil.supports(a, a.double())  # mixed: the torch path promotes
    assert not cstencil.supports(a[:0], a[:0])
    assert not cstencil.supports(a.to("meta"), a.to("meta"))


def test_the_other_dtypes_still_run_on_the_torch_path() -> None:
    sr, hr = torch.rand(2, 3, 12, 12), torch.rand(2, 3, 12, 12)
    for operator in OPERATORS:
        loss = _loss(operator, "l1")
        want = loss(sr, hr)
        assert torch.allclose(loss(sr.bfloat16(), hr.bfloat16()).float(), want, rtol=3e-2)
        mixed = loss(sr, hr.double())
        assert mixed.dtype == torch.float64 and torch.allclose(mixed.float(), want, rtol=1e-5)


@pytest.mark.parametrize("operator", OPERATORS)
def test_images_smaller_than_the_padding_are_refused_on_both_paths(
    monkeypatch: pytest.MonkeyPatch, operator: str
) -> None:
    radius = 2 if operator == "gog" else 1
    tiny = torch.rand(1, 3, radius, 8)
    for lib in (cstencil._lib, None):
        monkeypatch.setattr(cstencil, "_lib", lib)
        with pytest.raises(
            ValueError, match=rf"needs H and W > {radius}; got .*\(1, 3, {radius}, 8\)"
        ):
            _loss(operator, "l1")(tiny, tiny)


def test_a_malformed_plan_is_an_error_not_a_crash() -> None:
    lib = cstencil._lib
    x = torch.rand(1, 1, 8, 8)
    good = cstencil._encoded_plan("laplacian")

    def run(plan: bytes, distance: int = 0) -> float:
        return lib.run(
            lib.KIND_SGL, 0, x.data_ptr(), x.data_ptr(), 0, 0, 1, 8, 8, plan, 1, distance,
            1e-3, 0.0, 1,
        )  # fmt: skip

    assert run(good) == 0.0  # sr == hr
    y = torch.rand(1, 1, 8, 8)
    empty = struct.pack("<4d", 1, 1, 0, 0)  # one component with no tap: a zero map
    assert lib.run(lib.KIND_SGL, 0, x.data_ptr(), y.data_ptr(), 0, 0, 1, 8, 8, empty, 1, 0,
                   1e-3, 0.0, 1) == 0.0  # fmt: skip
    with pytest.raises(ValueError, match="ends before"):
        run(good[:-8])
    with pytest.raises(ValueError, match="trailing"):
        run(good + struct.pack("<d", 0.0))
    with pytest.raises(ValueError, match="tap row must be an integer in"):
        run(struct.pack("<6d", 1, 1, 1, 9, 0, 1.0))
    with pytest.raises(ValueError, match="distance"):
        run(good, distance=7)
    with pytest.raises(ValueError, match="gradient by hr"):
        lib.run(lib.KIND_SGL, 0, x.data_ptr(), x.data_ptr(), 0, x.data_ptr(), 1, 8, 8, good, 1,
                0, 1e-3, 0.0, 1)  # fmt: skip


def test_a_build_from_other_sources_is_not_used() -> None:
    class Stale:
        source_hash = "0" * 64

    with pytest.warns(RuntimeWarning, match="rebuild it"):
        assert cstencil._stale(Stale()) is True
    assert cstencil._stale(cstencil._lib) is False
