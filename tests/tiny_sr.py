"""Tiny basicsr-style networks and an ncnn exporter for them, written here from the format's
description so the converter is tested against files it did not write itself."""

from __future__ import annotations

import struct
from collections import Counter

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

FP16_TAG = 0x01306B47


def _conv(cin: int, cout: int) -> nn.Conv2d:
    return nn.Conv2d(cin, cout, 3, 1, 1)


class RDB(nn.Module):
    def __init__(self, nf: int, gc: int) -> None:
        super().__init__()
        for j in range(1, 5):
            setattr(self, f"conv{j}", _conv(nf + (j - 1) * gc, gc))
        self.conv5 = _conv(nf + 4 * gc, nf)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        feats = [x]
        for j in range(1, 5):
            feats.append(F.leaky_relu(getattr(self, f"conv{j}")(torch.cat(feats, 1)), 0.2))
        return self.conv5(torch.cat(feats, 1)) * 0.2 + x


class RRDB(nn.Module):
    def __init__(self, nf: int, gc: int) -> None:
        super().__init__()
        self.rdb1, self.rdb2, self.rdb3 = RDB(nf, gc), RDB(nf, gc), RDB(nf, gc)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.rdb3(self.rdb2(self.rdb1(x))) * 0.2 + x


class TinyRRDBNet(nn.Module):
    """basicsr's RRDBNet x4 (same key names and forward), any size."""

    def __init__(
        self, nb: int = 1, nf: int = 8, gc: int = 4, in_ch: int = 3, out_ch: int | None = None
    ) -> None:
        super().__init__()
        self.conv_first = _conv(in_ch, nf)
        self.body = nn.Sequential(*(RRDB(nf, gc) for _ in range(nb)))
        self.conv_body = _conv(nf, nf)
        self.conv_up1, self.conv_up2, self.conv_hr = _conv(nf, nf), _conv(nf, nf), _conv(nf, nf)
        self.conv_last = _conv(nf, out_ch or in_ch)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        feat = self.conv_first(x)
        feat = feat + self.conv_body(self.body(feat))
        for conv in (self.conv_up1, self.conv_up2):
            feat = F.leaky_relu(conv(F.interpolate(feat, scale_factor=2, mode="nearest")), 0.2)
        return self.conv_last(F.leaky_relu(self.conv_hr(feat), 0.2))


class TinySRVGG(nn.Module):
    """Real-ESRGAN's SRVGGNetCompact (PReLU), same key names and forward."""

    def __init__(self, nf: int = 5, num_conv: int = 2, scale: int = 2, in_ch: int = 3) -> None:
        super().__init__()
        self.scale = scale
        layers: list[nn.Module] = [_conv(in_ch, nf), nn.PReLU(nf)]
        for _ in range(num_conv):
            layers += [_conv(nf, nf), nn.PReLU(nf)]
        layers.append(_conv(nf, in_ch * scale * scale))
        self.body = nn.ModuleList(layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = x
        for layer in self.body:
            out = layer(out)
        out = F.pixel_shuffle(out, self.scale)
        return out + F.interpolate(x, scale_factor=self.scale, mode="nearest")


def randomize(model: nn.Module, seed: int) -> nn.Module:
    """Non-trivial weights (default init makes RRDB branches tiny) for a sharper comparison."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=gen) * 0.1)
    return model


class _Graph:
    """ncnn layers with blob names; Split layers are inserted where a blob has several readers."""

    def __init__(self) -> None:
        self.layers: list[list] = []  # [type, name, inputs, outputs, params]
        self.count = 0

    def add(self, kind: str, inputs: list[str], params: str = "", out: str = "") -> str:
        self.count += 1
        out = out or f"b{self.count}"
        self.layers.append([kind, f"{kind}_{self.count}", list(inputs), [out], params])
        return out

    def text(self) -> str:
        readers = Counter(b for layer in self.layers for b in layer[2])
        seen: Counter = Counter()
        lines = []
        for kind, name, inputs, outputs, params in self.layers:
            renamed = []
            for b in inputs:
                if readers[b] > 1:
                    renamed.append(f"{b}_s{seen[b]}")
                    seen[b] += 1
                else:
                    renamed.append(b)
            lines.append((kind, name, renamed, outputs, params))
            for b in outputs:
                if readers[b] > 1:
                    outs = [f"{b}_s{i}" for i in range(readers[b])]
                    lines.append(("Split", f"split_{b}", [b], outs, ""))
        blobs = {b for line in lines for b in line[3]}
        body = [
            f"{k:<16} {n:<16} {len(i)} {len(o)} {' '.join(i + o)} {p}".rstrip()
            for k, n, i, o, p in lines
        ]
        return "\n".join(["7767517", f"{len(lines)} {len(blobs)}", *body]) + "\n"


def _conv_layer(
    g: _Graph, blob: str, conv: nn.Conv2d, leaky: bool, fp16: bool, bins: list[bytes], out: str = ""
) -> str:
    w = conv.weight.detach().numpy().astype(np.float32)
    b = conv.bias.detach().numpy().astype(np.float32)
    params = f"0={w.shape[0]} 1=3 4=1 5=1 6={w.size}"
    if leaky:
        params += " 9=2 -23310=1,2.000000e-01"
    if fp16:
        data = w.astype("<f2").tobytes()
        data += b"\0" * (-len(data) % 4)
        bins.append(struct.pack("<I", FP16_TAG) + data)
    else:
        bins.append(struct.pack("<I", 0) + w.astype("<f4").tobytes())
    bins.append(b.astype("<f4").tobytes())
    return g.add("Convolution", [blob], params, out)


def round_fp16(model: nn.Module, every_other: bool = True) -> set[int]:
    """Round the weights of the convolutions that will be stored as fp16 (even indices)."""
    convs = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
    chosen = {i for i in range(len(convs)) if i % 2 == 0} if every_other else set()
    with torch.no_grad():
        for i in chosen:
            convs[i].weight.copy_(convs[i].weight.half().float())
    return chosen


def export_rrdbnet(model: TinyRRDBNet, fp16: set[int]) -> tuple[str, bytes]:
    """(.param text, .bin bytes) of `model`; convolutions numbered in `fp16` stored as fp16."""
    g, bins = _Graph(), []
    counter = iter(range(10_000))

    def conv(blob: str, module: nn.Conv2d, leaky: bool, out: str = "") -> str:
        return _conv_layer(g, blob, module, leaky, next(counter) in fp16, bins, out)

    x = g.add("Input", [], out="data")
    feat = conv(x, model.conv_first, False)
    h = feat
    for block in model.body:
        start = h
        for rdb in (block.rdb1, block.rdb2, block.rdb3):
            feats = [h]
            for j in range(1, 5):
                cat = g.add("Concat", feats) if len(feats) > 1 else feats[0]
                feats.append(conv(cat, getattr(rdb, f"conv{j}"), True))
            y = conv(g.add("Concat", feats), rdb.conv5, False)
            h = g.add("Eltwise", [y, h], "0=1 -23301=2,2.000000e-01,1.000000e+00")
        h = g.add("Eltwise", [h, start], "0=1 -23301=2,2.000000e-01,1.000000e+00")
    h = g.add("BinaryOp", [feat, conv(h, model.conv_body, False)])
    for up in (model.conv_up1, model.conv_up2):
        h = conv(g.add("Interp", [h], "0=1 1=2.000000e+00 2=2.000000e+00"), up, True)
    h = conv(h, model.conv_hr, True)
    conv(h, model.conv_last, False, out="output")
    return g.text(), b"".join(bins)


def export_srvgg(model: TinySRVGG, fp16: set[int]) -> tuple[str, bytes]:
    g, bins = _Graph(), []
    x = g.add("Input", [], out="data")
    h, index = x, 0
    for layer in model.body:
        if isinstance(layer, nn.Conv2d):
            h = _conv_layer(g, h, layer, False, index in fp16, bins)
            index += 1
        else:
            bins.append(layer.weight.detach().numpy().astype("<f4").tobytes())
            h = g.add("PReLU", [h], f"0={layer.weight.numel()}")
    h = g.add("PixelShuffle", [h], f"0={model.scale}")
    s = float(model.scale)
    up = g.add("Interp", [x], f"0=1 1={s:e} 2={s:e}")
    g.add("BinaryOp", [h, up], out="output")
    return g.text(), b"".join(bins)


def ncnn_forward(param: str, weights: str, x: np.ndarray, threads: int = 1) -> np.ndarray:
    """ncnn's own CPU inference in fp32 (x: (C, H, W) float32) on blobs ``data`` -> ``output``."""
    import ncnn

    net = ncnn.Net()
    for option in ("use_vulkan_compute", "use_fp16_storage", "use_fp16_packed",
                   "use_fp16_arithmetic", "use_bf16_storage", "use_int8_inference"):  # fmt: skip
        if hasattr(net.opt, option):
            setattr(net.opt, option, False)
    net.opt.num_threads = threads
    assert net.load_param(param) == 0, f"ncnn could not load {param}"
    assert net.load_model(weights) == 0, f"ncnn could not load {weights}"
    ex = net.create_extractor()
    ex.input("data", ncnn.Mat(np.ascontiguousarray(x, dtype=np.float32)))
    ret, out = ex.extract("output")
    assert ret == 0, f"ncnn extract failed ({ret})"
    result = np.array(out).copy()
    del ex, net
    return result
