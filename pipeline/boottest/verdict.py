"""The verdict on one booted node: what the gateway's shares hold afterwards, and what the guest reported.

Gateway-side checks read the writable share's backing directory (what the boot script and the guest wrote
over NFS); guest-side checks read the report the client root's init printed on the serial console.
"""

from __future__ import annotations

import posixpath
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from pipeline.boottest.clientroot import MARKER_PREFIX, REPORT_BEGIN, REPORT_END, REPORT_PREFIX
from pipeline.boottest.target import BootNode, BootTarget


@dataclass(frozen=True)
class Check:
    name: str
    ok: bool
    detail: str = ""


@dataclass(frozen=True)
class GuestReport:
    values: Mapping[str, tuple[str, ...]]

    def first(self, key: str) -> str | None:
        found = self.values.get(key)
        return found[0] if found else None

    def all(self, key: str) -> tuple[str, ...]:
        return self.values.get(key, ())


@dataclass
class NodeResult:
    mac: str
    node_id: str
    hostname: str
    serial_log: Path
    failure: str | None = None  # why the boot itself failed (fail-fast diagnosis or timeout)
    checks: list[Check] = field(default_factory=list)
    timings: dict[str, float] = field(default_factory=dict)  # seconds since QEMU started
    report: GuestReport | None = None

    @property
    def ok(self) -> bool:
        return self.failure is None and bool(self.checks) and all(c.ok for c in self.checks)

    @property
    def failed_checks(self) -> list[Check]:
        return [c for c in self.checks if not c.ok]

    def summary(self) -> str:
        if self.failure:
            return self.failure
        bad = self.failed_checks
        return "; ".join(f"{c.name}: {c.detail}" for c in bad) if bad else "all checks passed"


def parse_report(serial: str) -> GuestReport | None:
    """The init's report: `nfsroot-boottest: key=value` lines between the begin and end markers."""
    start = serial.find(REPORT_BEGIN)
    if start < 0:
        return None
    end = serial.find(REPORT_END, start)
    body = serial[start : end if end >= 0 else len(serial)]
    values: dict[str, list[str]] = {}
    for line in body.splitlines():
        line = line.strip()
        if line.startswith(REPORT_PREFIX) and "=" in line:
            key, _, value = line[len(REPORT_PREFIX) :].partition("=")
            values.setdefault(key, []).append(value)
    return GuestReport({k: tuple(v) for k, v in values.items()}) if end >= 0 else None


def local_path(target: BootTarget, exports: Mapping[str, Path], gateway_path: str) -> Path | None:
    """The host directory behind a gateway path (inside one of the served shares)."""
    share = target.share_of(gateway_path)
    if share is None or share not in exports:
        return None
    rel = posixpath.relpath(gateway_path, share)
    return exports[share] if rel == "." else exports[share] / rel


def _read(path: Path | None) -> str | None:
    if path is None:
        return None
    try:
        return path.read_text(errors="replace")
    except OSError:
        return None


def gateway_checks(target: BootTarget, exports: Mapping[str, Path], node: BootNode) -> list[Check]:
    checks: list[Check] = []
    node_mount = target.node_dir_of(node)
    if node_mount is not None:
        node_dir = local_path(target, exports, node_mount.export_for(node.id))
        exists = node_dir is not None and node_dir.is_dir()
        checks.append(Check("node directory", exists, f"{node_mount.export_for(node.id)} was not created"))
        # The symlinked files the boot script generates, as the gateway sees them.
        for link, dest in sorted(target.symlinks.items()):
            if not (dest + "/").startswith(node_mount.mount.rstrip("/") + "/"):
                continue
            rel = posixpath.relpath(dest, node_mount.mount)
            text = _read(node_dir / rel if node_dir else None)
            name = f"{node_mount.export_for(node.id)}/{rel}"
            if posixpath.basename(link) == "hostname":
                ok = text is not None and text.strip() == node.hostname
                checks.append(Check(f"gateway {name}", ok, f"expected {node.hostname!r}, found {text!r}"))
            elif posixpath.basename(link) == "hosts":
                ok = text is not None and node.hostname in text.split()
                checks.append(Check(f"gateway {name}", ok, f"does not name {node.hostname}: {text!r}"))
        cmdline = _read(node_dir / target.cmdline_file if node_dir else None)
        ok = cmdline is not None and f"BOOTIF={node.bootif}" in cmdline and "nfsroot=" in cmdline
        name = f"{node_mount.export_for(node.id)}/{target.cmdline_file}"
        checks.append(Check(f"gateway {name}", ok, f"no BOOTIF={node.bootif} and nfsroot=: {cmdline!r}"))
    for w in target.writable_of(node):
        path = local_path(target, exports, w.export_for(node.id))
        marker = _read(path / f"{MARKER_PREFIX}{node.id}" if path else None)
        ok = marker is not None and f"hostname={node.hostname}" in marker
        checks.append(
            Check(f"gateway {w.export_for(node.id)}/{MARKER_PREFIX}{node.id}", ok, f"the node's write: {marker!r}")
        )
    return checks


def guest_checks(target: BootTarget, node: BootNode, report: GuestReport | None) -> list[Check]:
    if report is None:
        return [Check("guest report", False, "the client root's init printed no complete report")]
    checks = [Check("guest report", True)]
    hostname = report.first("hostname")
    checks.append(Check("guest hostname", hostname == node.hostname, f"expected {node.hostname!r}, got {hostname!r}"))
    mounts = {}
    for entry in report.all("mount"):
        parts = entry.split()
        if len(parts) >= 4:
            mounts[parts[0]] = parts[1:]
    root = mounts.get("/")
    want_root = f"{target.gateway}:{target.root_share}"
    ok = root is not None and root[0] == "nfs" and root[1] == want_root and "ro" in root[2].split(",")
    checks.append(Check("guest root", ok, f"expected {want_root} read-only over nfs, got {root}"))
    for w in target.writable_of(node):
        got = mounts.get(w.mount)
        want = f"{target.gateway}:{w.export_for(node.id)}"
        ok = got is not None and got[0] == "nfs" and got[1] == want and "rw" in got[2].split(",")
        checks.append(Check(f"guest mount {w.mount}", ok, f"expected {want} read-write over nfs, got {got}"))
        wrote = f"{w.mount.rstrip('/')}/{MARKER_PREFIX}{node.id}"
        checks.append(Check(f"guest write {w.mount}", wrote in report.all("wrote"), f"could not write {wrote}"))
    links: dict[str, str] = {}
    for entry in report.all("link"):
        name, _, rest = entry.partition(" -> ")
        links[name] = rest
    readable = set(report.all("link-readable"))
    for link, dest in sorted(target.symlinks.items()):
        resolved = links.get(link, "")
        ok = resolved == f"{dest} resolves {dest}" and link in readable
        checks.append(Check(f"guest symlink {link}", ok, f"expected -> {dest} (readable), got {resolved!r}"))
    return checks
