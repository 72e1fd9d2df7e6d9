"""Apply never writes through a hard link (issue 12 defect 1) and never re-modes an existing directory (issue 9)."""

from __future__ import annotations

import os
import stat
import struct
from pathlib import Path

import pytest

from pipeline.state.apply import ApplyOptions, apply_plan
from pipeline.state.capabilities import capability_changes
from pipeline.state.deploy import DEFAULT_PLAN_OPTIONS
from tests.deploy_helpers import D, F, make_build, make_tree, plan_for, snapshot
from tests.prereq import need

# vfs_cap_data revision 2, effective, permitted = cap_net_raw (13): what `setcap cap_net_raw+ep` writes.
NET_RAW = struct.pack("<IIIII", 0x02000001, 1 << 13, 0, 0, 0)


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.lstat().st_mode)


def test_setuid_remedy_on_a_hard_linked_ping_leaves_the_outside_name_alone(tmp_path: Path) -> None:
    outside = tmp_path / "outside" / "ping"
    outside.parent.mkdir()
    outside.write_bytes(b"#!/bin/true ping\n")
    os.chmod(outside, 0o755)
    try:
        os.setxattr(outside, "security.capability", NET_RAW)
    except OSError as exc:
        need(False, f"cannot set security.capability here: {exc}")
    target = make_tree(tmp_path / "t", {"/clients/etc/.keep": ""})
    (target / "clients/usr/bin").mkdir(parents=True)
    os.link(outside, target / "clients/usr/bin/ping")  # a root made with `cp -al`
    build = make_build(tmp_path / "build", {"/etc/hosts": "x\n"})
    extra = tuple(capability_changes(target, "/clients", "setuid"))
    assert [(c.op, c.path) for c in extra] == [("chmod", "/clients/usr/bin/ping")]
    assert extra[0].reason.endswith("2 hard links: replaced by a copy, the other names keep the old file")
    apply_plan(plan_for(build, target, DEFAULT_PLAN_OPTIONS, extra), target, build, ApplyOptions(reload_argv=None))
    inside = target / "clients/usr/bin/ping"
    assert _mode(outside) == 0o755, "the inode outside the target became setuid"
    assert _mode(inside) == 0o4755
    assert inside.read_bytes() == outside.read_bytes()
    assert outside.stat().st_nlink == 1 and inside.stat().st_nlink == 1
    assert inside.stat().st_uid == outside.stat().st_uid


@pytest.mark.parametrize("scenario", ["chmod", "update"])
def test_exports_hard_linked_outside_is_replaced_not_written_through(tmp_path: Path, scenario: str) -> None:
    outside = tmp_path / "elsewhere-exports"
    outside.write_text("/clients *(ro)\n" if scenario == "chmod" else "old\n")
    os.chmod(outside, 0o600)
    target = make_tree(tmp_path / "t", {"/etc/.keep": ""})
    os.link(outside, target / "etc/exports")
    build = make_build(tmp_path / "build", {"/etc/exports": F("/clients *(ro)\n", role="exports")})
    plan = plan_for(build, target)
    (change,) = [c for c in plan.changes if c.path == "/etc/exports"]
    assert change.op == scenario
    assert ("2 hard links" in change.reason) == (scenario == "chmod")  # an update always replaces the file
    apply_plan(plan, target, build, ApplyOptions(reload_argv=None))
    assert _mode(outside) == 0o600
    assert outside.read_text() == ("/clients *(ro)\n" if scenario == "chmod" else "old\n")
    assert _mode(target / "etc/exports") == 0o644
    assert (target / "etc/exports").read_text() == "/clients *(ro)\n"
    assert os.stat(outside).st_nlink == 1


def test_existing_directories_keep_their_mode_and_owner(tmp_path: Path) -> None:
    target = make_tree(
        tmp_path / "t",
        {"/clients/var/tmp": D("1777"), "/clients/var/local": D("2775"), "/srv/tftp": D("0750")},
    )
    os.chown(target / "clients/var/local", 0, 50)
    build = make_build(
        tmp_path / "build",
        {
            "/clients/var/tmp": D(role="mountpoint"),
            "/clients/var/local": D(role="mountpoint"),
            "/srv/tftp": D(role="pxelinux"),
            "/clients/var/lib/new": D(role="mountpoint"),
            "/srv/tftp/x": "x\n",
        },
    )
    plan = plan_for(build, target)
    assert not [c for c in plan.changes if c.op == "chmod"], "an existing directory would be re-moded"
    before = snapshot(target)
    old_umask = os.umask(0o077)  # a strict umask must not make a new mount point unusable
    try:
        apply_plan(plan, target, build, ApplyOptions(reload_argv=None))
    finally:
        os.umask(old_umask)
    after = snapshot(target)
    for path in ("/clients/var/tmp", "/clients/var/local", "/srv/tftp"):
        assert after[path][1] == before[path][1]
    assert os.stat(target / "clients/var/local").st_gid == 50
    assert _mode(target / "clients/var/lib/new") == 0o755
    assert _mode(target / "clients/var/lib") == 0o755
    assert plan_for(build, target).changes == ()


def test_a_backup_keeps_the_original_owner_mode_and_times(tmp_path: Path) -> None:
    target = make_tree(tmp_path / "t", {"/etc/hosts": F("old\n", mode="0640")})
    original = target / "etc/hosts"
    os.chown(original, 1234, 50)
    os.utime(original, ns=(1_000_000_000, 2_000_000_000))
    build = make_build(tmp_path / "build", {"/etc/hosts": "new\n"})
    from tests.deploy_helpers import deploy

    result = deploy(build, target)
    assert result.backup_dir is not None
    kept = target / result.backup_dir.lstrip("/") / "etc/hosts"
    st = kept.stat()
    assert (kept.read_text(), _mode(kept), st.st_uid, st.st_gid, st.st_mtime_ns) == (
        "old\n",
        0o640,
        1234,
        50,
        2_000_000_000,
    )


def test_killed_at_every_step_of_a_hard_link_chmod_the_outside_file_never_changes(tmp_path: Path) -> None:
    from tests.test_apply_crash import _run_killed

    build = make_build(tmp_path / "build", {"/etc/exports": F("/clients *(ro)\n", mode="0644", role="exports")})
    for steps in range(1, 50):
        outside = tmp_path / f"outside{steps}"
        outside.write_text("/clients *(ro)\n")
        os.chmod(outside, 0o600)
        target = make_tree(tmp_path / f"run{steps}", {"/etc/.keep": ""})
        os.link(outside, target / "etc/exports")
        code = _run_killed(build, target, steps)
        assert _mode(outside) == 0o600 and outside.read_text() == "/clients *(ro)\n"
        assert _mode(target / "etc/exports") in (0o600, 0o644)
        if code == 0:
            break
        assert code == 137
        apply_plan(plan_for(build, target), target, build, ApplyOptions(reload_argv=None))  # the rerun
        assert _mode(target / "etc/exports") == 0o644 and _mode(outside) == 0o600
        assert plan_for(build, target).changes == ()
    else:
        pytest.fail("apply never finished")
    assert steps > 3  # the run really has several steps
