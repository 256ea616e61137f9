"""SGL, the first-order baseline, pixel losses and the composite built from a params dict."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from sgsr import (
    CompositeLoss,
    FirstOrderGradientLoss,
    SecondOrderGradientLoss,
    build_loss,
    second_order_gradient_loss,
)
from sgsr.gradients import OPERATORS, get_operator, operator_kernels
from sgsr.losses import (
    LOSSES,
    CharbonnierLoss,
    L1Loss,
    L2Loss,
    LPIPSVGGLoss,
    _rgb_inputs,
    loss_options,
)
from sgsr.pretrained import WeightsUnavailable

OPS = sorted(OPERATORS)
DISTS = ["l1", "l2", "charbonnier"]
BORDER = {"laplacian": 1, "hessian": 1, "gog": 2}
ALLOWED_LOSSES = "l1, l2, charbonnier, sgl, grad1, lpips_vgg, perceptual, gan"


pytestmark = pytest.mark.usefixtures("one_thread")


def pair(*shape: int, dtype: torch.dtype = torch.float32) -> tuple[torch.Tensor, torch.Tensor]:
    hr = torch.rand(*shape, dtype=dtype)
    return (hr + 0.1 * torch.randn_like(hr)).clamp(0, 1), hr


def ramp(shape: tuple[int, ...], a: float, b: float, c: float) -> torch.Tensor:
    """a + b x + c y sampled on the pixel grid (x = column, y = row), float64."""
    h, w = shape[-2:]
    y, x = torch.meshgrid(
        torch.arange(h, dtype=torch.float64), torch.arange(w, dtype=torch.float64), indexing="ij"
    )
    return (a + b * x + c * y).expand(shape)


# ================================================================ the second-order property
# Adding an affine ramp a + b x + c y to the target leaves every second-order map unchanged away
# from the border, so SGL (on the interior) is unchanged; a first-order loss does see it.


@pytest.mark.parametrize("distance", DISTS)
@pytest.mark.parametrize("operator", OPS)
def test_sgl_ignores_an_affine_ramp_added_to_the_target(operator: str, distance: str) -> None:
    sr, hr = pair(2, 3, 14, 17, dtype=torch.float64)
    hr2 = hr + ramp(hr.shape, 0.3, -0.02, 0.035)
    sgl = SecondOrderGradientLoss(operator, distance, reduction="none")
    b = BORDER[operator]
    inner, inner2 = sgl(sr, hr)[..., b:-b, b:-b], sgl(sr, hr2)[..., b:-b, b:-b]
    assert torch.allclose(inner, inner2, rtol=0, atol=1e-12)
    assert abs(inner.mean().item() - inner2.mean().item()) < 1e-12
    assert inner.mean().item() > 1e-5  # not vacuous: the loss is many orders above the atol
    # ... while the border pixels do see the ramp through the padding (hence the crop)
    assert not torch.allclose(sgl(sr, hr), sgl(sr, hr2), atol=1e-6)


@pytest.mark.parametrize("distance", DISTS)
def test_first_order_loss_does_see_the_ramp(distance: str) -> None:
    sr, hr = pair(2, 3, 14, 17, dtype=torch.float64)
    hr2 = hr + ramp(hr.shape, 0.3, -0.02, 0.035)
    grad1 = FirstOrderGradientLoss(distance, reduction="none")
    inner, inner2 = grad1(sr, hr)[..., 1:-1, 1:-1], grad1(sr, hr2)[..., 1:-1, 1:-1]
    assert abs(inner.mean().item() - inner2.mean().item()) > 1e-4


# ================================================================ zero / positive


@pytest.mark.parametrize("distance", DISTS)
@pytest.mark.parametrize("operator", OPS)
def test_sgl_zero_on_identical_positive_on_different(operator: str, distance: str) -> None:
    sr, hr = pair(2, 3, 12, 12)
    sgl = SecondOrderGradientLoss(operator=operator, distance=distance)
    assert sgl(hr, hr.clone()).item() == 0.0
    assert sgl(sr, hr).item() > 0.0


@pytest.mark.parametrize(
    "module",
    [L1Loss(), L2Loss(), CharbonnierLoss(), *(FirstOrderGradientLoss(d) for d in DISTS)],
    ids=repr,
)
def test_other_losses_zero_on_identical_positive_on_different(module: torch.nn.Module) -> None:
    sr, hr = pair(2, 3, 12, 12)
    assert module(hr, hr.clone()).item() == 0.0
    assert module(sr, hr).item() > 0.0


def test_pixel_losses_match_torch_and_definitions() -> None:
    sr, hr = pair(2, 3, 8, 8, dtype=torch.float64)
    assert torch.equal(L1Loss()(sr, hr), F.l1_loss(sr, hr))
    assert torch.equal(L2Loss(reduction="sum")(sr, hr), F.mse_loss(sr, hr, reduction="sum"))
    d = (sr - hr).flatten().tolist()
    expected = sum(math.sqrt(v * v + 1e-4) - 1e-2 for v in d) / len(d)
    assert CharbonnierLoss(eps=1e-2)(sr, hr).item() == pytest.approx(expected, rel=1e-12)


# ================================================================ the apply-once optimisation


@pytest.mark.parametrize("distance", DISTS)
@pytest.mark.parametrize("operator", OPS)
def test_operator_on_difference_equals_difference_of_operators(
    operator: str, distance: str
) -> None:
    sr, hr = pair(2, 3, 16, 16)
    op = get_operator(operator)
    m = op(sr) - op(hr)
    eps = 1e-3
    separate = {"l1": m.abs(), "l2": m.square(), "charbonnier": (m.square() + eps**2).sqrt() - eps}
    loss = SecondOrderGradientLoss(operator, distance, reduction="none")(sr, hr)
    assert loss.shape == m.shape
    assert torch.allclose(loss, separate[distance], rtol=1e-5, atol=1e-6)
    fn = second_order_gradient_loss(sr, hr, operator=operator, distance=distance)
    assert torch.allclose(fn, separate[distance].mean(), rtol=1e-5)


def _reference_sgl(
    sr: torch.Tensor, hr: torch.Tensor, operator: str, distance: str, reduction: str, padding: str
) -> torch.Tensor:
    """The straightforward formula: pad the difference, one grouped conv, distance, reduce."""
    k = operator_kernels(operator, dtype=sr.dtype)
    p, c = k.shape[-1] // 2, sr.shape[1]
    m = F.conv2d(F.pad(sr - hr, (p, p, p, p), mode=padding), k.repeat(c, 1, 1, 1), groups=c)
    d = {"l1": m.abs(), "l2": m.square(), "charbonnier": (m.square() + 1e-6).sqrt() - 1e-3}
    return {"mean": d[distance].mean(), "sum": d[distance].sum(), "none": d[distance]}[reduction]


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@pytest.mark.parametrize("padding", ["reflect", "replicate"])
@pytest.mark.parametrize("distance", DISTS)
@pytest.mark.parametrize("operator", OPS)
def test_values_and_gradients_match_the_straightforward_reference(
    operator: str, distance: str, padding: str, reduction: str, stencil_backend: str
) -> None:
    """The CPU path (one autograd node for a scalar loss: the fused kernel or torch ops)
    against pad + conv + distance, for sr and hr gradients, module and function, in float64
    (tight) and float32."""
    for dtype, rtol in ((torch.float64, 1e-11), (torch.float32, 2e-5)):
        sr, hr = pair(2, 3, 9, 13, dtype=dtype)
        seed = torch.randn(_reference_sgl(sr, hr, operator, distance, "none", padding).shape)
        results = []
        for how in ("reference", "module", "function"):
            a, b = sr.clone().requires_grad_(True), hr.clone().requires_grad_(True)
            if how == "reference":
                out = _reference_sgl(a, b, operator, distance, reduction, padding)
            elif how == "module":
                loss = SecondOrderGradientLoss(operator, distance, reduction, padding=padding)
                out = loss.to(dtype)(a, b)
            else:
                out = second_order_gradient_loss(a, b, operator, distance, reduction, 1e-3, padding)
            (out * seed.to(dtype) if reduction == "none" else out).sum().backward()
            results.append((out.detach(), a.grad, b.grad))
        ref = results[0]
        for got in results[1:]:
            for x, y in zip(got, ref, strict=True):
                assert x.dtype == y.dtype and x.shape == y.shape
                assert torch.allclose(x, y, rtol=rtol, atol=rtol * y.abs().max().item())


def test_first_order_loss_matches_the_straightforward_reference() -> None:
    k = operator_kernels("grad1", dtype=torch.float64)

    def magnitude(x: torch.Tensor) -> torch.Tensor:
        g = F.conv2d(F.pad(x, (1, 1, 1, 1), mode="reflect"), k.repeat(3, 1, 1, 1), groups=3)
        return (g.unflatten(1, (3, 2)).square().sum(dim=2) + 1e-6).sqrt()

    sr, hr = pair(2, 3, 8, 11, dtype=torch.float64)
    a, b = sr.clone().requires_grad_(True), sr.clone().requires_grad_(True)
    ref = (magnitude(a) - magnitude(hr)).abs().mean()
    got = FirstOrderGradientLoss()(b, hr)
    ref.backward()
    got.backward()
    assert torch.allclose(got, ref, rtol=1e-12) and torch.allclose(b.grad, a.grad, rtol=1e-10)


def _reference_first_order(
    sr: torch.Tensor, hr: torch.Tensor, distance: str, reduction: str, padding: str
) -> torch.Tensor:
    """The straightforward formula: both magnitudes by pad + grouped conv, distance, reduce."""
    k = operator_kernels("grad1", dtype=sr.dtype)
    c = sr.shape[1]

    def magnitude(x: torch.Tensor) -> torch.Tensor:
        g = F.conv2d(F.pad(x, (1, 1, 1, 1), mode=padding), k.repeat(c, 1, 1, 1), groups=c)
        return (g.unflatten(1, (c, 2)).square().sum(dim=2) + 1e-6).sqrt()

    m = magnitude(sr) - magnitude(hr)
    d = {"l1": m.abs(), "l2": m.square(), "charbonnier": (m.square() + 1e-6).sqrt() - 1e-3}
    return {"mean": d[distance].mean(), "sum": d[distance].sum()}[reduction]


@pytest.mark.parametrize("reduction", ["mean", "sum"])
@pytest.mark.parametrize("padding", ["reflect", "replicate"])
@pytest.mark.parametrize("distance", DISTS)
def test_first_order_values_and_gradients_match_the_reference_everywhere(
    distance: str, padding: str, reduction: str, stencil_backend: str
) -> None:
    """The CPU path (one autograd node: the fused kernel or torch ops with a hand-written
    backward) against the composed formula, gradients of sr and hr, float64 (tight) and
    float32."""
    for dtype, rtol in ((torch.float64, 1e-11), (torch.float32, 2e-5)):
        sr, hr = pair(2, 3, 9, 13, dtype=dtype)
        results = []
        for how in ("reference", "module"):
            a, b = sr.clone().requires_grad_(True), hr.clone().requires_grad_(True)
            if how == "reference":
                out = _reference_first_order(a, b, distance, reduction, padding)
            else:
                out = FirstOrderGradientLoss(distance, reduction, padding=padding)(a, b)
            out.backward()
            results.append((out.detach(), a.grad, b.grad))
        for x, y in zip(results[1], results[0], strict=True):
            assert x.dtype == y.dtype and x.shape == y.shape
            assert torch.allclose(x, y, rtol=rtol, atol=rtol * y.abs().max().item())


@pytest.mark.parametrize(
    "make",
    [
        FirstOrderGradientLoss,
        lambda: SecondOrderGradientLoss("hessian"),
        lambda: SecondOrderGradientLoss("laplacian", "l2", "sum"),
    ],
)
def test_cpu_losses_give_leaves_a_gradient_kept_without_a_copy(
    make: object, stencil_backend: str
) -> None:
    """The gradient each leaf receives is the tensor it keeps as ``.grad``: contiguous, so
    autograd does not clone it (a border-padded view would be)."""
    sr, hr = pair(2, 3, 12, 13)
    a, b = sr.requires_grad_(True), hr.requires_grad_(True)
    received: list[int] = []
    for t in (a, b):
        t.register_hook(lambda g: received.append(g.data_ptr()))
    make()(a, b).backward()  # type: ignore[operator]
    assert a.grad is not None and b.grad is not None
    assert sorted(received) == sorted([a.grad.data_ptr(), b.grad.data_ptr()])


def test_strided_and_channels_last_inputs_give_the_same_loss() -> None:
    sr, hr = pair(2, 3, 12, 12)
    want = SecondOrderGradientLoss("gog")(sr, hr)
    cl = SecondOrderGradientLoss("gog")(
        sr.contiguous(memory_format=torch.channels_last), hr[..., :, :]
    )
    wide = torch.zeros(2, 3, 12, 24)
    wide[..., ::2] = sr
    strided = SecondOrderGradientLoss("gog")(wide[..., ::2], hr)
    assert torch.allclose(cl, want, rtol=1e-6) and torch.allclose(strided, want, rtol=1e-6)


def test_functional_twin_equals_module_and_reductions_agree() -> None:
    sr, hr = pair(2, 3, 10, 11)
    for op in OPS:
        module = SecondOrderGradientLoss(op, "charbonnier", eps=1e-2)
        fn = second_order_gradient_loss(sr, hr, operator=op, distance="charbonnier", eps=1e-2)
        assert torch.equal(module(sr, hr), fn)
        total = SecondOrderGradientLoss(op, "charbonnier", "sum", eps=1e-2)(sr, hr)
        n = {"laplacian": 1, "hessian": 3, "gog": 3}[op] * sr.numel()
        assert torch.allclose(total / n, fn, rtol=1e-5)


# ================================================================ autograd


@pytest.mark.parametrize("distance", DISTS)
@pytest.mark.parametrize("operator", [*OPS, "grad1"])
def test_gradcheck(operator: str, distance: str) -> None:
    sr, hr = pair(1, 2, 5, 6, dtype=torch.float64)
    sr.requires_grad_(True)
    hr.requires_grad_(True)
    if operator == "grad1":
        loss = FirstOrderGradientLoss(distance, eps=0.05)
    else:
        loss = SecondOrderGradientLoss(operator, distance, eps=0.05)
    assert torch.autograd.gradcheck(loss, (sr, hr))


# ================================================================ module properties


def test_no_parameters_empty_state_dict_kernels_are_buffers() -> None:
    for m in (SecondOrderGradientLoss("hessian"), FirstOrderGradientLoss()):
        assert list(m.parameters()) == []
        assert m.state_dict() == {}
        assert [name for name, _ in m.named_buffers()] == ["kernels"]
    assert list(build_loss({"l1": 1, "sgl": 0.1, "grad1": 0.1}).state_dict()) == []


@pytest.mark.parametrize("channels", [1, 3, 4])
@pytest.mark.parametrize("operator", OPS)
def test_any_channel_count(operator: str, channels: int) -> None:
    sr, hr = pair(2, channels, 9, 10)
    loss = SecondOrderGradientLoss(operator, reduction="none")(sr, hr)
    k = 1 if operator == "laplacian" else 3
    assert loss.shape == (2, k * channels, 9, 10)
    # channels are independent: the per-channel maps equal those of single-channel calls
    single = SecondOrderGradientLoss(operator, reduction="none")(sr[:, -1:], hr[:, -1:])
    assert torch.allclose(loss[:, -k:], single, atol=1e-6)


@pytest.mark.parametrize(
    ("dtype", "rtol"),
    # measured relative error of the scalar loss: <= 5e-4 fp16, <= 5e-3 bf16 (inputs rounded)
    [(torch.float16, 5e-3), (torch.bfloat16, 3e-2)],
)
@pytest.mark.parametrize("operator", [*OPS, "grad1"])
def test_low_precision_matches_fp32(operator: str, dtype: torch.dtype, rtol: float) -> None:
    sr, hr = pair(2, 3, 16, 16)
    for distance in DISTS:
        if operator == "grad1":
            loss = FirstOrderGradientLoss(distance)
        else:
            loss = SecondOrderGradientLoss(operator, distance)
        low = loss(sr.to(dtype), hr.to(dtype))
        assert low.dtype == dtype
        assert low.float().item() == pytest.approx(loss(sr, hr).item(), rel=rtol)


def test_autocast_region_keeps_fp32_result() -> None:
    sr, hr = pair(2, 3, 12, 12)
    sgl = SecondOrderGradientLoss()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        inside = sgl(sr, hr)
    assert inside.dtype == torch.float32
    assert torch.equal(inside, sgl(sr, hr))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
def test_cuda_matches_cpu() -> None:
    sr, hr = pair(2, 3, 16, 16)
    for spec in ({"l1": 1.0, "sgl": 0.1}, {"sgl": {"weight": 1.0, "operator": "gog"}, "grad1": 1}):
        loss = build_loss(spec)
        cpu_total, _ = loss(sr, hr)
        loss = loss.to("cuda")
        assert all(b.device.type == "cuda" for b in loss.buffers())
        total, _ = loss(sr.cuda().requires_grad_(), hr.cuda())
        total.backward()
        assert total.item() == pytest.approx(cpu_total.item(), rel=1e-4)


def test_shape_errors_name_both_shapes() -> None:
    sgl = SecondOrderGradientLoss()
    with pytest.raises(ValueError, match=r"sr \(1, 3, 8, 8\) and hr \(1, 3, 8, 9\)"):
        sgl(torch.rand(1, 3, 8, 8), torch.rand(1, 3, 8, 9))
    with pytest.raises(ValueError, match=r"sr \(3, 8, 8\) and hr \(3, 8, 8\)"):
        sgl(torch.rand(3, 8, 8), torch.rand(3, 8, 8))
    with pytest.raises(ValueError, match=r"sr \(1, 1, 4, 4\) and hr \(1, 1, 4, 4, 1\)"):
        second_order_gradient_loss(torch.rand(1, 1, 4, 4), torch.rand(1, 1, 4, 4, 1))
    with pytest.raises(ValueError, match=r"sr \(1, 1, 4, 4\) and hr \(1, 4, 4\)"):
        build_loss({"l1": 1})(torch.rand(1, 1, 4, 4), torch.rand(1, 4, 4))


def test_bad_options_raise() -> None:
    with pytest.raises(ValueError, match=r"unknown operator 'sobel'; allowed: gog, hessian"):
        SecondOrderGradientLoss("sobel")
    with pytest.raises(ValueError, match=r"unknown distance 'huber'; allowed: l1, l2, charb"):
        SecondOrderGradientLoss(distance="huber")
    with pytest.raises(ValueError, match=r"unknown reduction 'avg'"):
        FirstOrderGradientLoss(reduction="avg")
    with pytest.raises(ValueError, match="eps must be a positive number"):
        SecondOrderGradientLoss(distance="charbonnier", eps=0)


# ================================================================ composite


def test_composite_applies_weights_exactly_and_total_is_the_sum() -> None:
    sr, hr = pair(2, 3, 12, 12)
    spec = {
        "l1": 1.0,
        "sgl": {"weight": 0.1, "operator": "hessian", "distance": "charbonnier"},
        "grad1": 0.25,
    }
    total, comps = build_loss(spec)(sr, hr)
    assert list(comps) == ["l1", "sgl", "grad1"]
    standalone = {
        "l1": F.l1_loss(sr, hr),
        "sgl": SecondOrderGradientLoss("hessian", "charbonnier")(sr, hr),
        "grad1": FirstOrderGradientLoss()(sr, hr),
    }
    for name, weight in [("l1", 1.0), ("sgl", 0.1), ("grad1", 0.25)]:
        assert torch.equal(comps[name], weight * standalone[name]), name
    assert torch.equal(total, comps["l1"] + comps["sgl"] + comps["grad1"])
    assert total.item() > comps["l1"].item() > 0


def test_zero_weight_is_not_computed_and_training_matches_pure_l1_bitwise() -> None:
    sr, hr = pair(2, 3, 12, 12)
    mixed = build_loss({"l1": 1.0, "sgl": 0.0})
    calls: list[str] = []
    mixed.terms["sgl"].register_forward_hook(lambda *_: calls.append("sgl"))
    mixed.terms["l1"].register_forward_hook(lambda *_: calls.append("l1"))

    x1 = sr.clone().requires_grad_()
    total, comps = mixed(x1, hr)
    total.backward()
    assert calls == ["l1"]  # the zero-weight term never ran
    assert comps["sgl"].item() == 0.0 and comps["sgl"].shape == ()
    x2 = sr.clone().requires_grad_()
    pure = F.l1_loss(x2, hr)
    pure.backward()
    assert torch.equal(total, pure)
    assert torch.equal(x1.grad, x2.grad)


def test_describe_and_repr_are_readable() -> None:
    loss = build_loss({"l1": 1, "sgl": {"weight": 0.1, "operator": "gog", "distance": "l2"}})
    text = loss.describe()
    assert text == "1 * l1 + 0.1 * sgl(operator='gog', distance='l2')"
    assert repr(loss) == f"CompositeLoss({text})"


def test_composite_from_modules() -> None:
    sr, hr = pair(1, 3, 8, 8)
    loss = CompositeLoss({"pix": (2.0, L1Loss()), "lap": (0.5, SecondOrderGradientLoss())})
    total, comps = loss(sr, hr)
    assert torch.equal(comps["pix"], 2.0 * F.l1_loss(sr, hr))
    assert torch.equal(comps["lap"], 0.5 * SecondOrderGradientLoss()(sr, hr))
    assert torch.equal(total, comps["pix"] + comps["lap"])
    with pytest.raises(ValueError, match="'lap' has reduction='none'"):
        CompositeLoss({"lap": (1.0, SecondOrderGradientLoss(reduction="none"))})


@pytest.mark.parametrize(
    ("spec", "pattern"),
    [
        ({"ssim": 1.0}, rf"unknown loss 'ssim' in loss spec; allowed: {ALLOWED_LOSSES}"),
        ({}, rf"loss spec is empty; give at least one of: {ALLOWED_LOSSES}"),
        ([("l1", 1.0)], "loss spec must be a mapping"),
        ({"l1": -0.1}, r"loss spec 'l1': weight must be a finite number >= 0; got -0.1"),
        ({"sgl": float("nan")}, r"loss spec 'sgl': weight must be a finite number >= 0; got nan"),
        ({"l1": float("inf")}, r"loss spec 'l1': weight must be a finite number"),
        ({"l1": "1e-1"}, r"loss spec 'l1': weight must be a number >= 0; got '1e-1' of type str"),
        ({"l1": True}, r"loss spec 'l1': weight must be a number >= 0; got True of type bool"),
        ({"l1": None}, r"loss spec 'l1': weight must be a number"),
        (
            {"sgl": {"weight": 0.1, "opertor": "hessian"}},
            r"loss spec 'sgl': unknown option 'opertor'; "
            r"allowed: distance, eps, operator, padding, weight",
        ),
        ({"l1": {"weight": 1, "reduction": "sum"}}, r"'l1': unknown option 'reduction'; allowed: "),
        ({"sgl": {"operator": "hessian"}}, r"loss spec 'sgl': missing 'weight'"),
        (
            {"sgl": {"weight": 0.1, "operator": "sobel"}},
            r"loss spec 'sgl': unknown operator 'sobel'; allowed: gog, hessian, laplacian",
        ),
        ({"l1": 0, "sgl": 0.0}, "all loss weights are zero"),
    ],
)
def test_build_loss_errors_name_the_key_and_the_allowed_values(spec: object, pattern: str) -> None:
    with pytest.raises(ValueError, match=pattern):
        build_loss(spec)  # type: ignore[arg-type]


def test_registry_names() -> None:
    assert list(LOSSES) == [
        "l1",
        "l2",
        "charbonnier",
        "sgl",
        "grad1",
        "lpips_vgg",
        "perceptual",
        "gan",
    ]
    assert LOSSES["sgl"] is SecondOrderGradientLoss
    assert LOSSES["grad1"] is FirstOrderGradientLoss


# --- lpips_vgg: a frozen pretrained network as a loss term ------------------------------------


@pytest.fixture(scope="module")
def lpips_random() -> LPIPSVGGLoss:
    torch.manual_seed(0)
    return LPIPSVGGLoss(random_backbone=True)  # plumbing only: never a reportable number


def test_lpips_vgg_spec_is_validated_without_weights_and_refuses_to_run_without_them(
    tmp_path,
) -> None:
    assert loss_options("lpips_vgg") == ["weight"]  # pretrained_dir / random_backbone: code only
    loss = build_loss({"l1": 1.0, "lpips_vgg": 0.1})  # what params validation does: no file read
    sr, hr = pair(1, 3, 16, 16)
    with pytest.raises(RuntimeError, match="lpips_vgg has no weights"):
        loss(sr, hr)
    with pytest.raises(ValueError, match="unknown option 'random_backbone'"):
        build_loss({"lpips_vgg": {"weight": 1.0, "random_backbone": True}})
    with pytest.raises(WeightsUnavailable) as info:
        build_loss({"l1": 1.0, "lpips_vgg": 0.1}, pretrained_dir=tmp_path / "models/pretrained")
    text = str(info.value)
    assert "lpips_vgg.safetensors" in text and "sgsr download" in text


@pytest.mark.parametrize("term", ["lpips_vgg", "perceptual"])
def test_terms_on_a_frozen_rgb_network_share_their_input_rule(term: str) -> None:
    """lpips_vgg and perceptual take their inputs by one rule (losses._rgb_inputs): no weights
    is an error naming the term, a 2-channel pair is refused, a gray pair is repeated to RGB."""
    loss = build_loss({term: 1.0}).terms[term]
    with pytest.raises(RuntimeError, match=f"^{term} has no weights: build the loss with"):
        loss(*pair(1, 3, 16, 16))
    loss.net = nn.Identity()  # any module: the rule runs before the network
    with pytest.raises(ValueError, match=f"^{term} needs 1 or 3 channels, got 2"):
        loss(*pair(1, 2, 16, 16))
    gray = pair(1, 1, 8, 8)
    rgb = _rgb_inputs(term, loss.net, *gray)
    assert [t.shape for t in rgb] == [torch.Size([1, 3, 8, 8])] * 2
    assert all(
        torch.equal(t[:, c], g[:, 0]) for t, g in zip(rgb, gray, strict=True) for c in range(3)
    )


def test_lpips_vgg_gradients_reach_sr_only_and_the_net_stays_frozen(
    lpips_random: LPIPSVGGLoss,
) -> None:
    loss = CompositeLoss({"l1": (1.0, L1Loss()), "lpips_vgg": (0.5, lpips_random)})
    loss.train()  # the trainer's mode must not switch dropout on in the frozen heads
    assert not lpips_random.net.training
    assert all(not p.requires_grad for p in lpips_random.parameters())
    sr, hr = pair(2, 3, 32, 32)
    x = sr.clone().requires_grad_()
    total, comps = loss(x, hr)
    total.backward()
    assert comps["lpips_vgg"].item() > 0 and x.grad is not None and x.grad.abs().sum() > 0
    assert all(p.grad is None for p in lpips_random.parameters())
    assert lpips_random(hr, hr.clone()).item() == 0.0
    again = loss(sr, hr)[1]["lpips_vgg"]
    assert torch.equal(again, comps["lpips_vgg"].detach())  # deterministic: no dropout
    g_sr, g_hr = sr[:, :1], hr[:, :1]  # one channel: replicated to RGB
    rgb = lpips_random(g_sr.expand(-1, 3, -1, -1), g_hr.expand(-1, 3, -1, -1))
    assert torch.equal(lpips_random(g_sr, g_hr), rgb)


def test_lpips_vgg_runs_in_fp32_under_autocast(lpips_random: LPIPSVGGLoss) -> None:
    sr, hr = pair(1, 3, 32, 32)
    plain = lpips_random(sr, hr)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        auto = lpips_random(sr.bfloat16(), hr.bfloat16())
    assert auto.dtype == torch.float32
    assert torch.equal(auto, lpips_random(sr.bfloat16().float(), hr.bfloat16().float()))
    assert plain.dtype == torch.float32


def test_lpips_vgg_weight_zero_trains_bitwise_like_l1_and_is_never_saved(
    lpips_random: LPIPSVGGLoss,
) -> None:
    from sgsr.config import TrainConfig
    from sgsr.models import build_model
    from sgsr.train import build_state, fixed_batch, train

    def model() -> torch.nn.Module:
        torch.manual_seed(0)
        return build_model("edsr_baseline", scale=2, n_resblocks=1, n_feats=8)

    hr = torch.rand(2, 3, 16, 16)
    lr = F.avg_pool2d(hr, 2)
    opts = TrainConfig(iterations=3, batch_size=2, lr=1e-3, schedule="constant", device="cpu")
    l1 = train(model(), CompositeLoss({"l1": (1.0, L1Loss())}), fixed_batch(lr, hr), opts)
    zero = CompositeLoss({"l1": (1.0, L1Loss()), "lpips_vgg": (0.0, lpips_random)})
    same = train(model(), zero, fixed_batch(lr, hr), opts)
    assert l1.weights.keys() == same.weights.keys()
    assert all(torch.equal(l1.weights[k], same.weights[k]) for k in l1.weights)
    used = CompositeLoss({"l1": (1.0, L1Loss()), "lpips_vgg": (0.1, lpips_random)})
    net = model()
    state = build_state(net, used, opts)
    assert sum(p.numel() for g in state.optimizer.param_groups for p in g["params"]) == sum(
        p.numel() for p in net.parameters()
    )
    moved = train(model(), used, fixed_batch(lr, hr), opts)
    assert moved.weights.keys() == l1.weights.keys()  # no LPIPS tensor in model.safetensors
    assert any(not torch.equal(moved.weights[k], l1.weights[k]) for k in l1.weights)
