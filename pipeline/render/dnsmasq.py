"""A dnsmasq configuration: DHCP (full or proxy) and TFTP for the nodes, a loader per client architecture.

Clients say what they are in DHCP option 93 (client-arch): 0 BIOS, 7 and 9 UEFI x86-64, 11 UEFI arm64. iPXE
says so too (option 175, user-class "iPXE"); it is handed the iPXE script rather than the loader again, or
a chainloaded iPXE would load itself forever. In proxy mode another server leases addresses, and the PXE ROM
is answered with pxe-service (whose x86PC basename gets its ".0" from the client), iPXE with dhcp-boot.

A node group whose loaders differ from the default group's (groups.<name>.firmware) can only be told apart by
MAC: its known nodes are tagged `group-<name>` (dhcp-mac), its boot lines require that tag and the default
group's lines exclude it, so no client matches two lines and the order of lines does not matter. Unknown
nodes match only the default group's lines.
"""

from __future__ import annotations

from dataclasses import dataclass

from pipeline.render.artifact import Artifact
from pipeline.render.firmware import IPXE_SCRIPT, arm64_file, bios_file, uefi_file, uses_ipxe
from pipeline.render.templating import render
from pipeline.spec.model import Cluster

TEMPLATE = "dnsmasq.conf.j2"
FIELDS = ("name", "gateway", "firmware", "dhcp")


def _proxy_basename(name: str) -> str:
    # pxe-service appends the PXE layer suffix (".0") to a name that has none of its own.
    return name.removesuffix(".0")


@dataclass(frozen=True)
class Loaders:
    """What DHCP hands the clients of one group, by architecture; `tags` is the group's condition ("" when
    every node boots the same loaders), a dnsmasq tag list ending in a comma."""

    group: str
    tags: str
    bios: str
    uefi: str | None
    arm64: str | None
    ipxe_script: str | None

    @property
    def bios_proxy(self) -> str:
        return _proxy_basename(self.bios)

    @property
    def not_ipxe(self) -> str:
        return "tag:!ipxe," if self.ipxe_script else ""


def _choice(c: Cluster) -> tuple[str, str | None, str | None, str | None]:
    return bios_file(c), uefi_file(c), arm64_file(c), IPXE_SCRIPT if uses_ipxe(c) else None


def tag_of(group: str) -> str:
    """The dnsmasq tag of a group's known nodes (group names are [a-z][a-z0-9-]*: no separator of dnsmasq's)."""
    return f"group-{group}"


def loader_groups(cluster: Cluster) -> tuple[list[Loaders], list[tuple[str, str]]]:
    """The default group's loaders first, then each group whose loaders differ and that has known nodes; and
    (tag, MAC) of those nodes."""
    views = cluster.groups_resolved()
    default = _choice(views[0].cluster)
    apart = [v for v in views[1:] if v.members and _choice(v.cluster) != default]
    macs = [(tag_of(v.name), cluster.nodes.known[i].mac) for v in apart for i in v.members]
    blocks = [Loaders(views[0].name, "".join(f"tag:!{tag_of(v.name)}," for v in apart), *default)]
    blocks += [Loaders(v.name, f"tag:{tag_of(v.name)},", *_choice(v.cluster)) for v in apart]
    return blocks, macs


def render_dnsmasq(cluster: Cluster) -> list[Artifact]:
    dhcp = cluster.dhcp
    if dhcp is None:
        return []
    net = cluster.gateway.net
    hosts = []
    if dhcp.mode == "full":
        for node in cluster.nodes.known:
            hosts.append((node.mac, node.address, cluster.hostname_for(node)))
    blocks, macs = loader_groups(cluster)
    data = render(
        TEMPLATE,
        name=cluster.name,
        mode=dhcp.mode,
        interface=dhcp.interface,
        tftp_root=cluster.gateway.tftp_root,
        tftp_max=dhcp.tftp_max,
        network=str(net.network_address),
        netmask=str(net.netmask),
        range_start=dhcp.range_start,
        range_end=dhcp.range_end,
        lease=dhcp.lease_time,
        hosts=hosts,
        macs=macs,
        blocks=blocks,
    )
    fields = (*FIELDS, "nodes") if hosts or macs else FIELDS
    if macs:
        fields = (*fields, "groups")
    return [Artifact(dhcp.config_file, "file", "dnsmasq", fields, data)]
