"""Renaming the files a deployed boot config boots: KERNEL/LINUX/INITRD files and `initrd=` arguments.

pxelinux configs, GRUB's grub.cfg (`linux /boot/…`, `initrd /a /b`: several files on one line) and the iPXE
script (`kernel boot/… initrd=a initrd=b …`: the EFI stub's names) all go through here.

Plan uses it to point the built configs at the boot files it resolved in the target root, rollback to point
the deployed configs back at a kept generation. Names are matched by basename (the part after the last /).
"""

from __future__ import annotations

import re

_FILE_LINE = re.compile(r"^(\s*(?:initrd|kernel|linux)\s+)(\S+)(.*)$", re.IGNORECASE)
_APPEND_ARG = re.compile(r"(\binitrd=)([^\s]+)")
_WORD = re.compile(r"(\s)([^\s]+)")


def _swap_items(items: str, mapping: dict[str, str]) -> str:
    out = []
    for item in items.split(","):
        head, sep, name = item.rpartition("/")
        new = mapping.get(name)
        out.append(f"{head}{sep}{new}" if new else item)  # keeps a leading / (GRUB's /nfsroot-….img)
    return ",".join(out)


def _swap_word(word: str, mapping: dict[str, str]) -> str:
    if word.startswith("initrd="):
        return "initrd=" + _swap_items(word[len("initrd=") :], mapping)
    # Further files on the line (GRUB's `initrd /a /b`); other arguments (root=, BOOTIF=$x) are left alone.
    return word if "=" in word else _swap_items(word, mapping)


def _swap_rest(rest: str, mapping: dict[str, str]) -> str:
    return _WORD.sub(lambda w: w.group(1) + _swap_word(w.group(2), mapping), rest)


def rewrite_boot_names(text: str, mapping: dict[str, str]) -> str:
    """Replace file names (basename -> basename) in KERNEL/LINUX/INITRD lines and APPEND initrd= arguments."""
    lines = []
    for line in text.splitlines(keepends=True):
        body = line.rstrip("\n")
        end = line[len(body) :]
        m = _FILE_LINE.match(body)
        if m:
            body = m.group(1) + _swap_items(m.group(2), mapping) + _swap_rest(m.group(3), mapping)
        elif body.lstrip().lower().startswith("append"):
            body = _APPEND_ARG.sub(lambda a: a.group(1) + _swap_items(a.group(2), mapping), body)
        lines.append(body + end)
    return "".join(lines)
