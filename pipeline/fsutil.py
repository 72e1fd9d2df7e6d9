"""Atomic filesystem writes: the only way this project writes a file it cares about."""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import IO


def fsync_dir(path: Path) -> None:
    """Make a rename inside `path` durable (the directory entry itself must reach the disk)."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@contextlib.contextmanager
def atomic_writer(path: Path, mode: int = 0o644) -> Iterator[IO[bytes]]:
    """Yield a binary file that replaces `path` only when the block finishes without error.

    Temp file in the same directory (so rename is atomic), fsync, chmod, rename, fsync the directory:
    a reader (or a crash) sees either the old content or the new, never a mix.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            yield handle
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    fsync_dir(path.parent)


def write_atomic(path: Path, data: bytes, mode: int = 0o644) -> None:
    with atomic_writer(path, mode) as handle:
        handle.write(data)


def write_if_changed(path: Path, data: bytes, mode: int = 0o644) -> bool:
    """Write atomically unless the file already holds exactly these bytes and mode; True if written.

    Keeping an identical file untouched keeps its mtime, which is what lets doit and `apply` see "nothing changed".
    """
    try:
        st = path.lstat()
        if (
            not path.is_symlink()
            and st.st_size == len(data)
            and (st.st_mode & 0o7777) == mode
            and path.read_bytes() == data
        ):
            return False
    except FileNotFoundError:
        pass
    write_atomic(path, data, mode)
    return True
