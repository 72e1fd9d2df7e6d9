"""The longest kernel command line a node can get, counted before anything is rendered.

x86 Linux keeps COMMAND_LINE_SIZE (2048) bytes of the command line including the final NUL and silently
drops the rest, which would cut nfsroot= or the node's own arguments. pxelinux builds the line from
BOOT_IMAGE=<kernel>, initrd=<files>, the APPEND line we render and one word per SYSAPPEND bit; the values
only known at boot (addresses, DMI strings) are counted at their longest, so a spec that passes fits.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from pipeline.spec.model import Cluster, Node

Loc = tuple[str | int, ...]

COMMAND_LINE_SIZE = 2048  # arch/x86/include/uapi/asm/setup.h, including the terminating NUL
LIMIT = COMMAND_LINE_SIZE - 1

# Our initrd's name: nfsroot-<16 hex>.img (overlay) or initrd-nfsroot-<16 hex>.img (repack).
_OUR_INITRD = len("initrd-nfsroot-0123456789abcdef.img")
_IP = len("ip=") + 4 * len("255.255.255.255") + 3  # ip=client:server:gateway:netmask
# The served kernel and distro initrd: boot/vmlinuz-<version>.<sha12>, boot/initrd.img-<version>.<sha12>
# (pipeline/render/bootfiles.py); 'newest' is resolved at plan time, so count the longest version the spec takes.
_LONGEST_VERSION = 103
_SERVED_SUFFIX = len(".0123456789ab")
_DMI = 64  # a DMI string at its longest as we count it (SMBIOS sets no bound; firmware uses far less)
# The word each SYSAPPEND bit adds, at its longest (syslinux doc/syslinux.txt, SYSAPPEND).
_SYSAPPEND_LENGTHS: dict[str, int] = {
    "ip": _IP,
    "bootif": len("BOOTIF=01-aa-bb-cc-dd-ee-ff"),
    "sysuuid": len("SYSUUID=") + 36,
    "cpu": len("CPU=") + 16,
    "fsuuid": len("FSUUID=") + 36,
}
_HINT = "shorten cmdline; the count includes root=, nfsroot=, ip=, initrd=, BOOT_IMAGE= and SYSAPPEND"


def _sysappend_length(name: str) -> int:
    return _SYSAPPEND_LENGTHS.get(name, len(name) + 1 + _DMI)  # DMI words: SYSVENDOR=<string>, ...


def _words_length(words: list[str]) -> int:
    return sum(len(w.encode()) + 1 for w in words)  # each word and the space after it


def _base_length(c: Cluster) -> int:
    version = "x" * _LONGEST_VERSION if c.boot.kernel == "newest" else c.boot.kernel
    generated = [
        f"BOOT_IMAGE=boot/vmlinuz-{version}" + "x" * _SERVED_SUFFIX,
        f"initrd=boot/initrd.img-{version}" + "x" * _SERVED_SUFFIX + "," + "x" * _OUR_INITRD,
        "root=/dev/nfs",
        f"nfsroot={c.nfsroot_arg}" if c.root.share in c.shares else "nfsroot=",
        "ip=dhcp",
    ]
    appended = sum(_sysappend_length(name) + 1 for name in set(c.boot.sysappend))
    return _words_length(generated) + _words_length(list(c.boot.cmdline)) + appended - 1  # no space at the end


def _node_extra(node: Node) -> int:
    words = list(node.cmdline) + ([f"nfsroot.hostname={node.hostname}"] if node.hostname else [])
    return _words_length(words)


def _problem(loc: Loc, length: int) -> tuple[Loc, str, str]:
    return (
        loc,
        f"the kernel command line can reach {length:,} bytes; the kernel keeps {LIMIT:,} "
        f"(x86 COMMAND_LINE_SIZE {COMMAND_LINE_SIZE})",
        _HINT,
    )


def cmdline_problems(c: Cluster) -> list[tuple[Loc, str, str]]:
    base = _base_length(c)
    if base > LIMIT:
        return [_problem(("boot", "cmdline"), base)]
    found = []
    for i, node in enumerate(c.nodes.known):
        if node.customised and base + _node_extra(node) > LIMIT:
            field = "cmdline" if node.cmdline else "hostname"
            found.append(_problem(("nodes", "known", i, field), base + _node_extra(node)))
    return found
