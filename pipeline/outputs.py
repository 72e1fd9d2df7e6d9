"""Every output family as a pure function of the cluster: the single source for `doit`, `check` and tests.

A family lists the spec parts it reads; the doit task of a family depends on exactly those parts, so editing
one part of cluster.yaml reruns only the families that read it (tests perturb the other parts to prove it).
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pipeline.render.artifact import Artifact, ReviewDoc
from pipeline.render.exports import render_exports
from pipeline.render.hosts import render_hosts
from pipeline.render.pxelinux import render_pxelinux
from pipeline.render.symlinks import render_symlink_artifacts, render_symlink_review
from pipeline.spec.model import Cluster

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
class Rendered:
    artifacts: list[Artifact]
    reviews: list[ReviewDoc]


@dataclass(frozen=True)
class Family:
    name: str
    doc: str
    parts: tuple[str, ...]
    modules: tuple[str, ...]  # source files or directories (relative to the package) whose change reruns it
    templates: tuple[str, ...]


def source_date_epoch() -> int:
    """Archive mtimes: SOURCE_DATE_EPOCH when set (reproducible-builds.org), else 0."""
    value = os.environ.get("SOURCE_DATE_EPOCH", "0")
    return int(value) if value.isdigit() else 0


def exports(cluster: Cluster) -> Rendered:
    return Rendered(render_exports(cluster), [])


def hosts(cluster: Cluster) -> Rendered:
    return Rendered(render_hosts(cluster), [])


def symlinks(cluster: Cluster) -> Rendered:
    return Rendered(render_symlink_artifacts(cluster), render_symlink_review(cluster))


def pxelinux(cluster: Cluster, initrds: list[str]) -> Rendered:
    return Rendered(render_pxelinux(cluster, initrds), [])


def boot_script(cluster: Cluster) -> bytes:
    from pipeline.render.bootscript import render_bootscript

    return render_bootscript(cluster)


def overlay_image(cluster: Cluster) -> tuple[str, bytes]:
    """The overlay initrd holding our boot script and its ORDER hook, named by its content."""
    from pipeline.archive.overlay import build_overlay, content_name, overlay_files

    data = build_overlay(overlay_files(boot_script(cluster), SCRIPT_NAME), mtime=source_date_epoch())
    return content_name(data, prefix="nfsroot-", suffix=".img"), data


def repack_name(cluster: Cluster, source: Path) -> str:
    """The repacked initrd is named by a hash of its inputs, so `check` can name it without repacking."""
    digest = hashlib.sha256()
    with source.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    digest.update(boot_script(cluster))
    repack = cluster.boot.repack
    digest.update(f"{repack.compression}:{repack.level}:{source_date_epoch()}".encode())
    return f"initrd-nfsroot-{digest.hexdigest()[:16]}.img"


def repack_source(cluster: Cluster, base: Path) -> Path:
    assert cluster.boot.repack.source is not None  # the model requires it for the repack method
    return (base / cluster.boot.repack.source).resolve()


def initrd_names(cluster: Cluster, base: Path) -> list[str]:
    """INITRD files in load order, as pxelinux.cfg names them."""
    if cluster.boot.method == "overlay":
        return [cluster.boot.initrd, overlay_image(cluster)[0]]
    return [repack_name(cluster, repack_source(cluster, base))]


def initrd_path(cluster: Cluster, name: str) -> str:
    return f"{cluster.gateway.tftp_root.rstrip('/')}/{name}"


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
            ("render/symlinks.py",),
            ("symlinks.txt.j2",),
        ),
        Family(
            "initrd",
            "boot script packed as an overlay initrd (or repacked into the distro initrd)",
            ("name", "gateway", "shares.paths", "root", "writable", "symlinks", "boot", "nodes.hostname"),
            ("render/bootscript.py", "archive"),
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

SIMPLE: dict[str, Callable[[Cluster], Rendered]] = {"exports": exports, "hosts": hosts, "symlinks": symlinks}
