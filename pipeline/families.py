"""The artifact families and the spec parts each one reads: metadata only, cheap to import.

doit imports this when it lists or checks tasks; the heavy modules (pydantic, jinja2, the renderers) are
imported only by the actions that run, so `doit list` and a no-op `doit` stay fast.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

# The top-level parts of the spec as the build splits them (nodes in two: the pattern and the list).
PARTS = (
    "name",
    "gateway",
    "shares",
    "root",
    "writable",
    "symlinks",
    "boot",
    "nodes.hostname",
    "nodes.known",
    "nodes.default_group",
    "groups",
    "deploy",
    "rootfs",
    "firmware",
    "dhcp",
    "preset",
)


def _share_paths(data: dict[str, Any]) -> Any:
    return {name: {"path": s["path"], "access": s["access"]} for name, s in data["shares"].items()}


# What every family that runs per node group, or names nodes by their group's pattern, reads besides its parts.
GROUPS = ("nodes.default_group", "groups")

# Views of parts, written beside them, for families that need less than a whole part: pxelinux and the boot
# script need the shares' paths, not their export options, so editing an option must not rerun them.
DERIVED_PARTS: dict[str, Callable[[dict[str, Any]], Any]] = {"shares.paths": _share_paths}

# pipeline.render.loader.ALL_LOADER_FILES, repeated here so listing tasks does not import the renderers.
# Only those that exist: a missing one gets the renderer's message naming its package, not doit's.
LOADER_PATHS = tuple(
    p
    for p in (
        "/usr/lib/PXELINUX/pxelinux.0",
        "/usr/lib/syslinux/modules/bios/ldlinux.c32",
        "/usr/lib/shim/shimx64.efi.signed",
        "/usr/lib/grub/x86_64-efi-signed/grubnetx64.efi.signed",
        "/usr/lib/ipxe/snponly.efi",
        "/usr/lib/ipxe/undionly.kpxe",
        "/usr/lib/grub/arm64-efi-signed/grubnetaa64.efi.signed",
    )
    if os.path.exists(p)
)

SCRIPT_NAME = "nfsroot"  # /scripts/init-bottom/nfsroot in the initramfs
SCRIPT_REVIEW = f"initramfs/scripts/init-bottom/{SCRIPT_NAME}"


@dataclass(frozen=True)
class Family:
    name: str
    doc: str
    parts: tuple[str, ...]
    modules: tuple[str, ...]  # source files or directories (relative to the package) whose change reruns it
    templates: tuple[str, ...]


FAMILIES: dict[str, Family] = {
    f.name: f
    for f in (
        Family(
            "exports",
            "NFS exports file and share directories",
            ("name", "gateway", "shares", "writable", "deploy", *GROUPS),
            ("render/exports.py",),
            ("exports.j2",),
        ),
        Family(
            "hosts",
            "hosts file of nodes with fixed addresses",
            ("name", "nodes.hostname", "nodes.known", "deploy", *GROUPS),
            ("render/hosts.py",),
            ("hosts.j2",),
        ),
        Family(
            "symlinks",
            "symlink plan: links and mount points in the read-only root, review text and JSON",
            (
                "name",
                "shares.paths",
                "root",
                "writable",
                "symlinks",
                "nodes.hostname",
                "nodes.known",
                "preset",
                "firmware",  # the groups review names each group's loaders
                *GROUPS,
            ),
            (
                "render/symlinks.py",
                "render/profile.py",
                "render/preset.py",
                "render/storage.py",
                "render/groups.py",
                "render/firmware.py",
            ),
            ("symlinks.txt.j2", "groups.txt.j2"),
        ),
        Family(
            "initrd",
            "boot script packed as an overlay initrd (or repacked into the distro initrd)",
            (
                "name",
                "gateway",
                "shares.paths",
                "root",
                "writable",
                "symlinks",
                "boot",
                "nodes.hostname",
                "firmware",
                "preset",
                *GROUPS,
            ),
            ("render/bootscript.py", "render/profile.py", "render/preset.py", "render/storage.py", "archive"),
            ("initramfs",),
        ),
        Family(
            "bootfiles",
            "the root's kernel and distro initrd for the TFTP root, chosen by version (resolved at plan time)",
            ("name", "gateway", "shares.paths", "root", "boot", *GROUPS),
            ("render/bootfiles.py",),
            (),
        ),
        Family(
            "loader",
            "pxelinux.0 and ldlinux.c32, and shim, GRUB or iPXE as firmware asks, from Debian's packages",
            ("name", "gateway", "firmware", *GROUPS),
            # The installed files are inputs too (absolute paths): a package upgrade restages them.
            ("render/loader.py", "render/firmware.py", *LOADER_PATHS),
            (),
        ),
        Family(
            "dnsmasq",
            "dnsmasq DHCP (full or proxy) and TFTP configuration, a boot loader per client architecture",
            ("name", "gateway", "nodes.hostname", "nodes.known", "firmware", "dhcp", *GROUPS),
            ("render/dnsmasq.py", "render/firmware.py"),
            ("dnsmasq.conf.j2",),
        ),
        Family(
            "httpserver",
            "nginx server block serving the TFTP root read-only over HTTP, when iPXE fetches over HTTP",
            ("name", "gateway", "firmware", *GROUPS),
            ("render/httpserver.py", "render/firmware.py"),
            ("nginx-nfsroot.conf.j2",),
        ),
        Family(
            "pxelinux",
            "pxelinux.cfg/default and per-node 01-<mac> files; grub/grub.cfg and nfsroot.ipxe when firmware asks",
            ("name", "gateway", "shares.paths", "root", "boot", "nodes.known", "firmware", *GROUPS),
            ("render/pxelinux.py", "render/bootfiles.py", "render/bootcfg.py", "render/firmware.py"),
            ("pxelinux.cfg.j2", "grub.cfg.j2", "nfsroot.ipxe.j2"),
        ),
    )
}
