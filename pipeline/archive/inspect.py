"""What `nfsroot initrd ls` and `diff` show: pure functions from segments and trees to lines of text."""

from __future__ import annotations

import stat
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from pipeline.archive.cpio import Kind, shown
from pipeline.archive.segments import Segment
from pipeline.archive.tree import Dropped, EntryInfo, Tree

HASH_DIGITS = 12


def split_initrd_list(spec: str) -> list[Path]:
    """`a.img,b.img` (pxelinux's INITRD syntax) → [a.img, b.img]."""
    return [Path(part) for part in spec.split(",") if part]


def describe(info: EntryInfo) -> str:
    """One `ls -l`-like line: mode, size (or device numbers), name, and the target of a symlink."""
    size = f"{info.rdev[0]},{info.rdev[1]}" if info.special in (stat.S_IFCHR, stat.S_IFBLK) else str(info.size)
    owner = f" {info.uid}:{info.gid}" if info.uid or info.gid else ""
    line = f"{stat.filemode(info.st_mode)}{owner} {size:>10}  {shown(info.name)}"
    return f"{line} -> {shown(info.target)}" if info.target else line


def segment_lines(path: Path, segments: Sequence[Segment]) -> Iterator[str]:
    yield f"{shown(str(path))}: {len(segments)} segment{'s' if len(segments) != 1 else ''}"
    for seg in segments:
        archives = f" in {seg.archives} archives" if seg.archives > 1 else ""
        yield (
            f"  offset {seg.offset:>10}  {seg.compression.value:<5} {seg.length:>10} bytes"
            f"  {seg.entries:>5} entries{archives}"
        )


def listing_lines(tree: Tree) -> Iterator[str]:
    yield f"effective tree: {len(tree)} entries"
    for info in tree.infos():
        yield describe(info)
    yield from dropped_lines(tree.dropped, tree.dropped_total)


def dropped_lines(dropped: Sequence[Dropped], total: int) -> Iterator[str]:
    """The entries the kernel would ignore, the first few of them named."""
    for drop in dropped:
        yield dropped_line(drop)
    if total > len(dropped):
        yield f"ignored by the kernel: {total - len(dropped)} more entries"


def dropped_line(drop: Dropped) -> str:
    return f"ignored by the kernel: {shown(drop.name)} from {shown(drop.source)}: {drop.reason}"


@dataclass(frozen=True)
class TreeChange:
    op: str  # "added", "removed" or "changed"
    name: str
    old: EntryInfo | None
    new: EntryInfo | None


def diff_trees(a: Mapping[str, EntryInfo], b: Mapping[str, EntryInfo]) -> list[TreeChange]:
    """Every path whose object differs between two effective trees, sorted by path."""
    return list(diff_sorted((a[k] for k in sorted(a)), (b[k] for k in sorted(b))))


def diff_sorted(a: Iterable[EntryInfo], b: Iterable[EntryInfo]) -> Iterator[TreeChange]:
    """The changes between two trees given as entries sorted by name, by merging them (nothing is held)."""
    end = EntryInfo("", Kind.DIR, 0)
    ita, itb = iter(a), iter(b)
    old, new = next(ita, end), next(itb, end)
    while old is not end or new is not end:
        if new is end or (old is not end and old.name < new.name):
            yield TreeChange("removed", old.name, old, None)
            old = next(ita, end)
        elif old is end or new.name < old.name:
            yield TreeChange("added", new.name, None, new)
            new = next(itb, end)
        else:
            if not old.same_object(new):
                yield TreeChange("changed", old.name, old, new)
            old, new = next(ita, end), next(itb, end)


def _short(info: EntryInfo) -> str:
    text = f"{stat.filemode(info.st_mode)} {info.size:>9}"
    if info.uid or info.gid:
        text += f" {info.uid}:{info.gid}"
    if info.sha256:
        text += f" {info.sha256[:HASH_DIGITS]}"
    if info.target:
        text += f" -> {shown(info.target)}"
    if info.special in (stat.S_IFCHR, stat.S_IFBLK):
        text += f" dev {info.rdev[0]},{info.rdev[1]}"
    return text


def change_lines(changes: Iterable[TreeChange], counts: dict[str, int] | None = None) -> Iterator[str]:
    """A line per change, then a summary; `counts` (if given) is filled with the number of each kind."""
    counts = {} if counts is None else counts
    counts.update(added=0, removed=0, changed=0)
    for change in changes:
        counts[change.op] += 1
        if change.old is None and change.new is not None:
            yield f"+ {_short(change.new)}  {shown(change.name)}"
        elif change.new is None and change.old is not None:
            yield f"- {_short(change.old)}  {shown(change.name)}"
        elif change.old is not None and change.new is not None:
            yield f"~ {_short(change.old)}  =>  {_short(change.new)}  {shown(change.name)}"
    yield ", ".join(f"{n} {op}" for op, n in counts.items())
