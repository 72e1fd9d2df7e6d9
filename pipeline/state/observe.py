"""Facts about a target root: what is at each path we care about. Reads only; never follows a leaf symlink."""

from __future__ import annotations

import hashlib
import os
import stat
from collections.abc import Iterable
from dataclasses import dataclass, replace
from typing import Literal

from pipeline.errors import UnsafePathError
from pipeline.state.manifest import as_text
from pipeline.state.rootfs import ParentNotDirectory, TargetRoot, dir_is_empty, split_path

Kind = Literal["missing", "file", "dir", "symlink", "other"]
_READ_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC


@dataclass(frozen=True)
class Fact:
    """One path as found in the target. `text` is kept for small text files so the plan can show diffs."""

    path: str
    kind: Kind
    mode: int | None = None  # permission bits incl. setuid/setgid/sticky
    uid: int | None = None
    gid: int | None = None
    sha256: str | None = None
    size: int | None = None
    target: str | None = None  # symlink text
    empty: bool | None = None  # dirs: no entries
    is_dir_link: bool = False  # a symlink that resolves (inside the root) to a directory
    text: str | None = None
    links: int = 1  # files: hard links; more than one means apply replaces the file rather than change it

    @property
    def link_note(self) -> str:
        """What the plan says about a file change on a hard-linked file (apply copies it, issue 12 defect 1)."""
        if self.kind != "file" or self.links <= 1:
            return ""
        return f"; {self.links} hard links: replaced by a copy, the other names keep the old file"

    @property
    def fingerprint(self) -> str:
        """A short identity used to refuse a saved plan when the target changed since it was made."""
        if self.kind == "file":
            return f"file:{self.mode:04o}:{self.sha256}"
        if self.kind == "dir":
            return f"dir:{self.mode:04o}"
        if self.kind == "symlink":
            return f"symlink:{self.target}"
        return self.kind


def _hash_file(dirfd: int, name: str) -> tuple[str, bytes | None, os.stat_result]:
    fd = os.open(name, _READ_FLAGS, dir_fd=dirfd)
    with os.fdopen(fd, "rb") as handle:
        st = os.fstat(handle.fileno())
        digest = hashlib.sha256()
        head = b""
        while chunk := handle.read(1 << 20):
            digest.update(chunk)
            if len(head) <= (512 << 10):
                head += chunk
    return digest.hexdigest(), head, st


def observe_path(root: TargetRoot, path: str) -> Fact:
    """The fact at one gateway path; a path below a missing or non-directory parent is "missing".

    A parent symlink that leaves the root raises UnsafePathError (from TargetRoot). A file replaced between
    lstat and open is looked at again (a loop, not recursion: a busy target cannot exhaust the stack).
    """
    while True:
        fact = _observe_once(root, path)
        if fact is not None:
            return fact


def _observe_once(root: TargetRoot, path: str) -> Fact | None:
    """The fact at `path`, or None if the file there was replaced while it was being read."""
    try:
        with root.parent(path) as found:
            if found is None:
                return Fact(path, "missing")
            dirfd, name = found
            try:
                st = os.stat(name, dir_fd=dirfd, follow_symlinks=False)
            except FileNotFoundError:
                return Fact(path, "missing")
            base = Fact(path, "other", mode=stat.S_IMODE(st.st_mode), uid=st.st_uid, gid=st.st_gid)
            if stat.S_ISREG(st.st_mode):
                digest, head, fst = _hash_file(dirfd, name)
                if (fst.st_dev, fst.st_ino) != (st.st_dev, st.st_ino):  # replaced between lstat and open
                    return None
                return replace(
                    base, kind="file", sha256=digest, size=fst.st_size, text=as_text(head or b""), links=fst.st_nlink
                )
            if stat.S_ISDIR(st.st_mode):
                return replace(base, kind="dir", empty=dir_is_empty(dirfd, name))
            if stat.S_ISLNK(st.st_mode):
                target = os.readlink(name, dir_fd=dirfd)
                return replace(base, kind="symlink", target=target, is_dir_link=_resolves_to_dir(root, path))
            return base
    except ParentNotDirectory:
        return Fact(path, "missing")


def _resolves_to_dir(root: TargetRoot, path: str) -> bool:
    """Whether a symlink, resolved confined to the root, is a directory (the way a parent would be walked).

    A link that leaves the root is not an error here: as a leaf it is only a fact. It matters only when
    a path below it is needed, and then the walk to that path refuses it.
    """
    try:
        opened = root.open_dir(split_path(path))
    except (UnsafePathError, ParentNotDirectory):
        return False
    if opened is None:
        return False
    os.close(opened[0])
    return True


@dataclass(frozen=True)
class Observed:
    """Facts for a set of paths; `facts[path]` exists for every path asked about."""

    facts: dict[str, Fact]

    def __getitem__(self, path: str) -> Fact:
        return self.facts[path]

    def get(self, path: str) -> Fact:
        return self.facts.get(path) or Fact(path, "missing")


def observe_paths(root: TargetRoot, paths: Iterable[str]) -> Observed:
    return Observed({p: observe_path(root, p) for p in sorted(set(paths))})
