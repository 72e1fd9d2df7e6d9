"""A dnsmasq configuration: DHCP (full or proxy) and TFTP for the nodes, a loader per client architecture.

Clients say what they are in DHCP option 93 (client-arch): 0 BIOS, 7 and 9 UEFI x86-64, 11 UEFI arm64. iPXE
says so too (option 175, user-class "iPXE"); it is handed the iPXE script rather than the loader again, or
a chainloaded iPXE would load itself forever. In proxy mode another server leases addresses, and the PXE ROM
is answered with pxe-service (whose x86PC basename gets its ".0" from the client), iPXE with dhcp-boot.
"""

from __future__ import annotations

from pipeline.render.artifact import Artifact
from pipeline.render.firmware import IPXE_SCRIPT, arm64_file, bios_file, uefi_file, uses_ipxe
from pipeline.render.templating import render
from pipeline.spec.model import Cluster

TEMPLATE = "dnsmasq.conf.j2"
FIELDS = ("name", "gateway", "firmware", "dhcp")


def _proxy_basename(name: str) -> str:
    # pxe-service appends the PXE layer suffix (".0") to a name that has none of its own.
    return name.removesuffix(".0")


def render_dnsmasq(cluster: Cluster) -> list[Artifact]:
    dhcp = cluster.dhcp
    if dhcp is None:
        return []
    net = cluster.gateway.net
    hosts = []
    if dhcp.mode == "full":
        for node in cluster.nodes.known:
            hosts.append((node.mac, node.address, cluster.hostname_for(node)))
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
        bios=bios_file(cluster),
        bios_proxy=_proxy_basename(bios_file(cluster)),
        uefi=uefi_file(cluster),
        arm64=arm64_file(cluster),
        ipxe_script=IPXE_SCRIPT if uses_ipxe(cluster) else None,
        not_ipxe="tag:!ipxe," if uses_ipxe(cluster) else "",
    )
    fields = (*FIELDS, "nodes") if hosts else FIELDS
    return [Artifact(dhcp.config_file, "file", "dnsmasq", fields, data)]
