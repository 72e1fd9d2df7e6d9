"""The file tree the kernel ends up with after unpacking every archive of one or more initrds.

A model of `init/initramfs.c` over an in-memory file system: names are resolved like the kernel's `open`
(parent components follow symlinks, ".." climbs, the last component is never followed); a later entry of a
different type removes the old one (`clean_path`: a directory only if it is empty); a regular file over a
regular file truncates it in place (so its hard links change too); a directory over a directory only changes
its mode; parents are never created, so an entry whose parent is missing is dropped; hard links are matched by
(ino, dev, mode) within one archive, as `maybe_link` does. Nothing is ever deleted otherwise.

Memory per entry is kept small because an initrd of a few MB can hold a million entries: an object is an
immutable record, and records without content of their own (directories, empty files, devices, symlinks)
are shared between paths; a hard-linked file's records carry an inode number whose names are kept, so that
changing one name changes all. Listing and diffing walk the paths in order without building a second copy.
"""

from __future__ import annotations

import hashlib
import os
import stat
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO, NamedTuple

from pipeline.archive.cpio import Kind, Member, encode_name, is_safe_name, shown
from pipeline.archive.segments import Progress, ProgressHandle, Segment, open_initrd, scan
from pipeline.errors import UnsafePathError

MAX_SYMLINK_DEPTH = 40  # the kernel's MAXSYMLINKS
NAME_MAX = 255  # longer components fail with ENAMETOOLONG: the kernel creates nothing
MAX_DROPPED = 1000  # dropped entries kept for the report; the rest are only counted
_EMPTY_SHA256 = hashlib.sha256().digest()


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


class _Inode(NamedTuple):
    kind: Kind
    mode: int
    uid: int
    gid: int
    size: int = 0
    sha256: bytes = b""  # the digest, for regular files
    target: str = ""
    rdev: tuple[int, int] = (0, 0)
    special: int = 0
    source: str = ""
    content: int = -1  # serial number of the member whose data it holds (-1: none, i.e. empty)
    ino: int = 0  # non-zero for a file with more than one name: the key of its names in Tree._names


@dataclass(frozen=True, slots=True)
class Dropped:
    """An entry the kernel would not create, and why."""

    name: str
    source: str
    reason: str


def _split(path: str) -> list[str]:
    return [p for p in path.split("/") if p not in ("", ".")]


def _parent_id(key: str) -> int:
    return int(key[: key.index("/")], 16)


def _component(key: str) -> str:
    return key[key.index("/") + 1 :]


@dataclass
class Tree:
    """A virtual root file system that archives are unpacked into, entry by entry.

    An object is found by a key made of its directory's number and its own name (`f"{dir:x}/{name}"`; the
    root is ""), never by its whole path: a million files deep down a 4 KB path then cost their names only,
    as dentries do in the kernel, and not 4 GB. Whole paths are made one at a time when the tree is walked.
    """

    nodes: dict[str, _Inode] = field(default_factory=dict)
    dropped: list[Dropped] = field(default_factory=list)  # the first MAX_DROPPED
    dropped_total: int = 0
    segments: dict[Path, list[Segment]] = field(default_factory=dict)
    _children: dict[int, int] = field(default_factory=dict)  # directory number → entries in it
    _dir_ids: dict[str, int] = field(default_factory=dict)  # key of a directory → its number
    _dir_keys: list[str] = field(default_factory=list)  # number → key (of directories since removed, too)
    _links: dict[int, str] = field(default_factory=dict)  # packed (ino, dev, mode) → first key, this archive
    _names: dict[int, list[str]] = field(default_factory=dict)  # inode number → keys it was given
    _shared: dict[_Inode, _Inode] = field(default_factory=dict)
    serial: int = 0

    def __post_init__(self) -> None:
        self.nodes.setdefault("", _Inode(Kind.DIR, 0o755, 0, 0))
        self._dir_ids[""] = 0
        self._dir_keys.append("")

    # -- name resolution -------------------------------------------------------------------------------

    def resolve_dir(self, parts: Sequence[str], base: int = 0, depth: int = 0) -> int | None:
        """The number of the directory that `parts` (relative to directory `base`) names, or None."""
        cur = base
        for part in parts:
            if part == "..":
                cur = _parent_id(self._dir_keys[cur]) if cur else 0
                continue
            cand = f"{cur:x}/{part}"
            node = self.nodes.get(cand)
            if node is not None and node.kind is Kind.SYMLINK:
                if depth >= MAX_SYMLINK_DEPTH:
                    return None
                start = 0 if node.target.startswith("/") else cur
                resolved = self.resolve_dir(_split(node.target), start, depth + 1)
                if resolved is None:
                    return None
                cand, node = self._dir_keys[resolved], self.nodes[self._dir_keys[resolved]]
            if node is None or node.kind is not Kind.DIR:
                return None
            cur = self._dir_ids[cand]
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
        if len(last) > NAME_MAX // 4 and len(encode_name(last)) > NAME_MAX:  # (no UTF-8 character is longer)
            return None, f"its last component is longer than {NAME_MAX} bytes (the kernel's NAME_MAX)"
        return f"{parent:x}/{last}", ""

    def _key(self, path: str) -> str:
        """The key of a path of the tree as `infos()` names it (canonical: no symlinks to follow)."""
        parts = _split(path)
        if not parts:
            return ""
        cur = 0
        for part in parts[:-1]:
            cur = self._dir_ids[f"{cur:x}/{part}"]
        return f"{cur:x}/{parts[-1]}"

    # -- the kernel's operations -----------------------------------------------------------------------

    def _remove(self, key: str) -> bool:
        """`clean_path`: unlink, or rmdir (which fails on a non-empty directory)."""
        node = self.nodes.get(key)
        if node is None:
            return True
        if node.kind is Kind.DIR:
            number = self._dir_ids[key]
            if self._children.get(number, 0):
                return False
            del self._dir_ids[key]
        del self.nodes[key]
        self._children[_parent_id(key)] -= 1
        return True

    def _create(self, key: str, node: _Inode) -> None:
        if key not in self.nodes:
            parent = _parent_id(key)
            self._children[parent] = self._children.get(parent, 0) + 1
        if node.kind is Kind.DIR and key not in self._dir_ids:
            self._dir_ids[key] = len(self._dir_keys)
            self._dir_keys.append(key)
        self._set(key, node)

    def _set(self, path: str, node: _Inode) -> None:
        """Store `node` at `path` and at every other name of its inode; share it if it holds nothing unique."""
        if node.ino:
            for name in self._names[node.ino]:
                current = self.nodes.get(name)
                if current is not None and current.ino == node.ino:
                    self.nodes[name] = node
            self.nodes[path] = node
        elif node.content < 0:  # symlinks too: a million links to one long target then hold it once
            self.nodes[path] = self._shared.setdefault(node, node)
        else:
            self.nodes[path] = node

    def _drop(self, name: str, source: str, reason: str) -> None:
        self.dropped_total += 1
        if len(self.dropped) < MAX_DROPPED:
            self.dropped.append(Dropped(name, source, reason))

    def end_archive(self) -> None:
        self._links.clear()  # the kernel's free_hash() at every trailer

    def add(self, member: Member, source: str, size: int = 0, sha256: bytes = b"") -> None:
        """Apply one member; for a regular file pass its content's size and SHA-256 digest (already read)."""
        self.serial += 1
        h = member.header
        path, why = self._place(h.name)
        if path is None:
            self._drop(h.name, source, why)
            return
        mode = stat.S_IMODE(h.st_mode)
        existing = self.nodes.get(path)
        if path == "":
            if member.kind is Kind.DIR:  # "." : the root only changes mode
                self.nodes[""] = self.nodes[""]._replace(mode=mode, uid=h.uid, gid=h.gid)
            return
        kind = member.kind
        if kind is Kind.FILE:
            self._add_file(path, existing, member, source, size, sha256)
        elif kind is Kind.DIR:
            if existing is not None and existing.kind is Kind.DIR:
                self._set(path, existing._replace(mode=mode, uid=h.uid, gid=h.gid))
                return
            if existing is not None and not self._remove(path):
                return  # unreachable: only a directory can be non-empty
            self._create(path, _Inode(Kind.DIR, mode, h.uid, h.gid, source=source))
        elif kind is Kind.SYMLINK:
            if existing is not None and not self._remove(path):
                self._drop(h.name, source, "a non-empty directory is in the way")
                return
            self._create(path, _Inode(Kind.SYMLINK, 0o777, h.uid, h.gid, target=member.target, source=source))
        else:
            special = stat.S_IFMT(h.st_mode)
            if existing is not None and existing.kind is Kind.OTHER and existing.special == special:
                self._set(path, existing._replace(mode=mode, uid=h.uid, gid=h.gid))  # mknod: EEXIST
                return
            if existing is not None and not self._remove(path):
                self._drop(h.name, source, "a non-empty directory is in the way")
                return
            self._create(path, _Inode(Kind.OTHER, mode, h.uid, h.gid, rdev=h.rdev, special=special, source=source))

    def _add_file(
        self, path: str, existing: _Inode | None, member: Member, source: str, size: int, sha256: bytes
    ) -> None:
        h = member.header
        mode = stat.S_IMODE(h.st_mode)
        content = self.serial if size else -1
        if h.nlink >= 2:
            # one int instead of a tuple of four: the kernel keeps this table for a whole archive
            key = (h.ino << 96) | (h.dev[0] << 64) | (h.dev[1] << 32) | h.st_mode
            first = self._links.get(key)
            if first is None:
                self._links[key] = path
            else:
                old = self.nodes.get(first)
                if old is None or old.kind is not Kind.FILE:
                    self._drop(h.name, source, "its hard link target is gone")
                    return
                if not old.ino:
                    old = old._replace(ino=len(self._names) + 1)
                    self._names[old.ino] = [first]
                    self.nodes[first] = old
                if path != first:
                    if not self._remove(path):
                        self._drop(h.name, source, "its hard link target is gone")
                        return
                    self._names[old.ino].append(path)
                    self._create(path, old)
                node = old._replace(mode=mode, uid=h.uid, gid=h.gid)
                if h.size:
                    node = node._replace(size=size, sha256=sha256, source=source, content=content)
                self._set(path, node)
                return
        if existing is not None and existing.kind is Kind.FILE:  # O_TRUNC on the same inode
            node = existing._replace(mode=mode, uid=h.uid, gid=h.gid, size=size, sha256=sha256, source=source)
            self._set(path, node._replace(content=content))
        elif existing is not None and not self._remove(path):
            self._drop(h.name, source, "a non-empty directory is in the way")
        else:
            self._create(path, _Inode(Kind.FILE, mode, h.uid, h.gid, size, sha256, source=source, content=content))

    # -- results ---------------------------------------------------------------------------------------

    def __len__(self) -> int:
        """Entries of the tree, not counting its root."""
        return len(self.nodes) - 1

    def _walk(self) -> Iterator[tuple[str, _Inode]]:
        """(path, object) for every entry, in the order of sorted paths, each path made as it is reached."""
        kids: dict[int, list[str]] = {}
        for key in self.nodes:
            if key:
                kids.setdefault(_parent_id(key), []).append(key)

        def ordered(number: int) -> Iterator[str]:
            # Keys of one directory share their prefix, so they sort as the names do; a subdirectory's
            # contents sort where its name + "/" does (after "lib.so", before "lib0"), as whole paths would.
            keys = kids.pop(number, [])
            keys += [key + "/" for key in keys if self._dir_ids.get(key, -1) in kids]
            keys.sort()
            return iter(keys)

        stack = [(ordered(0), "")]
        while stack:
            keys, prefix = stack[-1]
            item = next(keys, None)
            if item is None:
                stack.pop()
            elif item.endswith("/"):
                stack.append((ordered(self._dir_ids[item[:-1]]), f"{prefix}{_component(item)}"))
            else:
                yield f"{prefix}{_component(item)}", self.nodes[item]

    def infos(self) -> Iterator[EntryInfo]:
        """Every entry, sorted by path, made one at a time (a listing holds no second copy of the tree)."""
        links: dict[int, int] = {}
        for node in self.nodes.values():
            if node.ino:
                links[node.ino] = links.get(node.ino, 0) + 1
        for path, node in self._walk():
            yield EntryInfo(
                name=path,
                kind=node.kind,
                mode=node.mode,
                uid=node.uid,
                gid=node.gid,
                size=node.size,
                sha256=node.sha256.hex(),
                target=node.target,
                rdev=node.rdev,
                special=node.special,
                links=links.get(node.ino, 1),
                source=node.source,
            )

    def mode(self, path: str) -> int:
        """The permission bits of the object at `path` (which must exist)."""
        return self.nodes[self._key(path)].mode

    def entries(self) -> dict[str, EntryInfo]:
        """Every entry by path: for small trees and tests (a listing should iterate `infos()`)."""
        return {info.name: info for info in self.infos()}

    def files_by_content(self) -> dict[int, list[str]]:
        """Member serial number → the paths whose content it provides (for extraction)."""
        found: dict[int, list[str]] = {}
        for path, node in self._walk():
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
                    size, digest = 0, b""
                    if member.kind is Kind.FILE:
                        sha = hashlib.sha256()
                        for chunk in member.chunks():
                            sha.update(chunk)
                            size += len(chunk)
                        digest = sha.digest() if size else _EMPTY_SHA256
                    tree.add(member, source, size, digest)
                tree.end_archive()
                found.append(stream.segment)
            if report:
                report(total, total)
    return tree


def effective_tree(paths: Sequence[Path]) -> dict[str, EntryInfo]:
    """Every path that exists after the kernel unpacked `paths` in order, with what it is."""
    return build_tree(paths).entries()
