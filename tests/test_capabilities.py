"""Capabilities audit with real security.capability xattrs (setcap from libcap2-bin) and both remedies."""

from __future__ import annotations

import stat
import subprocess
from pathlib import Path

import pytest

from pipeline.state.apply import ApplyOptions
from pipeline.state.capabilities import (
    SYSCTL_FILE,
    SYSCTL_TEXT,
    CapabilityError,
    capability_changes,
    decode_caps,
    format_caps,
    scan_capabilities,
)
from pipeline.state.deploy import DEFAULT_PLAN_OPTIONS, apply_target
from tests.deploy_helpers import F, L, make_build, make_tree, plan_for, require_tool
from tests.prereq import need


def _setcap(path: Path, caps: str) -> None:
    setcap = require_tool("setcap")
    proc = subprocess.run([setcap, caps, str(path)], capture_output=True, text=True, check=False)
    if proc.returncode != 0:  # e.g. a filesystem without xattrs, or no CAP_SETFCAP
        need(False, f"setcap does not work here: {proc.stderr.strip()}")


@pytest.fixture
def client_root(tmp_path: Path) -> Path:
    target = make_tree(
        tmp_path / "t",
        {
            "/clients/usr/bin/ping": F("#!/bin/true ping\n", mode="0755"),
            "/clients/usr/bin/arping": F("#!/bin/true arping\n", mode="0755"),
            "/clients/usr/bin/ls": F("#!/bin/true ls\n", mode="0755"),
            "/clients/bin": L("usr/bin"),  # merged /usr: must not be scanned twice
            "/clients/etc/.keep": "",
        },
    )
    _setcap(target / "clients/usr/bin/ping", "cap_net_raw+ep")
    _setcap(target / "clients/usr/bin/arping", "cap_net_admin,cap_net_raw+ep")
    return target


def test_files_with_capabilities_are_reported_like_getcap(client_root: Path) -> None:
    findings = scan_capabilities(client_root, "/clients")
    assert [(f.path, f.caps) for f in findings] == [
        ("/clients/usr/bin/arping", "cap_net_admin,cap_net_raw=ep"),
        ("/clients/usr/bin/ping", "cap_net_raw=ep"),
    ]
    getcap = require_tool("getcap")
    shown = subprocess.run([getcap, str(client_root / "clients/usr/bin/ping")], capture_output=True, text=True)
    assert shown.stdout.split()[-1] == findings[1].caps


def test_setuid_remedy_is_a_chmod_that_apply_carries_out(client_root: Path, tmp_path: Path) -> None:
    extra = capability_changes(client_root, "/clients", "setuid")
    assert [(c.op, c.path, c.mode) for c in extra] == [
        ("chmod", "/clients/usr/bin/arping", 0o4755),
        ("chmod", "/clients/usr/bin/ping", 0o4755),
    ]
    assert "cap_net_raw=ep is lost over NFS; remedy setuid" in extra[1].reason
    build = make_build(tmp_path / "build", {"/etc/hosts": "x\n"})
    apply_target(build, client_root, ApplyOptions(reload_argv=None), DEFAULT_PLAN_OPTIONS, extra)
    ping = client_root / "clients/usr/bin/ping"
    assert stat.S_IMODE(ping.stat().st_mode) == 0o4755
    assert capability_changes(client_root, "/clients", "setuid") == []
    assert plan_for(build, client_root).changes == ()


def test_ping_group_range_remedy_writes_a_sysctl_file_in_the_client_root(client_root: Path, tmp_path: Path) -> None:
    extra = capability_changes(client_root, "/clients", "ping_group_range")
    assert [(c.op, c.path) for c in extra] == [("create", "/clients" + SYSCTL_FILE)]
    assert "/clients/usr/bin/ping" in extra[0].reason
    build = make_build(tmp_path / "build", {"/etc/hosts": "x\n"})
    plan = plan_for(build, client_root, extra=tuple(extra))
    assert ("mkdir", "/clients/etc/sysctl.d") in [(c.op, c.path) for c in plan.changes]
    apply_target(build, client_root, ApplyOptions(reload_argv=None), DEFAULT_PLAN_OPTIONS, extra)
    written = client_root / "clients/etc/sysctl.d/60-nfsroot-ping.conf"
    assert written.read_text() == SYSCTL_TEXT
    assert "net.ipv4.ping_group_range = 0 2147483647" in SYSCTL_TEXT
    assert capability_changes(client_root, "/clients", "ping_group_range") == []
    assert plan_for(build, client_root).changes == ()  # and the file is not removed as "no longer wanted"
    assert written.exists()


def test_no_remedy_and_unknown_remedy(client_root: Path) -> None:
    assert capability_changes(client_root, "/clients", "none") == []
    with pytest.raises(CapabilityError, match="unknown remedy 'sudo'"):
        capability_changes(client_root, "/clients", "sudo")
    with pytest.raises(CapabilityError, match="client root /nope does not exist"):
        scan_capabilities(client_root, "/nope")


def test_nothing_to_remedy_without_capabilities(tmp_path: Path) -> None:
    target = make_tree(tmp_path / "t", {"/clients/usr/bin/ping": F("x", mode="0755")})
    assert scan_capabilities(target, "/clients") == []
    assert capability_changes(target, "/clients", "ping_group_range") == []


def test_decode_revision_2_value() -> None:
    # VFS_CAP_REVISION_2 | effective, permitted = cap_net_raw (bit 13) + cap_bpf (bit 39, upper word)
    raw = (0x02000001).to_bytes(4, "little") + (1 << 13).to_bytes(4, "little") + bytes(4)
    raw += (1 << 7).to_bytes(4, "little") + bytes(4)
    permitted, inheritable, effective = decode_caps(raw)
    assert format_caps(permitted, inheritable, effective) == "cap_net_raw,cap_bpf=ep"
