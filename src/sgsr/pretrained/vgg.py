"""ImageNet VGG trunks for the perceptual training loss: torchvision's VGG16 (the trunk inside
the verified ``lpips_vgg`` file, which the download stage already obtains) or a user's own copy
of torchvision's VGG19 file, verified against its published sha256.

ESRGAN's perceptual loss uses VGG19, whose ImageNet weights no reachable package ships, hence
VGG16 by default (docs/training.md states the deviation). Layers are named as in BasicSR
(``conv5_3``): the convolution's output, before its ReLU.
"""

from __future__ import annotations

import hashlib
import io
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from sgsr.pretrained.errors import WeightsUnavailable
from sgsr.pretrained.loaders import verified_tensors

#: Channels per conv layer, "M" a 2x2 max-pool (torchvision's cfgs "D" and "E").
VGG_CONFIGS: dict[str, tuple[int | str, ...]] = {
    "vgg16": (64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M",
              512, 512, 512, "M"),
    "vgg19": (64, 64, "M", 128, 128, "M", 256, 256, 256, 256, "M", 512, 512, 512, 512, "M",
              512, 512, 512, 512, "M"),
}  # fmt: skip
#: torchvision's published ``vgg19-dcbb9e9d.pth`` (download.pytorch.org): size and sha256.
VGG19_FILE = "vgg19-dcbb9e9d.pth"
VGG19_SHA256 = "dcbb9e9dad569fff7a846263a77324fc34978fea2bfb039c012d710e1776ae44"
VGG19_BYTES = 574_673_361


def layer_names(net: str) -> dict[str, int]:
    """``conv<block>_<k>`` -> its index in torchvision's ``features``."""
    names: dict[str, int] = {}
    block, k = 1, 0
    for i, item in enumerate(_features_layout(net)):
        if item == "conv":
            k += 1
            names[f"conv{block}_{k}"] = i
        elif item == "pool":
            block, k = block + 1, 0
    return names


def _features_layout(net: str) -> list[str]:
    layout: list[str] = []
    for c in VGG_CONFIGS[net]:
        layout += ["pool"] if c == "M" else ["conv", "relu"]
    return layout


def vgg_features(net: str, last: int) -> Any:
    """torchvision's ``vgg<N>().features[: last + 1]`` without building the classifier."""
    layers: list[nn.Module] = []
    cin = 3
    for c in VGG_CONFIGS[net]:
        if c == "M":
            layers.append(nn.MaxPool2d(kernel_size=2, stride=2))
        else:
            layers += [nn.Conv2d(cin, int(c), kernel_size=3, padding=1), nn.ReLU()]
            cin = int(c)
    return nn.Sequential(*layers[: last + 1])


def vgg19_path(file: str | os.PathLike[str] | None = None) -> Path:
    """Where ``perceptual: {network: vgg19}`` reads torchvision's VGG19 file: `file` when given
    (relative to the working folder, the pipeline folder under DVC), else torch hub's
    checkpoint folder, where ``torchvision.models.vgg19(weights=...)`` keeps it."""
    if file is not None:
        return Path(file)

    return Path(torch.hub.get_dir()) / "checkpoints" / VGG19_FILE


def vgg_tensors(
    net: str,
    pretrained_dir: str | os.PathLike[str] | None,
    vgg19_file: str | os.PathLike[str] | None = None,
) -> dict[str, Any]:
    """``features.<i>.weight/bias`` of `net` from verified files; WeightsUnavailable names the
    file and what to do when it is absent or not the pinned one."""
    if net == "vgg16":
        tensors = verified_tensors("lpips_vgg", pretrained_dir)
        return {k: v for k, v in tensors.items() if k.startswith("features.")}
    if net != "vgg19":
        raise ValueError(f"unknown VGG {net!r}; known: {', '.join(VGG_CONFIGS)}")

    path = vgg19_path(vgg19_file)
    if not path.is_file():
        raise WeightsUnavailable(
            f"{path} not found: perceptual network vgg19 reads torchvision's {VGG19_FILE} "
            f"(sha256 {VGG19_SHA256}); give its path as vgg19_file, or use network: vgg16 "
            "(the default)"
        )
    data = path.read_bytes()
    got = hashlib.sha256(data).hexdigest()
    if got != VGG19_SHA256:
        raise WeightsUnavailable(
            f"{path}: sha256 {got[:12]}... is not torchvision's {VGG19_FILE} "
            f"({VGG19_SHA256[:12]}...); use the published file"
        )
    state = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    return {k: v.float() for k, v in state.items() if k.startswith("features.")}


def load_vgg_features(
    net: str,
    last: int,
    pretrained_dir: str | os.PathLike[str] | None,
    vgg19_file: str | os.PathLike[str] | None = None,
) -> Any:
    """The frozen, eval-mode trunk of `net` up to ``features[last]`` with verified weights."""
    model = vgg_features(net, last)
    tensors = vgg_tensors(net, pretrained_dir, vgg19_file)
    own = model.state_dict()  # keys "<i>.weight": the features' own indices
    missing = [f"features.{k}" for k in own if f"features.{k}" not in tensors]
    if missing:
        raise WeightsUnavailable(f"{net} weights lack {missing[:3]}")
    model.load_state_dict({k: tensors[f"features.{k}"] for k in own}, strict=True)
    return model.eval().requires_grad_(False)


def check_layers(net: str, layers: Sequence[str]) -> None:
    """ValueError naming an unknown layer and the known ones."""
    known = layer_names(net)
    for name in layers:
        if name not in known:
            raise ValueError(f"{net} has no layer {name!r}; layers: {', '.join(known)}")
