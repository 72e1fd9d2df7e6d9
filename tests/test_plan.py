"""plan: manifest validation (untrusted input) and the pure diff, compared as value objects."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from pipeline.state.changes import Change
from pipeline.state.manifest import ManifestError, load_desired, parse_manifest
from pipeline.state.plan import PlanOptions
from pipeline.state.record import STATE_PATH
from pipeline.state.render import render_text
from pipeline.state.rootfs import PathConflictError
from tests.deploy_helpers import D, F, L, deploy, make_build, make_tree, plan_for

SHA = "0" * 64


def _manifest(*entries: dict[str, object]) -> bytes:
    return json.dumps({"format": 1, "cluster": "homelab", "entries": list(entries)}).encode()


def _file(path: str, **extra: object) -> dict[str, object]:
    base: dict[str, object] = {
        "path": path,
        "kind": "file",
        "mode": "0644",
        "sha256": SHA,
        "size": 0,
        "staged": "gateway" + path,
        "role": "hosts",
        "fields": [],
    }
    return base | extra


@pytest.mark.parametrize(
    ("entry", "message"),
    [
        (_file("/etc/../shadow"), "must not contain '..'"),
        (_file("etc/hosts"), "must be an absolute path"),
        (_file("/etc/ho\x00sts"), "NUL or newline"),
        (_file("/etc/ho\nsts"), "NUL or newline"),
        (_file("/etc/"), "trailing slash"),
        (_file("/etc//hosts"), "empty components"),
        (_file("/etc/hosts", staged="../../etc/shadow"), "staged: Value error, must not contain '..'"),
        (_file("/etc/hosts", staged="/etc/shadow"), "must be relative to the build directory"),
        (_file("/etc/hosts", mode="rw-r--r--"), "octal string"),
        (_file("/etc/hosts", sha256="xyz"), "sha256"),
        (_file("/etc/hosts", owner="root"), "owner: Extra inputs are not permitted"),
        ({"path": "/a", "kind": "symlink", "target": "x\ny", "role": "symlink"}, "target"),
        ({"path": "/a", "kind": "symlink", "target": "x", "role": "symlink", "preserve": "/a/../b"}, "preserve"),
        ({"path": "/a", "kind": "fifo", "role": "x"}, "does not match any of the expected tags"),
    ],
)
def test_hostile_manifest_entries_are_rejected(entry: dict[str, object], message: str) -> None:
    with pytest.raises(ManifestError, match=r"manifest\.json: entries\.0") as info:
        parse_manifest(_manifest(entry))
    assert message in str(info.value)


def test_order_duplicates_and_nesting_are_rejected() -> None:
    with pytest.raises(ManifestError) as info:
        parse_manifest(_manifest(_file("/b"), _file("/a"), _file("/a"), _file("/a/below")))
    assert str(info.value).splitlines() == [
        "manifest.json: entries.1: /a is out of order (entries must be sorted by path)",
        "manifest.json: entries.2: duplicate path /a",
        "manifest.json: entries.3: /a/below lies below /a, which is not a directory entry",
    ]


def test_staged_file_must_match_its_hash(tmp_path: Path) -> None:
    build = make_build(tmp_path / "build", {"/etc/hosts": "127.0.0.1 localhost\n"})
    (build / "gateway/etc/hosts").write_text("tampered\n")
    with pytest.raises(ManifestError, match=r"staged file gateway/etc/hosts \(for /etc/hosts\) does not match"):
        load_desired(build)


def test_staged_file_behind_a_symlink_leaving_build_is_refused(tmp_path: Path) -> None:
    from pipeline.errors import UnsafePathError

    build = make_build(tmp_path / "build", {"/etc/hosts": "x"})
    (build / "gateway/etc/hosts").unlink()
    (build / "gateway/etc").rmdir()
    (build / "gateway/etc").symlink_to("/etc")
    with pytest.raises(UnsafePathError, match="outside the target root"):
        load_desired(build)


def test_missing_manifest_says_what_to_do(tmp_path: Path) -> None:
    with pytest.raises(ManifestError, match=r"manifest.json does not exist: run `doit` first"):
        load_desired(tmp_path)


def _ops(changes: tuple[Change, ...]) -> list[tuple[str, str]]:
    return [(c.op, c.path) for c in changes]


def test_plan_against_an_empty_target_creates_everything_in_order(tmp_path: Path) -> None:
    build = make_build(
        tmp_path / "build",
        {
            "/clients/etc/hostname": L("/var/local/hostname", preserve="/clients/usr/lib/nfsroot/skel/etc/hostname"),
            "/etc/exports.d/nfsroot.exports": F("/clients *(ro)\n", role="exports", fields=("shares.clients",)),
            "/workers": D(fields=("writable.0",)),
        },
    )
    target = make_tree(tmp_path / "t", {"/clients/etc/.keep": ""})
    plan = plan_for(build, target)
    assert _ops(plan.changes) == [
        ("mkdir", "/clients/usr"),
        ("mkdir", "/clients/usr/lib"),
        ("mkdir", "/clients/usr/lib/nfsroot"),
        ("mkdir", "/clients/usr/lib/nfsroot/skel"),
        ("mkdir", "/clients/usr/lib/nfsroot/skel/etc"),
        ("mkdir", "/etc"),
        ("mkdir", "/etc/exports.d"),
        ("mkdir", "/var"),
        ("mkdir", "/var/lib"),
        ("mkdir", "/var/lib/nfsroot-pipeline"),
        ("mkdir", "/workers"),
        ("create", "/clients/etc/hostname"),
        ("create", "/etc/exports.d/nfsroot.exports"),
        ("create", STATE_PATH),
    ]
    exports = plan.changes[12]
    assert exports.reason == "missing in the target; from shares.clients"
    assert exports.diff is not None and "+/clients *(ro)" in exports.diff
    assert plan.reload_exports
    assert plan.summary == {"create": 14, "change": 0, "replace": 0, "remove": 0}


def test_each_difference_gives_its_own_op(tmp_path: Path) -> None:
    build = make_build(
        tmp_path / "build",
        {
            "/a/chmod": F("same\n", mode="0755"),
            "/a/update": F("new\n", fields=("nodes.known",)),
            "/a/same": F("same\n"),
            "/a/retarget": L("/new"),
            "/a/link-over-file": L("/var/local/x", preserve="/skel/x"),
            "/a/file-over-link": F("f\n"),
            "/a/dir": D("0700"),
        },
    )
    target = make_tree(
        tmp_path / "t",
        {
            "/a/chmod": "same\n",
            "/a/update": "old\n",
            "/a/same": "same\n",
            "/a/retarget": L("/old"),
            "/a/link-over-file": "original\n",
            "/a/file-over-link": L("/somewhere"),
            "/a/dir": D("0755"),
            "/skel/.keep": "",
            STATE_PATH: "{}",
        },
    )
    deploy_record = target / STATE_PATH.lstrip("/")
    deploy_record.unlink()  # no record yet: nothing of the target is ours
    plan = plan_for(build, target)
    by_path = {c.path: c for c in plan.changes}
    assert _ops(plan.changes)[:-1] == [
        ("chmod", "/a/chmod"),  # /a/dir (0755, the manifest says 0700) keeps its mode: issue 9
        ("replace", "/a/file-over-link"),
        ("replace", "/a/link-over-file"),
        ("update", "/a/retarget"),
        ("update", "/a/update"),
    ]
    assert "/a/dir" not in by_path
    assert by_path["/a/link-over-file"].preserve == "/skel/x"
    assert not by_path["/a/link-over-file"].backup
    assert by_path["/a/file-over-link"].backup and by_path["/a/retarget"].backup
    update = by_path["/a/update"]
    assert update.backup and update.reason.endswith("from nodes.known")
    assert update.diff == ("--- /a/update (target)\n+++ /a/update (build)\n@@ -1 +1 @@\n-old\n+new\n")
    assert not plan.reload_exports


def test_plan_is_pure_and_repeatable(tmp_path: Path) -> None:
    build = make_build(tmp_path / "build", {"/etc/hosts": "x\n", "/d": D()})
    target = make_tree(tmp_path / "t", {"/etc/hosts": "y\n"})
    assert plan_for(build, target) == plan_for(build, target)


def test_removal_touches_only_what_we_deployed(tmp_path: Path) -> None:
    target = make_tree(tmp_path / "t", {"/etc/theirs": "not ours\n"})
    deploy(make_build(tmp_path / "b1", {"/etc/ours": "ours\n", "/etc/kept": "k\n", "/d": D()}), target)
    plan = plan_for(make_build(tmp_path / "b2", {"/etc/kept": "k\n"}), target)
    assert _ops(plan.changes) == [("remove", "/etc/ours"), ("remove", "/d"), ("update", STATE_PATH)]
    assert plan.changes[0].reason == "deployed earlier by nfsroot-pipeline and no longer in the manifest"
    assert not plan.changes[0].backup  # unchanged since we wrote it: nothing to keep


def test_non_empty_directory_is_not_replaced_without_force(tmp_path: Path) -> None:
    build = make_build(tmp_path / "build", {"/srv/data": L("/elsewhere")})
    target = make_tree(tmp_path / "t", {"/srv/data/precious": "user data\n"})
    with pytest.raises(PathConflictError, match=r"/srv/data: the target has a non-empty directory here.*--force"):
        plan_for(build, target)
    plan = plan_for(build, target, PlanOptions(force=True))
    assert ("replace", "/srv/data") in _ops(plan.changes)


def test_file_where_a_parent_directory_belongs_is_a_conflict(tmp_path: Path) -> None:
    build = make_build(tmp_path / "build", {"/etc/exports.d/nfsroot.exports": "x\n"})
    target = make_tree(tmp_path / "t", {"/etc/exports.d": "a file"})
    with pytest.raises(PathConflictError, match=r"parent /etc/exports.d exists in the target as a file"):
        plan_for(build, target)


def test_initrd_generations_are_kept_and_pruned(tmp_path: Path) -> None:
    target = tmp_path / "t"
    target.mkdir()
    opts = PlanOptions(keep_initrds=1)
    for n in range(1, 4):
        build = make_build(tmp_path / f"b{n}", {f"/srv/tftp/initrd-{n}.img": F(b"\x00" * n, role="initrd")})
        deploy(build, target, plan_opts=opts)
    plan = plan_for(build, target, opts)
    assert plan.changes == ()
    names = sorted(p.name for p in (target / "srv/tftp").iterdir())
    assert names == ["initrd-2.img", "initrd-3.img"]  # current + keep_initrds=1 previous


def test_initrd_updated_in_place_keeps_the_previous_bytes(tmp_path: Path) -> None:
    target = tmp_path / "t"
    target.mkdir()
    deploy(make_build(tmp_path / "b1", {"/srv/tftp/initrd.img": F(b"one", role="initrd")}), target)
    plan = plan_for(make_build(tmp_path / "b2", {"/srv/tftp/initrd.img": F(b"two", role="initrd")}), target)
    update = next(c for c in plan.changes if c.path == "/srv/tftp/initrd.img")
    assert update.keep_as is not None and update.keep_as.startswith("/srv/tftp/initrd.img.")
    assert not update.backup


def test_a_filled_directory_we_deployed_is_left_with_a_warning(tmp_path: Path) -> None:
    target = tmp_path / "t"
    target.mkdir()
    deploy(make_build(tmp_path / "b1", {"/workers/home": D()}), target)
    (target / "workers/home/alice").mkdir()
    plan = plan_for(make_build(tmp_path / "b2", {"/etc/hosts": "x\n"}), target)
    assert "remove" not in [c.op for c in plan.changes]
    assert plan.warnings == ("/workers/home: no longer in the manifest but not empty; left in place",)
    assert "warning: /workers/home: no longer in the manifest" in render_text(plan, reload=None)


def test_a_directory_entry_met_by_a_symlink_to_a_directory_is_left_alone(tmp_path: Path) -> None:
    build = make_build(tmp_path / "build", {"/clients/lib": D(), "/clients/usr/lib": D()})
    target = make_tree(tmp_path / "t", {"/clients/usr/lib/.keep": "", "/clients/lib": L("usr/lib")})
    plan = plan_for(build, target)
    assert "/clients/lib" not in [c.path for c in plan.changes]
    assert plan.warnings == ("/clients/lib: is a symlink to a directory (usr/lib); left as is",)
    deploy(build, target)
    plan = plan_for(make_build(tmp_path / "b2", {"/clients/usr/lib": D()}), target)
    assert "remove" not in [c.op for c in plan.changes]
    assert (target / "clients/lib").is_symlink()


@pytest.mark.parametrize("path", [STATE_PATH, "/var/backups/nfsroot-pipeline/x/etc/hosts"])
def test_the_manifest_cannot_write_our_record_or_backups(tmp_path: Path, path: str) -> None:
    build = make_build(tmp_path / "build", {path: "forged\n"})
    with pytest.raises(PathConflictError, match="may not write into nfsroot-pipeline's own"):
        plan_for(build, tmp_path)
