"""Unpack what the kernel would see after one or more initrds into a directory, and nowhere else.

Names are checked before anything is written (no absolute names, no ".."); the effective tree has already
resolved every symlink in a parent position, so each path is made of real directories we created ourselves;
and every file-system call goes through directory descriptors opened with O_NOFOLLOW, so even a symlink planted
in the destination cannot send a write outside it.

What an archive may carry but a safe unpack should not make is left out unless asked for (`keep_special`):
device nodes, fifos and sockets are not created, and setuid/setgid/sticky bits are removed; both are reported.
When kept, modes are exact: the umask applies to nothing we create.
"""

from __future__ import annotations

import contextlib
import os
import stat
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from pipeline.archive.cpio import Kind, shown
from pipeline.archive.segments import Progress, open_initrd, scan
from pipeline.archive.tree import Dropped, build_tree
from pipeline.errors import ArchiveError, UnsafePathError

_MAX_OPEN_DIRS = 256
_SETID_BITS = stat.S_ISUID | stat.S_ISGID | stat.S_ISVTX
_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC


@dataclass
class ExtractResult:
    files: int = 0
    dirs: int = 0
    symlinks: int = 0
    others: int = 0
    skipped: list[str] = field(default_factory=list)  # device nodes, fifos, sockets: not created (keep_special)
    stripped: list[str] = field(default_factory=list)  # setuid/setgid/sticky bits removed (keep_special)
    needs_root: list[str] = field(default_factory=list)  # device nodes kept but not allowed to create
    dropped: list[Dropped] = field(default_factory=list)  # entries the kernel would not create either (the first)
    dropped_total: int = 0


class _Root:
    """Directory descriptors below the destination, opened without following symlinks."""

    def __init__(self, dest: Path) -> None:
        self._fds: dict[str, int] = {"": os.open(dest, _DIR_FLAGS)}

    def dir_fd(self, path: str) -> int:
        fd = self._fds.get(path)
        if fd is None:
            parent, _, name = path.rpartition("/")
            try:
                fd = os.open(name, _DIR_FLAGS, dir_fd=self.dir_fd(parent))
            except OSError as exc:
                raise UnsafePathError(f"{shown(path)}: not a directory we created ({exc.strerror})") from None
            self._fds[path] = fd
        return fd

    def trim(self) -> None:
        """Close cached descriptors once there are many (call between operations, never during one)."""
        if len(self._fds) >= _MAX_OPEN_DIRS:
            for path in [p for p in self._fds if p]:
                os.close(self._fds.pop(path))

    def locate(self, path: str) -> tuple[int, str]:
        parent, _, name = path.rpartition("/")
        return self.dir_fd(parent), name

    def close(self) -> None:
        for fd in self._fds.values():
            os.close(fd)
        self._fds.clear()


@contextlib.contextmanager
def _root(dest: Path) -> Iterator[_Root]:
    root = _Root(dest)
    try:
        yield root
    finally:
        root.close()


def _prepare(dest: Path) -> None:
    if dest.is_symlink():
        raise UnsafePathError(f"{shown(str(dest))}: the destination must not be a symlink")
    if dest.exists():
        if not dest.is_dir():
            raise ArchiveError(f"{shown(str(dest))}: exists and is not a directory")
        if any(dest.iterdir()):
            raise ArchiveError(f"{shown(str(dest))}: the destination directory is not empty")
    else:
        dest.mkdir(parents=True)


def extract(
    paths: Sequence[Path],
    dest: Path,
    progress: Callable[[Path], Progress | None] | None = None,
    *,
    keep_special: bool = False,
) -> ExtractResult:
    """Unpack the effective tree of the initrds `paths` (in kernel order) into the empty directory `dest`.

    Owners and mtimes are not restored (everything belongs to whoever extracts). Device nodes, fifos and
    sockets are created, and setuid/setgid/sticky bits kept, only with `keep_special` (device nodes need root:
    listed in `needs_root` otherwise). `progress` follows the first pass (reading and checking everything
    before anything is written).
    """
    tree = build_tree(paths, safe_names=True, progress=progress)
    _prepare(dest)
    result = ExtractResult(dropped=list(tree.dropped), dropped_total=tree.dropped_total)
    by_content = tree.files_by_content()

    def mode_of(name: str) -> int:
        mode = tree.mode(name)
        if mode & _SETID_BITS and not keep_special:
            result.stripped.append(name)
            return mode & ~_SETID_BITS
        return mode

    dirs: list[str] = []
    with _root(dest) as root:
        for info in tree.infos():
            name = info.name
            root.trim()
            fd, base = root.locate(name)
            if info.kind is Kind.DIR:
                os.mkdir(base, 0o700, dir_fd=fd)
                dirs.append(name)
                result.dirs += 1
            elif info.kind is Kind.SYMLINK:
                os.symlink(info.target, base, dir_fd=fd)
                result.symlinks += 1
            elif info.kind is Kind.OTHER:
                if not keep_special:
                    result.skipped.append(name)
                    continue
                try:
                    os.mknod(base, info.st_mode, os.makedev(*info.rdev), dir_fd=fd)
                except PermissionError:
                    result.needs_root.append(name)
                    continue
                os.chmod(base, mode_of(name), dir_fd=fd, follow_symlinks=False)  # mknod's mode passed the umask
                result.others += 1
            elif info.size == 0:
                _write(root, name, mode_of(name), iter(()))
                result.files += 1
        serial = 0
        for path in paths:
            with open_initrd(path) as handle:
                for stream in scan(handle, str(path)):
                    for member in stream.members():
                        serial += 1
                        targets = by_content.get(serial)
                        if not targets:
                            continue
                        first, *links = targets
                        root.trim()
                        _write(root, first, mode_of(first), member.chunks())
                        for link in links:
                            mode_of(link)  # the same inode: only to report it
                            src_fd, src = root.locate(first)
                            dst_fd, dst = root.locate(link)
                            os.link(src, dst, src_dir_fd=src_fd, dst_dir_fd=dst_fd, follow_symlinks=False)
                        result.files += len(targets)
        for name in reversed(dirs):  # contents first: a directory may be read-only
            root.trim()
            fd, base = root.locate(name)
            os.chmod(base, mode_of(name), dir_fd=fd, follow_symlinks=False)
    return result


def _write(root: _Root, name: str, mode: int, chunks: Iterator[bytes]) -> None:
    fd, base = root.locate(name)
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
    out = os.open(base, flags, 0o600, dir_fd=fd)
    try:
        for chunk in chunks:
            view = memoryview(chunk)
            while view:
                view = view[os.write(out, view) :]
        os.fchmod(out, mode)
    finally:
        os.close(out)
