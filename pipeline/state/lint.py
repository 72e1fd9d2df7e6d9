"""Read-only root lint: paths a read-only Debian root commonly needs writable that the spec leaves read-only.

Takes plain sets of absolute paths (the spec's writable mount points and symlink sources), so it does not
depend on the model's exact shape. Given the client root it also looks at /etc/machine-id, whose three
states behave differently on a read-only /etc.
"""

from __future__ import annotations

import os
import re
import stat
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from pipeline.state.rootfs import TargetRoot

Severity = Literal["warning", "note"]


@dataclass(frozen=True, order=True)
class LintWarning:
    path: str
    severity: Severity
    message: str
    remedy: str

    def __str__(self) -> str:
        return f"{self.severity}: {self.path}: {self.message} (remedy: {self.remedy})"


# path, why it must be writable, remedy
NEEDS: tuple[tuple[str, str, str], ...] = (
    (
        "/etc/resolv.conf",
        "DHCP clients and systemd-resolved rewrite it at boot",
        "add symlinks: /etc/resolv.conf: /var/local/resolv.conf (or /run/systemd/resolve/stub-resolv.conf)",
    ),
    (
        "/etc/adjtime",
        "hwclock and systemd-timedated write the clock drift here",
        "add symlinks: /etc/adjtime: /var/local/adjtime",
    ),
    (
        "/var/log",
        "journald and every daemon log here; without it logs are lost or services fail",
        "add a writable mount for /var/log (per_node: true), or set journald Storage=volatile",
    ),
    ("/var/lib/dhcp", "dhclient keeps its leases here", "add a writable mount for /var/lib/dhcp (per_node: true)"),
    (
        "/var/lib/systemd/random-seed",
        "systemd-random-seed saves entropy across boots",
        "add symlinks: /var/lib/systemd/random-seed: /var/local/random-seed",
    ),
    (
        "/etc/ssh",
        "sshd needs per-node host keys (ssh_host_*_key); baked-in keys are shared by every node",
        "symlink /etc/ssh/ssh_host_*_key into /var/local and generate them at first boot, or mount /etc/ssh per node",
    ),
    ("/tmp", "programs expect a writable /tmp", "mount a tmpfs on /tmp (systemd tmp.mount) or a writable share"),
    ("/var/tmp", "programs expect a writable /var/tmp", "add a writable mount for /var/tmp (per_node: true)"),
)
MACHINE_ID = "/etc/machine-id"


def _under(path: str, base: str) -> bool:
    return path == base or path.startswith(base.rstrip("/") + "/")


def _covered(path: str, writable: set[str], links: set[str]) -> bool:
    if any(_under(path, m) for m in writable):
        return True
    if any(_under(path, s) for s in links):
        return True
    if path == "/etc/ssh":  # host keys symlinked one by one are enough
        return any(re.fullmatch(r"/etc/ssh/ssh_host_\w+_key(\.pub)?", s) for s in links)
    return False


def machine_id_state(target: Path, client_root: str) -> Literal["missing", "empty", "baked", "other"]:
    """How /etc/machine-id looks inside the client root, read without following symlinks out of the target."""
    with TargetRoot(target) as root, root.parent(client_root + MACHINE_ID) as found:
        if found is None:
            return "missing"
        try:
            st = os.stat(found[1], dir_fd=found[0], follow_symlinks=False)
        except FileNotFoundError:
            return "missing"
        if not stat.S_ISREG(st.st_mode):
            return "other"
        if st.st_size == 0:
            return "empty"
        fd = os.open(found[1], os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC, dir_fd=found[0])
        with os.fdopen(fd, "rb") as handle:
            text = handle.read(64).strip()
        return "baked" if re.fullmatch(rb"[0-9a-f]{32}", text) else "other"


def lint_readonly_root(
    writable: Iterable[str],
    symlink_sources: Iterable[str],
    target: Path | None = None,
    client_root: str | None = None,
) -> list[LintWarning]:
    """Warnings for commonly-written paths the spec leaves read-only, each with its remedy."""
    mounts, links = set(writable), set(symlink_sources)
    out = [
        LintWarning(path, "warning", f"read-only on every node: {why}", remedy)
        for path, why, remedy in NEEDS
        if not _covered(path, mounts, links)
    ]
    if not _covered(MACHINE_ID, mounts, links):
        state = machine_id_state(target, client_root) if target is not None and client_root else None
        remedy = (
            "add symlinks: /etc/machine-id: /var/local/machine-id (the boot script seeds it per node), "
            "or keep it empty to get a new id on every boot"
        )
        if state == "missing":
            out.append(
                LintWarning(
                    MACHINE_ID,
                    "warning",
                    "missing: systemd cannot create it on a read-only /etc and the boot fails",
                    remedy,
                )
            )
        elif state == "baked":
            out.append(
                LintWarning(
                    MACHINE_ID,
                    "warning",
                    "baked into the image: every node gets the same machine id (journal, DHCP DUID)",
                    remedy,
                )
            )
        elif state == "empty":
            out.append(
                LintWarning(
                    MACHINE_ID, "note", "empty: systemd uses a transient id, a different one on every boot", remedy
                )
            )
        else:
            out.append(
                LintWarning(
                    MACHINE_ID,
                    "note",
                    "read-only: missing breaks the boot, baked-in is shared by every node, "
                    "empty gives a new id per boot",
                    remedy,
                )
            )
    return sorted(out)
