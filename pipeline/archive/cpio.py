"""The newc cpio format (magic 070701), read and written as streams.

Header: the 6-byte magic then 13 fields of 8 hex digits (ino, mode, uid, gid, nlink, mtime, filesize,
devmajor, devminor, rdevmajor, rdevminor, namesize, check), the NUL-terminated name padded so that header+name
is a multiple of 4, then the data padded to 4. The archive ends with an entry named TRAILER!!!.

Reading never trusts a field: every header is checked (hex digits, name terminator, sizes) and any problem is
an ArchiveError that says what is wrong and where. Data is never held whole unless it is small (a symlink
target); file contents are handed out in chunks.
"""

from __future__ import annotations

import enum
import stat
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Protocol

from pipeline.errors import ArchiveError
from pipeline.textsafe import printable

MAGIC = b"070701"
MAGIC_CRC = b"070702"
HEADER_SIZE = 110
TRAILER = "TRAILER!!!"
PATH_MAX = 4096  # the kernel ignores longer names; nothing legitimate comes close
CHUNK = 1 << 20
_HEX = b"0123456789abcdefABCDEF"


class Kind(enum.StrEnum):
    FILE = "file"
    DIR = "dir"
    SYMLINK = "symlink"
    OTHER = "other"  # character or block device, fifo, socket: `Entry.special` says which


_SPECIAL_TYPES = (stat.S_IFCHR, stat.S_IFBLK, stat.S_IFIFO, stat.S_IFSOCK)


def kind_of(st_mode: int) -> Kind | None:
    fmt = stat.S_IFMT(st_mode)
    if fmt == stat.S_IFREG:
        return Kind.FILE
    if fmt == stat.S_IFDIR:
        return Kind.DIR
    if fmt == stat.S_IFLNK:
        return Kind.SYMLINK
    if fmt in _SPECIAL_TYPES:
        return Kind.OTHER
    return None


def decode_name(raw: bytes) -> str:
    return raw.decode("utf-8", "surrogateescape")


def shown(text: str) -> str:
    """A name (or path) fit to print: control characters escaped, bytes that are not UTF-8 as `\\xNN`."""
    safe = printable(text)
    try:
        return safe.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")
    except UnicodeEncodeError:  # a surrogate that decode_name did not make
        return safe.encode("utf-8", "backslashreplace").decode("utf-8")


def encode_name(name: str) -> bytes:
    return name.encode("utf-8", "surrogateescape")


def normalize_name(raw: str) -> str:
    """The path an archive name denotes, relative to the root: no leading "/" or "./", no "." or empty parts.

    The root itself is "". ".." is kept: whether it is acceptable depends on the reader (the kernel resolves
    it, extraction refuses it).
    """
    return "/".join(part for part in raw.split("/") if part not in ("", "."))


def is_safe_name(raw: str) -> bool:
    """Neither absolute nor climbing: the name stays inside whatever directory it is unpacked into."""
    return not raw.startswith("/") and ".." not in raw.split("/")


@dataclass(frozen=True)
class Entry:
    """One file-system object to put in an archive, or one read from it.

    `mode` holds the permission bits only; the type is `kind` (and `special` for devices, fifos, sockets).
    Entries of one archive with the same non-zero `inode` are hard links of one file. `data` is the content of
    a regular file: bytes, or a path read (streamed) when the archive is written; `size` follows from bytes.
    """

    name: str
    kind: Kind
    mode: int = 0o644
    uid: int = 0
    gid: int = 0
    mtime: int = 0
    nlink: int = 1
    data: bytes | Path | None = None
    size: int = 0
    target: str = ""
    rdev: tuple[int, int] = (0, 0)
    special: int = 0
    inode: int = 0

    def __post_init__(self) -> None:
        if isinstance(self.data, bytes) and self.size != len(self.data):
            object.__setattr__(self, "size", len(self.data))
        elif isinstance(self.data, Path) and not self.size:
            try:
                object.__setattr__(self, "size", self.data.stat().st_size)
            except OSError as exc:
                raise ArchiveError(
                    f"cannot read {shown(str(self.data))} for {shown(self.name)}: {exc.strerror}"
                ) from None
        if self.kind is Kind.OTHER and self.special not in _SPECIAL_TYPES:
            raise ArchiveError(
                f"{shown(self.name)}: 'other' entries need special= one of S_IFCHR/S_IFBLK/S_IFIFO/S_IFSOCK"
            )

    @classmethod
    def file(cls, name: str, data: bytes | Path, mode: int = 0o644, *, inode: int = 0) -> Entry:
        return cls(name, Kind.FILE, mode, data=data, inode=inode)

    @classmethod
    def directory(cls, name: str, mode: int = 0o755) -> Entry:
        return cls(name, Kind.DIR, mode)

    @classmethod
    def symlink(cls, name: str, target: str) -> Entry:
        return cls(name, Kind.SYMLINK, 0o777, target=target, size=len(encode_name(target)))

    @property
    def st_mode(self) -> int:
        fmt = {Kind.FILE: stat.S_IFREG, Kind.DIR: stat.S_IFDIR, Kind.SYMLINK: stat.S_IFLNK}.get(self.kind, self.special)
        return fmt | (self.mode & 0o7777)

    def chunks(self) -> Iterator[bytes]:
        """The content of a regular file (the target for a symlink), in chunks."""
        if self.kind is Kind.SYMLINK:
            yield encode_name(self.target)
        elif isinstance(self.data, bytes):
            yield self.data
        elif isinstance(self.data, Path):
            try:
                with self.data.open("rb") as handle:
                    while chunk := handle.read(CHUNK):
                        yield chunk
            except OSError as exc:
                raise ArchiveError(
                    f"cannot read {shown(str(self.data))} for {shown(self.name)}: {exc.strerror}"
                ) from None


@dataclass(frozen=True)
class Header:
    """A member's header exactly as found (names raw, sizes as declared)."""

    name: str
    st_mode: int
    uid: int = 0
    gid: int = 0
    nlink: int = 1
    mtime: int = 0
    size: int = 0
    ino: int = 0
    dev: tuple[int, int] = (0, 0)
    rdev: tuple[int, int] = (0, 0)
    check: int = 0

    @property
    def kind(self) -> Kind:
        kind = kind_of(self.st_mode)
        assert kind is not None  # the reader rejects unknown types
        return kind

    @property
    def is_trailer(self) -> bool:
        return self.name == TRAILER


class Readable(Protocol):
    def read(self, size: int, /) -> bytes: ...


class StreamInput:
    """A buffered view of a byte stream that knows its position and turns a short read into an error."""

    def __init__(self, raw: Readable, where: str) -> None:
        self._raw = raw
        self._buf = b""
        self._i = 0
        self.pos = 0
        self.where = where

    def read(self, n: int) -> bytes:
        """Up to n bytes (fewer only at the end of the stream)."""
        if self._i >= len(self._buf):
            self._buf, self._i = b"", 0
            if n >= CHUNK:
                data = self._raw.read(n)
                self.pos += len(data)
                return data
            self._buf = self._raw.read(CHUNK)
        data = self._buf[self._i : self._i + n]
        self._i += len(data)
        self.pos += len(data)
        return data

    def read_exact(self, n: int, what: str) -> bytes:
        parts = []
        need = n
        while need:
            data = self.read(need)
            if not data:
                raise ArchiveError(f"{self.where}: truncated archive: end of data inside {what} at byte {self.pos}")
            parts.append(data)
            need -= len(data)
        return parts[0] if len(parts) == 1 else b"".join(parts)

    def skip(self, n: int, what: str) -> None:
        while n:
            n -= len(self.read_exact(min(n, CHUNK), what))

    def at_end(self) -> bool:
        if self._i < len(self._buf):
            return False
        self._buf, self._i = self._raw.read(CHUNK), 0
        return not self._buf

    def peek_byte(self) -> int | None:
        if self.at_end():
            return None
        return self._buf[self._i]


def _pad4(n: int) -> int:
    return -n & 3


def parse_header(raw: bytes, where: str) -> tuple[bytes, list[int]]:
    magic = raw[:6]
    if magic not in (MAGIC, MAGIC_CRC):
        if magic == b"070707":
            raise ArchiveError(f"{where}: old portable (odc) cpio format; the kernel reads only newc (070701)")
        raise ArchiveError(f"{where}: bad cpio magic {magic!r} (expected b'070701')")
    fields = raw[6:HEADER_SIZE]
    if fields.translate(None, _HEX):
        raise ArchiveError(f"{where}: cpio header has a field that is not 8 hex digits: {fields!r}")
    return magic, [int(fields[i : i + 8], 16) for i in range(0, 104, 8)]


class Member:
    """One member of an archive being read; its data can be read once, before the next member."""

    def __init__(self, header: Header, offset: int, source: StreamInput, target: str = "") -> None:
        self.header = header
        self.offset = offset  # of the header, in the (decompressed) stream
        self.target = target
        self._source = source
        self._left = header.size if header.kind is Kind.FILE else 0

    @property
    def name(self) -> str:
        return self.header.name

    @property
    def kind(self) -> Kind:
        return self.header.kind

    def chunks(self, size: int = CHUNK) -> Iterator[bytes]:
        """The file's content (empty for anything but a regular file)."""
        while self._left:
            data = self._source.read_exact(min(self._left, size), f"the data of {self.name!r}")
            self._left -= len(data)
            yield data

    def read(self) -> bytes:
        return b"".join(self.chunks())

    def _finish(self) -> None:
        if self._left:
            self._source.skip(self._left, f"the data of {self.name!r}")
            self._left = 0

    def to_entry(self, data: bytes | Path | None = None) -> Entry:
        """The member as an Entry (normalised name); pass `data` to attach content read elsewhere."""
        h = self.header
        kind = h.kind
        return Entry(
            name=normalize_name(h.name),
            kind=kind,
            mode=stat.S_IMODE(h.st_mode),
            uid=h.uid,
            gid=h.gid,
            mtime=h.mtime,
            nlink=h.nlink,
            data=data,
            size=h.size if data is None else (len(data) if isinstance(data, bytes) else h.size),
            target=self.target,
            rdev=h.rdev,
            special=stat.S_IFMT(h.st_mode) if kind is Kind.OTHER else 0,
            inode=h.ino if kind is Kind.FILE and h.nlink > 1 else 0,
        )


class ArchiveReader:
    """Iterates over the members of one cpio archive, stopping after its trailer.

    `pos` is the number of bytes consumed so far, so a caller can tell where the next archive starts.
    """

    def __init__(self, stream: Readable | StreamInput, where: str = "archive") -> None:
        self._in = stream if isinstance(stream, StreamInput) else StreamInput(stream, where)
        self.count = 0
        self.finished = False

    @property
    def pos(self) -> int:
        return self._in.pos

    def __iter__(self) -> Iterator[Member]:
        src = self._in
        while True:
            offset = src.pos
            where = f"{src.where}: entry {self.count + 1} at byte {offset}"
            _, f = parse_header(src.read_exact(HEADER_SIZE, "a cpio header"), where)
            ino, mode, uid, gid, nlink, mtime, size, dmaj, dmin, rmaj, rmin, namesize, check = f
            if not 2 <= namesize <= PATH_MAX:
                raise ArchiveError(f"{where}: name size {namesize} is absurd (must be 2..{PATH_MAX})")
            raw = src.read_exact(namesize + _pad4(HEADER_SIZE + namesize), "an entry name")[:namesize]
            if raw[-1] != 0 or 0 in raw[:-1]:
                raise ArchiveError(f"{where}: entry name is not NUL-terminated: {raw[:60]!r}")
            name = decode_name(raw[:-1])
            header = Header(name, mode, uid, gid, nlink, mtime, size, ino, (dmaj, dmin), (rmaj, rmin), check)
            if header.is_trailer:
                src.skip(size + _pad4(size), "the trailer")
                self.finished = True
                return
            where = f"{where} ({name!r})"
            kind = kind_of(mode)
            if kind is None:
                raise ArchiveError(f"{where}: unknown file type in mode {mode:#o}")
            target = ""
            if kind is Kind.SYMLINK:
                if not 1 <= size < PATH_MAX:
                    raise ArchiveError(f"{where}: symlink target size {size} is absurd")
                target = decode_name(src.read_exact(size, "a symlink target"))
                src.skip(_pad4(size), "padding")
            elif kind is not Kind.FILE and size:
                raise ArchiveError(f"{where}: a {kind.value} entry cannot carry {size} bytes of data")
            member = Member(header, offset, src, target)
            self.count += 1
            yield member
            member._finish()
            if kind is Kind.FILE:
                src.skip(_pad4(size), "padding")


def read_archive(stream: Readable, where: str = "archive") -> Iterator[Member]:
    """Stream the members of one newc archive (up to its trailer; a missing trailer is an error)."""
    yield from ArchiveReader(stream, where)  # a missing trailer shows up as a truncated header


class CpioWriter:
    """Writes newc members to a binary stream; owner 0:0, one mtime, dev 0:0 for every member."""

    def __init__(self, out: BinaryIO | _Sink, *, mtime: int) -> None:
        self._out = out
        self._mtime = mtime
        self.pos = 0

    def _emit(self, data: bytes) -> None:
        self._out.write(data)
        self.pos += len(data)

    def add(
        self,
        name: str,
        st_mode: int,
        *,
        ino: int,
        nlink: int = 1,
        size: int = 0,
        rdev: tuple[int, int] = (0, 0),
        chunks: Iterable[bytes] = (),
    ) -> None:
        raw = encode_name(name) + b"\0"
        fields = (ino, st_mode, 0, 0, nlink, self._mtime, size, 0, 0, rdev[0], rdev[1], len(raw), 0)
        if any(not 0 <= v <= 0xFFFFFFFF for v in fields):
            raise ArchiveError(f"{shown(name)}: a header field does not fit newc's 32 bits: {fields}")
        header = MAGIC + b"".join(b"%08X" % v for v in fields)
        self._emit(header + raw + b"\0" * _pad4(HEADER_SIZE + len(raw)))
        written = 0
        for chunk in chunks:
            written += len(chunk)
            if written > size:
                break
            self._emit(chunk)
        if written != size:
            raise ArchiveError(f"{shown(name)}: expected {size} bytes of data, got {written} (did the file change?)")
        self._emit(b"\0" * _pad4(size))

    def close(self) -> None:
        self.add(TRAILER, 0, ino=0, nlink=1)


class _Sink(Protocol):
    def write(self, data: bytes, /) -> int: ...


def _check_name(name: str) -> None:
    if not name or name != normalize_name(name) or not is_safe_name(name) or "\0" in name:
        raise ArchiveError(f"invalid entry name {name!r}: use a relative path without '.', '..' or empty parts")
    if name == TRAILER:
        raise ArchiveError(f"invalid entry name {name!r}: it marks the end of an archive")
    if len(encode_name(name)) >= PATH_MAX:
        raise ArchiveError(f"entry name too long ({len(name)} characters): {shown(name[:60])}...")


def write_archive(entries: Iterable[Entry], out: BinaryIO | _Sink, *, mtime: int) -> None:
    """Write one complete newc archive, deterministically.

    Members are sorted by name (bytewise, so a directory always precedes its contents), owned by 0:0,
    stamped with `mtime`, and numbered 1, 2, ... in that order. Hard links (entries sharing a non-zero
    `inode`) share one number; as GNU cpio does, the content travels with the last link of a group.
    """
    ordered = sorted(entries, key=lambda e: encode_name(e.name))
    groups: dict[int, list[Entry]] = {}
    previous = None
    for entry in ordered:
        _check_name(entry.name)
        if entry.name == previous:
            raise ArchiveError(f"duplicate entry name {entry.name!r}")
        previous = entry.name
        if entry.inode:
            if entry.kind is not Kind.FILE:
                raise ArchiveError(f"{shown(entry.name)}: only regular files can be hard links")
            groups.setdefault(entry.inode, []).append(entry)
    writer = CpioWriter(out, mtime=mtime)
    numbers: dict[int, int] = {}
    next_ino = 1
    for entry in ordered:
        if entry.inode:
            group = groups[entry.inode]
            if entry.inode not in numbers:
                numbers[entry.inode] = next_ino
                next_ino += 1
            ino, nlink = numbers[entry.inode], len(group)
            source = next((e for e in group if e.size), group[-1])
            carries = entry is group[-1]
            size = source.size if carries else 0
            chunks: Iterable[bytes] = source.chunks() if carries else ()
        else:
            ino, nlink = next_ino, 2 if entry.kind is Kind.DIR else 1
            next_ino += 1
            size = 0 if entry.kind in (Kind.DIR, Kind.OTHER) else entry.size
            if entry.kind is Kind.SYMLINK:
                size = len(encode_name(entry.target))
                if not entry.target or size >= PATH_MAX:
                    raise ArchiveError(f"{shown(entry.name)}: symlink target must be 1..{PATH_MAX - 1} bytes")
            chunks = entry.chunks() if size else ()
        writer.add(entry.name, entry.st_mode, ino=ino, nlink=nlink, size=size, rdev=entry.rdev, chunks=chunks)
    writer.close()


def read_entries(stream: Readable, where: str = "archive") -> list[Entry]:
    """Every member of one archive with its content in memory: for small archives and tests only."""
    return [m.to_entry(m.read() if m.kind is Kind.FILE else None) for m in read_archive(stream, where)]


__all__ = [
    "ArchiveReader",
    "CpioWriter",
    "Entry",
    "Header",
    "Kind",
    "Member",
    "is_safe_name",
    "normalize_name",
    "read_archive",
    "read_entries",
    "shown",
    "write_archive",
]
