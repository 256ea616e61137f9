"""Safe extraction of zip and tar archives.

Every member is checked *before* anything is written: an absolute path, a ``..`` component, a
symbolic or hard link, or a device/FIFO member refuses the whole archive with an error naming
the member. Files are then written by this code (not ``extractall``) to paths it computed
itself, so nothing in the archive decides where bytes land.
"""

from __future__ import annotations

import os
import re
import shutil
import stat
import tarfile
import zipfile
from pathlib import Path, PurePosixPath


class UnsafeArchiveError(ValueError):
    """An archive member would escape the target folder or is not a plain file/folder."""


_DRIVE = re.compile(r"^[A-Za-z]:")


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


def safe_extract(archive: str | os.PathLike[str], dest: str | os.PathLike[str]) -> list[Path]:
    """Extract a zip or tar (plain, gz, bz2, xz) into `dest`; return the files written.

    All members are validated first; on an unsafe member nothing is extracted.
    """
    archive, dest = Path(archive), Path(dest)
    if zipfile.is_zipfile(archive):
        return _extract_zip(archive, dest)
    if tarfile.is_tarfile(archive):
        return _extract_tar(archive, dest)
    raise UnsafeArchiveError(f"{archive}: not a zip or tar archive; cannot extract it")


def _inside(dest: Path, rel: PurePosixPath) -> Path:
    target = dest.joinpath(*rel.parts)
    root = dest.resolve()
    if not target.resolve().is_relative_to(root):  # a symlinked folder already in dest
        raise UnsafeArchiveError(f"member {rel} would be written outside {dest}; refusing")
    return target


def _extract_zip(archive: Path, dest: Path) -> list[Path]:
    with zipfile.ZipFile(archive) as zf:
        plan: list[tuple[zipfile.ZipInfo, PurePosixPath]] = []
        for info in zf.infolist():
            rel = member_path(info.filename, archive)
            mode = info.external_attr >> 16
            if stat.S_ISLNK(mode):
                raise UnsafeArchiveError(
                    f"{archive}: member {info.filename!r} is a symbolic link; refusing to "
                    "extract the archive"
                )
            if stat.S_IFMT(mode) not in (0, stat.S_IFREG, stat.S_IFDIR):  # 0: no Unix mode
                raise UnsafeArchiveError(
                    f"{archive}: member {info.filename!r} is not a regular file; refusing"
                )
            plan.append((info, rel))
        dest.mkdir(parents=True, exist_ok=True)
        written = []
        for info, rel in plan:
            target = _inside(dest, rel)
            if info.is_dir():
                target.mkdir(parents=True, exist_ok=True)
                continue
            target.parent.mkdir(parents=True, exist_ok=True)
            with zf.open(info) as src, open(target, "wb") as out:
                shutil.copyfileobj(src, out, 1 << 20)
            written.append(target)
    return written


def _extract_tar(archive: Path, dest: Path) -> list[Path]:
    with tarfile.open(archive) as tf:
        members = tf.getmembers()
        plan: list[tuple[tarfile.TarInfo, PurePosixPath]] = []
        for m in members:
            rel = member_path(m.name, archive)
            if m.issym() or m.islnk():
                kind = "symbolic link" if m.issym() else "hard link"
                raise UnsafeArchiveError(
                    f"{archive}: member {m.name!r} is a {kind} (to {m.linkname!r}); refusing to "
                    "extract the archive"
                )
            if not (m.isfile() or m.isdir()):
                raise UnsafeArchiveError(
                    f"{archive}: member {m.name!r} is a device, FIFO or other special file; "
                    "refusing to extract the archive"
                )
            plan.append((m, rel))
        dest.mkdir(parents=True, exist_ok=True)
        written = []
        for m, rel in plan:
            target = _inside(dest, rel)
            if m.isdir():
                target.mkdir(parents=True, exist_ok=True)
                continue
            target.parent.mkdir(parents=True, exist_ok=True)
            src = tf.extractfile(m)
            if src is None:  # pragma: no cover - isfile() members always have data
                raise UnsafeArchiveError(f"{archive}: member {m.name!r} has no data")
            with src, open(target, "wb") as out:
                shutil.copyfileobj(src, out, 1 << 20)
            written.append(target)
    return written
