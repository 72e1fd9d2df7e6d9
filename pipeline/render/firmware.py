"""Which file in the TFTP root each kind of firmware boots, as the spec's `firmware` section chooses.

One table, read by the dnsmasq configuration (what DHCP hands out) and the loader family (what is installed).
"""

from __future__ import annotations

from pipeline.spec.model import Cluster

IPXE_SCRIPT = "nfsroot.ipxe"  # what iPXE (user-class iPXE) is handed instead of the loader: breaks the loop

BIOS_FILES = {"pxelinux": "pxelinux.0", "ipxe": "undionly.kpxe"}
UEFI_FILES = {"shim": "shimx64.efi", "grub": "grubx64.efi", "ipxe": "snponly.efi"}


def bios_file(cluster: Cluster) -> str:
    return BIOS_FILES[cluster.firmware.bios]


def uefi_file(cluster: Cluster) -> str | None:
    return UEFI_FILES.get(cluster.firmware.uefi)


def uses_ipxe(cluster: Cluster) -> bool:
    return cluster.firmware.bios == "ipxe" or cluster.firmware.uefi == "ipxe"


def uses_grub(cluster: Cluster) -> bool:
    return cluster.firmware.uefi in ("shim", "grub")
