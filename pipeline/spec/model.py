"""The cluster spec: a frozen pydantic model of cluster.yaml.

Field-level rules live in `pipeline.spec.types`; rules that relate fields to each other live in
`pipeline.spec.semantics` so that the loader can report each of them at the right line.
"""

from __future__ import annotations

import ipaddress
from functools import cached_property
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator, model_validator

from pipeline.spec.dhcp import Dhcp, Firmware
from pipeline.spec.kernel import KernelChoice
from pipeline.spec.rootfs import RootBuild
from pipeline.spec.types import (
    MAC,
    SYSAPPEND_BITS,
    AbsPath,
    ArgvWord,
    DeployRoot,
    DeviceRef,
    ExportOption,
    Hostname,
    HostnamePattern,
    IPv4Addr,
    IPv4Net,
    KernelArg,
    MountOption,
    Name,
    RelPath,
    Size,
    SourceFile,
    StrictBool,
    SysappendName,
    node_id,
    same_paths,
)

StrictInt = Annotated[int, Field(strict=True)]

# Inside the read-only root: where `apply` keeps the originals of files it turns into symlinks, and where the
# boot script seeds each node's copies from.
SKELETON_DIR = "/usr/lib/nfsroot/skel"


class _Part(BaseModel):
    # Not strict=True: it would refuse YAML lists for tuple fields. Scalars are strict through their own types.
    model_config = ConfigDict(frozen=True, extra="forbid", ignored_types=(cached_property,))


class Gateway(_Part):
    """The NFS/TFTP server the nodes boot from."""

    address: IPv4Addr = Field(description="The gateway's IPv4 address as the nodes see it.")
    network: IPv4Net = Field(description="The nodes' subnet in CIDR form; exports are limited to it.")
    tftp_root: AbsPath = Field("/srv/tftp", description="The TFTP server's root directory on the gateway.")

    @property
    def ip(self) -> ipaddress.IPv4Address:
        return ipaddress.IPv4Address(self.address)

    @property
    def net(self) -> ipaddress.IPv4Network:
        return ipaddress.IPv4Network(self.network)


class Share(_Part):
    """A directory the gateway exports over NFS."""

    path: AbsPath = Field(description="The exported directory on the gateway.")
    access: Literal["ro", "rw"] = Field(description="Read-only or read-write.")
    options: tuple[ExportOption, ...] = Field(("no_subtree_check",), description="exports(5) options other than ro/rw.")
    clients: IPv4Net | None = Field(None, description="Who may mount it; default: the gateway network.")


class RootMount(_Part):
    """The read-only root: `nfsroot=GATEWAY:PATH,OPTIONS` on the kernel command line."""

    share: Name = Field(description="Name of the share holding the OS root.")
    options: tuple[MountOption, ...] = Field(("ro",), description="klibc nfsmount options for nfsroot=.")
    profile: Literal["debian-systemd", "none"] = Field(
        "none",
        description="What the root's distribution needs per node (docs/profile.md): debian-systemd adds per-node "
        "/var/log, /var/tmp, /var/lib/systemd …, machine-id and ssh host keys; none adds nothing.",
    )


class Writable(_Part):
    """A writable path under the read-only root: an NFS mount (the default), a tmpfs, a per-node image file or a
    local partition (docs/storage.md)."""

    mount: AbsPath = Field(description="Mount point in the node's root; must exist in the read-only root.")
    storage: Literal["nfs", "tmpfs", "image", "disk"] = Field(
        "nfs",
        description="nfs: a directory of a share; tmpfs: memory, lost at reboot; image: a file system image in "
        "the node's own directory, loop-mounted; disk: a local partition (device), with a fallback.",
    )
    share: Name | None = Field(None, description="storage nfs: name of the (read-write) share it comes from.")
    per_node: StrictBool = Field(False, description="storage nfs: mount SHARE[/SUBDIR]/<node id>, made at first boot.")
    subdir: RelPath | None = Field(None, description="storage nfs: directory inside the share.")
    options: tuple[MountOption, ...] = Field(("rw",), description="storage nfs: klibc nfsmount options.")
    size: Size | None = Field(
        None, description="tmpfs and image (and a disk's fallback): size with a unit K, M, G or T, e.g. 20G."
    )
    fs: Literal["ext4", "xfs"] = Field("ext4", description="image (and a disk's image fallback): its file system.")
    device: DeviceRef | None = Field(None, description="disk: the partition, LABEL=name or UUID=uuid.")
    fallback: Literal["fail", "image", "tmpfs"] = Field(
        "fail", description="disk: what a node without that partition does: stop the unit, or use an image or tmpfs."
    )


class Repack(_Part):
    """Settings of the repack method (rewrite the distro initrd with our files inside)."""

    source: SourceFile | None = Field(
        None, description="The distro initrd on the build machine (relative to cluster.yaml); repack only."
    )
    compression: Literal["zstd", "gzip", "xz"] = "zstd"
    # 9, not zstd's maximum: level 19 made a repack slower than the seed's whole gzip build (benchmarks/).
    level: StrictInt = Field(9, ge=1, le=22, description="Compression level: zstd 1-22, gzip and xz 1-9.")
    threads: StrictInt = Field(0, ge=0, le=256, description="zstd worker threads; 0 means one per CPU.")


class Boot(_Part):
    """What the nodes boot: which of the root's kernels, how our files join its initrd, the kernel command line."""

    kernel: KernelChoice = Field(
        description="Kernel version in the root's /boot (vmlinuz-<version>, initrd.img-<version>, "
        "/lib/modules/<version>), or 'newest'; resolved against the target root at plan time."
    )
    method: Literal["overlay", "repack"] = Field(
        "overlay", description="overlay: serve our files as a second initrd; repack: rewrite the distro initrd."
    )
    cmdline: tuple[KernelArg, ...] = Field((), description="Extra kernel arguments for every node.")
    sysappend: tuple[SysappendName, ...] = Field(("ip", "bootif"), description="pxelinux SYSAPPEND, by name.")
    on_failure: Literal["panic", "continue"] = Field(
        "panic", description="What the boot script does when a mount fails: stop in the initramfs, or go on."
    )
    mount_retries: StrictInt = Field(5, ge=0, le=30, description="Retries of each NFS mount, with backoff.")
    repack: Repack = Repack()


class Node(_Part):
    """A node known by MAC. Unknown nodes boot too (pxelinux.cfg/default); known ones can be customised."""

    mac: MAC
    hostname: Hostname | None = Field(None, description="Overrides the pattern for this node.")
    address: IPv4Addr | None = Field(None, description="Fixed address, for the gateway's hosts file.")
    cmdline: tuple[KernelArg, ...] = Field((), description="Extra kernel arguments for this node only.")

    @property
    def id(self) -> str:
        return node_id(self.mac)

    @property
    def customised(self) -> bool:
        """Whether the node needs a pxelinux.cfg/01-<mac> file of its own."""
        return self.hostname is not None or bool(self.cmdline)


class Nodes(_Part):
    hostname: HostnamePattern = Field("node-{mac}", description="Host name pattern; {mac} is the node id.")
    known: tuple[Node, ...] = ()


class Deploy(_Part):
    """Where and how `apply` installs the built tree."""

    root: DeployRoot = Field("gateway/", description="Target root directory; / on the gateway itself.")
    exports_file: AbsPath = Field("/etc/exports.d/nfsroot.exports", description="The exports file we own.")
    hosts_file: AbsPath = Field("/etc/nfsroot/hosts", description="Hosts entries for the gateway (addn-hosts).")
    reload: tuple[ArgvWord, ...] = Field(
        ("exportfs", "-ra"), description="Run after the exports changed; [] to disable."
    )
    keep_initrds: StrictInt = Field(
        3, ge=1, le=100, description="Previous boot generations (kernel and initrds) kept for rollback."
    )
    capabilities: Literal["setuid", "ping_group_range", "none"] = Field(
        "ping_group_range", description="Remedy for file capabilities NFS cannot carry (ping's cap_net_raw)."
    )


class Cluster(_Part):
    """cluster.yaml: one diskless cluster booting a read-only NFS root."""

    name: Name
    gateway: Gateway
    shares: dict[Name, Share]
    root: RootMount
    writable: tuple[Writable, ...]
    symlinks: dict[AbsPath, AbsPath] = Field(
        default_factory=dict, description="Path in the read-only root → path under a writable mount."
    )
    boot: Boot
    nodes: Nodes = Nodes()
    deploy: Deploy = Deploy()
    rootfs: RootBuild | None = Field(None, description="Build the root with mmdebstrap; absent: adopt it.")
    firmware: Firmware = Field(Firmware(), description="Boot loaders per firmware; default: BIOS pxelinux only.")
    dhcp: Dhcp | None = Field(None, description="Generate a dnsmasq DHCP/TFTP configuration; absent: none.")
    preset: Literal["none", "kubernetes"] = Field(
        "none",
        description="kubernetes: containerd and kubelet state on per-node image storage, per-node /etc/kubernetes "
        "and CNI directories, swap off, overlay and br_netfilter, bridge sysctls (docs/storage.md).",
    )

    @field_validator("symlinks", mode="before")
    @classmethod
    def _distinct_sources(cls, value: object, info: ValidationInfo) -> object:
        # The loader reports these at the key's line itself (validation would have merged the keys already).
        if isinstance(value, dict) and not (info.context and info.context.get("skip_semantics")):
            for later, earlier in same_paths(list(value)):
                raise ValueError(f"{later} is the same path as {earlier}")
        return value

    @model_validator(mode="after")
    def _semantics(self, info: ValidationInfo) -> Cluster:
        # The loader runs these itself to report each problem at its own line; direct construction
        # (tests, the JSON parts doit passes between tasks) must still never yield an inconsistent spec.
        if info.context and info.context.get("skip_semantics"):
            return self
        from pipeline.spec.semantics import semantic_problems

        problems = semantic_problems(self)
        if problems:
            raise ValueError("; ".join(f"{'.'.join(map(str, loc))}: {msg}" for loc, msg, _ in problems))
        return self

    # -- derived values: one definition, used by every renderer ------------------------------------------

    def share(self, name: str) -> Share:
        return self.shares[name]

    @property
    def root_share(self) -> Share:
        return self.shares[self.root.share]

    @property
    def node_dir(self) -> Writable:
        """The per-node writable mount that holds the generated hostname, hosts, cmdline and boot record."""
        return next(w for w in self.writable if w.per_node and w.storage == "nfs")

    @property
    def nfs_writable(self) -> tuple[Writable, ...]:
        """The writable entries the boot script mounts over NFS (storage: nfs)."""
        return tuple(w for w in self.writable if w.storage == "nfs")

    def writable_export(self, w: Writable, node: str | None = None) -> str:
        """The gateway path a writable mount comes from; per-node mounts need the node id."""
        if w.share is None:
            raise ValueError(f"{w.mount} is not an NFS mount")
        path = self.shares[w.share].path
        if w.subdir:
            path = f"{path.rstrip('/')}/{w.subdir}"
        if w.per_node:
            if node is None:
                raise ValueError("per-node mount needs a node id")
            path = f"{path.rstrip('/')}/{node}"
        return path

    def writable_parent(self, w: Writable) -> str:
        """For a per-node mount: the directory in which each node's directory is created."""
        if w.share is None:
            raise ValueError(f"{w.mount} is not an NFS mount")
        path = self.shares[w.share].path
        return f"{path.rstrip('/')}/{w.subdir}" if w.subdir else path

    def hostname_for(self, node: Node) -> str:
        return node.hostname or self.nodes.hostname.replace("{mac}", node.id)

    @property
    def sysappend_bits(self) -> int:
        bits = 0
        for name in self.boot.sysappend:
            bits |= SYSAPPEND_BITS[name]
        return bits

    @property
    def nfsroot_arg(self) -> str:
        return f"{self.gateway.address}:{self.root_share.path}," + ",".join(self.root.options)

    def export_clients(self, share: Share) -> str:
        return share.clients or self.gateway.network
