"""Boot files come from the root: the root's kernel and initrd, resolved at plan time, kept for rollback."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from pipeline.cli import main
from pipeline.errors import SpecError
from pipeline.render.loader import LOADER_FILES
from pipeline.spec.kernel import version_key
from pipeline.state.apply import ApplyOptions, StalePlanError, apply_plan
from pipeline.state.deploy import plan_target
from pipeline.state.rollback import rollback_plan
from tests.prereq import need
from tests.spec_helpers import parse, spec_text

REPO = Path(__file__).resolve().parents[1]
NO_RELOAD = ApplyOptions(reload_argv=None)
PXE_DEFAULT = "srv/tftp/pxelinux.cfg/default"


def _doit(workdir: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("NFSROOT_")}
    proc = subprocess.run(
        [sys.executable, "-m", "doit", "run", "-f", str(REPO / "pipeline" / "tasks.py"), "-d", str(workdir),
         "--db-file", str(workdir / ".doit.db")],
        capture_output=True, text=True, env=env, check=False,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout + proc.stderr


def _build(tmp_path: Path, kernel: str) -> Path:
    """doit on the test spec choosing `kernel`; no root anywhere near (as in a fresh clone)."""
    work = tmp_path / "repo"
    work.mkdir()
    (work / "cluster.yaml").write_text(spec_text({17: f"  kernel: {kernel}"}))
    _doit(work)
    return work


def _install_kernel(target: Path, version: str, flavour: bytes = b"", modules: bool = True) -> None:
    """A fake linux-image in the root: /boot's kernel and initrd, and the version's modules directory."""
    boot = target / "clients/boot"
    boot.mkdir(parents=True, exist_ok=True)
    (boot / f"vmlinuz-{version}").write_bytes(b"kernel " + version.encode() + flavour)
    (boot / f"initrd.img-{version}").write_bytes(b"initrd " + version.encode() + flavour)
    if modules:
        (target / f"clients/lib/modules/{version}/kernel").mkdir(parents=True, exist_ok=True)


def _served(version: str, prefix: str, data: bytes) -> str:
    return f"/srv/tftp/boot/{prefix}{version}.{hashlib.sha256(data).hexdigest()[:12]}"


def _boot_lines(target: Path) -> list[str]:
    text = (target / PXE_DEFAULT).read_text()
    return [line for line in text.splitlines() if line.startswith(("KERNEL", "INITRD"))]


def _deploy(work: Path, target: Path) -> None:
    apply_plan(plan_target(work / "build", target), target, work / "build", NO_RELOAD)


def test_plan_copies_the_roots_own_kernel_and_initrd(tmp_path: Path) -> None:
    work = _build(tmp_path, "6.1.0-21-amd64")
    target = tmp_path / "gw"
    _install_kernel(target, "6.1.0-21-amd64")
    plan = plan_target(work / "build", target)
    kernel = _served("6.1.0-21-amd64", "vmlinuz-", b"kernel 6.1.0-21-amd64")
    initrd = _served("6.1.0-21-amd64", "initrd.img-", b"initrd 6.1.0-21-amd64")
    copies = {c.path: c for c in plan.changes if c.copy_from}
    assert set(copies) == {kernel, initrd}
    assert copies[kernel].copy_from == "/clients/boot/vmlinuz-6.1.0-21-amd64"
    assert "copy /clients/boot/vmlinuz-6.1.0-21-amd64 from the target root" in copies[kernel].reason
    apply_plan(plan, target, work / "build", NO_RELOAD)
    assert (target / kernel.lstrip("/")).read_bytes() == b"kernel 6.1.0-21-amd64"
    assert _boot_lines(target) == [
        f"KERNEL {kernel.removeprefix('/srv/tftp/')}",
        f"INITRD {initrd.removeprefix('/srv/tftp/')},{_overlay(work)}",
    ]
    assert plan_target(work / "build", target).changes == ()  # idempotent


def _overlay(work: Path) -> str:
    (name,) = [p.name for p in (work / "build/gateway/srv/tftp").glob("nfsroot-*.img")]
    return name


def test_kernel_upgrade_in_the_root_is_planned_and_rollback_restores_the_previous_pair(tmp_path: Path) -> None:
    work = _build(tmp_path, "newest")
    target = tmp_path / "gw"
    _install_kernel(target, "6.1.0-9-amd64")
    _deploy(work, target)
    old = _boot_lines(target)
    assert "vmlinuz-6.1.0-9-amd64." in old[0]

    _install_kernel(target, "6.1.0-10-amd64")  # apt upgrade in the root: 10 sorts after 9 as a number
    plan = plan_target(work / "build", target)
    created = {c.path for c in plan.changes if c.op == "create"}
    assert _served("6.1.0-10-amd64", "vmlinuz-", b"kernel 6.1.0-10-amd64") in created
    assert _served("6.1.0-10-amd64", "initrd.img-", b"initrd 6.1.0-10-amd64") in created
    assert any("newest is 6.1.0-10-amd64" in c.reason for c in plan.changes)
    assert not [c for c in plan.changes if c.op == "remove"], "the previous pair is kept for rollback"
    apply_plan(plan, target, work / "build", NO_RELOAD)
    new = _boot_lines(target)
    assert "vmlinuz-6.1.0-10-amd64." in new[0] and "initrd.img-6.1.0-10-amd64." in new[1]
    for line in old:  # the previous files are still served
        for name in line.split()[1].split(","):
            assert (target / "srv/tftp" / name).is_file(), name

    back = rollback_plan(target)
    apply_plan(back, target, None, NO_RELOAD)
    assert _boot_lines(target) == old


def test_a_rebuilt_initrd_of_the_same_version_is_a_new_file(tmp_path: Path) -> None:
    work = _build(tmp_path, "6.1.0-21-amd64")
    target = tmp_path / "gw"
    _install_kernel(target, "6.1.0-21-amd64")
    _deploy(work, target)
    (target / "clients/boot/initrd.img-6.1.0-21-amd64").write_bytes(b"regenerated by update-initramfs")
    plan = plan_target(work / "build", target)
    new = _served("6.1.0-21-amd64", "initrd.img-", b"regenerated by update-initramfs")
    assert [c.op for c in plan.changes if c.path == new] == ["create"]
    assert not [c for c in plan.changes if c.op in ("update", "remove") and c.role in ("kernel", "initrd")]


def test_missing_modules_is_an_error_at_the_spec_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    work = _build(tmp_path, "6.1.0-21-amd64")
    target = tmp_path / "gw"
    _install_kernel(target, "6.1.0-21-amd64", modules=False)
    before = sorted(p.relative_to(target) for p in target.rglob("*"))
    spec = work / "cluster.yaml"
    code = main(["-f", str(spec), "plan", "--build", str(work / "build"), "--target", str(target)])
    err = capsys.readouterr().err
    assert code == 1
    assert f"{spec}:17:11: boot.kernel: 6.1.0-21-amd64: /clients/lib/modules/6.1.0-21-amd64 is missing" in err
    code = main(["-f", str(spec), "apply", "--build", str(work / "build"), "--target", str(target), "--no-reload"])
    assert code == 1
    assert sorted(p.relative_to(target) for p in target.rglob("*")) == before  # nothing written


def test_a_version_the_root_lacks_names_the_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    work = _build(tmp_path, "6.1.0-21-amd64")
    target = tmp_path / "gw"
    _install_kernel(target, "6.1.0-22-amd64")
    code = main(["-f", str(work / "cluster.yaml"), "plan", "--build", str(work / "build"), "--target", str(target)])
    err = capsys.readouterr().err
    assert code == 1
    assert "boot.kernel: 6.1.0-21-amd64: the target root has no kernel /clients/boot/vmlinuz-6.1.0-21-amd64;" in err


def test_a_kernel_changed_between_plan_and_apply_is_refused(tmp_path: Path) -> None:
    work = _build(tmp_path, "6.1.0-21-amd64")
    target = tmp_path / "gw"
    _install_kernel(target, "6.1.0-21-amd64")
    plan = plan_target(work / "build", target)
    (target / "clients/boot/vmlinuz-6.1.0-21-amd64").write_bytes(b"swapped")
    with pytest.raises(StalePlanError, match="changed in the target since the plan"):
        apply_plan(plan, target, work / "build", NO_RELOAD)
    assert not (target / "srv").exists()


def test_loader_files_are_hashed_in_the_manifest(tmp_path: Path) -> None:
    need(all(Path(path).is_file() for _, path, _ in LOADER_FILES), "pxelinux and syslinux-common are not installed")
    work = _build(tmp_path, "6.1.0-21-amd64")
    entries = {e["path"]: e for e in json.loads((work / "build/manifest.json").read_text())["entries"]}
    for name, path, package in LOADER_FILES:
        entry = entries[f"/srv/tftp/{name}"]
        assert entry["sha256"] == hashlib.sha256(Path(path).read_bytes()).hexdigest()
        version = subprocess.run(
            ["dpkg-query", "--show", "--showformat=${Version}", package], capture_output=True, text=True, check=True
        ).stdout
        assert f"package {package} {version}" in entry["fields"]
    # The root's files are requests, not files: the build never saw a root.
    kernel = entries["/srv/tftp/boot/vmlinuz-6.1.0-21-amd64"]
    assert kernel["kind"] == "rootfile" and kernel["source_dir"] == "/clients/boot"


def test_kernel_choice_is_a_version_or_newest() -> None:
    assert parse(spec_text({17: "  kernel: newest"})).boot.kernel == "newest"
    with pytest.raises(SpecError) as raised:
        parse(spec_text({17: "  kernel: vmlinuz-6.1.0-21-amd64"}))
    assert "write 6.1.0-21-amd64: the kernel and initrd come from the root's /boot" in str(raised.value)
    assert sorted(["6.1.0-10-amd64", "6.1.0-9-amd64", "6.12.1-amd64"], key=version_key) == [
        "6.1.0-9-amd64",
        "6.1.0-10-amd64",
        "6.12.1-amd64",
    ]


def test_generations_beyond_keep_initrds_are_removed(tmp_path: Path) -> None:
    from pipeline.state.plan import PlanOptions

    work = _build(tmp_path, "newest")
    target = tmp_path / "gw"
    served = []
    for n in (7, 8, 9):
        _install_kernel(target, f"6.1.0-{n}-amd64")
        plan = plan_target(work / "build", target, PlanOptions(keep_initrds=1))
        apply_plan(plan, target, work / "build", NO_RELOAD)
        served.append(_served(f"6.1.0-{n}-amd64", "vmlinuz-", f"kernel 6.1.0-{n}-amd64".encode()))
        removed = {c.path for c in plan.changes if c.op == "remove"}
        if n == 9:  # one previous generation is kept: 8 stays for rollback, 7 goes
            assert served[0] in removed and served[1] not in removed
    assert [(target / p.lstrip("/")).exists() for p in served] == [False, True, True]


def test_a_manifest_cannot_ask_plan_to_copy_other_files_of_the_target() -> None:
    from pipeline.state.manifest import ManifestError, parse_manifest

    def manifest(entry: dict[str, object]) -> bytes:
        return json.dumps({"format": 1, "cluster": "c", "entries": [entry]}).encode()

    request = {
        "path": "/srv/tftp/boot/vmlinuz-newest", "kind": "rootfile", "role": "kernel", "mode": "0644",
        "source_dir": "/clients/boot", "prefix": "vmlinuz-", "version": "newest", "modules_dir": "/clients/lib/modules",
    }  # fmt: skip
    parse_manifest(manifest(request))
    for bad in ({"source_dir": "/etc"}, {"prefix": "shad"}, {"version": "ow"}, {"modules_dir": "/"}):
        with pytest.raises(ManifestError):
            parse_manifest(manifest(request | bad))
    copy = {"path": "/srv/tftp/x", "kind": "file", "role": "r", "mode": "0644", "sha256": "0" * 64, "size": 1}
    with pytest.raises(ManifestError, match="needs `staged` and no `source`"):
        parse_manifest(manifest(copy | {"source": "/etc/shadow"}))
