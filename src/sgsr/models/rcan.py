"""RCAN (Zhang et al., ECCV 2018): residual-in-residual groups of residual channel-attention
blocks, laid out as the official code (github.com/yulunzhang/RCAN) so the x4 count is 15.6 M."""

from __future__ import annotations

import torch
from torch import nn

from sgsr.models.common import (
    MeanShiftedSR,
    ModelArgumentError,
    ResBlock,
    Upsampler,
    check_n_colors,
    check_positive_float,
    check_positive_int,
    check_scale,
    default_conv,
)


class ChannelAttention(nn.Module):
    """Squeeze (global average) and excite (1x1 down by `reduction`, ReLU, 1x1 up, sigmoid)."""

    def __init__(self, n_feats: int, reduction: int = 16) -> None:
        super().__init__()
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.excite = nn.Sequential(
            nn.Conv2d(n_feats, n_feats // reduction, 1),
            nn.ReLU(inplace=True),
            nn.Conv2d(n_feats // reduction, n_feats, 1),
            nn.Sigmoid(),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.excite(self.pool(x))


class RCAB(ResBlock):
    """conv-ReLU-conv-attention with an identity skip: a ResBlock ending in channel attention.
    The official RCAB ignores res_scale (its multiply is commented out); here it is applied, and
    the default 1.0 makes that moot."""

    def __init__(self, n_feats: int, reduction: int = 16, res_scale: float = 1.0) -> None:
        super().__init__(
            n_feats, 3, res_scale=res_scale, attention=lambda: ChannelAttention(n_feats, reduction)
        )


class ResidualGroup(nn.Module):
    """`n_resblocks` RCABs and a conv, with a short skip around them."""

    def __init__(self, n_feats: int, n_resblocks: int, reduction: int, res_scale: float) -> None:
        super().__init__()
        self.body = nn.Sequential(
            *[RCAB(n_feats, reduction, res_scale) for _ in range(n_resblocks)],
            default_conv(n_feats, n_feats, 3),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.body(x)


class RCAN(MeanShiftedSR):
    """RCAN on [0, rgb_range] inputs; defaults: 10 groups x 20 RCABs, 64 features, reduction 16."""

    def __init__(
        self,
        *,
        scale: int,
        n_groups: int = 10,
        n_resblocks: int = 20,
        n_feats: int = 64,
        reduction: int = 16,
        res_scale: float = 1.0,
        n_colors: int = 3,
        rgb_range: float = 1.0,
    ) -> None:
        self.check_args(
            scale=scale,
            n_groups=n_groups,
            n_resblocks=n_resblocks,
            n_feats=n_feats,
            reduction=reduction,
            res_scale=res_scale,
            n_colors=n_colors,
            rgb_range=rgb_range,
        )
        super().__init__(scale=scale, n_colors=n_colors, rgb_range=rgb_range)
        res_scale = float(res_scale)
        self.head = default_conv(self.n_colors, n_feats, 3)
        self.body = nn.Sequential(
            *[ResidualGroup(n_feats, n_resblocks, reduction, res_scale) for _ in range(n_groups)],
            default_conv(n_feats, n_feats, 3),
        )
        self.tail = nn.Sequential(
            Upsampler(self.scale, n_feats), default_conv(n_feats, self.n_colors, 3)
        )

    @staticmethod
    def check_args(
        *,
        scale: object,
        n_groups: object,
        n_resblocks: object,
        n_feats: object,
        reduction: object,
        res_scale: object,
        n_colors: object,
        rgb_range: object,
        **_: object,
    ) -> None:
        """Validation hook (sgsr.models.check_model_args): __init__'s checks, nothing built."""
        check_scale(scale)
        check_positive_int("n_groups", n_groups)
        check_positive_int("n_resblocks", n_resblocks)
        n_feats = check_positive_int("n_feats", n_feats)
        reduction = check_positive_int("reduction", reduction)
        if reduction > n_feats:
            raise ModelArgumentError(
                "reduction",
                f"reduction={reduction} exceeds n_feats={n_feats}: channel attention would have "
                f"n_feats // reduction = 0 channels; use reduction <= n_feats",
            )
        check_positive_float("res_scale", res_scale)
        check_n_colors(n_colors)
        check_positive_float("rgb_range", rgb_range)
