"""Users' homes on the shared /home, created by apply from the root (issue 9): the shipped cluster.yaml
deployed into a temporary target whose /clients holds a passwd, an /etc/skel and the root's own homes."""

from __future__ import annotations

import os
import re
import shutil
import stat
from pathlib import Path

import pytest

from pipeline.cli import EXIT_CHANGES, EXIT_OK, main
from pipeline.state.apply import CRASH_ENV
from pipeline.state.homes import dir_mode, users
from tests.deploy_helpers import F, make_build, snapshot

CLUSTER_YAML = Path(__file__).resolve().parents[1] / "cluster.yaml"
PASSWD = """root:x:0:0:root:/root:/bin/bash
daemon:x:1:1:daemon:/usr/sbin:/usr/sbin/nologin
user:x:1000:1000::/home/user:/bin/bash
ann:x:1001:1002:Ann:/home/ann:/bin/sh
svc:x:1003:1003::/home/svc:/usr/sbin/nologin
far:x:1004:1004::/srv/far:/bin/bash
nobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin
"""


def _spec(tmp_path: Path, target: Path, profile: str = "debian-systemd") -> Path:
    text = CLUSTER_YAML.read_text().replace("  root: gateway/", f"  root: {target}")
    text = re.sub(r"(?m)^  profile: \S+", f"  profile: {profile}", text)
    text = re.sub(r"(?ms)^  known:.*?(?=^\S|\Z)", "  known: []\n\n", text)  # no ssh keys to generate here
    spec = tmp_path / "cluster.yaml"
    spec.write_text(text)
    return spec


def _target(tmp_path: Path, adduser_conf: str | None = None) -> Path:
    target = tmp_path / "gw"
    etc = target / "clients/etc"
    (etc / "skel/.config").mkdir(parents=True)
    (etc / "passwd").write_text(PASSWD)
    (etc / "skel/.bashrc").write_text("# skel bashrc\n")
    (etc / "skel/.config/app").write_text("x\n")
    os.chmod(etc / "skel/.config/app", 0o600)
    (etc / "skel/.link").symlink_to("/etc/motd")  # copied as a link, never followed
    if adduser_conf is not None:
        (etc / "adduser.conf").write_text(adduser_conf)
    # The root's own home of `user` (hidden on the nodes by the /home mount), with its authorized keys.
    own = target / "clients/home/user"
    (own / ".ssh").mkdir(parents=True)
    (own / ".ssh/authorized_keys").write_text("ssh-ed25519 AAAA user@laptop\n")
    os.chmod(own / ".ssh", 0o700)
    os.chmod(own, 0o750)
    (target / "workers").mkdir()
    return target


def _cli(spec: Path, build: Path, *args: str) -> int:
    return main(["-f", str(spec), *args, "--build", str(build)])


def _build(tmp_path: Path) -> Path:
    return make_build(tmp_path / "build", {"/etc/exports.d/nfsroot.exports": F("/clients *(ro)\n", role="exports")})


def _tree(path: Path) -> dict[str, tuple[str, int, int, int]]:
    """relative path -> (kind, mode, uid, gid) of everything under `path`, the top included."""
    out = {}
    for p in [path, *sorted(path.rglob("*"))]:
        st = p.lstat()
        kind = "link" if p.is_symlink() else "dir" if p.is_dir() else "file"
        out[str(p.relative_to(path))] = (kind, stat.S_IMODE(st.st_mode), st.st_uid, st.st_gid)
    return out


def test_passwd_and_adduser_conf_are_read_as_debian_does() -> None:
    assert [u[0] for u in users(PASSWD)] == ["user", "ann", "far"]  # no system users, no nologin
    assert dir_mode(None) == 0o700  # bookworm adduser's default
    assert dir_mode("# Default: DIR_MODE=0700\n#DIR_MODE=0755\n") == 0o700  # comments are not settings
    assert dir_mode("DIR_MODE=0750\n") == 0o750
    assert dir_mode('DIR_MODE="0751"\nDIR_MODE=junk\n') == 0o751


def test_apply_makes_the_missing_homes_with_owner_and_mode_and_never_touches_them_again(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    target = _target(tmp_path, adduser_conf="DIR_MODE=0710\n")
    spec, build = _spec(tmp_path, target), _build(tmp_path)
    assert _cli(spec, build, "plan") == EXIT_CHANGES
    out = capsys.readouterr().out
    assert "mkhome   /workers/home/user  (home dir 0750, owner 1000:1000, from /clients/home/user)" in out
    assert "mkhome   /workers/home/ann  (home dir 0710, owner 1001:1002, from /clients/etc/skel)" in out
    assert "svc" not in out and "/srv/far" not in out  # no login shell; not under a shared mount
    assert not (target / "workers/home").exists()

    assert _cli(spec, build, "apply") == EXIT_OK
    home = target / "workers/home"
    # The root's own home, as it was built (the /home mount hides it on the nodes).
    assert _tree(home / "user") == {
        ".": ("dir", 0o750, 1000, 1000),
        ".ssh": ("dir", 0o700, 1000, 1000),
        ".ssh/authorized_keys": ("file", 0o644, 1000, 1000),
    }
    assert (home / "user/.ssh/authorized_keys").read_text() == "ssh-ed25519 AAAA user@laptop\n"
    assert _tree(home / "ann") == {
        ".": ("dir", 0o710, 1001, 1002),
        ".bashrc": ("file", 0o644, 1001, 1002),
        ".config": ("dir", 0o755, 1001, 1002),
        ".config/app": ("file", 0o600, 1001, 1002),
        ".link": ("link", 0o777, 1001, 1002),
    }
    assert os.readlink(home / "ann/.link") == "/etc/motd"
    assert [p.name for p in home.iterdir() if p.name.startswith(".")] == []  # no temporary left

    # The user's own changes are theirs: a later apply plans nothing for an existing home.
    (home / "ann/.bashrc").write_text("mine\n")
    os.chmod(home / "ann", 0o755)
    capsys.readouterr()
    assert _cli(spec, build, "plan") == EXIT_OK, capsys.readouterr().out
    assert (home / "ann/.bashrc").read_text() == "mine\n"
    assert stat.S_IMODE((home / "ann").stat().st_mode) == 0o755


def test_the_profile_off_or_no_root_makes_no_homes(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    target = _target(tmp_path)
    assert _cli(_spec(tmp_path, target, profile="none"), _build(tmp_path), "plan") == EXIT_CHANGES
    assert "mkhome" not in capsys.readouterr().out
    (target / "clients/etc/passwd").unlink()
    assert _cli(_spec(tmp_path, target), _build(tmp_path), "plan") == EXIT_CHANGES
    assert "mkhome" not in capsys.readouterr().out


def test_a_killed_apply_leaves_no_half_made_home(tmp_path: Path) -> None:
    base = _target(tmp_path)
    spec, build = _spec(tmp_path, base), _build(tmp_path)
    crashes = 0
    for steps in range(1, 60):
        target = tmp_path / f"run{steps}"
        shutil.copytree(base, target, symlinks=True)
        spec.write_text(re.sub(r"(?m)^  root: .*$", f"  root: {target}", spec.read_text()))
        pid = os.fork()
        if pid == 0:
            os.environ[CRASH_ENV] = str(steps)
            code = 3
            try:
                code = _cli(spec, build, "apply")
            finally:
                os._exit(code)
        code = os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1])
        if code == 0:
            break
        assert code == 137, f"apply failed (not killed) at step {steps}"
        crashes += 1
        for name in ("user", "ann"):  # whole or absent
            home = target / "workers/home" / name
            assert not home.exists() or _tree(home)["."][2] == 1000 + (name == "ann"), f"step {steps}"
            if home.exists():
                assert len(_tree(home)) == (3 if name == "user" else 5), f"step {steps}: {name} is partial"
        assert _cli(spec, build, "apply") == EXIT_OK
        assert {p.name for p in (target / "workers/home").iterdir()} == {"user", "ann"}, f"step {steps}"
        assert len(_tree(target / "workers/home/ann")) == 5
        assert snapshot(target)  # the target is still readable as a whole
    assert crashes > 3
