"""The artifact families and the spec parts each one reads: metadata only, cheap to import.

doit imports this when it lists or checks tasks; the heavy modules (pydantic, jinja2, the renderers) are
imported only by the actions that run, so `doit list` and a no-op `doit` stay fast.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

# The top-level parts of the spec as the build splits them (nodes in two: the pattern and the list).
PARTS = ("name", "gateway", "shares", "root", "writable", "symlinks", "boot", "nodes.hostname", "nodes.known", "deploy")


def _share_paths(data: dict[str, Any]) -> Any:
    return {name: {"path": s["path"], "access": s["access"]} for name, s in data["shares"].items()}


# Views of parts, written beside them, for families that need less than a whole part: pxelinux and the boot
# script need the shares' paths, not their export options, so editing an option must not rerun them.
DERIVED_PARTS: dict[str, Callable[[dict[str, Any]], Any]] = {"shares.paths": _share_paths}

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
            ("name", "gateway", "shares", "writable", "deploy"),
            ("render/exports.py",),
            ("exports.j2",),
        ),
        Family(
            "hosts",
            "hosts file of nodes with fixed addresses",
            ("name", "nodes.hostname", "nodes.known", "deploy"),
            ("render/hosts.py",),
            ("hosts.j2",),
        ),
        Family(
            "symlinks",
            "symlink plan: links and mount points in the read-only root, review text and JSON",
            ("name", "shares.paths", "root", "writable", "symlinks", "nodes.hostname", "nodes.known"),
            ("render/symlinks.py", "render/profile.py"),
            ("symlinks.txt.j2",),
        ),
        Family(
            "initrd",
            "boot script packed as an overlay initrd (or repacked into the distro initrd)",
            ("name", "gateway", "shares.paths", "root", "writable", "symlinks", "boot", "nodes.hostname"),
            ("render/bootscript.py", "render/profile.py", "archive"),
            ("initramfs",),
        ),
        Family(
            "pxelinux",
            "pxelinux.cfg/default and per-node 01-<mac> files",
            ("name", "gateway", "shares.paths", "root", "boot", "nodes.known"),
            ("render/pxelinux.py",),
            ("pxelinux.cfg.j2",),
        ),
    )
}
