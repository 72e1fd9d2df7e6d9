"""observe: facts about a target root, read-only, never following a symlink out of it."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest

from pipeline.errors import UnsafePathError
from pipeline.state.observe import Fact, observe_path, observe_paths
from pipeline.state.rootfs import TargetRoot
from tests.deploy_helpers import D, F, L, make_tree, snapshot


def test_facts_for_each_kind(tmp_path: Path) -> None:
    target = make_tree(
        tmp_path / "t",
        {"/etc/a.conf": F("hello\n", mode="0640"), "/srv/empty": D("0700"), "/etc/link": L("a.conf")},
    )
    with TargetRoot(target) as root:
        facts = observe_paths(root, ["/etc/a.conf", "/srv/empty", "/etc/link", "/nope", "/nope/deeper"])
    uid, gid = os.getuid(), os.getgid()
    digest = hashlib.sha256(b"hello\n").hexdigest()
    assert facts["/etc/a.conf"] == Fact("/etc/a.conf", "file", 0o640, uid, gid, digest, 6, text="hello\n")
    assert facts["/srv/empty"] == Fact("/srv/empty", "dir", 0o700, uid, gid, empty=True)
    link = facts["/etc/link"]
    assert (link.kind, link.target, link.is_dir_link) == ("symlink", "a.conf", False)
    assert facts["/nope"].kind == "missing"
    assert facts["/nope/deeper"].kind == "missing"
    assert facts["/etc/a.conf"].fingerprint == f"file:0640:{digest}"


def test_below_a_file_is_missing_not_an_error(tmp_path: Path) -> None:
    target = make_tree(tmp_path / "t", {"/etc": "a file where a directory belongs"})
    with TargetRoot(target) as root:
        assert observe_path(root, "/etc/hostname").kind == "missing"


def test_observing_changes_nothing(tmp_path: Path) -> None:
    target = make_tree(tmp_path / "t", {"/a/b": "x", "/a/c": L("/elsewhere"), "/d": D()})
    before = snapshot(target)
    with TargetRoot(target) as root:
        observe_paths(root, ["/a/b", "/a/c", "/d", "/e/f"])
    assert snapshot(target) == before


def test_parent_symlink_inside_the_root_is_followed(tmp_path: Path) -> None:
    # Debian's merged /usr: lib -> usr/lib, and an absolute link naming the root's real location.
    target = make_tree(tmp_path / "t", {"/clients/usr/lib/x": "ok", "/clients/lib": L("usr/lib")})
    os.symlink(str(target / "clients" / "usr"), target / "clients" / "usr2")
    with TargetRoot(target) as root:
        assert observe_path(root, "/clients/lib/x").text == "ok"
        assert observe_path(root, "/clients/usr2/lib/x").text == "ok"
        assert observe_path(root, "/clients/lib").is_dir_link


@pytest.mark.parametrize("link", ["/etc", "../../..", "../../../etc", "sub/../../../.."])
def test_parent_symlink_leaving_the_root_is_refused(tmp_path: Path, link: str) -> None:
    outside = make_tree(tmp_path / "outside", {"/secret": "do not read"})
    target = make_tree(tmp_path / "t", {"/clients/sub/.keep": ""})
    os.symlink(link if link != "/etc" else str(outside), target / "clients" / "escape")
    with TargetRoot(target) as root, pytest.raises(UnsafePathError, match=r"/clients/escape.*target root"):
        observe_path(root, "/clients/escape/secret")


def test_leaf_symlink_pointing_outside_is_a_fact_not_followed(tmp_path: Path) -> None:
    outside = make_tree(tmp_path / "outside", {"/secret": "do not read"})
    target = make_tree(tmp_path / "t", {"/etc/.keep": ""})
    os.symlink(outside / "secret", target / "etc" / "hostname")
    with TargetRoot(target) as root:
        fact = observe_path(root, "/etc/hostname")
    assert (fact.kind, fact.target, fact.sha256, fact.text) == ("symlink", str(outside / "secret"), None, None)


def test_symlink_loop_is_refused(tmp_path: Path) -> None:
    target = make_tree(tmp_path / "t", {"/a": L("b"), "/b": L("a")})
    with TargetRoot(target) as root, pytest.raises(UnsafePathError, match="too many levels"):
        observe_path(root, "/a/x")
