"""Seals: what a task wrote (and read), so the next `doit` can tell that build/ still holds exactly that.

doit checks a task's file_dep by checksum but its targets only for existence, and it records a file_dep's
checksum when the task ends, not when the action read it. A seal closes both gaps: each task records the
sha256 of every file it wrote, and of each input it read as it read it; its `uptodate` check then fails when
any of them differs on disk (a deleted or hand-edited staged file, an input saved during the run).

Checking stays cheap on a no-op run: a file whose stat fingerprint (size, mtime, inode, mode) equals the one
recorded is taken as unchanged; only a file whose fingerprint moved is hashed again.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterable
from pathlib import Path

from pipeline.fsutil import write_if_changed

# path → [sha256, size, mtime_ns, inode, mode]
Record = dict[str, list[object]]


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _fingerprint(st: os.stat_result) -> list[object]:
    return [st.st_size, st.st_mtime_ns, st.st_ino, st.st_mode]


def record_file(path: Path) -> list[object]:
    """The record of a file as it is now: its sha256 and stat fingerprint (taken first, so a later edit shows)."""
    st = path.stat()
    return [file_sha256(path), *_fingerprint(st)]


def record_bytes(path: Path) -> tuple[bytes, list[object]]:
    """Read a file once and record exactly the bytes read: an edit after this moment will not match."""
    with path.open("rb") as handle:
        st = os.fstat(handle.fileno())  # before reading: an edit racing the read changes mtime, so it is rehashed
        data = handle.read()
    return data, [hashlib.sha256(data).hexdigest(), *_fingerprint(st)]


def write_seal(seal: Path, outputs: Iterable[Path], inputs: Record | None = None) -> None:
    """Record the outputs as they are now (call after writing them) and the inputs as they were read."""
    record: Record = dict(inputs or {})
    for path in outputs:
        record[str(path)] = record_file(path)
    write_if_changed(seal, (json.dumps(record, indent=0, sort_keys=True) + "\n").encode())


def recorded_sha256(seal: Path, path: Path) -> str | None:
    try:
        value = json.loads(seal.read_bytes()).get(str(path))
    except (OSError, ValueError, AttributeError):
        return None
    return value[0] if isinstance(value, list) and value and isinstance(value[0], str) else None


def intact(seal: Path) -> bool:
    """True when every file the seal names still holds what was recorded; False if any differs or is gone."""
    try:
        record = json.loads(seal.read_bytes())
    except (OSError, ValueError):
        return False
    if not isinstance(record, dict) or not record:
        return False
    for name, value in record.items():
        if not (isinstance(value, list) and len(value) == 5):
            return False
        path = Path(name)
        try:
            st = path.stat()
            if _fingerprint(st) == value[1:]:
                continue
            if (st.st_mode, st.st_size) != (value[4], value[1]) or file_sha256(path) != value[0]:
                return False
        except OSError:
            return False
    return True
