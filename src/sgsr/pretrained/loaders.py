"""Loading pretrained weights for evaluation and training: safetensors only (no pickle),
checked against the pin on every load (the digest of an unchanged file comes from
`sgsr.hashcache`); nothing is ever downloaded here. A weight that is absent
or not the pinned file raises WeightsUnavailable with the reason (the manifest's, when the
download stage could not get it)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from safetensors.torch import load as load_safetensors

from sgsr.hashcache import read_with_sha256
from sgsr.pretrained.errors import WeightsUnavailable
from sgsr.pretrained.manifest import MANIFEST_NAME, load_manifest
from sgsr.pretrained.networks import (
    dists_network,
    fid_inception,
    fid_wrapper_class,
    load_strict,
    lpips_network,
)
from sgsr.pretrained.registry import WEIGHTS, weight_path


def verified_tensors(name: str, pretrained_dir: str | os.PathLike[str] | None) -> dict[str, Any]:
    """The tensors of weight `name` from ``<pretrained_dir>/<file>`` once its bytes hash to the
    pin in `WEIGHTS`. Raises WeightsUnavailable with the reason otherwise (the manifest's
    reason when the download stage could not get the file)."""
    if name not in WEIGHTS:
        raise KeyError(f"unknown pretrained weight {name!r}; known: {', '.join(WEIGHTS)}")
    weight = WEIGHTS[name]
    if pretrained_dir is None:
        raise WeightsUnavailable(
            f"no pretrained-weights folder given (need {weight.filename}; pass --pretrained "
            "models/pretrained)"
        )
    path = Path(pretrained_dir) / weight.filename
    try:
        data, got = read_with_sha256(path)
    except FileNotFoundError:
        raise WeightsUnavailable(
            f"{path} not found: {_absent_reason(name, Path(pretrained_dir))}"
        ) from None
    if got != weight.sha256:
        raise WeightsUnavailable(
            f"{path}: sha256 {got[:12]}... differs from the pinned {weight.sha256[:12]}... "
            "(corrupt or replaced file: delete it and run `sgsr download`)"
        )
    return load_safetensors(data)


def _absent_reason(name: str, folder: Path) -> str:
    try:
        entry = load_manifest(folder / MANIFEST_NAME).get(name)
    except (FileNotFoundError, ValueError) as exc:
        return str(exc)
    if entry is None:
        return f"{folder / MANIFEST_NAME} has no entry for {name}; run `sgsr download`"
    if not entry.get("present"):
        return f"the download stage could not get it: {entry.get('reason') or 'no reason recorded'}"
    return "the manifest says present but the file is gone; run `sgsr download`"


def load_lpips(
    pretrained_dir: str | os.PathLike[str] | None,
    net: str = "alex",
    *,
    random_backbone: bool = False,
) -> Any:
    """LPIPS 0.1 (`net` 'alex' for the metric, 'vgg' for the loss) from the verified
    safetensors file; ``random_backbone=True`` builds random weights for plumbing tests only."""
    name = {"alex": "lpips_alex", "vgg": "lpips_vgg"}[net]
    tensors = None if random_backbone else verified_tensors(name, pretrained_dir)
    model = lpips_network(net, tensors)
    model.sgsr_weights = (
        "random backbone (plumbing only)"
        if random_backbone
        else str(weight_path(name, pretrained_dir or "."))
    )
    return model


def load_fid_inception(
    pretrained_dir: str | os.PathLike[str] | None,
    *,
    random_backbone: bool = False,
    dims: int = 2048,
) -> Any:
    """pytorch-fid's InceptionV3 feature extractor (`dims` 64, 192, 768 or 2048 = pool3) with
    the verified FID Inception weights, loaded strictly (only batch-norm counters may be
    absent). ``random_backbone=True``: random weights, plumbing tests only."""
    # pytorch-fid (imports scipy and torchvision): only FID loads it
    from pytorch_fid.inception import InceptionV3

    if dims not in InceptionV3.BLOCK_INDEX_BY_DIM:
        raise ValueError(f"FID dims must be one of {list(InceptionV3.BLOCK_INDEX_BY_DIM)}")
    inception = fid_inception()
    if random_backbone:
        source = "random backbone (plumbing only)"
    else:
        load_strict(
            inception, verified_tensors("fid_inception", pretrained_dir), "FID Inception",
            ignore=("num_batches_tracked",),
        )  # fmt: skip
        source = str(weight_path("fid_inception", pretrained_dir or "."))
    net = fid_wrapper_class()(inception, (InceptionV3.BLOCK_INDEX_BY_DIM[dims],))
    net.sgsr_weights = source
    net.sgsr_dims = dims
    return net.eval()


def load_dists(
    pretrained_dir: str | os.PathLike[str] | None, *, random_backbone: bool = False
) -> Any:
    """DISTS from two verified files: the VGG16 trunk of ``lpips_vgg.safetensors`` (ImageNet
    VGG16, as DISTS uses) and alpha/beta of ``dists.safetensors``. ``random_backbone=True``:
    random trunk, uniform alpha/beta, plumbing tests only."""
    if random_backbone:
        net = dists_network(None, None)
        net.sgsr_weights = "random backbone (plumbing only)"
        return net
    trunk = verified_tensors("lpips_vgg", pretrained_dir)
    net = dists_network(trunk, verified_tensors("dists", pretrained_dir))
    net.sgsr_weights = str(weight_path("dists", pretrained_dir or "."))
    return net
