"""Boot tests through the generated dnsmasq: a bridge and tap devices in a network namespace the test makes,
the pipeline's dnsmasq configuration as the only DHCP and TFTP server, nfs-ganesha on the bridge address, two
QEMU (TCG) nodes per firmware path. Marked `boot` (slow); prerequisites missing: skipped locally, failed in CI.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from pipeline.boottest.harness import BootOptions, run_boottest
from pipeline.boottest.httpd import generated_http
from pipeline.boottest.lan import LanSettings, generated_dnsmasq
from pipeline.boottest.legacypxe import undionly_fetched_by
from pipeline.boottest.prereqs import installed_kernels, missing_prerequisites
from pipeline.boottest.proc import namespaces_usable
from pipeline.boottest.qemu import VmSettings
from pipeline.render.firmware import IPXE_SCRIPT, uses_ipxe
from pipeline.spec.load import load_cluster
from pipeline.spec.model import Cluster
from tests.prereq import need, require_program

pytestmark = pytest.mark.boot

REPO = Path(__file__).resolve().parents[1]
SPEC_TEMPLATE = REPO / "tests" / "boot" / "firmware.yaml"
MACS = ("52:54:00:f1:00:01", "52:54:00:f1:00:02")
HOSTNAMES = {"52:54:00:f1:00:01": "fw-525400f10001", "52:54:00:f1:00:02": "second-node"}
# (test id, QEMU firmware, firmware.bios, firmware.uefi, firmware.transport, NIC ROM answered as non-iPXE), in
# the priority order. The transport matters to iPXE only: pxelinux and Debian's signed GRUB (no http
# module) always use TFTP.
PATHS = [
    ("seabios-pxelinux", "seabios", "pxelinux", "none", "tftp", False),
    ("ovmf-grub", "ovmf", "pxelinux", "grub", "tftp", False),
    ("ovmf-secureboot-shim", "ovmf-secureboot", "pxelinux", "shim", "tftp", False),
    ("ovmf-ipxe", "ovmf", "pxelinux", "ipxe", "tftp", False),
    ("ovmf-ipxe-http", "ovmf", "pxelinux", "ipxe", "http", False),
    # QEMU's NIC ROM is iPXE already: dnsmasq hands it nfsroot.ipxe directly (user-class iPXE), so this runs
    # the iPXE script under SeaBIOS without chainloading undionly.kpxe...
    ("seabios-ipxe-script", "seabios", "ipxe", "none", "tftp", False),
    # ...and this one answers the ROM as a non-iPXE PXE ROM first (pipeline/boottest/legacypxe.py): the ROM
    # loads undionly.kpxe, whose own DHCP the generated configuration answers with nfsroot.ipxe (over HTTP).
    ("seabios-undionly-chainload", "seabios", "ipxe", "none", "http", True),
]


def build(tmp_path: Path, kver: str, bios: str, uefi: str, transport: str) -> tuple[Cluster, Path]:
    work = tmp_path / "build"
    work.mkdir()
    text = SPEC_TEMPLATE.read_text().replace("@KVER@", kver).replace("@BIOS@", bios).replace("@UEFI@", uefi)
    text = text.replace("@TRANSPORT@", transport)
    (work / "cluster.yaml").write_text(text)
    env = {**os.environ, "NFSROOT_SPEC": "cluster.yaml", "NFSROOT_BUILD": "build", "NFSROOT_GENERATED": "gen"}
    argv = [sys.executable, "-m", "doit", "-f", str(REPO / "pipeline" / "tasks.py"), "-d", str(work)]
    proc = subprocess.run([*argv, "--db-file", str(work / ".doit.db"), "build"], env=env, capture_output=True)
    assert proc.returncode == 0, proc.stdout.decode() + proc.stderr.decode()
    return load_cluster(work / "cluster.yaml")[0], work / "build"


@pytest.mark.parametrize(
    ("firmware", "bios", "uefi", "transport", "legacy_rom"), [p[1:] for p in PATHS], ids=[p[0] for p in PATHS]
)
def test_two_nodes_boot_through_the_generated_dnsmasq(
    firmware: str, bios: str, uefi: str, transport: str, legacy_rom: bool, tmp_path: Path
) -> None:
    missing = missing_prerequisites()
    need(not missing, "missing: " + "; ".join(missing))
    need(namespaces_usable(), "network namespaces need root and iproute2")
    require_program("dnsmasq")
    need(Path("/dev/net/tun").exists(), "/dev/net/tun is missing (tap devices)")
    kver = installed_kernels()[-1]
    if transport == "http":
        require_program("nginx")
    cluster, built = build(tmp_path, kver, bios, uefi, transport)
    lan = LanSettings(firmware, generated_dnsmasq(cluster), generated_http(cluster), len(MACS) if legacy_rom else 0)
    # The chainload adds a DHCP round and undionly.kpxe's load before the kernel's first line (and a loaded
    # machine stretches it): 90 s of silence is not yet a failure there.
    vm = VmSettings(silent_limit=180.0) if legacy_rom else VmSettings()
    options = BootOptions(lan=lan, vm=vm)
    start = time.monotonic()
    run = run_boottest(built, cluster, MACS, workdir=tmp_path / "work", options=options)
    wall = time.monotonic() - start
    details = "\n".join(f"{r.mac}: {r.summary()} (log {r.serial_log})" for r in run.results)
    lan_log = tmp_path / "work" / "lan" / "dnsmasq.log"
    assert run.ok, details + "\n" + (lan_log.read_text()[-3000:] if lan_log.exists() else "no dnsmasq log")
    print(f"{firmware}/{bios}/{uefi}/{transport}: {wall:.1f}s wall, " + "; ".join(
        f"{r.mac} " + " ".join(f"{k}={v}" for k, v in r.timings.items()) for r in run.results
    ))  # fmt: skip
    log = lan_log.read_text()
    for r in run.results:
        # The generated dnsmasq, not QEMU's, gave the node its address and its files.
        assert "DHCPACK(nfsbr0)" in log and r.mac in log
        node_dir = run.workdir / "shares" / "workers" / r.node_id
        assert (node_dir / "hostname").read_text().strip() == HOSTNAMES[r.mac]
        cmdline = (node_dir / "cmdline").read_text()
        assert f"BOOTIF=01-{r.mac.replace(':', '-')}" in cmdline and "nfsroot=192.168.77.1:/clients,ro" in cmdline
        serial = r.serial_log.read_text(errors="replace")
        if firmware == "ovmf-secureboot":
            assert "Secure boot enabled" in serial, "the kernel did not report Secure Boot on"
        else:
            assert "Secure boot enabled" not in serial
    assert "192.168.77.11" in log  # the fixed address of the first node (dhcp-host)
    assert_transport(transport, uses_ipxe(cluster), log, tmp_path / "work" / "lan" / "http" / "access.log")
    assert_chainload(legacy_rom, log)


def assert_chainload(legacy_rom: bool, log: str) -> None:
    """undionly.kpxe was fetched by both nodes (then they ran the script), or by none."""
    fetched = undionly_fetched_by(log)
    if not legacy_rom:
        assert not fetched, f"undionly.kpxe was sent to {fetched}"
        return
    assert len(fetched) == 2 and "192.168.77.11" in fetched, fetched
    script = [line for line in log.splitlines() if "dnsmasq-tftp" in line and f"/{IPXE_SCRIPT} to " in line]
    assert {line.rsplit(" ", 1)[1] for line in script} == fetched, script
    # Each node fetched the script after undionly.kpxe: iPXE ran from the file we installed, not the ROM.
    for address in fetched:
        first_undionly = log.index(f"undionly.kpxe to {address}\n")
        assert log.find(f"/{IPXE_SCRIPT} to {address}\n", first_undionly) > first_undionly


def assert_transport(transport: str, ipxe: bool, dnsmasq_log: str, access_log: Path) -> None:
    """Where each node's kernel and initrds came from: dnsmasq's TFTP log, or nginx's access log."""
    tftp_sent = [line for line in dnsmasq_log.splitlines() if "dnsmasq-tftp" in line and " sent " in line]
    kernels_by_tftp = [line for line in tftp_sent if "/boot/vmlinuz-" in line]
    if transport == "tftp" or not ipxe:
        assert kernels_by_tftp, "no kernel was sent over TFTP"
        assert not access_log.exists()
        return
    # The loader and the script came over TFTP (the firmware's PXE stage); the kernel and initrds did not.
    assert any(line.endswith(f"{IPXE_SCRIPT} to 192.168.77.11") for line in tftp_sent), tftp_sent
    assert not kernels_by_tftp and not any("nfsroot-" in line for line in tftp_sent), tftp_sent
    requests = access_log.read_text().splitlines()
    ok = [line for line in requests if '" 200 ' in line]
    clients = {line.split()[0] for line in ok if '"GET /boot/vmlinuz-' in line}
    assert len(clients) == 2 and "192.168.77.11" in clients, requests  # both nodes, the first at its fixed address
    for client in clients:
        for part in ('"GET /boot/vmlinuz-', '"GET /boot/initrd.img-', '"GET /nfsroot-'):
            assert any(line.startswith(f"{client} ") and part in line for line in ok), f"{client}: no {part}"
