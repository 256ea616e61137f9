"""The sha256 cache: a verified file is not hashed again, and nothing in the cache can make a
changed or wrong file pass."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import time
import types
from pathlib import Path

import pytest

from sgsr import hashcache


@pytest.fixture
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    path = tmp_path / "cache" / "sha256.json"
    monkeypatch.setenv("SGSR_HASH_CACHE", str(path))
    return path


@pytest.fixture
def hashes(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Counts the hash computations of sgsr.hashcache (its calls to hashlib.sha256)."""
    calls: list[int] = []
    real = hashlib.sha256

    def counting(*args: object) -> object:
        calls.append(1)
        return real(*args)

    monkeypatch.setattr(hashcache, "hashlib", types.SimpleNamespace(sha256=counting))
    return calls


def _old_file(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


@pytest.fixture
def later(monkeypatch: pytest.MonkeyPatch) -> None:
    """The cache's clock a minute ahead, so files written by the test count as settled."""
    monkeypatch.setattr(hashcache, "_now_ns", lambda: time.time_ns() + 60 * 10**9)


def test_verified_file_is_not_hashed_again_and_the_cache_is_where_configured(
    tmp_path: Path, cache: Path, hashes: list[int], later: None
) -> None:
    f = _old_file(tmp_path / "w.bin", b"weights" * 1000)
    want = hashlib.sha256(f.read_bytes()).hexdigest()
    assert hashcache.read_with_sha256(f) == (f.read_bytes(), want)
    assert hashcache.sha256_cached(f) == want
    assert hashcache.read_with_sha256(f)[1] == want
    assert len(hashes) == 1
    entry = json.loads(cache.read_text())["entries"][str(f.resolve())]
    assert entry["sha256"] == want and entry["key"][0] == f.stat().st_size
    assert [p.name for p in cache.parent.iterdir()] == [cache.name]  # no temp file left


def test_default_location_is_the_download_cache(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("SGSR_HASH_CACHE")
    monkeypatch.setenv("SGSR_CACHE_DIR", str(tmp_path))
    assert hashcache.cache_file() == tmp_path / hashcache.CACHE_NAME
    monkeypatch.setenv("SGSR_HASH_CACHE", "0")
    assert hashcache.cache_file() is None


@pytest.mark.parametrize("change", ["content_same_size", "size", "replaced_same_mtime"])
def test_a_changed_file_is_hashed_again(
    tmp_path: Path, cache: Path, hashes: list[int], later: None, change: str
) -> None:
    f = _old_file(tmp_path / "w.bin", b"a" * 4096)
    good = hashcache.sha256_cached(f)
    st = f.stat()
    if change == "content_same_size":
        f.write_bytes(b"b" * 4096)
        os.utime(f, ns=(st.st_atime_ns, st.st_mtime_ns + 1))
    elif change == "size":
        f.write_bytes(b"a" * 4097)
    else:  # a new file renamed over the old one, its mtime set back to the old value
        new = tmp_path / "new.bin"
        new.write_bytes(b"c" * 4096)
        os.utime(new, ns=(st.st_atime_ns, st.st_mtime_ns))
        os.replace(new, f)
    got = hashcache.sha256_cached(f)
    assert got == hashlib.sha256(f.read_bytes()).hexdigest() != good
    assert hashcache.read_with_sha256(f)[1] == got
    assert len(hashes) == 2


def test_a_freshly_written_file_is_not_remembered(
    tmp_path: Path, cache: Path, hashes: list[int]
) -> None:
    """Two writes within one timestamp tick look alike, so a digest is only kept for a file
    that last changed a few seconds before it was hashed."""
    f = tmp_path / "w.bin"
    f.write_bytes(b"x" * 100)
    hashcache.sha256_cached(f)
    f.write_bytes(b"y" * 100)  # possibly the same mtime and ctime
    assert hashcache.sha256_cached(f) == hashlib.sha256(b"y" * 100).hexdigest()
    assert len(hashes) == 2 and not cache.exists()


@pytest.mark.parametrize(
    "text", ["", "{not json", '{"version": 99, "entries": {}}', '{"version": 1, "entries": []}']
)
def test_a_damaged_cache_file_costs_a_rehash_never_an_error(
    tmp_path: Path, cache: Path, hashes: list[int], later: None, text: str
) -> None:
    f = _old_file(tmp_path / "w.bin", b"data")
    cache.parent.mkdir(parents=True)
    cache.write_text(text)
    assert hashcache.sha256_cached(f) == hashlib.sha256(b"data").hexdigest()
    assert len(hashes) == 1
    assert json.loads(cache.read_text())["version"] == 1  # rewritten whole


def test_an_entry_for_another_stat_or_path_never_vouches_for_a_file(
    tmp_path: Path, cache: Path, later: None
) -> None:
    """A cache that claims the pinned digest for a key that is not this file's stat (a copy of
    the entry from another file, or an edited key) is ignored."""
    right, wrong = b"the pinned weights", b"something else...."
    pin = hashlib.sha256(right).hexdigest()
    good = _old_file(tmp_path / "good.bin", right)
    bad = _old_file(tmp_path / "bad.bin", wrong)
    hashcache.sha256_cached(good)
    entries = json.loads(cache.read_text())["entries"]
    entries[str(bad.resolve())] = dict(entries[str(good.resolve())])  # good's stat, bad's path
    cache.write_text(json.dumps({"version": 1, "entries": entries}))
    assert hashcache.sha256_cached(bad) != pin
    assert hashcache.read_with_sha256(bad)[1] != pin


def test_pretrained_loader_uses_the_cache_and_still_refuses_a_tampered_file(
    tmp_path: Path, cache: Path, hashes: list[int], later: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    import torch
    from safetensors.torch import save

    from sgsr import pretrained
    from sgsr.pretrained import registry

    blob = save({"w": torch.arange(6.0)})
    weight = registry.WEIGHTS["lpips_alex"]
    fake = dataclasses.replace(weight, sha256=hashlib.sha256(blob).hexdigest())
    monkeypatch.setitem(registry.WEIGHTS, "lpips_alex", fake)
    path = _old_file(tmp_path / weight.filename, blob)
    for _ in range(3):
        assert torch.equal(
            pretrained.verified_tensors("lpips_alex", tmp_path)["w"], torch.arange(6.0)
        )
    assert len(hashes) == 1
    st = path.stat()
    time.sleep(0.05)  # past the timestamp tick; the cache's own margin is seconds
    path.write_bytes(blob[:-1] + b"\1")  # same size, same mtime: only ctime tells
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert path.stat().st_mtime_ns == st.st_mtime_ns and path.stat().st_ctime_ns != st.st_ctime_ns
    with pytest.raises(pretrained.WeightsUnavailable, match="differs from the pinned"):
        pretrained.verified_tensors("lpips_alex", tmp_path)
