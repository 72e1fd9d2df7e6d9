"""The generated dnsmasq, running, hands each client architecture (DHCP option 93) its boot file: a DHCP
DISCOVER crafted by tests/dhcp_client.py on a veth pair inside a network namespace the test makes. arm64 is
tested this way only: no arm64 machine is booted here (docs/firmware.md)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from pipeline.boottest.proc import Daemon, namespaces_usable, network_sandbox, wait_until
from pipeline.fsutil import write_atomic
from pipeline.render.dnsmasq import render_dnsmasq
from pipeline.spec.model import Cluster
from tests.prereq import need, require_program
from tests.spec_helpers import parse, spec_text

CLIENT = Path(__file__).with_name("dhcp_client.py")
DHCP = "dhcp: {range_start: 192.168.0.100, range_end: 192.168.0.199, interface: nfsv0}"
WITH_ARM64 = spec_text(append=["firmware: {uefi: shim, arm64: grub}", DHCP])
WITHOUT_ARM64 = spec_text(append=["firmware: {uefi: shim}", DHCP])


def offered(cluster: Cluster, tmp_path: Path, arches: list[int]) -> dict[int, str]:
    """The boot file the generated dnsmasq offers a client of each architecture."""
    clients = [(f"52:54:00:aa:00:{n:02x}", arch) for n, arch in enumerate(arches)]
    return {arch: name for (_, arch), name in zip(clients, offered_to(cluster, tmp_path, clients), strict=True)}


def offered_to(
    cluster: Cluster, tmp_path: Path, clients: list[tuple[str, int]], address: str | None = None
) -> list[str]:
    """The boot file the generated dnsmasq offers each client (MAC, architecture), in order. With `address`
    the client has that address (as from the LAN's router) and asks the PXE port after the offer, as a UEFI
    client does from a proxy-DHCP server."""
    dnsmasq = require_program("dnsmasq")
    need(namespaces_usable(), "network namespaces need root and iproute2")
    (tftp := tmp_path / "tftp").mkdir()
    gateway = cluster.gateway.model_copy(update={"tftp_root": str(tftp)})
    (artifact,) = render_dnsmasq(cluster.model_copy(update={"gateway": gateway}))
    write_atomic(tmp_path / "dnsmasq.conf", artifact.data)
    log = tmp_path / "dnsmasq.log"
    found = []
    # Two namespaces joined by a veth pair: the client's in its own, because a packet arriving with a source
    # address of the same namespace is dropped as a martian.
    with network_sandbox("netns") as sandbox, network_sandbox("netns") as client:
        assert client.name is not None
        for ns, argv in (
            (sandbox, ["ip", "link", "add", "nfsv0", "type", "veth", "peer", "name", "nfsv1"]),
            (sandbox, ["ip", "link", "set", "nfsv1", "netns", client.name]),
            (sandbox, ["ip", "addr", "add", "192.168.0.254/24", "dev", "nfsv0"]),
            (sandbox, ["ip", "link", "set", "nfsv0", "up"]),
            (client, ["ip", "link", "set", "nfsv1", "up"]),
            *([(client, ["ip", "addr", "add", f"{address}/24", "dev", "nfsv1"])] if address else []),
        ):
            subprocess.run(ns.wrap(argv), check=True, timeout=30)
        daemon = Daemon(
            "dnsmasq",
            sandbox.wrap([
                dnsmasq, "--keep-in-foreground", f"--conf-file={tmp_path / 'dnsmasq.conf'}", "--port=0",
                "--user=root", "--group=root", f"--pid-file={tmp_path / 'pid'}", "--bind-interfaces",
                f"--dhcp-leasefile={tmp_path / 'leases'}", f"--log-facility={log}", "--log-dhcp",
            ]),
            tmp_path / "dnsmasq.out",
        ).start()  # fmt: skip
        try:
            assert wait_until(lambda: log.exists() and "TFTP root is" in log.read_text(), 15), daemon.log_tail()
            for mac, arch in clients:
                argv = client.wrap(
                    [sys.executable, str(CLIENT), "nfsv1", mac, str(arch), *([address] if address else [])]
                )
                found.append(
                    subprocess.run(argv, capture_output=True, text=True, check=True, timeout=60).stdout.strip()
                )
        finally:
            daemon.stop(timeout=10)
    return found


def test_each_architecture_gets_its_loader(tmp_path: Path) -> None:
    files = offered(parse(WITH_ARM64), tmp_path, [0, 7, 9, 11])
    assert files == {0: "pxelinux.0", 7: "shimx64.efi", 9: "shimx64.efi", 11: "grubaa64.efi"}


def test_arm64_gets_nothing_unless_asked(tmp_path: Path) -> None:
    # The check above can fail: without firmware.arm64 the same client is offered no boot file.
    files = offered(parse(WITHOUT_ARM64), tmp_path, [11, 7])
    assert files == {11: "", 7: "shimx64.efi"}


@pytest.mark.parametrize("spec", [WITH_ARM64])
def test_arm64_lines(spec: str) -> None:
    (artifact,) = render_dnsmasq(parse(spec))
    lines = artifact.data.decode().splitlines()
    assert "dhcp-boot=tag:arm64,grubaa64.efi" in lines
    (proxy,) = render_dnsmasq(parse(spec_text(append=["firmware: {arm64: grub}", "dhcp: {mode: proxy}"])))
    assert 'pxe-service=ARM64_EFI,"homelab",grubaa64.efi' in proxy.data.decode().splitlines()


# Two groups: the default boots UEFI through shim, control-plane through iPXE; the spec knows both MACs.
CONTROL_PLANE_MAC = "44:8a:5b:dd:d8:ba"
GROUP_LINES = ["firmware: {uefi: shim}", "groups: {control-plane: {firmware: {uefi: ipxe}}}"]
CONTROL_PLANE = {25: f'    - {{mac: "{CONTROL_PLANE_MAC}", group: control-plane}}'}
TWO_GROUPS = spec_text(replace=CONTROL_PLANE, append=[*GROUP_LINES, DHCP])
TWO_GROUPS_PROXY = spec_text(replace=CONTROL_PLANE, append=[*GROUP_LINES, "dhcp: {mode: proxy, interface: nfsv0}"])


def test_a_known_node_gets_its_groups_loader(tmp_path: Path) -> None:
    # The same architecture, three clients: the control-plane node, a known node of the default group, an
    # unknown node. Only the first is offered its group's loader.
    clients = [(CONTROL_PLANE_MAC, 7), ("00:23:24:94:34:ae", 7), ("52:54:00:aa:00:01", 7), (CONTROL_PLANE_MAC, 0)]
    files = offered_to(parse(TWO_GROUPS), tmp_path, clients)
    assert files == ["snponly.efi", "shimx64.efi", "shimx64.efi", "pxelinux.0"]


def test_a_known_node_gets_its_groups_loader_from_proxy_dhcp(tmp_path: Path) -> None:
    # Proxy mode: the offer carries no file for UEFI; the client asks the PXE port (4011), and pxe-service's
    # tags decide there. (BIOS clients are sent a menu instead, not followed here.)
    clients = [(CONTROL_PLANE_MAC, 7), ("00:23:24:94:34:ae", 7), ("52:54:00:aa:00:01", 7)]
    clients += [(CONTROL_PLANE_MAC, 9), ("52:54:00:aa:00:01", 9)]  # 9: the BC_EFI line (it got nothing without)
    files = offered_to(parse(TWO_GROUPS_PROXY), tmp_path, clients, address="192.168.0.50")
    assert files == ["snponly.efi", "shimx64.efi", "shimx64.efi", "snponly.efi", "shimx64.efi"]
