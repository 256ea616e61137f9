"""The networks the pretrained weights go into, built without downloading anything: LPIPS 0.1
(AlexNet or VGG16 trunk with the v0.1 linear heads) and pytorch-fid's FID InceptionV3. Loading
is strict: every tensor must fit."""

from __future__ import annotations

import contextlib
import sys
import warnings
from collections.abc import Mapping
from typing import Any

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
    import torch
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
    from pytorch_fid.inception import InceptionV3
    from torch import nn

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
