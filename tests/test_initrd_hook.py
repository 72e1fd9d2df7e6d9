"""The /conf/conf.d/ hook of the overlay: shellcheck-clean, and it edits ORDER right under dash and busybox sh."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from pipeline.archive.overlay import order_hook, order_lines
from tests.test_initrd_support import require

DISTRO_ORDER = order_lines("udev")
SHELLS = [["dash"], ["busybox", "sh"]]


def test_hook_passes_shellcheck(tmp_path: Path) -> None:
    hook = tmp_path / "nfsroot-order"
    hook.write_bytes(order_hook("nfsroot"))
    proc = subprocess.run([require("shellcheck"), "-s", "sh", str(hook)], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout


def source_hook(shell: list[str], root: Path, name: str = "nfsroot") -> None:
    hook = root / "hook"
    hook.write_bytes(order_hook(name, root=str(root)))
    exe = require(shell[0])
    # Sourced, as /init does, with `set -e` to catch a failing command.
    subprocess.run([exe, *shell[1:], "-c", f"set -e; . {hook}; echo done"], check=True, capture_output=True)


def make_root(tmp_path: Path, order: bytes | None, script: bool = True) -> Path:
    bottom = tmp_path / "scripts" / "init-bottom"
    bottom.mkdir(parents=True)
    if order is not None:
        (bottom / "ORDER").write_bytes(order)
    if script:
        (bottom / "nfsroot").write_bytes(b"#!/bin/sh\n")
    return tmp_path


@pytest.mark.parametrize("shell", SHELLS, ids=lambda s: s[0])
def test_hook_appends_our_lines_once(shell: list[str], tmp_path: Path) -> None:
    root = make_root(tmp_path, DISTRO_ORDER)
    source_hook(shell, root)
    source_hook(shell, root)
    assert (root / "scripts/init-bottom/ORDER").read_bytes() == DISTRO_ORDER + order_lines("nfsroot")


@pytest.mark.parametrize("shell", SHELLS, ids=lambda s: s[0])
def test_hook_creates_order_when_the_distro_has_none(shell: list[str], tmp_path: Path) -> None:
    root = make_root(tmp_path, None)
    source_hook(shell, root)
    assert (root / "scripts/init-bottom/ORDER").read_bytes() == order_lines("nfsroot")


@pytest.mark.parametrize("shell", SHELLS, ids=lambda s: s[0])
def test_hook_leaves_order_alone_without_the_script_or_when_listed(shell: list[str], tmp_path: Path) -> None:
    root = make_root(tmp_path / "a", DISTRO_ORDER, script=False)
    source_hook(shell, root)
    assert (root / "scripts/init-bottom/ORDER").read_bytes() == DISTRO_ORDER
    listed = order_lines("nfsroot") + DISTRO_ORDER  # already there (e.g. a repacked initrd), in any position
    root = make_root(tmp_path / "b", listed)
    source_hook(shell, root)
    assert (root / "scripts/init-bottom/ORDER").read_bytes() == listed


def test_hook_leaves_no_variables_behind(tmp_path: Path) -> None:
    root = make_root(tmp_path, DISTRO_ORDER)
    hook = root / "hook"
    hook.write_bytes(order_hook("nfsroot", root=str(root)))
    out = subprocess.run([require("dash"), "-c", f". {hook}; set"], capture_output=True, text=True, check=True)
    assert "_nfsroot_" not in out.stdout
