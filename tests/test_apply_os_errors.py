"""OS errors during apply are one clear line and exit 1, the target left old-or-new (issue 12 defect 6)."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from pipeline.cli import EXIT_ERROR, EXIT_OK, main
from tests.deploy_helpers import F, make_build, make_tree
from tests.prereq import need, require_program


def _one_error_line(err: str, *needles: str) -> str:
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("nfsroot: error: ") and "Traceback" not in err
    for needle in needles:
        assert needle in lines[0], lines[0]
    return lines[0]


def _apply(build: Path, target: Path, *more: str) -> int:
    spec = str(build.parent / "no-cluster.yaml")
    return main(["-f", spec, "apply", "--build", str(build), "--target", str(target), "--no-reload", *more])


def _leftovers(target: Path) -> list[str]:
    return [str(p) for p in target.rglob(".nfsroot-tmp.*")]


@pytest.fixture
def tiny_fs(tmp_path: Path) -> Iterator[Path]:
    mnt = tmp_path / "tiny"
    mnt.mkdir()
    mount, umount = require_program("mount"), require_program("umount")
    proc = subprocess.run([mount, "-t", "tmpfs", "-o", "size=128k", "tmpfs", str(mnt)], capture_output=True)
    need(proc.returncode == 0, f"cannot mount a tmpfs here (needs root): {proc.stderr.decode().strip()}")
    try:
        yield mnt
    finally:
        subprocess.run([umount, str(mnt)], check=True)


def test_disk_full_is_one_line_and_leaves_the_file_old(
    tmp_path: Path, tiny_fs: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    build = make_build(tmp_path / "build", {"/etc/hosts": "new\n" * 100_000, "/etc/motd": "hi\n"})
    target = make_tree(tiny_fs, {"/etc/hosts": "old\n"})
    assert _apply(build, target) == EXIT_ERROR
    _one_error_line(capsys.readouterr().err, "/etc/hosts", "No space left on device")
    assert (target / "etc/hosts").read_text() == "old\n"
    assert _leftovers(target) == []
    # Room again: the next run finishes the job.
    (target / "etc/motd").unlink(missing_ok=True)
    small = make_build(tmp_path / "build2", {"/etc/hosts": "new\n", "/etc/motd": "hi\n"})
    assert _apply(small, target) == EXIT_OK
    assert (target / "etc/hosts").read_text() == "new\n"


@pytest.mark.parametrize(
    ("locked", "old"),
    [
        ("etc", "old\n"),  # an update: the rename into /etc is refused
        ("etc/hosts", "old\n"),  # an update: the immutable file cannot be replaced
        ("etc/hosts", "new\n"),  # a chmod of the immutable file itself
    ],
)
def test_an_immutable_file_is_one_line_and_stays_as_it_was(
    tmp_path: Path, locked: str, old: str, capsys: pytest.CaptureFixture[str]
) -> None:
    build = make_build(tmp_path / "build", {"/etc/hosts": "new\n"})
    target = make_tree(tmp_path / "t", {"/etc/hosts": F(old, mode="0600")})
    chattr = require_program("chattr")
    proc = subprocess.run([chattr, "+i", str(target / locked)], capture_output=True, text=True)
    need(proc.returncode == 0, f"chattr +i does not work on this filesystem: {proc.stderr.strip()}")
    try:
        assert _apply(build, target) == EXIT_ERROR
        _one_error_line(capsys.readouterr().err, "/etc/hosts", "Operation not permitted")
        assert (target / "etc/hosts").read_text() == old
        assert (target / "etc/hosts").stat().st_mode & 0o777 == 0o600
    finally:
        subprocess.run([chattr, "-i", str(target / locked)], check=True)
    assert _leftovers(target) == []


@pytest.mark.parametrize("kind", ["missing", "directory", "not-utf8", "not-json", "json-list"])
def test_an_unusable_saved_plan_is_one_line(tmp_path: Path, kind: str, capsys: pytest.CaptureFixture[str]) -> None:
    build = make_build(tmp_path / "build", {"/etc/hosts": "new\n"})
    target = make_tree(tmp_path / "t", {"/etc/hosts": "old\n"})
    saved = tmp_path / "plan.json"
    if kind == "directory":
        saved.mkdir()
    elif kind == "not-utf8":
        saved.write_bytes(b'{"format": 1, "cluster": "\xff"}')
    elif kind == "not-json":
        saved.write_text("{ nope")
    elif kind == "json-list":
        saved.write_text("[]")
    assert _apply(build, target, "--plan", str(saved)) == EXIT_ERROR
    _one_error_line(capsys.readouterr().err, str(saved))
    assert (target / "etc/hosts").read_text() == "old\n"


def test_a_plan_refused_for_another_target_does_not_create_it(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    build = make_build(tmp_path / "build", {"/etc/hosts": "new\n"})
    target = make_tree(tmp_path / "t", {"/etc/hosts": "old\n"})
    saved = tmp_path / "plan.json"
    spec = str(tmp_path / "no-cluster.yaml")
    main(["-f", spec, "plan", "--build", str(build), "--target", str(target), "--out", str(saved)])
    capsys.readouterr()
    other = tmp_path / "other" / "root"
    assert _apply(build, other, "--plan", str(saved)) == EXIT_ERROR
    _one_error_line(capsys.readouterr().err, "the plan was made for target")
    assert not os.path.lexists(other) and not os.path.lexists(other.parent)


def test_a_plan_that_cannot_be_saved_is_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    build = make_build(tmp_path / "build", {"/etc/hosts": "new\n"})
    target = make_tree(tmp_path / "t", {"/etc/hosts": "old\n"})
    (tmp_path / "a-file").write_text("")
    out = tmp_path / "a-file" / "plan.json"
    spec = str(tmp_path / "no-cluster.yaml")
    assert main(["-f", spec, "plan", "--build", str(build), "--target", str(target), "--out", str(out)]) == EXIT_ERROR
    _one_error_line(capsys.readouterr().err, str(out), "cannot save the plan")
