"""apply: idempotent, keeps every original, reloads exports only when they changed, refuses escapes."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import pytest

from pipeline.cli import EXIT_CHANGES, EXIT_ERROR, EXIT_OK, main
from pipeline.errors import ExternalCommandError, UnsafePathError
from pipeline.state.apply import ApplyOptions, StalePlanError, apply_plan
from pipeline.state.plan import PlanOptions
from pipeline.state.record import BACKUP_ROOT, STATE_PATH
from pipeline.state.render import plan_from_json, plan_to_json
from pipeline.state.rollback import RollbackError, rollback_plan
from tests.deploy_helpers import D, F, L, deploy, make_build, make_tree, plan_for, record_of, snapshot

HOSTNAME = L("/var/local/hostname", preserve="/clients/usr/lib/nfsroot/skel/etc/hostname")


def _backups(target: Path) -> list[Path]:
    root = target / BACKUP_ROOT.lstrip("/")
    return sorted(p for p in root.rglob("*") if p.is_file() or p.is_symlink()) if root.exists() else []


def test_apply_then_plan_shows_nothing_and_a_second_apply_changes_nothing(tmp_path: Path) -> None:
    build = make_build(
        tmp_path / "build",
        {
            "/clients/etc/hostname": HOSTNAME,
            "/etc/exports.d/nfsroot.exports": F("/clients *(ro)\n", role="exports"),
            "/srv/tftp/pxelinux.cfg/default": F("DEFAULT linux\n", role="pxelinux"),
            "/usr/local/bin/tool": F("#!/bin/sh\n", mode="0755"),
            "/workers": D("0750"),
        },
    )
    target = make_tree(tmp_path / "t", {"/clients/etc/hostname": "debian\n", "/etc/motd": "hello\n"})
    first = deploy(build, target)
    assert first.applied
    assert plan_for(build, target).changes == ()
    before = snapshot(target)
    second = deploy(build, target)
    assert second.applied == () and second.backup_dir is None
    assert snapshot(target) == before  # not even an mtime moved
    assert (target / "clients/etc/hostname").readlink() == Path("/var/local/hostname")
    assert (target / "clients/usr/lib/nfsroot/skel/etc/hostname").read_text() == "debian\n"
    assert (target / "usr/local/bin/tool").stat().st_mode & 0o7777 == 0o755
    assert (target / "workers").stat().st_mode & 0o7777 == 0o750
    assert (target / "etc/motd").read_text() == "hello\n"


def test_overwritten_originals_go_to_a_timestamped_backup(tmp_path: Path) -> None:
    build = make_build(tmp_path / "build", {"/etc/hosts": "new\n", "/etc/link": L("/new"), "/etc/f": "f\n"})
    target = make_tree(
        tmp_path / "t", {"/etc/hosts": F("theirs\n", mode="0600"), "/etc/link": L("/old"), "/etc/f": L("/was-a-link")}
    )
    result = deploy(build, target)
    assert result.backup_dir is not None and result.backup_dir.startswith(BACKUP_ROOT + "/")
    kept = target / result.backup_dir.lstrip("/")
    assert (kept / "etc/hosts").read_text() == "theirs\n"
    assert (kept / "etc/hosts").stat().st_mode & 0o7777 == 0o600
    assert (kept / "etc/link").readlink() == Path("/old")
    assert (kept / "etc/f").readlink() == Path("/was-a-link")
    assert (target / "etc/hosts").read_text() == "new\n"


def test_our_own_files_are_replaced_without_a_backup(tmp_path: Path) -> None:
    target = tmp_path / "t"
    target.mkdir()
    deploy(make_build(tmp_path / "b1", {"/etc/hosts": "v1\n"}), target)
    result = deploy(make_build(tmp_path / "b2", {"/etc/hosts": "v2\n"}), target)
    assert result.backup_dir is None and _backups(target) == []


def test_removal_keeps_a_copy_of_a_file_changed_since_deployed(tmp_path: Path) -> None:
    target = make_tree(tmp_path / "t", {"/etc/theirs": "x\n"})
    deploy(make_build(tmp_path / "b1", {"/etc/ours": "v1\n", "/etc/mine": "m\n"}), target)
    (target / "etc/ours").write_text("edited by hand\n")
    result = deploy(make_build(tmp_path / "b2", {"/etc/theirs-not": "y\n"}), target)
    assert not (target / "etc/ours").exists() and not (target / "etc/mine").exists()
    assert (target / "etc/theirs").read_text() == "x\n"
    assert result.backup_dir is not None
    assert [p.read_text() for p in _backups(target)] == ["edited by hand\n"]


def _reload_counter(tmp_path: Path) -> tuple[ApplyOptions, Path]:
    marker = tmp_path / "reloads"
    argv = (sys.executable, "-c", "import sys; open(sys.argv[1], 'a').write('reload\\n')", str(marker))
    return ApplyOptions(reload_argv=argv), marker


def _count(marker: Path) -> int:
    return len(marker.read_text().splitlines()) if marker.exists() else 0


def test_exports_reload_runs_exactly_when_the_exports_changed(tmp_path: Path) -> None:
    opts, marker = _reload_counter(tmp_path)
    target = tmp_path / "t"
    target.mkdir()
    exports = "/etc/exports.d/nfsroot.exports"

    def build(n: int, exports_text: str, hosts: str) -> Path:
        return make_build(tmp_path / f"b{n}", {exports: F(exports_text, role="exports"), "/etc/hosts": hosts})

    deploy(build(1, "/clients *(ro)\n", "a\n"), target, opts)
    assert _count(marker) == 1
    deploy(build(2, "/clients *(ro)\n", "b\n"), target, opts)  # only hosts changed
    assert _count(marker) == 1
    deploy(build(3, "/clients 10.0.0.0/8(ro)\n", "b\n"), target, opts)
    assert _count(marker) == 2
    deploy(build(3, "/clients 10.0.0.0/8(ro)\n", "b\n"), target, opts)  # nothing changed
    assert _count(marker) == 2
    deploy(make_build(tmp_path / "b4", {"/etc/hosts": "b\n"}), target, opts)  # exports removed
    assert _count(marker) == 3
    deploy(build(5, "x\n", "b\n"), target, ApplyOptions(reload_argv=None))  # disabled
    assert _count(marker) == 3


def test_a_failed_reload_is_retried_by_the_next_apply(tmp_path: Path) -> None:
    target = tmp_path / "t"
    target.mkdir()
    build = make_build(tmp_path / "b", {"/etc/exports.d/x.exports": F("/x *(ro)\n", role="exports")})
    failing = ApplyOptions(reload_argv=(sys.executable, "-c", "raise SystemExit(3)"))
    with pytest.raises(ExternalCommandError, match="exit code 3"):
        deploy(build, target, failing)
    plan = plan_for(build, target)
    assert plan.reload_exports and [c.path for c in plan.changes] == [STATE_PATH]
    opts, marker = _reload_counter(tmp_path)
    deploy(build, target, opts)
    assert _count(marker) == 1
    assert plan_for(build, target).changes == ()


def test_saved_plan_is_refused_when_the_target_changed(tmp_path: Path) -> None:
    build = make_build(tmp_path / "build", {"/etc/hosts": "new\n"})
    target = make_tree(tmp_path / "t", {"/etc/hosts": "old\n"})
    saved = plan_from_json(plan_to_json(plan_for(build, target)), "saved.json")
    (target / "etc/hosts").write_text("edited meanwhile\n")
    with pytest.raises(StalePlanError, match=r"the target changed since the plan was made: /etc/hosts"):
        apply_plan(saved, target, build, ApplyOptions(reload_argv=None, verify=True))
    assert (target / "etc/hosts").read_text() == "edited meanwhile\n"


def test_saved_plan_round_trips_and_applies(tmp_path: Path) -> None:
    build = make_build(tmp_path / "build", {"/etc/hosts": "new\n", "/a": L("/b"), "/d": D("0700")})
    target = make_tree(tmp_path / "t", {"/etc/hosts": "old\n"})
    plan = plan_for(build, target)
    saved = plan_from_json(plan_to_json(plan), "saved.json")
    assert saved == plan
    apply_plan(saved, target, build, ApplyOptions(reload_argv=None, verify=True))
    assert plan_for(build, target).changes == ()


def test_build_changed_after_the_plan_is_refused(tmp_path: Path) -> None:
    build = make_build(tmp_path / "build", {"/etc/hosts": "new\n"})
    target = tmp_path / "t"
    target.mkdir()
    plan = plan_for(build, target)
    (build / "gateway/etc/hosts").write_text("rebuilt\n")
    with pytest.raises(StalePlanError, match="the build changed since the plan was made"):
        apply_plan(plan, target, build, ApplyOptions(reload_argv=None))
    assert not (target / "etc").exists()  # refused before the first write


def test_symlinked_parent_leaving_the_target_is_refused(tmp_path: Path) -> None:
    outside = make_tree(tmp_path / "outside", {"/hosts": "host's own\n"})
    build = make_build(tmp_path / "build", {"/etc/hosts": "new\n"})
    target = tmp_path / "t"
    target.mkdir()
    (target / "etc").symlink_to(outside)
    with pytest.raises(UnsafePathError, match=r"/etc/hosts: /etc in the target is a symlink to .*outside"):
        plan_for(build, target)
    assert (outside / "hosts").read_text() == "host's own\n"


def test_parent_swapped_for_an_escaping_symlink_after_planning_is_refused(tmp_path: Path) -> None:
    outside = make_tree(tmp_path / "outside", {"/hosts": "host's own\n"})
    build = make_build(tmp_path / "build", {"/etc/hosts": "new\n"})
    target = make_tree(tmp_path / "t", {"/etc/hosts": "old\n"})
    plan = plan_for(build, target)
    (target / "etc/hosts").unlink()
    (target / "etc").rmdir()
    (target / "etc").symlink_to("../../outside")
    with pytest.raises(UnsafePathError, match="leads out of the target root"):
        apply_plan(plan, target, build, ApplyOptions(reload_argv=None))
    assert sorted(p.name for p in outside.iterdir()) == ["hosts"]
    assert (outside / "hosts").read_text() == "host's own\n"


def test_forced_replacement_moves_a_non_empty_directory_to_the_backups(tmp_path: Path) -> None:
    build = make_build(tmp_path / "build", {"/srv/data": L("/elsewhere")})
    target = make_tree(tmp_path / "t", {"/srv/data/precious": "user data\n"})
    result = deploy(build, target, plan_opts=PlanOptions(force=True), opts=ApplyOptions(None, force=True))
    assert result.backup_dir is not None
    assert (target / result.backup_dir.lstrip("/") / "srv/data/precious").read_text() == "user data\n"
    assert (target / "srv/data").is_symlink()


PXE = "DEFAULT nfsroot\nLABEL nfsroot\n  KERNEL vmlinuz\n  INITRD nfsroot/{initrd}\n  APPEND root=/dev/nfs\n"


def _generation(tmp_path: Path, n: int) -> Path:
    return make_build(
        tmp_path / f"b{n}",
        {
            f"/srv/tftp/nfsroot/initrd-{n}.img": F(f"initrd {n}".encode(), role="initrd"),
            "/srv/tftp/pxelinux.cfg/default": F(PXE.format(initrd=f"initrd-{n}.img"), role="pxelinux"),
        },
    )


def test_rollback_points_pxelinux_at_the_previous_initrd(tmp_path: Path) -> None:
    target = tmp_path / "t"
    target.mkdir()
    deploy(_generation(tmp_path, 1), target)
    with pytest.raises(RollbackError, match="no initrd generation 1 back is kept"):
        rollback_plan(target)
    deploy(_generation(tmp_path, 2), target)
    assert record_of(target).initrds == (("/srv/tftp/nfsroot/initrd-2.img",), ("/srv/tftp/nfsroot/initrd-1.img",))
    plan = rollback_plan(target)
    assert [c.path for c in plan.changes] == ["/srv/tftp/pxelinux.cfg/default"]
    apply_plan(plan, target, None, ApplyOptions(reload_argv=None))
    assert (target / "srv/tftp/pxelinux.cfg/default").read_text() == PXE.format(initrd="initrd-1.img")
    assert rollback_plan(target).changes == ()  # already rolled back
    assert [c.path for c in plan_for(_generation(tmp_path, 2), target).changes] == [
        "/srv/tftp/pxelinux.cfg/default"  # the next plan shows the drift back to the manifest
    ]


def test_cli_plan_exit_codes_and_json(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    build = make_build(tmp_path / "build", {"/etc/hosts": "x\n"})
    target = tmp_path / "t"
    target.mkdir()
    spec = str(tmp_path / "no-cluster.yaml")
    common = ["-f", spec, "--build", str(build), "--target", str(target)]
    assert main(["-f", spec, "plan", *common[2:], "--json"]) == EXIT_CHANGES
    doc = json.loads(capsys.readouterr().out)
    assert doc["summary"]["create"] == 6 and doc["changes"][-1]["path"] == STATE_PATH
    out = tmp_path / "plan.json"
    assert main(["-f", spec, "plan", *common[2:], "--out", str(out)]) == EXIT_CHANGES
    assert "Plan: 6 to create" in capsys.readouterr().out
    assert main(["-f", spec, "apply", *common[2:], "--plan", str(out), "--no-reload"]) == EXIT_OK
    assert main(["-f", spec, "plan", *common[2:]]) == EXIT_OK
    assert "No changes." in capsys.readouterr().out
    (target / "etc/hosts").write_text("drift\n")
    assert main(["-f", spec, "apply", *common[2:], "--plan", str(out), "--no-reload"]) == EXIT_ERROR
    assert "the target changed since the plan was made" in capsys.readouterr().err
    assert main(["-f", spec, "plan", "--build", str(build)]) == EXIT_ERROR
    assert "no target root: give --target DIR" in capsys.readouterr().err


def test_apply_never_touches_paths_outside_the_plan(tmp_path: Path) -> None:
    build = make_build(tmp_path / "build", {"/etc/hosts": "new\n", "/var/lib/x/y": "y\n"})
    target = make_tree(tmp_path / "t", {"/etc/other": "x\n", "/etc/hosts": "old\n", "/var/log/syslog": "log\n"})
    before = snapshot(target)
    plan = plan_for(build, target)
    deploy(build, target)
    after = snapshot(target)
    differ = {p for p in set(before) | set(after) if before.get(p) != after.get(p)}
    # Parents whose entries changed get a new mtime; apart from those, only planned paths and backups moved.
    parents = {"/etc", "/var", "/var/lib"}
    backups = {p for p in differ if p == "/var/backups" or p.startswith("/var/backups/")}
    planned = {c.path for c in plan.changes}
    assert differ - backups <= planned | parents
    assert planned <= differ
    assert "/etc/other" not in differ and "/var/log/syslog" not in differ


def test_an_existing_different_skeleton_file_is_backed_up_not_overwritten(tmp_path: Path) -> None:
    build = make_build(tmp_path / "build", {"/clients/etc/hostname": HOSTNAME})
    target = make_tree(
        tmp_path / "t",
        {
            "/clients/etc/hostname": "debian\n",
            "/clients/usr/lib/nfsroot/skel/etc/hostname": "seeded long ago\n",
        },
    )
    result = deploy(build, target)
    assert (target / "clients/usr/lib/nfsroot/skel/etc/hostname").read_text() == "debian\n"
    assert result.backup_dir is not None
    kept = target / result.backup_dir.lstrip("/") / "clients/usr/lib/nfsroot/skel/etc/hostname"
    assert kept.read_text() == "seeded long ago\n"


def test_a_missing_local_target_is_planned_as_empty_and_created(tmp_path: Path) -> None:
    build = make_build(tmp_path / "build", {"/etc/hosts": "x\n"})
    target = tmp_path / "not-yet" / "gateway"
    plan = plan_for(build, target)
    assert ("create", "/etc/hosts") in [(c.op, c.path) for c in plan.changes]
    assert not target.exists()
    deploy(build, target)
    assert (target / "etc/hosts").read_text() == "x\n"
    assert plan_for(build, target).changes == ()


def test_rewrite_initrds_handles_lists_and_append_arguments() -> None:
    from pipeline.state.rollback import rewrite_initrds

    text = (
        "LABEL linux\n"
        "  INITRD initrd.img-6.1.0-21-amd64,nfsroot-aaaa.img\n"
        "  APPEND root=/dev/nfs initrd=boot/nfsroot-aaaa.img quiet\n"
        "# nfsroot-aaaa.img in a comment stays\n"
    )
    assert rewrite_initrds(text, {"nfsroot-aaaa.img": "nfsroot-bbbb.img"}) == (
        "LABEL linux\n"
        "  INITRD initrd.img-6.1.0-21-amd64,nfsroot-bbbb.img\n"
        "  APPEND root=/dev/nfs initrd=boot/nfsroot-bbbb.img quiet\n"
        "# nfsroot-aaaa.img in a comment stays\n"
    )


def test_cli_rollback_and_audit(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    target = tmp_path / "t"
    target.mkdir()
    deploy(_generation(tmp_path, 1), target)
    deploy(_generation(tmp_path, 2), target)
    spec = str(tmp_path / "no-cluster.yaml")
    assert main(["-f", spec, "rollback", "--target", str(target), "--dry-run"]) == EXIT_OK
    assert "+  INITRD nfsroot/initrd-1.img" in capsys.readouterr().out
    assert "initrd-2.img" in (target / "srv/tftp/pxelinux.cfg/default").read_text()
    assert main(["-f", spec, "rollback", "--target", str(target)]) == EXIT_OK
    assert "initrd-1.img" in (target / "srv/tftp/pxelinux.cfg/default").read_text()
    assert main(["-f", spec, "rollback", "--target", str(target), "--steps", "5"]) == EXIT_ERROR
    assert "no initrd generation 5 back is kept" in capsys.readouterr().err
    make_tree(target, {"/clients/etc/.keep": ""})
    assert main(["-f", spec, "audit", "--target", str(target), "--client-root", "/clients", "--json"]) == EXIT_OK
    report = json.loads(capsys.readouterr().out)
    assert report["capabilities"] == [] and report["lint"] == []


def test_concurrent_applies_on_one_target_are_refused(tmp_path: Path) -> None:
    import fcntl

    from pipeline.errors import PipelineError

    build = make_build(tmp_path / "build", {"/etc/hosts": "x\n"})
    target = tmp_path / "t"
    target.mkdir()
    holder = os.open(target, os.O_RDONLY | os.O_DIRECTORY)
    try:
        fcntl.flock(holder, fcntl.LOCK_EX)
        with pytest.raises(PipelineError, match="another nfsroot apply is running"):
            deploy(build, target)
    finally:
        os.close(holder)
    deploy(build, target)
    assert (target / "etc/hosts").read_text() == "x\n"


def test_a_tampered_or_foreign_saved_plan_is_refused(tmp_path: Path) -> None:
    from pipeline.state.render import PlanFileError

    build = make_build(tmp_path / "build", {"/etc/hosts": "new\n"})
    target = make_tree(tmp_path / "t", {"/etc/hosts": "old\n"})
    doc = json.loads(plan_to_json(plan_for(build, target)))
    doc["changes"][0]["path"] = "/etc/../shadow"
    with pytest.raises(PlanFileError, match=r"saved.json: not a usable plan file.*'\.\.'"):
        plan_from_json(json.dumps(doc), "saved.json")
    other = make_tree(tmp_path / "other", {"/etc/hosts": "old\n"})
    plan = plan_from_json(plan_to_json(plan_for(build, target)), "saved.json")
    with pytest.raises(StalePlanError, match="the plan was made for target"):
        apply_plan(plan, other, build, ApplyOptions(reload_argv=None, verify=True))
