"""`nfsroot initrd ls|diff|extract`: look inside initrds as the kernel will unpack them."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable, Iterable
from pathlib import Path

from pipeline.archive.cpio import shown
from pipeline.archive.extract import extract
from pipeline.archive.inspect import (
    change_lines,
    diff_sorted,
    dropped_lines,
    listing_lines,
    segment_lines,
    split_initrd_list,
)
from pipeline.archive.tree import build_tree
from pipeline.cli import EXIT_CHANGES, EXIT_ERROR, EXIT_OK
from pipeline.errors import ArchiveError


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "initrd",
        help="inspect initrds as the kernel unpacks them (ls, diff, extract)",
        description="Inspect initrds as the kernel unpacks them. FILE may be pxelinux-style a.img,b.img.",
    )
    actions = parser.add_subparsers(dest="initrd_action", required=True, metavar="ACTION")

    ls = actions.add_parser("ls", help="list segments and the effective tree of one or more initrds")
    ls.add_argument("files", nargs="+", metavar="FILE", help="initrds in boot order")
    ls.set_defaults(handler=cmd_ls)

    diff = actions.add_parser(
        "diff", help=f"compare two effective trees (exit {EXIT_OK}: same, {EXIT_CHANGES}: they differ)"
    )
    diff.add_argument("a", metavar="A", help="initrd, or comma-separated initrds in boot order")
    diff.add_argument("b", metavar="B", help="initrd, or comma-separated initrds in boot order")
    diff.set_defaults(handler=cmd_diff)

    ex = actions.add_parser("extract", help="unpack the effective tree into an empty directory, safely")
    ex.add_argument("files", nargs="+", metavar="FILE", help="initrds in boot order")
    ex.add_argument("dest", metavar="DEST", type=Path, help="destination (created; must be empty)")
    ex.add_argument(
        "--keep-special",
        action="store_true",
        help="also create device nodes, fifos and sockets, and keep setuid/setgid/sticky bits, with exact modes "
        "(left out by default: files are owned by whoever extracts, so a setuid file would run as them)",
    )
    ex.set_defaults(handler=cmd_extract)


def _emit(lines: Iterable[str]) -> None:
    """Print lines; a reader that went away (`| head`) is not an error worth a traceback."""
    try:
        for line in lines:
            print(line)
        sys.stdout.flush()
    except BrokenPipeError:
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())


def _paths(specs: list[str]) -> list[Path]:
    return [p for spec in specs for p in split_initrd_list(spec)]


def _progress(path: Path) -> Callable[[int, int], None] | None:
    """A progress line on stderr while reading `path`, only for a person watching a terminal."""
    if not sys.stderr.isatty():
        return None

    def show(done: int, total: int) -> None:
        pct = 100 * done // total if total else 100
        end = "\n" if done >= total else ""
        print(f"\rreading {shown(path.name)}: {pct:3d}%", end=end, file=sys.stderr, flush=True)

    return show


def cmd_ls(args: argparse.Namespace) -> int:
    tree = build_tree(_paths(args.files), progress=_progress)
    _emit(line for path, segments in tree.segments.items() for line in segment_lines(path, segments))
    _emit(listing_lines(tree))
    return EXIT_OK


def cmd_diff(args: argparse.Namespace) -> int:
    a = build_tree(split_initrd_list(args.a), progress=_progress)
    b = build_tree(split_initrd_list(args.b), progress=_progress)
    counts: dict[str, int] = {}
    _emit(change_lines(diff_sorted(a.infos(), b.infos()), counts))
    return EXIT_CHANGES if any(counts.values()) else EXIT_OK


def cmd_extract(args: argparse.Namespace) -> int:
    try:
        result = extract(_paths(args.files), args.dest, progress=_progress, keep_special=args.keep_special)
    except OSError as exc:
        raise ArchiveError(f"extracting into {shown(str(args.dest))}: {shown(str(exc))}") from None
    print(
        f"{shown(str(args.dest))}: {result.files} files, {result.dirs} directories, {result.symlinks} symlinks, "
        f"{result.others} special files"
    )
    for name in result.skipped:
        print(f"not created (device node, fifo or socket; --keep-special creates it): {shown(name)}", file=sys.stderr)
    for name in result.stripped:
        print(f"setuid/setgid/sticky bits removed (--keep-special keeps them): {shown(name)}", file=sys.stderr)
    for name in result.needs_root:
        print(f"not created (needs root): {shown(name)}", file=sys.stderr)
    for line in dropped_lines(result.dropped, result.dropped_total):
        print(line, file=sys.stderr)
    return EXIT_ERROR if result.needs_root else EXIT_OK
