"""A NIC whose PXE ROM is not iPXE, for the undionly.kpxe chainload: the first DHCP stage of each node.

QEMU's NIC ROMs are all iPXE, which announce themselves (user-class iPXE, option 175) exactly as the
undionly.kpxe they chainload does: the same options, byte for byte (captured on the test bridge). The
generated dnsmasq therefore rightly hands the ROM the iPXE script, and undionly.kpxe never loads. To make the
chainload real, dnsmasq first runs the generated configuration without the two lines that recognise iPXE,
so the ROM is answered as an Intel or Realtek PXE ROM would be (`undionly.kpxe`); once every node has fetched
undionly.kpxe over TFTP, dnsmasq is restarted with the generated configuration unchanged, and the DHCP of
the undionly.kpxe now running on each node gets `nfsroot.ipxe` (a node whose undionly asked before the
restart is handed undionly.kpxe again and asks again about 20 s later).
"""

from __future__ import annotations

import re
import threading
from collections.abc import Callable

from pipeline.boottest.errors import BootTestError

# The generated configuration's iPXE recognition (templates/dnsmasq.conf.j2).
IPXE_LINES = (b"dhcp-match=set:ipxe,175\n", b"dhcp-userclass=set:ipxe,iPXE\n")
_SENT = re.compile(r"dnsmasq-tftp\[\d+\]: sent \S*/undionly\.kpxe to (\S+)")


def legacy_rom_config(generated: bytes) -> bytes:
    """The generated configuration as a non-iPXE PXE ROM sees it: without the lines that tag iPXE."""
    for line in IPXE_LINES:
        if line not in generated:
            raise BootTestError(f"the generated dnsmasq configuration has no {line.decode().strip()!r} line")
        generated = generated.replace(line, b"")
    return generated


def undionly_fetched_by(log: str) -> set[str]:
    """The addresses dnsmasq sent undionly.kpxe to."""
    return set(_SENT.findall(log))


class SecondStage:
    """Watches dnsmasq's log; once `nodes` clients fetched undionly.kpxe, calls `restart` once."""

    def __init__(self, nodes: int, read_log: Callable[[], str], restart: Callable[[], None]) -> None:
        self.nodes = nodes
        self.read_log = read_log
        self.restart = restart
        self.done = threading.Event()
        self.stopping = threading.Event()
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._watch, name="legacy-pxe", daemon=True)

    def start(self) -> None:
        self.thread.start()

    def _watch(self) -> None:
        while not self.stopping.wait(0.2):
            if len(undionly_fetched_by(self.read_log())) >= self.nodes:
                try:
                    self.restart()
                except BaseException as exc:  # reported by stop(): a thread cannot raise into the test
                    self.error = exc
                self.done.set()
                # Daemons die with the thread that started them (PR_SET_PDEATHSIG follows the forking
                # thread, not the process): this one must outlive the dnsmasq it started, until stop().
                self.stopping.wait()
                return

    def stop(self) -> None:
        self.stopping.set()
        self.thread.join(timeout=30)
        if self.error is not None:
            raise BootTestError(f"restarting dnsmasq with the generated configuration failed: {self.error}")
