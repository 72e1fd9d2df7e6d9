"""Nothing a target root holds can inject lines or terminal sequences into plan, apply, audit or error output
(issue 12 defect 11): control characters in paths, link targets and reasons are shown escaped."""

from __future__ import annotations

import os
import struct
from pathlib import Path

import pytest

from pipeline.cli import EXIT_CHANGES, EXIT_ERROR, EXIT_OK, main
from tests.deploy_helpers import F, L, make_build, make_tree
from tests.prereq import need

SPOOF = "x\nNo changes. The target matches the build.\n\x1b[2J\r\x9b"
NET_RAW = struct.pack("<IIIII", 0x02000001, 1 << 13, 0, 0, 0)


def _clean(out: str) -> None:
    assert "No changes. The target matches the build." not in out.splitlines()
    for ch in out:
        assert ch == "\n" or ch.isprintable(), f"raw control character {ch!r} in output"


def _run(tmp_path: Path, *args: str) -> int:
    return main(["-f", str(tmp_path / "none.yaml"), *args])


def test_a_spoofing_symlink_target_is_escaped_in_plan_and_apply(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    build = make_build(tmp_path / "build", {"/etc/link": L("/new"), "/etc/hosts": F("x\n")})
    target = make_tree(tmp_path / "t", {"/etc/link": L(SPOOF), "/etc/hosts": "old\x1b[31m\n"})
    common = ["--build", str(build), "--target", str(target)]
    assert _run(tmp_path, "plan", *common) == EXIT_CHANGES
    out = capsys.readouterr().out
    _clean(out)
    assert "link target differs (x\\nNo changes. The target matches the build.\\n\\x1b[2J\\r\\x9b)" in out
    assert "-old\\x1b[31m" in out  # the diff of the target's content, too
    assert _run(tmp_path, "apply", *common, "--no-reload") == EXIT_OK
    _clean(capsys.readouterr().out)


def test_control_characters_in_client_root_names_are_escaped_in_plan_and_audit(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    build = make_build(tmp_path / "build", {"/etc/hosts": "x\n"})
    target = make_tree(tmp_path / "t", {"/clients/usr/bin/.keep": ""})
    name = "ping\nNo changes. The target matches the build.\x1b]0;owned\x07"
    evil = target / "clients/usr/bin" / name
    evil.write_bytes(b"#!/bin/true\n")
    os.chmod(evil, 0o755)
    try:
        os.setxattr(evil, "security.capability", NET_RAW)
    except OSError as exc:
        need(False, f"cannot set security.capability here: {exc}")
    common = ["--build", str(build), "--target", str(target), "--client-root", "/clients", "--capabilities", "setuid"]
    assert _run(tmp_path, "plan", *common) == EXIT_CHANGES
    out = capsys.readouterr().out
    _clean(out)
    assert "/clients/usr/bin/ping\\nNo changes. The target matches the build.\\x1b]0;owned\\x07" in out
    assert _run(tmp_path, "audit", *common) == EXIT_OK
    _clean(capsys.readouterr().out)


def test_an_error_naming_a_hostile_link_is_one_escaped_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    build = make_build(tmp_path / "build", {"/etc/hosts": "x\n"})
    target = make_tree(tmp_path / "t", {"/etc": L("/nowhere\nNo changes. The target matches the build.\x1b[2J")})
    assert _run(tmp_path, "plan", "--build", str(build), "--target", str(target)) == EXIT_ERROR
    err = capsys.readouterr().err
    _clean(err)
    assert len(err.strip().splitlines()) == 1
    assert "/nowhere\\nNo changes. The target matches the build.\\x1b[2J" in err  # escaped once, not twice
