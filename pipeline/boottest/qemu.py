"""Boot nodes in QEMU (software emulation by default) and watch their serial consoles.

Each node is one QEMU process with its own user-mode network (QEMU's built-in DHCP and TFTP; the gateway
address maps to the host's loopback) and a virtio NIC with the node's MAC, PXE-booted by iPXE's option ROM.
The serial log is read while the node boots: milestones give the timings, and known dead ends (a kernel
panic, an NFS root mount that keeps failing, the initramfs rescue shell) stop the VM at once with a
diagnosis instead of waiting for the timeout.
"""

from __future__ import annotations

import contextlib
import re
import shutil
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from pipeline.boottest.clientroot import REPORT_BEGIN, REPORT_END
from pipeline.boottest.errors import BootPrerequisiteError, BootTestError
from pipeline.boottest.proc import Daemon, NetworkSandbox
from pipeline.boottest.target import BootNode

QEMU = "qemu-system-x86_64"
NIC_ROM = Path("/usr/lib/ipxe/qemu/efi-virtio.rom")

# (milestone, text that marks it), in boot order. PXE and TFTP print nothing on the serial port, so the
# kernel's banner closes the firmware + download phase.
MILESTONES = (
    ("kernel", "Linux version"),
    ("nfs_root", "Begin: Running /scripts/nfs-bottom"),
    ("init_bottom", "Begin: Running /scripts/init-bottom"),
    ("init", REPORT_BEGIN),
    ("report", REPORT_END),
)
NFS_RETRY = "Retrying nfs mount"
NFS_RETRIES_BEFORE_GIVING_UP = 3
POWEROFF_GRACE = 30.0
# PXE plus the TFTP download of kernel and initrds takes about 10 s under TCG; a node still silent long
# after that never found pxelinux, its files or its console.
SILENT_LIMIT = 90.0


@dataclass(frozen=True)
class VmSettings:
    accel: str = "tcg"
    memory_mb: int = 768
    timeout: float = 240.0  # seconds per node, from QEMU's start to its exit
    # Seconds of silence on the serial console before a node is given up (a chainload adds a DHCP round).
    silent_limit: float = SILENT_LIMIT


def _opt(value: str) -> str:
    """QEMU option values escape a comma by doubling it."""
    return value.replace(",", ",,")


def qemu_argv(node: BootNode, tftp: Path, serial_log: Path, gateway: str, network: str, vm: VmSettings) -> list[str]:
    # Not ipv6=off: with it, iPXE's boot reached pxelinux 13 s later (5.5 s -> 18.4 s, measured here).
    netdev = f"user,id=n0,net={network},host={gateway},tftp={_opt(str(tftp))},bootfile=pxelinux.0"
    # QEMU finds the NIC's iPXE ROM itself; naming it with romfile= left nodes silent in trials here.
    nic = f"virtio-net-pci,netdev=n0,mac={node.mac}"
    return [
        QEMU, "-name", f"nfsroot-{node.id}", "-nodefaults", "-no-user-config",
        "-accel", vm.accel, "-m", str(vm.memory_mb), "-smp", "1",
        "-display", "none", "-monitor", "none", "-serial", f"file:{serial_log}",
        "-no-reboot", "-boot", "n",
        "-netdev", netdev, "-device", nic,
    ]  # fmt: skip


def check_qemu() -> None:
    if shutil.which(QEMU) is None:
        raise BootPrerequisiteError(f"{QEMU} not found: install qemu-system-x86")
    if not NIC_ROM.is_file():
        raise BootPrerequisiteError(f"{NIC_ROM} not found: install ipxe-qemu (the virtio NIC's PXE ROM)")


def _context(lines: Sequence[str], index: int, before: int = 3) -> str:
    picked = [ln.strip() for ln in lines[max(0, index - before) : index + 1] if ln.strip()]
    return " | ".join(picked)


def diagnose(text: str) -> str | None:
    """Why this serial log shows a boot that cannot succeed any more, or None."""
    lines = text.splitlines()
    retries = 0
    for i, line in enumerate(lines):
        if "Kernel panic - not syncing" in line:
            return "kernel panic: " + line.split("not syncing:", 1)[-1].strip()
        if "Rebooting automatically due to panic=" in line or "Halting automatically due to panic=" in line:
            return "the initramfs gave up: " + _context(lines, i - 1)
        if NFS_RETRY in line:
            retries += 1
            if retries >= NFS_RETRIES_BEFORE_GIVING_UP:
                errors = [ln.strip() for ln in lines[:i] if re.search(r"nfsmount|[Mm]ount|[Pp]ortmap|RPC", ln)]
                detail = " | ".join(dict.fromkeys(errors[-3:])) or "no error printed"
                return f"the NFS root mount keeps failing ({retries} retries): {detail}"
        if re.match(r"^\(initramfs\)", line.strip()):
            return "the initramfs dropped to its rescue shell: " + _context(lines, i - 1)
    return None


@dataclass
class VmRun:
    node: BootNode
    serial_log: Path
    daemon: Daemon
    started: float = 0.0
    milestones: dict[str, float] = field(default_factory=dict)
    failure: str | None = None
    finished: float | None = None
    _text: str = ""

    @property
    def text(self) -> str:
        return self._text

    def _read(self) -> None:
        with contextlib.suppress(FileNotFoundError):
            self._text = self.serial_log.read_bytes().decode(errors="replace")
        now = time.monotonic() - self.started
        for name, marker in MILESTONES:
            if name not in self.milestones and marker in self._text:
                self.milestones[name] = round(now, 1)

    def _finish(self, failure: str | None) -> None:
        if failure and self.failure is None:
            self.failure = failure
        self.daemon.stop(timeout=5)
        self._read()
        self.finished = round(time.monotonic() - self.started, 1)

    def poll(self, timeout: float, silent_limit: float = SILENT_LIMIT) -> bool:
        """Advance this VM; True once it is over (exited, or stopped with a failure)."""
        if self.finished is not None:
            return True
        self._read()
        elapsed = time.monotonic() - self.started
        if not self.daemon.alive():
            code = self.daemon.returncode()
            self._read()  # what the guest printed before it went away explains why
            if code != 0:
                failure: str | None = f"QEMU exited with status {code}: {self.daemon.log_tail(3)}"
            elif "report" not in self.milestones:
                failure = diagnose(self._text) or f"the node powered off or reset early ({self._reached()})"
            else:
                failure = None
            self._finish(failure)
            return True
        problem = diagnose(self._text)
        if problem:
            self._finish(problem)
            return True
        if "report" in self.milestones and elapsed - self.milestones["report"] > POWEROFF_GRACE:
            self._finish(None)  # the guest reported; a slow poweroff is not the test's business
            return True
        if not self._text and elapsed > min(silent_limit, timeout):
            self._finish(
                f"nothing on the serial console after {elapsed:.0f}s: PXE/TFTP, pxelinux.cfg or the kernel's "
                "start failed"
            )
            return True
        if elapsed > timeout:
            self._finish(f"timed out after {timeout:.0f}s ({self._reached()})")
            return True
        return False

    def _reached(self) -> str:
        if not self.milestones:
            return "nothing on the serial console: PXE/TFTP or the kernel's start failed"
        return "last milestone: " + [name for name, _ in MILESTONES if name in self.milestones][-1]

    def stop(self, reason: str) -> None:
        if self.finished is None:
            self._finish(reason)


@contextlib.contextmanager
def running_vms(
    nodes: Sequence[BootNode],
    tftp: Path,
    logs: Path,
    sandbox: NetworkSandbox,
    gateway: str,
    network: str,
    vm: VmSettings,
    argv_for: Callable[[BootNode, Path], list[str]] | None = None,
) -> Iterator[list[VmRun]]:
    """Start one VM per node; every VM still running is stopped when the block ends, however it ends.
    `argv_for(node, serial_log)` replaces the user-network command line (the bridged LAN: lan.py)."""
    check_qemu()
    runs: list[VmRun] = []
    try:
        for node in nodes:
            log = logs / f"{node.id}.serial.log"
            log.unlink(missing_ok=True)
            command = argv_for(node, log) if argv_for else qemu_argv(node, tftp, log, gateway, network, vm)
            argv = sandbox.wrap(command)
            daemon = Daemon(f"qemu {node.mac}", argv, logs / f"{node.id}.qemu.log")
            runs.append(VmRun(node, log, daemon))
            daemon.start()
            runs[-1].started = time.monotonic()
        yield runs
    finally:
        for run in runs:
            run.stop("interrupted")


def watch(
    runs: Sequence[VmRun], vm: VmSettings, health: Callable[[], str | None] | None = None, interval: float = 0.5
) -> None:
    """Poll `runs` until every one is over; `health` is asked now and then whether the server still serves."""
    if not runs:
        raise BootTestError("no nodes to boot")
    last_health = time.monotonic()
    while True:
        pending = [r for r in runs if not r.poll(vm.timeout, vm.silent_limit)]
        if not pending:
            return
        if health is not None and time.monotonic() - last_health > 5:
            last_health = time.monotonic()
            problem = health()
            if problem:
                for r in pending:
                    r.stop(f"NFS server failed during the boot: {problem}")
                return
        time.sleep(interval)
