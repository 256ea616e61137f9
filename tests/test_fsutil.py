from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from sgsr.fsutil import atomic_path, atomic_write, sha256sum, staged_dir, write_text


def test_atomic_write_replaces_only_on_success(tmp_path: Path) -> None:
    target = tmp_path / "out.txt"
    write_text(target, "old")
    with pytest.raises(RuntimeError), atomic_write(target, "w") as fh:
        fh.write("half")
        raise RuntimeError("crash mid-write")
    assert target.read_text() == "old"
    assert os.listdir(tmp_path) == ["out.txt"], "no temp file may be left behind"


def test_atomic_path_cleans_up_and_gives_normal_permissions(tmp_path: Path) -> None:
    target = tmp_path / "sub" / "img.png"
    with pytest.raises(ValueError), atomic_path(target) as tmp:
        tmp.write_bytes(b"x")
        raise ValueError("bad")
    assert not target.exists() and os.listdir(target.parent) == []
    with atomic_path(target) as tmp:
        tmp.write_bytes(b"png")
    mode = stat.S_IMODE(target.stat().st_mode)
    assert mode & 0o044, f"files must be readable by others like open() makes them, got {oct(mode)}"


def test_sha256sum(tmp_path: Path) -> None:
    p = tmp_path / "a"
    p.write_bytes(b"abc")
    assert sha256sum(p) == "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"


def test_staged_dir_replaces_the_folder_only_when_the_block_succeeds(tmp_path: Path) -> None:
    final = tmp_path / "set"
    final.mkdir()
    (final / "old.png").write_bytes(b"old")
    with pytest.raises(RuntimeError, match="mid-build"), staged_dir(final) as staging:
        assert staging.parent == final.parent and staging != final and staging.is_dir()
        (staging / "new.png").write_bytes(b"half")
        raise RuntimeError("mid-build")
    assert sorted(os.listdir(tmp_path)) == ["set"], "the staging folder must be gone"
    assert os.listdir(final) == ["old.png"] and (final / "old.png").read_bytes() == b"old"

    with staged_dir(final) as staging:
        (staging / "new.png").write_bytes(b"new")
        assert os.listdir(final) == ["old.png"], "final stays as it was until the block ends"
    assert sorted(os.listdir(tmp_path)) == ["set"]
    assert os.listdir(final) == ["new.png"] and (final / "new.png").read_bytes() == b"new"


def test_staged_dir_creates_a_missing_final_and_leaves_nothing_on_interrupt(
    tmp_path: Path,
) -> None:
    final = tmp_path / "a" / "b"
    with pytest.raises(KeyboardInterrupt), staged_dir(final) as staging:
        (staging / "x").write_bytes(b"x")
        raise KeyboardInterrupt
    assert not final.exists() and os.listdir(final.parent) == []
    with staged_dir(final) as staging:
        (staging / "x").write_bytes(b"x")
    assert os.listdir(final) == ["x"]
