"""Renderers: golden files for the seed cluster, the seed's own lines, per-node overrides."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from pipeline.render.exports import render_exports
from pipeline.render.hosts import render_hosts
from pipeline.render.pxelinux import render_pxelinux
from pipeline.render.symlinks import render_symlink_artifacts, render_symlink_review
from pipeline.spec.load import load_cluster
from pipeline.spec.model import Cluster
from tests.spec_helpers import parse, spec_text

REPO = Path(__file__).resolve().parents[1]
GOLDEN = Path(__file__).parent / "golden" / "render"
INITRDS = ["boot/initrd.img-6.1.0-21-amd64", "nfsroot-0123456789abcdef.img"]


@pytest.fixture(scope="module")
def seed() -> Cluster:
    return load_cluster(REPO / "cluster.yaml")[0]


def rendered_files(cluster: Cluster) -> dict[str, bytes]:
    files = {}
    for a in render_exports(cluster) + render_pxelinux(cluster, INITRDS) + render_hosts(cluster):
        if a.kind == "file":
            files[a.path.strip("/").replace("/", "__")] = a.data
    for doc in render_symlink_review(cluster):
        files[doc.name] = doc.data
    return files


def test_golden_files(seed: Cluster) -> None:
    files = rendered_files(seed)
    if os.environ.get("UPDATE_GOLDEN"):
        for name, data in files.items():
            (GOLDEN / name).write_bytes(data)
    assert sorted(files) == sorted(p.name for p in GOLDEN.iterdir())
    for name, data in files.items():
        assert data == (GOLDEN / name).read_bytes(), f"{name} differs from its golden file (UPDATE_GOLDEN=1 to accept)"


def test_exports_lines_are_the_seeds(seed: Cluster) -> None:
    (exports,) = [a for a in render_exports(seed) if a.role == "exports"]
    lines = [line for line in exports.data.decode().splitlines() if not line.startswith("#")]
    assert lines == [
        "/clients 192.168.0.0/255.255.255.0(ro,no_root_squash,no_subtree_check,async)",
        "/workers 192.168.0.0/255.255.255.0(rw,no_root_squash,no_subtree_check,async)",
    ]
    assert exports.path == "/etc/exports.d/nfsroot.exports"


def test_pxelinux_lines_are_the_seeds(seed: Cluster) -> None:
    files = {a.path: a for a in render_pxelinux(seed, INITRDS) if a.kind == "file"}
    assert list(files) == ["/srv/tftp/pxelinux.cfg/default"]  # the seed's nodes have no overrides
    lines = files["/srv/tftp/pxelinux.cfg/default"].data.decode().splitlines()
    assert "APPEND root=/dev/nfs nfsroot=192.168.0.254:/clients,ro ip=dhcp nfsrootdebug" in lines
    assert "SYSAPPEND 11" in lines
    # The root's own kernel and initrd, by the version the seed names (plan resolves them in the root).
    assert "KERNEL boot/vmlinuz-6.1.0-21-amd64" in lines
    assert "INITRD boot/initrd.img-6.1.0-21-amd64,nfsroot-0123456789abcdef.img" in lines


def test_per_node_pxelinux_file() -> None:
    cluster = parse(spec_text({25: '    - {mac: "44:8a:5b:dd:d8:ba", hostname: gpu1, cmdline: [quiet]}'}))
    files = {a.path: a.data.decode() for a in render_pxelinux(cluster, INITRDS) if a.kind == "file"}
    node = files["/srv/tftp/pxelinux.cfg/01-44-8a-5b-dd-d8-ba"]
    assert (
        "APPEND root=/dev/nfs nfsroot=192.168.0.254:/clients,ro ip=dhcp nfsrootdebug quiet nfsroot.hostname=gpu1"
        in node.splitlines()
    )
    assert "nfsroot.hostname" not in files["/srv/tftp/pxelinux.cfg/default"]


def test_hosts_lists_nodes_with_addresses_in_address_order() -> None:
    cluster = parse(
        spec_text(
            {
                24: '    - {mac: "00:23:24:94:34:ae", address: 192.168.0.20}',
                25: '    - {mac: "44:8a:5b:dd:d8:ba", address: 192.168.0.3, hostname: gpu1}',
            }
        )
    )
    (hosts,) = render_hosts(cluster)
    body = [line for line in hosts.data.decode().splitlines() if not line.startswith("#")]
    assert body == ["192.168.0.3\tgpu1", "192.168.0.20\tworker-node-0023249434ae"]


def test_symlink_artifacts(seed: Cluster) -> None:
    arts = {a.path: a for a in render_symlink_artifacts(seed)}
    link = arts["/clients/etc/hostname"]
    assert (link.kind, link.target, link.preserve) == (
        "symlink",
        "/var/local/hostname",
        "/clients/usr/lib/nfsroot/skel/etc/hostname",
    )
    assert arts["/clients/var/local"].kind == "dir"
    assert arts["/clients/home"].kind == "dir"


def test_rendering_is_deterministic(seed: Cluster) -> None:
    assert rendered_files(seed) == rendered_files(load_cluster(REPO / "cluster.yaml")[0])
