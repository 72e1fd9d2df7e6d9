"""Issue 12, defect 9: `initrd extract` creates no device nodes and no setuid/setgid files unless asked to.

Run as root (as CI does): that is where mknod and setuid root files are possible at all.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest

from pipeline.archive.cpio import Entry, Kind
from pipeline.archive.extract import extract
from pipeline.cli import EXIT_OK, main
from tests.prereq import need
from tests.test_initrd_support import archive

SPECIAL = [
    Entry.directory("dev", 0o755),
    Entry("dev/null", Kind.OTHER, 0o666, special=stat.S_IFCHR, rdev=(1, 3)),
    Entry("dev/sda", Kind.OTHER, 0o660, special=stat.S_IFBLK, rdev=(8, 0)),
    Entry("dev/pipe", Kind.OTHER, 0o622, special=stat.S_IFIFO),
    Entry("dev/sock", Kind.OTHER, 0o777, special=stat.S_IFSOCK),
    Entry.file("bin/su", b"#!/bin/sh\n", 0o4755),
    Entry.file("bin/wall", b"#!/bin/sh\n", 0o2755),
    Entry.file("bin/both", b"", 0o6711),  # empty: created without content
    Entry.file("bin/plain", b"x", 0o751),
    Entry.directory("bin", 0o755),
    Entry.directory("tmp", 0o1777),
    Entry.directory("shared", 0o2775),
    Entry.file("a", b"same", 0o4750, inode=1),  # hard links: one inode, one mode
    Entry.file("b", b"same", 0o4750, inode=1),
]


@pytest.fixture
def umask_077() -> Iterator[None]:
    old = os.umask(0o077)  # a strict umask must not change what is kept
    try:
        yield
    finally:
        os.umask(old)


def _image(tmp_path: Path) -> Path:
    need(os.geteuid() == 0, "creating device nodes and setuid files needs root")
    img = tmp_path / "special.img"
    img.write_bytes(archive(SPECIAL))
    return img


def _modes(root: Path) -> dict[str, int]:
    return {str(p.relative_to(root)): p.lstat().st_mode for p in root.rglob("*")}


def test_extract_by_default_makes_no_special_files_and_strips_setid_bits(tmp_path: Path, umask_077: None) -> None:
    dest = tmp_path / "dest"
    result = extract([_image(tmp_path)], dest)
    modes = _modes(dest)
    assert not any(stat.S_ISCHR(m) or stat.S_ISBLK(m) or stat.S_ISFIFO(m) or stat.S_ISSOCK(m) for m in modes.values())
    assert sorted(result.skipped) == ["dev/null", "dev/pipe", "dev/sda", "dev/sock"] and result.others == 0
    assert sorted(result.stripped) == ["a", "b", "bin/both", "bin/su", "bin/wall", "shared", "tmp"]
    assert all(not m & 0o7000 for m in modes.values()), {k: oct(m) for k, m in modes.items()}
    expected = {"bin/su": 0o755, "bin/wall": 0o755, "bin/both": 0o711, "bin/plain": 0o751, "a": 0o750}
    expected |= {"tmp": 0o777, "shared": 0o775, "dev": 0o755}
    assert {k: stat.S_IMODE(modes[k]) for k in expected} == expected
    assert (dest / "a").stat().st_ino == (dest / "b").stat().st_ino


def test_keep_special_creates_them_with_exact_modes(tmp_path: Path, umask_077: None) -> None:
    dest = tmp_path / "dest"
    result = extract([_image(tmp_path)], dest, keep_special=True)
    assert not result.skipped and not result.stripped and result.others == 4
    modes = _modes(dest)
    want = {e.name: e.st_mode for e in SPECIAL}
    assert {k: oct(modes[k]) for k in want} == {k: oct(m) for k, m in want.items()}
    for name, rdev in (("dev/null", (1, 3)), ("dev/sda", (8, 0))):
        st_rdev = (dest / name).lstat().st_rdev
        assert (os.major(st_rdev), os.minor(st_rdev)) == rdev


def test_the_cli_reports_what_it_left_out_and_has_an_option_to_keep_it(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], umask_077: None
) -> None:
    img = _image(tmp_path)
    assert main(["initrd", "extract", str(img), str(tmp_path / "safe")]) == EXIT_OK
    err = capsys.readouterr().err
    assert "not created (device node, fifo or socket; --keep-special creates it): dev/null" in err
    assert "setuid/setgid/sticky bits removed (--keep-special keeps them): bin/su" in err
    assert main(["initrd", "extract", "--keep-special", str(img), str(tmp_path / "all")]) == EXIT_OK
    assert capsys.readouterr().err == ""
    assert stat.S_IMODE((tmp_path / "all/bin/su").stat().st_mode) == 0o4755
    assert not os.path.lexists(tmp_path / "safe/dev/null")
