"""The audit reads the root's unit files: what they declare writable, and what stays read-only on the nodes."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from pipeline.cli import main
from pipeline.state.audit_units import UnitNeed, uncovered, unit_needs

REPO = Path(__file__).resolve().parents[1]

LOGIND = """[Unit]
Description=User Login Management

[Service]
ExecStart=/lib/systemd/systemd-logind
ReadWritePaths=/etc /run
StateDirectory=systemd/linger
"""
TIMESYNCD = """[Service]
User=systemd-timesync
StateDirectory=systemd/timesync
LogsDirectory=
"""
EXTRA = """[Unit]
Description=a daemon the user added

[Service]
ExecStart=/usr/bin/true
StateDirectory=mydaemon
LogsDirectory=mydaemon
CacheDirectory=mydaemon/%i
ReadWritePaths=-/srv/data
"""


def _root(base: Path, extra: bool) -> Path:
    root = base / "clients"
    lib = root / "usr/lib/systemd/system"
    lib.mkdir(parents=True)
    (root / "lib").symlink_to("usr/lib")  # usrmerge: the same directory must be read once
    (lib / "systemd-logind.service").write_text(LOGIND)
    (lib / "multi-user.target.wants").mkdir()
    (lib / "multi-user.target.wants/systemd-logind.service").symlink_to("../systemd-logind.service")
    etc = root / "etc/systemd/system"
    (etc / "sysinit.target.wants").mkdir(parents=True)
    (lib / "systemd-timesyncd.service").write_text(TIMESYNCD)
    (etc / "sysinit.target.wants/systemd-timesyncd.service").symlink_to("/lib/systemd/system/systemd-timesyncd.service")
    if extra:
        (etc / "mydaemon.service").write_text(EXTRA)
        (etc / "multi-user.target.wants/").mkdir()
        (etc / "multi-user.target.wants/mydaemon.service").symlink_to("../mydaemon.service")
    return root


def test_unit_needs_come_from_the_unit_files(tmp_path: Path) -> None:
    needs = unit_needs(_root(tmp_path, extra=True))
    assert UnitNeed("systemd-logind.service", "StateDirectory", "/var/lib/systemd/linger", True) in needs
    assert UnitNeed("systemd-timesyncd.service", "StateDirectory", "/var/lib/systemd/timesync", True) in needs
    assert UnitNeed("mydaemon.service", "CacheDirectory", "/var/cache/mydaemon", True) in needs
    assert UnitNeed("mydaemon.service", "ReadWritePaths", "/srv/data", True) in needs
    assert len([n for n in needs if n.unit == "systemd-logind.service"]) == 3  # read once despite /lib -> usr/lib


def test_what_a_read_only_root_leaves_unwritable(tmp_path: Path) -> None:
    needs = unit_needs(_root(tmp_path, extra=True))
    # Nothing writable: every declared directory is named (/run is a tmpfs, never named).
    bare = {(n.unit, n.path) for n in uncovered(needs, ["/var/local"], [])}
    assert ("systemd-timesyncd.service", "/var/lib/systemd/timesync") in bare
    assert ("systemd-logind.service", "/etc") in bare
    assert ("systemd-logind.service", "/run") not in bare
    # The debian-systemd profile's binds and links cover systemd's own; the added daemon stays named.
    profile = ["/var/local", "/var/log", "/var/tmp", "/var/lib/systemd", "/var/lib/private", "/tmp"]
    left = {(n.unit, n.key, n.path) for n in uncovered(needs, profile, ["/etc/machine-id"])}
    assert left == {
        ("mydaemon.service", "StateDirectory", "/var/lib/mydaemon"),
        ("mydaemon.service", "CacheDirectory", "/var/cache/mydaemon"),
        ("mydaemon.service", "ReadWritePaths", "/srv/data"),
    }


@pytest.mark.parametrize("extra", [False, True])
def test_nfsroot_audit_names_the_unit_and_the_path(
    tmp_path: Path, extra: bool, capsys: pytest.CaptureFixture[str]
) -> None:
    _root(tmp_path / "gw", extra)
    spec = tmp_path / "cluster.yaml"
    shutil.copy(REPO / "cluster.yaml", spec)
    assert main(["-f", str(spec), "audit", "--target", str(tmp_path / "gw"), "--json"]) == 0
    units = json.loads(capsys.readouterr().out)["units"]
    named = {(u["unit"], u["path"]) for u in units}
    if extra:
        assert named == {
            ("mydaemon.service", "/var/lib/mydaemon"),
            ("mydaemon.service", "/var/cache/mydaemon"),
            ("mydaemon.service", "/srv/data"),
        }
    else:
        assert named == set()  # the shipped spec's profile covers systemd's own units


def test_audit_before_anything_is_deployed_audits_the_spec(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Issue 13: `doit audit` right after a first `doit` failed on the missing target root."""
    spec = tmp_path / "cluster.yaml"
    shutil.copy(REPO / "cluster.yaml", spec)
    assert main(["-f", str(spec), "audit"]) == 0
    out = capsys.readouterr().out
    assert "does not exist yet: audited the spec only" in out
    assert main(["-f", str(spec), "audit", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["deployed"] is False and report["capabilities"] == [] and report["units"] == []
