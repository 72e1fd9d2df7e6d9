"""`firmware` and `dhcp`: which boot loader each client architecture gets, and the dnsmasq that hands it out.

Both sections are optional. Without them the cluster boots BIOS pxelinux from a DHCP server the user runs,
exactly as before. Every value here is written into a dnsmasq configuration, where a comma separates fields
and a newline starts a new directive, so each type is a small alphabet without either.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterator
from typing import TYPE_CHECKING, Annotated, Literal

from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, Field

from pipeline.spec.types import AbsPath, ArgvWord, IPv4Addr, _require_str, fail

if TYPE_CHECKING:
    from pipeline.spec.model import Cluster

# dnsmasq lease times: seconds, or a number with s/m/h/d/w, or "infinite" (dnsmasq(8) --dhcp-range).
_LEASE = re.compile(r"(?:[1-9][0-9]{0,7}[smhdw]?|infinite)")
# Linux interface names: at most 15 bytes (IFNAMSIZ - 1), no /, whitespace, commas or colons.
_INTERFACE = re.compile(r"[A-Za-z0-9_.-]{1,15}")
TFTP_MAX = 256  # dhcp.tftp_max's default (see there)


def _lease(value: str) -> str:
    if not _LEASE.fullmatch(value):
        raise fail(f"{value[:40]!r} is not a lease time", "seconds, or a number followed by m, h, d or w: 12h")
    return value


def _interface(value: str) -> str:
    if not _INTERFACE.fullmatch(value) or value in (".", ".."):
        raise fail(f"{value[:40]!r} is not a network interface name", "up to 15 letters, digits, _ . -: eth0")
    return value


LeaseTime = Annotated[str, BeforeValidator(_require_str), AfterValidator(_lease)]
Interface = Annotated[str, BeforeValidator(_require_str), AfterValidator(_interface)]


class _Section(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class Http(_Section):
    """The HTTP server (nginx) that serves the TFTP root read-only to iPXE: kernel and initrds."""

    port: int = Field(80, ge=1, le=65535, strict=True, description="TCP port on the gateway address.")
    config_file: AbsPath = Field(
        "/etc/nginx/conf.d/nfsroot.conf",
        description="The nginx server block we own (Debian's nginx.conf includes conf.d/*.conf).",
    )
    # On by default, unlike dhcp.reload: nginx is Debian's usual nginx.service and a reload is graceful (open
    # downloads finish), while restarting a DHCP server is the user's call.
    reload: tuple[ArgvWord, ...] = Field(
        ("systemctl", "reload", "nginx"),
        description="Run by apply after the server block changed (after `nginx -t` accepted it in plan); [] to "
        "disable.",
    )


class Firmware(_Section):
    """The boot loader each kind of firmware starts from the TFTP root (installed from Debian's packages)."""

    bios: Literal["pxelinux", "ipxe"] = Field(
        "pxelinux", description="BIOS clients: pxelinux.0, or iPXE's undionly.kpxe running the iPXE script."
    )
    uefi: Literal["none", "shim", "grub", "ipxe"] = Field(
        "none",
        description="UEFI x86-64 clients: shim (Secure Boot: shimx64.efi, then the signed grubx64.efi), grub "
        "(grubx64.efi without shim), ipxe (snponly.efi running the iPXE script), or none.",
    )
    arm64: Literal["none", "grub"] = Field(
        "none",
        description="UEFI arm64 clients (option 93 = 11): grub (grubaa64.efi, Debian's signed arm64 netboot GRUB "
        "from grub-efi-arm64-signed:arm64, reading the same grub/grub.cfg: the root must hold an arm64 kernel), "
        "or none.",
    )
    # HTTP by default: 7-13x faster than TFTP in the boot-storm benchmark (docs/benchmarks.md). Only iPXE
    # uses it; pxelinux.0 and Debian's signed netboot GRUB (no http module) always fetch over TFTP.
    transport: Literal["http", "tftp"] = Field(
        "http",
        description="How iPXE fetches the kernel and initrds: http (from the gateway's nginx, firmware.http) or "
        "tftp. pxelinux and GRUB always use TFTP.",
    )
    http: Http = Field(Http(), description="The gateway's HTTP server, when iPXE fetches over HTTP.")


class Dhcp(_Section):
    """A dnsmasq configuration for DHCP and TFTP: full DHCP for the nodes' network, or proxy-DHCP beside a router."""

    mode: Literal["full", "proxy"] = Field(
        "full", description="full: dnsmasq leases addresses; proxy: another DHCP server does, dnsmasq adds PXE."
    )
    range_start: IPv4Addr | None = Field(None, description="First dynamic address (full mode).")
    range_end: IPv4Addr | None = Field(None, description="Last dynamic address (full mode).")
    lease_time: LeaseTime = Field("12h", description="Lease time of dynamic and fixed addresses.")
    interface: Interface | None = Field(None, description="Serve only this interface (dnsmasq interface=).")
    config_file: AbsPath = Field("/etc/dnsmasq.d/nfsroot.conf", description="The dnsmasq configuration we own.")
    # dnsmasq's own default is 50 concurrent TFTP transfers; a node fetches its files one at a time, so a
    # boot storm of N nodes needs N. Chosen from benchmarks/bench_bootstorm.py at 128 nodes (docs/benchmarks.md).
    tftp_max: int = Field(
        TFTP_MAX,
        ge=1,
        le=4096,
        strict=True,
        description="Concurrent TFTP transfers (dnsmasq tftp-max): at least the nodes that boot at once.",
    )
    reload: tuple[ArgvWord, ...] = Field(
        (), description="Run after the configuration changed, e.g. [systemctl, restart, dnsmasq]; [] to disable."
    )


def dhcp_problems(c: Cluster) -> Iterator[tuple[tuple[str | int, ...], str, str]]:
    """Rules relating `dhcp` to the gateway and the nodes (see pipeline.spec.semantics)."""
    d = c.dhcp
    if d is None:
        return
    net, gateway = c.gateway.net, c.gateway.ip
    if d.mode == "proxy":
        for field in ("range_start", "range_end"):
            if getattr(d, field) is not None:
                yield ("dhcp", field), "proxy-DHCP leases no addresses", "drop the range, or use mode: full"
        return
    ends = []
    for field in ("range_start", "range_end"):
        value = getattr(d, field)
        if value is None:
            yield ("dhcp", field), "required when dhcp.mode is full", f"an address inside {net}"
            continue
        ip = ipaddress.IPv4Address(value)
        if ip not in net or ip in (net.network_address, net.broadcast_address):
            yield ("dhcp", field), f"{ip} is not a host address of the gateway network {net}", ""
        ends.append(ip)
    if len(ends) == 2:
        if ends[0] > ends[1]:
            yield ("dhcp", "range_end"), f"{ends[1]} comes before range_start {ends[0]}", "swap them"
        elif ends[0] <= gateway <= ends[1]:
            yield ("dhcp", "range_start"), f"the range {ends[0]}-{ends[1]} holds the gateway {gateway}", ""
