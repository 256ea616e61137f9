"""SRResNet (Ledig et al., CVPR 2017), the generator of SRGAN trained with a pixel loss.

Departures from the paper, stated so numbers are read right:
- no batch norm: following EDSR's observation that BN removes range flexibility and costs memory
  in SR, the residual blocks are conv-PReLU-conv (the paper has conv-BN-PReLU-conv-BN), and the
  conv after the blocks has no BN either;
- PReLU with one shared slope per activation layer (nn.PReLU() default, as common PyTorch
  ports do), in the blocks, after the 9x9 head and after every pixel shuffle;
- inputs and outputs in [0, rgb_range] with EDSR's DIV2K mean shift, like the other models here
  (the paper maps HR to [-1, 1]); x3 is one x3 shuffle stage, as in EDSR.
"""

from __future__ import annotations

from torch import nn

from sgsr.models.common import (
    MeanShiftedSR,
    ResBlock,
    Upsampler,
    check_residual_args,
    default_conv,
)


class SRResNet(MeanShiftedSR):
    """SRResNet without BN: 9x9 head, `n_resblocks` residual blocks, conv + global skip,
    sub-pixel upsampling with PReLU, 9x9 reconstruction conv."""

    def __init__(
        self,
        *,
        scale: int,
        n_resblocks: int = 16,
        n_feats: int = 64,
        res_scale: float = 1.0,
        n_colors: int = 3,
        rgb_range: float = 1.0,
    ) -> None:
        check_residual_args(
            scale=scale,
            n_resblocks=n_resblocks,
            n_feats=n_feats,
            res_scale=res_scale,
            n_colors=n_colors,
            rgb_range=rgb_range,
        )
        super().__init__(scale=scale, n_colors=n_colors, rgb_range=rgb_range)
        res_scale = float(res_scale)
        self.head = nn.Sequential(default_conv(self.n_colors, n_feats, 9), nn.PReLU())
        self.body = nn.Sequential(
            *[ResBlock(n_feats, 3, res_scale=res_scale, act=nn.PReLU) for _ in range(n_resblocks)],
            default_conv(n_feats, n_feats, 3),
        )
        self.tail = nn.Sequential(
            Upsampler(self.scale, n_feats, act=nn.PReLU), default_conv(n_feats, self.n_colors, 9)
        )

    #: Validation hook (sgsr.models.check_model_args): the same checks, nothing built.
    check_args = staticmethod(check_residual_args)
