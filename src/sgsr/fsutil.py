"""Filesystem helpers: every file the project writes goes through `atomic_write` (one file) or
`staged_dir` (a folder), so a crash or a bad input never leaves a half-written output behind."""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


#: Mode for files we create: what ``open()`` would give (mkstemp alone gives owner-only 0600).
_FILE_MODE = 0o666 & ~_umask()


#: Temp files are ``.<stem, cut to 64 characters>.<pid>.sgsr-tmp-<random><suffix>``: short
#: enough beside any legal file name (255 bytes), and recognisable, with the writer's pid, so
#: :func:`remove_stale_temps` can delete what a killed process left behind.
_TEMP_MARK = ".sgsr-tmp-"
_TEMP_RE = re.compile(r"^\..*\.(\d+)" + re.escape(_TEMP_MARK) + r"[^/]*$")


def _temp_prefix(path: Path) -> str:
    stem = path.stem.encode()[:64].decode(errors="ignore")
    return f".{stem}.{os.getpid()}{_TEMP_MARK}"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's live process
        return True
    return True


def remove_stale_temps(folder: str | os.PathLike[str]) -> list[Path]:
    """Delete the temp files in `folder` that a writer killed mid-write left (its pid is gone);
    returns them. A live writer's temp files are left alone."""
    folder = Path(folder)
    if not folder.is_dir():
        return []
    removed = []
    for entry in folder.iterdir():
        m = _TEMP_RE.match(entry.name)
        if m and entry.is_file() and int(m[1]) != os.getpid() and not _alive(int(m[1])):
            with contextlib.suppress(FileNotFoundError):
                entry.unlink()
                removed.append(entry)
    return removed


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temp path beside `path` for writers that want a filename (PIL, safetensors,
    torch.save); it is renamed over `path` only if the block succeeds, else deleted. The temp
    name keeps `path`'s suffix, for writers that pick a format from it."""
    path = Path(path)
    if not path.name:
        raise ValueError(f"cannot write to {str(path)!r}: the path names no file")
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=_temp_prefix(path), suffix=path.suffix)
    os.close(fd)
    try:
        yield Path(tmp)
        os.chmod(tmp, _FILE_MODE)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


@contextlib.contextmanager
def atomic_write(path: str | os.PathLike[str], mode: str = "wb") -> Iterator:
    """Open a temp file beside `path`; on success flush it to disk and rename it over `path`,
    on error delete it (:func:`atomic_path`)."""
    with atomic_path(path) as tmp, open(tmp, mode) as fh:
        yield fh
        fh.flush()
        os.fsync(fh.fileno())


def write_text(path: str | os.PathLike[str], text: str) -> None:
    with atomic_write(path, "w") as fh:
        fh.write(text)


def sha256sum(path: str | os.PathLike[str], chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            h.update(block)
    return h.hexdigest()


def staging_dir(final: Path) -> Path:
    """A fresh hidden folder beside `final` to build it in (same filesystem, so
    :func:`replace_dir` can rename it into place); a leftover of this process is cleared."""
    final.parent.mkdir(parents=True, exist_ok=True)
    staging = final.with_name(f".{final.name}.tmp-{os.getpid()}")
    if staging.exists():
        shutil.rmtree(staging)
    staging.mkdir()
    return staging


def replace_dir(staging: Path, final: Path) -> None:
    """Put a finished `staging` folder at `final`, replacing what was there.

    Two renames on the same filesystem: readers see the old folder or the new one, never a
    half-written mix; if the second rename fails the old folder is put back.
    """
    old = None
    if final.exists():
        old = final.with_name(f".{final.name}.old-{os.getpid()}")
        if old.exists():
            shutil.rmtree(old)
        os.replace(final, old)
    try:
        os.replace(staging, final)
    except OSError:
        if old is not None:
            os.replace(old, final)
        raise
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


@contextlib.contextmanager
def staged_dir(final: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a fresh staging folder beside `final` to build it in; when the block succeeds the
    folder replaces `final` (:func:`replace_dir`), when it raises (or the process is
    interrupted) the staging folder is deleted and `final` is left exactly as it was."""
    final = Path(final)
    staging = staging_dir(final)
    try:
        yield staging
        replace_dir(staging, final)
    finally:
        if staging.exists():
            shutil.rmtree(staging, ignore_errors=True)
