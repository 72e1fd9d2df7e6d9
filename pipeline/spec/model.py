"""The cluster spec: a frozen pydantic model of cluster.yaml.

Field-level rules live in `pipeline.spec.types`; rules that relate fields to each other live in
`pipeline.spec.semantics` so that the loader can report each of them at the right line.
"""

from __future__ import annotations

import ipaddress
from functools import cached_property
from typing import TYPE_CHECKING, Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SerializerFunctionWrapHandler,
    ValidationInfo,
    create_model,
    field_validator,
    model_serializer,
    model_validator,
)

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
    group: Name | None = Field(None, description="The node group it boots as; default: nodes.default_group.")

    @property
    def id(self) -> str:
        return node_id(self.mac)

    @property
    def customised(self) -> bool:
        """Whether the node needs a pxelinux.cfg/01-<mac> file of its own."""
        return self.hostname is not None or bool(self.cmdline)


DEFAULT_GROUP = "default"  # the cluster-wide settings, as a group: reserved, no entry of `groups` may take it


class _Sparse(_Part):
    """A model whose unset fields are None and left out when dumped: the part files doit passes between tasks
    must validate again, and an explicit null is refused (the default None is not validated)."""

    @model_serializer(mode="wrap")
    def _set_only(self, handler: SerializerFunctionWrapHandler) -> dict[str, Any]:
        data: dict[str, Any] = handler(self)
        return {k: v for k, v in data.items() if v is not None}


def _override(model: type[BaseModel]) -> type[BaseModel]:
    """`model` with every field optional and unset by default: a group states only what differs. Explicit
    nulls stay refused (the default None is not validated), so "unset" has one spelling: leaving it out."""
    # A field's validators and bounds live in its metadata once pydantic has read the class: carry them over.
    fields: dict[str, Any] = {
        name: (
            Annotated[(f.annotation, *f.metadata)] if f.metadata else f.annotation,
            Field(None, description=f.description),
        )
        for name, f in model.model_fields.items()
    }
    doc = f"{model.__doc__} A group's fields replace the cluster-wide ones; unset fields are inherited."
    return create_model(f"{model.__name__}Override", __base__=_Sparse, __doc__=doc, **fields)


if TYPE_CHECKING:
    from pipeline.spec.groups import GroupView

if TYPE_CHECKING:  # to the type checker an override is the section it overrides (the same field names)
    RootOverride = RootMount
    BootOverride = Boot
    FirmwareOverride = Firmware
else:
    RootOverride = _override(RootMount)
    BootOverride = _override(Boot)
    FirmwareOverride = _override(Firmware)


# What a node group's nodes run besides the OS: kubernetes adds container and kubelet state (docs/storage.md).
Preset = Literal["none", "kubernetes"]


class Group(_Sparse):
    """A node group: settings that replace the cluster-wide ones for its nodes (docs/groups.md).

    The fields here are THE list of what a group can override (pipeline.spec.groups reads it from this class):
    a section (a model) is merged field by field over the cluster-wide one, anything else replaces it."""

    hostname: HostnamePattern | None = Field(None, description="Host name pattern of the group's nodes.")
    root: RootOverride | None = Field(None, description="Fields of `root` that differ for this group.")
    boot: BootOverride | None = Field(None, description="Fields of `boot` that differ for this group.")
    writable: tuple[Writable, ...] | None = Field(None, description="The group's writable mounts (all of them).")
    symlinks: dict[AbsPath, AbsPath] | None = Field(None, description="The group's symlinks (all of them).")
    preset: Preset | None = Field(None, description="The group's preset (kubernetes or none).")
    firmware: FirmwareOverride | None = Field(
        None,
        description="Fields of `firmware` that differ for this group: its known nodes get these loaders from DHCP "
        "(by MAC); transport and http stay cluster-wide.",
    )


class Nodes(_Part):
    hostname: HostnamePattern = Field("node-{mac}", description="Host name pattern; {mac} is the node id.")
    known: tuple[Node, ...] = ()
    default_group: Name | None = Field(
        None,
        description="The group of unknown nodes and of known nodes without a group; default: the cluster-wide "
        f"settings themselves (the group {DEFAULT_GROUP!r}).",
    )


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
    preset: Preset = Field(
        "none",
        description="kubernetes: containerd and kubelet state on per-node image storage, per-node /etc/kubernetes "
        "and CNI directories, swap off, overlay and br_netfilter, bridge sysctls (docs/storage.md).",
    )
    groups: dict[Name, Group] = Field(
        default_factory=dict, description="Node groups: settings that differ for some nodes (docs/groups.md)."
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

    def group_of(self, node: Node) -> str:
        """The name of the group a node boots as (DEFAULT_GROUP: the cluster-wide settings)."""
        return node.group or self.nodes.default_group or DEFAULT_GROUP

    def hostname_for(self, node: Node) -> str:
        group = self.groups.get(self.group_of(node))
        pattern = group.hostname if group is not None and group.hostname is not None else self.nodes.hostname
        return node.hostname or pattern.replace("{mac}", node.id)

    def groups_resolved(self) -> tuple[GroupView, ...]:
        """One effective spec per group that nodes boot as, the default group (unknown nodes') first."""
        from pipeline.spec.groups import resolve_groups

        return resolve_groups(self)

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
