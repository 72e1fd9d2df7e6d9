"""The review of node groups (generated/review/groups.txt): each group, what it sets, and its nodes.

Only a spec with groups has one: without them every node boots the cluster-wide settings, as the other
review documents already show.
"""

from __future__ import annotations

from collections.abc import Sequence

from pipeline.render.artifact import ReviewDoc
from pipeline.render.firmware import arm64_file, bios_file, uefi_file
from pipeline.render.templating import render
from pipeline.spec.groups import GroupView, overridden
from pipeline.spec.model import DEFAULT_GROUP, Cluster, Writable

TEMPLATE = "groups.txt.j2"


def _group(cluster: Cluster, view: GroupView) -> dict[str, object]:
    c = view.cluster
    group = cluster.groups.get(view.name)
    return {
        "name": view.name,
        "default": view.default,
        "sets": sorted(overridden(group)) if group is not None else [],
        "kernel": c.boot.kernel,
        "method": c.boot.method,
        "root": f"{c.root.share} ({c.root_share.path}), options {','.join(c.root.options)}, profile {c.root.profile}",
        "cmdline": list(c.boot.cmdline),
        "preset": c.preset,
        "loaders": _loaders(c),
        "mounts": [_mount(c, w) for w in c.writable],
        "symlinks": sorted(c.symlinks.items()),
        "hostname": c.nodes.hostname,
        "nodes": [(n.mac, c.hostname_for(n)) for n in c.nodes.known],
    }


def _loaders(c: Cluster) -> str:
    """What DHCP hands the group's nodes, by firmware (its known nodes by MAC when it differs from the default's)."""
    uefi, arm64 = uefi_file(c), arm64_file(c)
    return f"BIOS {bios_file(c)}, UEFI x86-64 {uefi or '(none)'}, UEFI arm64 {arm64 or '(none)'}"


def _mount(c: Cluster, w: Writable) -> tuple[str, str, str]:
    """(mount point, where it comes from, how) of one writable entry, NFS or another storage kind."""
    if w.storage == "nfs":
        return w.mount, c.writable_export(w, "<node id>"), "one directory per node" if w.per_node else "shared"
    if w.storage == "tmpfs":
        return w.mount, f"tmpfs of {w.size}", "per node, lost at reboot"
    if w.storage == "image":
        return w.mount, f"{w.fs} image of {w.size} in the node's directory", "one image per node"
    return w.mount, f"local disk {w.device} (absent: {w.fallback})", "per node"


def render_groups_review(cluster: Cluster, views: Sequence[GroupView]) -> list[ReviewDoc]:
    if len(views) == 1 and views[0].name == DEFAULT_GROUP:
        return []
    data = render(TEMPLATE, cluster=cluster.name, groups=[_group(cluster, v) for v in views])
    return [ReviewDoc("groups.txt", data, ("groups", "nodes"))]
