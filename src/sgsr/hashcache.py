"""sha256 of large files (pretrained weights, archives), remembered between processes so that a
file verified once is not hashed again by every command that loads it.

An entry is keyed by the file's resolved path and its stat: size, mtime_ns, ctime_ns, inode and
device. Any write to the file changes mtime and ctime (ctime cannot be set back from user space,
unlike mtime), and a replaced file has another inode, so a stale entry never matches: the file
is hashed again. The cache only stores digests; every caller still compares the digest with its
own pin, so a damaged or unreadable cache file costs a re-hash, never a pass. A digest is stored
only when the file's stat was the same before and after it was read and its last change is a
few seconds old (timestamps are coarse: see `_settled`), and the cache file is replaced
atomically (write to a temp file, rename).

Location: ``sha256-cache.json`` in the download cache (``$SGSR_CACHE_DIR``, else
``$XDG_CACHE_HOME/sgsr``, else ``~/.cache/sgsr``); ``SGSR_HASH_CACHE`` names another file, or
turns it off with 0.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import time
from pathlib import Path

from sgsr.data.common import download_cache
from sgsr.fsutil import write_text

CACHE_NAME = "sha256-cache.json"
#: Entries kept (oldest dropped first): far more than the weights and archives a project has.
MAX_ENTRIES = 512
#: How long ago a file must have last changed for its digest to be remembered (see _settled).
SETTLE_NS = 3_000_000_000
_now_ns = time.time_ns
_VERSION = 1


def cache_file() -> Path | None:
    """Where digests are kept: ``$SGSR_HASH_CACHE`` when it names a file, None (no cache) when
    it is 0/off/false/no, else `CACHE_NAME` in the download cache."""
    value = os.environ.get("SGSR_HASH_CACHE", "").strip()
    if value.lower() in ("0", "off", "false", "no"):
        return None
    return Path(value) if value else download_cache() / CACHE_NAME


def _key(st: os.stat_result) -> list[int]:
    return [st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino, st.st_dev]


def _settled(key: list[int]) -> bool:
    """File timestamps come from a coarse clock: two writes within one tick leave the same
    mtime and ctime. A file changed less than SETTLE_NS ago is therefore not remembered (it is
    hashed again next time); once older, any later write shows in its timestamps."""
    return _now_ns() - max(key[1], key[2]) >= SETTLE_NS


def _load(path: Path) -> dict[str, dict]:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    if not isinstance(data, dict) or data.get("version") != _VERSION:
        return {}
    entries = data.get("entries")
    return entries if isinstance(entries, dict) else {}


def _lookup(cache: Path | None, name: str, key: list[int]) -> str | None:
    if cache is None:
        return None
    entry = _load(cache).get(name)
    if not isinstance(entry, dict) or entry.get("key") != key:
        return None
    digest = entry.get("sha256")
    ok = isinstance(digest, str) and len(digest) == 64 and not set(digest) - set("0123456789abcdef")
    return digest if ok else None


def _store(cache: Path | None, name: str, key: list[int], digest: str) -> None:
    if cache is None or not _settled(key):
        return
    entries = _load(cache)
    entries.pop(name, None)
    entries[name] = {"key": key, "sha256": digest}
    while len(entries) > MAX_ENTRIES:
        entries.pop(next(iter(entries)))
    # a read-only cache folder only costs the next process a re-hash
    with contextlib.suppress(OSError):
        write_text(cache, json.dumps({"version": _VERSION, "entries": entries}, indent=0) + "\n")


def read_with_sha256(path: str | os.PathLike[str]) -> tuple[bytes, str]:
    """The bytes of `path` and their sha256: hashed unless the cache holds the digest for this
    very file (same path and stat before and after the read)."""
    path = Path(path)
    name = str(path.resolve())
    cache = cache_file()
    with open(path, "rb") as fh:
        before = _key(os.fstat(fh.fileno()))
        data = fh.read()
        after = _key(os.fstat(fh.fileno()))
    digest = _lookup(cache, name, before) if before == after else None
    if digest is None:
        digest = hashlib.sha256(data).hexdigest()
        if before == after:
            _store(cache, name, before, digest)
    return data, digest


def sha256_cached(path: str | os.PathLike[str], chunk: int = 1 << 20) -> str:
    """sha256 of `path` (streamed, for files too large to hold), from the cache when this very
    file was hashed before."""
    path = Path(path)
    name = str(path.resolve())
    cache = cache_file()
    with open(path, "rb") as fh:
        before = _key(os.fstat(fh.fileno()))
        digest = _lookup(cache, name, before)
        if digest is not None:
            return digest
        h = hashlib.sha256()
        while block := fh.read(chunk):
            h.update(block)
        after = _key(os.fstat(fh.fileno()))
    digest = h.hexdigest()
    if before == after:
        _store(cache, name, before, digest)
    return digest
