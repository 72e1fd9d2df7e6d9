"""Long-running helper processes (rpcbind, ganesha, QEMU) and the network namespace they share.

`pipeline.run.run` is for commands that finish; daemons and virtual machines need a handle that can be
polled and stopped, so they are started here instead, still from argv lists. Every process is stopped
by the pid it was started with (never by name), first politely, then with SIGKILL after a bound.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import shlex
import shutil
import signal
import subprocess
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from pipeline.boottest.errors import BootPrerequisiteError
from pipeline.run import run

PR_SET_PDEATHSIG = 1


def _die_with_parent() -> None:
    """In the child before exec: get SIGTERM if the harness dies without stopping it (even by SIGKILL)."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, int(signal.SIGTERM))


@dataclass
class Daemon:
    """One started process whose output goes to `log`."""

    name: str
    argv: list[str]
    log: Path
    process: subprocess.Popen[bytes] | None = field(default=None, repr=False)

    def start(self) -> Daemon:
        self.log.parent.mkdir(parents=True, exist_ok=True)
        with open(self.log, "ab") as out:
            try:
                # A session of its own keeps Ctrl-C in the terminal from reaching it before the harness
                # has had a chance to stop it in order (ganesha before rpcbind).
                self.process = subprocess.Popen(
                    self.argv, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                    start_new_session=True, preexec_fn=_die_with_parent,
                )  # fmt: skip
            except FileNotFoundError as exc:
                raise BootPrerequisiteError(f"{self.name}: command not found: {shlex.join(self.argv)}") from exc
        return self

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process else None

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def returncode(self) -> int | None:
        return self.process.poll() if self.process else None

    def stop(self, timeout: float = 15.0) -> int | None:
        """SIGTERM, wait up to `timeout`, then SIGKILL; returns the exit status."""
        proc = self.process
        if proc is None:
            return None
        if proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    proc.kill()
                proc.wait(timeout=10)
        return proc.returncode

    def log_tail(self, lines: int = 20) -> str:
        try:
            text = self.log.read_text(errors="replace")
        except FileNotFoundError:
            return ""
        return "\n".join(text.splitlines()[-lines:])


class NetworkSandbox:
    """Where the harness's servers and VMs run: a private network namespace, or the host's loopback.

    In a namespace that holds nothing but `lo`, rpcbind's wildcard sockets and every connection QEMU's
    user-mode network makes on a guest's behalf can only reach loopback, whatever the guest tries.
    """

    def __init__(self, name: str | None) -> None:
        self.name = name

    @property
    def isolated(self) -> bool:
        return self.name is not None

    def wrap(self, argv: Sequence[str | Path]) -> list[str]:
        args = [str(a) for a in argv]
        return ["ip", "netns", "exec", self.name, *args] if self.name else args

    def describe(self) -> str:
        return f"network namespace {self.name} (loopback only)" if self.name else "the host's loopback"


def namespaces_usable() -> bool:
    return os.geteuid() == 0 and shutil.which("ip") is not None


NETNS_PREFIX = "nfsroot-boottest-"


def sweep_stale_namespaces(netns_dir: Path = Path("/run/netns")) -> list[str]:
    """Delete the namespaces of boot tests whose process is gone (a SIGKILLed run cannot clean up after
    itself); returns their names. A name whose pid is alive, or that is not ours, is left alone."""
    removed: list[str] = []
    try:
        names = sorted(os.listdir(netns_dir))
    except OSError:
        return removed
    for name in names:
        pid = name.removeprefix(NETNS_PREFIX).split("-", 1)[0]
        if name.startswith(NETNS_PREFIX) and pid.isascii() and pid.isdigit() and not Path(f"/proc/{pid}").exists():
            run(["ip", "netns", "delete", name], check=False, timeout=30)
            removed.append(name)
    return removed


@contextlib.contextmanager
def network_sandbox(mode: str = "auto") -> Iterator[NetworkSandbox]:
    """`mode`: "netns" (required), "host" (no namespace) or "auto" (a namespace when root can make one)."""
    if mode not in ("auto", "netns", "host"):
        raise ValueError(f"unknown network mode {mode!r}")
    if mode == "host" or (mode == "auto" and not namespaces_usable()):
        yield NetworkSandbox(None)
        return
    sweep_stale_namespaces()
    name = f"{NETNS_PREFIX}{os.getpid()}-{uuid.uuid4().hex[:6]}"
    try:
        run(["ip", "netns", "add", name], timeout=30)
    except Exception as exc:
        if mode == "netns":
            raise BootPrerequisiteError(f"cannot create a network namespace: {exc}") from exc
        yield NetworkSandbox(None)
        return
    try:
        run(["ip", "netns", "exec", name, "ip", "link", "set", "lo", "up"], timeout=30)
        yield NetworkSandbox(name)
    finally:
        run(["ip", "netns", "delete", name], check=False, timeout=30)


def wait_until(predicate: Callable[[], object], timeout: float, interval: float = 0.25) -> bool:
    """Poll `predicate()` until it is true or `timeout` seconds pass."""
    deadline = time.monotonic() + timeout
    while True:
        if predicate():
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(interval)
