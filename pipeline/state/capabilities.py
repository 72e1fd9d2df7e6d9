"""Capabilities audit: NFS never carries `security.capability` xattrs, so on an NFS root ping loses cap_net_raw.

`scan_capabilities` finds the files of the client root that rely on file capabilities; `capability_changes`
turns the remedy chosen in cluster.yaml (deploy.capabilities) into extra plan Changes:
`setuid` (chmod u+s on each such binary), `ping_group_range` (a sysctl.d file in the client root letting
every group open ICMP echo sockets), or `none`.
"""

from __future__ import annotations

import errno
import hashlib
import os
import stat
import struct
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Literal, get_args

from pipeline.errors import PipelineError
from pipeline.state.changes import Change
from pipeline.state.manifest import check_gateway_path
from pipeline.state.observe import observe_path
from pipeline.state.rootfs import TargetRoot, split_path

Remedy = Literal["setuid", "ping_group_range", "none"]
REMEDIES: tuple[str, ...] = get_args(Remedy)
XATTR = "security.capability"
SYSCTL_FILE = "/etc/sysctl.d/60-nfsroot-ping.conf"
SYSCTL_TEXT = (
    "# Written by nfsroot-pipeline (deploy.capabilities: ping_group_range).\n"
    "# NFS does not carry security.capability xattrs, so ping has no cap_net_raw on an NFS root;\n"
    "# unprivileged ICMP echo sockets for every group make it work without them.\n"
    "net.ipv4.ping_group_range = 0 2147483647\n"
)
_FIELDS = ("deploy.capabilities",)
# Linux capability numbers (include/uapi/linux/capability.h).
CAP_NAMES = (
    "chown dac_override dac_read_search fowner fsetid kill setgid setuid setpcap linux_immutable "
    "net_bind_service net_broadcast net_admin net_raw ipc_lock ipc_owner sys_module sys_rawio sys_chroot "
    "sys_ptrace sys_pacct sys_admin sys_boot sys_nice sys_resource sys_time sys_tty_config mknod lease "
    "audit_write audit_control setfcap mac_override mac_admin syslog wake_alarm block_suspend audit_read "
    "perfmon bpf checkpoint_restore"
).split()
CAP_NET_RAW = 13


class CapabilityError(PipelineError):
    """The audit cannot run as asked (unknown remedy, client root missing)."""


@dataclass(frozen=True)
class CapFinding:
    path: str  # gateway path
    caps: str  # getcap-style text, e.g. "cap_net_raw=ep"
    permitted: int  # bitmask
    mode: int
    uid: int


def decode_caps(raw: bytes) -> tuple[int, int, bool]:
    """(permitted, inheritable, effective) from a vfs_cap_data xattr value (revisions 1-3)."""
    if len(raw) < 12:
        raise ValueError("short security.capability value")
    magic, p0, i0 = struct.unpack_from("<III", raw)
    p1 = i1 = 0
    if (magic & 0xFF000000) in (0x02000000, 0x03000000) and len(raw) >= 20:
        p1, i1 = struct.unpack_from("<II", raw, 12)
    return p0 | (p1 << 32), i0 | (i1 << 32), bool(magic & 1)


def _names(mask: int) -> str:
    return ",".join(f"cap_{CAP_NAMES[n]}" if n < len(CAP_NAMES) else f"cap_{n}" for n in range(64) if mask >> n & 1)


def format_caps(permitted: int, inheritable: int, effective: bool) -> str:
    parts = []
    if permitted:
        parts.append(f"{_names(permitted)}={'e' if effective else ''}p")
    if inheritable:
        parts.append(f"{_names(inheritable)}=i")
    return " ".join(parts) or "="


def scan_capabilities(target: Path, client_root: str) -> list[CapFinding]:
    """Files below `client_root` (a gateway path) carrying a security.capability xattr, sorted by path.

    Symlinks are never followed and other filesystems mounted inside are not entered.
    """
    check_gateway_path(client_root)
    findings: list[CapFinding] = []
    with TargetRoot(target) as root:
        opened = root.open_dir(split_path(client_root))
        if opened is None:
            raise CapabilityError(f"client root {client_root} does not exist in the target {target}")
        fd, _ = opened
        try:
            _scan(fd, client_root, os.fstat(fd).st_dev, findings)
        finally:
            os.close(fd)
    return sorted(findings, key=lambda f: f.path)


@dataclass
class _Open:
    """A directory being walked: its descriptor stays open until every subdirectory has been opened from it."""

    fd: int
    path: str
    pending: int = 0


def _scan(dirfd: int, where: str, dev: int, out: list[CapFinding]) -> None:
    """Walk the tree under `dirfd` with an explicit stack, never recursion: a client root may hold a chain
    of directories deeper than Python's recursion limit (issue 12 defect 8). A descriptor is closed as soon
    as its last subdirectory is opened, so a deep chain holds one or two at a time, whatever its depth."""
    stack: list[tuple[_Open, str]] = []
    current: _Open | None = _Open(os.dup(dirfd), where)
    while current is not None or stack:
        if current is None:
            parent, name = stack.pop()
            try:
                sub = os.open(name, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=parent.fd)
            except OSError:
                sub = -1  # unreadable or swapped for a symlink: not ours to judge
            finally:
                parent.pending -= 1
                if parent.pending == 0:
                    os.close(parent.fd)
            if sub >= 0:
                current = _Open(sub, f"{parent.path}/{name}")
            continue
        try:
            subdirs = _scan_one(current.fd, current.path, dev, out)
        except BaseException:
            os.close(current.fd)
            for parent, _ in stack:
                if parent.pending > 0:
                    parent.pending = 0
                    os.close(parent.fd)
            raise
        current.pending = len(subdirs)
        if subdirs:
            stack.extend((current, name) for name in reversed(subdirs))
        else:
            os.close(current.fd)
        current = None


def _scan_one(dirfd: int, where: str, dev: int, out: list[CapFinding]) -> list[str]:
    """Record the capability files directly in one directory; returns its subdirectories on the same device."""
    with os.scandir(dirfd) as it:
        entries = sorted((e.name, e.stat(follow_symlinks=False)) for e in it)
    subdirs: list[str] = []
    for name, st in entries:
        path = f"{where}/{name}"
        if stat.S_ISDIR(st.st_mode) and st.st_dev == dev:
            subdirs.append(name)
        elif stat.S_ISREG(st.st_mode):
            try:
                # The magic /proc link pins the directory we hold; the leaf itself is not followed.
                raw = os.getxattr(f"/proc/self/fd/{dirfd}/{name}", XATTR, follow_symlinks=False)
            except OSError as exc:
                if exc.errno in (errno.ENODATA, errno.ENOTSUP, errno.ENOENT):
                    continue
                raise
            try:
                permitted, inheritable, effective = decode_caps(raw)
            except ValueError:
                permitted, inheritable, effective = 0, 0, False
            caps = format_caps(permitted, inheritable, effective)
            out.append(CapFinding(path, caps, permitted, stat.S_IMODE(st.st_mode), st.st_uid))
    return subdirs


def _exists(target: Path, client_root: str) -> bool:
    if not target.is_dir():
        return False
    with TargetRoot(target) as root:
        opened = root.open_dir(split_path(client_root))
    if opened is None:
        return False
    os.close(opened[0])
    return True


def capability_changes(target: Path, client_root: str, remedy: str) -> list[Change]:
    """Extra plan Changes carrying out `remedy` for what `scan_capabilities` finds (none if nothing needs it)."""
    if remedy not in REMEDIES:
        raise CapabilityError(f"deploy.capabilities: unknown remedy {remedy!r} (choose one of {', '.join(REMEDIES)})")
    if remedy == "none" or not _exists(target, client_root):
        return []  # nothing deployed into the client root yet, so nothing relies on capabilities there
    findings = scan_capabilities(target, client_root)
    changes: list[Change] = []
    with TargetRoot(target) as root:
        if remedy == "setuid":
            for f in findings:
                if f.mode & stat.S_ISUID:
                    continue
                note = "" if f.uid == 0 else f" (owner uid {f.uid}, not root: setuid will not grant capabilities)"
                fact = observe_path(root, f.path)
                changes.append(
                    Change(
                        "chmod",
                        f.path,
                        "file",
                        f"{f.caps} is lost over NFS; remedy setuid{note}; from deploy.capabilities{fact.link_note}",
                        "capabilities",
                        _FIELDS,
                        old=fact.fingerprint,
                        mode=f.mode | stat.S_ISUID,
                        old_mode=f.mode,
                    )
                )
            return changes
        needy = [f.path for f in findings if f.permitted >> CAP_NET_RAW & 1]
        if not needy:
            return []
        path = client_root + SYSCTL_FILE
        fact = observe_path(root, path)
        if fact.kind == "file" and fact.text == SYSCTL_TEXT and fact.mode == 0o644:
            return []
        base = Change(
            "create",
            path,
            "file",
            f"cap_net_raw is lost over NFS ({', '.join(needy)}); remedy ping_group_range; from deploy.capabilities",
            "sysctl",
            _FIELDS,
            old=fact.fingerprint,
            mode=0o644,
            old_mode=fact.mode,
            sha256=hashlib.sha256(SYSCTL_TEXT.encode()).hexdigest(),
            content=SYSCTL_TEXT,
        )
        if fact.kind == "missing":
            return [base]
        if fact.kind == "file" and fact.text == SYSCTL_TEXT:
            return [replace(base, op="chmod")]
        return [replace(base, op="update" if fact.kind == "file" else "replace", backup=True)]
