"""Repack a distro initrd with our files inside its main archive, streaming from input to output.

The early segments (plain microcode archives) are copied byte for byte; the last segment, the main archive,
is decompressed, rewritten member by member (our files replace or join the distro's, our lines are appended
to scripts/init-bottom/ORDER) and recompressed, never held whole in memory. Output depends only on the input
bytes and the arguments: every member gets owner 0:0, the given mtime and a renumbered inode.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import IO, BinaryIO

from pipeline.archive.compression import Compression
from pipeline.archive.cpio import CpioWriter, Entry, Kind, Member, encode_name, normalize_name
from pipeline.archive.overlay import INIT_BOTTOM, ORDER, order_lines
from pipeline.archive.segments import Progress, ProgressHandle, SegmentStream, open_initrd, segment_offsets
from pipeline.errors import ArchiveError
from pipeline.fsutil import atomic_writer

DEFAULT_ZSTD_LEVEL = 9  # 83% of gzip -9 at ~1/20 of its time: see benchmarks/README-initrd.md
ORDER_MAX = 1 << 20  # the distro's ORDER is read whole to append to it; a real one is a few hundred bytes


class _Rewriter:
    """Writes the main archive's members with our changes applied, remembering what it has seen."""

    def __init__(self, writer: CpioWriter, extra: Sequence[Entry]) -> None:
        self.writer = writer
        self.extra = {e.name: e for e in extra}
        self.written: set[str] = set()
        self.present: set[str] = {""}  # directories and symlinks (to directories, we hope) seen so far
        # ...of those, only the parents of our files matter: remembering every name would cost memory per entry
        self._parents = {e.name.rpartition("/")[0] for e in extra} | {INIT_BOTTOM}
        self.scripts = sorted(
            e.name.rsplit("/", 1)[1]
            for e in extra
            if e.kind is Kind.FILE and e.name.rpartition("/")[0] == INIT_BOTTOM and e.name != ORDER
        )
        self._inodes: dict[tuple[int, int, int], int] = {}  # hard links of the current archive only
        self._archive = 0
        self._next_ino = 1

    def _ino(self, key: tuple[int, int, int] | None) -> int:
        if key is not None and key in self._inodes:
            return self._inodes[key]
        ino = self._next_ino
        self._next_ino += 1
        if key is not None:
            self._inodes[key] = ino
        return ino

    def copy(self, member: Member, archive: int) -> None:
        h = member.header
        name = normalize_name(h.name)
        if member.kind in (Kind.DIR, Kind.SYMLINK) and name in self._parents:
            self.present.add(name)
        if archive != self._archive:  # links never reach across archives (the kernel's free_hash)
            self._inodes.clear()
            self._archive = archive
        if name == ORDER and member.kind is Kind.FILE and self.scripts:
            if h.size > ORDER_MAX:
                raise ArchiveError(
                    f"the distro's {ORDER} is {h.size} bytes; refusing to read more than {ORDER_MAX} into memory"
                )
            self.write_order(member.read())
            return
        ours = self.extra.get(name)
        if ours is not None and not (ours.kind is Kind.DIR and member.kind is Kind.DIR):
            if ours.kind is not member.kind:
                raise ArchiveError(
                    f"refusing to replace the distro's {member.kind.value} {name!r} by a {ours.kind.value}"
                )
            if h.nlink > 1:
                raise ArchiveError(f"refusing to replace {name!r}: it is one of several hard links")
            self.write_entry(ours)
            return
        if ours is not None:
            self.written.add(name)  # the distro's directory stays as it is
        key = (h.ino, *h.dev) if member.kind is Kind.FILE and h.nlink > 1 else None
        self.writer.add(
            h.name,
            h.st_mode,
            ino=self._ino(key),
            nlink=h.nlink if key else (2 if member.kind is Kind.DIR else 1),
            size=h.size,
            rdev=h.rdev,
            chunks=[encode_name(member.target)] if member.kind is Kind.SYMLINK else member.chunks(),
        )

    def write_entry(self, entry: Entry) -> None:
        size = 0 if entry.kind in (Kind.DIR, Kind.OTHER) else entry.size
        if entry.kind is Kind.SYMLINK:
            size = len(encode_name(entry.target))
        self.writer.add(
            entry.name, entry.st_mode, ino=self._ino(None), size=size, rdev=entry.rdev, chunks=entry.chunks()
        )
        self.written.add(entry.name)
        if entry.kind in (Kind.DIR, Kind.SYMLINK):
            self.present.add(entry.name)

    def write_order(self, existing: bytes) -> None:
        text = existing if not existing or existing.endswith(b"\n") else existing + b"\n"
        listed = {line.split(b" ", 1)[0] for line in text.splitlines()}
        for script in self.scripts:
            if f"/{INIT_BOTTOM}/{script}".encode() not in listed:
                text += order_lines(script)
        self.writer.add(ORDER, 0o100644, ino=self._ino(None), size=len(text), chunks=[text])
        self.written.add(ORDER)
        self.scripts = []  # done: a second ORDER in a later archive is copied as it is

    def finish(self) -> None:
        """Add what the distro archive did not have, parents first, then the ORDER if it had none."""
        for name in sorted(set(self.extra) - self.written, key=encode_name):
            parent = name.rpartition("/")[0]
            if parent not in self.present:
                raise ArchiveError(f"cannot add {name!r}: its parent directory {parent!r} is in neither archive")
            self.write_entry(self.extra[name])
        if self.scripts:
            if INIT_BOTTOM not in self.present:
                raise ArchiveError(f"cannot add {ORDER!r}: the initrd has no {INIT_BOTTOM} directory")
            self.write_order(b"")
        self.writer.close()


def repack(
    distro_initrd: Path,
    extra: list[Entry],
    out: Path,
    *,
    compression: Compression | str = Compression.ZSTD,
    level: int | None = None,
    threads: int = 0,
    mtime: int,
    progress: Progress | None = None,
) -> None:
    """Write `out`: `distro_initrd` with `extra` injected into its main (last) archive, recompressed.

    `threads=0` uses every CPU (zstd only; the output does not depend on it). Raises ArchiveError for a
    malformed initrd or an extra file that cannot go in; `out` is then left untouched.
    """
    comp = Compression.parse(compression) if isinstance(compression, str) else compression
    comp.check_supported()
    if level is None and comp is Compression.ZSTD:
        level = DEFAULT_ZSTD_LEVEL
    names = [e.name for e in extra]
    if len(set(names)) != len(names):
        raise ArchiveError("repack: the extra files name the same path twice")
    for entry in extra:
        if entry.inode:
            raise ArchiveError(f"repack: extra file {entry.name!r} cannot be a hard link")
    main_offset, main_compression = segment_offsets(distro_initrd)[-1]
    with open_initrd(distro_initrd) as raw, atomic_writer(out, 0o644) as dest:
        total = raw.seek(0, os.SEEK_END)
        handle: BinaryIO = ProgressHandle(raw, total, progress) if progress else raw  # type: ignore[assignment]
        _copy_range(handle, dest, main_offset)
        if not comp and main_offset % 4:
            dest.write(b"\0" * (-main_offset % 4))
        encoder = comp.open_writer(dest, level=level, threads=threads)
        rewriter = _Rewriter(CpioWriter(encoder, mtime=mtime), extra)
        stream = SegmentStream(handle, main_offset, main_compression, str(distro_initrd))
        for member in stream.members():
            rewriter.copy(member, stream.archive)
        rewriter.finish()
        encoder.close()
        if progress:
            progress(total, total)


def _copy_range(src: BinaryIO, dest: IO[bytes], length: int) -> None:
    src.seek(0)
    remaining = length
    while remaining:
        chunk = src.read(min(remaining, 1 << 20))
        if not chunk:
            raise ArchiveError("input initrd changed while it was being read")
        dest.write(chunk)
        remaining -= len(chunk)
