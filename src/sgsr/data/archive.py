"""Safe reading of zip and tar archives: extracting one whole, or reading one member.

Every member is checked *before* anything is written or read: an absolute path, a ``..``
component, a symbolic or hard link, or a device/FIFO member refuses the whole archive with an
error naming the member. Files are then written by this code (not ``extractall``) to paths it
computed itself, so nothing in the archive decides where bytes land.

Zip and tar differ only in how their members are listed (:func:`open_members`); the checks and
the copying below are written once for both.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import os
import re
import shutil
import stat
import tarfile
import zipfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import IO

from sgsr.data.fetch import ChecksumError


class UnsafeArchiveError(ValueError):
    """An archive member would escape the target folder or is not a plain file/folder."""


_DRIVE = re.compile(r"^[A-Za-z]:")
#: Largest member :func:`read_member` reads into memory (the biggest real one is 87 MB).
MAX_MEMBER_BYTES = 1 << 30
#: What a member is, as both formats can say it.
FILE, DIR, SYMLINK, HARDLINK, SPECIAL = "file", "dir", "symbolic link", "hard link", "special"


def member_path(name: str, archive: str | os.PathLike[str]) -> PurePosixPath:
    """The safe relative path for member `name`, or UnsafeArchiveError naming it."""
    norm = name.replace("\\", "/")
    if not norm or norm.startswith("/") or _DRIVE.match(norm):
        raise UnsafeArchiveError(
            f"{archive}: member {name!r} has an absolute path; refusing to extract the archive"
        )
    parts = [p for p in norm.split("/") if p not in ("", ".")]
    if ".." in parts:
        raise UnsafeArchiveError(
            f"{archive}: member {name!r} contains '..' (it would be written outside the target "
            "folder); refusing to extract the archive"
        )
    if not parts:
        raise UnsafeArchiveError(f"{archive}: member {name!r} has an empty path; refusing")
    return PurePosixPath(*parts)


@dataclass(frozen=True)
class Member:
    """One archive member: its name as stored, its validated relative path, what it is, its
    size, where a link points, and how to open its bytes (files only)."""

    name: str
    path: PurePosixPath
    kind: str
    size: int
    link: str
    open: Callable[[], IO[bytes] | None]


def _zip_kind(info: zipfile.ZipInfo) -> str:
    mode = info.external_attr >> 16
    if stat.S_ISLNK(mode):
        return SYMLINK
    if stat.S_IFMT(mode) not in (0, stat.S_IFREG, stat.S_IFDIR):  # 0: no Unix mode recorded
        return SPECIAL
    return DIR if info.is_dir() or stat.S_ISDIR(mode) else FILE


def _tar_kind(m: tarfile.TarInfo) -> str:
    if m.issym():
        return SYMLINK
    if m.islnk():
        return HARDLINK
    if m.isdir():
        return DIR
    return FILE if m.isfile() else SPECIAL


@contextlib.contextmanager
def open_members(archive: str | os.PathLike[str]) -> Iterator[list[Member]]:
    """Every member of a zip or tar (plain, gz, bz2, xz), each name validated by
    :func:`member_path` (one bad name refuses the archive), while the archive is open."""
    archive = Path(archive)
    if zipfile.is_zipfile(archive):
        with zipfile.ZipFile(archive) as zf:
            yield [
                Member(i.filename, member_path(i.filename, archive), _zip_kind(i), i.file_size,
                       "", functools.partial(zf.open, i))
                for i in zf.infolist()
            ]  # fmt: skip
    elif tarfile.is_tarfile(archive):
        with tarfile.open(archive) as tf:
            yield [
                Member(m.name, member_path(m.name, archive), _tar_kind(m), m.size, m.linkname,
                       functools.partial(tf.extractfile, m))
                for m in tf.getmembers()
            ]  # fmt: skip
    else:
        raise UnsafeArchiveError(f"{archive}: not a zip or tar archive; cannot read it")


def safe_extract(archive: str | os.PathLike[str], dest: str | os.PathLike[str]) -> list[Path]:
    """Extract a zip or tar (plain, gz, bz2, xz) into `dest`; return the files written.

    All members are validated first; on an unsafe member nothing is extracted.
    """
    archive, dest = Path(archive), Path(dest)
    with open_members(archive) as members:
        for m in members:
            if m.kind in (SYMLINK, HARDLINK):
                raise UnsafeArchiveError(
                    f"{archive}: member {m.name!r} is a {m.kind}"
                    + (f" (to {m.link!r})" if m.link else "")
                    + "; refusing to extract the archive"
                )
            if m.kind == SPECIAL:
                raise UnsafeArchiveError(
                    f"{archive}: member {m.name!r} is a device, FIFO or other special file, not "
                    "a regular file; refusing to extract the archive"
                )
        dest.mkdir(parents=True, exist_ok=True)
        written = []
        for m in members:
            target = _inside(dest, m.path)
            if m.kind == DIR:
                target.mkdir(parents=True, exist_ok=True)
                continue
            target.parent.mkdir(parents=True, exist_ok=True)
            src = m.open()
            if src is None:  # pragma: no cover - regular members always have data
                raise UnsafeArchiveError(f"{archive}: member {m.name!r} has no data")
            with src, open(target, "wb") as out:
                shutil.copyfileobj(src, out, 1 << 20)
            written.append(target)
    return written


def read_member(
    archive: Path, member: str, sha256: str, max_bytes: int = MAX_MEMBER_BYTES
) -> bytes:
    """The bytes of one regular-file member of a zip or tar archive, sha256-checked.

    Every member name is validated first (an absolute path or ``..`` anywhere refuses the whole
    archive, as :func:`safe_extract` does); the member must occur once, be a plain file and hold
    at most `max_bytes`. Nothing is written to disk, so no archive name decides where bytes land.
    """
    with open_members(archive) as members:
        hits = [m for m in members if m.name == member]
        if len(hits) != 1:
            raise UnsafeArchiveError(f"{archive}: member {member!r} occurs {len(hits)} times")
        hit = hits[0]
        if hit.kind != FILE:
            raise UnsafeArchiveError(f"{archive}: member {member!r} is not a regular file")
        if hit.size > max_bytes:
            raise UnsafeArchiveError(f"{archive}: member {member!r} is {hit.size} bytes")
        fh = hit.open()
        assert fh is not None  # regular members always have data
        with fh:
            data = fh.read()
    got = hashlib.sha256(data).hexdigest()
    if got != sha256:
        raise ChecksumError(
            f"{archive}: member {member} has sha256 {got[:12]}..., pinned {sha256[:12]}..."
        )
    return data


def _inside(dest: Path, rel: PurePosixPath) -> Path:
    target = dest.joinpath(*rel.parts)
    root = dest.resolve()
    if not target.resolve().is_relative_to(root):  # a symlinked folder already in dest
        raise UnsafeArchiveError(f"member {rel} would be written outside {dest}; refusing")
    return target
