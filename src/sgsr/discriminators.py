"""Discriminators for adversarial training (the ``gan`` loss term), in a registry like the
models': ESRGAN's VGG-style classifier of fixed-size patches and Real-ESRGAN's U-Net with
spectral normalisation, which scores every pixel. Both are built from params and trained from
scratch (no published discriminator weights are reachable).

Layers, key names and forward passes follow BasicSR's ``VGGStyleDiscriminator`` and
``UNetDiscriminatorSN``, so a state dict moves between the two code bases unchanged.
"""

from __future__ import annotations

import contextlib
import inspect
from collections.abc import Mapping
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.utils import spectral_norm


class VGGStyleDiscriminator(nn.Module):
    """ESRGAN's discriminator: five stride-2 stages of (3x3 conv, 4x4 stride-2 conv) with batch
    norm and LeakyReLU(0.2), then two linear layers to one logit per image.

    ``input_size`` is the HR patch side it accepts (128 in ESRGAN; BasicSR allows 128 and 256).
    Any multiple of 32 is accepted here so a test can run one on tiny patches; a patch of
    another size is an error naming both sizes, since the linear layer is sized for it.
    """

    def __init__(self, num_in_ch: int = 3, num_feat: int = 64, input_size: int = 128) -> None:
        super().__init__()
        if input_size < 32 or input_size % 32:
            raise ValueError(f"input_size must be a multiple of 32 (>= 32); got {input_size}")
        self.input_size = input_size
        nf = num_feat
        widths = [nf, nf * 2, nf * 4, nf * 8, nf * 8]  # stage i's channels
        self.conv0_0 = nn.Conv2d(num_in_ch, nf, 3, 1, 1, bias=True)
        self.conv0_1 = nn.Conv2d(nf, nf, 4, 2, 1, bias=False)
        self.bn0_1 = nn.BatchNorm2d(nf, affine=True)
        for i in range(1, 5):
            cin, cout = widths[i - 1], widths[i]
            setattr(self, f"conv{i}_0", nn.Conv2d(cin, cout, 3, 1, 1, bias=False))
            setattr(self, f"bn{i}_0", nn.BatchNorm2d(cout, affine=True))
            setattr(self, f"conv{i}_1", nn.Conv2d(cout, cout, 4, 2, 1, bias=False))
            setattr(self, f"bn{i}_1", nn.BatchNorm2d(cout, affine=True))
        side = input_size // 32
        self.linear1 = nn.Linear(nf * 8 * side * side, 100)
        self.linear2 = nn.Linear(100, 1)
        self.lrelu = nn.LeakyReLU(negative_slope=0.2, inplace=True)

    def forward(self, x: Tensor) -> Tensor:
        if x.shape[-2:] != (self.input_size, self.input_size):
            raise ValueError(
                f"the VGG-style discriminator takes {self.input_size} px patches; got "
                f"{tuple(x.shape[-2:])} (set its input_size to the HR patch side, "
                "train.lr_patch x scale)"
            )
        feat = self.lrelu(self.conv0_0(x))
        feat = self.lrelu(self.bn0_1(self.conv0_1(feat)))
        for i in range(1, 5):
            feat = self.lrelu(getattr(self, f"bn{i}_0")(getattr(self, f"conv{i}_0")(feat)))
            feat = self.lrelu(getattr(self, f"bn{i}_1")(getattr(self, f"conv{i}_1")(feat)))
        feat = self.lrelu(self.linear1(feat.flatten(1)))
        return self.linear2(feat)


class UNetDiscriminatorSN(nn.Module):
    """Real-ESRGAN's discriminator: a U-Net (three stride-2 convs down, bilinear x2 up with skip
    additions) with spectral norm on every inner conv; one logit per pixel. Patch sides must be
    multiples of 8."""

    def __init__(
        self, num_in_ch: int = 3, num_feat: int = 64, skip_connection: bool = True
    ) -> None:
        super().__init__()
        self.skip_connection = skip_connection
        nf = num_feat
        self.conv0 = nn.Conv2d(num_in_ch, nf, 3, 1, 1)
        self.conv1 = spectral_norm(nn.Conv2d(nf, nf * 2, 4, 2, 1, bias=False))
        self.conv2 = spectral_norm(nn.Conv2d(nf * 2, nf * 4, 4, 2, 1, bias=False))
        self.conv3 = spectral_norm(nn.Conv2d(nf * 4, nf * 8, 4, 2, 1, bias=False))
        self.conv4 = spectral_norm(nn.Conv2d(nf * 8, nf * 4, 3, 1, 1, bias=False))
        self.conv5 = spectral_norm(nn.Conv2d(nf * 4, nf * 2, 3, 1, 1, bias=False))
        self.conv6 = spectral_norm(nn.Conv2d(nf * 2, nf, 3, 1, 1, bias=False))
        self.conv7 = spectral_norm(nn.Conv2d(nf, nf, 3, 1, 1, bias=False))
        self.conv8 = spectral_norm(nn.Conv2d(nf, nf, 3, 1, 1, bias=False))
        self.conv9 = nn.Conv2d(nf, 1, 3, 1, 1)

    def forward(self, x: Tensor) -> Tensor:
        if x.shape[-1] % 8 or x.shape[-2] % 8:
            raise ValueError(
                f"the U-Net discriminator needs sides divisible by 8; got {tuple(x.shape[-2:])}"
            )

        def act(t: Tensor) -> Tensor:
            return F.leaky_relu(t, negative_slope=0.2, inplace=True)

        def up(t: Tensor) -> Tensor:
            return F.interpolate(t, scale_factor=2, mode="bilinear", align_corners=False)

        x0 = act(self.conv0(x))
        x1 = act(self.conv1(x0))
        x2 = act(self.conv2(x1))
        x3 = act(self.conv3(x2))
        x4 = act(self.conv4(up(x3)))
        if self.skip_connection:
            x4 = x4 + x2
        x5 = act(self.conv5(up(x4)))
        if self.skip_connection:
            x5 = x5 + x1
        x6 = act(self.conv6(up(x5)))
        if self.skip_connection:
            x6 = x6 + x0
        out = act(self.conv7(x6))
        out = act(self.conv8(out))
        return self.conv9(out)


#: The registry: a ``discriminator`` spec names one of these (``arch``) with its keyword options.
DISCRIMINATORS: dict[str, type[nn.Module]] = {
    "vgg128": VGGStyleDiscriminator,
    "unet_sn": UNetDiscriminatorSN,
}
#: ESRGAN's: the VGG-style discriminator on 128 px patches.
DEFAULT_DISCRIMINATOR = "vgg128"


def _split(spec: str | Mapping[str, Any]) -> tuple[str, dict[str, Any]]:
    if isinstance(spec, str):
        return spec, {}
    if not isinstance(spec, Mapping) or "arch" not in spec:
        raise ValueError(
            f"discriminator must be a name ({', '.join(DISCRIMINATORS)}) or a mapping with an "
            f"arch key and its options; got {spec!r}"
        )
    return str(spec["arch"]), {k: v for k, v in spec.items() if k != "arch"}


def discriminator_options(arch: str) -> list[str]:
    """Keyword options a ``discriminator`` spec may give for `arch`."""
    return sorted(inspect.signature(DISCRIMINATORS[arch]).parameters)


def build_discriminator(
    spec: str | Mapping[str, Any], device: torch.device | str | None = None
) -> nn.Module:
    """The discriminator `spec` names (``vgg128`` or ``{arch: vgg128, num_feat: 32, ...}``).

    ``device="meta"`` checks a spec without allocating or drawing random numbers (params
    validation); a real build draws its initial weights from torch's global generator, so the
    trainer builds it after seeding. Bad names and options raise ValueError naming them.
    """
    arch, options = _split(spec)
    if arch not in DISCRIMINATORS:
        raise ValueError(f"unknown discriminator {arch!r}; known: {', '.join(DISCRIMINATORS)}")
    known = discriminator_options(arch)
    unknown = [k for k in options if k not in known]
    if unknown:
        raise ValueError(
            f"discriminator {arch}: unknown option {unknown[0]!r}; allowed: {', '.join(known)}"
        )
    for key, value in options.items():
        if key in ("num_in_ch", "num_feat", "input_size") and (
            isinstance(value, bool) or not isinstance(value, int) or value <= 0
        ):
            raise ValueError(
                f"discriminator {arch}: {key} must be a positive integer; got {value!r}"
            )
    with torch.device(device) if device is not None else contextlib.nullcontext():
        return DISCRIMINATORS[arch](**options)


def discriminator_patch(spec: str | Mapping[str, Any]) -> int | None:
    """The HR patch side `spec` requires (VGG-style: its input_size), or None (any size)."""
    arch, options = _split(spec)
    if arch == "vgg128":
        return int(options.get("input_size", 128))
    return None
