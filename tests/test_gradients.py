"""Second-order operators: analytic values, an independent conv reference, kornia, gradcheck."""

from __future__ import annotations

import kornia
import pytest
import torch
import torch.nn.functional as F

from sgsr.gradients import (
    OPERATORS,
    apply_kernels,
    get_operator,
    gradient_of_gradient,
    hessian,
    laplacian,
    operator_kernels,
)

# The kernels as documented, written out independently of sgsr.gradients (correlation, x = column).
_SMOOTH2 = [1.0, 4.0, 6.0, 4.0, 1.0]
_DIFF2 = [1.0, 0.0, -2.0, 0.0, 1.0]
_SDIFF = [-1.0, -2.0, 0.0, 2.0, 1.0]
_GOG_XX = [[r * c / 64 for c in _DIFF2] for r in _SMOOTH2]
REFERENCE_KERNELS: dict[str, list[list[list[float]]]] = {
    "laplacian": [[[0, 1, 0], [1, -4, 1], [0, 1, 0]]],
    "hessian": [
        [[0, 0, 0], [1, -2, 1], [0, 0, 0]],
        [[0, 1, 0], [0, -2, 0], [0, 1, 0]],
        [[0.25, 0, -0.25], [0, 0, 0], [-0.25, 0, 0.25]],
    ],
    "gog": [
        _GOG_XX,
        [list(col) for col in zip(*_GOG_XX, strict=True)],
        [[r * c / 64 for c in _SDIFF] for r in _SDIFF],
    ],
}
BORDER = {"laplacian": 1, "hessian": 1, "gog": 2}  # half kernel width: pixels touched by padding


pytestmark = pytest.mark.usefixtures("one_thread")


def reference(x: torch.Tensor, name: str, padding: str) -> torch.Tensor:
    """Channel by channel, kernel by kernel: plain F.conv2d with one 1x1-channel kernel."""
    kernels = REFERENCE_KERNELS[name]
    p = len(kernels[0]) // 2
    outs = []
    for c in range(x.shape[1]):
        xc = F.pad(x[:, c : c + 1], (p, p, p, p), mode=padding)
        for k in kernels:
            weight = torch.tensor(k, dtype=x.dtype).view(1, 1, 2 * p + 1, 2 * p + 1)
            outs.append(F.conv2d(xc, weight))
    return torch.cat(outs, dim=1)


def grid(h: int, w: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(x, y) sample coordinates in float64, x along columns, y along rows."""
    y, x = torch.meshgrid(
        torch.arange(h, dtype=torch.float64), torch.arange(w, dtype=torch.float64), indexing="ij"
    )
    return x, y


def interior(t: torch.Tensor, b: int) -> torch.Tensor:
    return t[..., b:-b, b:-b]


# ---------------------------------------------------------------- second-order property


@pytest.mark.parametrize("name", sorted(OPERATORS))
def test_affine_ramp_is_invisible_away_from_the_border(name: str) -> None:
    """op(f + a + b x + c y) == op(f) in the interior; at the border the padding shows the ramp."""
    x, y = grid(12, 15)
    f = torch.rand(2, 3, 12, 15, dtype=torch.float64)
    g = f + 0.7 - 0.3 * x + 0.45 * y
    op, b = get_operator(name), BORDER[name]
    assert torch.allclose(interior(op(g), b), interior(op(f), b), rtol=0, atol=1e-12)
    assert (op(g) - op(f)).abs().max() > 0.1  # the border does change: the crop is needed


# ---------------------------------------------------------------- analytic values


def test_laplacian_of_x2_plus_y2_is_4_in_the_interior() -> None:
    x, y = grid(9, 11)
    out = laplacian((x**2 + y**2)[None, None])
    assert out.shape == (1, 1, 9, 11)
    assert torch.equal(interior(out, 1), torch.full((1, 1, 7, 9), 4.0, dtype=torch.float64))


@pytest.mark.parametrize("name", ["hessian", "gog"])
def test_hessian_of_quadratic(name: str) -> None:
    """x^2 + 3xy + 2y^2 has (xx, yy, xy) = (2, 4, 3); both Hessians are exact on quadratics."""
    x, y = grid(10, 13)
    out = get_operator(name)((x**2 + 3 * x * y + 2 * y**2)[None, None])
    assert out.shape == (1, 3, 10, 13)
    inner = interior(out, BORDER[name])
    for k, expected in enumerate([2.0, 4.0, 3.0]):
        assert torch.allclose(inner[0, k], torch.full_like(inner[0, k], expected), atol=1e-9)


def test_laplacian_is_trace_of_hessian() -> None:
    f = torch.rand(2, 2, 8, 9, dtype=torch.float64)
    h = hessian(f).unflatten(1, (2, 3))
    assert torch.allclose(laplacian(f), h[:, :, 0] + h[:, :, 1], atol=1e-12)


# ---------------------------------------------------------------- independent references


@pytest.mark.parametrize("padding", ["reflect", "replicate"])
@pytest.mark.parametrize("name", sorted(OPERATORS))
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_operator_matches_explicit_conv_reference(
    name: str, padding: str, dtype: torch.dtype
) -> None:
    f = torch.rand(2, 3, 11, 14, dtype=dtype)
    out = get_operator(name)(f, padding=padding)
    assert out.dtype == dtype
    assert torch.allclose(out, reference(f, name, padding), rtol=0, atol=1e-6)


@pytest.mark.parametrize(("name", "mode"), [("hessian", "diff"), ("gog", "sobel")])
def test_matches_kornia_spatial_gradient_with_replicate_border(name: str, mode: str) -> None:
    """kornia always replicates and orders (xx, xy, yy); ours is (xx, yy, xy)."""
    f = torch.rand(2, 3, 9, 10, dtype=torch.float64)
    ours = get_operator(name)(f, padding="replicate").unflatten(1, (3, 3))
    theirs = kornia.filters.spatial_gradient(f, mode=mode, order=2, normalized=True)
    assert torch.allclose(ours, theirs[:, :, [0, 2, 1]], atol=1e-12)


def test_output_is_channel_major() -> None:
    """Channel 3c + k of hessian(x) is component k of input channel c."""
    f = torch.rand(1, 4, 7, 8, dtype=torch.float64)
    out = hessian(f)
    for c in range(4):
        assert torch.equal(out[:, 3 * c : 3 * c + 3], hessian(f[:, c : c + 1]))


# ---------------------------------------------------------------- autograd, dtypes, errors


@pytest.mark.parametrize("name", sorted(OPERATORS))
def test_gradcheck(name: str) -> None:
    f = torch.rand(1, 2, 5, 6, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(get_operator(name), (f,))


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("name", sorted(OPERATORS))
def test_low_precision_matches_fp32(name: str, dtype: torch.dtype) -> None:
    f = torch.rand(2, 3, 16, 16)
    out = get_operator(name)(f.to(dtype))
    assert out.dtype == dtype
    # Kernel taps are exact in both formats; the error comes from rounding the input and the
    # output, each at most |kernel|_1 * u for values in [0, 1] (u: unit roundoff).
    u = 2.0**-8 if dtype == torch.bfloat16 else 2.0**-11
    atol = 2 * operator_kernels(name).abs().sum(dim=(1, 2, 3)).max().item() * u
    assert torch.allclose(out.float(), get_operator(name)(f), rtol=0, atol=atol)


def test_autocast_does_not_lower_precision() -> None:
    f = torch.rand(1, 3, 8, 8)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = laplacian(f)
    assert out.dtype == torch.float32
    assert torch.equal(out, laplacian(f))


def test_unknown_operator_lists_allowed_names() -> None:
    with pytest.raises(ValueError, match=r"'sobel'.*allowed: gog, hessian, laplacian"):
        get_operator("sobel")
    with pytest.raises(ValueError, match="unknown operator 'nope'"):
        operator_kernels("nope")


def test_bad_inputs_raise_value_error_naming_the_shape() -> None:
    with pytest.raises(ValueError, match=r"\(3, 8, 8\)"):
        laplacian(torch.rand(3, 8, 8))
    with pytest.raises(ValueError, match=r"needs H and W > 2.*\(1, 1, 2, 9\)"):
        gradient_of_gradient(torch.rand(1, 1, 2, 9))
    with pytest.raises(ValueError, match="floating"):
        laplacian(torch.ones(1, 1, 4, 4, dtype=torch.int64))
    with pytest.raises(ValueError, match="unknown padding 'zeros'"):
        hessian(torch.rand(1, 1, 4, 4), padding="zeros")
    with pytest.raises(ValueError, match="kernels must have shape"):
        apply_kernels(torch.rand(1, 1, 4, 4), torch.ones(3, 3))
