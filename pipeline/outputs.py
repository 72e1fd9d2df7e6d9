"""Every output family as a pure function of the cluster: the single source for `doit`, `check` and tests.

A family lists the spec parts it reads; the doit task of a family depends on exactly those parts, so editing
one part of cluster.yaml reruns only the families that read it (tests perturb the other parts to prove it).
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

from pipeline.errors import PipelineError
from pipeline.families import DERIVED_PARTS, FAMILIES, PARTS, SCRIPT_NAME, SCRIPT_REVIEW, Family
from pipeline.render.artifact import Artifact, ReviewDoc
from pipeline.render.bootfiles import distro_initrd_name, render_bootfiles
from pipeline.render.dnsmasq import render_dnsmasq
from pipeline.render.exports import render_exports
from pipeline.render.hosts import render_hosts
from pipeline.render.httpserver import render_httpserver
from pipeline.render.pxelinux import render_pxelinux
from pipeline.render.symlinks import render_symlink_artifacts, render_symlink_review
from pipeline.spec.groups import GroupView
from pipeline.spec.model import Cluster
from pipeline.textsafe import printable

__all__ = ["DERIVED_PARTS", "FAMILIES", "PARTS", "SCRIPT_NAME", "SCRIPT_REVIEW", "Family", "distro_initrd_name"]


@dataclass(frozen=True)
class Rendered:
    artifacts: list[Artifact]
    reviews: list[ReviewDoc]


# newc stores mtimes as 8 hex digits.
_MAX_EPOCH = 0xFFFFFFFF


def source_date_epoch() -> int:
    """Archive mtimes: SOURCE_DATE_EPOCH when set (reproducible-builds.org), else 0.

    A malformed value is an error, as the specification asks: silently using 0 would hide that the user's
    epoch was ignored. ASCII digits only (`str.isdigit` also takes '²', which int() refuses)."""
    value = os.environ.get("SOURCE_DATE_EPOCH", "0")
    if not (value.isascii() and value.isdigit() and int(value) <= _MAX_EPOCH):
        raise PipelineError(
            f"SOURCE_DATE_EPOCH={printable(value[:40])!r} is not a number of seconds from 0 to {_MAX_EPOCH} "
            "(unset it, or give whole seconds since 1970)"
        )
    return int(value)


# -- node groups: per-group renderers run over each group's effective spec, and their outputs are merged ----


def _in_group(view: GroupView, artifacts: list[Artifact]) -> list[Artifact]:
    """A group's artifacts name the group first in their fields: the plan's reasons say which group."""
    return artifacts if not view.field else [replace(a, fields=view.fields(a.fields)) for a in artifacts]


def _union(rendered: Iterable[tuple[GroupView, list[Artifact]]]) -> list[Artifact]:
    """The artifacts of every group, each path once. Two groups may want the same object (a directory, a
    kernel, an identical overlay) but never different ones: semantics rule that out (pipeline.spec.groups),
    and this refuses it should a rule be missing."""
    seen: dict[str, tuple[str, Artifact]] = {}
    merged: list[Artifact] = []
    for view, artifacts in rendered:
        for a in _in_group(view, artifacts):
            first = seen.get(a.path)
            if first is None:
                seen[a.path] = (view.name, a)
                merged.append(a)
            elif replace(first[1], fields=()) != replace(a, fields=()):
                raise PipelineError(
                    f"{a.path}: groups {first[0]!r} and {view.name!r} want different {a.role} objects there"
                )
    return merged


def per_group(cluster: Cluster, render: Callable[[Cluster], list[Artifact]]) -> list[Artifact]:
    return _union((view, render(view.cluster)) for view in cluster.groups_resolved())


def exports(cluster: Cluster) -> Rendered:
    return Rendered(per_group(cluster, render_exports), [])


def hosts(cluster: Cluster) -> Rendered:
    return Rendered(render_hosts(cluster), [])


def symlinks(cluster: Cluster) -> Rendered:
    from pipeline.render.groups import render_groups_review

    views = cluster.groups_resolved()
    reviews = render_symlink_review(views[0].cluster)
    for view in views[1:]:
        reviews += [replace(doc, name=f"groups/{view.name}/{doc.name}") for doc in render_symlink_review(view.cluster)]
    return Rendered(per_group(cluster, render_symlink_artifacts), reviews + render_groups_review(cluster, views))


def bootfiles(cluster: Cluster) -> Rendered:
    return Rendered(per_group(cluster, render_bootfiles), [])


def dnsmasq(cluster: Cluster) -> Rendered:
    return Rendered(render_dnsmasq(cluster), [])


def httpserver(cluster: Cluster) -> Rendered:
    return Rendered(render_httpserver(cluster), [])


def loader(cluster: Cluster) -> Rendered:
    from pipeline.render.loader import read_loader_files, render_loader, wanted_loaders

    return Rendered(render_loader(cluster, read_loader_files(wanted_loaders(cluster))), [])


def pxelinux(
    cluster: Cluster, initrds: Sequence[str], group_initrds: Mapping[str, Sequence[str]] | None = None
) -> Rendered:
    """pxelinux configs, and GRUB's and iPXE's beside them when `firmware` asks for those loaders.

    `initrds` are those of the group unknown nodes boot; `group_initrds` those of each other group."""
    from pipeline.render.bootcfg import Entry, render_bootcfg

    views = cluster.groups_resolved()
    wanted = {views[0].name: initrds, **(group_initrds or {})}
    missing = [v.name for v in views if v.name not in wanted]
    if missing:
        raise PipelineError(f"no initrds built for group {missing[0]!r}: run `doit` (the initrd task) again")
    configs = _union((v, render_pxelinux(v.cluster, wanted[v.name], default=v.default)) for v in views)
    entries = [Entry(v.name, v.cluster, wanted[v.name]) for v in views[1:]]
    return Rendered(configs + render_bootcfg(views[0].cluster, initrds, entries), [])


def boot_script(cluster: Cluster) -> bytes:
    from pipeline.render.bootscript import render_bootscript

    return render_bootscript(cluster)


def overlay_image(cluster: Cluster, script: bytes | None = None) -> tuple[str, bytes]:
    """The overlay initrd holding our boot script (rendered unless given) and its ORDER hook, named by content."""
    from pipeline.archive.overlay import build_overlay, compressed_overlay, content_name, overlay_files

    script = boot_script(cluster) if script is None else script
    data = build_overlay(overlay_files(script, SCRIPT_NAME), mtime=source_date_epoch())
    if cluster.firmware.uefi == "ipxe":  # the EFI stub does not pad between initrds: see compressed_overlay
        data = compressed_overlay(data)
    return content_name(data, prefix="nfsroot-", suffix=".img"), data


def repack_name(cluster: Cluster, source: Path, script: bytes | None = None) -> str:
    """The repacked initrd is named by a hash of its inputs, so `check` can name it without repacking."""
    digest = hashlib.sha256()
    with source.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    digest.update(boot_script(cluster) if script is None else script)
    repack = cluster.boot.repack
    digest.update(f"{repack.compression}:{repack.level}:{source_date_epoch()}".encode())
    return f"initrd-nfsroot-{digest.hexdigest()[:16]}.img"


def repack_source(cluster: Cluster, base: Path) -> Path:
    assert cluster.boot.repack.source is not None  # the model requires it for the repack method
    return (base / cluster.boot.repack.source).resolve()


def group_initrd_names(cluster: Cluster, base: Path) -> dict[str, list[str]]:
    """INITRD files in load order of each group but the default one (whose are initrd_names)."""
    return {v.name: initrd_names(v.cluster, base) for v in cluster.groups_resolved()[1:]}


def script_review_name(view: GroupView) -> str:
    """The boot script's review copy under build/review/: a group's own beside the default one."""
    return f"initrd/{SCRIPT_NAME}" if view.default else f"initrd/groups/{view.name}/{SCRIPT_NAME}"


def initrd_names(cluster: Cluster, base: Path, script: bytes | None = None) -> list[str]:
    """INITRD files in load order, as pxelinux.cfg names them."""
    if cluster.boot.method == "overlay":
        return [distro_initrd_name(cluster), overlay_image(cluster, script)[0]]
    return [repack_name(cluster, repack_source(cluster, base), script)]


def initrd_path(cluster: Cluster, name: str) -> str:
    return f"{cluster.gateway.tftp_root.rstrip('/')}/{name}"


SIMPLE: dict[str, Callable[[Cluster], Rendered]] = {
    "exports": exports,
    "hosts": hosts,
    "symlinks": symlinks,
    "bootfiles": bootfiles,
    "loader": loader,
    "dnsmasq": dnsmasq,
    "httpserver": httpserver,
}
