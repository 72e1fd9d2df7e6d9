"""`nfsroot initrd ls|diff|extract`: a corpus of malformed initrds, exit codes, and extraction that stays put."""

from __future__ import annotations

import contextlib
import hashlib
import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pipeline.archive.compression import Compression
from pipeline.archive.cpio import HEADER_SIZE, Entry, Kind
from pipeline.archive.extract import extract
from pipeline.cli import EXIT_CHANGES, EXIT_ERROR, EXIT_OK, main
from pipeline.errors import ArchiveError, UnsafePathError
from tests.test_initrd_support import archive, compress, raw_archive

VALID_ENTRIES = [
    Entry.directory("etc"),
    Entry.file("etc/big", bytes(range(256)) * 64),
    Entry.symlink("etc/link", "big"),
]
VALID = archive(VALID_ENTRIES)
FIELDS = ("ino", "mode", "uid", "gid", "nlink", "mtime", "filesize", "devmajor", "devminor", "rdevmajor",
          "rdevminor", "namesize", "check")  # fmt: skip


def with_field(data: bytes, field: str, value: bytes, entry_offset: int = 0) -> bytes:
    """`data` with one 8-character header field of the entry at `entry_offset` replaced."""
    at = entry_offset + 6 + 8 * FIELDS.index(field)
    return data[:at] + value + data[at + 8 :]


def offset_of(data: bytes, name: bytes) -> int:
    return data.index(name + b"\0") - HEADER_SIZE


BIG = offset_of(VALID, b"etc/big")
LINK = offset_of(VALID, b"etc/link")

CORPUS: dict[str, tuple[bytes, str]] = {
    "empty": (b"", "no cpio archive in this file"),
    "zeros": (b"\0" * 4096, "no cpio archive in this file"),
    "junk": (b"this is not an initrd at all", "neither a cpio archive (070701) nor known compressed data"),
    "odc": (b"070707" + b"0" * 200, "old portable (odc) cpio format"),
    "bad-magic": (b"070701" + VALID[6:HEADER_SIZE].replace(b"0", b"Z", 1) + VALID[HEADER_SIZE:], "not 8 hex"),
    "truncated-header": (VALID[:50], "truncated archive: end of data inside a cpio header"),
    "truncated-name": (VALID[: HEADER_SIZE + 2], "truncated archive: end of data inside an entry name"),
    "truncated-data": (VALID[: BIG + HEADER_SIZE + 100], "end of data inside the data of 'etc/big'"),
    "no-trailer": (raw_archive([("a", 0o100644, b"x")], trailer=False), "truncated archive"),
    "non-hex-field": (with_field(VALID, "mode", b"0000G1ED"), "not 8 hex digits"),
    "signed-field": (with_field(VALID, "filesize", b"+0000010", BIG), "not 8 hex digits"),
    "spaced-field": (with_field(VALID, "uid", b"      10"), "not 8 hex digits"),
    "namesize-zero": (with_field(VALID, "namesize", b"00000000"), "name size 0 is absurd"),
    "namesize-huge": (with_field(VALID, "namesize", b"FFFFFFFF"), "name size 4294967295 is absurd"),
    "name-without-nul": (VALID.replace(b"etc\0", b"etcX", 1), "not NUL-terminated"),
    "filesize-huge": (with_field(VALID, "filesize", b"FFFFFFF0", BIG), "truncated archive"),
    "symlink-size-huge": (with_field(VALID, "filesize", b"00100000", LINK), "symlink target size 1048576 is absurd"),
    "unknown-type": (with_field(VALID, "mode", b"000001ED"), "unknown file type in mode 0o755"),
    "dir-with-data": (raw_archive([("d", 0o40755, b"data")]), "a dir entry cannot carry 4 bytes of data"),
    "unaligned": (b"\0\0" + VALID, "must start at a 4-byte-aligned offset"),
    "junk-after-archive": (VALID + b"JUNK", "neither a cpio archive (070701) nor known compressed data"),
    "gzip-truncated": (compress(VALID, Compression.GZIP)[:-30], "gzip data starting at offset 0 is truncated"),
    "gzip-corrupt": (compress(VALID, Compression.GZIP)[:40] + b"\xff" * 60, "gzip data starting at offset 0"),
    "zstd-truncated": (compress(VALID, Compression.ZSTD)[:-9], "zstd data starting at offset 0 is truncated"),
    "zstd-corrupt": (compress(VALID, Compression.ZSTD)[:12] + b"\x13" * 80, "zstd data starting at offset 0"),
    "xz-truncated": (compress(VALID, Compression.XZ)[:-20], "xz data starting at offset 0 is truncated"),
    "bzip2-corrupt": (compress(VALID, Compression.BZIP2)[:20] + b"\0" * 90, "bzip2 data"),
    "lzma-truncated": (compress(VALID, Compression.LZMA)[:-15], "lzma data starting at offset 0"),
    "lz4": (b"\x02\x21\x4c\x18" + b"\0" * 64, "lz4-compressed initrd segments are not supported"),
    "lzo": (b"\x89LZO\0" + b"\0" * 64, "lzo-compressed initrd segments are not supported"),
    "junk-in-compressed": (compress(VALID + b"garbage!", Compression.GZIP), "junk after archive 1"),
    "compressed-without-trailer": (
        compress(raw_archive([("a", 0o100644, b"x")], trailer=False), Compression.ZSTD),
        "truncated archive",
    ),
}


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("malformed")
    paths = {}
    for name, (data, _) in CORPUS.items():
        paths[name] = root / f"{name}.img"
        paths[name].write_bytes(data)
    return paths


@pytest.mark.parametrize("case", sorted(CORPUS))
def test_every_malformed_initrd_gives_a_clear_error_and_exit_1(
    case: str, corpus: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path, expected = corpus[case], CORPUS[case][1]
    good = tmp_path / "good.img"
    good.write_bytes(VALID)
    commands = [
        ["initrd", "ls", str(path)],
        ["initrd", "ls", str(good), str(path)],
        ["initrd", "diff", str(good), f"{good},{path}"],
        ["initrd", "extract", str(path), str(tmp_path / "dest")],
    ]
    for argv in commands:
        assert main(argv) == EXIT_ERROR, argv
        err = capsys.readouterr().err
        assert err.startswith("nfsroot: error: ") and expected in err, (argv, err)
    assert not (tmp_path / "dest").exists()  # nothing was extracted


@pytest.mark.parametrize("case", ["truncated-data", "zstd-corrupt", "namesize-huge", "lz4"])
def test_the_console_script_prints_no_traceback(case: str, corpus: dict[str, Path]) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "pipeline", "initrd", "ls", str(corpus[case])], capture_output=True, text=True
    )
    assert proc.returncode == EXIT_ERROR
    assert "Traceback" not in proc.stderr and proc.stderr.startswith("nfsroot: error: ")


def test_a_missing_file_is_a_clear_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["initrd", "ls", str(tmp_path / "nope.img")]) == EXIT_ERROR
    assert "cannot open" in capsys.readouterr().err


def test_diff_exit_codes_and_output(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    a = tmp_path / "a.img"
    a.write_bytes(VALID)
    b = tmp_path / "b.img"
    b.write_bytes(archive([*VALID_ENTRIES[:1], Entry.file("etc/big", b"changed", 0o600), Entry.file("etc/new", b"")]))
    assert main(["initrd", "diff", str(a), str(a)]) == EXIT_OK
    assert capsys.readouterr().out == "0 added, 0 removed, 0 changed\n"
    assert main(["initrd", "diff", str(a), str(b)]) == EXIT_CHANGES
    lines = capsys.readouterr().out.splitlines()
    old, new = hashlib.sha256(bytes(range(256)) * 64).hexdigest(), hashlib.sha256(b"changed").hexdigest()
    assert lines[0] == f"~ -rw-r--r--     16384 {old[:12]}  =>  -rw-------         7 {new[:12]}  etc/big"
    assert lines[1] == "- lrwxrwxrwx         0 -> big  etc/link"
    assert lines[2].startswith("+ -rw-r--r--         0 e3b0c44298fc  etc/new")
    assert lines[3] == "1 added, 1 removed, 1 changed"


# -- extraction never leaves its destination ---------------------------------------------------------


@pytest.mark.parametrize(
    ("members", "message"),
    [
        ([("/etc/passwd", 0o100644, b"x")], "refusing entry '/etc/passwd'"),
        ([("../escape", 0o100644, b"x")], "refusing entry '../escape'"),
        ([("a", 0o40755, b""), ("a/../../escape", 0o100644, b"x")], "refusing entry 'a/../../escape'"),
    ],
)
def test_extract_refuses_absolute_and_climbing_names(
    members: list[tuple[str, int, bytes]], message: str, tmp_path: Path
) -> None:
    img = tmp_path / "hostile.img"
    img.write_bytes(raw_archive(members))
    with pytest.raises(UnsafePathError, match=message):
        extract([img], tmp_path / "sandbox" / "dest")
    assert not (tmp_path / "sandbox").exists() and not (tmp_path / "escape").exists()


def test_extract_never_writes_through_symlinks(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    img = tmp_path / "hostile.img"
    img.write_bytes(
        raw_archive(
            [
                ("abs", 0o120777, str(outside).encode()),
                ("abs/pwned", 0o100644, b"x"),  # resolved inside the initrd's root, where it has no parent
                ("up", 0o120777, b"../../../../.."),
                ("tmp", 0o40755, b""),
                ("up/tmp/pwned", 0o100644, b"y"),  # ".." stops at the root: lands in DEST/tmp
            ]
        )
    )
    dest = tmp_path / "dest"
    assert main(["initrd", "extract", str(img), str(dest)]) == EXIT_OK
    assert list(outside.iterdir()) == []
    assert (dest / "tmp" / "pwned").read_bytes() == b"y"
    assert os.readlink(dest / "abs") == str(outside)  # kept as a link, never followed
    assert "ignored by the kernel: abs/pwned" in capsys.readouterr().err


def test_extract_wants_an_empty_real_directory(tmp_path: Path) -> None:
    img = tmp_path / "ok.img"
    img.write_bytes(VALID)
    dest = tmp_path / "dest"
    dest.mkdir()
    (dest / "planted").symlink_to(tmp_path)
    with pytest.raises(ArchiveError, match="not empty"):
        extract([img], dest)
    link = tmp_path / "link"
    link.symlink_to(tmp_path / "elsewhere")
    with pytest.raises(UnsafePathError, match="must not be a symlink"):
        extract([img], link)
    assert not (tmp_path / "elsewhere").exists()


_parts = st.sampled_from(["a", "b", "..", ".", "", "c"])
_targets = st.sampled_from(["..", "/", "../..", "a", "a/b", "/a", "OUTSIDE", "../OUTSIDE", "b/../.."])


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    st.lists(
        st.tuples(st.lists(_parts, min_size=1, max_size=4), st.sampled_from(["file", "dir", "symlink"]), _targets),
        max_size=12,
    ),
)
def test_extract_stays_inside_dest_whatever_the_archive(
    tmp_path_factory: pytest.TempPathFactory, members: list[tuple[list[str], str, str]]
) -> None:
    root = tmp_path_factory.mktemp("fuzz")
    outside = root / "OUTSIDE"
    outside.mkdir()
    raw = []
    for parts, kind, target in members:
        name = "/".join(parts)
        if not name.strip("/."):
            continue
        if kind == "file":
            raw.append((name, 0o100644, b"data"))
        elif kind == "dir":
            raw.append((name, 0o40755, b""))
        else:
            raw.append((name, 0o120777, target.replace("OUTSIDE", str(outside)).encode()))
    img = root / "fuzz.img"
    img.write_bytes(raw_archive(raw))
    dest = root / "work" / "dest"
    with contextlib.suppress(UnsafePathError, ArchiveError):
        extract([img], dest)
    assert list(outside.iterdir()) == []
    assert {p.name for p in root.iterdir()} <= {"OUTSIDE", "fuzz.img", "work"}
    for dirpath, dirnames, filenames in os.walk(root / "work"):
        for name in dirnames + filenames:
            st_ = (Path(dirpath) / name).lstat()
            assert stat.S_ISDIR(st_.st_mode) or stat.S_ISREG(st_.st_mode) or stat.S_ISLNK(st_.st_mode)


def test_progress_goes_to_a_terminal_only(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    img = tmp_path / "x.img"
    img.write_bytes(compress(VALID, Compression.ZSTD))
    assert main(["initrd", "ls", str(img)]) == EXIT_OK
    assert capsys.readouterr().err == ""
    monkeypatch.setattr(sys.stderr, "isatty", lambda: True)
    assert main(["initrd", "ls", str(img)]) == EXIT_OK
    captured = capsys.readouterr()
    assert captured.err.endswith("reading x.img: 100%\n") and "reading" not in captured.out


def test_extract_creates_special_files_and_hard_links(tmp_path: Path) -> None:
    img = tmp_path / "special.img"
    img.write_bytes(
        archive(
            [
                Entry.directory("dev", 0o755),
                Entry("dev/null", Kind.OTHER, 0o666, special=stat.S_IFCHR, rdev=(1, 3)),
                Entry("dev/pipe", Kind.OTHER, 0o600, special=stat.S_IFIFO),
                Entry.file("a", b"same", 0o750, inode=1),
                Entry.file("b", b"same", 0o750, inode=1),
                Entry.directory("locked", 0o500),
                Entry.file("locked/inside", b"x", 0o400),
            ]
        )
    )
    dest = tmp_path / "dest"
    result = extract([img], dest, keep_special=True)
    if os.geteuid() == 0:
        assert result.others == 2 and not result.needs_root
        null = (dest / "dev/null").lstat()
        assert stat.S_ISCHR(null.st_mode) and (os.major(null.st_rdev), os.minor(null.st_rdev)) == (1, 3)
    else:
        assert result.needs_root == ["dev/null"]
    assert stat.S_ISFIFO((dest / "dev/pipe").lstat().st_mode)
    assert (dest / "a").stat().st_ino == (dest / "b").stat().st_ino and (dest / "b").read_bytes() == b"same"
    assert stat.S_IMODE((dest / "a").stat().st_mode) == 0o750
    assert stat.S_IMODE((dest / "locked").stat().st_mode) == 0o500  # set after its contents were written
    assert (dest / "locked/inside").read_bytes() == b"x"
