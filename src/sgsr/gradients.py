"""Second-order derivative operators on (B, C, H, W) image tensors.

Every operator is a small stack of K fixed kernels applied depthwise (each channel on its own) as
ONE grouped ``conv2d`` after padding, so a (B, C, H, W) input gives (B, K*C, H, W), ordered
channel-major: output channel ``c*K + k`` is component ``k`` of input channel ``c``
(``y.unflatten(1, (C, K))`` gives (B, C, K, H, W)).

Conventions (all operators):

- x is the column (last axis, W), y is the row (H); unit grid spacing. ``F.conv2d`` is a
  correlation; the kernels below are written the way it reads them.
- Derivative units: each component answers exactly its derivative on a quadratic surface, e.g.
  the Laplacian of x^2 + y^2 is exactly 4 and the Hessian of x^2 + 3xy + 2y^2 is
  (xx, yy, xy) = (2, 4, 3) in the interior.
- Border: ``"reflect"`` padding by default (mirror without repeating the edge pixel, as
  ``np.pad(mode="reflect")``), ``"replicate"`` on request. Zero padding is not offered: it turns
  the image intensity at the edge into a huge fake gradient. Any padding still changes the
  response of the outermost pixels (half a kernel width: 1 px for 3x3, 2 px for 5x5); e.g. a
  linear ramp, whose second derivative is 0, gets a non-zero response at the border. Statements
  such as "affine functions are annihilated" hold away from the border.
- All operators are linear, so ``op(a) - op(b) == op(a - b)``: a loss on operator maps can apply
  the operator once, to the difference (see :mod:`sgsr.losses`).

Kernels:

- ``laplacian`` (K=1): the 5-point stencil [[0, 1, 0], [1, -4, 1], [0, 1, 0]] = xx + yy.
- ``hessian`` (K=3, order xx, yy, xy): central differences, xx = [1, -2, 1] along x, yy the
  same along y, xy = [[1, 0, -1], [0, 0, 0], [-1, 0, 1]] / 4 (the mixed term once, not twice).
- ``gog`` (gradient of the gradient, K=3, order xx, yy, xy): the 3x3 Sobel gradient applied to
  the Sobel gradient, i.e. the 2nd-order Sobel derivative, 5x5 kernels scaled by 1/64 to derivative
  units: xx = outer([1,4,6,4,1], [1,0,-2,0,1]) / 64 (rows x columns), yy its transpose,
  xy = outer([-1,-2,0,2,1], [-1,-2,0,2,1]) / 64. A smoothed Hessian: less sensitive to pixel
  noise than ``hessian``. It is deliberately the *linear* gradient-of-gradient, not the magnitude
  of the gradient of SPSR's gradient-magnitude map: that one is nonlinear, so it neither
  annihilates affine functions nor allows the apply-once-to-the-difference trick.

kornia: these equal ``kornia.filters.spatial_gradient(x, "diff"|"sobel", order=2,
normalized=True)`` (reordered xx, yy, xy) when ``padding="replicate"`` (kornia always
replicates), which tests/test_gradients.py checks. kornia is not the runtime path because it
cannot reflect, rebuilds kernels per call, and ``kornia.filters.laplacian(x, 3)`` is the
8-neighbour stencil scaled by 1/16 (it returns 3/16 of the Laplacian), not the 5-point one.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.autograd.function import once_differentiable

PADDINGS: tuple[str, ...] = ("reflect", "replicate")


# Every kernel is a sum of outer products ``outer(vertical, horizontal)`` of 1-D filters (rows x
# columns), so the stencil path below can run separable kernels as two cheap 1-D passes. The
# conv kernels are built from the same factors: one source for both paths.
_E = (0.0, 1.0, 0.0)  # identity along an axis
_D2 = (1.0, -2.0, 1.0)  # second difference
_XY = (1.0, 0.0, -1.0)
_SMOOTH2 = (1.0, 4.0, 6.0, 4.0, 1.0)  # [1,2,1] * [1,2,1]
_DIFF2 = (1.0, 0.0, -2.0, 0.0, 1.0)  # [-1,0,1] * [-1,0,1]
_SDIFF = (-1.0, -2.0, 0.0, 2.0, 1.0)  # [1,2,1] * [-1,0,1]
_DIFF1 = (-0.5, 0.0, 0.5)  # central first difference in derivative units


def _scaled(v: tuple[float, ...], s: float) -> tuple[float, ...]:
    return tuple(x * s for x in v)


Term = tuple[tuple[float, ...], tuple[float, ...]]  # (vertical, horizontal) 1-D filters

# name -> components, each a sum of separable terms (the scales are powers of two: exact)
FACTORS: dict[str, tuple[tuple[Term, ...], ...]] = {
    "laplacian": (((_E, _D2), (_D2, _E)),),
    "hessian": (((_E, _D2),), ((_D2, _E),), ((_XY, _scaled(_XY, 0.25)),)),
    "gog": (
        ((_SMOOTH2, _scaled(_DIFF2, 1 / 64)),),
        ((_DIFF2, _scaled(_SMOOTH2, 1 / 64)),),
        ((_SDIFF, _scaled(_SDIFF, 1 / 64)),),
    ),
    "grad1": (((_E, _DIFF1),), ((_DIFF1, _E),)),
}


def _kernels_from_factors(name: str) -> Tensor:
    comps = [
        sum(
            torch.outer(torch.tensor(v, dtype=torch.float64), torch.tensor(h, dtype=torch.float64))
            for v, h in terms
        )
        for terms in FACTORS[name]
    ]
    return torch.stack(comps).unsqueeze(1)


def _laplacian_kernels() -> Tensor:
    return _kernels_from_factors("laplacian")


def _hessian_kernels() -> Tensor:
    return _kernels_from_factors("hessian")


def _gog_kernels() -> Tensor:
    return _kernels_from_factors("gog")


def _first_order_kernels() -> Tensor:
    """Central differences (x, y) in derivative units, for the first-order baseline loss."""
    return _kernels_from_factors("grad1")


# name -> builder of the (K, 1, k, k) float64 kernel stack
KERNELS: dict[str, Callable[[], Tensor]] = {
    "laplacian": _laplacian_kernels,
    "hessian": _hessian_kernels,
    "gog": _gog_kernels,
    "grad1": _first_order_kernels,
}


def operator_kernels(
    name: str, *, dtype: torch.dtype = torch.float32, device: torch.device | str | None = None
) -> Tensor:
    """The (K, 1, k, k) kernel stack of operator ``name``.

    Build it once (e.g. as a module buffer) and pass it to :func:`apply_kernels`, so that a loss
    does not rebuild kernels on every call. All kernel values are exact in fp16/bf16.
    """
    if name not in KERNELS:
        raise ValueError(f"unknown operator {name!r}; allowed: {', '.join(sorted(KERNELS))}")
    return KERNELS[name]().to(dtype=dtype, device=device)


def _check_image(x: Tensor, what: str = "input") -> None:
    if not isinstance(x, Tensor):
        raise ValueError(f"{what} must be a torch.Tensor of shape (B, C, H, W); got {type(x)}")
    if x.ndim != 4:
        raise ValueError(f"{what} must have shape (B, C, H, W); got {tuple(x.shape)}")
    if not x.is_floating_point():
        raise ValueError(f"{what} must be a floating-point tensor; got {x.dtype}")


def check_padding(padding: str) -> str:
    """Return ``padding`` if it is one of :data:`PADDINGS`, else raise ValueError."""
    if padding not in PADDINGS:
        raise ValueError(f"unknown padding {padding!r}; allowed: {', '.join(PADDINGS)}")
    return padding


def check_size(x: Tensor, p: int, padding: str) -> None:
    """H and W must exceed the padding `p` (reflect needs a pixel to mirror); ValueError naming
    the shape otherwise."""
    h, w = x.shape[-2:]
    if min(h, w) <= p:
        raise ValueError(
            f"{padding} padding by {p} px needs H and W > {p}; got x of shape {tuple(x.shape)}"
        )


def apply_kernels(x: Tensor, kernels: Tensor, padding: str = "reflect") -> Tensor:
    """Apply a (K, 1, k, k) kernel stack depthwise to x (B, C, H, W) -> (B, K*C, H, W).

    One pad plus ONE grouped conv2d (weight (K*C, 1, k, k), groups=C), in x's dtype and device
    (the kernels are cast to them; a no-op when they already match). Autocast is switched off
    around the conv so a fp32 loss stays fp32 inside an autocast region.
    """
    _check_image(x, "x")
    check_padding(padding)
    if kernels.ndim != 4 or kernels.shape[1] != 1 or kernels.shape[-1] % 2 != 1:
        raise ValueError(
            f"kernels must have shape (K, 1, k, k) with odd k; got {tuple(kernels.shape)}"
        )
    c = x.shape[1]
    p = kernels.shape[-1] // 2
    check_size(x, p, padding)
    weight = kernels.to(device=x.device, dtype=x.dtype)
    if c > 1:
        weight = weight.repeat(c, 1, 1, 1)
    if x.device.type == "cpu" and kernels.shape[0] == 1:
        # oneDNN's NCHW depthwise kernel with one output per group is ~4x slower on CPU than its
        # channels-last one (measured: Laplacian SGL fwd+bwd on 16x3x192x192, 65 ms vs 11-18 ms);
        # for K=3 NCHW is as fast or faster, so only K=1 switches.
        x = x.contiguous(memory_format=torch.channels_last)
    x = F.pad(x, (p, p, p, p), mode=padding)
    if torch.is_autocast_enabled(x.device.type):
        with torch.autocast(x.device.type, enabled=False):
            return F.conv2d(x, weight, groups=c)
    return F.conv2d(x, weight, groups=c)


# --------------------------------------------------------------------------------------------
# The CPU path: the same kernels as sums of shifted slices of the padded image. oneDNN's
# depthwise conv is slow for these shapes (3 channels, several outputs per channel: ~10 ms for
# the Hessian of a 16x3x98x98 batch on one core, against ~1.7 ms as slices), and autograd
# through pad + conv adds more. Forward and adjoint are written out in one autograd Function.
# --------------------------------------------------------------------------------------------
Tap = tuple[int, int, float]  # (row offset, column offset, coefficient) into the padded image


@dataclass(frozen=True)
class _Plan:
    """How one operator runs as slices: per component, direct 2-D taps and separable terms
    (horizontal taps, then vertical taps), whichever needs fewer passes over the image."""

    radius: int
    direct: tuple[tuple[Tap, ...], ...]
    separable: tuple[tuple[tuple[tuple[int, float], ...], tuple[tuple[int, float], ...]], ...]
    separable_of: tuple[int, ...]  # the component each separable term belongs to


def _nonzero(v: tuple[float, ...]) -> tuple[tuple[int, float], ...]:
    return tuple((i, c) for i, c in enumerate(v) if c != 0.0)


def _plan(name: str) -> _Plan:
    radius = len(FACTORS[name][0][0][0]) // 2
    direct: list[tuple[Tap, ...]] = []
    separable, separable_of = [], []
    for k, terms in enumerate(FACTORS[name]):
        taps: dict[tuple[int, int], float] = {}
        for v, h in terms:
            nv, nh = _nonzero(v), _nonzero(h)
            if len(nv) * len(nh) <= len(nv) + len(nh):
                for i, cv in nv:
                    for j, ch in nh:
                        taps[(i, j)] = taps.get((i, j), 0.0) + cv * ch
            else:
                separable.append((nh, nv))
                separable_of.append(k)
        direct.append(tuple((i, j, c) for (i, j), c in taps.items() if c != 0.0))
    return _Plan(radius, tuple(direct), tuple(separable), tuple(separable_of))


_PLANS: dict[str, _Plan] = {name: _plan(name) for name in FACTORS}


def _weighted_sum(out: Tensor, terms: list[tuple[Tensor, float]], add: bool) -> None:
    """out (+)= sum of coeff * src, one pass per term (the first two in one pass when the
    first coefficient is 1)."""
    if not add:
        (a, ca), *terms = terms
        if ca == 1.0 and terms:
            (b, cb), *terms = terms
            torch.add(a, b, alpha=cb, out=out)
        elif ca == 1.0:
            out.copy_(a)
        else:
            torch.mul(a, ca, out=out)
    for src, coeff in terms:
        out.add_(src, alpha=coeff)


def _stencil_forward(padded: Tensor, plan: _Plan) -> Tensor:
    """(B, C, H+2r, W+2r) padded -> (B, K*C, H, W), channel-major like the conv path."""
    b, c, hp, wp = padded.shape
    r = plan.radius
    h, w = hp - 2 * r, wp - 2 * r
    out = padded.new_empty(b, c, len(plan.direct), h, w)
    written = [False] * len(plan.direct)
    for k, taps in enumerate(plan.direct):
        if taps:
            terms = [(padded[..., i : i + h, j : j + w], coeff) for i, j, coeff in taps]
            _weighted_sum(out[:, :, k], terms, written[k])
            written[k] = True
    for (htaps, vtaps), k in zip(plan.separable, plan.separable_of, strict=True):
        rows = padded.new_empty(b, c, hp, w)
        _weighted_sum(rows, [(padded[..., :, j : j + w], coeff) for j, coeff in htaps], False)
        _weighted_sum(out[:, :, k], [(rows[..., i : i + h, :], c) for i, c in vtaps], written[k])
        written[k] = True
    return out.view(b, c * len(plan.direct), h, w)


def _stencil_adjoint(grad: Tensor, plan: _Plan, c: int, scale: float = 1.0) -> Tensor:
    """`scale` times the transpose of :func:`_stencil_forward`: (B, K*C, H, W) ->
    (B, C, H+2r, W+2r)."""
    b, _, h, w = grad.shape
    r = plan.radius
    g = grad.view(b, c, len(plan.direct), h, w)
    padded = grad.new_zeros(b, c, h + 2 * r, w + 2 * r)
    for k, taps in enumerate(plan.direct):
        gk = g[:, :, k]
        for i, j, coeff in taps:
            padded[..., i : i + h, j : j + w].add_(gk, alpha=coeff * scale)
    for (htaps, vtaps), k in zip(plan.separable, plan.separable_of, strict=True):
        rows = grad.new_zeros(b, c, h + 2 * r, w)
        gk = g[:, :, k]
        for i, coeff in vtaps:
            rows[..., i : i + h, :].add_(gk, alpha=coeff * scale)
        for j, coeff in htaps:
            padded[..., :, j : j + w].add_(rows, alpha=coeff)
    return padded


def stencil_plan(name: str) -> _Plan:
    """How operator `name` runs as taps of its padded image (what the fused CPU kernels of
    :mod:`sgsr.cstencil` read)."""
    return _PLANS[name]


def stencil_radius(name: str) -> int:
    """Half the kernel width of operator `name`: the padding its stencil needs."""
    return _PLANS[name].radius


def padded_difference(a: Tensor, b: Tensor | None, r: int, padding: str) -> Tensor:
    """``F.pad(a - b, (r, r, r, r), mode=padding)`` (b None: of a alone) in one buffer: the
    difference is written into the interior and the border filled from it, columns first and
    then whole rows, which is how ``F.pad`` reflects or replicates (corners included)."""
    bsz, c, h, w = a.shape
    dtype = a.dtype if b is None else torch.promote_types(a.dtype, b.dtype)
    out = a.new_empty(bsz, c, h + 2 * r, w + 2 * r, dtype=dtype)
    inner = out[..., r : r + h, r : r + w]
    if b is None:
        inner.copy_(a)
    else:
        torch.sub(a, b, out=inner)
    reflect = padding == "reflect"
    rows = slice(r, r + h)
    for i in range(1, r + 1):
        out[..., rows, r - i] = out[..., rows, r + i if reflect else r]
        out[..., rows, r + w - 1 + i] = out[..., rows, r + w - 1 - i if reflect else r + w - 1]
    for i in range(1, r + 1):
        out[..., r - i, :] = out[..., r + i if reflect else r, :]
        out[..., r + h - 1 + i, :] = out[..., r + h - 1 - i if reflect else r + h - 1, :]
    return out


def fold_padding(grad: Tensor, r: int, padding: str) -> Tensor:
    """The adjoint of :func:`padded_difference` (in place on `grad`): each border pixel's
    gradient is added onto the pixel it was copied from; returns the interior (a view)."""
    h, w = grad.shape[-2] - 2 * r, grad.shape[-1] - 2 * r
    reflect = padding == "reflect"
    for i in range(1, r + 1):
        grad[..., r + i if reflect else r, :] += grad[..., r - i, :]
        grad[..., r + h - 1 - i if reflect else r + h - 1, :] += grad[..., r + h - 1 + i, :]
    rows = slice(r, r + h)
    for i in range(1, r + 1):
        grad[..., rows, r + i if reflect else r] += grad[..., rows, r - i]
        grad[..., rows, r + w - 1 - i if reflect else r + w - 1] += grad[..., rows, r + w - 1 + i]
    return grad[..., r : r + h, r : r + w]


def stencil_forward(padded: Tensor, name: str) -> Tensor:
    """Operator `name` on an already padded image: (B, C, H+2r, W+2r) -> (B, K*C, H, W)."""
    return _stencil_forward(padded, _PLANS[name])


def stencil_adjoint(grad: Tensor, name: str, channels: int, scale: float = 1.0) -> Tensor:
    """`scale` times the transpose of :func:`stencil_forward`: (B, K*C, H, W) ->
    (B, C, H+2r, W+2r) (the scale rides on the taps' coefficients: no extra pass)."""
    return _stencil_adjoint(grad, _PLANS[name], channels, scale)


class _Stencil(torch.autograd.Function):
    """Pad + stencil with its exact adjoint as the backward (the operator is linear)."""

    @staticmethod
    def forward(ctx: Any, x: Tensor, name: str, padding: str) -> Tensor:
        r = _PLANS[name].radius
        ctx.name, ctx.padding, ctx.channels = name, padding, x.shape[1]
        return stencil_forward(padded_difference(x, None, r, padding), name)

    @staticmethod
    @once_differentiable
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor, None, None]:
        padded = stencil_adjoint(grad.contiguous(), ctx.name, ctx.channels)
        return fold_padding(padded, _PLANS[ctx.name].radius, ctx.padding), None, None


_KERNEL_CACHE: dict[tuple[str, torch.dtype, torch.device], Tensor] = {}


def _cached_kernels(name: str, dtype: torch.dtype, device: torch.device) -> Tensor:
    """operator_kernels built once per (name, dtype, device): no per-call build and copy."""
    key = (name, dtype, device)
    if key not in _KERNEL_CACHE:
        with torch.inference_mode(False):  # a normal tensor even if first built for inference
            _KERNEL_CACHE[key] = operator_kernels(name, dtype=dtype, device=device)
    return _KERNEL_CACHE[key]


def apply_operator(
    x: Tensor, name: str, padding: str = "reflect", kernels: Tensor | None = None
) -> Tensor:
    """Operator `name` (a key of :data:`KERNELS`) on x (B, C, H, W) -> (B, K*C, H, W).

    On the CPU the stencil path (sums of slices, same values to float rounding as the conv);
    elsewhere :func:`apply_kernels` with `kernels` (default: a cached stack), which cuDNN
    runs well.
    """
    _check_image(x, "x")
    check_padding(padding)
    if name not in KERNELS:
        raise ValueError(f"unknown operator {name!r}; allowed: {', '.join(sorted(KERNELS))}")
    if x.device.type == "cpu":
        check_size(x, _PLANS[name].radius, padding)
        return _Stencil.apply(x, name, padding)
    if kernels is None:
        kernels = _cached_kernels(name, x.dtype, x.device)
    return apply_kernels(x, kernels, padding)


def laplacian(x: Tensor, padding: str = "reflect") -> Tensor:
    """5-point Laplacian [[0,1,0],[1,-4,1],[0,1,0]] per channel: (B, C, H, W) -> (B, C, H, W).

    Normalised to unit grid spacing: the Laplacian of x^2 + y^2 is exactly 4 in the interior.
    """
    return apply_operator(x, "laplacian", padding)


def hessian(x: Tensor, padding: str = "reflect") -> Tensor:
    """Central-difference Hessian (xx, yy, xy) per channel: (B, C, H, W) -> (B, 3C, H, W).

    xx = [1,-2,1] along x, yy along y, xy = [[1,0,-1],[0,0,0],[-1,0,1]]/4; channel ``3c + k``
    is component k of input channel c. x^2 + 3xy + 2y^2 gives (2, 4, 3) in the interior.
    """
    return apply_operator(x, "hessian", padding)


def gradient_of_gradient(x: Tensor, padding: str = "reflect") -> Tensor:
    """Sobel gradient of the Sobel gradient (xx, yy, xy): (B, C, H, W) -> (B, 3C, H, W).

    The 2nd-order Sobel derivative (5x5 kernels / 64, see the module docstring): a smoothed
    Hessian in derivative units, exact on quadratics, linear, zero on affine functions.
    """
    return apply_operator(x, "gog", padding)


# The second-order operators a loss may use. (``grad1`` in KERNELS is first-order, not here.)
OPERATORS: dict[str, Callable[..., Tensor]] = {
    "laplacian": laplacian,
    "hessian": hessian,
    "gog": gradient_of_gradient,
}


def get_operator(name: str) -> Callable[..., Tensor]:
    """The operator function registered as ``name``; ValueError listing the allowed names."""
    if name not in OPERATORS:
        raise ValueError(
            f"unknown second-order operator {name!r}; allowed: {', '.join(sorted(OPERATORS))}"
        )
    return OPERATORS[name]
