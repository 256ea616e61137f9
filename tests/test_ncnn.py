"""ncnn reader and ncnn -> basicsr conversion on tiny models written here (no network)."""

from __future__ import annotations

import struct
from pathlib import Path

import numpy as np
import pytest
import torch
from tiny_sr import (
    TinyRRDBNet,
    TinySRVGG,
    export_rrdbnet,
    export_srvgg,
    ncnn_forward,
    randomize,
    round_fp16,
)

from sgsr.ncnn import NcnnFormatError, parse_param, parse_param_text, read_bin
from sgsr.pretrained.realesrgan import state_dict_from_ncnn

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def rrdb() -> tuple[TinyRRDBNet, str, bytes]:
    torch.manual_seed(0)
    model = randomize(TinyRRDBNet(nb=2, nf=8, gc=4), seed=1).eval()
    text, data = export_rrdbnet(model, round_fp16(model))
    return model, text, data


@pytest.fixture(scope="module")
def srvgg() -> tuple[TinySRVGG, str, bytes]:
    # nf=5: 3*5*9 = 135 fp16 values, an odd count, so the 4-byte alignment padding is exercised
    model = randomize(TinySRVGG(nf=5, num_conv=2, scale=2), seed=2).eval()
    text, data = export_srvgg(model, round_fp16(model))
    return model, text, data


def _write(tmp_path: Path, text: str, data: bytes) -> tuple[Path, Path]:
    param, weights = tmp_path / "m.param", tmp_path / "m.bin"
    param.write_text(text)
    weights.write_bytes(data)
    return param, weights


# ---------------------------------------------------------------------------------------------
# exact conversion
# ---------------------------------------------------------------------------------------------
def test_rrdbnet_conversion_is_exact_with_fp16_and_fp32_weights(rrdb) -> None:
    model, text, data = rrdb
    assert text.count(" 1=3 ") == 6 + 15 * 2
    flags = {struct.unpack_from("<I", data, 0)[0]}
    assert 0x01306B47 in flags  # conv_first is stored as fp16
    state = state_dict_from_ncnn(text, data, "rrdbnet")
    reference = model.state_dict()
    assert list(state) == list(reference)  # same keys, same order as basicsr's module tree
    for key, value in reference.items():
        assert state[key].dtype == torch.float32
        assert torch.equal(state[key], value), key
    rebuilt = TinyRRDBNet(nb=2, nf=8, gc=4).eval()
    rebuilt.load_state_dict(state, strict=True)
    x = torch.rand(1, 3, 6, 5)
    with torch.no_grad():
        assert torch.equal(rebuilt(x), model(x))


def test_srvgg_conversion_is_exact_including_prelu_and_odd_fp16_padding(srvgg) -> None:
    model, text, data = srvgg
    state = state_dict_from_ncnn(text, data, "srvgg")
    reference = model.state_dict()
    assert set(state) == set(reference)
    assert all(torch.equal(state[k], v) for k, v in reference.items())


@pytest.mark.parametrize("kind", ["rrdb", "srvgg"])
def test_the_synthetic_files_are_what_ncnn_itself_computes(kind, rrdb, srvgg, tmp_path) -> None:
    """The test's exporter follows the real format: ncnn's own inference equals the model."""
    pytest.importorskip("ncnn", reason="ncnn (dev extra) is not installed")
    model, text, data = rrdb if kind == "rrdb" else srvgg
    param, weights = _write(tmp_path, text, data)
    x = np.random.default_rng(3).random((3, 7, 9), dtype=np.float32)
    got = ncnn_forward(str(param), str(weights), x)
    with torch.no_grad():
        want = model(torch.from_numpy(x)[None])[0].numpy()
    assert got.shape == want.shape
    assert np.abs(got - want).max() < 1e-5


def test_parse_param_reads_arrays_floats_and_the_blob_graph(rrdb, tmp_path) -> None:
    _, text, data = rrdb
    param, weights = _write(tmp_path, text, data)
    layers = parse_param(param)
    conv = next(layer for layer in layers if layer.type == "Convolution" and 9 in layer.params)
    assert conv.params[10] == (0.2,) and conv.params[9] == 2 and isinstance(conv.params[0], int)
    elt = next(layer for layer in layers if layer.type == "Eltwise")
    assert elt.params[1] == (0.2, 1.0)
    arrays = read_bin(layers, weights, str(param))
    assert sum(a.size for blobs in arrays.values() for a in blobs.values()) == sum(
        p.numel() for p in rrdb[0].parameters()
    )


# ---------------------------------------------------------------------------------------------
# refusals: each names the file and the layer
# ---------------------------------------------------------------------------------------------
def _first_conv_line(text: str) -> str:
    return next(line for line in text.splitlines() if line.startswith("Convolution"))


def test_bad_magic_is_refused_naming_the_file(rrdb, tmp_path) -> None:
    _, text, data = rrdb
    param, _ = _write(tmp_path, text.replace("7767517", "7767518", 1), data)
    with pytest.raises(NcnnFormatError, match=r"m\.param: not an ncnn text \.param"):
        parse_param(param)


def test_truncated_bin_names_the_layer_and_sizes(rrdb, tmp_path) -> None:
    _, text, data = rrdb
    param, weights = _write(tmp_path, text, data[:-10])
    with pytest.raises(NcnnFormatError, match=r"m\.bin: truncated: layer 'Convolution_\d+'"):
        read_bin(parse_param(param), weights, str(param))


def test_trailing_bytes_are_refused(rrdb, tmp_path) -> None:
    _, text, data = rrdb
    param, weights = _write(tmp_path, text, data + b"\0" * 8)
    with pytest.raises(NcnnFormatError, match="8 trailing bytes"):
        read_bin(parse_param(param), weights, str(param))


@pytest.mark.parametrize("tag", [0x000D4B38, 0x0002C056, 0x00000100])
def test_unknown_storage_flag_is_refused(tag, rrdb) -> None:
    """int8, scaled fp32 and quantised-table tags cannot be converted exactly."""
    _, text, data = rrdb
    bad = struct.pack("<I", tag) + data[4:]
    with pytest.raises(NcnnFormatError, match=f"Convolution_2.*flag 0x{tag:08X}"):
        state_dict_from_ncnn(text, bad, "rrdbnet", "m.param", "m.bin")


def test_non_finite_weights_are_refused(srvgg) -> None:
    _, text, data = srvgg
    # the first convolution is fp16: overwrite its first value with fp16 +inf (0x7C00)
    bad = data[:4] + b"\x00\x7c" + data[6:]
    with pytest.raises(NcnnFormatError, match=r"Convolution_2.*non-finite"):
        state_dict_from_ncnn(text, bad, "srvgg", "m.param", "m.bin")


def test_param_that_does_not_describe_the_architecture_is_refused(rrdb) -> None:
    """Same bytes, but one convolution lost its fused leaky ReLU: not an RRDBNet any more."""
    _, text, data = rrdb
    lines = text.splitlines()
    i = next(i for i, line in enumerate(lines) if "9=2" in line)
    lines[i] = lines[i].replace(" 9=2 -23310=1,2.000000e-01", "")
    with pytest.raises(NcnnFormatError, match=r"should be body\.0\.rdb1\.conv1 .*act 0"):
        state_dict_from_ncnn("\n".join(lines), data, "rrdbnet")


def test_weight_size_inconsistent_with_the_shape_is_refused(rrdb) -> None:
    _, text, data = rrdb
    line = _first_conv_line(text)
    bad = text.replace(line, line.replace("6=216", "6=217"))
    with pytest.raises(NcnnFormatError, match="weight_data_size=217"):
        state_dict_from_ncnn(bad, data, "rrdbnet")


def test_wrong_architecture_for_the_graph_is_refused(srvgg) -> None:
    _, text, data = srvgg
    with pytest.raises(NcnnFormatError, match="is not an RRDBNet"):
        state_dict_from_ncnn(text, data, "rrdbnet")


def test_graph_operations_are_checked_not_only_the_convolutions(rrdb) -> None:
    _, text, data = rrdb
    residual = "-23301=2,2.000000e-01,1.000000e+00"
    scaled = text.replace(residual, "-23301=2,3.000000e-01,1.000000e+00", 1)
    with pytest.raises(NcnnFormatError, match=r"m\.param line \d+: Eltwise layer 'Eltwise_\d+'"):
        state_dict_from_ncnn(scaled, data, "rrdbnet", "m.param")
    bilinear = text.replace("0=1 1=2.0", "0=2 1=2.0", 1)
    with pytest.raises(NcnnFormatError, match="Interp layer"):
        state_dict_from_ncnn(bilinear, data, "rrdbnet", "m.param")
    extra = text.replace("BinaryOp ", "Sigmoid  ", 1)
    with pytest.raises(NcnnFormatError, match=r"BinaryOp: 0 \(expected 1\); unexpected .*Sigmoid"):
        state_dict_from_ncnn(extra, data, "rrdbnet", "m.param")


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda t: t.replace("Interp ", "Deconvolution ", 1), "type 'Deconvolution'"),
        (lambda t: t.replace("\n12 13\n", "\n13 13\n"), "declares 13 layers but the file has 12"),
        (lambda t: t.replace("\n12 13\n", "\n12 14\n"), "declares 14 blobs"),
        (lambda t: t.replace("1 1 b3 b4", "1 1 zz b4"), "reads blob 'zz' that no earlier layer"),
        (lambda t: t.replace("0=5 1=3", "0=five 1=3", 1), "'five' is not a number"),
        (lambda t: t.replace("1 1 b2 b3 0=5", "1 1 b2 b3 0=5 0=5"), "sets parameter 0 twice"),
    ],
)
def test_malformed_param_files_are_refused_with_the_line(edit, message, srvgg) -> None:
    _, text, data = srvgg
    assert "\n12 13\n" in text
    with pytest.raises(NcnnFormatError, match=message) as info:
        state_dict_from_ncnn(edit(text), data, "srvgg", "m.param", "m.bin")
    assert "m.param" in str(info.value)


def test_array_with_a_wrong_count_is_refused() -> None:
    text = "7767517\n2 2\nInput in 0 1 data\nEltwise e 1 1 data out 0=1 -23301=3,0.2,1.0\n"
    with pytest.raises(NcnnFormatError, match="says 3 values but has 2"):
        parse_param_text(text, "m.param")
