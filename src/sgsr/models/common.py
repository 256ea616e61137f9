"""Building blocks shared by the SR networks, following the official EDSR code
(github.com/sanghyun-son/EDSR-PyTorch, ``src/model/common.py``) so parameter counts match the
published ones, plus the argument checks every model runs before it allocates anything."""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import nn

from sgsr.runs import SCALES

# DIV2K training-set RGB mean in [0, 1], as hard-coded in the official EDSR and RCAN code.
DIV2K_RGB_MEAN: tuple[float, float, float] = (0.4488, 0.4371, 0.4040)


# --------------------------------------------------------------------------------------------
# argument checks: fail before allocating a 43 M-parameter network with a nonsense config
# --------------------------------------------------------------------------------------------
class ModelArgumentError(ValueError):
    """A constructor argument is invalid; `argument` names it, so params errors can say
    ``models.<name>.<argument>`` instead of a bare message from deep inside a build."""

    def __init__(self, argument: str, message: str) -> None:
        super().__init__(message)
        self.argument = argument


def check_scale(scale: object) -> int:
    """Return `scale` if it is one of SCALES; the upsamplers exist only for those."""
    if isinstance(scale, bool) or not isinstance(scale, int) or scale not in SCALES:
        raise ModelArgumentError(
            "scale", f"scale={scale!r} is not supported; allowed scales: {list(SCALES)}"
        )
    return scale


def check_positive_int(name: str, value: object) -> int:
    """Block, group, feature and channel counts must be integers >= 1."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ModelArgumentError(name, f"{name}={value!r} must be a positive integer (>= 1)")
    return value


def check_positive_float(name: str, value: object) -> float:
    """res_scale and rgb_range are multipliers; zero or negative silently breaks the network."""
    if isinstance(value, bool) or not isinstance(value, int | float) or not value > 0:
        raise ModelArgumentError(name, f"{name}={value!r} must be a positive number")
    if not math.isfinite(value):
        raise ModelArgumentError(name, f"{name}={value!r} must be finite")
    return float(value)


def check_n_colors(n_colors: object) -> int:
    """Only RGB (3) and grey (1) have a defined mean to shift by."""
    if isinstance(n_colors, bool) or n_colors not in (1, 3):
        raise ModelArgumentError(
            "n_colors", f"n_colors={n_colors!r} is not supported; use 3 (RGB) or 1 (grey)"
        )
    return int(n_colors)  # type: ignore[call-overload]


def check_residual_args(
    *,
    scale: object,
    n_resblocks: object,
    n_feats: object,
    res_scale: object,
    n_colors: object,
    rgb_range: object,
    **_: object,
) -> None:
    """The checks EDSR and SRResNet run first; also their `check_args` hook (a params file is
    validated with it, without building anything)."""
    check_scale(scale)
    check_positive_int("n_resblocks", n_resblocks)
    check_positive_int("n_feats", n_feats)
    check_positive_float("res_scale", res_scale)
    check_n_colors(n_colors)
    check_positive_float("rgb_range", rgb_range)


# --------------------------------------------------------------------------------------------
# layers
# --------------------------------------------------------------------------------------------
def default_conv(
    in_channels: int, out_channels: int, kernel_size: int, bias: bool = True
) -> nn.Conv2d:
    """'Same' padded convolution, as EDSR's `default_conv`."""
    return nn.Conv2d(in_channels, out_channels, kernel_size, padding=kernel_size // 2, bias=bias)


class MeanShift(nn.Module):
    """Subtract (sign=-1) or add back (sign=+1) the DIV2K mean scaled by `rgb_range`.

    The official code does this with a frozen 1x1 conv; a broadcast add of a buffer is the same
    map (its std is 1), has no parameters to freeze or count, and works in any memory format.
    The buffer is non-persistent: it is a constant of the architecture, not a learned weight, so
    it stays out of checkpoints. For n_colors == 1 the mean of the three RGB means is used.
    """

    def __init__(self, rgb_range: float = 1.0, n_colors: int = 3, sign: int = -1) -> None:
        super().__init__()
        if sign not in (-1, 1):
            raise ValueError(f"sign={sign!r} must be -1 (subtract) or +1 (add)")
        n_colors = check_n_colors(n_colors)
        rgb_range = check_positive_float("rgb_range", rgb_range)
        mean = list(DIV2K_RGB_MEAN) if n_colors == 3 else [sum(DIV2K_RGB_MEAN) / 3.0]
        shift = torch.tensor(mean, dtype=torch.float32).view(1, n_colors, 1, 1)
        self.register_buffer("shift", sign * rgb_range * shift, persistent=False)
        self.sign = sign

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.shift.to(dtype=x.dtype)

    def extra_repr(self) -> str:
        return f"sign={self.sign:+d}, shift={[round(v, 4) for v in self.shift.flatten().tolist()]}"


class ResBlock(nn.Module):
    """conv-act-conv with an identity skip and residual scaling; no batch norm (EDSR, sec. 3.1).
    `attention` (built after the convolutions), when given, ends the residual branch: RCAN's
    RCAB is this block with channel attention."""

    def __init__(
        self,
        n_feats: int,
        kernel_size: int = 3,
        res_scale: float = 1.0,
        act: Callable[[], nn.Module] = lambda: nn.ReLU(inplace=True),
        conv: Callable[..., nn.Module] = default_conv,
        attention: Callable[[], nn.Module] | None = None,
    ) -> None:
        super().__init__()
        layers = [conv(n_feats, n_feats, kernel_size), act(), conv(n_feats, n_feats, kernel_size)]
        if attention is not None:
            layers.append(attention())
        self.body = nn.Sequential(*layers)
        self.res_scale = res_scale

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        res = self.body(x)
        if self.res_scale != 1.0:
            res = res * self.res_scale
        return x + res


class MeanShiftedSR(nn.Module):
    """The frame EDSR, RCAN and SRResNet share: images in [0, rgb_range], the DIV2K mean taken
    out on the way in (``sub_mean``) and put back on the way out (``add_mean``), and
    ``head -> body with a global skip -> tail``. Subclasses run their own argument checks
    first, then this constructor, then build ``head``, ``body`` and ``tail``."""

    head: nn.Module
    body: nn.Module
    tail: nn.Module

    def __init__(self, *, scale: int, n_colors: int, rgb_range: float) -> None:
        super().__init__()
        self.scale = check_scale(scale)
        self.n_colors = check_n_colors(n_colors)
        self.rgb_range = check_positive_float("rgb_range", rgb_range)
        self.sub_mean = MeanShift(self.rgb_range, self.n_colors, sign=-1)
        self.add_mean = MeanShift(self.rgb_range, self.n_colors, sign=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.head(self.sub_mean(x))
        x = x + self.body(x)
        return self.add_mean(self.tail(x))


class Upsampler(nn.Sequential):
    """Sub-pixel upsampling: x2 and x4 as one or two (conv to 4C, shuffle 2) stages, x3 as one
    (conv to 9C, shuffle 3) stage, as in EDSR. `act` (e.g. PReLU for SRResNet) follows each
    shuffle when given."""

    def __init__(
        self,
        scale: int,
        n_feats: int,
        act: Callable[[], nn.Module] | None = None,
        conv: Callable[..., nn.Module] = default_conv,
    ) -> None:
        scale = check_scale(scale)
        stages = [2, 2] if scale == 4 else [scale]
        layers: list[nn.Module] = []
        for s in stages:
            layers += [conv(n_feats, s * s * n_feats, 3), nn.PixelShuffle(s)]
            if act is not None:
                layers.append(act())
        super().__init__(*layers)


def count_parameters(model: nn.Module, trainable_only: bool = False) -> int:
    """Number of learnable scalars (shared tensors counted once); buffers (MeanShift) are not."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)


def rgb_range_of(model: nn.Module) -> float:
    """The value range a model's images live in, [0, rgb_range] (1.0 when it does not say)."""
    return float(getattr(model, "rgb_range", 1.0))


def unit_forward(model: nn.Module, x: torch.Tensor, rgb_range: float = 1.0) -> torch.Tensor:
    """`model` on images in [0, 1]: scaled into its [0, rgb_range] and back. The trainer,
    validation and inference all call models this way, so a model with ``rgb_range: 255``
    is trained on the range it is evaluated on (for 1.0 the call is untouched)."""
    if rgb_range == 1.0:
        return model(x)
    return model(x * rgb_range) / rgb_range
