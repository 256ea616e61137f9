"""EDSR (Lim et al., CVPRW 2017): residual blocks without batch norm, a global skip, and a
sub-pixel upsampler. One class; `edsr_baseline` and `edsr` are the two published configs.

``bicubic_skip=True`` (off in both published configs) adds the bicubic upsampling of the input
to the output, so the network learns only the residual detail, as VDSR does; its last conv
starts at zero, so an untrained network *is* bicubic. A small network then beats bicubic after
tens of CPU iterations instead of the thousands a plain EDSR needs just to reach it (the default
profile's demo budget; see README)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from sgsr.models.common import (
    MeanShiftedSR,
    ResBlock,
    Upsampler,
    check_residual_args,
    default_conv,
)


class EDSR(MeanShiftedSR):
    """EDSR on inputs in [0, rgb_range]; output has the same range (no clamp, so losses see the
    raw prediction). Defaults are EDSR-baseline; `edsr()` gives the full model."""

    def __init__(
        self,
        *,
        scale: int,
        n_resblocks: int = 16,
        n_feats: int = 64,
        res_scale: float = 1.0,
        n_colors: int = 3,
        rgb_range: float = 1.0,
        bicubic_skip: bool = False,
    ) -> None:
        check_residual_args(
            scale=scale,
            n_resblocks=n_resblocks,
            n_feats=n_feats,
            res_scale=res_scale,
            n_colors=n_colors,
            rgb_range=rgb_range,
        )
        if not isinstance(bicubic_skip, bool):
            raise ValueError(f"bicubic_skip={bicubic_skip!r} must be true or false")
        super().__init__(scale=scale, n_colors=n_colors, rgb_range=rgb_range)
        res_scale = float(res_scale)
        self.head = default_conv(self.n_colors, n_feats, 3)
        self.body = nn.Sequential(
            *[ResBlock(n_feats, 3, res_scale=res_scale) for _ in range(n_resblocks)],
            default_conv(n_feats, n_feats, 3),
        )
        self.tail = nn.Sequential(
            Upsampler(self.scale, n_feats), default_conv(n_feats, self.n_colors, 3)
        )
        self.bicubic_skip = bicubic_skip
        if bicubic_skip:  # start as bicubic: the residual branch outputs zero
            last = self.tail[-1]
            nn.init.zeros_(last.weight)
            nn.init.zeros_(last.bias)

    #: Validation hook (sgsr.models.check_model_args): the same checks, nothing built.
    check_args = staticmethod(check_residual_args)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        feats = self.head(self.sub_mean(x))
        out = self.tail(feats + self.body(feats))
        if self.bicubic_skip:  # the residual carries no mean: the bicubic image has it
            base = F.interpolate(x, scale_factor=self.scale, mode="bicubic", align_corners=False)
            return base + out
        return self.add_mean(out)


def edsr_baseline(
    *,
    scale: int,
    n_resblocks: int = 16,
    n_feats: int = 64,
    res_scale: float = 1.0,
    n_colors: int = 3,
    rgb_range: float = 1.0,
    bicubic_skip: bool = False,
) -> EDSR:
    """EDSR-baseline: 16 blocks, 64 features, no residual scaling (x4: 1.52 M parameters)."""
    return EDSR(
        scale=scale,
        n_resblocks=n_resblocks,
        n_feats=n_feats,
        res_scale=res_scale,
        n_colors=n_colors,
        rgb_range=rgb_range,
        bicubic_skip=bicubic_skip,
    )


def edsr(
    *,
    scale: int,
    n_resblocks: int = 32,
    n_feats: int = 256,
    res_scale: float = 0.1,
    n_colors: int = 3,
    rgb_range: float = 1.0,
    bicubic_skip: bool = False,
) -> EDSR:
    """Full EDSR: 32 blocks, 256 features, residual scaling 0.1 for stable training (x4: 43.1 M)."""
    return EDSR(
        scale=scale,
        n_resblocks=n_resblocks,
        n_feats=n_feats,
        res_scale=res_scale,
        n_colors=n_colors,
        rgb_range=rgb_range,
        bicubic_skip=bicubic_skip,
    )


edsr_baseline.check_args = check_residual_args  # type: ignore[attr-defined]
edsr.check_args = check_residual_args  # type: ignore[attr-defined]
