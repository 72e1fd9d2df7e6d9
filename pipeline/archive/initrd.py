"""Initrds as the kernel sees them: the public face of the archive package.

| need | function |
| --- | --- |
| what regions an initrd file holds | `split_segments(path)` |
| what the kernel ends up with after one or more initrds | `effective_tree(paths)` (`build_tree` adds what it dropped) |
| the small extra initrd for `INITRD distro.img,overlay.img` | `overlay_files(script)`, `build_overlay(entries, mtime=)` |
| a stable file name for it | `content_name(data)` |
| the distro initrd with our files inside | `repack(distro, extra, out, mtime=)` |
| unpack safely | `extract(paths, dest)` |
"""

from __future__ import annotations

from pipeline.archive.compression import Compression
from pipeline.archive.extract import ExtractResult, extract
from pipeline.archive.overlay import build_overlay, content_name, order_hook, order_lines, overlay_files
from pipeline.archive.repack import DEFAULT_ZSTD_LEVEL, repack
from pipeline.archive.segments import Progress, Segment, split_segments
from pipeline.archive.tree import Dropped, EntryInfo, Tree, build_tree, effective_tree

__all__ = [
    "DEFAULT_ZSTD_LEVEL",
    "Compression",
    "Dropped",
    "EntryInfo",
    "ExtractResult",
    "Progress",
    "Segment",
    "Tree",
    "build_overlay",
    "build_tree",
    "content_name",
    "effective_tree",
    "extract",
    "order_hook",
    "order_lines",
    "overlay_files",
    "repack",
    "split_segments",
]
