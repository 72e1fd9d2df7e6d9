"""The audit reads the root's unit files: what they declare writable, and what stays read-only on the nodes."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from pipeline.boottest.debianroot import debian_root, installed_kernel
from pipeline.cli import main
from pipeline.render import profile
from pipeline.spec.load import load_cluster
from pipeline.state.audit_tmpfiles import TmpfilesNeed, tmpfiles_needs
from pipeline.state.audit_units import UnitNeed, uncovered, unit_needs
from tests.prereq import need

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


# -- tmpfiles.d ---------------------------------------------------------------------------------------------------

TMPFILES_DAEMON = """# a daemon the user added
d /var/lib/mydaemon 0750 root root -
f /var/cache/mydaemon/stamp 0644 root root -
d /srv/data/%m 0755 - - -
F /etc/mydaemon.state 0644 - - -
d- /root/.ssh 0700 - - -
f^ /etc/motd.d/50-provision.conf - - - - login.motd
d /var/lib 0755 - - -
d /var/lib/systemd/mydaemon 0755 - - -
d /var/lock/mydaemon 0755 - - -
d /var/log/journal/%m 2755 root systemd-journal - -
L+ /etc/mtab - - - - ../proc/self/mounts
L+ /etc/other - - - - /proc/self/mounts
z /etc/shadow 0640 root shadow - -
r! /forcefsck
"""


def _tmpfiles_root(base: Path) -> Path:
    root = base / "clients"
    lib = root / "usr/lib/tmpfiles.d"
    etc = root / "etc/tmpfiles.d"
    lib.mkdir(parents=True)
    etc.mkdir(parents=True)
    (root / "lib").symlink_to("usr/lib")  # usrmerge: read once
    (root / "var/lib").mkdir(parents=True)
    (root / "var/lock").symlink_to("/run/lock")  # resolved inside the root: under /run, a tmpfs
    (root / "etc/mtab").symlink_to("../proc/self/mounts")
    (root / "etc/other").symlink_to("../proc/self/mounts")
    (lib / "mydaemon.conf").write_text(TMPFILES_DAEMON)
    (lib / "masked.conf").write_text("d /opt/masked 0755 - - -\n")
    (etc / "masked.conf").symlink_to("/dev/null")
    (lib / "overridden.conf").write_text("d /opt/from-usr-lib 0755 - - -\n")
    (etc / "overridden.conf").write_text("# the admin's version\nd /opt/from-etc 0755 - - -\n")
    return root


def test_tmpfiles_lines_that_write_on_read_only_paths_are_named_with_file_and_line(tmp_path: Path) -> None:
    root = _tmpfiles_root(tmp_path)
    profile = ["/var/local", "/var/log", "/var/tmp", "/var/lib/systemd", "/var/lib/private", "/tmp"]
    found = {(n.file, n.line, n.type, n.path) for n in tmpfiles_needs(root, profile, ["/etc/machine-id"])}
    lib = "/usr/lib/tmpfiles.d/mydaemon.conf"
    assert found == {
        (lib, 2, "d", "/var/lib/mydaemon"),
        (lib, 3, "f", "/var/cache/mydaemon/stamp"),
        (lib, 4, "d", "/srv/data/%m"),
        (lib, 5, "F", "/etc/mydaemon.state"),  # F truncates at every boot, existing or not
        (lib, 13, "L+", "/etc/other"),  # another target: replaced at every boot
        ("/etc/tmpfiles.d/overridden.conf", 2, "d", "/opt/from-etc"),  # /etc wins over /usr/lib by name
    }
    shown = {str(n) for n in tmpfiles_needs(root, profile, [])}
    assert (
        "/usr/lib/tmpfiles.d/mydaemon.conf:2: tmpfiles.d d /var/lib/mydaemon: systemd-tmpfiles writes there at "
        "boot; it is read-only on every node"
    ) in shown
    # Made writable by the spec: silent.
    assert tmpfiles_needs(root, [*profile, "/var/lib/mydaemon", "/var/cache", "/srv/data", "/opt"], []) == [
        TmpfilesNeed(lib, 5, "F", "/etc/mydaemon.state"),
        TmpfilesNeed(lib, 13, "L+", "/etc/other"),
    ]
    assert (
        tmpfiles_needs(
            root, [*profile, "/var/lib/mydaemon", "/var/cache", "/srv", "/opt"], ["/etc/other", "/etc/mydaemon.state"]
        )
        == []
    )


def test_nfsroot_audit_reports_tmpfiles_lines(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    _tmpfiles_root(tmp_path / "gw")
    spec = tmp_path / "cluster.yaml"
    shutil.copy(REPO / "cluster.yaml", spec)
    assert main(["-f", str(spec), "audit", "--target", str(tmp_path / "gw"), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)["tmpfiles"]
    assert {"file": "/usr/lib/tmpfiles.d/mydaemon.conf", "line": 2, "type": "d", "path": "/var/lib/mydaemon"} in report
    assert main(["-f", str(spec), "audit", "--target", str(tmp_path / "gw")]) == 0
    assert (
        "warning: /usr/lib/tmpfiles.d/mydaemon.conf:3: tmpfiles.d f /var/cache/mydaemon/stamp"
        in capsys.readouterr().out
    )


def test_the_real_debian_root_is_silent_under_the_shipped_profile() -> None:
    """The cached bookworm root of tests/test_boot_debian.py: its units and tmpfiles.d need nothing more than
    the shipped spec and its profile make writable; without the profile both are named."""
    # Built here when the cache lacks it (a few minutes, once): the suite runs this before the boot test that
    # shares the root, and a skip would hide that the audit was never tried on a real root.
    need(shutil.which("mmdebstrap") is not None, "mmdebstrap is missing")
    need(bool(installed_kernel()), "exactly one kernel in /boot is needed (its modules go into the test root)")
    root = debian_root()
    cluster, _ = load_cluster(REPO / "cluster.yaml")
    writable = [w.mount for w in cluster.writable] + list(profile.writable_paths(cluster))
    links = [*cluster.symlinks, *(link.path for link in profile.links(cluster))]
    assert uncovered(unit_needs(root), writable, links) == []
    assert tmpfiles_needs(root, writable, links) == []
    bare = {n.path for n in tmpfiles_needs(root, [w.mount for w in cluster.writable], list(cluster.symlinks))}
    assert "/var/lib/dbus/machine-id" in bare  # what the profile's link is for
    assert {n.path for n in uncovered(unit_needs(root), [], [])} >= {"/var/lib/systemd/timesync"}
