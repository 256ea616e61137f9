"""sgsr.data download: fetch against a real HTTP server on 127.0.0.1 (Range, cut connections,
request counting), safe extraction and the three sources (pretrained weights:
test_pretrained.py)."""

from __future__ import annotations

import hashlib
import io
import re
import socket
import tarfile
import threading
import time
import zipfile
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from conftest import bomb_png, huge_real_png
from PIL import Image

from sgsr import pretrained
from sgsr.config import parse_config
from sgsr.data import download, sources
from sgsr.data.archive import UnsafeArchiveError, safe_extract
from sgsr.data.common import BadImageWarning
from sgsr.data.fetch import (
    ChecksumError,
    DownloadError,
    OfflineError,
    UnpinnedError,
    fetch,
)
from sgsr.data.sources import Remote
from sgsr.imaging import ImageReadError, ImageTooLargeError, read_image

# --- a small HTTP server with Range support and the ability to cut a transfer halfway ----------


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.files: dict[str, bytes] = {}
        self.requests: list[tuple[str, str | None]] = []
        self.cuts: dict[str, int] = {}  # path -> how many more transfers to cut halfway
        self.ranges = True  # honour Range requests
        self.lock = threading.Lock()

    def handle_error(self, request: Any, client_address: Any) -> None:
        pass  # a cut connection is expected, not a test failure

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}{path}"

    def count(self, path: str | None = None) -> int:
        return sum(1 for p, _ in self.requests if path is None or p == path)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _Server

    def log_message(self, *args: Any) -> None:
        pass

    def do_GET(self) -> None:
        srv = self.server
        rng = self.headers.get("Range")
        with srv.lock:
            srv.requests.append((self.path, rng))
            cut = srv.cuts.get(self.path, 0) > 0
            if cut:
                srv.cuts[self.path] -= 1
        body = srv.files.get(self.path)
        if body is None:
            self.send_response(404)
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        start = 0
        m = re.fullmatch(r"bytes=(\d+)-", rng or "")
        if m and srv.ranges:
            start = int(m[1])
            if start >= len(body):
                self.send_response(416)
                self.send_header("Content-Range", f"bytes */{len(body)}")
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{len(body) - 1}/{len(body)}")
        else:
            self.send_response(200)
        payload = body[start:]
        self.send_header("Content-Length", str(len(payload)))
        self.send_header("Accept-Ranges", "bytes")
        self.end_headers()
        if cut:
            self.wfile.write(payload[: len(payload) // 2])
            self.wfile.flush()
            self.close_connection = True
            self.connection.shutdown(socket.SHUT_RDWR)
            return
        self.wfile.write(payload)


@pytest.fixture
def server() -> Iterator[_Server]:
    srv = _Server()
    thread = threading.Thread(target=srv.serve_forever, args=(0.02,), daemon=True)
    thread.start()
    try:
        yield srv
    finally:
        srv.shutdown()
        srv.server_close()
        thread.join(timeout=5)


@pytest.fixture(autouse=True)
def _isolated_caches(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Never touch the user's caches or torch hub folder; never inherit SGSR_OFFLINE."""
    monkeypatch.setenv("SGSR_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch_home"))
    monkeypatch.delenv("SGSR_OFFLINE", raising=False)
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")  # a CI proxy must not see the server
    monkeypatch.setenv("no_proxy", "127.0.0.1,localhost")


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def closed_port() -> int:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def png_bytes(seed: int, size: tuple[int, int] = (12, 10), mode: str = "RGB") -> bytes:
    rng = np.random.default_rng(seed)
    shape = (size[1], size[0], 3) if mode == "RGB" else (size[1], size[0])
    buf = io.BytesIO()
    Image.fromarray((rng.random(shape) * 255).astype(np.uint8), mode=mode).save(buf, "PNG")
    return buf.getvalue()


def tar_gz(members: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tf:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def zip_bytes(members: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for name, data in members.items():
            zf.writestr(name, data)
    return buf.getvalue()


def cfg_for(tmp_path: Path, **data: Any):
    raw = {"data": {"metric_weights": False, **data}}
    return parse_config(raw, source=str(tmp_path / "params.yaml"))


# --- fetch --------------------------------------------------------------------------------------


def test_fetch_downloads_verifies_and_leaves_no_temp_file(server: _Server, tmp_path: Path) -> None:
    payload = np.random.default_rng(0).bytes(300_000)
    server.files["/a.bin"] = payload
    dest = tmp_path / "out" / "a.bin"
    assert fetch(server.url("/a.bin"), dest, sha(payload), progress=False) == dest
    assert dest.read_bytes() == payload
    assert sorted(p.name for p in dest.parent.iterdir()) == ["a.bin"]
    assert server.count() == 1


def test_second_fetch_transfers_nothing(server: _Server, tmp_path: Path) -> None:
    payload = b"x" * 5000
    server.files["/a.bin"] = payload
    dest = tmp_path / "a.bin"
    fetch(server.url("/a.bin"), dest, sha(payload), progress=False)
    fetch(server.url("/a.bin"), dest, sha(payload), progress=False)
    assert server.count() == 1


def test_existing_file_with_wrong_hash_is_replaced(server: _Server, tmp_path: Path) -> None:
    payload = b"right bytes" * 100
    server.files["/a.bin"] = payload
    dest = tmp_path / "a.bin"
    dest.write_bytes(b"stale")
    fetch(server.url("/a.bin"), dest, sha(payload), progress=False)
    assert dest.read_bytes() == payload and server.count() == 1


def test_corrupted_payload_is_refused_and_nothing_is_left(server: _Server, tmp_path: Path) -> None:
    server.files["/a.bin"] = b"tampered" * 1000
    out = tmp_path / "out"
    with pytest.raises(ChecksumError, match="sha256 mismatch") as info:
        fetch(server.url("/a.bin"), out / "a.bin", sha(b"genuine" * 1000), progress=False)
    assert server.url("/a.bin") in str(info.value)
    assert list(out.iterdir()) == []  # neither the file nor a .part


def test_cut_connection_is_resumed_with_range(server: _Server, tmp_path: Path) -> None:
    payload = np.random.default_rng(1).bytes(200_000)
    server.files["/big.bin"] = payload
    server.cuts["/big.bin"] = 1
    dest = tmp_path / "big.bin"
    fetch(server.url("/big.bin"), dest, sha(payload), progress=False, backoff=0)
    assert dest.read_bytes() == payload
    assert [r for _, r in server.requests] == [None, f"bytes={len(payload) // 2}-"]


def test_cut_connection_without_range_support_restarts(server: _Server, tmp_path: Path) -> None:
    payload = np.random.default_rng(2).bytes(100_000)
    server.files["/big.bin"] = payload
    server.cuts["/big.bin"] = 2
    server.ranges = False  # the server answers 200 with the whole body: must not append
    dest = tmp_path / "big.bin"
    fetch(server.url("/big.bin"), dest, sha(payload), progress=False, backoff=0)
    assert dest.read_bytes() == payload
    assert server.count() == 3


def test_stale_partial_from_another_version_is_discarded(server: _Server, tmp_path: Path) -> None:
    payload = np.random.default_rng(3).bytes(10_000)
    server.files["/a.bin"] = payload
    (tmp_path / ".a.bin.part").write_bytes(b"bytes of an older version")
    fetch(server.url("/a.bin"), tmp_path / "a.bin", sha(payload), progress=False)
    assert (tmp_path / "a.bin").read_bytes() == payload
    assert [r for _, r in server.requests] == ["bytes=25-", None]  # resumed, then afresh


def test_retries_are_bounded(server: _Server, tmp_path: Path) -> None:
    server.files["/big.bin"] = b"y" * 50_000
    server.cuts["/big.bin"] = 100
    with pytest.raises(DownloadError, match="gave up after 2 retries"):
        fetch(server.url("/big.bin"), tmp_path / "b", sha(b"y" * 50_000), retries=2, backoff=0)
    assert server.count() == 3


def test_http_404_is_not_retried(server: _Server, tmp_path: Path) -> None:
    with pytest.raises(DownloadError, match="HTTP 404"):
        fetch(server.url("/missing"), tmp_path / "m", sha(b""), backoff=0)
    assert server.count() == 1


def test_unpinned_hash_fails_closed_before_any_request(server: _Server, tmp_path: Path) -> None:
    server.files["/a.bin"] = b"data"
    with pytest.raises(UnpinnedError, match="TODO-unverified"):
        fetch(server.url("/a.bin"), tmp_path / "a.bin", None)
    assert server.count() == 0


def test_sgsr_offline_refuses_without_network(
    server: _Server, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    server.files["/a.bin"] = b"data"
    monkeypatch.setenv("SGSR_OFFLINE", "1")
    with pytest.raises(OfflineError, match="SGSR_OFFLINE"):
        fetch(server.url("/a.bin"), tmp_path / "a.bin", sha(b"data"))
    assert server.count() == 0


@pytest.mark.parametrize(
    "url",
    [f"http://127.0.0.1:{closed_port()}/data.zip", "http://nonexistent.invalid/data.zip"],
    ids=["closed-port", "unresolvable"],
)
def test_unreachable_host_fails_fast_naming_url_and_alternatives(url: str, tmp_path: Path) -> None:
    t0 = time.monotonic()
    with pytest.raises(OfflineError) as info:
        fetch(url, tmp_path / "data.zip", "0" * 64, retries=3)
    elapsed = time.monotonic() - t0
    msg = str(info.value)
    assert url in msg
    assert "data.source: dir" in msg and "dvc pull" in msg
    assert elapsed < 4.0, f"took {elapsed:.1f} s"
    assert not (tmp_path / "data.zip").exists()


# --- archives -----------------------------------------------------------------------------------


@pytest.mark.parametrize("fmt", ["tar", "zip"])
@pytest.mark.parametrize("bad", ["../evil", "/etc/x", "a/../../evil"])
def test_archive_members_escaping_the_folder_are_refused(
    tmp_path: Path, fmt: str, bad: str
) -> None:
    members = {"ok/fine.txt": b"fine", bad: b"evil"}
    data = tar_gz(members) if fmt == "tar" else zip_bytes(members)
    archive = tmp_path / f"a.{fmt}"
    archive.write_bytes(data)
    dest = tmp_path / "dest"
    with pytest.raises(UnsafeArchiveError) as info:
        safe_extract(archive, dest)
    assert repr(bad) in str(info.value)
    assert not dest.exists()  # validated before anything was written
    assert not (tmp_path / "evil").exists()


def test_tar_symlink_and_hardlink_members_are_refused(tmp_path: Path) -> None:
    for kind in (tarfile.SYMTYPE, tarfile.LNKTYPE):
        buf = io.BytesIO()
        with tarfile.open(fileobj=buf, mode="w") as tf:
            info = tarfile.TarInfo("link")
            info.type = kind
            info.linkname = "/etc/passwd"
            tf.addfile(info)
        archive = tmp_path / f"l{kind!r}.tar"
        archive.write_bytes(buf.getvalue())
        with pytest.raises(UnsafeArchiveError, match=r"'link' is a (symbolic|hard) link"):
            safe_extract(archive, tmp_path / "dest")
        assert not (tmp_path / "dest").exists()


def test_zip_symlink_member_is_refused(tmp_path: Path) -> None:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        info = zipfile.ZipInfo("sneaky")
        info.external_attr = (0o120777) << 16
        zf.writestr(info, "/etc/passwd")
    (tmp_path / "s.zip").write_bytes(buf.getvalue())
    with pytest.raises(UnsafeArchiveError, match="'sneaky' is a symbolic link"):
        safe_extract(tmp_path / "s.zip", tmp_path / "dest")


def test_safe_extract_writes_nested_files(tmp_path: Path) -> None:
    (tmp_path / "a.zip").write_bytes(zip_bytes({"top/x.png": b"1", "top/sub/y.png": b"22"}))
    written = safe_extract(tmp_path / "a.zip", tmp_path / "d")
    assert sorted(p.relative_to(tmp_path / "d").as_posix() for p in written) == [
        "top/sub/y.png",
        "top/x.png",
    ]
    assert (tmp_path / "d/top/sub/y.png").read_bytes() == b"22"


def test_not_an_archive_is_an_error(tmp_path: Path) -> None:
    (tmp_path / "x.zip").write_bytes(b"plain text")
    with pytest.raises(UnsafeArchiveError, match="not a zip or tar"):
        safe_extract(tmp_path / "x.zip", tmp_path / "d")


# --- official source through the stage --------------------------------------------------------


@pytest.fixture
def official(server: _Server, monkeypatch: pytest.MonkeyPatch) -> dict[str, bytes]:
    """Point the Set5 and DIV2K_valid entries at the local server (tar.gz and zip)."""
    images = {f"img{i}.png": png_bytes(i) for i in range(3)}
    tgz = tar_gz({f"Set5_HR/{k}": v for k, v in images.items()} | {"README.txt": b"hi"})
    zp = zip_bytes({f"DIV2K_valid_HR/08{i:02d}.png": png_bytes(10 + i) for i in range(2)})
    server.files["/Set5_HR.tar.gz"] = tgz
    server.files["/DIV2K_valid_HR.zip"] = zp
    monkeypatch.setitem(
        sources.OFFICIAL, "Set5", Remote(server.url("/Set5_HR.tar.gz"), sha(tgz), inner="Set5_HR")
    )
    monkeypatch.setitem(
        sources.OFFICIAL,
        "DIV2K_valid",
        Remote(server.url("/DIV2K_valid_HR.zip"), sha(zp), inner="DIV2K_valid_HR"),
    )
    return images


def test_official_download_extract_and_rerun_transfers_nothing(
    server: _Server, official: dict[str, bytes], tmp_path: Path
) -> None:
    cfg = cfg_for(tmp_path, source="official", train_sets=["DIV2K_valid"], test_sets=["Set5"])
    result = download.run(cfg, root=tmp_path)
    raw = tmp_path / "data" / "raw"
    assert sorted(p.name for p in (raw / "Set5").iterdir()) == sorted(official)
    for name, data in official.items():
        assert (raw / "Set5" / name).read_bytes() == data  # as published, byte for byte
    assert sorted(p.name for p in (raw / "DIV2K_valid").iterdir()) == ["0800.png", "0801.png"]
    assert result["sets"]["Set5"]["archive_sha256"] == sources.OFFICIAL["Set5"].sha256
    assert not [p for p in raw.iterdir() if p.name.startswith(".")]  # no staging left over
    n = server.count()
    assert n == 2
    download.run(cfg, root=tmp_path)
    assert server.count() == n  # verified archives in the cache: nothing transferred
    assert sorted(p.name for p in (raw / "Set5").iterdir()) == sorted(official)


def test_official_corrupt_archive_leaves_no_set(
    server: _Server, official: dict[str, bytes], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    good = sources.OFFICIAL["Set5"]
    monkeypatch.setitem(sources.OFFICIAL, "Set5", Remote(good.url, "f" * 64, inner="Set5_HR"))
    cfg = cfg_for(tmp_path, source="official", train_sets=["Set5"], test_sets=["Set5"])
    with pytest.raises(ChecksumError):
        download.run(cfg, root=tmp_path)
    raw = tmp_path / "data" / "raw"
    assert not raw.exists() or list(raw.iterdir()) == []
    assert [p.name for p in (tmp_path / "cache" / "downloads").iterdir()] == []


def test_official_archive_with_traversal_member_is_refused(
    server: _Server, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    evil = tar_gz({"Set5_HR/a.png": png_bytes(0), "../evil.png": png_bytes(1)})
    server.files["/evil.tar.gz"] = evil
    monkeypatch.setitem(sources.OFFICIAL, "Set5", Remote(server.url("/evil.tar.gz"), sha(evil)))
    cfg = cfg_for(tmp_path, source="official", train_sets=["Set5"], test_sets=["Set5"])
    with pytest.raises(UnsafeArchiveError, match=r"\.\./evil\.png"):
        download.run(cfg, root=tmp_path)
    assert not (tmp_path / "data" / "raw" / "Set5").exists()
    assert not list((tmp_path / "data").rglob("evil.png"))


def test_official_unpinned_set_is_refused_before_any_download(
    server: _Server, official: dict[str, bytes], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sources.OFFICIAL, "Set14", Remote(server.url("/Set14.tgz"), None))
    cfg = cfg_for(tmp_path, source="official", train_sets=["Set5"], test_sets=["Set14"])
    with pytest.raises(UnpinnedError, match="Set14") as info:
        download.run(cfg, root=tmp_path)
    assert "TODO-unverified" in str(info.value) and "data.source: dir" in str(info.value)
    assert server.count() == 0  # not even the pinned Set5 was fetched


def test_official_unreachable_fails_fast_with_alternatives(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    url = f"http://127.0.0.1:{closed_port()}/Set5_HR.tar.gz"
    monkeypatch.setitem(sources.OFFICIAL, "Set5", Remote(url, "a" * 64))
    cfg = cfg_for(tmp_path, source="official", train_sets=["Set5"], test_sets=["Set5"])
    t0 = time.monotonic()
    with pytest.raises(OfflineError) as info:
        download.run(cfg, root=tmp_path)
    assert time.monotonic() - t0 < 4.0
    assert url in str(info.value) and "dvc pull" in str(info.value)


def test_official_unknown_set_lists_known_ones(tmp_path: Path) -> None:
    cfg = cfg_for(tmp_path, source="official", train_sets=["DIV2K"], test_sets=["Set6"])
    with pytest.raises(ValueError, match="'Set6'") as info:
        download.run(cfg, root=tmp_path)
    for known in ("Set5", "Set14", "B100", "BSD100", "Urban100", "DIV2K_train"):
        assert known in str(info.value)


def test_official_table_is_complete_and_honest() -> None:
    """Every official set has an https URL; a hash is either a full sha256 or None (refused)."""
    assert {"DIV2K_train", "DIV2K_valid", "Set5", "Set14", "B100", "Urban100"} <= set(
        sources.OFFICIAL
    )
    for remote in sources.OFFICIAL.values():
        assert remote.url.startswith("https://")
        assert remote.sha256 is None or re.fullmatch(r"[0-9a-f]{64}", remote.sha256)
    assert sources.canonical("BSD100") == "B100"
    assert sources.equivalent_names("B100") == ("B100", "BSD100")


# --- sample source --------------------------------------------------------------------------------


def test_sample_source_offline_split(tmp_path: Path) -> None:
    cfg = cfg_for(tmp_path, source="sample")
    t0 = time.monotonic()
    download.run(cfg, root=tmp_path)
    assert time.monotonic() - t0 < 20
    raw = tmp_path / "data" / "raw"
    train = sorted(p.stem for p in (raw / "sample_train").glob("*.png"))
    test = sorted(p.stem for p in (raw / "sample_test").glob("*.png"))
    assert train == sorted(sources.SAMPLE_SETS["sample_train"])
    assert test == sorted(sources.SAMPLE_SETS["sample_test"])
    assert not set(train) & set(test)
    shapes = {stem: read_image(raw / "sample_test" / f"{stem}.png").shape for stem in test}
    assert any(s[2] == 1 for s in shapes.values()), "test set needs a grayscale image"
    assert any(s[0] % 4 or s[1] % 4 for s in shapes.values()), "test set needs an odd size"
    manifest = pretrained.load_manifest(tmp_path / "models" / "pretrained" / "manifest.json")
    assert all(not e["present"] for e in manifest.values())
    assert all("metric_weights is false" in e["reason"] for e in manifest.values())


def test_sample_unknown_set_lists_known_ones(tmp_path: Path) -> None:
    cfg = cfg_for(tmp_path, source="sample", test_sets=["Set5"])
    with pytest.raises(ValueError, match="sample_train, sample_test"):
        download.run(cfg, root=tmp_path)


# --- dir source -----------------------------------------------------------------------------------


def make_mirror(root: Path) -> Path:
    mirror = root / "mirror"
    (mirror / "BSD100").mkdir(parents=True)
    (mirror / "Set5").mkdir()
    (mirror / "BSD100" / "a.png").write_bytes(png_bytes(1))
    (mirror / "BSD100" / "b.jpg").write_bytes(
        _encode(np.random.default_rng(2).random((10, 14, 3)), "JPEG")
    )
    (mirror / "BSD100" / "ID_MAP.tsv").write_text("not an image\n")
    (mirror / "Set5" / "g.bmp").write_bytes(_encode(np.random.default_rng(3).random((9, 7)), "BMP"))
    return mirror


def _encode(arr: np.ndarray, fmt: str) -> bytes:
    buf = io.BytesIO()
    Image.fromarray((arr * 255).astype(np.uint8)).save(buf, fmt)
    return buf.getvalue()


def test_dir_source_copies_byte_for_byte_with_aliases(tmp_path: Path) -> None:
    mirror = make_mirror(tmp_path)
    cfg = cfg_for(tmp_path, source="dir", dir=str(mirror), train_sets=["Set5"], test_sets=["B100"])
    result = download.run(cfg, root=tmp_path)
    raw = tmp_path / "data" / "raw"
    assert sorted(p.name for p in (raw / "B100").iterdir()) == ["a.png", "b.jpg"]
    for name in ("a.png", "b.jpg"):
        assert (raw / "B100" / name).read_bytes() == (mirror / "BSD100" / name).read_bytes()
    assert (raw / "Set5" / "g.bmp").read_bytes() == (mirror / "Set5" / "g.bmp").read_bytes()
    assert result["sets"]["B100"]["origin"] == str(mirror / "BSD100")
    assert result["sets"]["B100"]["files"]["a.png"] == sha(
        (mirror / "BSD100" / "a.png").read_bytes()
    )


def test_dir_relative_path_is_relative_to_the_params_folder(tmp_path: Path) -> None:
    make_mirror(tmp_path)
    cfg = cfg_for(tmp_path, source="dir", dir="mirror", train_sets=["Set5"], test_sets=["Set5"])
    download.run(cfg)  # root defaults to the params file's folder, tmp_path
    assert (tmp_path / "data" / "raw" / "Set5" / "g.bmp").is_file()


def test_dir_missing_set_names_what_exists(tmp_path: Path) -> None:
    mirror = make_mirror(tmp_path)
    cfg = cfg_for(tmp_path, source="dir", dir=str(mirror), train_sets=["T91"], test_sets=["Set5"])
    with pytest.raises(FileNotFoundError, match="'T91'") as info:
        download.run(cfg, root=tmp_path)
    assert "BSD100" in str(info.value) and "Set5" in str(info.value)


@pytest.mark.parametrize(
    "bad_name,content",
    [("zero.png", b""), ("cut.png", png_bytes(5, (64, 64))[:200]), ("text.png", b"hello")],
)
def test_dir_bad_image_policy(tmp_path: Path, bad_name: str, content: bytes) -> None:
    mirror = make_mirror(tmp_path)
    (mirror / "Set5" / bad_name).write_bytes(content)
    strict = cfg_for(
        tmp_path, source="dir", dir=str(mirror), train_sets=["Set5"], test_sets=["B100"]
    )
    with pytest.raises(ImageReadError, match=re.escape(bad_name)):
        download.run(strict, root=tmp_path)
    assert not (tmp_path / "data" / "raw" / "Set5").exists()
    lenient = cfg_for(
        tmp_path,
        source="dir",
        dir=str(mirror),
        train_sets=["Set5"],
        test_sets=["B100"],
        on_bad_image="skip",
    )
    with pytest.warns(BadImageWarning, match=re.escape(bad_name)):
        download.run(lenient, root=tmp_path)
    assert sorted(p.name for p in (tmp_path / "data" / "raw" / "Set5").iterdir()) == ["g.bmp"]


@pytest.mark.parametrize(
    ("name", "make", "size"),
    [("bomb.png", bomb_png, "30000x30000"), ("huge.png", huge_real_png, "10000x10000")],
)
def test_dir_pixel_limit_follows_the_bad_image_policy(
    tmp_path: Path, name: str, make: Any, size: str
) -> None:
    """The 167-byte bomb crashed `download` with Pillow's traceback even under skip; the real
    10000x10000 PNG was accepted (1.2 GB of prepared data later). Both are now refused from
    their header, named with their declared size."""
    mirror = make_mirror(tmp_path)
    make(mirror / "Set5" / name)
    strict = cfg_for(
        tmp_path, source="dir", dir=str(mirror), train_sets=["Set5"], test_sets=["Set5"]
    )
    with pytest.raises(ImageTooLargeError) as info:
        download.run(strict, root=tmp_path)
    msg = str(info.value)
    assert f"{mirror / 'Set5' / name}: the header declares {size}" in msg
    assert "data.max_pixels" in msg and "data.on_bad_image: skip" in msg
    lenient = cfg_for(
        tmp_path,
        source="dir",
        dir=str(mirror),
        train_sets=["Set5"],
        test_sets=["Set5"],
        on_bad_image="skip",
    )
    with pytest.warns(BadImageWarning, match=re.escape(f"{name}: the header declares {size}")):
        download.run(lenient, root=tmp_path)
    assert sorted(p.name for p in (tmp_path / "data" / "raw" / "Set5").iterdir()) == ["g.bmp"]
    raised = cfg_for(
        tmp_path, source="dir", dir=str(mirror), train_sets=["Set5"], test_sets=["Set5"],
        max_pixels=10**8, on_bad_image="skip",
    )  # fmt: skip
    if name == "huge.png":  # a genuine image passes once the limit allows it
        download.run(raised, root=tmp_path)
        assert (tmp_path / "data" / "raw" / "Set5" / name).is_file()


def test_dir_symlink_to_a_file_outside_the_mirror_is_refused(tmp_path: Path) -> None:
    """A shared mirror must not pull any readable image on this machine into data/raw (and on
    to a DVC remote); archives refuse links for the same reason."""
    mirror = make_mirror(tmp_path)
    secret = tmp_path / "private" / "photo.png"
    secret.parent.mkdir()
    secret.write_bytes(png_bytes(9))
    (mirror / "Set5" / "photo.png").symlink_to(secret)
    cfg = cfg_for(tmp_path, source="dir", dir=str(mirror), train_sets=["Set5"], test_sets=["Set5"],
                  on_bad_image="skip")  # fmt: skip
    with pytest.raises(download.UnsafeSourceError) as info:
        download.run(cfg, root=tmp_path)
    assert f"{mirror / 'Set5' / 'photo.png'} -> {secret}" in str(info.value)
    assert "Nothing was copied" in str(info.value)
    assert not (tmp_path / "data" / "raw").exists()
    # a set folder that links outside is the same escape
    (mirror / "Set5" / "photo.png").unlink()
    elsewhere = tmp_path / "elsewhere"
    (elsewhere / "Set14").mkdir(parents=True)
    (elsewhere / "Set14" / "x.png").write_bytes(png_bytes(4))
    (mirror / "Set14").symlink_to(elsewhere / "Set14", target_is_directory=True)
    cfg = cfg_for(
        tmp_path, source="dir", dir=str(mirror), train_sets=["Set14"], test_sets=["Set14"]
    )
    with pytest.raises(download.UnsafeSourceError, match=r"Set14/x\.png ->"):
        download.run(cfg, root=tmp_path)


def test_dir_symlink_inside_the_mirror_is_copied(tmp_path: Path) -> None:
    mirror = make_mirror(tmp_path)
    (mirror / "Set5" / "again.png").symlink_to(mirror / "BSD100" / "a.png")
    cfg = cfg_for(tmp_path, source="dir", dir=str(mirror), train_sets=["Set5"], test_sets=["Set5"])
    download.run(cfg, root=tmp_path)
    copied = tmp_path / "data" / "raw" / "Set5" / "again.png"
    assert (
        not copied.is_symlink()
        and copied.read_bytes() == (mirror / "BSD100" / "a.png").read_bytes()
    )
