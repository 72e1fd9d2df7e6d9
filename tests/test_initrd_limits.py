"""Issue 12, defect 7: what `initrd ls/diff/extract` hold in memory is bounded, whatever an initrd declares.

Decoders get a memory limit (a segment header may declare any dictionary or window); a huge number of
entries costs little per entry. Peak memory is measured as the VmHWM of a child process.
"""

from __future__ import annotations

import struct
import zlib
from pathlib import Path

import pytest
import zstandard

from pipeline.archive.compression import Compression
from pipeline.archive.cpio import Entry
from pipeline.cli import EXIT_ERROR, EXIT_OK, main
from tests.test_initrd_support import archive, compress, pad4

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
