"""Incremental builds: each family reads only the spec parts it declares, and doit reruns exactly those tasks."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from pipeline import outputs
from pipeline.spec.model import Cluster
from tests.spec_helpers import parse, spec_text

REPO = Path(__file__).resolve().parents[1]

# One valid edit per part of the spec (line number → new line of tests.spec_helpers.BASE_LINES).
EDITS: dict[str, dict[int, str]] = {
    "name": {1: "name: other"},
    "gateway": {3: "  address: 192.168.0.253"},
    "shares": {8: "  workers: {path: /workers, access: rw, options: [no_subtree_check, sync]}"},
    "shares.paths": {8: "  workers: {path: /srv/workers, access: rw, options: [no_subtree_check, async]}"},
    "root": {9: "root: {share: clients, options: [ro, tcp]}"},
    "writable": {12: "  - {mount: /home, share: workers, subdir: homes}"},
    "symlinks": {15: "  /etc/hosts: /var/local/hosts\n  /etc/adjtime: /var/local/adjtime"},
    "boot": {19: "  cmdline: [nfsrootdebug, quiet]"},
    "nodes.hostname": {22: '  hostname: "node-{mac}"'},
    "nodes.known": {25: '    - {mac: "44:8a:5b:dd:d8:ba", hostname: gpu1, address: 192.168.0.7}'},
    "deploy": {
        26: "deploy: {root: gateway/, exports_file: /etc/exports.d/cluster.exports, hosts_file: /etc/cluster-hosts}"
    },
    "firmware": {26: "deploy: {root: gateway/}\nfirmware: {uefi: ipxe}"},
    "dhcp": {26: "deploy: {root: gateway/}\ndhcp: {mode: proxy}"},
    "groups": {26: "deploy: {root: gateway/}\ngroups: {gpu: {boot: {cmdline: [quiet]}}}"},
    "nodes.default_group": {
        23: "  default_group: gpu\n  known:",
        26: "deploy: {root: gateway/}\ngroups: {gpu: {boot: {cmdline: [quiet]}}}",
    },
}


def _family_output(name: str) -> Callable[[Cluster], object]:
    if name == "pxelinux":
        return lambda c: outputs.pxelinux(
            c, ["initrd.img", "ours.img"], {v.name: ["initrd.img", "theirs.img"] for v in c.groups_resolved()[1:]}
        )
    if name == "initrd":
        return lambda c: outputs.overlay_image(c)
    return outputs.SIMPLE[name]


@pytest.mark.parametrize("family", sorted(outputs.FAMILIES))
def test_family_reads_only_its_declared_parts(family: str) -> None:
    render = _family_output(family)
    base = render(parse(spec_text()))
    declared = outputs.FAMILIES[family].parts
    for part, edit in EDITS.items():
        changed = render(parse(spec_text(edit))) != base
        if part not in declared and not (part == "shares.paths" and "shares" in declared):
            assert not changed, f"{family} changed when {part} was edited, but does not declare {part}"


def test_every_part_matters_to_some_family() -> None:
    for part, edit in EDITS.items():
        assert any(
            _family_output(f)(parse(spec_text(edit))) != _family_output(f)(parse(spec_text())) for f in outputs.FAMILIES
        ), f"editing {part} changes no output"


def _doit(workdir: Path, *args: str) -> tuple[set[str], set[str], str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("NFSROOT_")}
    command, tasks = (list(args[:1]), list(args[1:])) if args[:1] == ("clean",) else (["run"], list(args))
    proc = subprocess.run(
        [sys.executable, "-m", "doit", *command, "-f", str(REPO / "pipeline" / "tasks.py"), "-d", str(workdir),
         "--db-file", str(workdir / ".doit.db"), *tasks],
        capture_output=True, text=True, env=env, check=False,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout + proc.stderr
    ran = set(re.findall(r"^\.  (\S+)$", proc.stdout, re.M))
    skipped = set(re.findall(r"^-- (\S+)$", proc.stdout, re.M))
    return ran, skipped, proc.stdout + proc.stderr


@pytest.fixture
def workdir(tmp_path: Path) -> Path:
    (tmp_path / "cluster.yaml").write_text(spec_text())
    return tmp_path


ALL = {"spec", "schema", "review", "manifest"} | {f"render:{f}" for f in outputs.FAMILIES}


def test_doit_reruns_exactly_the_affected_tasks(workdir: Path) -> None:
    ran, _, _ = _doit(workdir)
    assert ran == ALL
    assert (workdir / "build" / "manifest.json").is_file()

    ran, skipped, _ = _doit(workdir)
    assert ran == set(), "a second doit with nothing changed must execute no task"
    assert skipped == ALL

    # Edit one node: the exports and the initrd must not be rebuilt.
    (workdir / "cluster.yaml").write_text(spec_text(EDITS["nodes.known"]))
    ran, _, _ = _doit(workdir)
    # dnsmasq reads the nodes (dhcp-host lines) but renders nothing here: it runs, its output is unchanged.
    assert ran == {"spec", "render:pxelinux", "render:hosts", "render:symlinks", "render:dnsmasq", "manifest", "review"}

    # Edit an export option: the pxelinux files must not be rewritten.
    pxelinux = workdir / "build" / "gateway" / "srv" / "tftp" / "pxelinux.cfg" / "default"
    before = pxelinux.stat().st_mtime_ns
    (workdir / "cluster.yaml").write_text(spec_text({**EDITS["nodes.known"], **EDITS["shares"]}))
    ran, _, _ = _doit(workdir)
    assert ran == {"spec", "render:exports", "manifest", "review"}
    assert pxelinux.stat().st_mtime_ns == before


def test_an_invalid_spec_writes_nothing(workdir: Path) -> None:
    _doit(workdir)
    snapshot = {p: p.read_bytes() for p in (workdir / "build").rglob("*") if p.is_file()}
    (workdir / "cluster.yaml").write_text(spec_text({3: "  address: 10.0.0.1"}))
    env = {k: v for k, v in os.environ.items() if not k.startswith("NFSROOT_")}
    proc = subprocess.run(
        [sys.executable, "-m", "doit", "-f", str(REPO / "pipeline" / "tasks.py"), "-d", str(workdir), "--db-file",
         str(workdir / ".doit.db")],
        capture_output=True, text=True, env=env, check=False,
    )  # fmt: skip
    assert proc.returncode != 0
    assert (
        "cluster.yaml:3:12: gateway.address: 10.0.0.1 is not inside the gateway network 192.168.0.0/24"
        in proc.stdout + proc.stderr
    )
    assert {p: p.read_bytes() for p in (workdir / "build").rglob("*") if p.is_file()} == snapshot


def test_code_and_templates_are_dependencies() -> None:
    import pipeline.tasks as tasks

    deps = {t["name"]: set(t["file_dep"]) for t in tasks.task_render()}
    assert str(REPO / "templates" / "pxelinux.cfg.j2") in deps["pxelinux"]
    assert str(REPO / "pipeline" / "render" / "pxelinux.py") in deps["pxelinux"]
    assert str(REPO / "templates" / "initramfs" / "nfsroot.sh.j2") in deps["initrd"]
    assert str(REPO / "pipeline" / "archive" / "cpio.py") in deps["initrd"]
    assert str(REPO / "pipeline" / "spec" / "model.py") in deps["exports"]


def test_doit_clean_removes_the_build(workdir: Path) -> None:
    _doit(workdir)
    _doit(workdir, "clean")
    assert not (workdir / "build" / "manifest.json").exists()
    shutil.rmtree(workdir / "build", ignore_errors=True)


def _distro_initrd(path: Path, marker: bytes) -> None:
    """A small zstd initrd shaped like Debian's main archive (enough for repack to inject our script)."""
    import io

    import zstandard

    from pipeline.archive.cpio import Entry, write_archive

    entries = [
        Entry.directory("scripts", 0o755),
        Entry.directory("scripts/init-bottom", 0o755),
        Entry.file("scripts/init-bottom/ORDER", b'/scripts/init-bottom/udev "$@"\n', 0o644),
        Entry.file("init", b"#!/bin/sh\n# " + marker + b"\n", 0o755),
    ]
    raw = io.BytesIO()
    write_archive(entries, raw, mtime=0)
    path.write_bytes(zstandard.ZstdCompressor().compress(raw.getvalue()))


def test_repack_rebuilds_when_the_distro_initrd_changes(workdir: Path) -> None:
    _distro_initrd(workdir / "distro.img", b"one")
    repack = {18: "  method: repack\n  repack: {source: distro.img}"}
    (workdir / "cluster.yaml").write_text(spec_text(repack))
    _doit(workdir)
    _doit(workdir)  # the first run validated the switch to repack; from now on the source is tracked
    ran, _, _ = _doit(workdir)
    assert ran == set()
    images = sorted((workdir / "build/gateway/srv/tftp").glob("initrd-nfsroot-*.img"))
    assert len(images) == 1

    _distro_initrd(workdir / "distro.img", b"two")
    ran, _, _ = _doit(workdir)
    assert {"render:initrd", "render:pxelinux"} <= ran
    assert "render:exports" not in ran
    after = sorted((workdir / "build/gateway/srv/tftp").glob("initrd-nfsroot-*.img"))
    assert len(after) == 1 and after != images  # named by its inputs; the stale one is gone
