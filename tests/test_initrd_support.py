"""Helpers for the archive tests (no tests here): external tools, archive builders, the real bookworm initrd."""

from __future__ import annotations

import atexit
import functools
import io
import shutil
import subprocess
import tempfile
from collections.abc import Iterable
from pathlib import Path

from pipeline.archive.compression import Compression
from pipeline.archive.cpio import CpioWriter, Entry, write_archive
from tests.prereq import need, require_program

require = require_program


def archive(entries: Iterable[Entry], mtime: int = 0) -> bytes:
    out = io.BytesIO()
    write_archive(entries, out, mtime=mtime)
    return out.getvalue()


def compress(data: bytes, compression: Compression, level: int | None = None) -> bytes:
    out = io.BytesIO()
    writer = compression.open_writer(out, level=level, threads=1)
    writer.write(data)
    writer.close()
    return out.getvalue()


def pad4(data: bytes) -> bytes:
    return data + b"\0" * (-len(data) % 4)


def kernel_version() -> str | None:
    modules = Path("/lib/modules")
    versions = sorted(p.name for p in modules.iterdir() if (p / "modules.dep").exists()) if modules.is_dir() else []
    return versions[-1] if versions else None


@functools.cache
def _build_real_initrd() -> Path:
    workdir = Path(tempfile.mkdtemp(prefix="nfsroot-test-initrd-"))
    atexit.register(shutil.rmtree, workdir, ignore_errors=True)
    out = workdir / "initrd.img"
    kver = kernel_version()
    assert kver is not None
    subprocess.run([require("mkinitramfs"), "-o", str(out), kver], check=True, capture_output=True)
    return out


def real_initrd() -> Path:
    """A Debian initrd built by mkinitramfs for the installed kernel, once per test session."""
    require("mkinitramfs")
    need(kernel_version() is not None, "no kernel under /lib/modules (install linux-image-amd64)")
    return _build_real_initrd()


def raw_archive(members: Iterable[tuple[str, int, bytes]], trailer: bool = True) -> bytes:
    """An archive with names exactly as given (unchecked, unsorted): for hostile and malformed inputs."""
    out = io.BytesIO()
    writer = CpioWriter(out, mtime=0)
    for ino, (name, st_mode, data) in enumerate(members, start=1):
        writer.add(name, st_mode, ino=ino, size=len(data), chunks=[data])
    if trailer:
        writer.close()
    return out.getvalue()
