"""Initrd files: segments, every compression, the kernel's override rules, overlay and repack (synthetic)."""

from __future__ import annotations

import io
import stat
import tempfile
import tracemalloc
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pipeline.archive.compression import Compression
from pipeline.archive.cpio import Entry, Kind, read_entries, write_archive
from pipeline.archive.initrd import (
    build_overlay,
    build_tree,
    content_name,
    effective_tree,
    order_lines,
    overlay_files,
    repack,
    split_segments,
)
from pipeline.archive.segments import Segment
from pipeline.errors import ArchiveError
from tests.test_initrd_support import archive, compress, pad4, raw_archive, require

SUPPORTED = [c for c in Compression if c.supported and c]
MICROCODE_INTEL = [
    Entry.directory("kernel"),
    Entry.directory("kernel/x86"),
    Entry.directory("kernel/x86/microcode"),
    Entry.file("kernel/x86/microcode/GenuineIntel.bin", bytes(range(256)) * 40),
]
MICROCODE_AMD = [*MICROCODE_INTEL[:3], Entry.file("kernel/x86/microcode/AuthenticAMD.bin", b"\xaa" * 999)]
MAIN = [
    Entry.directory("usr"),
    Entry.directory("usr/bin"),
    Entry.symlink("bin", "usr/bin"),
    Entry.file("usr/bin/busybox", b"\x7fELF" + b"b" * 5000, 0o755, inode=1),
    Entry.file("usr/bin/sh", b"\x7fELF" + b"b" * 5000, 0o755, inode=1),
    Entry.file("init", b"#!/bin/sh\nexec run-init\n", 0o755),
    Entry.directory("scripts"),
    Entry.directory("scripts/init-bottom"),
    Entry.file("scripts/init-bottom/udev", b"#!/bin/sh\n", 0o755),
    Entry.file("scripts/init-bottom/ORDER", order_lines("udev")),
    Entry.directory("conf"),
    Entry.directory("conf/conf.d"),
]


def write(path: Path, *parts: bytes) -> Path:
    path.write_bytes(b"".join(parts))
    return path


def debian_like(tmp_path: Path, compression: Compression = Compression.ZSTD) -> tuple[Path, int]:
    """Two plain early archives (as with Intel and AMD microcode), then the compressed main archive."""
    early = pad4(archive(MICROCODE_INTEL)) + b"\0" * 512 + pad4(archive(MICROCODE_AMD))
    return write(tmp_path / "initrd.img", early, compress(archive(MAIN), compression)), len(early)


# -- segments -------------------------------------------------------------------------------------------


@pytest.mark.parametrize("compression", SUPPORTED, ids=lambda c: c.value)
def test_split_segments_finds_each_archive_and_compressed_stream(tmp_path: Path, compression: Compression) -> None:
    path, early = debian_like(tmp_path, compression)
    first = len(archive(MICROCODE_INTEL))
    segments = split_segments(path)
    assert segments[:2] == [
        Segment(0, first, Compression.NONE, 4),
        Segment(early - len(archive(MICROCODE_AMD)), len(archive(MICROCODE_AMD)), Compression.NONE, 4),
    ]
    assert segments[2].offset == early and segments[2].end == path.stat().st_size
    assert (segments[2].compression, segments[2].entries) == (compression, len(MAIN))


def test_a_compressed_stream_may_hold_several_archives(tmp_path: Path) -> None:
    inner = archive(MICROCODE_INTEL) + b"\0" * 8 + archive(MAIN)
    path = write(tmp_path / "i", compress(inner, Compression.GZIP), b"\0" * 3)
    [segment] = split_segments(path)
    assert (segment.entries, segment.archives) == (len(MICROCODE_INTEL) + len(MAIN), 2)


def test_compression_lookup() -> None:
    assert Compression.parse("zst") is Compression.ZSTD and Compression.parse("GZ") is Compression.GZIP
    assert not Compression.NONE and Compression.XZ and Compression.ZSTD.extension == ".zst"
    with pytest.raises(ArchiveError, match=r"unknown compression 'brotli'.*zstd"):
        Compression.parse("brotli")
    with pytest.raises(ArchiveError, match="lz4-compressed initrd segments are not supported"):
        Compression.LZ4.open_writer(io.BytesIO())
    with pytest.raises(ArchiveError, match=r"gzip compression level must be 1\.\.9, not 19"):
        Compression.GZIP.open_writer(io.BytesIO(), level=19)
    with pytest.raises(ArchiveError, match=r"zstd compression level must be 1\.\.22, not 23"):
        Compression.ZSTD.open_writer(io.BytesIO(), level=23)


@pytest.mark.parametrize("compression", SUPPORTED, ids=lambda c: c.value)
def test_compressed_writers_are_deterministic(compression: Compression) -> None:
    data = archive(MAIN) * 50
    assert compress(data, compression) == compress(data, compression)


def test_zstd_output_does_not_depend_on_the_thread_count() -> None:
    data = bytes(range(256)) * 200_000  # 51 MB: several zstd jobs
    outs = []
    for threads in (1, 2, 3):
        out = io.BytesIO()
        writer = Compression.ZSTD.open_writer(out, level=3, threads=threads)
        writer.write(data)
        writer.close()
        outs.append(out.getvalue())
    assert outs[0] == outs[1] == outs[2]


def test_our_zstd_and_xz_output_is_what_the_standard_tools_read(tmp_path: Path) -> None:
    import subprocess

    data = archive(MAIN)
    for tool, compression in (("zstd", Compression.ZSTD), ("xz", Compression.XZ), ("gzip", Compression.GZIP)):
        exe = require(tool)
        out = subprocess.run([exe, "-dc"], input=compress(data, compression), capture_output=True, check=True)
        assert out.stdout == data
    xz_file = write(tmp_path / "a.xz", compress(data, Compression.XZ))
    xz = subprocess.run([require("xz"), "--robot", "--list", str(xz_file)], capture_output=True, check=True)
    assert b"\tCRC32\t" in xz.stdout  # the kernel's xz decoder verifies only CRC32 checks


# -- the kernel's override rules --------------------------------------------------------------------------


def tree_of(tmp_path: Path, *archives: list[Entry]) -> dict[str, tuple[object, ...]]:
    parts = [pad4(archive(a)) for a in archives]
    entries = effective_tree([write(tmp_path / "t.img", *parts)])
    return {n: (i.kind, stat.filemode(i.st_mode), i.size, i.target) for n, i in entries.items()}


def test_later_archives_override_earlier_ones(tmp_path: Path) -> None:
    tree = tree_of(
        tmp_path,
        MAIN,
        [
            Entry.file("init", b"new", 0o700),  # a regular file is rewritten, mode too
            Entry.directory("scripts", 0o700),  # a directory over a directory: only its mode changes
            Entry.file("scripts/init-bottom", b"x"),  # cannot replace a non-empty directory
            Entry.file("orphan/file", b"x"),  # parents are not created
            Entry.file("bin/tool", b"tool", 0o755),  # through the bin -> usr/bin symlink
        ],
    )
    assert tree["init"] == (Kind.FILE, "-rwx------", 3, "")
    assert tree["scripts"][1] == "drwx------"
    assert tree["scripts/init-bottom"][0] is Kind.DIR
    assert "orphan/file" not in tree and "bin/tool" not in tree
    assert tree["usr/bin/tool"] == (Kind.FILE, "-rwxr-xr-x", 4, "")
    assert tree["bin"] == (Kind.SYMLINK, "lrwxrwxrwx", 0, "usr/bin")


def test_a_directory_entry_for_bin_destroys_the_merged_usr_symlink(tmp_path: Path) -> None:
    tree = tree_of(tmp_path, MAIN, [Entry.directory("bin"), Entry.file("bin/x", b"")])
    assert tree["bin"][0] is Kind.DIR and "bin/x" in tree and "usr/bin/x" not in tree


def test_hard_links_share_content_until_rewritten(tmp_path: Path) -> None:
    path = write(tmp_path / "i", pad4(archive(MAIN)), pad4(archive([Entry.file("usr/bin/sh", b"dash", 0o755)])))
    tree = build_tree([path])
    entries = tree.entries()
    # O_TRUNC rewrites the shared inode: busybox changes too, as it would in the kernel.
    assert entries["usr/bin/busybox"].sha256 == entries["usr/bin/sh"].sha256
    assert entries["usr/bin/busybox"].size == 4 and entries["usr/bin/sh"].links == 2


def test_hard_links_do_not_reach_across_archives(tmp_path: Path) -> None:
    first = archive([Entry.file("a", b"one", inode=5), Entry.file("b", b"one", inode=5)])
    second = archive([Entry.file("c", b"two", inode=5), Entry.file("d", b"two", inode=5)])
    entries = effective_tree([write(tmp_path / "i", first, second)])
    assert (entries["a"].links, entries["c"].links) == (2, 2)
    assert entries["a"].sha256 != entries["c"].sha256


def test_dropped_entries_are_reported(tmp_path: Path) -> None:
    hostile = [("missing/parent", 0o100644, b"x"), ("a", 0o40755, b""), ("a/../../b", 0o100644, b"y")]
    path = write(tmp_path / "i", raw_archive(hostile))
    tree = build_tree([path])
    assert [(d.name, d.reason) for d in tree.dropped] == [("missing/parent", "its parent directory does not exist")]
    assert set(tree.entries()) == {"a", "b"}  # ".." at the root stays at the root


def test_several_files_are_read_in_order_like_pxelinux(tmp_path: Path) -> None:
    base, _ = debian_like(tmp_path)
    overlay = write(tmp_path / "overlay.img", build_overlay(overlay_files(b"#!/bin/sh\n"), mtime=0))
    entries = effective_tree([base, overlay])
    assert entries["scripts/init-bottom/nfsroot"].mode == 0o755
    assert entries["kernel/x86/microcode/AuthenticAMD.bin"].size == 999
    assert entries["bin"].kind is Kind.SYMLINK  # the overlay has no directory entry for bin
    assert entries["scripts/init-bottom/ORDER"].size == len(order_lines("udev"))  # untouched: the hook appends


# -- overlay ----------------------------------------------------------------------------------------------


def test_overlay_holds_exactly_the_script_the_hook_and_their_directories() -> None:
    entries = overlay_files(b"#!/bin/sh\necho hi\n", "nfsroot")
    assert {(e.name, e.kind, e.mode) for e in entries} == {
        ("conf", Kind.DIR, 0o755),
        ("conf/conf.d", Kind.DIR, 0o755),
        ("scripts", Kind.DIR, 0o755),
        ("scripts/init-bottom", Kind.DIR, 0o755),
        ("scripts/init-bottom/nfsroot", Kind.FILE, 0o755),
        ("conf/conf.d/nfsroot-order", Kind.FILE, 0o644),
    }
    data = build_overlay(entries, mtime=0)
    assert data == build_overlay(list(reversed(entries)), mtime=0)
    assert len(data) % 4 == 0 and data.startswith(b"070701")
    assert {e.name for e in read_entries(io.BytesIO(data))} == {e.name for e in entries}


def test_overlay_refuses_directories_that_shadow_merged_usr_symlinks() -> None:
    for name in ("bin", "sbin", "lib", "lib64"):
        with pytest.raises(ArchiveError, match=f"would replace the distro's {name} -> usr/{name}"):
            build_overlay([Entry.directory(name)], mtime=0)
    with pytest.raises(ArchiveError, match="invalid init-bottom script name"):
        overlay_files(b"", "../evil")


def test_content_name_follows_the_bytes() -> None:
    assert content_name(b"a") == content_name(b"a") != content_name(b"b")
    assert content_name(b"a").startswith("nfsroot-") and content_name(b"a", suffix=".cpio").endswith(".cpio")


# -- repack -----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("compression", [Compression.ZSTD, Compression.GZIP, Compression.XZ, Compression.NONE])
def test_repack_keeps_early_segments_byte_identical(tmp_path: Path, compression: Compression) -> None:
    src, early = debian_like(tmp_path)
    out = tmp_path / "out.img"
    extra = overlay_files(b"#!/bin/sh\necho nfsroot\n")
    repack(src, extra, out, compression=compression, mtime=7)
    assert out.read_bytes()[:early] == src.read_bytes()[:early]
    segments = split_segments(out)
    assert [s.compression for s in segments] == [Compression.NONE, Compression.NONE, compression]
    assert segments[2].offset == early and segments[2].entries == len(MAIN) + 2  # the script and the hook
    entries = effective_tree([out])
    assert entries["scripts/init-bottom/nfsroot"].mode == 0o755
    order = _member(out, "scripts/init-bottom/ORDER")
    assert order == order_lines("udev") + order_lines("nfsroot")  # ours after the distro's
    assert entries["usr/bin/sh"].links == 2 and entries["bin"].target == "usr/bin"
    again = tmp_path / "again.img"
    repack(src, extra, again, compression=compression, mtime=7)
    assert again.read_bytes() == out.read_bytes()


def _member(path: Path, name: str) -> bytes:
    from pipeline.archive.segments import open_initrd, scan

    found = b""
    with open_initrd(path) as handle:
        for stream in scan(handle, str(path)):
            for member in stream.members():
                if member.name == name:
                    found = member.read()
    return found


def test_repack_replaces_a_file_and_keeps_an_existing_order_line(tmp_path: Path) -> None:
    src, _ = debian_like(tmp_path)
    out = tmp_path / "out.img"
    repack(src, [Entry.file("scripts/init-bottom/udev", b"ours", 0o700)], out, mtime=0)
    assert _member(out, "scripts/init-bottom/udev") == b"ours"
    assert _member(out, "scripts/init-bottom/ORDER") == order_lines("udev")  # listed once only


def test_repack_refuses_what_would_break_the_initrd(tmp_path: Path) -> None:
    src, _ = debian_like(tmp_path)
    out = tmp_path / "out.img"
    with pytest.raises(ArchiveError, match="replace the distro's symlink 'bin' by a dir"):
        repack(src, [Entry.directory("bin")], out, mtime=0)
    with pytest.raises(ArchiveError, match="its parent directory 'etc/x' is in neither archive"):
        repack(src, [Entry.file("etc/x/y", b"")], out, mtime=0)
    with pytest.raises(ArchiveError, match="one of several hard links"):
        repack(src, [Entry.file("usr/bin/sh", b"")], out, mtime=0)
    assert not out.exists()  # nothing half-written


def test_repack_reports_progress(tmp_path: Path) -> None:
    src, _ = debian_like(tmp_path)
    seen: list[tuple[int, int]] = []
    repack(src, [], tmp_path / "o.img", mtime=0, progress=lambda done, total: seen.append((done, total)))
    assert seen[-1] == (src.stat().st_size, src.stat().st_size)


@pytest.mark.parametrize("compression", [Compression.GZIP, Compression.ZSTD, Compression.XZ], ids=lambda c: c.value)
def test_decoders_hand_out_bounded_chunks(tmp_path: Path, compression: Compression) -> None:
    """A small compressed file that expands to 64 MiB is read without ever holding much of it."""
    zeros = 64 << 20
    sparse = tmp_path / "sparse"
    with sparse.open("wb") as handle:
        handle.truncate(zeros)
    raw = tmp_path / "raw.cpio"
    with raw.open("wb") as handle:
        write_archive([Entry.file("zeros", sparse)], handle, mtime=0)
    packed = tmp_path / "packed.img"
    with raw.open("rb") as src, packed.open("wb") as dest:
        writer = compression.open_writer(dest, level=1, threads=1)
        while chunk := src.read(1 << 20):
            writer.write(chunk)
        writer.close()
    assert packed.stat().st_size < zeros // 100
    tracemalloc.start()
    try:
        [segment] = split_segments(packed)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert segment.entries == 1 and segment.end == packed.stat().st_size
    assert peak < 12 << 20, peak


_ARCHIVES = [archive(MICROCODE_INTEL), archive(MICROCODE_AMD), archive(MAIN), archive([Entry.file("x", b"")])]
_COUNTS = [len(MICROCODE_INTEL), len(MICROCODE_AMD), len(MAIN), 1]


@settings(max_examples=40, deadline=None)
@given(
    st.lists(
        st.tuples(st.integers(0, 3), st.sampled_from([Compression.NONE, *SUPPORTED]), st.integers(0, 3)),
        min_size=1,
        max_size=5,
    )
)
def test_split_segments_recovers_any_layout(layout: list[tuple[int, Compression, int]]) -> None:
    """Any run of plain and compressed archives with zero padding between splits back into exactly those."""
    blob = b""
    expected = []
    for which, compression, padding in layout:
        blob += b"\0" * (4 * padding if compression else 4 * padding + (-len(blob) % 4))
        data = compress(_ARCHIVES[which], compression, level=1) if compression else _ARCHIVES[which]
        expected.append(Segment(len(blob), len(data), compression, _COUNTS[which]))
        blob += data
    with tempfile.TemporaryDirectory() as tmp:
        path = write(Path(tmp) / "layout.img", blob, b"\0" * 8)
        assert split_segments(path) == expected


@pytest.mark.parametrize("source", [Compression.GZIP, Compression.XZ, Compression.BZIP2, Compression.NONE])
def test_repack_reads_any_supported_source_compression(tmp_path: Path, source: Compression) -> None:
    src, early = debian_like(tmp_path, source)
    out = tmp_path / "out.img"
    repack(src, overlay_files(b"#!/bin/sh\n"), out, mtime=0)
    segments = split_segments(out)
    assert out.read_bytes()[:early] == src.read_bytes()[:early]
    assert (segments[-1].compression, segments[-1].entries) == (Compression.ZSTD, len(MAIN) + 2)
