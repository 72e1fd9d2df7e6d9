"""Storage kinds of writable paths and preset: kubernetes — the spec's rules (at their lines) and the renders."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pipeline.cli import EXIT_CHANGES, EXIT_OK, main
from pipeline.errors import SpecError
from pipeline.render import preset, storage
from pipeline.render.bootscript import render_bootscript
from pipeline.render.symlinks import render_symlink_artifacts, render_symlink_review, symlink_plan
from pipeline.spec.load import load_cluster
from pipeline.spec.model import Cluster
from tests.bootscript import harness
from tests.deploy_helpers import F, make_build
from tests.spec_helpers import parse, problems, spec_text
from tests.test_hostile_values import DANGEROUS, hostile

REPO = Path(__file__).resolve().parents[1]
PROFILE = {9: "root: {share: clients, options: [ro], profile: debian-systemd}"}


def with_entries(*entries: str, replace: dict[int, str] | None = None, append: list[str] | None = None) -> str:
    """The base spec with writable entries added after line 12 (they are lines 13, 14, …)."""
    lines = spec_text(replace, append).splitlines()
    return "\n".join(lines[:12] + [f"  - {e}" for e in entries] + lines[12:]) + "\n"


def cluster_with(*entries: str, **kw: object) -> Cluster:
    return parse(with_entries(*entries, **kw))  # type: ignore[arg-type]


# -- the spec -------------------------------------------------------------------------------------------------


def test_the_seed_is_all_nfs_and_has_no_storage_unit() -> None:
    seed, _ = load_cluster(REPO / "cluster.yaml")
    assert [w.storage for w in seed.writable] == ["nfs", "nfs"]
    assert storage.entries(seed) == ()
    assert not [a for a in render_symlink_artifacts(seed) if "storage" in a.path]
    assert "storage" not in symlink_plan(seed) and "preset" not in symlink_plan(seed)
    assert b"storage" not in render_bootscript(seed)


def test_each_kind_is_accepted_and_normalised() -> None:
    c = cluster_with(
        "{mount: /scratch, storage: tmpfs, size: 2g}",
        "{mount: /var/lib/containerd, storage: image, size: 20G, fs: xfs}",
        "{mount: /data, storage: disk, device: LABEL=data, fallback: tmpfs, size: 1G}",
        "{mount: /data2, storage: disk, device: UUID=0F5E1C6B-2A1D-4E8F-9B7A-3C2D1E0F9A8B}",
    )
    tmpfs, image, disk, disk2 = c.writable[2:]
    assert (tmpfs.storage, tmpfs.size) == ("tmpfs", "2G")
    assert (image.fs, image.size) == ("xfs", "20G")
    assert (disk.device, disk.fallback) == ("LABEL=data", "tmpfs")
    assert disk2.device == "UUID=0f5e1c6b-2a1d-4e8f-9b7a-3c2d1e0f9a8b"
    assert disk2.fallback == "fail"


@pytest.mark.parametrize(
    ("entry", "expected"),
    [
        ("{mount: /s, storage: tmpfs}", "cluster.yaml:13:5: writable.2: storage tmpfs needs a size"),
        ("{mount: /s, storage: image}", "cluster.yaml:13:5: writable.2: storage image needs a size"),
        ("{mount: /s, storage: tmpfs, size: '10'}", "writable.2.size: '10' is not a size"),
        ("{mount: /s, storage: tmpfs, size: 10}", "writable.2.size: expected a string, got int 10"),
        ("{mount: /s, storage: tmpfs, size: 2GB}", "writable.2.size: '2GB' is not a size"),
        ("{mount: /s, storage: tmpfs, size: 0M}", "writable.2.size: size '0M' is zero"),
        ("{mount: /s, storage: tmpfs, size: 65T}", "writable.2.size: size '65T' is larger than 64T"),
        ("{mount: /s, storage: tmpfs, size: '1G;reboot'}", "writable.2.size: '1G;reboot' is not a size"),
        ("{mount: /s, storage: tmpfs, size: 1G, share: workers}", "writable.2.share: share means nothing"),
        ("{mount: /s, storage: image, size: 1G, per_node: true}", "writable.2.per_node: per_node means nothing"),
        ("{mount: /s, storage: image, size: 1G, subdir: x}", "writable.2.subdir: subdir means nothing"),
        ("{mount: /s, storage: image, size: 1G, options: [rw, tcp]}", "writable.2.options: options means nothing"),
        ("{mount: /s, storage: image, size: 1G, device: LABEL=x}", "writable.2.device: device means nothing"),
        ("{mount: /s, storage: tmpfs, size: 1G, fs: xfs}", "writable.2.fs: fs means nothing for storage tmpfs"),
        ("{mount: /s, share: workers, size: 1G}", "writable.2.size: size means nothing for storage nfs"),
        ("{mount: /s, storage: image, size: 8M}", "writable.2.size: 8M is too small for an ext4 image"),
        ("{mount: /s, storage: image, size: 200M, fs: xfs}", "writable.2.size: 200M is too small for an xfs image"),
        ("{mount: /s, storage: disk}", "cluster.yaml:13:5: writable.2: storage disk needs a device"),
        ("{mount: /s, storage: disk, device: /dev/sda1}", "writable.2.device: '/dev/sda1' is not a partition"),
        ("{mount: /s, storage: disk, device: 'LABEL=a b'}", "writable.2.device: 'LABEL=a b' is not a partition"),
        ("{mount: /s, storage: disk, device: 'LABEL=$(reboot)'}", "is not a partition reference"),
        ("{mount: /s, storage: disk, device: LABEL=-rf}", "writable.2.device: 'LABEL=-rf' is not a partition"),
        ("{mount: /s, storage: disk, device: UUID=xyz}", "writable.2.device: 'UUID=xyz' is not a partition"),
        ("{mount: /s, storage: disk, device: LABEL=d, fallback: image}", "writable.2: fallback image needs a size"),
        ("{mount: /s, storage: disk, device: LABEL=d, size: 1G}", "writable.2.size: size means nothing for a disk"),
        ("{mount: /s, storage: disk, device: LABEL=d, fs: xfs}", "writable.2.fs: fs is the file system of the image"),
        ("{mount: /s, storage: ceph}", "writable.2.storage"),
        ("{mount: /s}", "cluster.yaml:13:5: writable.2: storage nfs needs a share"),
    ],
)
def test_bad_storage_is_refused_at_its_line(entry: str, expected: str) -> None:
    found = problems(with_entries(entry))
    assert any(expected in p for p in found), found
    assert all(p.startswith("cluster.yaml:13:") for p in found), found


def test_symlink_targets_must_be_on_nfs() -> None:
    found = problems(with_entries("{mount: /scratch, storage: tmpfs, size: 1G}", append=["  /etc/motd: /scratch/motd"]))
    # The appended line lands under deploy:, so put the link under symlinks: instead.
    text = with_entries("{mount: /scratch, storage: tmpfs, size: 1G}").replace(
        "  /etc/hosts: /var/local/hosts\n", "  /etc/hosts: /var/local/hosts\n  /etc/motd: /scratch/motd\n"
    )
    found = problems(text)
    assert found == [
        "cluster.yaml:17:14: symlinks./etc/motd: target /scratch/motd is on /scratch, which is not NFS storage "
        "(point it under an nfs mount)"
    ]


# -- the lint: containerd and kubelet state never on NFS --------------------------------------------------------


@pytest.mark.parametrize("path", ["/var/lib/containerd", "/var/lib/kubelet"])
def test_container_state_on_nfs_is_refused_with_its_remedy(path: str) -> None:
    found = problems(with_entries(f"{{mount: {path}, share: workers, per_node: true, subdir: s}}"))
    assert len(found) == 1
    assert found[0].startswith("cluster.yaml:13:13: writable.2.mount: ")
    assert "would be on NFS" in found[0] and "give it storage: image" in found[0]


def test_container_state_on_nfs_through_a_symlink_is_refused() -> None:
    text = spec_text().replace(
        "  /etc/hosts: /var/local/hosts\n", "  /etc/hosts: /var/local/hosts\n  /var/lib/containerd: /var/local/ctd\n"
    )
    found = problems(text)
    assert len(found) == 1 and found[0].startswith("cluster.yaml:16:24: symlinks./var/lib/containerd: ")
    assert "containerd's state" in found[0]


def test_a_parent_on_nfs_is_refused_only_with_the_preset() -> None:
    entry = "{mount: /var/lib, share: workers, per_node: true, subdir: lib}"
    parse(with_entries(entry))  # no containers on these nodes: /var/lib on NFS is the user's business
    found = problems(with_entries(entry, replace=PROFILE, append=["preset: kubernetes"]))
    assert [p.split(": ")[1] for p in found] == ["writable.2.mount", "writable.2.mount"]
    assert found[0].endswith(
        "writable.2.mount: /var/lib/containerd (containerd's state (images, overlayfs snapshots)) lies inside this "
        "NFS mount (preset kubernetes mounts image storage at /var/lib/containerd, which cannot sit inside an NFS "
        "mount: keep /var/lib off NFS, or make narrower paths writable)"
    )
    assert "/var/lib/kubelet" in found[1]


def test_the_preset_needs_the_profile() -> None:
    assert problems(spec_text(append=["preset: kubernetes"])) == [
        "cluster.yaml:27:9: preset: preset kubernetes needs root.profile: debian-systemd (kubelet and CNI need a "
        "per-node machine-id, /tmp (ctr) and /var/log; set root.profile: debian-systemd)"
    ]


def test_state_on_image_tmpfs_or_disk_is_accepted() -> None:
    for entry in (
        "{mount: /var/lib/containerd, storage: image, size: 20G}",
        "{mount: /var/lib/containerd, storage: tmpfs, size: 8G}",
        "{mount: /var/lib/containerd, storage: disk, device: LABEL=ctd, fallback: image, size: 20G}",
    ):
        parse(with_entries(entry, replace=PROFILE, append=["preset: kubernetes"]))


# -- renders ----------------------------------------------------------------------------------------------------


def test_boot_script_mounts_tmpfs_and_writes_the_units_configuration() -> None:
    c = cluster_with(
        "{mount: /scratch, storage: tmpfs, size: 2G}",
        "{mount: /data, storage: disk, device: LABEL=data, fallback: image, size: 50G}",
    )
    script = render_bootscript(c).decode()
    assert "\tnfsroot_storage_tmpfs '/scratch' '2G'\n" in script
    assert (
        "\tnfsroot_storage_conf '/nfsroot/storage.conf' "
        "'disk /data 53687091200 ext4 /var/local/images/data.img LABEL=data image'\n"
    ) in script


def test_storage_unit_and_script_go_into_the_root_with_their_fields() -> None:
    c = cluster_with("{mount: /var/lib/containerd, storage: image, size: 20G}")
    found = {a.path: a for a in render_symlink_artifacts(c)}
    unit = found["/clients/etc/systemd/system/nfsroot-storage.service"]
    assert unit.fields == ("writable.2",)
    text = unit.data.decode()
    assert "Before=local-fs.target containerd.service kubelet.service" in text
    assert "ConditionPathExists=/run/nfsroot/storage.conf" in text
    assert "ExecStart=/usr/lib/nfsroot/storage start" in text
    assert found["/clients/usr/lib/nfsroot/storage"].mode == 0o755
    wants = found["/clients/etc/systemd/system/local-fs.target.wants/nfsroot-storage.service"]
    assert wants.target == "/etc/systemd/system/nfsroot-storage.service"
    assert found["/clients/var/lib/containerd"].kind == "dir"  # the mount point, from the spec's entry
    # tmpfs alone needs no unit
    tmpfs_only = cluster_with("{mount: /scratch, storage: tmpfs, size: 1G}")
    assert not [a for a in render_symlink_artifacts(tmpfs_only) if "nfsroot-storage" in a.path]


def test_required_tools_name_their_package() -> None:
    c = cluster_with("{mount: /x, storage: image, size: 1G, fs: xfs}", "{mount: /d, storage: disk, device: LABEL=d}")
    tools = {tool: (field, package) for field, tool, package in storage.required_tools(c)}
    assert tools["mkfs.xfs"] == ("writable.2.fs", "xfsprogs")
    assert tools["blkid"] == ("writable.3", "util-linux")
    assert "mkfs.ext4" not in tools


def kubernetes() -> Cluster:
    return parse(spec_text(PROFILE, append=["preset: kubernetes"]))


def test_preset_puts_state_on_images_and_binds_kubernetes_directories() -> None:
    c = kubernetes()
    assert [(w.mount, w.storage, w.size) for w in preset.storage(c)] == [
        ("/var/lib/containerd", "image", "20G"),
        ("/var/lib/kubelet", "image", "4G"),
    ]
    script = render_bootscript(c).decode()
    assert "'image /var/lib/containerd 21474836480 ext4 /var/local/images/var/lib/containerd.img - -'" in script
    for path in ("/etc/kubernetes", "/etc/cni/net.d", "/opt/cni/bin", "/var/lib/cni"):
        assert f"\tnfsroot_bind '{path}' '/var/local/state{path}'\n" in script
    found = {a.path: a for a in render_symlink_artifacts(c)}
    for path in ("/var/lib/containerd", "/etc/kubernetes", "/opt/cni/bin"):
        assert found["/clients" + path].fields == ("preset kubernetes", path)
    assert found["/clients/etc/modules-load.d/nfsroot-kubernetes.conf"].data.splitlines()[-2:] == [
        b"overlay",
        b"br_netfilter",
    ]
    assert b"net.bridge.bridge-nf-call-iptables = 1" in found["/clients/etc/sysctl.d/90-nfsroot-kubernetes.conf"].data
    assert found["/clients/etc/systemd/system/swap.target"].target == "/dev/null"
    assert found["/clients/etc/systemd/system/nfsroot-storage.service"].fields == ("preset kubernetes",)
    review = render_symlink_review(c)[0].data.decode()
    assert "  /var/lib/containerd: image 20G ext4  from preset kubernetes\n" in review


def test_a_spec_entry_wins_over_the_preset() -> None:
    c = parse(
        with_entries(
            "{mount: /var/lib/containerd, storage: tmpfs, size: 8G}", replace=PROFILE, append=["preset: kubernetes"]
        )
    )
    assert [w.mount for w in preset.storage(c)] == ["/var/lib/kubelet"]
    script = render_bootscript(c).decode()
    assert "\tnfsroot_storage_tmpfs '/var/lib/containerd' '8G'\n" in script
    assert "image /var/lib/containerd" not in script


# -- the boot script's side, run under dash and busybox sh against the fake node of the boot script tests ---------


@pytest.mark.parametrize("shell", ["dash", "busybox"])
def test_boot_script_mounts_tmpfs_and_hands_image_and_disk_to_the_unit(shell: str, tmp_path: Path) -> None:
    writable = [
        *harness.BASE_SPEC["writable"],
        {"mount": "/scratch", "storage": "tmpfs", "size": "1g"},
        {"mount": "/var/lib/containerd", "storage": "image", "size": "20G"},
        {"mount": "/data", "storage": "disk", "device": "LABEL=data", "fallback": "tmpfs", "size": "2G"},
    ]
    node = harness.FakeNode(tmp_path, harness.cluster_from(harness.spec(writable=writable)))
    stubs = tmp_path / "stubs"
    stubs.mkdir()
    # The real mount would mount on the host: this one only records what the script asked for.
    (stubs / "mount").write_text('#!/bin/sh\nprintf \'mount %s\\n\' "$*" >>"$STUB_LOG"\n')
    (stubs / "mount").chmod(0o755)
    path = f"{stubs}:{harness.STUB_BIN}:/usr/bin:/bin"
    result = node.boot(shell, render_bootscript(node.cluster), {"PATH": path, "BOOTIF": "01-00-23-24-94-34-ae"})
    assert result.returncode == 0, result.stderr
    assert f"mount -t tmpfs -o size=1G,mode=0755,nodev,nosuid tmpfs {node.root}/scratch" in result.calls
    conf = (node.run / "nfsroot/storage.conf").read_text()
    assert conf == (
        f"image /var/lib/containerd {20 << 30} ext4 /var/local/images/var/lib/containerd.img - -\n"
        f"disk /data {2 << 30} - - LABEL=data tmpfs\n"
    )
    record = dict(line.split("=", 1) for line in (node.node_dir() / "nfsroot-boot").read_text().splitlines())
    assert record["result"] == "ok" and "/scratch" in record["mounts"].split()


def test_a_failed_tmpfs_follows_on_failure(tmp_path: Path) -> None:
    writable = [*harness.BASE_SPEC["writable"], {"mount": "/scratch", "storage": "tmpfs", "size": "1G"}]
    data = harness.spec(writable=writable, boot={"kernel": "6.1.0-21-amd64", "on_failure": "continue"})
    node = harness.FakeNode(tmp_path, harness.cluster_from(data))
    stubs = tmp_path / "stubs"
    stubs.mkdir()
    (stubs / "mount").write_text("#!/bin/sh\necho 'mount: permission denied' >&2\nexit 32\n")
    (stubs / "mount").chmod(0o755)
    path = f"{stubs}:{harness.STUB_BIN}:/usr/bin:/bin"
    result = node.boot("dash", render_bootscript(node.cluster), {"PATH": path, "BOOTIF": "01-00-23-24-94-34-ae"})
    assert result.returncode == 0, result.stderr
    record = (node.node_dir() / "nfsroot-boot").read_text()
    assert "result=failed: cannot mount a tmpfs of 1G on /scratch" in record


# -- plan: the root must hold what the storage unit runs ----------------------------------------------------------


def test_plan_refuses_a_root_without_the_storage_programs(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    spec_file = tmp_path / "cluster.yaml"
    spec_file.write_text(with_entries("{mount: /srv/data, storage: image, size: 1G, fs: xfs}"))
    build = make_build(tmp_path / "build", {"/srv/tftp/pxelinux.cfg/default": F("LABEL x\n", role="pxelinux")})
    target = tmp_path / "target"
    sbin = target / "clients/usr/sbin"
    sbin.mkdir(parents=True)
    (target / "clients/usr/bin").mkdir()
    for tool in ("mkfs.ext4", "truncate", "stat", "mount", "mountpoint"):
        (sbin / tool).write_text("#!/bin/sh\n")
    args = ["-f", str(spec_file), "plan", "--target", str(target), "--build", str(build)]
    assert main(args) == 1
    err = capsys.readouterr().err
    assert f"{spec_file}:13:54: writable.2.fs: the client root /clients has no mkfs.xfs: install xfsprogs" in err
    assert "no xfs_growfs: install xfsprogs" in err and "mkfs.ext4" not in err
    # An absolute sbin link would lead to this machine's own programs: not counted.
    (target / "clients/sbin").symlink_to("/usr/sbin")
    assert main(args) == 1
    for tool in ("mkfs.xfs", "xfs_growfs"):
        (target / "clients/usr/bin" / tool).symlink_to("../sbin/mkfs.ext4")
    assert main(args) in (EXIT_OK, EXIT_CHANGES)


def test_the_kubernetes_example_is_the_seed_with_workers_and_a_control_plane_group_on_image_storage() -> None:
    example, _ = load_cluster(REPO / "examples/kubernetes/cluster.yaml")
    seed, _ = load_cluster(REPO / "cluster.yaml")
    assert (example.gateway, example.shares, example.root, example.symlinks) == (
        seed.gateway,
        seed.shares,
        seed.root,
        seed.symlinks,
    )
    assert example.nfs_writable == seed.writable
    assert [n.mac for n in example.nodes.known] == [n.mac for n in seed.nodes.known]
    assert example.nodes.hostname == seed.nodes.hostname
    assert example.preset == "kubernetes"
    workers, control = example.groups_resolved()
    assert (workers.name, control.name) == ("default", "control-plane")
    assert example.hostname_for(example.nodes.known[1]) == "control-plane-448a5bddd8ba"
    state = {e.writable.mount: (e.writable.storage, e.field) for e in storage.entries(workers.cluster)}
    assert state == {
        "/var/lib/containerd": ("image", "writable.2"),
        "/var/lib/kubelet": ("image", "preset kubernetes"),
    }
    state = {e.writable.mount: (e.writable.storage, e.writable.size) for e in storage.entries(control.cluster)}
    assert state == {
        "/var/lib/containerd": ("image", "20G"),
        "/var/lib/etcd": ("image", "8G"),
        "/var/lib/kubelet": ("image", "4G"),
    }
    assert control.cluster.nfs_writable == seed.writable


def test_audit_names_the_missing_storage_programs(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    spec_file = tmp_path / "cluster.yaml"
    spec_file.write_text(with_entries("{mount: /srv/data, storage: disk, device: LABEL=d}"))
    (tmp_path / "target/clients/usr/sbin").mkdir(parents=True)
    assert main(["-f", str(spec_file), "audit", "--target", str(tmp_path / "target")]) == EXIT_OK
    out = capsys.readouterr().out
    assert (
        "error: writable.2: the client root has no blkid, which nfsroot-storage.service runs (install util-linux)"
        in out
    )
    assert main(["-f", str(spec_file), "audit", "--json", "--target", str(tmp_path / "target")]) == EXIT_OK
    report = json.loads(capsys.readouterr().out)
    assert {"field": "writable.2", "program": "fsck", "package": "util-linux"} in report["storage_tools"]


STORAGE_ENTRY = {"mount": "/srv/data", "storage": "disk", "device": "LABEL=data", "fallback": "image", "size": "1G"}


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    key=st.sampled_from(["mount", "device", "size", "fs", "fallback", "storage"]),
    # Prefixed too, so the device's own syntax gets past its first check and the rest is what is judged.
    value=st.one_of(hostile, hostile.map(lambda v: f"LABEL={v}"), hostile.map(lambda v: f"UUID={v}")),
)
def test_hostile_storage_values_are_refused_or_harmless(key: str, value: str) -> None:
    doc = yaml.safe_load(spec_text())
    doc["writable"].append(STORAGE_ENTRY | {key: value})
    try:
        cluster = parse(yaml.safe_dump(doc, allow_unicode=True))
    except SpecError as exc:
        assert exc.problems
        return
    # Accepted: then no character that could quote, expand or separate reaches the unit's configuration lines.
    assert not set(value) & DANGEROUS, f"{key}={value!r} was accepted"
    for line in storage.unit_lines(cluster):
        assert not set(line) & (DANGEROUS - {" "}), line
