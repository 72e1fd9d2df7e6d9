"""Confined access to a target root: every path component is resolved here, never by the kernel's path walk.

A target root is a directory (`/` on the gateway, a local directory in the example). Paths inside it are
absolute gateway paths ("/etc/exports"); the root is prepended by walking one component at a time with
directory file descriptors, `lstat` and `O_NOFOLLOW`. A symlinked parent directory is followed only when its
link text, resolved by us, stays inside the root (Debian's merged-usr `lib -> usr/lib`); one that leaves the
root (an absolute link into the host, `../../..`) is refused with `UnsafePathError`. Leaf symlinks are never
followed: they are facts to observe or entries to replace.
"""

from __future__ import annotations

import errno
import os
import stat
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path

from pipeline.errors import PipelineError, UnsafePathError

MAX_SYMLINK_HOPS = 40  # the kernel's own limit (ELOOP)
_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC


class PathConflictError(PipelineError):
    """The target holds something in the way (a file where a directory is needed, a non-empty directory...)."""


class ParentNotDirectory(PathConflictError):
    """A parent component exists but is not a directory (or a symlink to one)."""

    def __init__(self, path: str, parent: str) -> None:
        self.parent = parent
        super().__init__(f"{path}: parent {parent} exists and is not a directory")


def dir_is_empty(dirfd: int, name: str) -> bool:
    """Whether the directory `name` (never followed if it is a symlink) has no entries."""
    fd = os.open(name, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=dirfd)
    try:
        with os.scandir(fd) as it:
            return next(iter(it), None) is None
    finally:
        os.close(fd)


def split_path(path: str) -> tuple[str, ...]:
    """Components of an absolute, already validated gateway path ("/" gives ())."""
    return tuple(part for part in path.split("/") if part)


def join_path(parts: tuple[str, ...] | list[str]) -> str:
    return "/" + "/".join(parts)


class TargetRoot:
    """An open target root directory; use as a context manager so its descriptor is closed."""

    def __init__(self, root: Path) -> None:
        self.path = Path(os.path.abspath(root))
        try:
            self.fd = os.open(self.path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        except FileNotFoundError:
            raise PipelineError(f"target root {self.path} does not exist") from None
        except NotADirectoryError:
            raise PipelineError(f"target root {self.path} is not a directory") from None
        # Absolute link texts are compared with the root's real location: "/srv/x" inside a target at
        # /srv stays inside, "/etc" inside a target at /tmp/t leaves it.
        self.real = os.path.realpath(self.path)

    def close(self) -> None:
        os.close(self.fd)

    def __enter__(self) -> TargetRoot:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _absolute_link(self, link: str, where: str, display: str) -> list[str]:
        """Components, relative to the root, of an absolute link text; refused if it names a place outside."""
        if self.real == "/":
            return link.split("/")
        if link == self.real or link.startswith(self.real + "/"):
            return link[len(self.real) :].split("/")
        raise UnsafePathError(
            f"{display}: {where} in the target is a symlink to {link}, outside the target root {self.path}; refusing"
        )

    def _open_real(self, resolved: list[str], display: str) -> int:
        """Reopen a symlink-free directory path from the root (after `..` climbed out of the current one)."""
        fd = os.dup(self.fd)
        for name in resolved:
            try:
                nfd = os.open(name, _DIR_FLAGS, dir_fd=fd)
            except OSError as exc:
                os.close(fd)
                raise UnsafePathError(f"{display}: {join_path(resolved)} changed while resolving") from exc
            os.close(fd)
            fd = nfd
        return fd

    def open_dir(self, parts: tuple[str, ...], display: str | None = None) -> tuple[int, tuple[str, ...]] | None:
        """Open the directory at root-relative `parts`; None if a component is missing.

        Returns a new descriptor (the caller closes it) and the symlink-free path it was reached by.
        Symlinks are resolved the way the kernel would, one component at a time: `..` only ever climbs the
        symlink-free prefix already walked, so a link text cannot hide an escape behind another link.
        Raises ParentNotDirectory when a component is a file, UnsafePathError when a symlink leaves the root.
        """
        shown = display or join_path(parts)
        pending = list(parts)
        resolved: list[str] = []
        fd = os.dup(self.fd)
        hops = 0
        last_link = ""
        try:
            while pending:
                name = pending.pop(0)
                if name in ("", "."):
                    continue
                if name == "..":
                    if not resolved:
                        raise UnsafePathError(
                            f"{shown}: a symlink in the target ({last_link}) leads out of the target root "
                            f"{self.path}; refusing"
                        )
                    resolved.pop()
                    os.close(fd)
                    fd = self._open_real(resolved, shown)
                    continue
                try:
                    st = os.stat(name, dir_fd=fd, follow_symlinks=False)
                except FileNotFoundError:
                    os.close(fd)
                    return None
                if stat.S_ISLNK(st.st_mode):
                    hops += 1
                    if hops > MAX_SYMLINK_HOPS:
                        raise UnsafePathError(f"{shown}: too many levels of symlinks in the target")
                    link = os.readlink(name, dir_fd=fd)
                    where = join_path([*resolved, name])
                    last_link = f"{where} -> {link}"
                    if link.startswith("/"):
                        pending = self._absolute_link(link, where, shown) + pending
                        resolved = []
                        os.close(fd)
                        fd = os.dup(self.fd)
                    else:  # relative to the directory holding the link, which `fd` still is
                        pending = link.split("/") + pending
                    continue
                if not stat.S_ISDIR(st.st_mode):
                    raise ParentNotDirectory(shown, join_path([*resolved, name]))
                try:
                    nfd = os.open(name, _DIR_FLAGS, dir_fd=fd)
                except OSError as exc:
                    if exc.errno in (errno.ELOOP, errno.ENOTDIR):  # swapped under us: refuse, never follow
                        raise UnsafePathError(
                            f"{shown}: {join_path([*resolved, name])} changed while resolving"
                        ) from exc
                    raise
                os.close(fd)
                fd = nfd
                resolved.append(name)
        except BaseException:
            os.close(fd)
            raise
        return fd, tuple(resolved)

    @contextmanager
    def parent(self, path: str) -> Iterator[tuple[int, str] | None]:
        """The directory holding `path` (as an open fd) and the leaf name; None if the parent is missing."""
        parts = split_path(path)
        if not parts:
            raise UnsafePathError("the target root itself cannot be an entry")
        opened = self.open_dir(parts[:-1], display=path)
        if opened is None:
            yield None
            return
        fd, _ = opened
        try:
            yield fd, parts[-1]
        finally:
            os.close(fd)

    def ensure_dir(self, path: str, mode: int = 0o755) -> None:
        """Create a directory and its missing parents (backups only: planned dirs go through `mkdir` changes)."""
        parts = split_path(path)
        for i in range(1, len(parts) + 1):
            with self.parent(join_path(parts[:i])) as where:
                assert where is not None  # the previous iteration made it
                fd, name = where
                with suppress(FileExistsError):
                    os.mkdir(name, mode, dir_fd=fd)
