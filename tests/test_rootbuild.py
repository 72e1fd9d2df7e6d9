"""Building the root from the spec (rootfs): validated values, the users hook run for real, generations."""

from __future__ import annotations

import os
import shlex
import shutil
import subprocess
import tarfile
from pathlib import Path

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from pipeline.errors import SpecError
from pipeline.rootbuild.build import build_root
from pipeline.rootbuild.generations import GenerationError, install_generation, read_order, rollback_generation
from pipeline.rootbuild.recipe import cache_key, mmdebstrap_argv, users_script
from pipeline.spec.load import parse_cluster
from pipeline.spec.rootfs import RootBuild
from tests.prereq import need, require_program
from tests.spec_helpers import parse, problems, spec_text
from tests.test_hostile_values import DANGEROUS, hostile

KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIGZha2Uga2V5IGZvciB0ZXN0cw user@laptop"
HASH = "$y$j9T$F5Jx5fExrKuPp53xLKQ..1$X3DX6M94c7o.9agCG9G317fhZg9SqC.5i5rd.RhAtQ7"
SECTION = [
    "rootfs:",
    "  packages: [systemd, openssh-server]",
    "  users:",
    f"    - {{name: user, uid: 1000, groups: [sudo, netdev], authorized_keys: ['{KEY}'], password_hash: '{HASH}'}}",
]


def _rootfs(lines: list[str] = SECTION) -> RootBuild:
    cluster = parse(spec_text(append=lines))
    assert cluster.rootfs is not None
    return cluster.rootfs


def test_the_section_is_optional_and_validated() -> None:
    assert parse(spec_text()).rootfs is None
    assert _rootfs().users[0].groups == ("sudo", "netdev")
    bad = {
        "name: 'Bad User'": "is not a user name",
        f"name: user, uid: 1000, authorized_keys: ['command=\"reboot\" {KEY}']": "is not a public ssh key",
        "name: user, uid: 1000, password_hash: 'x; reboot'": "is not a password hash",
        "name: user, uid: 0": "greater than or equal to 1000",
    }
    for fields, message in bad.items():
        found = problems(spec_text(append=["rootfs:", "  users:", f"    - {{{fields}}}"]))
        assert any(message in p and p.startswith("cluster.yaml:29:") for p in found), (fields, found)
    found = problems(spec_text(append=["rootfs:", "  packages: ['vim; reboot']"]))
    assert any("is not a Debian package name" in p for p in found), found


def test_mmdebstrap_argv_and_cache_key() -> None:
    build = _rootfs()
    argv = mmdebstrap_argv(build, "/b/hook.sh", "/b/out.tar")
    assert argv[:4] == ["mmdebstrap", "--mode=root", "--variant=minbase", "--format=tar"]
    assert "--include=systemd,openssh-server" in argv
    assert argv[-3:] == ["bookworm", "/b/out.tar", "http://deb.debian.org/debian"]
    key = cache_key(build, 1, "mmdebstrap 1.3.5")
    assert key == cache_key(_rootfs(), 1, "mmdebstrap 1.3.5")  # same inputs, same key
    more = _rootfs([SECTION[0], "  packages: [systemd, openssh-server, vim]", *SECTION[2:]])
    assert len({key, cache_key(more, 1, "mmdebstrap 1.3.5"), cache_key(build, 2, "mmdebstrap 1.3.5")}) == 3


def test_users_script_passes_shellcheck(tmp_path: Path) -> None:
    shellcheck = require_program("shellcheck")
    (tmp_path / "hook.sh").write_bytes(users_script(_rootfs()))
    proc = subprocess.run([shellcheck, "-s", "sh", str(tmp_path / "hook.sh")], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout


def _fake_root(root: Path) -> None:
    """What the hook finds in a fresh minbase root: the base passwd/group files and /etc/skel."""
    (root / "etc/skel").mkdir(parents=True)
    (root / "home").mkdir()
    (root / "etc/passwd").write_text("root:x:0:0:root:/root:/bin/bash\n")
    (root / "etc/group").write_text("root:x:0:\nsudo:x:27:\nusers:x:100:\n")
    (root / "etc/shadow").write_text("root:*:19000:0:99999:7:::\n")
    (root / "etc/gshadow").write_text("root:*::\nsudo:*::\nusers:*::\n")
    (root / "etc/skel/.profile").write_text("# the root's own skeleton\n")


def _run_hook(tmp_path: Path, name: str) -> Path:
    need(os.geteuid() == 0, "the users hook chowns homes (needs root)")
    require_program("useradd")
    root = tmp_path / name
    _fake_root(root)
    (tmp_path / "hook.sh").write_bytes(users_script(_rootfs()))
    env = {**os.environ, "SOURCE_DATE_EPOCH": "1704067200"}
    subprocess.run(["sh", str(tmp_path / "hook.sh"), str(root)], check=True, env=env, capture_output=True)
    return root


def test_users_hook_creates_users_homes_and_keys_in_the_root(tmp_path: Path) -> None:
    root = _run_hook(tmp_path, "root")
    assert "user:x:1000:1000::/home/user:/bin/bash" in (root / "etc/passwd").read_text().splitlines()
    groups = (root / "etc/group").read_text().splitlines()
    assert "sudo:x:27:user" in groups and "user:x:1000:" in groups
    assert any(g.startswith("netdev:x:") and g.endswith(":user") and int(g.split(":")[2]) < 1000 for g in groups)
    assert f"user:{HASH}:19723::::::" in (root / "etc/shadow").read_text().splitlines()  # day of the epoch
    home = root / "home/user"
    assert (home / ".profile").read_text() == "# the root's own skeleton\n"  # not the build machine's skel
    keys = home / ".ssh/authorized_keys"
    assert keys.read_text() == KEY + "\n"
    st = keys.stat()
    assert (st.st_uid, st.st_gid, st.st_mode & 0o777) == (1000, 1000, 0o600)
    assert (home / ".ssh").stat().st_mode & 0o777 == 0o700


def test_users_hook_is_reproducible(tmp_path: Path) -> None:
    one, two = _run_hook(tmp_path, "one"), _run_hook(tmp_path, "two")
    for name in ("passwd", "group", "shadow", "gshadow"):
        assert (one / "etc" / name).read_bytes() == (two / "etc" / name).read_bytes(), name


def _tarball(tmp_path: Path, name: str, marker: str) -> Path:
    tree = tmp_path / f"tree-{name}"
    (tree / "etc").mkdir(parents=True, exist_ok=True)
    (tree / "etc/os-release").write_text(f"ID={marker}\n")
    (tree / "tmp").mkdir(exist_ok=True)
    os.chmod(tree / "tmp", 0o1777)
    out = tmp_path / f"{name}.tar"
    with tarfile.open(out, "w") as tar:
        tar.add(tree, arcname=".")
    return out


def test_generations_switch_atomically_and_roll_back(tmp_path: Path) -> None:
    target = tmp_path / "gw"
    target.mkdir()
    first = install_generation(target, "/clients", _tarball(tmp_path, "a", "first"), "aaaa", keep=1)
    assert (first.current, first.previous, first.unpacked) == ("aaaa", None, True)
    assert os.readlink(target / "clients") == "clients.generations/aaaa"
    assert (target / "clients/etc/os-release").read_text() == "ID=first\n"
    assert (target / "clients/tmp").stat().st_mode & 0o7777 == 0o1777  # modes survive the unpack

    again = install_generation(target, "/clients", _tarball(tmp_path, "a", "first"), "aaaa", keep=1)
    assert not again.unpacked  # the same key is already on disk

    live = target / "clients.generations/aaaa/etc/os-release"
    inode = live.stat().st_ino
    second = install_generation(target, "/clients", _tarball(tmp_path, "b", "second"), "bbbb", keep=1)
    assert (second.current, second.previous) == ("bbbb", "aaaa")
    assert (target / "clients/etc/os-release").read_text() == "ID=second\n"
    assert live.stat().st_ino == inode and live.read_text() == "ID=first\n"  # the old root was not touched
    assert read_order(target, "/clients") == ["bbbb", "aaaa"]

    third = install_generation(target, "/clients", _tarball(tmp_path, "c", "third"), "cccc", keep=1)
    assert third.removed == ("aaaa",) and not (target / "clients.generations/aaaa").exists()

    back = rollback_generation(target, "/clients")
    assert (back.current, back.previous) == ("bbbb", "cccc")
    assert (target / "clients/etc/os-release").read_text() == "ID=second\n"


def test_an_adopted_root_directory_is_never_replaced(tmp_path: Path) -> None:
    target = tmp_path / "gw"
    (target / "clients/etc").mkdir(parents=True)
    with pytest.raises(GenerationError, match="is a directory"):
        install_generation(target, "/clients", _tarball(tmp_path, "a", "first"), "aaaa")
    assert (target / "clients").is_dir() and not (target / "clients").is_symlink()


def _apt_mirror() -> str | None:
    """The Debian mirror this machine's apt uses (deb822 `URIs:` or one-line `deb URI suite`), if any."""
    files = [Path("/etc/apt/sources.list"), *sorted(Path("/etc/apt/sources.list.d").glob("*"))]
    for f in files:
        try:
            lines = f.read_text().splitlines()
        except OSError:
            continue
        for line in lines:
            words = line.split("#", 1)[0].split()
            if words[:1] == ["URIs:"] and len(words) > 1 and words[1].startswith("http"):
                return words[1]
            if words[:1] == ["deb"] and len(words) > 2:
                uri = next((w for w in words[1:] if w.startswith("http")), None)
                if uri:
                    return uri
    return None


@pytest.mark.boot
def test_mmdebstrap_builds_a_small_root_with_users_and_packages(tmp_path: Path) -> None:
    # Building needs a Debian mirror: the one this machine's apt uses (Debian's archive is reachable from these
    # machines and CI), or NFSROOT_TEST_MIRROR (a local mirror or snapshot URL).
    mirror = os.environ.get("NFSROOT_TEST_MIRROR") or _apt_mirror()
    need(mirror is not None, "a Debian mirror in /etc/apt/sources.list* or NFSROOT_TEST_MIRROR")
    assert mirror is not None
    need(os.geteuid() == 0 and shutil.which("mmdebstrap") is not None, "mmdebstrap as root")
    build = _rootfs(["rootfs:", f"  mirror: '{mirror}'", "  packages: [iputils-ping]", *SECTION[2:]])
    tarball, built = build_root(build, tmp_path / "rootfs")
    assert built
    with tarfile.open(tarball) as tar:
        passwd = tar.extractfile("./etc/passwd").read().decode()  # type: ignore[union-attr]
        status = tar.extractfile("./var/lib/dpkg/status").read().decode()  # type: ignore[union-attr]
        assert "./home/user/.ssh/authorized_keys" in tar.getnames()
    assert "user:x:1000:1000::/home/user:/bin/bash" in passwd.splitlines()
    assert "Package: iputils-ping" in status
    assert build_root(build, tmp_path / "rootfs") == (tarball, False)  # cached by its inputs


def test_the_example_builds_its_root_and_the_shipped_spec_adopts_its_own() -> None:
    from pipeline.spec.load import load_cluster

    repo = Path(__file__).resolve().parents[1]
    example, _ = load_cluster(repo / "examples/built-root.yaml")
    assert example.rootfs is not None and example.boot.kernel == "newest"
    assert {"linux-image-amd64", "systemd", "openssh-server"} <= set(example.rootfs.packages)
    assert [u.name for u in example.rootfs.users] == ["user"]
    assert load_cluster(repo / "cluster.yaml")[0].rootfs is None


def _root_tarball(tmp_path: Path, name: str, hostname: str) -> Path:
    """A root as mmdebstrap leaves it: its own /etc/hostname and hosts, a kernel with its modules."""
    tree = tmp_path / f"root-{name}"
    for d in ("etc", "var/local", "home", "boot", "lib/modules/6.1.0-21-amd64"):
        (tree / d).mkdir(parents=True)
    (tree / "etc/hostname").write_text(hostname)
    (tree / "etc/hosts").write_text("127.0.0.1 localhost\n")
    (tree / "boot/vmlinuz-6.1.0-21-amd64").write_bytes(b"kernel")
    (tree / "boot/initrd.img-6.1.0-21-amd64").write_bytes(b"initrd")
    out = tmp_path / f"{name}.tar"
    with tarfile.open(out, "w") as tar:
        tar.add(tree, arcname=".")
    return out


def test_a_new_generation_is_prepared_before_it_goes_live(tmp_path: Path) -> None:
    from pipeline.rootbuild.prepare import prepare_generation
    from pipeline.state.apply import ApplyOptions, apply_plan
    from pipeline.state.deploy import plan_target
    from tests.test_bootfiles import _build

    work = _build(tmp_path, "6.1.0-21-amd64")
    build, target = work / "build", tmp_path / "gw"
    target.mkdir()

    def prepare(generation: str) -> None:
        live = os.readlink(target / "clients") if os.path.lexists(target / "clients") else None
        assert live != generation.removeprefix("/"), "prepared before it goes live"
        assert prepare_generation(build, target, "/clients", generation) > 0

    install_generation(target, "/clients", _root_tarball(tmp_path, "a", "debian\n"), "aaaa", 1, prepare)
    gen = target / "clients.generations/aaaa"
    assert os.readlink(gen / "etc/hostname") == "/var/local/hostname"
    assert (gen / "usr/lib/nfsroot/skel/etc/hostname").read_text() == "debian\n"  # the node skeleton
    plan = plan_target(build, target)
    assert not [c for c in plan.changes if c.path.startswith("/clients/")], "already right in the generation"
    apply_plan(plan, target, build, ApplyOptions(None))
    assert plan_target(build, target).changes == ()

    link = os.stat(gen / "etc/hostname", follow_symlinks=False)
    install_generation(target, "/clients", _root_tarball(tmp_path, "b", "other\n"), "bbbb", 1, prepare)
    assert os.stat(gen / "etc/hostname", follow_symlinks=False) == link  # the live one was never touched
    assert (target / "clients/usr/lib/nfsroot/skel/etc/hostname").read_text() == "other\n"
    assert plan_target(build, target).changes == ()  # the switch left nothing for apply to do


ROOTFS_FIELDS = ("name", "group", "shell", "key", "password_hash", "package")


@settings(max_examples=300, deadline=None)
@given(field=st.sampled_from(ROOTFS_FIELDS), value=hostile)
def test_hostile_rootfs_values_are_rejected_or_quoted(field: str, value: str) -> None:
    user = {"name": "user", "uid": 1000, "groups": ["sudo"], "shell": "/bin/bash", "authorized_keys": [KEY]}
    section: dict[str, object] = {"packages": ["systemd"], "users": [user]}
    if field == "package":
        section["packages"] = [value]
    elif field == "group":
        user["groups"] = [value]
    elif field == "key":
        user["authorized_keys"] = [value]
    else:
        user[field] = value
    doc = yaml.safe_load(spec_text())
    doc["rootfs"] = section
    try:
        cluster, _ = parse_cluster(yaml.safe_dump(doc), "cluster.yaml")
    except SpecError as exc:
        assert exc.problems
        return
    assert cluster.rootfs is not None
    script = users_script(cluster.rootfs).decode()
    argv = mmdebstrap_argv(cluster.rootfs, "/b/hook.sh", "/b/out.tar")
    if field == "key":  # a key line has spaces, so it only ever appears quoted as a whole
        assert shlex.quote(value + "\n") in script
    elif field == "password_hash":  # $ is part of crypt(3) output: single-quoted, never expanded
        assert set(value) & DANGEROUS <= {"$", "!", "*"} and (value in ("!", "*") or shlex.quote(value) in script)
    else:
        assert not set(value) & DANGEROUS, f"{field}={value!r} accepted"
        assert all("\n" not in a for a in argv)


def test_cli_install_uses_the_cached_build_and_switches(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from pipeline.cli import main
    from pipeline.rootbuild.build import mmdebstrap_version, root_epoch
    from pipeline.rootbuild.recipe import tarball_name
    from tests.test_bootfiles import _doit

    need(shutil.which("mmdebstrap") is not None, "mmdebstrap is not installed")
    work = tmp_path / "repo"
    work.mkdir()
    (work / "cluster.yaml").write_text(spec_text(append=SECTION))
    _doit(work)
    build = parse(spec_text(append=SECTION)).rootfs
    assert build is not None
    key = cache_key(build, root_epoch(), mmdebstrap_version())
    (work / "build/rootfs").mkdir()
    shutil.copy(_root_tarball(tmp_path, "a", "debian\n"), work / "build/rootfs" / tarball_name(key))  # "built" before
    target = tmp_path / "gw"
    argv = ["-f", str(work / "cluster.yaml"), "rootfs", "install", "--build", str(work / "build"), "--target"]
    assert main([*argv, str(target)]) == 0
    out = capsys.readouterr().out
    assert f"/clients -> /clients.generations/{key} (was nothing)" in out
    assert os.readlink(target / "clients/etc/hostname") == "/var/local/hostname"
    rollback = ["-f", str(work / "cluster.yaml"), "rootfs", "rollback", "--target", str(target)]
    assert main(rollback) == 1  # nothing older is kept yet
    assert "no previous generation of /clients is kept" in capsys.readouterr().err
