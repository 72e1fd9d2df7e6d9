"""dnsmasq configuration: golden files, `dnsmasq --test`, the spec's rules, and values that must not inject."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from pipeline.render.dnsmasq import render_dnsmasq
from pipeline.render.templating import UnsafeValueError, dnsmasq
from pipeline.spec.load import load_cluster
from pipeline.spec.model import Cluster
from tests.prereq import require_program
from tests.spec_helpers import parse, problems, spec_text

REPO = Path(__file__).resolve().parents[1]
GOLDEN = Path(__file__).parent / "golden" / "dnsmasq"
NODE_WITH_ADDRESS = '    - {mac: "00:23:24:94:34:ae", address: 192.168.0.11, hostname: alpha}'
# Two groups with different UEFI loaders: the second known node is in control-plane, which boots iPXE.
CONTROL_PLANE = {25: '    - {mac: "44:8a:5b:dd:d8:ba", group: control-plane}'}
TWO_GROUPS = ["firmware: {uefi: shim}", 'groups: {control-plane: {hostname: "cp-{mac}", firmware: {uefi: ipxe}}}']

SPECS = {
    "full.conf": spec_text(
        replace={24: NODE_WITH_ADDRESS},
        append=["firmware: {bios: ipxe, uefi: shim}", "dhcp: {range_start: 192.168.0.100, range_end: 192.168.0.199}"],
    ),
    "proxy.conf": spec_text(append=["firmware: {uefi: ipxe}", "dhcp: {mode: proxy, interface: br0}"]),
    "full-pxelinux-grub.conf": spec_text(
        append=["firmware: {uefi: grub}", "dhcp: {range_start: 192.168.0.10, range_end: 192.168.0.20, lease_time: 1h}"]
    ),
    "full-groups.conf": spec_text(
        replace=CONTROL_PLANE, append=[*TWO_GROUPS, "dhcp: {range_start: 192.168.0.100, range_end: 192.168.0.199}"]
    ),
    "proxy-groups.conf": spec_text(replace=CONTROL_PLANE, append=[*TWO_GROUPS, "dhcp: {mode: proxy}"]),
}


def config(text: str) -> bytes:
    (artifact,) = render_dnsmasq(parse(text))
    assert artifact.path == "/etc/dnsmasq.d/nfsroot.conf" and artifact.role == "dnsmasq"
    return artifact.data


@pytest.mark.parametrize("name", sorted(SPECS))
def test_golden(name: str) -> None:
    data = config(SPECS[name])
    if os.environ.get("UPDATE_GOLDEN"):
        (GOLDEN / name).write_bytes(data)
    assert data == (GOLDEN / name).read_bytes(), f"{name} differs from its golden file (UPDATE_GOLDEN=1 to accept)"


def test_golden_dir_holds_only_these() -> None:
    assert sorted(p.name for p in GOLDEN.iterdir()) == sorted(SPECS)


@pytest.mark.parametrize("name", sorted(SPECS))
def test_dnsmasq_accepts_it(name: str, tmp_path: Path) -> None:
    binary = require_program("dnsmasq")
    conf = tmp_path / "nfsroot.conf"
    conf.write_bytes(config(SPECS[name]))
    result = subprocess.run([binary, "--test", f"--conf-file={conf}"], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert "syntax check OK" in result.stderr


def test_dnsmasq_test_can_fail(tmp_path: Path) -> None:
    # The check above means something: dnsmasq --test rejects a broken line of the same kind.
    binary = require_program("dnsmasq")
    conf = tmp_path / "bad.conf"
    conf.write_bytes(config(SPECS["full.conf"]).replace(b"255.255.255.0,12h\n", b"255.255.255.0,12x\n"))
    result = subprocess.run([binary, "--test", f"--conf-file={conf}"], capture_output=True, text=True)
    assert result.returncode != 0 and "bad dhcp-range" in result.stderr


def test_full_mode_lines() -> None:
    text = config(SPECS["full.conf"]).decode().splitlines()
    assert "dhcp-range=192.168.0.100,192.168.0.199,255.255.255.0,12h" in text
    assert "dhcp-host=00:23:24:94:34:ae,192.168.0.11,alpha,12h" in text
    assert "dhcp-host=44:8a:5b:dd:d8:ba,worker-node-448a5bddd8ba,12h" in text
    assert "dhcp-boot=tag:ipxe,nfsroot.ipxe" in text  # iPXE gets the script: no chainload loop
    assert "dhcp-boot=tag:!ipxe,tag:bios,undionly.kpxe" in text
    assert "dhcp-boot=tag:!ipxe,tag:efi64,shimx64.efi" in text
    for arch in ("0", "7", "9", "11"):
        assert any(line.endswith(f"option:client-arch,{arch}") for line in text)
    assert "tftp-max=256" in text  # dnsmasq's own default (50) holds back a storm of more nodes


def test_a_group_with_other_loaders_is_told_apart_by_mac() -> None:
    text = config(SPECS["full-groups.conf"]).decode().splitlines()
    assert "dhcp-mac=set:group-control-plane,44:8a:5b:dd:d8:ba" in text
    assert not any("00:23:24:94:34:ae" in line for line in text if line.startswith("dhcp-mac="))
    assert "dhcp-host=44:8a:5b:dd:d8:ba,cp-448a5bddd8ba,12h" in text
    # Each line is one group's: the default group's exclude the tag, so no client matches two.
    assert "dhcp-boot=tag:efi64,tag:!group-control-plane,shimx64.efi" in text
    assert "dhcp-boot=tag:!ipxe,tag:efi64,tag:group-control-plane,snponly.efi" in text
    assert "dhcp-boot=tag:ipxe,tag:group-control-plane,nfsroot.ipxe" in text
    assert "dhcp-boot=tag:ipxe,nfsroot.ipxe" not in text  # the default group's iPXE ROMs still get its loader
    proxy = config(SPECS["proxy-groups.conf"]).decode().splitlines()
    assert 'pxe-service=tag:!group-control-plane,x86-64_EFI,"homelab",shimx64.efi' in proxy
    assert 'pxe-service=tag:!ipxe,tag:group-control-plane,x86-64_EFI,"homelab",snponly.efi' in proxy


def test_a_group_without_a_uefi_loader_and_the_cluster_wide_settings_as_a_group() -> None:
    # Unknown nodes boot `workers` (GRUB); node 0 the cluster-wide settings (`group: default`, shim); cp no UEFI.
    text = spec_text(
        replace={
            22: '  hostname: "worker-node-{mac}"\n  default_group: workers',
            24: '    - {mac: "00:23:24:94:34:ae", group: default}',
            25: '    - {mac: "44:8a:5b:dd:d8:ba", group: cp}',
        },
        append=[
            "firmware: {uefi: shim}",
            "groups: {workers: {firmware: {uefi: grub}}, cp: {firmware: {uefi: none}}}",
            "dhcp: {mode: proxy}",
        ],
    )
    lines = config(text).decode().splitlines()
    efi = [line for line in lines if "x86-64_EFI" in line and not line.startswith("#")]
    assert efi == [
        'pxe-service=tag:!group-cp,tag:!group-default,x86-64_EFI,"homelab",grubx64.efi',
        'pxe-service=tag:group-default,x86-64_EFI,"homelab",shimx64.efi',
    ]
    assert "dhcp-mac=set:group-default,00:23:24:94:34:ae" in lines
    assert 'pxe-service=tag:group-cp,x86PC,"homelab",pxelinux' in lines


def test_groups_with_the_default_loaders_add_nothing() -> None:
    # A group that sets only other things, or the default's loaders again, renders as one group does.
    one = config(spec_text(append=["firmware: {uefi: shim}", "dhcp: {mode: proxy}"]))
    same = spec_text(
        replace=CONTROL_PLANE,
        append=["firmware: {uefi: shim}", "groups: {control-plane: {firmware: {uefi: shim}}}", "dhcp: {mode: proxy}"],
    )
    assert config(same) == one


def test_tftp_max_is_the_spec_value() -> None:
    spec = spec_text(append=["dhcp: {mode: proxy, tftp_max: 1000}"])
    assert "tftp-max=1000" in config(spec).decode().splitlines()


def test_proxy_mode_leases_nothing() -> None:
    text = config(SPECS["proxy.conf"]).decode().splitlines()
    assert "dhcp-range=192.168.0.0,proxy,255.255.255.0" in text
    assert "interface=br0" in text
    assert not any(line.startswith("dhcp-host=") for line in text)
    assert 'pxe-service=tag:!ipxe,x86PC,"homelab",pxelinux' in text  # the client adds ".0"
    assert 'pxe-service=tag:!ipxe,x86-64_EFI,"homelab",snponly.efi' in text
    assert 'pxe-service=tag:!ipxe,BC_EFI,"homelab",snponly.efi' in text  # option 93 = 9


def test_no_uefi_loader_means_no_uefi_boot_line() -> None:
    text = config(spec_text(append=["dhcp: {range_start: 192.168.0.10, range_end: 192.168.0.20}"])).decode()
    assert "tag:efi64," not in text.replace("set:efi64,", "")
    # No iPXE loader: an iPXE option ROM (QEMU's) is a PXE client like any other and gets pxelinux.0.
    assert "dhcp-boot=tag:bios,pxelinux.0" in text
    assert "nfsroot.ipxe" not in text and "tag:!ipxe" not in text


def test_shipped_spec_has_no_dnsmasq() -> None:
    cluster: Cluster = load_cluster(REPO / "cluster.yaml")[0]
    assert cluster.dhcp is None and cluster.firmware.uefi == "none" and cluster.firmware.bios == "pxelinux"
    assert render_dnsmasq(cluster) == []


@pytest.mark.parametrize(
    ("dhcp", "expected"),
    [
        ("{mode: full}", "dhcp.range_start: required when dhcp.mode is full"),
        ("{range_start: 192.168.1.5, range_end: 192.168.0.20}", "dhcp.range_start: 192.168.1.5 is not a host address"),
        ("{range_start: 192.168.0.30, range_end: 192.168.0.20}", "dhcp.range_end: 192.168.0.20 comes before"),
        ("{range_start: 192.168.0.200, range_end: 192.168.0.254}", "holds the gateway 192.168.0.254"),
        ("{mode: proxy, range_start: 192.168.0.10}", "dhcp.range_start: proxy-DHCP leases no addresses"),
        ("{mode: bogus}", "dhcp.mode"),
        ("{mode: proxy, lease_time: '12h,set:x'}", "dhcp.lease_time: '12h,set:x' is not a lease time"),
        ("{mode: proxy, interface: 'br0,dhcp-boot=evil'}", "is not a network interface name"),
        ('{mode: proxy, interface: "br0\\ndhcp-boot=evil"}', "is not a network interface name"),
        ("{mode: proxy, reload: ['systemctl;reboot']}", "is not a plain command word"),
        ("{mode: proxy, config_file: 'etc/x.conf'}", "expected an absolute path"),
        ("{mode: proxy, tftp_max: 0}", "dhcp.tftp_max: 0 is out of range: must be greater than or equal to 1"),
        ("{mode: proxy, tftp_max: 5000}", "dhcp.tftp_max: 5000 is out of range: must be less than or equal to 4096"),
        ("{mode: proxy, tftp_max: '256'}", "dhcp.tftp_max: expected a whole number"),
    ],
)
def test_bad_dhcp_values_are_refused_at_their_line(dhcp: str, expected: str) -> None:
    found = problems(spec_text(append=[f"dhcp: {dhcp}"]))
    assert any(expected in p for p in found), found
    assert all(p.startswith("cluster.yaml:27:") for p in found), found


def test_hostile_host_name_never_reaches_the_config() -> None:
    found = problems(spec_text(replace={24: '    - {mac: "00:23:24:94:34:ae", hostname: "a,192.168.0.9"}'}))
    assert any("nodes.known.0.hostname" in p for p in found), found


@pytest.mark.parametrize("value", ["a,b", "a b", "a\nb", 'a"', "", "x#y"])
def test_template_filter_refuses_separators(value: str) -> None:
    with pytest.raises(UnsafeValueError):
        dnsmasq(value)


def test_reads_only_its_declared_parts_when_enabled() -> None:
    # tests/test_incremental.py checks every family against the base spec, where dnsmasq renders nothing; here
    # DHCP is on, so an undeclared part that changed the configuration would be caught.
    from pipeline.families import FAMILIES
    from tests.test_incremental import EDITS

    extra = ["firmware: {bios: ipxe, uefi: shim}", "dhcp: {range_start: 192.168.0.100, range_end: 192.168.0.199}"]
    base = render_dnsmasq(parse(spec_text(append=extra)))
    declared = FAMILIES["dnsmasq"].parts
    for part, edit in EDITS.items():
        if part in ("dhcp", "firmware"):
            continue
        changed = render_dnsmasq(parse(spec_text(edit, append=extra))) != base
        assert part in declared or not changed, f"dnsmasq changed when {part} was edited, but does not declare it"
        if part in ("name", "nodes.known", "nodes.hostname"):
            assert changed, part


def test_boot_test_serves_the_generated_configuration_with_only_root_and_interface_moved(tmp_path: Path) -> None:
    from pipeline.boottest.lan import BRIDGE, generated_dnsmasq

    generated = config(SPECS["full.conf"]).decode()
    served = generated_dnsmasq(parse(SPECS["full.conf"]))(tmp_path / "tftp").decode()
    moved = generated.replace("tftp-root=/srv/tftp\n", f"tftp-root={tmp_path / 'tftp'}\n")
    assert served == moved.replace("enable-tftp\n", f"interface={BRIDGE}\nenable-tftp\n")


def test_boot_test_refuses_a_bridge_outside_a_namespace(tmp_path: Path) -> None:
    from pipeline.boottest.errors import BootTestError
    from pipeline.boottest.lan import Lan, LanSettings
    from pipeline.boottest.proc import NetworkSandbox

    settings = LanSettings("seabios", lambda tftp: b"")
    with pytest.raises(BootTestError, match="needs its own network namespace"):
        Lan(settings, NetworkSandbox(None), "192.168.77.1", "192.168.77.0/24", tmp_path, tmp_path)
    with pytest.raises(BootTestError, match="unknown firmware"):
        Lan(
            LanSettings("coreboot", lambda tftp: b""),
            NetworkSandbox("x"),
            "192.168.77.1",
            "192.168.77.0/24",
            tmp_path,
            tmp_path,
        )
