"""The networks the pretrained weights go into, built without downloading anything: LPIPS 0.1
(AlexNet or VGG16 trunk with the v0.1 linear heads) and pytorch-fid's FID InceptionV3. Loading
is strict: every tensor must fit."""

from __future__ import annotations

import contextlib
import sys
import warnings
from collections.abc import Mapping
from typing import Any

import numpy as np
import torch
from torch import nn

from sgsr.pretrained.errors import WeightsUnavailable

#: lpips' slice boundaries in ``features`` (slice k holds indices [b_k, b_k+1)).
LPIPS_SLICES: dict[str, tuple[int, ...]] = {
    "alex": (0, 2, 5, 8, 10, 12),
    "vgg": (0, 4, 9, 16, 23, 30),
}


def load_strict(
    module: Any, state: Mapping[str, Any], what: str, ignore: tuple[str, ...] = ()
) -> None:
    """load_state_dict that tolerates only keys ending in `ignore` missing, nothing extra."""
    result = module.load_state_dict(dict(state), strict=False)
    missing = [k for k in result.missing_keys if not k.endswith(ignore)]
    if missing or result.unexpected_keys:
        raise WeightsUnavailable(
            f"{what}: tensors do not fit the network (missing {missing[:3]}, unexpected "
            f"{list(result.unexpected_keys)[:3]})"
        )


@contextlib.contextmanager
def quiet() -> Any:
    """Keep library prints and torchvision's deprecation warnings off stdout (``--json``)."""
    with warnings.catch_warnings(), contextlib.redirect_stdout(sys.stderr):
        warnings.simplefilter("ignore", UserWarning)
        yield


def lpips_network(net: str, tensors: Mapping[str, Any] | None) -> Any:
    """``lpips.LPIPS`` 0.1 with trunk `net` ('alex' | 'vgg') and heads from `tensors` (our
    layout: ``features.<i>.*`` and ``lin<k>.weight``), strictly; None = random (plumbing only).

    Built with ``pretrained=False, pnet_rand=True`` so the package neither downloads a trunk
    nor unpickles its own heads; every parameter then comes from our file.
    """
    # lpips (imports torchvision's models): only LPIPS builds it
    import lpips as lpips_pkg

    with quiet():
        model = lpips_pkg.LPIPS(
            net=net, version="0.1", pretrained=False, pnet_rand=True, verbose=False
        )
    if tensors is not None:
        bounds = LPIPS_SLICES[net]
        state = {}
        for key, value in tensors.items():
            if key.startswith("features."):
                i = int(key.split(".")[1])
                k = next(k for k in range(5) if bounds[k] <= i < bounds[k + 1]) + 1
                state[f"net.slice{k}.{i}.{key.split('.', 2)[2]}"] = value
            elif key.startswith("lin"):  # lpips registers each head twice: lin<k>, lins.<k>
                k = int(key.split(".")[0][3:])
                state[f"lin{k}.model.1.weight"] = state[f"lins.{k}.model.1.weight"] = value
            else:
                state[key] = value
        load_strict(
            model, state, f"LPIPS {net}", ignore=("scaling_layer.shift", "scaling_layer.scale")
        )
    return model.eval().requires_grad_(False)


def fid_inception() -> Any:
    """pytorch-fid's FID Inception (torchvision InceptionV3 with pytorch-fid's FIDInceptionA/C/
    E_1/E_2 blocks, 1008 classes, no aux head), built here because pytorch-fid's own
    ``fid_inception_v3`` downloads its weights. The unused ``fc`` is removed."""
    # pytorch-fid (imports scipy and torchvision): only FID loads it
    from pytorch_fid import inception as pf

    with quiet():
        net = pf._inception_v3(num_classes=1008, aux_logits=False, weights=None)
    net.Mixed_5b = pf.FIDInceptionA(192, pool_features=32)
    net.Mixed_5c = pf.FIDInceptionA(256, pool_features=64)
    net.Mixed_5d = pf.FIDInceptionA(288, pool_features=64)
    net.Mixed_6b = pf.FIDInceptionC(768, channels_7x7=128)
    net.Mixed_6c = pf.FIDInceptionC(768, channels_7x7=160)
    net.Mixed_6d = pf.FIDInceptionC(768, channels_7x7=160)
    net.Mixed_6e = pf.FIDInceptionC(768, channels_7x7=192)
    net.Mixed_7b = pf.FIDInceptionE_1(1280)
    net.Mixed_7c = pf.FIDInceptionE_2(2048)
    net.fc = torch.nn.Identity()
    return net


def fid_wrapper_class() -> type:
    # pytorch-fid (imports scipy and torchvision): only FID loads it
    from pytorch_fid.inception import InceptionV3

    class FIDInceptionV3(InceptionV3):
        """pytorch-fid's ``InceptionV3`` (its forward: bilinear resize to 299, [0, 1] -> [-1, 1],
        the blocks up to the last requested) over an Inception we built and loaded ourselves.
        ``InceptionV3.__init__`` is skipped because it would download; the blocks are
        assembled exactly as it does."""

        def __init__(self, inception: nn.Module, output_blocks: tuple[int, ...]) -> None:
            nn.Module.__init__(self)
            self.resize_input = True
            self.normalize_input = True
            self.output_blocks = sorted(output_blocks)
            self.last_needed_block = max(output_blocks)
            i = inception
            blocks = [
                [
                    i.Conv2d_1a_3x3,
                    i.Conv2d_2a_3x3,
                    i.Conv2d_2b_3x3,
                    nn.MaxPool2d(kernel_size=3, stride=2),
                ],
                [i.Conv2d_3b_1x1, i.Conv2d_4a_3x3, nn.MaxPool2d(kernel_size=3, stride=2)],
                [
                    i.Mixed_5b,
                    i.Mixed_5c,
                    i.Mixed_5d,
                    i.Mixed_6a,
                    i.Mixed_6b,
                    i.Mixed_6c,
                    i.Mixed_6d,
                    i.Mixed_6e,
                ],
                [i.Mixed_7a, i.Mixed_7b, i.Mixed_7c, nn.AdaptiveAvgPool2d(output_size=(1, 1))],
            ]
            self.blocks = nn.ModuleList(
                nn.Sequential(*b) for b in blocks[: self.last_needed_block + 1]
            )
            self.requires_grad_(False)

    return FIDInceptionV3


#: VGG16 ``features`` indices of DISTS' five stages (each after the first opens with an L2
#: pooling in place of VGG's max pooling at that index).
DISTS_STAGES = ((0, 4), (4, 9), (9, 16), (16, 23), (23, 30))


def dists_network(trunk: Mapping[str, Any] | None, weights: Mapping[str, Any] | None) -> Any:
    """DISTS (Ding et al. 2020) as ``DISTS_pytorch`` 0.1 builds it: torchvision's VGG16
    ``features[:30]`` with its max poolings replaced by Hanning-window L2 poolings, ImageNet
    normalisation, and the learned ``alpha``/``beta``. `trunk`: ``features.<i>.*`` tensors
    (lpips_vgg's, the same ImageNet VGG16); `weights`: ``alpha`` and ``beta``. None = random
    (plumbing only)."""
    # torchvision: only DISTS builds a network from it
    import torchvision

    class L2Pooling(nn.Module):
        def __init__(self, channels: int) -> None:
            super().__init__()
            a = np.hanning(5)[1:-1]
            g = torch.tensor(a[:, None] * a[None, :], dtype=torch.float32)
            self.register_buffer("filter", (g / g.sum())[None, None].repeat(channels, 1, 1, 1))

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            out = nn.functional.conv2d(x**2, self.filter, stride=2, padding=1, groups=x.shape[1])
            return (out + 1e-12).sqrt()

    class DISTS(nn.Module):
        chns = (3, 64, 128, 256, 512, 512)

        def __init__(self) -> None:
            super().__init__()
            with quiet():
                vgg = torchvision.models.vgg16(weights=None).features
            if trunk is not None:
                state = {k.removeprefix("features."): v for k, v in trunk.items()
                         if k.startswith("features.")}  # fmt: skip
                load_strict(vgg, state, "DISTS VGG16 trunk")
            stages = []
            for k, (lo, hi) in enumerate(DISTS_STAGES):
                layers = [L2Pooling(self.chns[k])] if k else []
                layers += [vgg[i] for i in range(lo + (1 if k else 0), hi)]
                stages.append(nn.Sequential(*layers))
            self.stages = nn.ModuleList(stages)
            self.register_buffer("mean", torch.tensor([0.485, 0.456, 0.406]).view(1, -1, 1, 1))
            self.register_buffer("std", torch.tensor([0.229, 0.224, 0.225]).view(1, -1, 1, 1))
            n = sum(self.chns)
            if weights is None:
                alpha = torch.full((1, n, 1, 1), 0.1)
                beta = torch.full((1, n, 1, 1), 0.1)
            else:
                alpha, beta = weights["alpha"].float(), weights["beta"].float()
            self.register_buffer("alpha", alpha.reshape(1, n, 1, 1).clone())
            self.register_buffer("beta", beta.reshape(1, n, 1, 1).clone())

        def features(self, x: torch.Tensor) -> list[torch.Tensor]:
            """The image and the five stages' maps of `x` (N, 3, H, W) in [0, 1]."""
            h = (x - self.mean) / self.std
            out = [x]
            for stage in self.stages:
                h = stage(h)
                out.append(h)
            return out

        def compare(self, f0: list[torch.Tensor], f1: list[torch.Tensor]) -> torch.Tensor:
            """DISTS (N,) from two images' :meth:`features`: 1 - the weighted sum of each
            channel's luminance and structure similarities (c1 = c2 = 1e-6)."""
            c1 = c2 = 1e-6
            w_sum = self.alpha.sum() + self.beta.sum()
            alpha = torch.split(self.alpha / w_sum, list(self.chns), dim=1)
            beta = torch.split(self.beta / w_sum, list(self.chns), dim=1)
            dist1 = dist2 = 0
            for k in range(len(self.chns)):
                x_mean = f0[k].mean([2, 3], keepdim=True)
                y_mean = f1[k].mean([2, 3], keepdim=True)
                s1 = (2 * x_mean * y_mean + c1) / (x_mean**2 + y_mean**2 + c1)
                dist1 = dist1 + (alpha[k] * s1).sum(1, keepdim=True)
                x_var = ((f0[k] - x_mean) ** 2).mean([2, 3], keepdim=True)
                y_var = ((f1[k] - y_mean) ** 2).mean([2, 3], keepdim=True)
                xy_cov = (f0[k] * f1[k]).mean([2, 3], keepdim=True) - x_mean * y_mean
                s2 = (2 * xy_cov + c2) / (x_var + y_var + c2)
                dist2 = dist2 + (beta[k] * s2).sum(1, keepdim=True)
            return 1 - (dist1 + dist2).flatten()

        def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
            return self.compare(self.features(x), self.features(y))

    return DISTS().eval().requires_grad_(False)
