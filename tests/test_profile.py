"""root.profile: what debian-systemd puts into the manifest (each with its reason), and nothing for none."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from pipeline.errors import SpecError
from pipeline.render import profile
from pipeline.render.symlinks import render_symlink_artifacts, symlink_plan
from pipeline.spec.load import load_cluster
from pipeline.spec.model import Cluster
from tests.prereq import need

REPO = Path(__file__).resolve().parents[1]


def _shipped() -> Cluster:
    cluster, _ = load_cluster(REPO / "cluster.yaml")
    return cluster


def _with(cluster: Cluster, **root: object) -> Cluster:
    return cluster.model_copy(update={"root": cluster.root.model_copy(update=root)})


def test_the_shipped_spec_turns_the_profile_on() -> None:
    assert _shipped().root.profile == "debian-systemd"


def test_every_profile_entry_names_root_profile_and_its_path() -> None:
    found = {a.path: a for a in profile.artifacts(_shipped())}
    for path, kind, mode in (
        ("/clients/var/log", "dir", 0o755),
        ("/clients/var/tmp", "dir", 0o1777),
        ("/clients/tmp", "dir", 0o1777),
        ("/clients/var/lib/systemd", "dir", 0o755),
        ("/clients/var/lib/private", "dir", 0o700),
    ):
        assert (found[path].kind, found[path].mode) == (kind, mode)
        assert found[path].fields == ("root.profile", path.removeprefix("/clients"))
    assert found["/clients/etc/machine-id"].target == "/var/local/machine-id"
    assert found["/clients/etc/machine-id"].preserve == "/clients/usr/lib/nfsroot/skel/etc/machine-id"
    assert found["/clients/var/lib/dbus/machine-id"].target == "/etc/machine-id"
    for kind in ("ecdsa", "ed25519", "rsa"):
        for suffix in ("", ".pub"):
            name = f"ssh_host_{kind}_key{suffix}"
            assert found[f"/clients/etc/ssh/{name}"].target == f"/var/local/ssh/{name}"
    unit = found["/clients/etc/systemd/system/nfsroot-ssh-hostkeys.service"].data.decode()
    assert "Before=ssh.service" in unit and "ExecStart=/usr/lib/nfsroot/ssh-hostkeys" in unit
    wants = found["/clients/etc/systemd/system/multi-user.target.wants/nfsroot-ssh-hostkeys.service"]
    assert wants.target == "/etc/systemd/system/nfsroot-ssh-hostkeys.service"
    # The symlink family carries them into the manifest.
    assert set(found) <= {a.path for a in render_symlink_artifacts(_shipped())}


def test_profile_none_adds_nothing() -> None:
    plain = _with(_shipped(), profile="none")
    assert profile.artifacts(plain) == [] and profile.writable_paths(plain) == ()
    assert symlink_plan(plain)["profile"] == {"name": "none", "binds": [], "tmpfs": [], "links": []}


def test_the_spec_wins_over_the_profile() -> None:
    cluster = _shipped()
    links = {**cluster.symlinks, "/etc/machine-id": "/var/local/my-id"}
    custom = cluster.model_copy(update={"symlinks": links})
    assert "/etc/machine-id" not in {link.path for link in profile.links(custom)}


def test_unknown_profile_is_refused(tmp_path: Path) -> None:
    text = (REPO / "cluster.yaml").read_text().replace("profile: debian-systemd", "profile: arch")
    (tmp_path / "cluster.yaml").write_text(text)
    with pytest.raises(SpecError, match="profile"):
        load_cluster(tmp_path / "cluster.yaml")


def test_the_key_script_is_clean_sh_and_makes_keys(tmp_path: Path) -> None:
    script = profile.keygen_script(_shipped())
    need(shutil.which("shellcheck") is not None, "shellcheck is missing")
    subprocess.run(["shellcheck", "-s", "sh", "-"], input=script, check=True)
    need(shutil.which("ssh-keygen") is not None, "ssh-keygen is missing (openssh-client)")
    # Run it for real against a temporary node directory: one key pair per type, kept on a second run.
    runnable = script.replace(b"dir='/var/local/ssh'", f"dir='{tmp_path}/ssh'".encode())
    (tmp_path / "keys.sh").write_bytes(runnable)
    subprocess.run(["sh", str(tmp_path / "keys.sh")], check=True, capture_output=True)
    first = {p.name: p.read_bytes() for p in (tmp_path / "ssh").iterdir()}
    assert sorted(first) == sorted(f"ssh_host_{t}_key{s}" for t in ("ecdsa", "ed25519", "rsa") for s in ("", ".pub"))
    assert (tmp_path / "ssh/ssh_host_ed25519_key").stat().st_mode & 0o077 == 0
    subprocess.run(["sh", str(tmp_path / "keys.sh")], check=True, capture_output=True)
    assert {p.name: p.read_bytes() for p in (tmp_path / "ssh").iterdir()} == first
