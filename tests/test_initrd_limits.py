"""Issue 12, defect 7: what `initrd ls/diff/extract` hold in memory is bounded, whatever an initrd declares.

Decoders get a memory limit (a segment header may declare any dictionary or window); a huge number of
entries costs little per entry. Peak memory is measured as the VmHWM of a child process.
"""

from __future__ import annotations

import hashlib
import re
import struct
import subprocess
import sys
import zlib
from pathlib import Path

import pytest
import zstandard

from pipeline.archive.compression import Compression
from pipeline.archive.cpio import CpioWriter, Entry, Kind
from pipeline.archive.repack import ORDER_MAX, repack
from pipeline.archive.tree import MAX_DROPPED, build_tree, effective_tree
from pipeline.cli import EXIT_ERROR, EXIT_OK, main
from pipeline.errors import ArchiveError
from tests.test_initrd_support import archive, compress, pad4, raw_archive

REPO = Path(__file__).resolve().parent.parent
DATA = archive([Entry.directory("etc"), Entry.file("etc/motd", b"hello\n" * 2000)])
GIB = 1 << 30


def _lzma_declaring(dictionary: int) -> bytes:
    """A valid .lzma stream whose header declares `dictionary` bytes (decoding it needs no more than it did)."""
    data = bytearray(compress(DATA, Compression.LZMA))
    data[1:5] = struct.pack("<I", dictionary)
    return bytes(data)


def _xz_declaring(props: int) -> bytes:
    """A valid .xz stream whose LZMA2 filter declares dictionary size code `props` (40: 4 GiB - 1)."""
    data = bytearray(compress(DATA, Compression.XZ, level=0))
    header_size = (data[12] + 1) * 4  # the block header follows the 12-byte stream header
    assert data[13] == 0 and data[14:16] == b"\x21\x01"  # one filter, no sizes; LZMA2 with 1 property byte
    data[16] = props
    data[12 + header_size - 4 : 12 + header_size] = struct.pack("<I", zlib.crc32(data[12 : 12 + header_size - 4]))
    return bytes(data)


def _zstd_declaring(descriptor: int) -> bytes:
    """A valid zstd frame (no content size, so not single-segment) with window descriptor byte `descriptor`."""
    data = bytearray(zstandard.ZstdCompressor(level=3, write_content_size=False).compress(DATA))
    assert data[4] & 0x20 == 0  # the window descriptor is byte 5
    data[5] = descriptor
    return bytes(data)


@pytest.mark.parametrize(
    ("name", "data", "message"),
    [
        ("lzma-1g", _lzma_declaring(GIB), "lzma data starting at offset 512 needs more than 160 MiB of memory"),
        ("xz-1g", _xz_declaring(36), "xz data starting at offset 512 needs more than 160 MiB of memory"),
        ("xz-4g", _xz_declaring(40), "xz data starting at offset 512 needs more than 160 MiB of memory"),
        ("zstd-2g", _zstd_declaring(21 << 3), "zstd data starting at offset 512 declares a 2048 MiB window"),
        ("zstd-256m", _zstd_declaring(18 << 3), "zstd data starting at offset 512 declares a 256 MiB window"),
    ],
)
def test_a_segment_declaring_a_huge_dictionary_is_refused_naming_its_offset(
    name: str, data: bytes, message: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    img = tmp_path / f"{name}.img"
    img.write_bytes(pad4(archive([Entry.directory("early")])).ljust(512, b"\0") + data)
    assert main(["initrd", "ls", str(img)]) == EXIT_ERROR
    err = capsys.readouterr().err
    assert message in err, err
    if name == "lzma-1g":
        assert "declares a 1024 MiB dictionary" in err


@pytest.mark.parametrize(
    ("name", "data"),
    [
        ("lzma-64m", _lzma_declaring(64 << 20)),  # lzma -9
        ("xz-64m", _xz_declaring(28)),  # xz -9
        ("zstd-128m", _zstd_declaring(17 << 3)),  # zstd --ultra -22, --long: what the kernel's build makes
    ],
)
def test_dictionaries_that_real_tools_make_are_still_read(
    name: str, data: bytes, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    img = tmp_path / f"{name}.img"
    img.write_bytes(data)
    assert main(["initrd", "ls", str(img)]) == EXIT_OK
    assert capsys.readouterr().out.endswith(" 12000  etc/motd\n")


MILLION = 1_000_000
CHILD = r"""
import re, sys
from pathlib import Path
from pipeline.cli import main
code = main(sys.argv[1:])
hwm = re.search(r"VmHWM:\s*(\d+) kB", Path("/proc/self/status").read_text())
print(f"VmHWM {int(hwm.group(1)) // 1024} MB exit {code}", file=sys.stderr)
"""


def _peak_mb(argv: list[str], out: Path) -> tuple[int, int]:
    """Peak RSS (MB) and exit code of `nfsroot ARGV` run in a child process of its own, stdout into `out`."""
    with out.open("wb") as stdout:
        proc = subprocess.run([sys.executable, "-c", CHILD, *argv], cwd=REPO, stdout=stdout, stderr=subprocess.PIPE)
    found = re.search(rb"VmHWM (\d+) MB exit (\d+)", proc.stderr)
    assert found, proc.stderr.decode(errors="replace")[-3000:]
    return int(found.group(1)), int(found.group(2))


@pytest.fixture(scope="module")
def million(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A zstd initrd of a million empty files in one directory (about 5 MB; 124 MB of cpio)."""
    path = tmp_path_factory.mktemp("million") / "million.img"
    with path.open("wb") as raw:
        out = zstandard.ZstdCompressor(level=3).stream_writer(raw, closefd=False)
        writer = CpioWriter(out, mtime=0)
        writer.add("d", 0o40755, ino=1, nlink=2)
        for i in range(MILLION):
            writer.add(f"d/{i:07d}", 0o100644, ino=i + 2)
        writer.close()
        out.flush(zstandard.FLUSH_FRAME)
    return path


def test_ls_of_a_million_entries_stays_small(million: Path, tmp_path: Path) -> None:
    peak, code = _peak_mb(["initrd", "ls", str(million)], tmp_path / "ls.txt")
    assert code == EXIT_OK
    with (tmp_path / "ls.txt").open("rb") as listing:
        assert sum(1 for _ in listing) == MILLION + 4  # path, segment, "effective tree", d, the files
    assert peak < 150, f"initrd ls of {MILLION} entries peaked at {peak} MB"


def test_diff_of_two_million_entry_trees_stays_small(million: Path, tmp_path: Path) -> None:
    peak, code = _peak_mb(["initrd", "diff", str(million), str(million)], tmp_path / "diff.txt")
    assert code == EXIT_OK and (tmp_path / "diff.txt").read_text() == "0 added, 0 removed, 0 changed\n"
    assert peak < 300, f"initrd diff of two trees of {MILLION} entries peaked at {peak} MB"


def test_shared_records_never_leak_a_change_to_another_path(tmp_path: Path) -> None:
    """Identical empty files share one record; a hard link's later rewrite still reaches all its names only."""
    first = raw_archive(
        [("a", 0o100644, b""), ("b", 0o100644, b""), ("c", 0o100644, b""), ("d", 0o40755, b""), ("e", 0o40755, b"")]
    )
    linked = archive([Entry.file("a", b"", inode=7), Entry.file("b", b"", inode=7)])  # a and b: one inode
    rewrite = archive([Entry.file("b", b"new", 0o600), Entry("d", Kind.DIR, 0o700)])
    img = tmp_path / "i.img"
    img.write_bytes(pad4(first) + pad4(linked) + pad4(rewrite))
    entries = effective_tree([img])
    assert entries["a"].sha256 == entries["b"].sha256 == hashlib.sha256(b"new").hexdigest()
    assert (entries["a"].mode, entries["a"].links, entries["b"].links) == (0o600, 2, 2)
    assert (entries["c"].size, entries["c"].mode, entries["c"].links) == (0, 0o644, 1)
    assert (entries["d"].mode, entries["e"].mode) == (0o700, 0o755)


def test_only_the_first_dropped_entries_are_named(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    img = tmp_path / "orphans.img"
    img.write_bytes(raw_archive([(f"missing/{i}", 0o100644, b"") for i in range(MAX_DROPPED + 500)]))
    assert main(["initrd", "ls", str(img)]) == EXIT_OK
    lines = capsys.readouterr().out.splitlines()
    named = [line for line in lines if line.startswith("ignored by the kernel: missing/")]
    assert len(named) == MAX_DROPPED and lines[-1] == "ignored by the kernel: 500 more entries"
    assert main(["initrd", "extract", str(img), str(tmp_path / "dest")]) == EXIT_OK
    assert capsys.readouterr().err.splitlines()[-1] == "ignored by the kernel: 500 more entries"


def test_names_the_kernel_cannot_create_are_dropped_not_kept(tmp_path: Path) -> None:
    """A component over NAME_MAX (255 bytes) fails with ENAMETOOLONG in the kernel: no entry, no memory for it."""
    img = tmp_path / "long.img"
    longest, too_long, too_long_utf8 = "x" * 255, "y" * 256, "é" * 128  # the last: 256 bytes in 128 characters
    img.write_bytes(
        raw_archive([("d", 0o40755, b""), *((f"d/{n}", 0o100644, b"") for n in (longest, too_long, too_long_utf8))])
    )
    tree = build_tree([img])
    assert set(tree.entries()) == {"d", f"d/{longest}"}
    assert {d.name for d in tree.dropped} == {f"d/{too_long}", f"d/{too_long_utf8}"}
    assert all("longer than 255 bytes" in d.reason for d in tree.dropped)


def test_entries_deep_down_a_long_path_cost_their_own_names_only(tmp_path: Path) -> None:
    """50,000 files under a 3,765-byte directory path: 200 MB of paths, unless only each name is kept."""
    img = tmp_path / "deep.img"
    with img.open("wb") as raw:
        out = zstandard.ZstdCompressor(level=3).stream_writer(raw, closefd=False)
        writer = CpioWriter(out, mtime=0)
        path = ""
        for i in range(15):
            path = f"{path}/{chr(97 + i) * 250}".lstrip("/")
            writer.add(path, 0o40755, ino=i + 1, nlink=2)
        for i in range(50_000):
            writer.add(f"{path}/{i:05d}", 0o100644, ino=i + 100)
        writer.close()
        out.flush(zstandard.FLUSH_FRAME)
    peak, code = _peak_mb(["initrd", "diff", str(img), str(img)], tmp_path / "diff.txt")
    assert code == EXIT_OK and (tmp_path / "diff.txt").read_text() == "0 added, 0 removed, 0 changed\n"
    assert peak < 100, f"initrd diff of two trees of 50,000 deep entries peaked at {peak} MB"
    print(f"initrd diff, two trees of 50,000 entries under a 3,765-byte path: VmHWM {peak} MB")


def test_listing_order_is_that_of_sorted_whole_paths(tmp_path: Path) -> None:
    names = ["lib", "lib.so", "lib/x", "lib/x/y", "lib0", "a-b", "a", "a/c", "a b", "a/c d", "a/c/e", "z", "é", "é/!"]
    dirs = {n.rpartition("/")[0] for n in names}
    img = tmp_path / "order.img"
    img.write_bytes(raw_archive([(n, 0o40755 if n in dirs else 0o100644, b"") for n in names]))
    assert list(build_tree([img]).entries()) == sorted(names)


def test_many_symlinks_to_one_long_target_hold_it_once(tmp_path: Path) -> None:
    img = tmp_path / "links.img"
    target = "t" * 4000
    with img.open("wb") as raw:
        out = zstandard.ZstdCompressor(level=3).stream_writer(raw, closefd=False)
        writer = CpioWriter(out, mtime=0)
        for i in range(50_000):
            writer.add(f"{i:05d}", 0o120777, ino=i + 1, size=len(target), chunks=[target.encode()])
        writer.close()
        out.flush(zstandard.FLUSH_FRAME)
    peak, code = _peak_mb(["initrd", "diff", str(img), str(img)], tmp_path / "diff.txt")
    assert code == EXIT_OK
    assert peak < 100, f"initrd diff of two trees of 50,000 symlinks to a 4,000-byte target peaked at {peak} MB"


def test_repack_refuses_to_read_a_huge_order_file(tmp_path: Path) -> None:
    main = archive(
        [
            Entry.directory("scripts"),
            Entry.directory("scripts/init-bottom"),
            Entry.file("scripts/init-bottom/ORDER", b"#\n" * ORDER_MAX),
        ]
    )
    src = tmp_path / "distro.img"
    src.write_bytes(compress(main, Compression.ZSTD))
    out = tmp_path / "out.img"
    with pytest.raises(ArchiveError, match=f"ORDER is {2 * ORDER_MAX} bytes; refusing"):
        repack(src, [Entry.file("scripts/init-bottom/ours", b"#!/bin/sh\n", 0o755)], out, mtime=0)
    assert not out.exists()
