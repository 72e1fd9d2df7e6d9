"""Nodes on a real LAN inside the test's network namespace, served by the generated dnsmasq.

Instead of QEMU's user network (its own DHCP and TFTP), the namespace gets a bridge holding the gateway's
address, one tap device per node on that bridge, and the dnsmasq configuration the pipeline generated as the
only DHCP and TFTP server; nfs-ganesha listens on the bridge address too (it binds the wildcard inside the
namespace). The namespace has no other interface, so nothing a node sends can leave it. Firmware:
SeaBIOS (QEMU's default, PXE through the NIC's iPXE ROM), or OVMF with and without Secure Boot, whose own
network stack does PXE (`romfile=`: QEMU's iPXE ROM is unsigned, and shim would then refuse GRUB).
"""

from __future__ import annotations

import ipaddress
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from pipeline.boottest.errors import BootPrerequisiteError, BootTestError
from pipeline.boottest.httpd import HttpServer
from pipeline.boottest.legacypxe import SecondStage, legacy_rom_config
from pipeline.boottest.proc import Daemon, NetworkSandbox, wait_until
from pipeline.boottest.target import BootNode
from pipeline.fsutil import write_atomic
from pipeline.run import run
from pipeline.spec.model import Cluster

OVMF_DIR = Path("/usr/share/OVMF")
# firmware name -> (code image, variable store template, Secure Boot); None: SeaBIOS.
FIRMWARE: dict[str, tuple[str, str, bool] | None] = {
    "seabios": None,
    "ovmf": ("OVMF_CODE_4M.fd", "OVMF_VARS_4M.fd", False),
    "ovmf-secureboot": ("OVMF_CODE_4M.secboot.fd", "OVMF_VARS_4M.ms.fd", True),  # Microsoft keys enrolled
}
BRIDGE = "nfsbr0"


@dataclass(frozen=True)
class LanSettings:
    firmware: str
    # The dnsmasq configuration for a TFTP root (the harness's TFTP directory): the generated one.
    dnsmasq_config: Callable[[Path], bytes]
    # The nginx server block for that root when iPXE fetches over HTTP (pipeline/boottest/httpd.py).
    http_config: Callable[[Path], bytes] | None = None
    # > 0: the NIC ROMs are answered as non-iPXE PXE ROMs until this many nodes fetched undionly.kpxe
    # (pipeline/boottest/legacypxe.py): the real chainload of undionly.kpxe.
    legacy_pxe_nodes: int = 0


def generated_dnsmasq(cluster: Cluster) -> Callable[[Path], bytes]:
    """The dnsmasq configuration the pipeline generates for `cluster`, for a given TFTP root (the harness's)
    and served on the test's bridge: only those two values differ from what the gateway gets."""
    if cluster.dhcp is None:
        raise BootTestError("the spec has no dhcp section: there is no generated dnsmasq to boot through")
    dhcp = cluster.dhcp.model_copy(update={"interface": BRIDGE})

    def config(tftp: Path) -> bytes:
        from pipeline.render.dnsmasq import render_dnsmasq

        gateway = cluster.gateway.model_copy(update={"tftp_root": str(tftp)})
        (artifact,) = render_dnsmasq(cluster.model_copy(update={"gateway": gateway, "dhcp": dhcp}))
        return artifact.data

    return config


def _dnsmasq() -> str:
    found = shutil.which("dnsmasq") or next((p for p in ("/usr/sbin/dnsmasq",) if Path(p).is_file()), None)
    if found is None:
        raise BootPrerequisiteError("dnsmasq not found: install dnsmasq-base")
    return found


class Lan:
    """The bridge, taps and dnsmasq of one boot run; `stop()` ends dnsmasq (the links go with the namespace)."""

    def __init__(
        self, settings: LanSettings, sandbox: NetworkSandbox, gateway: str, network: str, workdir: Path, tftp: Path
    ) -> None:
        if settings.firmware not in FIRMWARE:
            raise BootTestError(f"unknown firmware {settings.firmware!r}: one of {', '.join(FIRMWARE)}")
        if not sandbox.isolated:
            # Never on the host: a bridge and a DHCP server there would reach real networks.
            raise BootTestError("a bridged boot test needs its own network namespace (run as root)")
        self.settings = settings
        self.sandbox = sandbox
        self.gateway = gateway
        self.prefix = ipaddress.IPv4Network(network).prefixlen
        self.workdir = workdir
        self.tftp = tftp
        self.taps: dict[str, str] = {}
        workdir.mkdir(parents=True, exist_ok=True)
        conf = workdir / "dnsmasq.conf"
        self.log = workdir / "dnsmasq.log"
        generated = settings.dnsmasq_config(tftp)
        write_atomic(conf, generated)
        self.second_stage: SecondStage | None = None
        if settings.legacy_pxe_nodes:
            first = workdir / "dnsmasq-legacy-rom.conf"
            write_atomic(first, legacy_rom_config(generated))
            self.dnsmasq = self._daemon(first)
            self.second_stage = SecondStage(settings.legacy_pxe_nodes, self._log, lambda: self._restart(conf))
        else:
            self.dnsmasq = self._daemon(conf)
        config = settings.http_config
        self.http = HttpServer(config(tftp), sandbox, workdir / "http") if config else None

    def _daemon(self, conf: Path) -> Daemon:
        workdir = self.workdir
        return Daemon(
            "dnsmasq",
            self.sandbox.wrap([
                _dnsmasq(), "--keep-in-foreground", f"--conf-file={conf}", "--port=0", "--user=root", "--group=root",
                f"--pid-file={workdir / 'dnsmasq.pid'}", f"--dhcp-leasefile={workdir / 'dnsmasq.leases'}", f"--log-facility={self.log}",
                "--log-dhcp", "--bind-interfaces",
            ]),
            workdir / "dnsmasq.out",
        )  # fmt: skip

    def _restart(self, conf: Path) -> None:
        """dnsmasq again with `conf` (the leases file keeps each node's address)."""
        self.dnsmasq.stop(timeout=10)
        self.dnsmasq = self._daemon(conf)
        self.dnsmasq.start()

    def _ip(self, *args: str) -> None:
        run(self.sandbox.wrap(["ip", *args]), timeout=30)

    def start(self) -> None:
        self._ip("link", "add", BRIDGE, "type", "bridge")
        self._ip("addr", "add", f"{self.gateway}/{self.prefix}", "dev", BRIDGE)
        self._ip("link", "set", BRIDGE, "up")
        self.dnsmasq.start()
        started = wait_until(lambda: not self.dnsmasq.alive() or "TFTP root is" in self._log(), 15)
        if not self.dnsmasq.alive() or not started:
            raise BootTestError(f"dnsmasq did not start: {self.dnsmasq.log_tail(5)} {self._log()[-500:]}")
        if self.http is not None:
            self.http.start()  # after the bridge has the gateway address it listens on
        if self.second_stage is not None:
            self.second_stage.start()

    def _log(self) -> str:
        try:
            return self.log.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def stop(self) -> None:
        if self.http is not None:
            self.http.stop()
        try:
            if self.second_stage is not None:
                self.second_stage.stop()  # before dnsmasq: a restart must not start one after this
        finally:
            self.dnsmasq.stop(timeout=10)

    def tap_for(self, node: BootNode) -> str:
        name = self.taps.get(node.id)
        if name is None:
            name = f"nfstap{len(self.taps)}"
            self._ip("tuntap", "add", "dev", name, "mode", "tap")
            self._ip("link", "set", name, "master", BRIDGE)
            self._ip("link", "set", name, "up")
            self.taps[node.id] = name
        return name

    def qemu_argv(self, node: BootNode, serial_log: Path, accel: str, memory_mb: int) -> list[str]:
        firmware = FIRMWARE[self.settings.firmware]
        nic = f"virtio-net-pci,netdev=n0,mac={node.mac}"
        machine: list[str] = []
        if firmware is not None:
            code, template, secure = firmware
            for name in (code, template):
                if not (OVMF_DIR / name).is_file():
                    raise BootPrerequisiteError(f"{OVMF_DIR / name} not found: install ovmf")
            variables = serial_log.with_name(f"{node.id}.vars.fd")
            shutil.copyfile(OVMF_DIR / template, variables)  # each node writes its own variables
            machine = [
                "-machine", "q35,smm=on" if secure else "q35",
                *(["-global", "driver=cfi.pflash01,property=secure,value=on"] if secure else []),
                "-drive", f"if=pflash,format=raw,unit=0,readonly=on,file={OVMF_DIR / code}",
                "-drive", f"if=pflash,format=raw,unit=1,file={variables}",
            ]  # fmt: skip
            nic += ",romfile="
        return [
            "qemu-system-x86_64", "-name", f"nfsroot-{node.id}", "-nodefaults", "-no-user-config",
            "-accel", accel, "-m", str(memory_mb), "-smp", "1", *machine,
            "-display", "none", "-monitor", "none", "-serial", f"file:{serial_log}",
            "-no-reboot", "-boot", "n",
            "-netdev", f"tap,id=n0,ifname={self.tap_for(node)},script=no,downscript=no", "-device", nic,
        ]  # fmt: skip

    def log_text(self) -> str:
        """What dnsmasq logged about DHCP and TFTP (for a failed boot's diagnosis)."""
        return self._log()
