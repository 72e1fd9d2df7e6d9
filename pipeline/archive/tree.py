"""The file tree the kernel ends up with after unpacking every archive of one or more initrds.

A model of `init/initramfs.c` over an in-memory file system: names are resolved like the kernel's `open`
(parent components follow symlinks, ".." climbs, the last component is never followed); a later entry of a
different type removes the old one (`clean_path`: a directory only if it is empty); a regular file over a
regular file truncates it in place (so its hard links change too); a directory over a directory only changes
its mode; parents are never created, so an entry whose parent is missing is dropped; hard links are matched by
(ino, dev, mode) within one archive, as `maybe_link` does. Nothing is ever deleted otherwise.
"""

from __future__ import annotations

import hashlib
import os
import stat
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

from pipeline.archive.cpio import Kind, Member, is_safe_name, shown
from pipeline.archive.segments import Progress, ProgressHandle, Segment, open_initrd, scan
from pipeline.errors import UnsafePathError

MAX_SYMLINK_DEPTH = 40  # the kernel's MAXSYMLINKS


@dataclass(frozen=True)
class EntryInfo:
    """One path of the effective tree and the object it names."""

    name: str
    kind: Kind
    mode: int  # permission bits
    uid: int = 0
    gid: int = 0
    size: int = 0
    sha256: str = ""  # of a regular file's content
    target: str = ""  # of a symlink
    rdev: tuple[int, int] = (0, 0)
    special: int = 0  # S_IFCHR, S_IFBLK, S_IFIFO or S_IFSOCK for Kind.OTHER
    links: int = 1  # names of this regular file in the tree (hard links)
    source: str = ""  # which file and segment last wrote it, e.g. "initrd.img@0"

    @property
    def st_mode(self) -> int:
        fmt = {Kind.FILE: stat.S_IFREG, Kind.DIR: stat.S_IFDIR, Kind.SYMLINK: stat.S_IFLNK}.get(self.kind, self.special)
        return fmt | self.mode

    @property
    def type_char(self) -> str:
        return stat.filemode(self.st_mode)[0]

    def same_object(self, other: EntryInfo) -> bool:
        """Equal for `diff`: everything but where it came from and how many names it has."""
        return (self.kind, self.mode, self.uid, self.gid, self.size, self.sha256, self.target, self.rdev) == (
            other.kind,
            other.mode,
            other.uid,
            other.gid,
            other.size,
            other.sha256,
            other.target,
            other.rdev,
        )


@dataclass
class _Inode:
    kind: Kind
    mode: int
    uid: int
    gid: int
    size: int = 0
    sha256: str = ""
    target: str = ""
    rdev: tuple[int, int] = (0, 0)
    special: int = 0
    source: str = ""
    content: int = -1  # serial number of the member whose data it holds (-1: none, i.e. empty)


@dataclass(frozen=True)
class Dropped:
    """An entry the kernel would not create, and why."""

    name: str
    source: str
    reason: str


def _split(path: str) -> list[str]:
    return [p for p in path.split("/") if p not in ("", ".")]


def _parent(path: str) -> str:
    return path.rpartition("/")[0]


@dataclass
class Tree:
    """A virtual root file system that archives are unpacked into, entry by entry."""

    nodes: dict[str, _Inode] = field(default_factory=dict)
    dropped: list[Dropped] = field(default_factory=list)
    segments: dict[Path, list[Segment]] = field(default_factory=dict)
    _children: dict[str, int] = field(default_factory=dict)
    _links: dict[tuple[int, int, int, int], str] = field(default_factory=dict)
    serial: int = 0

    def __post_init__(self) -> None:
        self.nodes.setdefault("", _Inode(Kind.DIR, 0o755, 0, 0))

    # -- name resolution -------------------------------------------------------------------------------

    def resolve_dir(self, parts: Sequence[str], base: str = "", depth: int = 0) -> str | None:
        """The canonical path of the directory that `parts` (relative to `base`) names, or None."""
        cur = base
        for part in parts:
            if part == "..":
                cur = _parent(cur)
                continue
            cand = f"{cur}/{part}" if cur else part
            node = self.nodes.get(cand)
            if node is not None and node.kind is Kind.SYMLINK:
                if depth >= MAX_SYMLINK_DEPTH:
                    return None
                start = "" if node.target.startswith("/") else cur
                resolved = self.resolve_dir(_split(node.target), start, depth + 1)
                if resolved is None:
                    return None
                cand, node = resolved, self.nodes[resolved]
            if node is None or node.kind is not Kind.DIR:
                return None
            cur = cand
        return cur

    def _place(self, name: str) -> tuple[str | None, str]:
        parts = _split(name)
        if not parts:
            return "", ""
        parent = self.resolve_dir(parts[:-1])
        if parent is None:
            return None, "its parent directory does not exist"
        last = parts[-1]
        if last == "..":
            return None, "it names a parent directory"
        return (f"{parent}/{last}" if parent else last), ""

    # -- the kernel's operations -----------------------------------------------------------------------

    def _remove(self, path: str) -> bool:
        """`clean_path`: unlink, or rmdir (which fails on a non-empty directory)."""
        node = self.nodes.get(path)
        if node is None:
            return True
        if node.kind is Kind.DIR and self._children.get(path, 0):
            return False
        del self.nodes[path]
        self._children[_parent(path)] -= 1
        return True

    def _create(self, path: str, node: _Inode) -> None:
        if path not in self.nodes:
            parent = _parent(path)
            self._children[parent] = self._children.get(parent, 0) + 1
        self.nodes[path] = node

    def end_archive(self) -> None:
        self._links.clear()  # the kernel's free_hash() at every trailer

    def add(self, member: Member, source: str, size: int = 0, sha256: str = "") -> None:
        """Apply one member; for a regular file pass its content's size and hash (already read)."""
        self.serial += 1
        h = member.header
        path, why = self._place(h.name)
        if path is None:
            self.dropped.append(Dropped(h.name, source, why))
            return
        mode = stat.S_IMODE(h.st_mode)
        existing = self.nodes.get(path)
        if path == "":
            if member.kind is Kind.DIR:  # "." : the root only changes mode
                root = self.nodes[""]
                root.mode, root.uid, root.gid = mode, h.uid, h.gid
            return
        kind = member.kind
        if kind is Kind.FILE:
            key = (h.ino, h.dev[0], h.dev[1], h.st_mode)
            if h.nlink >= 2 and key in self._links:
                old = self.nodes.get(self._links[key])
                if old is None or old.kind is not Kind.FILE or not self._remove(path):
                    self.dropped.append(Dropped(h.name, source, "its hard link target is gone"))
                    return
                self._create(path, old)
                old.mode, old.uid, old.gid = mode, h.uid, h.gid
                if h.size:
                    old.size, old.sha256, old.source, old.content = size, sha256, source, self.serial
                return
            if h.nlink >= 2:
                self._links[key] = path
            if existing is not None and existing.kind is Kind.FILE:
                node = existing  # O_TRUNC on the same inode
            elif existing is not None and not self._remove(path):
                self.dropped.append(Dropped(h.name, source, "a non-empty directory is in the way"))
                return
            else:
                node = _Inode(Kind.FILE, mode, h.uid, h.gid)
                self._create(path, node)
            node.mode, node.uid, node.gid = mode, h.uid, h.gid
            node.size, node.sha256, node.source = size, sha256, source
            node.content = self.serial if size else -1
        elif kind is Kind.DIR:
            if existing is not None and existing.kind is Kind.DIR:
                existing.mode, existing.uid, existing.gid = mode, h.uid, h.gid
                return
            if existing is not None and not self._remove(path):
                return  # unreachable: only a directory can be non-empty
            self._create(path, _Inode(Kind.DIR, mode, h.uid, h.gid, source=source))
        elif kind is Kind.SYMLINK:
            if existing is not None and not self._remove(path):
                self.dropped.append(Dropped(h.name, source, "a non-empty directory is in the way"))
                return
            self._create(path, _Inode(Kind.SYMLINK, 0o777, h.uid, h.gid, target=member.target, source=source))
        else:
            special = stat.S_IFMT(h.st_mode)
            if existing is not None and existing.kind is Kind.OTHER and existing.special == special:
                existing.mode, existing.uid, existing.gid = mode, h.uid, h.gid  # mknod: EEXIST
                return
            if existing is not None and not self._remove(path):
                self.dropped.append(Dropped(h.name, source, "a non-empty directory is in the way"))
                return
            node = _Inode(Kind.OTHER, mode, h.uid, h.gid, rdev=h.rdev, special=special, source=source)
            self._create(path, node)

    # -- results ---------------------------------------------------------------------------------------

    def entries(self) -> dict[str, EntryInfo]:
        links: dict[int, int] = {}
        for node in self.nodes.values():
            links[id(node)] = links.get(id(node), 0) + 1
        return {
            path: EntryInfo(
                name=path,
                kind=node.kind,
                mode=node.mode,
                uid=node.uid,
                gid=node.gid,
                size=node.size,
                sha256=node.sha256,
                target=node.target,
                rdev=node.rdev,
                special=node.special,
                links=links[id(node)] if node.kind is Kind.FILE else 1,
                source=node.source,
            )
            for path, node in sorted(self.nodes.items())
            if path
        }

    def files_by_content(self) -> dict[int, list[str]]:
        """Member serial number → the paths whose content it provides (for extraction)."""
        found: dict[int, list[str]] = {}
        for path, node in sorted(self.nodes.items()):
            if node.kind is Kind.FILE and node.content >= 0:
                found.setdefault(node.content, []).append(path)
        return found


def build_tree(
    paths: Sequence[Path], *, safe_names: bool = False, progress: Callable[[Path], Progress | None] | None = None
) -> Tree:
    """Unpack, virtually, the initrds `paths` in order (as `INITRD a,b` or `cat a b` with padding would).

    With `safe_names`, an absolute name or a ".." component is an UnsafePathError (for extraction).
    `progress(path)` may return a callback that follows the reading of that file. The segments found are
    kept in `Tree.segments`, so one pass serves a listing too.
    """
    tree = Tree()
    for path in paths:
        with open_initrd(path) as raw:
            total = raw.seek(0, os.SEEK_END)
            report = progress(path) if progress else None
            handle: BinaryIO = ProgressHandle(raw, total, report) if report else raw  # type: ignore[assignment]
            found = tree.segments.setdefault(path, [])
            for stream in scan(handle, str(path), total):
                source = f"{path.name}@{stream.offset}"
                archive = 0
                for member in stream.members():
                    if stream.archive != archive:
                        tree.end_archive()
                        archive = stream.archive
                    if safe_names and not is_safe_name(member.name):
                        raise UnsafePathError(
                            f"{shown(source)}: refusing entry {member.name!r}: absolute names and '..' are not extracted"
                        )
                    size, digest = 0, ""
                    if member.kind is Kind.FILE:
                        sha = hashlib.sha256()
                        for chunk in member.chunks():
                            sha.update(chunk)
                            size += len(chunk)
                        digest = sha.hexdigest()
                    tree.add(member, source, size, digest)
                tree.end_archive()
                found.append(stream.segment)
            if report:
                report(total, total)
    return tree


def effective_tree(paths: Sequence[Path]) -> dict[str, EntryInfo]:
    """Every path that exists after the kernel unpacked `paths` in order, with what it is."""
    return build_tree(paths).entries()
