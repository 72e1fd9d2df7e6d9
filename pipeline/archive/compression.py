"""Compression formats of initrd segments: detection by magic, bounded streaming decode, deterministic encode.

The kernel (`lib/decompress.c`) tells a compressed segment by its first bytes; we use the same table so that
`ls` names a segment exactly as the kernel would see it. Decoding never hands back more than the caller asked
for (no decompression bombs in memory), and each decoder reports where its stream ended in the file so the
next segment can be found without decompressing it.
"""

from __future__ import annotations

import bz2
import enum
import lzma
import os
import zlib
from typing import IO, BinaryIO, Protocol

import zstandard

from pipeline.errors import ArchiveError

CHUNK = 1 << 16
ZSTD_JOB_SIZE = 8 << 20
# What a decoder may allocate, whatever a segment's header declares (a 1 GiB lzma dictionary would be held
# and filled). zstd: 128 MiB is libzstd's own default limit and the window of `zstd --ultra -22` and `--long`,
# which the kernel's build uses; xz/lzma: room for a 128 MiB dictionary, twice that of `xz -9`/`lzma -9`.
# gzip (32 KiB window) and bzip2 (900 KB blocks) are bounded by their formats.
ZSTD_MAX_WINDOW = 128 << 20
LZMA_MEMLIMIT = 160 << 20

# Magic numbers, from the kernel's decompress_method table (lib/decompress.c).
_MAGIC: tuple[tuple[bytes, str], ...] = (
    (b"\x1f\x8b", "gzip"),
    (b"\x1f\x9e", "gzip"),  # "old gzip": zlib reads it the same way
    (b"BZh", "bzip2"),
    (b"\x5d\x00\x00", "lzma"),
    (b"\xfd7zXZ\x00", "xz"),
    (b"\x89LZO", "lzo"),
    (b"\x02\x21\x4c\x18", "lz4"),
    (b"\x28\xb5\x2f\xfd", "zstd"),
)


class Compression(enum.Enum):
    """A segment's compression; `Compression.NONE` is falsy so `if compression:` reads naturally."""

    NONE = "none"
    GZIP = "gzip"
    BZIP2 = "bzip2"
    LZMA = "lzma"
    XZ = "xz"
    LZO = "lzo"
    LZ4 = "lz4"
    ZSTD = "zstd"

    def __bool__(self) -> bool:
        return self is not Compression.NONE

    @classmethod
    def parse(cls, name: str) -> Compression:
        """The format a user named (`zstd`, `gz`, `xz`...); an ArchiveError lists the choices otherwise."""
        key = _ALIASES.get(name.lower(), name.lower())
        try:
            return cls(key)
        except ValueError:
            choices = ", ".join(c.value for c in cls if c.supported)
            raise ArchiveError(f"unknown compression {name!r} (choose one of: {choices})") from None

    @classmethod
    def detect(cls, head: bytes) -> Compression | None:
        """The compression whose magic starts `head`, NONE for a cpio archive, None for anything else."""
        if head.startswith((b"070701", b"070702")):
            return cls.NONE
        for magic, name in _MAGIC:
            if head.startswith(magic):
                return cls(name)
        return None

    @property
    def extension(self) -> str:
        return _EXTENSIONS[self]

    @property
    def supported(self) -> bool:
        """Whether this project can read and write it (lzo and lz4 are recognised only, to name them)."""
        return self not in (Compression.LZO, Compression.LZ4)

    @property
    def default_level(self) -> int:
        return _DEFAULT_LEVEL[self]

    def check_supported(self) -> None:
        if not self.supported:
            raise ArchiveError(
                f"{self.value}-compressed initrd segments are not supported "
                "(supported: none, gzip, bzip2, lzma, xz, zstd); recompress the initrd with one of those"
            )

    def open_reader(self, source: BinaryIO, offset: int) -> SegmentReader:
        """A reader of the decompressed stream starting at `offset` in `source` (a seekable binary file)."""
        self.check_supported()
        if self is Compression.NONE:
            raise ValueError("an uncompressed segment needs no decoder")
        if self is Compression.ZSTD:
            return _ZstdReader(source, offset)
        return _IncrementalReader(source, offset, self)

    def open_writer(self, out: IO[bytes], *, level: int | None = None, threads: int = 0) -> CompressedWriter:
        """A writer compressing into `out`; `close()` finishes the stream but leaves `out` open.

        Output is a pure function of the input bytes and the level: gzip carries no name and mtime 0, and
        zstd always runs its multi-threaded mode, whose output does not depend on the number of threads.
        """
        self.check_supported()
        lvl = self.default_level if level is None else level
        low, high = _LEVELS[self]
        if not low <= lvl <= high and self:
            raise ArchiveError(f"{self.value} compression level must be {low}..{high}, not {lvl}")
        match self:
            case Compression.NONE:
                return _PlainWriter(out)
            case Compression.ZSTD:
                nthreads = threads if threads > 0 else (os.cpu_count() or 1)
                # A fixed job size keeps the output independent of the thread count and caps the memory the
                # workers hold (about 2 jobs each) at tens of MB; the ratio loss is under 0.2%.
                params = zstandard.ZstdCompressionParameters.from_level(
                    lvl, threads=nthreads, job_size=ZSTD_JOB_SIZE, write_checksum=True
                )
                return _ObjWriter(out, zstandard.ZstdCompressor(compression_params=params).compressobj())
            case Compression.GZIP:
                return _ObjWriter(out, zlib.compressobj(lvl, zlib.DEFLATED, 31))
            case Compression.BZIP2:
                return _ObjWriter(out, bz2.BZ2Compressor(lvl))
            case Compression.XZ:
                # The kernel's xz decoder only verifies CRC32 (or no) checks.
                return _ObjWriter(out, lzma.LZMACompressor(lzma.FORMAT_XZ, check=lzma.CHECK_CRC32, preset=lvl))
            case Compression.LZMA:
                return _ObjWriter(out, lzma.LZMACompressor(lzma.FORMAT_ALONE, preset=lvl))
        raise AssertionError(self)  # pragma: no cover


_ALIASES = {"gz": "gzip", "bz2": "bzip2", "zst": "zstd", "uncompressed": "none", "cpio": "none"}
_EXTENSIONS = {
    Compression.NONE: "",
    Compression.GZIP: ".gz",
    Compression.BZIP2: ".bz2",
    Compression.LZMA: ".lzma",
    Compression.XZ: ".xz",
    Compression.LZO: ".lzo",
    Compression.LZ4: ".lz4",
    Compression.ZSTD: ".zst",
}
_LEVELS = {
    Compression.NONE: (0, 0),
    Compression.GZIP: (1, 9),
    Compression.BZIP2: (1, 9),
    Compression.LZMA: (0, 9),
    Compression.XZ: (0, 9),
    Compression.LZO: (0, 0),
    Compression.LZ4: (0, 0),
    Compression.ZSTD: (1, 22),
}
_DEFAULT_LEVEL = {
    Compression.NONE: 0,
    Compression.GZIP: 9,
    Compression.BZIP2: 9,
    Compression.LZMA: 6,
    Compression.XZ: 6,
    Compression.LZO: 0,
    Compression.LZ4: 9,
    Compression.ZSTD: 9,
}


class SegmentReader(Protocol):
    """A decompressed stream; after `read` returned b"", `end` is the file offset just past the stream."""

    end: int

    def read(self, size: int, /) -> bytes: ...


class CompressedWriter(Protocol):
    def write(self, data: bytes, /) -> int: ...

    def close(self) -> None: ...


class _Decoder(Protocol):
    @property
    def eof(self) -> bool: ...

    @property
    def unused_data(self) -> bytes: ...

    def decompress(self, data: bytes, max_length: int = -1) -> bytes: ...


class _IncrementalReader:
    """gzip, bzip2, xz, lzma: the stdlib decoders take a max_length and say where their stream ended."""

    def __init__(self, source: BinaryIO, offset: int, compression: Compression) -> None:
        self._source = source
        self._compression = compression
        self._start = offset
        self._pos = offset  # file offset of the next byte to fetch
        self._pending = b""  # fetched but not yet given to the decoder
        self._decoder = self._new_decoder()
        self.end = -1

    def _new_decoder(self) -> _Decoder:
        match self._compression:
            case Compression.GZIP:
                return _ZlibDecoder()
            case Compression.BZIP2:
                return bz2.BZ2Decompressor()
            case Compression.XZ:
                return lzma.LZMADecompressor(lzma.FORMAT_XZ, memlimit=LZMA_MEMLIMIT)
            case _:
                return lzma.LZMADecompressor(lzma.FORMAT_ALONE, memlimit=LZMA_MEMLIMIT)

    def _too_big(self) -> ArchiveError:
        declared = ""
        if self._compression is Compression.LZMA:  # the header's bytes 1-4: the dictionary size
            self._source.seek(self._start + 1)
            size = int.from_bytes(self._source.read(4), "little")
            declared = f" (its header declares a {size / (1 << 20):.0f} MiB dictionary)"
        return ArchiveError(
            f"{self._compression.value} data starting at offset {self._start} needs more than "
            f"{LZMA_MEMLIMIT >> 20} MiB of memory to decode{declared}; refusing it "
            "(recompress with a smaller dictionary, e.g. xz -6)"
        )

    def read(self, size: int, /) -> bytes:
        name = self._compression.value
        while self.end < 0:
            if not self._pending and getattr(self._decoder, "needs_input", True):
                self._source.seek(self._pos)
                self._pending = self._source.read(CHUNK)
                self._pos += len(self._pending)
                if not self._pending:
                    raise ArchiveError(f"{name} data starting at offset {self._start} is truncated")
            try:
                out = self._decoder.decompress(self._pending, size)
            except lzma.LZMAError as exc:
                if "limit" in str(exc).lower():  # "Memory usage limit was reached"
                    raise self._too_big() from None
                raise ArchiveError(f"corrupt {name} data starting at offset {self._start}: {exc}") from None
            except (OSError, EOFError, zlib.error) as exc:
                raise ArchiveError(f"corrupt {name} data starting at offset {self._start}: {exc}") from None
            if self._decoder.eof:
                self._pending = self._decoder.unused_data
            elif isinstance(self._decoder, _ZlibDecoder):
                self._pending = self._decoder.unconsumed_tail
            else:  # lzma and bz2 buffer unused input themselves
                self._pending = b""
            if self._decoder.eof:
                self.end = self._pos - len(self._pending)
            if out:
                return out
        return b""


class _ZlibDecoder:
    """zlib's decompressobj with the eof/unused_data/unconsumed_tail shape of the lzma and bz2 decoders."""

    def __init__(self) -> None:
        self._obj = zlib.decompressobj(31)

    @property
    def eof(self) -> bool:
        return self._obj.eof

    @property
    def unused_data(self) -> bytes:
        return self._obj.unused_data

    @property
    def unconsumed_tail(self) -> bytes:
        return self._obj.unconsumed_tail

    def decompress(self, data: bytes, max_length: int = -1) -> bytes:
        return self._obj.decompress(data, max(max_length, 0))


class _ZstdReader:
    """zstd: find the frame's end from its block headers, then decode exactly that many bytes.

    zstandard's decoders either read past the frame (stream_reader) or return unbounded output
    (decompressobj), so the frame boundary comes from the format itself (RFC 8878, section 3.1.1).
    """

    def __init__(self, source: BinaryIO, offset: int) -> None:
        self.end = zstd_frame_end(source, offset)
        size = zstd_window_size(source, offset)
        if size > ZSTD_MAX_WINDOW:
            raise ArchiveError(
                f"zstd data starting at offset {offset} declares a {size / (1 << 20):.0f} MiB window, more than "
                f"the {ZSTD_MAX_WINDOW >> 20} MiB this tool decodes; refusing it (recompress without --long=31)"
            )
        source.seek(offset)
        window = _Slice(source, offset, self.end)
        self._reader = zstandard.ZstdDecompressor(max_window_size=ZSTD_MAX_WINDOW).stream_reader(
            window,  # type: ignore[arg-type]  # any object with read() will do
            read_across_frames=False,
            closefd=False,
        )
        self._start = offset

    def read(self, size: int, /) -> bytes:
        try:
            return self._reader.read(size)
        except zstandard.ZstdError as exc:
            raise ArchiveError(f"corrupt zstd data starting at offset {self._start}: {exc}") from None


def zstd_window_size(source: BinaryIO, offset: int) -> int:
    """The window (decoder buffer) a zstd frame declares (RFC 8878, 3.1.1.1.2); its header is already checked."""
    source.seek(offset + 4)
    fhd = source.read(1)[0]
    fcs_flag, single_segment, dict_flag = fhd >> 6, (fhd >> 5) & 1, fhd & 3
    if not single_segment:
        descriptor = source.read(1)[0]
        base = 1 << (10 + (descriptor >> 3))
        return base + (base >> 3) * (descriptor & 7)
    source.read((0, 1, 2, 4)[dict_flag])
    size = int.from_bytes(source.read((1, 2, 4, 8)[fcs_flag]), "little")
    return size + 256 if fcs_flag == 1 else size  # a single-segment frame's window is its content size


def zstd_frame_end(source: BinaryIO, offset: int) -> int:
    """The file offset just past the zstd frame that starts at `offset`."""

    def need(n: int, what: str) -> bytes:
        data = source.read(n)
        if len(data) != n:
            raise ArchiveError(f"zstd data starting at offset {offset} is truncated ({what})")
        return data

    source.seek(offset)
    magic = need(4, "frame header")
    if magic != b"\x28\xb5\x2f\xfd":
        raise ArchiveError(f"no zstd frame at offset {offset}")
    fhd = need(1, "frame header")[0]
    fcs_flag, single_segment, checksum, dict_flag = fhd >> 6, (fhd >> 5) & 1, (fhd >> 2) & 1, fhd & 3
    if fhd & 0x08:
        raise ArchiveError(f"corrupt zstd data starting at offset {offset}: reserved bit set in frame header")
    header_rest = (0 if single_segment else 1) + (0, 1, 2, 4)[dict_flag]
    header_rest += (1 if single_segment else 0, 2, 4, 8)[fcs_flag]
    need(header_rest, "frame header")
    pos = offset + 5 + header_rest
    while True:
        source.seek(pos)
        raw = need(3, "block header")
        header = int.from_bytes(raw, "little")
        last, block_type, block_size = header & 1, (header >> 1) & 3, header >> 3
        if block_type == 3:
            raise ArchiveError(f"corrupt zstd data starting at offset {offset}: reserved block type")
        pos += 3 + (1 if block_type == 1 else block_size)
        if last:
            break
    pos += 4 if checksum else 0
    source.seek(pos - 1)
    need(1, "last block")
    return pos


class _Slice:
    """A read-only window [start, end) of a seekable file, for decoders that read ahead."""

    def __init__(self, source: BinaryIO, start: int, end: int) -> None:
        self._source, self._pos, self._end = source, start, end

    def read(self, size: int = -1) -> bytes:
        if size < 0:
            size = self._end - self._pos
        size = min(size, self._end - self._pos)
        if size <= 0:
            return b""
        self._source.seek(self._pos)
        data = self._source.read(size)
        self._pos += len(data)
        return data


class _Compressor(Protocol):
    def compress(self, data: bytes, /) -> bytes: ...

    def flush(self) -> bytes: ...


class _ObjWriter:
    def __init__(self, out: IO[bytes], obj: _Compressor) -> None:
        self._out, self._obj = out, obj

    def write(self, data: bytes, /) -> int:
        chunk = self._obj.compress(data)
        if chunk:
            self._out.write(chunk)
        return len(data)

    def close(self) -> None:
        self._out.write(self._obj.flush())


class _PlainWriter:
    def __init__(self, out: IO[bytes]) -> None:
        self._out = out

    def write(self, data: bytes, /) -> int:
        self._out.write(data)
        return len(data)

    def close(self) -> None:
        pass
