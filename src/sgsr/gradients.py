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

import torch
import torch.nn.functional as F
from torch import Tensor

PADDINGS: tuple[str, ...] = ("reflect", "replicate")


def _laplacian_kernels() -> Tensor:
    return torch.tensor(
        [[[[0.0, 1.0, 0.0], [1.0, -4.0, 1.0], [0.0, 1.0, 0.0]]]], dtype=torch.float64
    )


def _hessian_kernels() -> Tensor:
    xx = torch.tensor([[0.0, 0.0, 0.0], [1.0, -2.0, 1.0], [0.0, 0.0, 0.0]], dtype=torch.float64)
    xy = torch.tensor([[1.0, 0.0, -1.0], [0.0, 0.0, 0.0], [-1.0, 0.0, 1.0]], dtype=torch.float64)
    return torch.stack([xx, xx.T, xy / 4]).unsqueeze(1)


def _gog_kernels() -> Tensor:
    smooth2 = torch.tensor([1.0, 4.0, 6.0, 4.0, 1.0], dtype=torch.float64)  # [1,2,1] * [1,2,1]
    diff2 = torch.tensor([1.0, 0.0, -2.0, 0.0, 1.0], dtype=torch.float64)  # [-1,0,1] * [-1,0,1]
    sdiff = torch.tensor([-1.0, -2.0, 0.0, 2.0, 1.0], dtype=torch.float64)  # [1,2,1] * [-1,0,1]
    xx = torch.outer(smooth2, diff2)
    xy = torch.outer(sdiff, sdiff)
    return (torch.stack([xx, xx.T, xy]) / 64).unsqueeze(1)


def _first_order_kernels() -> Tensor:
    """Central differences (x, y) in derivative units, for the first-order baseline loss."""
    dx = torch.tensor([[0.0, 0.0, 0.0], [-1.0, 0.0, 1.0], [0.0, 0.0, 0.0]], dtype=torch.float64)
    return (torch.stack([dx, dx.T]) / 2).unsqueeze(1)


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
    _, c, h, w = x.shape
    p = kernels.shape[-1] // 2
    if min(h, w) <= p:
        raise ValueError(
            f"{padding} padding by {p} px needs H and W > {p}; got x of shape {tuple(x.shape)}"
        )
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


def laplacian(x: Tensor, padding: str = "reflect") -> Tensor:
    """5-point Laplacian [[0,1,0],[1,-4,1],[0,1,0]] per channel: (B, C, H, W) -> (B, C, H, W).

    Normalised to unit grid spacing: the Laplacian of x^2 + y^2 is exactly 4 in the interior.
    """
    return apply_kernels(x, operator_kernels("laplacian", dtype=x.dtype, device=x.device), padding)


def hessian(x: Tensor, padding: str = "reflect") -> Tensor:
    """Central-difference Hessian (xx, yy, xy) per channel: (B, C, H, W) -> (B, 3C, H, W).

    xx = [1,-2,1] along x, yy along y, xy = [[1,0,-1],[0,0,0],[-1,0,1]]/4; channel ``3c + k``
    is component k of input channel c. x^2 + 3xy + 2y^2 gives (2, 4, 3) in the interior.
    """
    return apply_kernels(x, operator_kernels("hessian", dtype=x.dtype, device=x.device), padding)


def gradient_of_gradient(x: Tensor, padding: str = "reflect") -> Tensor:
    """Sobel gradient of the Sobel gradient (xx, yy, xy): (B, C, H, W) -> (B, 3C, H, W).

    The 2nd-order Sobel derivative (5x5 kernels / 64, see the module docstring): a smoothed
    Hessian in derivative units, exact on quadratics, linear, zero on affine functions.
    """
    return apply_kernels(x, operator_kernels("gog", dtype=x.dtype, device=x.device), padding)


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
