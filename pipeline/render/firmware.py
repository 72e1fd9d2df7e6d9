"""Which file in the TFTP root each kind of firmware boots, as the spec's `firmware` section chooses.

One table, read by the dnsmasq configuration (what DHCP hands out) and the loader family (what is installed).
A node group may choose other loaders (groups.<name>.firmware): what is installed and served is then what any
group's nodes boot, while `firmware.transport` and `firmware.http` stay cluster-wide.
"""

from __future__ import annotations

from pipeline.spec.model import Cluster

IPXE_SCRIPT = "nfsroot.ipxe"  # what iPXE (user-class iPXE) is handed instead of the loader: breaks the loop

BIOS_FILES = {"pxelinux": "pxelinux.0", "ipxe": "undionly.kpxe"}
UEFI_FILES = {"shim": "shimx64.efi", "grub": "grubx64.efi", "ipxe": "snponly.efi"}
ARM64_FILES = {"grub": "grubaa64.efi"}  # the name Debian's arm64 shim would load: free for a later shim


def bios_file(cluster: Cluster) -> str:
    return BIOS_FILES[cluster.firmware.bios]


def uefi_file(cluster: Cluster) -> str | None:
    return UEFI_FILES.get(cluster.firmware.uefi)


def arm64_file(cluster: Cluster) -> str | None:
    return ARM64_FILES.get(cluster.firmware.arm64)


def uses_ipxe(cluster: Cluster) -> bool:
    return cluster.firmware.bios == "ipxe" or cluster.firmware.uefi == "ipxe"


def uses_grub(cluster: Cluster) -> bool:
    return cluster.firmware.uefi in ("shim", "grub") or cluster.firmware.arm64 == "grub"


def group_specs(cluster: Cluster) -> tuple[Cluster, ...]:
    """Every group's effective spec (just the cluster without groups): each group's nodes boot its loaders."""
    return tuple(view.cluster for view in cluster.groups_resolved())


def any_ipxe(cluster: Cluster) -> bool:
    """Some group's nodes boot iPXE (so the iPXE script is served)."""
    return any(uses_ipxe(c) for c in group_specs(cluster))


def any_grub(cluster: Cluster) -> bool:
    """Some group's nodes boot GRUB (so grub/grub.cfg is served)."""
    return any(uses_grub(c) for c in group_specs(cluster))


def uses_http(cluster: Cluster, ipxe: bool | None = None) -> bool:
    """iPXE fetches the kernel and initrds over HTTP (firmware.transport), so the gateway serves them. `ipxe`:
    whether any group boots iPXE, when the caller knows it (a group's view does not see the other groups)."""
    return (any_ipxe(cluster) if ipxe is None else ipxe) and cluster.firmware.transport == "http"


def http_base(cluster: Cluster, ipxe: bool | None = None) -> str:
    """The URL the iPXE script prefixes to the TFTP root's file names; '' when it fetches over TFTP (relative
    names resolve against the script's own tftp:// URL)."""
    if not uses_http(cluster, ipxe):
        return ""
    port = cluster.firmware.http.port
    return f"http://{cluster.gateway.ip}{'' if port == 80 else f':{port}'}/"
