"""Renaming the files a deployed pxelinux config boots: its KERNEL, INITRD and APPEND initrd= names.

Plan uses it to point the built configs at the boot files it resolved in the target root, rollback to point
the deployed configs back at a kept generation. Names are matched by basename (the part after the last /).
"""

from __future__ import annotations

import re

_FILE_LINE = re.compile(r"^(\s*(?:initrd|kernel|linux)\s+)(\S+)(.*)$", re.IGNORECASE)
_APPEND_ARG = re.compile(r"(\binitrd=)([^\s]+)")


def _swap_items(items: str, mapping: dict[str, str]) -> str:
    out = []
    for item in items.split(","):
        head, _, name = item.rpartition("/")
        new = mapping.get(name)
        out.append(f"{head}/{new}" if new and head else new or item)
    return ",".join(out)


def rewrite_boot_names(text: str, mapping: dict[str, str]) -> str:
    """Replace file names (basename -> basename) in KERNEL/LINUX/INITRD lines and APPEND initrd= arguments."""
    lines = []
    for line in text.splitlines(keepends=True):
        body = line.rstrip("\n")
        end = line[len(body) :]
        m = _FILE_LINE.match(body)
        if m:
            body = m.group(1) + _swap_items(m.group(2), mapping) + m.group(3)
        elif body.lstrip().lower().startswith("append"):
            body = _APPEND_ARG.sub(lambda a: a.group(1) + _swap_items(a.group(2), mapping), body)
        lines.append(body + end)
    return "".join(lines)
