"""Node groups: golden renders of a two-group spec (examples/groups.yaml), the seed unchanged, every rule checked
per group at the group's line, and a build + plan that serves each group its own kernel, initrd and configs."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from pipeline import outputs
from pipeline.errors import SpecError
from pipeline.render.loader import wanted_loaders
from pipeline.review import expected_generated, stale_report
from pipeline.spec.load import load_cluster, parse_cluster
from pipeline.spec.model import Cluster
from tests.prereq import need, require_program
from tests.spec_helpers import spec_text

REPO = Path(__file__).resolve().parents[1]
EXAMPLE = REPO / "examples" / "groups.yaml"
GOLDEN = Path(__file__).parent / "golden" / "groups"
CP_MAC, CP_MAIN = "44:8a:5b:dd:d8:ba", "52:54:00:c0:ff:ee"


@pytest.fixture(scope="module")
def example() -> Cluster:
    return load_cluster(EXAMPLE)[0]


def _problems(text: str) -> list[str]:
    with pytest.raises(SpecError) as err:
        parse_cluster(text, "cluster.yaml")
    return [str(p) for p in err.value.problems]


def _example(old: str, new: str) -> str:
    text = EXAMPLE.read_text()
    assert old in text
    return text.replace(old, new)


def _line(text: str, needle: str) -> int:
    return next(i for i, line in enumerate(text.splitlines(), 1) if needle in line)


def test_golden_renders_of_two_groups(example: Cluster) -> None:
    """Everything generated/ would hold for the example: both groups' boot scripts, pxelinux files, GRUB and
    iPXE entries, symlink plans and the groups review."""
    files = expected_generated(example, EXAMPLE.parent)
    if os.environ.get("UPDATE_GOLDEN"):
        shutil.rmtree(GOLDEN, ignore_errors=True)
        for rel, data in files.items():
            (GOLDEN / rel).parent.mkdir(parents=True, exist_ok=True)
            (GOLDEN / rel).write_bytes(data)
    assert stale_report(files, GOLDEN) == [], "differs from tests/golden/groups (UPDATE_GOLDEN=1 to accept)"
    assert "groups/control-plane/initramfs/scripts/init-bottom/nfsroot" in files
    assert "review/groups.txt" in files


def test_each_node_boots_its_groups_settings(example: Cluster) -> None:
    views = {v.name: v for v in example.groups_resolved()}
    assert list(views) == ["workers", "control-plane"]  # unknown nodes' group first
    assert views["workers"].default and not views["control-plane"].default
    workers, cp = views["workers"].cluster, views["control-plane"].cluster
    assert (workers.boot.kernel, cp.boot.kernel) == ("6.1.0-21-amd64", "6.1.0-22-amd64")
    assert cp.boot.method == workers.boot.method == "overlay"  # merged field by field: inherited
    assert [w.mount for w in cp.writable] == ["/var/local", "/home", "/var/lib/etcd"]
    assert [n.mac for n in cp.nodes.known] == [CP_MAC, CP_MAIN]
    assert [example.hostname_for(n) for n in example.nodes.known] == [
        "worker-node-0023249434ae",
        "control-448a5bddd8ba",
        "cp-main",
    ]
    names = {v: outputs.initrd_names(views[v].cluster, REPO) for v in views}
    assert names["workers"][1] != names["control-plane"][1]  # an overlay initrd of its own
    pxe = {a.path.rsplit("/", 1)[1]: a for a in outputs.pxelinux(example, names["workers"], names).artifacts}
    node = pxe["01-" + CP_MAC.replace(":", "-")].data.decode()
    assert "KERNEL boot/vmlinuz-6.1.0-22-amd64\n" in node
    assert f"INITRD boot/initrd.img-6.1.0-22-amd64,{names['control-plane'][1]}\n" in node
    assert "systemd.unit=multi-user.target" in node
    assert "systemd.unit=multi-user.target" not in pxe["default"].data.decode()
    assert pxe["01-" + CP_MAC.replace(":", "-")].fields[0] == "groups.control-plane"  # the plan's reason
    assert "nodes.known.1" in pxe["01-" + CP_MAC.replace(":", "-")].fields  # the spec's index, not the group's
    assert "01-00-23-24-94-34-ae" not in pxe  # a plain worker boots pxelinux.cfg/default


def test_grub_script_check_accepts_the_groups_entries(example: Cluster, tmp_path: Path) -> None:
    checker = require_program("grub-script-check")
    cfg = tmp_path / "grub.cfg"
    cfg.write_bytes((GOLDEN / "gateway/srv/tftp/grub/grub.cfg").read_bytes())
    assert subprocess.run([checker, str(cfg)], capture_output=True).returncode == 0
    text = cfg.read_text()
    assert 'set default="group-control-plane"' in text and '--id "group-control-plane"' in text


def test_seed_spec_is_its_own_single_group() -> None:
    seed = load_cluster(REPO / "cluster.yaml")[0]
    (view,) = seed.groups_resolved()
    assert view.cluster is seed and view.default and view.field == ""
    # An empty groups section changes nothing either.
    plain = parse_cluster(spec_text(), "c.yaml")[0]
    empty = parse_cluster(spec_text(append=["groups: {}"]), "c.yaml")[0]
    assert expected_generated(plain, REPO) == expected_generated(empty, REPO)


def test_unknown_group_is_reported_at_its_line() -> None:
    text = _example(f'{{mac: "{CP_MAC}", group: control-plane}}', f'{{mac: "{CP_MAC}", group: control}}')
    line = _line(text, "group: control}")
    assert _problems(text) == [
        f"cluster.yaml:{line}:41: nodes.known.1.group: no group named 'control' (groups: control-plane, workers)"
    ]
    text = _example("default_group: workers", "default_group: worker")
    assert _problems(text) == [
        f"cluster.yaml:{_line(text, 'default_group')}:18: nodes.default_group: no group named 'worker' "
        "(groups: control-plane, workers)"
    ]


def test_group_names_are_validated_and_default_is_reserved() -> None:
    text = _example("  control-plane:\n", "  Control_Plane:\n")
    assert any("groups.Control_Plane" in p for p in _problems(text))
    text = _example("  workers: {}", "  default: {}")
    assert (
        f"cluster.yaml:{_line(text, 'default: {}')}:3: groups.default: 'default' names the cluster-wide"
        in (_problems(text)[0])
    )


def test_a_groups_own_setting_is_checked_at_its_line() -> None:
    text = _example("cmdline: [nfsrootdebug, ", f'cmdline: ["{"x" * 2000}", ')
    line = _line(text, "x" * 100)
    (problem,) = _problems(text)
    assert problem.startswith(f"cluster.yaml:{line}:16: groups.control-plane.boot.cmdline: the kernel command line")
    # A per-node writable mount the group's writable set lacks: its symlinks (inherited) point nowhere.
    text = _example("      - {mount: /var/local, share: workers, per_node: true, subdir: control-plane}\n", "")
    found = _problems(text)
    line = _line(text, "  control-plane:")
    assert (
        f"cluster.yaml:{line}:3: groups.control-plane: with the cluster-wide symlinks./etc/hostname: target "
        "/var/local/hostname is not under a writable mount (writable mounts: /home, /var/lib/etcd)"
    ) in found
    # A field rule inside a group's section, at its own line.
    text = _example("      kernel: 6.1.0-22-amd64", "      kernel: 6.1.0-22-amd64\n      mount_retries: 99")
    assert _problems(text) == [
        f"cluster.yaml:{_line(text, 'mount_retries')}:22: groups.control-plane.boot.mount_retries: 99 is out of "
        "range: must be less than or equal to 30"
    ]


def test_rules_across_groups() -> None:
    # Host names are unique over all groups, each node named by its own group's pattern.
    text = _example('hostname: "control-{mac}"', 'hostname: "worker-node-{mac}"')
    text = text.replace("hostname: cp-main,", "hostname: worker-node-0023249434ae,")
    assert any("host name worker-node-0023249434ae is also used by node 0" in p for p in _problems(text))
    # Symlinks live in the read-only root: two groups booting one root must agree on them.
    text = _example('    hostname: "control-{mac}"\n', '    hostname: "control-{mac}"\n    symlinks: {}\n')
    assert any(
        "groups.control-plane.symlinks: differs from the symlinks of group 'workers', which boots the same root" in p
        for p in _problems(text)
    )


ENV = {k: v for k, v in os.environ.items() if not k.startswith("NFSROOT_")}


def _build(work: Path, text: str) -> None:
    work.mkdir(exist_ok=True)
    (work / "cluster.yaml").write_text(text)
    doit = [sys.executable, "-m", "doit", "run", "-f", str(REPO / "pipeline/tasks.py"), "-d", str(work)]
    built = subprocess.run([*doit, "--db-file", str(work / ".doit.db")], capture_output=True, text=True, env=ENV)
    assert built.returncode == 0, built.stdout + built.stderr


def _nfsroot(work: Path, *argv: str) -> subprocess.CompletedProcess[str]:
    command = [sys.executable, "-m", "pipeline", "-f", str(work / "cluster.yaml"), *argv]
    return subprocess.run(command, capture_output=True, text=True, env=ENV)


def _target_root(target: Path) -> Path:
    for version in ("6.1.0-21-amd64", "6.1.0-22-amd64"):
        (target / "clients/lib/modules" / version).mkdir(parents=True)
        (target / "clients/boot").mkdir(exist_ok=True)
        (target / f"clients/boot/vmlinuz-{version}").write_text(f"kernel {version}\n")
        (target / f"clients/boot/initrd.img-{version}").write_text(f"initrd {version}\n")
    return target


def test_groups_booting_different_roots_need_different_kernels() -> None:
    text = _example("  workers: {path:", "  other: {path: /other, access: ro}\n  workers: {path:")
    text = text.replace('    hostname: "control-{mac}"\n', '    hostname: "control-{mac}"\n    root: {share: other}\n')
    parse_cluster(text, "c.yaml")  # another root and another kernel: fine
    same = text.replace("      kernel: 6.1.0-22-amd64", "      kernel: 6.1.0-21-amd64")
    assert any(
        "groups.control-plane.boot.kernel: group 'workers' boots kernel 6.1.0-21-amd64 from another root share" in p
        for p in _problems(same)
    )


def test_warnings_hold_for_each_group() -> None:
    text = _example("      kernel: 6.1.0-22-amd64", "      kernel: 6.1.0-22-amd64\n      sysappend: [ip]")
    warnings = [str(w) for w in parse_cluster(text, "cluster.yaml")[1]]
    assert (
        f"cluster.yaml:{_line(text, 'sysappend: [ip]')}:18: groups.control-plane.boot.sysappend: without bootif "
        "the boot script must guess the MAC from the interface (add bootif (pxelinux SYSAPPEND 2))"
    ) in warnings
    assert not any("sysappend" in str(w) for w in parse_cluster(EXAMPLE.read_text(), "cluster.yaml")[1])


def test_doit_builds_and_plan_serves_each_group_its_kernel(tmp_path: Path) -> None:
    """The whole build of the example, published as generated/ (the golden tree), then planned against a root
    holding both kernels: each group's pxelinux file names its own resolved kernel."""
    work = tmp_path / "work"
    _build(work, EXAMPLE.read_text())
    assert stale_report(expected_generated(load_cluster(EXAMPLE)[0], REPO), work / "generated") == []
    target = _target_root(tmp_path / "gateway")
    plan = _nfsroot(work, "plan", "--build", str(work / "build"), "--target", str(target))
    assert plan.returncode == 2, plan.stdout + plan.stderr
    out = plan.stdout
    assert "+KERNEL boot/vmlinuz-6.1.0-22-amd64." in out and "+KERNEL boot/vmlinuz-6.1.0-21-amd64." in out
    assert "copy /clients/boot/vmlinuz-6.1.0-22-amd64 from the target root; from groups.control-plane" in out
    assert "from groups.control-plane, name, gateway, root, shares, boot, nodes.known.1" in out


def _overlays(text: str) -> dict[str, str]:
    cluster = parse_cluster(text, "c.yaml")[0]
    return {v.name: outputs.initrd_names(v.cluster, REPO)[1] for v in cluster.groups_resolved()}


def test_rollback_points_each_group_at_its_own_previous_initrd(tmp_path: Path) -> None:
    """Two applies, then rollback: every group's configs go back to that group's previous overlay, whatever
    order the new overlays' names sort in (the edit is chosen so that their order flips)."""
    first = EXAMPLE.read_text()
    before = _overlays(first)
    for n in range(1, 31):  # the boot script holds mount_retries: each group's overlay changes
        second = first.replace("  on_failure: panic\n", f"  on_failure: panic\n  mount_retries: {n}\n")
        second = second.replace(
            "      kernel: 6.1.0-22-amd64\n", f"      kernel: 6.1.0-22-amd64\n      mount_retries: {n}\n"
        )
        after = _overlays(second)
        if (before["workers"] < before["control-plane"]) != (after["workers"] < after["control-plane"]):
            break
    else:
        pytest.fail("no edit flips the order of the overlays' names")
    work, target = tmp_path / "work", _target_root(tmp_path / "gateway")
    for text in (first, second):
        _build(work, text)
        applied = _nfsroot(work, "apply", "--build", str(work / "build"), "--target", str(target))
        assert applied.returncode == 0, applied.stdout + applied.stderr
    rolled = _nfsroot(work, "rollback", "--build", str(work / "build"), "--target", str(target))
    assert rolled.returncode == 0, rolled.stdout + rolled.stderr
    pxe = target / "srv/tftp/pxelinux.cfg"
    assert f",{before['workers']}\n" in (pxe / "default").read_text()
    assert f",{before['control-plane']}\n" in (pxe / ("01-" + CP_MAC.replace(":", "-"))).read_text()


def test_audit_counts_a_path_writable_only_when_every_group_has_it(tmp_path: Path) -> None:
    """/var/tmp mounted cluster-wide but not in a group's own writable set is read-only on that group's nodes."""
    mounts = "\n".join(
        [
            "      - {mount: /var/local, share: workers, per_node: true}",
            "      - {mount: /home, share: workers, subdir: home}",
        ]
    )
    var_tmp = "  - {mount: /var/tmp, share: workers, per_node: true, subdir: tmp}"

    def lint_paths(text: str) -> set[str]:
        (tmp_path / "cluster.yaml").write_text(text)
        argv = ["-f", str(tmp_path / "cluster.yaml"), "audit", "--json", "--target", str(tmp_path / "none")]
        proc = subprocess.run([sys.executable, "-m", "pipeline", *argv], capture_output=True, text=True, env=ENV)
        assert proc.returncode == 0, proc.stderr
        return {w["path"] for w in json.loads(proc.stdout)["lint"]}

    with_var_tmp = spec_text(replace={12: "  - {mount: /home, share: workers, subdir: home}\n" + var_tmp})
    assert "/var/tmp" not in lint_paths(with_var_tmp)
    small = ["groups:", "  small:", "    writable:", mounts]
    assert "/var/tmp" in lint_paths(with_var_tmp + "\n".join(small) + "\n")
    assert "/var/tmp" not in lint_paths(with_var_tmp + "\n".join([*small, "    " + var_tmp]) + "\n")


def test_a_node_can_boot_the_cluster_wide_settings_when_unknown_nodes_boot_a_group() -> None:
    text = _example('    - {mac: "00:23:24:94:34:ae"}', '    - {mac: "00:23:24:94:34:ae", group: default}')
    cluster = parse_cluster(text, "c.yaml")[0]
    views = {v.name: v for v in cluster.groups_resolved()}
    assert list(views) == ["workers", "control-plane", "default"] and views["default"].members == (0,)
    names = {v: outputs.initrd_names(views[v].cluster, REPO) for v in views}
    pxe = {a.path.rsplit("/", 1)[1]: a for a in outputs.pxelinux(cluster, names["workers"], names).artifacts}
    assert "01-00-23-24-94-34-ae" in pxe  # its own file: pxelinux.cfg/default boots the workers group


def test_groups_review_describes_storage_other_than_nfs() -> None:
    """A group's image, tmpfs and disk entries have no NFS export: the review names their kind (it raised)."""
    text = _example(
        "      - {mount: /var/lib/etcd, share: workers, per_node: true, subdir: etcd}\n",
        "      - {mount: /var/lib/etcd, storage: image, size: 1G}\n"
        "      - {mount: /var/cache/scratch, storage: tmpfs, size: 512M}\n"
        "      - {mount: /srv/data, storage: disk, device: LABEL=data, fallback: tmpfs, size: 2G}\n",
    )
    cluster = parse_cluster(text, "cluster.yaml")[0]
    [review] = [d for d in outputs.symlinks(cluster).reviews if d.name == "groups.txt"]
    body = review.data.decode()
    assert "/var/lib/etcd <- ext4 image of 1G in the node's directory  (one image per node)" in body
    assert "/var/cache/scratch <- tmpfs of 512M  (per node, lost at reboot)" in body
    assert "/srv/data <- local disk LABEL=data (absent: tmpfs)  (per node)" in body


def test_a_groups_firmware_is_checked_at_its_line() -> None:
    base = spec_text(replace={25: '    - {mac: "44:8a:5b:dd:d8:ba", group: cp}'})
    # Values outside the loaders' names never reach the dnsmasq configuration: refused at the group's field.
    for hostile in ('"ipxe,set:evil"', '"ipxe\\ndhcp-boot=x"', "grub2"):
        text = base + f"groups: {{cp: {{firmware: {{uefi: {hostile}}}}}}}\n"
        (problem,) = _problems(text)
        assert problem.startswith("cluster.yaml:27:") and "groups.cp.firmware.uefi" in problem, problem
    # How iPXE fetches is one setting for the one nfsroot.ipxe and the one HTTP server: not a group's.
    text = base + "groups:\n  cp:\n    firmware: {uefi: ipxe, transport: tftp}\n"
    assert _problems(text) == [
        "cluster.yaml:29:39: groups.cp.firmware.transport: is cluster-wide: one iPXE script and one HTTP server "
        "serve every group (set firmware.transport instead)"
    ]
    assert parse_cluster(base + "groups: {cp: {firmware: {uefi: ipxe, arm64: grub}}}\n", "cluster.yaml")


def test_groups_review_names_each_groups_loaders() -> None:
    text = spec_text(
        replace={25: '    - {mac: "44:8a:5b:dd:d8:ba", group: cp}'},
        append=["firmware: {uefi: shim}", "groups: {cp: {firmware: {uefi: ipxe}}}"],
    )
    [review] = [d for d in outputs.symlinks(parse_cluster(text, "cluster.yaml")[0]).reviews if d.name == "groups.txt"]
    body = review.data.decode()
    assert "loaders:   BIOS pxelinux.0, UEFI x86-64 shimx64.efi, UEFI arm64 (none)" in body
    assert "loaders:   BIOS pxelinux.0, UEFI x86-64 snponly.efi, UEFI arm64 (none)" in body
    assert "sets:      firmware" in body


def test_doit_builds_a_groups_own_loader_and_plan_names_the_group(tmp_path: Path) -> None:
    """The group's firmware goes through doit's part files (validated again) to the loader files, the iPXE
    script and the manifest; plan installs snponly.efi because of the group."""
    text = _example('    hostname: "control-{mac}"\n', '    hostname: "control-{mac}"\n    firmware: {uefi: ipxe}\n')
    cluster = parse_cluster(text, "c.yaml")[0]
    need(all(Path(path).is_file() for _, path, _ in wanted_loaders(cluster)), "a loader package is not installed")
    work = tmp_path / "work"
    _build(work, text)
    entries = {e["path"]: e for e in json.loads((work / "build" / "manifest.json").read_text())["entries"]}
    assert "groups.control-plane.firmware" in entries["/srv/tftp/snponly.efi"]["fields"]
    assert "/srv/tftp/nfsroot.ipxe" in entries and "/srv/tftp/shimx64.efi" in entries
    plan = _nfsroot(work, "plan", "--build", str(work / "build"), "--target", str(_target_root(tmp_path / "gw")))
    assert plan.returncode == 2, plan.stdout + plan.stderr
    lines = plan.stdout.splitlines()
    reason = {line.split()[2]: lines[i + 1] for i, line in enumerate(lines) if line.split()[:2] == ["+", "create"]}
    assert "from gateway.tftp_root, groups.control-plane.firmware, package ipxe" in reason["/srv/tftp/snponly.efi"]
    assert "from gateway.tftp_root, firmware, package shim-signed" in reason["/srv/tftp/shimx64.efi"]
