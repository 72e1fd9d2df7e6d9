"""The newc reader and writer: round trips (property-based), determinism, streaming, GNU cpio both ways."""

from __future__ import annotations

import io
import os
import stat
import subprocess
import tracemalloc
from collections.abc import Iterable
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pipeline.archive.cpio import (
    CHUNK,
    Entry,
    Kind,
    normalize_name,
    read_archive,
    read_entries,
    write_archive,
)
from pipeline.errors import ArchiveError
from tests.test_initrd_support import archive, require

Canon = dict[str, tuple[object, ...]]


def canonical(entries: Iterable[Entry]) -> tuple[Canon, set[frozenset[str]]]:
    """What a tree *is*, independent of inode numbers and of which hard link carries the data."""
    entries = list(entries)
    groups: dict[int, list[Entry]] = {}
    for e in entries:
        if e.inode:
            groups.setdefault(e.inode, []).append(e)
    content: dict[int, bytes] = {}
    for ino, members in groups.items():
        content[ino] = next((bytes_of(e) for e in members if e.size), b"")
    tree: Canon = {}
    for e in entries:
        data = content[e.inode] if e.inode else bytes_of(e)
        tree[e.name] = (e.kind, e.mode, data, e.target, e.special, e.rdev if e.kind is Kind.OTHER else (0, 0))
    links = {frozenset(e.name for e in members) for members in groups.values() if len(members) > 1}
    return tree, links


def bytes_of(entry: Entry) -> bytes:
    return b"".join(entry.chunks()) if entry.kind is Kind.FILE else b""


SAMPLE = [
    Entry.directory("etc"),
    Entry.directory("etc/empty-dir", 0o700),
    Entry.file("etc/hosts", b"127.0.0.1 localhost\n"),
    Entry.file("etc/empty", b""),
    Entry.file("etc/setuid", b"#!/bin/sh\n", 0o4755),
    Entry.file("etc/sticky name with spaces", b"x" * 3, 0o1777),
    Entry.file("etc/ünïcödé", "ü".encode() * 5),
    Entry.symlink("etc/link", "hosts"),
    Entry.symlink("etc/abs", "/usr/bin/busybox"),
    Entry.file("etc/hard-a", b"shared content", 0o755, inode=9),
    Entry.file("etc/hard-b", b"shared content", 0o755, inode=9),
    Entry.file("etc/hard-c", b"shared content", 0o755, inode=9),
    Entry("etc/fifo", Kind.OTHER, 0o600, special=stat.S_IFIFO),
    Entry("etc/null", Kind.OTHER, 0o666, special=stat.S_IFCHR, rdev=(1, 3)),
    Entry("etc/sda", Kind.OTHER, 0o660, special=stat.S_IFBLK, rdev=(8, 0)),
]


def test_round_trip_keeps_every_kind_mode_link_and_byte() -> None:
    data = archive(SAMPLE, mtime=1234)
    back = read_entries(io.BytesIO(data))
    assert canonical(back) == canonical(SAMPLE)
    assert all((e.uid, e.gid, e.mtime) == (0, 0, 1234) for e in back)
    assert [e.name for e in back] == sorted(e.name for e in SAMPLE)
    hard = [e for e in back if e.name.startswith("etc/hard-")]
    assert {e.nlink for e in hard} == {3} and len({e.inode for e in hard}) == 1
    # As GNU cpio does, only the last link carries the data.
    assert [e.size for e in hard] == [0, 0, len(b"shared content")]


def test_output_is_deterministic_whatever_the_input_order() -> None:
    assert archive(SAMPLE) == archive(reversed(SAMPLE)) == archive(sorted(SAMPLE, key=lambda e: e.mode))
    assert archive(SAMPLE, mtime=1) != archive(SAMPLE, mtime=2)


def test_inodes_are_renumbered_in_name_order() -> None:
    members = [m.header for m in read_archive(io.BytesIO(archive(SAMPLE)))]
    inos = [h.ino for h in members if not h.name.startswith("etc/hard-")]
    assert inos == sorted(inos) and len(set(inos)) == len(inos)
    assert {h.dev for h in members} == {(0, 0)}


# -- property-based round trip ------------------------------------------------------------------------

_names = st.text(
    alphabet=st.characters(blacklist_characters="/\0", blacklist_categories=("Cs",)), min_size=1, max_size=10
).filter(lambda s: s not in (".", "..", "TRAILER!!!"))
_modes = st.integers(0, 0o7777)


@st.composite
def trees(draw: st.DrawFn) -> list[Entry]:
    dirs = [""]
    entries: dict[str, Entry] = {}
    for _ in range(draw(st.integers(0, 30))):
        parent = draw(st.sampled_from(dirs))
        name = draw(_names)
        path = f"{parent}/{name}" if parent else name
        if path in entries:
            continue
        kind = draw(st.sampled_from(["dir", "file", "file", "symlink", "hardlink", "special"]))
        if kind == "dir":
            entries[path] = Entry.directory(path, draw(_modes))
            dirs.append(path)
        elif kind == "file":
            entries[path] = Entry.file(path, draw(st.binary(max_size=3000)), draw(_modes))
        elif kind == "symlink":
            entries[path] = Entry.symlink(path, draw(st.text(min_size=1, max_size=50).filter(lambda t: "\0" not in t)))
        elif kind == "hardlink":
            data, mode, ino = draw(st.binary(max_size=200)), draw(_modes), draw(st.integers(1, 3))
            same = [e for e in entries.values() if e.inode == ino]
            if same:  # a hard link shares content and mode with its group
                data, mode = bytes_of(same[0]), same[0].mode
            entries[path] = Entry.file(path, data, mode, inode=ino)
        else:
            special = draw(st.sampled_from([stat.S_IFCHR, stat.S_IFBLK, stat.S_IFIFO, stat.S_IFSOCK]))
            rdev = draw(st.tuples(st.integers(0, 4095), st.integers(0, 0xFFFFF)))
            has_dev = special in (stat.S_IFCHR, stat.S_IFBLK)
            entries[path] = Entry(path, Kind.OTHER, draw(_modes), special=special, rdev=rdev if has_dev else (0, 0))
    return list(entries.values())


@settings(max_examples=150, deadline=None)
@given(trees(), st.integers(0, 0xFFFFFFFF))
def test_write_then_read_gives_the_same_tree(tree: list[Entry], mtime: int) -> None:
    data = archive(tree, mtime)
    assert len(data) % 4 == 0
    back = read_entries(io.BytesIO(data))
    assert canonical(back) == canonical(tree)
    assert {(e.uid, e.gid, e.mtime) for e in back} <= {(0, 0, mtime)}
    assert archive(back, mtime) == data  # what we read writes back to the same bytes


@settings(max_examples=100, deadline=None)
@given(st.binary(max_size=400))
def test_reading_garbage_fails_with_archive_error_only(garbage: bytes) -> None:
    for blob in (garbage, b"070701" + garbage, archive(SAMPLE)[:64] + garbage):
        try:
            for member in read_archive(io.BytesIO(blob)):
                member.read()
        except ArchiveError:
            pass


# -- streaming ------------------------------------------------------------------------------------------


def test_large_files_stream_in_bounded_memory(tmp_path: Path) -> None:
    big = tmp_path / "big"
    size = 48 * CHUNK + 3
    with big.open("wb") as handle:
        handle.truncate(size)
        handle.seek(size - 5)
        handle.write(b"tail!")
    out = tmp_path / "big.cpio"
    tracemalloc.start()
    try:
        with out.open("wb") as handle:
            write_archive([Entry.file("big", big), Entry.file("small", b"hi")], handle, mtime=0)
        _, written_peak = tracemalloc.get_traced_memory()
        tracemalloc.reset_peak()
        seen = 0
        last = b""
        with out.open("rb") as handle:
            for member in read_archive(handle):
                for chunk in member.chunks():
                    seen += len(chunk)
                    last = chunk
        _, read_peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert seen == size + 2 and last == b"hi"
    assert written_peak < 8 * CHUNK and read_peak < 8 * CHUNK, (written_peak, read_peak)


def test_a_file_that_changes_size_while_written_is_an_error(tmp_path: Path) -> None:
    path = tmp_path / "f"
    path.write_bytes(b"12345")
    entry = Entry.file("f", path)
    path.write_bytes(b"123")
    with pytest.raises(ArchiveError, match="expected 5 bytes of data, got 3"):
        archive([entry])


@pytest.mark.parametrize(
    ("entries", "message"),
    [
        ([Entry.file("a", b""), Entry.file("a", b"x")], "duplicate entry name 'a'"),
        ([Entry.file("../a", b"")], "invalid entry name"),
        ([Entry.file("/etc/a", b"")], "invalid entry name"),
        ([Entry.file("./a", b"")], "invalid entry name"),
        ([Entry.file("a//b", b"")], "invalid entry name"),
        ([Entry.file("", b"")], "invalid entry name"),
        ([Entry.file("TRAILER!!!", b"")], "it marks the end of an archive"),
        ([Entry("d", Kind.DIR, 0o755, inode=3)], "only regular files can be hard links"),
        ([Entry("l", Kind.SYMLINK, 0o777, target="")], "symlink target"),
    ],
)
def test_write_refuses_what_the_kernel_would_mangle(entries: list[Entry], message: str) -> None:
    with pytest.raises(ArchiveError, match=message):
        archive(entries)


@pytest.mark.parametrize(
    ("raw", "normal"),
    [(".", ""), ("./bin", "bin"), ("/etc//hosts/", "etc/hosts"), ("a/./b", "a/b"), ("a/../b", "a/../b")],
)
def test_normalize_name(raw: str, normal: str) -> None:
    assert normalize_name(raw) == normal


# -- GNU cpio, both ways ------------------------------------------------------------------------------


def snapshot(root: Path) -> tuple[Canon, set[frozenset[str]]]:
    """The tree on disk in the same canonical form (hard links by inode number)."""
    tree: Canon = {}
    by_inode: dict[int, set[str]] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            path = Path(dirpath) / name
            rel = str(path.relative_to(root))
            st_ = path.lstat()
            mode = stat.S_IMODE(st_.st_mode)
            if stat.S_ISDIR(st_.st_mode):
                tree[rel] = (Kind.DIR, mode, b"", "", 0, (0, 0))
            elif stat.S_ISLNK(st_.st_mode):
                tree[rel] = (Kind.SYMLINK, 0o777, b"", os.readlink(path), 0, (0, 0))
            elif stat.S_ISREG(st_.st_mode):
                tree[rel] = (Kind.FILE, mode, path.read_bytes(), "", 0, (0, 0))
                if st_.st_nlink > 1:
                    by_inode.setdefault(st_.st_ino, set()).add(rel)
            else:
                dev = (os.major(st_.st_rdev), os.minor(st_.st_rdev)) if st_.st_rdev else (0, 0)
                tree[rel] = (Kind.OTHER, mode, b"", "", stat.S_IFMT(st_.st_mode), dev)
    return tree, {frozenset(names) for names in by_inode.values()}


def test_gnu_cpio_reads_what_we_write(tmp_path: Path) -> None:
    cpio = require("cpio")
    if os.geteuid() != 0:
        pytest.skip("creating device nodes with cpio -i needs root")
    data = archive(SAMPLE)
    listing = subprocess.run([cpio, "-t", "--quiet"], input=data, capture_output=True, check=True).stdout
    assert listing.decode().splitlines() == sorted(e.name for e in SAMPLE)
    dest = tmp_path / "out"
    dest.mkdir()
    subprocess.run([cpio, "-idm", "--quiet"], input=data, cwd=dest, capture_output=True, check=True)
    assert snapshot(dest) == canonical(SAMPLE)


def test_we_read_what_gnu_cpio_writes(tmp_path: Path) -> None:
    cpio = require("cpio")
    src = tmp_path / "src"
    (src / "dir" / "sub").mkdir(parents=True)
    (src / "dir" / "file").write_bytes(b"content\n")
    (src / "dir" / "empty").write_bytes(b"")
    (src / "dir" / "big").write_bytes(os.urandom(3 * CHUNK + 17))
    (src / "dir" / "spaced name ü").write_bytes(b"x")
    (src / "dir" / "exec").write_bytes(b"#!/bin/sh\n")
    (src / "dir" / "exec").chmod(0o755)
    os.link(src / "dir" / "file", src / "dir" / "hardlink")
    os.link(src / "dir" / "file", src / "dir" / "sub" / "hardlink2")
    (src / "dir" / "link").symlink_to("file")
    (src / "dir" / "dangling").symlink_to("/nowhere/at/all")
    os.mkfifo(src / "dir" / "fifo")
    (src / "dir" / "sub").chmod(0o750)
    names = subprocess.run(["find", ".", "-print0"], cwd=src, capture_output=True, check=True).stdout
    data = subprocess.run(
        [cpio, "--null", "--create", "--format=newc", "--quiet"], input=names, cwd=src, capture_output=True, check=True
    ).stdout
    entries = [e for e in read_entries(io.BytesIO(data)) if e.name]  # drop "." (the root)
    assert canonical(entries) == snapshot(src)
