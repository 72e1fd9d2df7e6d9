"""A 2,000-deep directory chain in the client root: plan, audit and the capabilities scan walk it without
recursion (issue 12 defect 8). Python's recursion limit is 1,000, so any recursive walk fails here."""

from __future__ import annotations

import json
import os
import struct
from collections.abc import Iterator
from pathlib import Path

import pytest

from pipeline.cli import EXIT_CHANGES, EXIT_OK, main
from pipeline.state.capabilities import scan_capabilities
from tests.deploy_helpers import make_build, make_tree
from tests.prereq import need

DEPTH = 2000
NET_RAW = struct.pack("<IIIII", 0x02000001, 1 << 13, 0, 0, 0)


def _chain(top: Path, depth: int) -> str:
    """Make top/d/d/.../d (`depth` levels, deeper than PATH_MAX allows by name) with a capability file at the
    bottom; returns its gateway path relative to `top`."""
    fd = os.open(top, os.O_RDONLY | os.O_DIRECTORY)
    try:
        for _ in range(depth):
            os.mkdir("d", dir_fd=fd)
            nfd = os.open("d", os.O_RDONLY | os.O_DIRECTORY, dir_fd=fd)
            os.close(fd)
            fd = nfd
        leaf = os.open("ping", os.O_WRONLY | os.O_CREAT, 0o755, dir_fd=fd)
        try:
            os.setxattr(leaf, "security.capability", NET_RAW)
        except OSError as exc:
            need(False, f"cannot set security.capability here: {exc}")
        finally:
            os.close(leaf)
    finally:
        os.close(fd)
    return "/d" * depth + "/ping"


def _remove_chain(top: Path) -> None:
    """Delete the chain bottom-up without recursion (shutil.rmtree recurses on Python 3.11)."""
    fds = [os.open(top, os.O_RDONLY | os.O_DIRECTORY)]
    while "d" in os.listdir(fds[-1]):
        fds.append(os.open("d", os.O_RDONLY | os.O_DIRECTORY, dir_fd=fds[-1]))
    for name in os.listdir(fds[-1]):
        os.unlink(name, dir_fd=fds[-1])
    os.close(fds.pop())
    while fds:
        os.rmdir("d", dir_fd=fds[-1])
        os.close(fds.pop())


@pytest.fixture
def deep_target(tmp_path: Path) -> Iterator[tuple[Path, str]]:
    target = make_tree(tmp_path / "t", {"/clients/etc/.keep": ""})
    leaf = _chain(target / "clients", DEPTH)
    try:
        yield target, "/clients" + leaf
    finally:
        _remove_chain(target / "clients")


def test_scan_reaches_the_bottom_of_a_deep_chain(deep_target: tuple[Path, str]) -> None:
    target, leaf = deep_target
    assert [(f.path, f.caps) for f in scan_capabilities(target, "/clients")] == [(leaf, "cap_net_raw=ep")]


def test_plan_and_audit_survive_a_deep_chain(
    deep_target: tuple[Path, str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    target, leaf = deep_target
    build = make_build(tmp_path / "build", {"/etc/hosts": "x\n"})
    common = ["--build", str(build), "--target", str(target), "--client-root", "/clients"]
    spec = str(tmp_path / "no-cluster.yaml")
    assert main(["-f", spec, "plan", *common, "--capabilities", "setuid", "--json"]) == EXIT_CHANGES
    doc = json.loads(capsys.readouterr().out)
    assert [c["path"] for c in doc["changes"] if c["op"] == "chmod"] == [leaf]
    assert main(["-f", spec, "audit", *common, "--capabilities", "setuid", "--json"]) == EXIT_OK
    report = json.loads(capsys.readouterr().out)
    assert [f["path"] for f in report["capabilities"]] == [leaf]


def test_deeply_nested_json_in_the_record_or_a_saved_plan_is_one_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    build = make_build(tmp_path / "build", {"/etc/hosts": "x\n"})
    target = make_tree(tmp_path / "t", {"/var/lib/nfsroot-pipeline/deployed.json": "[" * 100_000})
    spec = str(tmp_path / "no-cluster.yaml")
    common = ["--build", str(build), "--target", str(target)]
    assert main(["-f", spec, "plan", *common]) == 1
    assert "not a valid deployed-state record" in capsys.readouterr().err
    saved = tmp_path / "plan.json"
    saved.write_text('{"format": 1, "changes": ' + "[" * 100_000)
    assert main(["-f", spec, "apply", *common, "--plan", str(saved)]) == 1
    assert "not a usable plan file" in capsys.readouterr().err
