"""An initrd file as the kernel reads it: a run of cpio archives, each plain or compressed, zero padding between.

Mirrors `unpack_to_rootfs` in the kernel's `init/initramfs.c`: zero bytes between archives are skipped; a plain
archive is recognised only at a 4-byte-aligned offset; anything else must start with a known compression magic;
a compressed stream may hold several archives (zero padding between them) and must end right after a trailer.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from pipeline.archive.compression import CHUNK, Compression, zstd_frame_end
from pipeline.archive.cpio import ArchiveReader, Member, StreamInput, shown
from pipeline.errors import ArchiveError

Progress = Callable[[int, int], None]
"""Called as progress(done, total) with byte counts of the input file."""


@dataclass(frozen=True)
class Segment:
    """One region of an initrd file: a plain cpio archive, or one compressed stream (of one or more archives).

    `length` counts the segment's own bytes (the compressed size for a compressed one), not the padding after.
    """

    offset: int
    length: int
    compression: Compression
    entries: int  # members, not counting trailers
    archives: int = 1

    @property
    def end(self) -> int:
        return self.offset + self.length


class _FileSlice:
    """Reads a file from `start` on, through the shared handle (seeking each time, so readers can interleave)."""

    def __init__(self, handle: BinaryIO, start: int) -> None:
        self._handle, self._pos = handle, start

    def read(self, size: int, /) -> bytes:
        self._handle.seek(self._pos)
        data = self._handle.read(size)
        self._pos += len(data)
        return data


class ProgressHandle:
    """A file handle that reports how far into the file reads have got."""

    def __init__(self, handle: BinaryIO, total: int, progress: Progress) -> None:
        self._handle, self._total, self._progress = handle, total, progress
        self._last = -1

    def seek(self, pos: int, whence: int = 0) -> int:
        return self._handle.seek(pos, whence)

    def tell(self) -> int:
        return self._handle.tell()

    def read(self, size: int = -1) -> bytes:
        data = self._handle.read(size)
        pos = self._handle.tell()
        if pos >> 22 != self._last:  # every 4 MiB is plenty for a progress line
            self._last = pos >> 22
            self._progress(pos, self._total)
        return data


class SegmentStream:
    """A segment being read: iterate `members()` to the end, then `segment` describes it."""

    def __init__(self, handle: BinaryIO, offset: int, compression: Compression, where: str) -> None:
        self.offset = offset
        self.compression = compression
        self.where = f"{where}: segment at offset {offset} ({compression.value})"
        self._handle = handle
        self._segment: Segment | None = None
        self.archive = 0  # index of the archive (within this segment) the last member came from

    @property
    def segment(self) -> Segment:
        if self._segment is None:
            raise RuntimeError("segment not read to its end yet")
        return self._segment

    def members(self) -> Iterator[Member]:
        if not self.compression:
            source = StreamInput(_FileSlice(self._handle, self.offset), self.where)
            reader = ArchiveReader(source, self.where)
            yield from reader
            self._segment = Segment(self.offset, source.pos, self.compression, reader.count)
            return
        decoded = self.compression.open_reader(self._handle, self.offset)
        source = StreamInput(decoded, self.where)
        count = archives = 0
        while True:
            self.archive = archives
            reader = ArchiveReader(source, self.where)
            yield from reader
            count += reader.count
            archives += 1
            while (byte := source.peek_byte()) == 0:
                source.read(1)
            if byte is None:
                break
            if byte != ord("0"):
                raise ArchiveError(f"{self.where}: junk after archive {archives} at byte {source.pos} of the data")
        self._segment = Segment(self.offset, decoded.end - self.offset, self.compression, count, archives)


def segment_offsets(path: Path) -> list[tuple[int, Compression]]:
    """Where each segment starts and how it is compressed, fast: zstd frames are skipped, not decoded.

    For repack, which only needs to know where the main (last) segment starts; use split_segments for
    entry counts.
    """
    found = []
    with open_initrd(path) as handle:
        for stream in scan(handle, str(path), fast=True):
            found.append((stream.offset, stream.compression))
    return found


def _skip_zeros(handle: BinaryIO, pos: int) -> int:
    handle.seek(pos)
    while chunk := handle.read(CHUNK):
        stripped = chunk.lstrip(b"\0")
        if stripped:
            return pos + len(chunk) - len(stripped)
        pos += len(chunk)
    return pos


def scan(handle: BinaryIO, where: str, size: int | None = None, *, fast: bool = False) -> Iterator[SegmentStream]:
    """Yield each segment of an initrd in turn; each must be read to its end before the next is yielded.

    With `fast`, the caller does not read the segments: a zstd frame is skipped by its block headers and
    anything else is read here (so its contents are still checked).
    """
    where = shown(where)
    if size is None:
        size = handle.seek(0, os.SEEK_END)
    pos = _skip_zeros(handle, 0)
    if pos >= size:
        raise ArchiveError(f"{where}: no cpio archive in this file (empty or all zeros)")
    while pos < size:
        handle.seek(pos)
        head = handle.read(8)
        compression = Compression.detect(head)
        if compression is None and head.startswith(b"070707"):
            raise ArchiveError(f"{where}: offset {pos}: old portable (odc) cpio format; the kernel reads only newc")
        if compression is None:
            raise ArchiveError(
                f"{where}: offset {pos}: neither a cpio archive (070701) nor known compressed data: {head!r}"
            )
        if not compression and pos % 4:
            raise ArchiveError(
                f"{where}: offset {pos}: a plain cpio archive must start at a 4-byte-aligned offset "
                "(the kernel rejects this one as broken padding)"
            )
        compression.check_supported()
        stream = SegmentStream(handle, pos, compression, where)
        yield stream
        if fast and compression is Compression.ZSTD:
            pos = _skip_zeros(handle, zstd_frame_end(handle, pos))
            continue
        if fast:
            for _ in stream.members():
                pass
        pos = _skip_zeros(handle, stream.segment.end)


def open_initrd(path: Path) -> BinaryIO:
    try:
        return path.open("rb")
    except OSError as exc:
        raise ArchiveError(f"cannot open {shown(str(path))}: {exc.strerror}") from None


def split_segments(path: Path, progress: Progress | None = None) -> list[Segment]:
    """The segments of one initrd file, each read to its end (so their entry counts are exact)."""
    segments = []
    with open_initrd(path) as raw:
        size = raw.seek(0, os.SEEK_END)
        handle: BinaryIO = ProgressHandle(raw, size, progress) if progress else raw  # type: ignore[assignment]
        for stream in scan(handle, str(path), size):
            for member in stream.members():
                del member  # skipped by the reader
            segments.append(stream.segment)
    return segments
