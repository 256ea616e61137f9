"""HTTP download of one pinned file: stream, resume, verify, rename.

Rules, and why:

- No hash, no download (``sha256=None`` fails before any network): a table entry nobody has
  checked must not turn into data silently.
- A file already at ``dest`` with the right sha256 is kept and nothing is sent: reruns are free.
- Bytes go to ``.<name>.part`` beside ``dest`` and are renamed over it only once the sha256
  matches; a wrong payload is deleted, so a failure never leaves a file that looks valid.
- Failing to *reach* the server fails at once (short connect timeout, no retries): offline, the
  pipeline must say so in seconds. Failures after the server answered (a cut connection, a read
  timeout, a 5xx) are retried with an HTTP ``Range`` request that resumes where the bytes stop.
- ``SGSR_OFFLINE=1`` in the environment refuses every download without touching the network.
"""

from __future__ import annotations

import contextlib
import os
import queue
import socket
import threading
import time
from pathlib import Path
from urllib.parse import urlsplit

import requests
from tqdm.auto import tqdm

from sgsr.fsutil import sha256sum
from sgsr.hashcache import sha256_cached

#: (connect, read) seconds. Connect is short so an offline run fails fast; read is generous.
DEFAULT_TIMEOUT: tuple[float, float] = (3.05, 60.0)

DATA_ALTERNATIVES = (
    "set `data.source: dir` and `data.dir` to a local mirror laid out <dir>/<Set>/*.png "
    "(for example ../shared/datasets), or get the pipeline outputs with `dvc pull`"
)

_CHUNK = 1 << 20


class DownloadError(OSError):
    """A file could not be fetched; the message names the URL and what to do instead."""


class OfflineError(DownloadError):
    """The server could not be reached at all (no DNS, refused, connect timeout, SGSR_OFFLINE)."""


class ChecksumError(DownloadError):
    """The bytes arrived but do not hash to the pinned sha256; nothing was kept."""


class UnpinnedError(DownloadError):
    """No verified sha256 is pinned for the URL, so it is not downloaded (fail closed)."""


class _Retry(Exception):
    """Internal: the server was reached but the transfer failed; try again (resuming)."""


def fetch(
    url: str,
    dest: str | os.PathLike[str],
    sha256: str | None,
    retries: int = 3,
    timeout: float | tuple[float, float] = DEFAULT_TIMEOUT,
    *,
    size: int | None = None,
    alternatives: str = DATA_ALTERNATIVES,
    progress: bool | None = None,
    backoff: float = 0.5,
    session: requests.Session | None = None,
) -> Path:
    """Download `url` to `dest` and verify its sha256; return `dest`.

    ``retries`` counts extra attempts after the server was reached; ``timeout`` is requests'
    (connect, read) pair. ``progress=None`` shows a bar only on a terminal.
    """
    dest = Path(dest)
    if sha256 is None:
        raise UnpinnedError(
            f"{url}: no verified sha256 is pinned for this file (TODO-unverified in "
            "sgsr/data/sources.py), so it is not downloaded. Check the file yourself and pin its "
            f"sha256 in the table, or {alternatives}"
        )
    sha256 = sha256.lower()
    if dest.is_file() and sha256_cached(dest) == sha256:
        return dest
    if os.environ.get("SGSR_OFFLINE", "").strip() not in ("", "0"):
        raise OfflineError(f"cannot download {url}: SGSR_OFFLINE is set. Instead, {alternatives}")
    connect_timeout = timeout[0] if isinstance(timeout, tuple) else float(timeout)
    _check_resolvable(url, connect_timeout, alternatives)
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = dest.parent / f".{dest.name}.part"
    stale = part.exists()  # left by an interrupted earlier run: resumed, but not trusted blindly
    own = session is None
    sess = session or requests.Session()
    failures = 0
    reached = False
    try:
        while True:
            try:
                _transfer(sess, url, part, timeout, size, progress)
                break
            except _Retry as exc:
                reached = True
                failures += 1
                if failures > retries:
                    raise DownloadError(
                        f"cannot download {url}: {exc} (gave up after {retries} retries; the "
                        f"partial file {part} is kept and a rerun resumes it). Instead, "
                        f"{alternatives}"
                    ) from exc.__cause__
                time.sleep(min(backoff * 2 ** (failures - 1), 10.0))
            except (requests.ConnectionError, requests.Timeout) as exc:
                if not reached and _unreachable(exc):
                    raise OfflineError(
                        f"cannot reach {url}: {_reason(exc)}. You seem to be offline, or the host "
                        f"is down or blocked. Instead, {alternatives}"
                    ) from exc
                reached = reached or not _unreachable(exc)
                failures += 1
                if failures > retries:
                    raise DownloadError(
                        f"cannot download {url}: {_reason(exc)} (after {retries} retries). "
                        f"Instead, {alternatives}"
                    ) from exc
                time.sleep(min(backoff * 2 ** (failures - 1), 10.0))
    finally:
        if own:
            sess.close()
    got = sha256sum(part)
    if got != sha256:
        part.unlink(missing_ok=True)
        if stale:  # the old partial may belong to another version of the file: once, afresh
            return fetch(
                url,
                dest,
                sha256,
                retries,
                timeout,
                size=size,
                alternatives=alternatives,
                progress=progress,
                backoff=backoff,
                session=session,
            )
        raise ChecksumError(
            f"{url}: sha256 mismatch, expected {sha256}, got {got}; the download was deleted. "
            "The server sent different bytes than the pinned file (corrupted transfer, a changed "
            f"or hijacked file). Retry later, or {alternatives}"
        )
    os.replace(part, dest)
    return dest


def _transfer(
    sess: requests.Session,
    url: str,
    part: Path,
    timeout: float | tuple[float, float],
    size: int | None,
    progress: bool | None,
) -> None:
    """One attempt: append to `part` from where it stops; raise _Retry on a resumable failure."""
    offset = part.stat().st_size if part.exists() else 0
    headers = {"Accept-Encoding": "identity"}
    if offset:
        headers["Range"] = f"bytes={offset}-"
    resp = sess.get(url, headers=headers, stream=True, timeout=timeout, allow_redirects=True)
    with contextlib.closing(resp):
        code = resp.status_code
        if code == 416 and offset:
            # Nothing after `offset`: the part is probably complete. If it is not, verification
            # fails; drop it so the next run starts clean.
            if size is None or offset == size:
                return
            part.unlink()
            raise _Retry(f"server refused to resume at byte {offset} (HTTP 416)")
        if code >= 500 or code in (408, 429):
            raise _Retry(f"HTTP {code} {resp.reason}")
        if code >= 400:
            raise DownloadError(f"cannot download {url}: HTTP {code} {resp.reason}")
        append = code == 206 and offset > 0 and _range_start(resp) == offset
        if not append:
            offset = 0  # server ignored the Range (or none was sent): start over
        length = resp.headers.get("Content-Length")
        expected = offset + int(length) if length and length.isdigit() else size
        received = offset
        bar = tqdm(
            total=expected,
            initial=offset,
            unit="B",
            unit_scale=True,
            unit_divisor=1024,
            desc=Path(urlsplit(url).path).name,
            disable=None if progress is None else not progress,
            leave=False,
        )
        try:
            with open(part, "ab" if append else "wb") as fh:
                for chunk in resp.raw.stream(_CHUNK, decode_content=False):
                    fh.write(chunk)
                    received += len(chunk)
                    bar.update(len(chunk))
        except Exception as exc:
            if not _transient(exc):
                raise  # disk full, permissions: not something a retry fixes
            raise _Retry(f"connection lost after {received} bytes ({_reason(exc)})") from exc
        finally:
            bar.close()
        if expected is not None and received < expected:
            raise _Retry(f"connection closed after {received} of {expected} bytes")


def _range_start(resp: requests.Response) -> int | None:
    """First byte of a ``Content-Range: bytes a-b/n`` answer (None if absent or malformed)."""
    value = resp.headers.get("Content-Range", "")
    try:
        unit, rest = value.split(" ", 1)
        return int(rest.split("-", 1)[0]) if unit == "bytes" else None
    except ValueError:
        return None


def _transient(exc: BaseException) -> bool:
    """A network failure mid-transfer (worth a resumed retry), as opposed to a local error."""
    if isinstance(exc, requests.RequestException | ConnectionError | TimeoutError):
        return True
    return type(exc).__module__.split(".")[0] in ("urllib3", "http")


def _chain(exc: BaseException) -> list[BaseException]:
    """`exc` and the errors behind it: causes, contexts, and urllib3's ``reason`` wrappers."""
    out: list[BaseException] = []
    todo: list[BaseException] = [exc]
    while todo and len(out) < 30:
        e = todo.pop(0)
        if any(e is o for o in out):
            continue
        out.append(e)
        for nxt in (e.__cause__, e.__context__, getattr(e, "reason", None)):
            if isinstance(nxt, BaseException):
                todo.append(nxt)
        todo.extend(a for a in e.args if isinstance(a, BaseException))
    return out


def _unreachable(exc: BaseException) -> bool:
    """True when the error says the server was never reached (DNS, refused, connect timeout)."""
    for e in _chain(exc):
        if isinstance(e, socket.gaierror | ConnectionRefusedError | requests.ConnectTimeout):
            return True
        if type(e).__name__ in ("NewConnectionError", "NameResolutionError", "ConnectTimeoutError"):
            return True
    return False


def _reason(exc: BaseException) -> str:
    """The innermost human-readable cause (DNS failure, refused, timeout) of a requests error."""
    chain = _chain(exc)
    for e in chain:
        if isinstance(e, socket.gaierror):
            return f"the host name does not resolve ({e.strerror or e})"
    for e in chain:
        if isinstance(e, ConnectionRefusedError):
            return "connection refused"
    for e in chain:
        if isinstance(e, requests.ConnectTimeout) or type(e).__name__ == "ConnectTimeoutError":
            return "no answer before the connect timeout"
    text = str(chain[-1] if len(chain) > 1 else exc)
    return text if len(text) < 300 else text[:300] + "..."


def _check_resolvable(url: str, seconds: float, alternatives: str) -> None:
    """Fail fast when the host name does not resolve within `seconds`.

    ``getaddrinfo`` has no timeout of its own and a broken resolver can hang for a long time;
    it runs here in a daemon thread with a bound. Skipped when a proxy handles the URL.
    """
    parts = urlsplit(url)
    host = parts.hostname
    if not host or requests.utils.get_environ_proxies(url):
        return
    answer: queue.Queue[BaseException | None] = queue.Queue(maxsize=1)

    def resolve() -> None:
        try:
            socket.getaddrinfo(host, parts.port or (443 if parts.scheme == "https" else 80))
            answer.put(None)
        except BaseException as exc:  # handed to the caller, re-raised there
            answer.put(exc)

    threading.Thread(target=resolve, daemon=True, name=f"resolve {host}").start()
    try:
        err = answer.get(timeout=seconds)
    except queue.Empty:
        raise OfflineError(
            f"cannot reach {url}: resolving {host} took more than {seconds:.0f} s. You seem to be "
            f"offline. Instead, {alternatives}"
        ) from None
    if err is not None:
        raise OfflineError(
            f"cannot reach {url}: {_reason(err)}. You seem to be offline, or the host is down or "
            f"blocked. Instead, {alternatives}"
        ) from err
