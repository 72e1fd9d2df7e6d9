"""What a boot test boots: the harness's input contract, independent of how the files were built.

A `BootTarget` is a directory of TFTP files (kernel, initrds, `pxelinux.cfg/...`) plus the share map the
nodes expect from the gateway. `from_cluster` derives it from a `Cluster` and the staged tree `doit` wrote
(`build/gateway/<tftp_root>`); tests may also write one by hand.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from pipeline.boottest.errors import BootTestError
from pipeline.spec.model import Cluster, Node
from pipeline.spec.types import node_id

NODE = "{node}"
DEFAULT_TEST_MACS = ("52:54:00:b0:07:01", "52:54:00:b0:07:02")


@dataclass(frozen=True)
class WritableMount:
    """A writable mount the boot script makes: `export` is its gateway path, with `{node}` for per-node ones."""

    mount: str
    export: str

    @property
    def per_node(self) -> bool:
        return NODE in self.export

    def export_for(self, node: str) -> str:
        return self.export.replace(NODE, node)


@dataclass(frozen=True)
class BootNode:
    mac: str
    hostname: str
    # The node's own writable mounts when its node group's differ from the target's (None: the target's).
    mounts: tuple[WritableMount, ...] | None = None

    @property
    def id(self) -> str:
        return node_id(self.mac)

    @property
    def bootif(self) -> str:
        return "01-" + self.mac.lower().replace(":", "-")


@dataclass(frozen=True)
class BootTarget:
    tftp_source: Path
    gateway: str
    network: str
    shares: Mapping[str, Literal["ro", "rw"]]  # gateway path -> access
    root_share: str
    writable: tuple[WritableMount, ...]
    symlinks: Mapping[str, str]
    nodes: tuple[BootNode, ...]
    # TFTP names that the source directory may lack, looked up here (the distro kernel and initrd).
    fallback_dirs: tuple[Path, ...] = (Path("/boot"),)
    cmdline_file: str = "cmdline"
    # build/manifest.json: its entries under the shares are applied to the served directories (see shares.py).
    manifest: Path | None = None
    method: str = "unknown"

    def __post_init__(self) -> None:
        net = ipaddress.IPv4Network(self.network)
        if ipaddress.IPv4Address(self.gateway) not in net:
            raise BootTestError(f"gateway {self.gateway} is not in {self.network}")
        if self.root_share not in self.shares:
            raise BootTestError(f"root share {self.root_share} is not among the shares {sorted(self.shares)}")
        for w in self.writable:
            if self.share_of(w.export_for("x")) is None:
                raise BootTestError(f"writable mount {w.mount}: {w.export} is under no share")

    def share_of(self, gateway_path: str) -> str | None:
        """The share (gateway path) holding `gateway_path`; the longest match wins."""
        best = None
        for share in self.shares:
            prefix = share.rstrip("/")
            if (gateway_path == share or gateway_path.startswith(prefix + "/")) and (
                best is None or len(share) > len(best)
            ):
                best = share
        return best

    @property
    def node_dir_mount(self) -> WritableMount | None:
        return next((w for w in self.writable if w.per_node), None)

    def writable_of(self, node: BootNode) -> tuple[WritableMount, ...]:
        return self.writable if node.mounts is None else node.mounts

    def node_dir_of(self, node: BootNode) -> WritableMount | None:
        return next((w for w in self.writable_of(node) if w.per_node), None)


def _mounts(cluster: Cluster) -> tuple[WritableMount, ...]:
    return tuple(
        WritableMount(w.mount, cluster.writable_export(w, NODE if w.per_node else None)) for w in cluster.nfs_writable
    )


def _node(cluster: Cluster, mac: str) -> BootNode:
    """A test node as its node group boots it: host name and writable mounts (unknown MACs: the default group)."""
    views = cluster.groups_resolved()
    node = next((n for n in cluster.nodes.known if n.id == node_id(mac)), Node(mac=mac))
    name = cluster.group_of(node) if node in cluster.nodes.known else views[0].name
    view = next(v for v in views if v.name == name)
    mounts = None if len(views) == 1 else _mounts(view.cluster)
    return BootNode(mac.lower(), cluster.hostname_for(node), mounts)


def from_cluster(
    cluster: Cluster,
    build_dir: Path,
    macs: Sequence[str] = DEFAULT_TEST_MACS,
    *,
    tftp_source: Path | None = None,
) -> BootTarget:
    """The target `doit` built: TFTP files from `build/gateway/<tftp_root>`, shares and mounts from the spec."""
    source = tftp_source or build_dir / "gateway" / cluster.gateway.tftp_root.lstrip("/")
    manifest = build_dir / "manifest.json"
    for needed in (source / "pxelinux.cfg", manifest):
        if not needed.exists():
            raise BootTestError(f"{needed} does not exist: run `doit` first")
    nodes = tuple(_node(cluster, mac) for mac in macs)
    # The served shares need every group's directories: the union of the nodes' mounts, the cluster's first.
    writable = tuple(dict.fromkeys(_mounts(cluster) + tuple(w for n in nodes for w in n.mounts or ())))
    return BootTarget(
        tftp_source=source,
        gateway=cluster.gateway.address,
        network=cluster.gateway.network,
        shares={s.path: s.access for s in cluster.shares.values()},
        root_share=cluster.root_share.path,
        writable=writable,
        symlinks=dict(cluster.symlinks),
        nodes=nodes,
        method=cluster.boot.method,
        manifest=manifest,
    )
