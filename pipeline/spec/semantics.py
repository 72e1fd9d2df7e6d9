"""Rules that relate fields of the spec to each other, and lint warnings.

Each rule yields (location, message, hint); the location is a path into the YAML document so the loader can
give the line of the offending value. Warnings are things that work but are probably not what the user wants.
"""

from __future__ import annotations

import ipaddress
import posixpath
from collections.abc import Iterator
from typing import TYPE_CHECKING

from pipeline.spec.cmdline import cmdline_problems
from pipeline.spec.collisions import collision_problems
from pipeline.spec.collisions import strictly_under as _strictly_under
from pipeline.spec.collisions import under as _under
from pipeline.spec.model import SKELETON_DIR

if TYPE_CHECKING:
    from pipeline.spec.model import Cluster

Loc = tuple[str | int, ...]
Finding = tuple[Loc, str, str]

# Files the boot script writes for each node at every boot.
PER_NODE_FILES = ("/etc/hostname", "/etc/hosts")
# Files the boot script writes into the node's directory (pipeline.render.bootscript names them; a test keeps
# the two in step): a symlink target there would be overwritten at every boot.
BOOT_WRITTEN = {"cmdline": "the kernel command line of the last boot", "nfsroot-boot": "what the boot script did"}

# Mounted over at boot (or by the initramfs itself): a symlink placed there in the read-only root is hidden.
_RUNTIME_DIRS = ("/proc", "/sys", "/dev", "/run")


def semantic_problems(c: Cluster) -> list[Finding]:
    from pipeline.spec.dhcp import dhcp_problems
    from pipeline.spec.groups import group_problems

    # The rules of one group's settings run over every group's effective spec (pipeline.spec.groups).
    return list(_gateway(c)) + list(_shares(c)) + list(_nodes(c)) + list(dhcp_problems(c)) + group_problems(c)


def view_problems(c: Cluster) -> list[Finding]:
    """The rules that must hold for each group's effective spec (its nodes, mounts, storage, symlinks, boot)."""
    return (
        list(_mounts(c))
        + list(_symlinks(c))
        + list(_storage(c))
        + list(_container_state(c))
        + list(_boot(c))
        + collision_problems(c)
        + cmdline_problems(c)
    )


def _gateway(c: Cluster) -> Iterator[Finding]:
    net, ip = c.gateway.net, c.gateway.ip
    if ip not in net:
        yield ("gateway", "address"), f"{ip} is not inside the gateway network {net}", "fix the address or network"
    elif net.prefixlen < 31 and ip in (net.network_address, net.broadcast_address):
        yield (
            ("gateway", "address"),
            f"{ip} is the network's {'network' if ip == net.network_address else 'broadcast'} address",
            "",
        )


def _shares(c: Cluster) -> Iterator[Finding]:
    if not c.shares:
        yield ("shares",), "at least one share is needed", "a read-only root and a writable share"
    seen: dict[str, str] = {}
    for name, share in c.shares.items():
        if share.path == "/":
            yield ("shares", name, "path"), "exporting / is not allowed", "export the client root directory"
        if share.path in seen:
            yield ("shares", name, "path"), f"{share.path} is already exported by share {seen[share.path]!r}", ""
        seen.setdefault(share.path, name)
        options = [o.split("=")[0] for o in share.options]
        for a, b in (("sync", "async"), ("root_squash", "no_root_squash"), ("subtree_check", "no_subtree_check"),
                     ("secure", "insecure"), ("all_squash", "no_all_squash"), ("hide", "nohide")):  # fmt: skip
            if a in options and b in options:
                yield ("shares", name, "options"), f"options {a} and {b} contradict each other", "keep one"
        if len(set(options)) != len(options):
            yield ("shares", name, "options"), "an option is given twice", ""


def _mounts(c: Cluster) -> Iterator[Finding]:
    root = c.shares.get(c.root.share)
    if root is None:
        yield ("root", "share"), f"no share named {c.root.share!r}", f"shares are: {', '.join(sorted(c.shares))}"
    elif root.access != "ro":
        yield (
            ("root", "share"),
            f"share {c.root.share!r} is read-write",
            "the OS root is exported read-only: access: ro",
        )
    if "rw" in c.root.options or "ro" not in c.root.options:
        yield ("root", "options"), "the root must be mounted read-only", "include ro and not rw"
    if not any(w.per_node and w.storage == "nfs" for w in c.writable):
        yield ("writable",), "no per-node writable mount", "add one with per_node: true (the seed's /var/local)"
    mounts: dict[str, int] = {}
    for i, w in enumerate(c.writable):
        share = c.shares.get(w.share) if w.share is not None else None
        if w.storage != "nfs":
            pass  # _storage checks these
        elif w.share is None:
            yield (
                ("writable", i),
                "storage nfs needs a share",
                f"add share: NAME; shares are: {', '.join(sorted(c.shares))}",
            )
        elif share is None:
            yield ("writable", i, "share"), f"no share named {w.share!r}", f"shares are: {', '.join(sorted(c.shares))}"
        elif share.access != "rw":
            yield (
                ("writable", i, "share"),
                f"share {w.share!r} is read-only",
                "writable mounts need an access: rw share",
            )
        runtime = next((d for d in _RUNTIME_DIRS if _under(w.mount, d)), None)
        if w.mount == "/":
            yield ("writable", i, "mount"), "cannot mount over the root", ""
        elif runtime is not None:
            yield (
                ("writable", i, "mount"),
                f"{w.mount} is mounted over at boot by the {runtime[1:]} filesystem",
                "choose another path",
            )
        elif _under(w.mount, SKELETON_DIR) or _under(SKELETON_DIR, w.mount):
            yield (
                ("writable", i, "mount"),
                f"{w.mount} would hide the skeleton directory {SKELETON_DIR}",
                "the boot script seeds the nodes' files from it",
            )
        if w.storage == "nfs" and ("ro" in w.options or "rw" not in w.options):
            yield ("writable", i, "options"), "a writable mount must be mounted rw", "include rw and not ro"
        for other, j in mounts.items():
            if _under(w.mount, other) or _under(other, w.mount):
                yield (
                    ("writable", i, "mount"),
                    f"{w.mount} overlaps writable[{j}] ({other})",
                    "use separate directories",
                )
        mounts.setdefault(w.mount, i)
    yield from _node_dirs(c)


def _node_dirs(c: Cluster) -> Iterator[Finding]:
    # Two per-node mounts with one parent directory give each node one directory for both: /etc/hostname and
    # /etc/hosts (or any two files of the same name) become the same file.
    parents: dict[str, int] = {}
    for i, w in enumerate(c.writable):
        if not w.per_node or w.share not in c.shares:
            continue
        parent = c.writable_parent(w)
        if parent in parents:
            j = parents[parent]
            yield (
                ("writable", i),
                f"per-node directories {parent.rstrip('/')}/<node id> are also those of writable[{j}] "
                f"({c.writable[j].mount})",
                "give one of them a subdir",
            )
        parents.setdefault(parent, i)


def _symlinks(c: Cluster) -> Iterator[Finding]:
    targets: dict[str, str] = {}
    mounts = [w.mount for w in c.writable]
    nfs_mounts = [w.mount for w in c.writable if w.storage == "nfs"]
    record_mount = next((w.mount for w in c.writable if w.per_node), None)  # c.node_dir, where the record goes
    for source, target in c.symlinks.items():
        loc: Loc = ("symlinks", source)
        if source == "/":
            yield loc, "cannot replace / by a symlink", ""
            continue
        if any(_under(source, m) for m in mounts):
            yield loc, f"{source} lies under a writable mount", "only files of the read-only root need a symlink"
        elif contained := [m for m in mounts if _strictly_under(m, source)]:
            yield (
                loc,
                f"{source} contains the writable mount {contained[0]}",
                "the mount point must stay a directory of the read-only root",
            )
        elif any(_under(source, d) for d in _RUNTIME_DIRS):
            yield loc, f"{source} is hidden at boot by the {source.split('/')[1]} filesystem", "choose another path"
        elif _under(source, "/usr/lib/nfsroot"):
            yield loc, f"{source} is inside the skeleton directory", ""
        elif _strictly_under(SKELETON_DIR, source):
            yield loc, f"{source} contains the skeleton directory {SKELETON_DIR}", "choose another path"
        elif outer := [s for s in c.symlinks if _strictly_under(source, s)]:
            yield (
                loc,
                f"{source} lies under the symlink {outer[0]}",
                "a path inside a symlinked directory is already on the writable mount",
            )
        if not any(_strictly_under(target, m) for m in nfs_mounts):
            other = next((m for m in mounts if _strictly_under(target, m)), None)
            if other is not None:
                # The boot script writes and seeds link targets in the initramfs; image and disk storage is
                # mounted later by a unit in the root, and a tmpfs would forget the file at every boot.
                yield loc, f"target {target} is on {other}, which is not NFS storage", "point it under an nfs mount"
            else:
                yield (
                    loc,
                    f"target {target} is not under a writable mount",
                    f"writable mounts: {', '.join(nfs_mounts)}",
                )
        elif (
            source in PER_NODE_FILES
            and any(w.per_node for w in c.writable)
            and not any(_strictly_under(target, w.mount) for w in c.writable if w.per_node)
        ):
            # The boot script rewrites these at every boot: on a shared mount every node would overwrite the others'.
            per_node = ", ".join(w.mount for w in c.writable if w.per_node)
            yield (
                loc,
                f"target {target} is on a mount shared by all nodes",
                f"point it under a per-node mount: {per_node}",
            )
        if posixpath.dirname(target) == record_mount and posixpath.basename(target) in BOOT_WRITTEN:
            yield (
                loc,
                f"target {target} is written by the boot script ({BOOT_WRITTEN[posixpath.basename(target)]})",
                "choose another name",
            )
        if target in targets:
            yield loc, f"target {target} is also the target of {targets[target]}", "each symlink needs its own file"
        elif nested := [t for t in targets if _strictly_under(target, t) or _strictly_under(t, target)]:
            other = nested[0]
            relation = "lies under" if _strictly_under(target, other) else "contains"
            yield (
                loc,
                f"target {target} {relation} {other}, the target of {targets[other]}",
                "each symlink needs its own file",
            )
        targets.setdefault(target, source)


# Fields of a writable entry that mean something only for some storage kinds, with their defaults.
_NFS_ONLY = {"share": None, "per_node": False, "subdir": None, "options": ("rw",)}
_MEANS = {
    "size": {"tmpfs", "image", "disk"},
    "fs": {"image", "disk"},
    "device": {"disk"},
    "fallback": {"disk"},
}
_DEFAULTS: dict[str, object] = {"size": None, "fs": "ext4", "device": None, "fallback": "fail"}
# Smallest useful images: mkfs.xfs refuses file systems under 300 MiB; an ext4 journal wants a few MiB.
MIN_IMAGE = {"ext4": 16 << 20, "xfs": 300 << 20}


def _storage(c: Cluster) -> Iterator[Finding]:
    from pipeline.spec.types import size_bytes

    for i, w in enumerate(c.writable):
        loc: Loc = ("writable", i)
        if w.storage != "nfs":
            for name, default in _NFS_ONLY.items():
                if getattr(w, name) != default:
                    yield (*loc, name), f"{name} means nothing for storage {w.storage}", f"remove {name}"
        for name, kinds in _MEANS.items():
            if w.storage not in kinds and getattr(w, name) != _DEFAULTS[name]:
                yield (*loc, name), f"{name} means nothing for storage {w.storage}", f"remove {name}"
        if w.storage == "disk":
            if w.device is None:
                yield loc, "storage disk needs a device", "add device: LABEL=name (or UUID=...)"
            if w.fallback == "fail" and w.size is not None:
                yield (*loc, "size"), "size means nothing for a disk without fallback", "remove size, or set fallback"
            if w.fallback != "image" and w.fs != "ext4":
                yield (*loc, "fs"), "fs is the file system of the image fallback", "set fallback: image, or remove fs"
        needs_size = w.storage in ("tmpfs", "image") or (w.storage == "disk" and w.fallback != "fail")
        if needs_size and w.size is None:
            what = f"storage {w.storage}" if w.storage != "disk" else f"fallback {w.fallback}"
            yield loc, f"{what} needs a size", "add size: with a unit, e.g. size: 20G"
        image = w.storage == "image" or (w.storage == "disk" and w.fallback == "image")
        if image and w.size is not None and size_bytes(w.size) < MIN_IMAGE[w.fs]:
            yield (
                (*loc, "size"),
                f"{w.size} is too small for an {w.fs} image",
                f"at least {MIN_IMAGE[w.fs] >> 20}M",
            )


# Container runtime and kubelet state: overlayfs refuses an NFS upper layer (whiteouts need trusted.* xattrs and
# d_type), and kubelet's cadvisor fails on an NFS --root-dir (DESIGN.md, kubernetes #98009).
CONTAINER_STATE = {
    "/var/lib/containerd": "containerd's state (images, overlayfs snapshots)",
    "/var/lib/kubelet": "kubelet's --root-dir (pods' volumes; cadvisor fails on NFS)",
}
_ENTRY_REMEDY = (
    "give it storage: image (with a size, e.g. 20G), tmpfs or disk; or remove it and set preset: kubernetes, "
    "which puts it on a per-node image"
)
_LINK_REMEDY = "replace the symlink by a writable entry with storage: image (with a size), tmpfs or disk"


def _container_state(c: Cluster) -> Iterator[Finding]:
    # A path the spec names for this state is always checked. A mount or link above it (/var/lib on NFS) only
    # with the preset, whose image storage would have to be mounted inside it; without the preset those nodes
    # may run no containers at all.
    preset = c.preset == "kubernetes"
    for path, what in CONTAINER_STATE.items():
        for i, w in enumerate(c.writable):
            if w.storage != "nfs":
                continue
            if _under(w.mount, path):
                yield ("writable", i, "mount"), f"{what} would be on NFS ({w.mount})", _ENTRY_REMEDY
            elif preset and _under(path, w.mount):
                yield (
                    ("writable", i, "mount"),
                    f"{path} ({what}) lies inside this NFS mount",
                    f"preset kubernetes mounts image storage at {path}, which cannot sit inside an NFS mount: "
                    f"keep {w.mount} off NFS, or make narrower paths writable",
                )
        for source, target in c.symlinks.items():
            if not any(_strictly_under(target, w.mount) for w in c.writable if w.storage == "nfs"):
                continue
            if _under(source, path):
                yield ("symlinks", source), f"{what} would be on NFS (through {source} -> {target})", _LINK_REMEDY
            elif preset and _under(path, source):
                yield (
                    ("symlinks", source),
                    f"{path} ({what}) lies inside this symlink to NFS ({source} -> {target})",
                    f"preset kubernetes mounts image storage at {path}: do not symlink {source}",
                )
    if c.preset == "kubernetes" and c.root.profile == "none":
        yield (
            ("preset",),
            "preset kubernetes needs root.profile: debian-systemd",
            "kubelet and CNI need a per-node machine-id, /tmp (ctr) and /var/log; set root.profile: debian-systemd",
        )


def _nodes(c: Cluster) -> Iterator[Finding]:
    macs: dict[str, int] = {}
    names: dict[str, int] = {}
    addresses: dict[str, int] = {}
    net, gateway = c.gateway.net, c.gateway.ip  # parsed once: this loop runs for every node
    for i, node in enumerate(c.nodes.known):
        if node.mac in macs:
            yield ("nodes", "known", i, "mac"), f"{node.mac} is also node {macs[node.mac]}", "each node once"
            continue
        macs[node.mac] = i
        name = c.hostname_for(node)
        if name in names:
            yield ("nodes", "known", i), f"host name {name} is also used by node {names[name]}", "host names are unique"
        names.setdefault(name, i)
        if node.address is not None:
            ip = ipaddress.IPv4Address(node.address)
            if ip not in net:
                yield ("nodes", "known", i, "address"), f"{ip} is not inside {net}", ""
            elif ip == gateway:
                yield ("nodes", "known", i, "address"), f"{ip} is the gateway's address", ""
            if node.address in addresses:
                yield ("nodes", "known", i, "address"), f"{ip} is also node {addresses[node.address]}'s address", ""
            addresses.setdefault(node.address, i)


def _boot(c: Cluster) -> Iterator[Finding]:
    if c.boot.method == "repack" and not c.boot.repack.source:
        yield (
            ("boot", "repack", "source"),
            "required when boot.method is repack",
            "the path of the distro initrd to rewrite",
        )
    repack = c.boot.repack
    if repack.compression in ("gzip", "xz") and repack.level > 9:
        yield ("boot", "repack", "level"), f"{repack.compression} levels go from 1 to 9, not {repack.level}", ""
    if len(set(c.boot.sysappend)) != len(c.boot.sysappend):
        yield ("boot", "sysappend"), "a name is given twice", ""


def _view_warnings(c: Cluster) -> list[Finding]:
    """Warnings about settings a node group can set: checked for each group."""
    if "bootif" in c.boot.sysappend:
        return []
    return [
        (
            ("boot", "sysappend"),
            "without bootif the boot script must guess the MAC from the interface",
            "add bootif (pxelinux SYSAPPEND 2)",
        )
    ]


def lint_warnings(c: Cluster) -> list[Finding]:
    """Legal but risky settings; reported by `validate` and `doit`, never fatal."""
    found: list[Finding] = []
    for name, share in c.shares.items():
        clients = ipaddress.IPv4Network(c.export_clients(share))
        if share.access == "rw" and "no_root_squash" in share.options and clients.num_addresses > 1:
            found.append(
                (
                    ("shares", name, "options"),
                    f"read-write with no_root_squash for all of {clients}: root on any host there owns {share.path}",
                    "drop no_root_squash unless nodes must write as root, or narrow clients to the nodes' addresses",
                )
            )
    from pipeline.spec.groups import per_group

    found += per_group(c, _view_warnings)
    if c.deploy.exports_file == "/etc/exports":
        found.append(
            (
                ("deploy", "exports_file"),
                "apply will own the whole /etc/exports",
                "use a file under /etc/exports.d/ to keep the gateway's own exports",
            )
        )
    return found
