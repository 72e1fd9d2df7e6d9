"""Boot loaders from the spec's `firmware`: GRUB and iPXE configs, their BOOTIF read by the boot script, the
loader files from Debian's packages, boot-file renaming in both, and the overlay safe for the EFI stub."""

from __future__ import annotations

import io
import os
import re
import subprocess
from pathlib import Path

import pytest

from pipeline import outputs
from pipeline.archive.cpio import Entry, write_archive
from pipeline.archive.segments import scan
from pipeline.errors import ArchiveError
from pipeline.render.bootcfg import render_bootcfg
from pipeline.render.bootscript import render_bootscript
from pipeline.render.loader import (
    ALL_LOADER_FILES,
    GRUB_ARM64,
    LoaderFile,
    LoaderMissingError,
    read_loader_files,
    render_loader,
    wanted_loaders,
)
from pipeline.spec.load import load_cluster
from pipeline.state.pxecfg import rewrite_boot_names
from tests.bootscript.harness import CMDLINE, FakeNode, cluster_from, spec
from tests.prereq import need, require_program
from tests.spec_helpers import parse, spec_text

REPO = Path(__file__).resolve().parents[1]
GOLDEN = Path(__file__).parent / "golden" / "bootcfg"
INITRDS = ["boot/initrd.img-6.1.0-21-amd64", "nfsroot-0123456789abcdef.img"]
CUSTOM = '    - {mac: "00:23:24:94:34:ae", hostname: alpha, cmdline: [quiet]}'
BOTH = spec_text(replace={24: CUSTOM}, append=["firmware: {bios: ipxe, uefi: shim}"])
IPXE_EFI = spec_text(append=["firmware: {uefi: ipxe}"])


def configs(text: str) -> dict[str, bytes]:
    return {a.path: a.data for a in render_bootcfg(parse(text), INITRDS) if a.kind == "file"}


def test_golden() -> None:
    files = {Path(p).name: data for p, data in configs(BOTH).items()}
    assert sorted(files) == ["grub.cfg", "nfsroot.ipxe"]
    for name, data in files.items():
        if os.environ.get("UPDATE_GOLDEN"):
            (GOLDEN / name).write_bytes(data)
        assert data == (GOLDEN / name).read_bytes(), f"{name} differs from its golden file (UPDATE_GOLDEN=1)"


def test_paths_are_the_flat_tftp_layout() -> None:
    assert sorted(configs(BOTH)) == ["/srv/tftp/grub/grub.cfg", "/srv/tftp/nfsroot.ipxe"]
    assert sorted(configs(spec_text(append=["firmware: {uefi: grub}"]))) == ["/srv/tftp/grub/grub.cfg"]
    assert sorted(configs(IPXE_EFI)) == ["/srv/tftp/nfsroot.ipxe"]
    assert configs(spec_text()) == {}


def test_shipped_spec_renders_only_pxelinux() -> None:
    seed = load_cluster(REPO / "cluster.yaml")[0]
    assert render_bootcfg(seed, INITRDS) == []
    assert [f[0] for f in wanted_loaders(seed)] == ["pxelinux.0", "ldlinux.c32"]


def test_grub_script_check_accepts_grub_cfg(tmp_path: Path) -> None:
    checker = require_program("grub-script-check")
    cfg = tmp_path / "grub.cfg"
    cfg.write_bytes(configs(BOTH)["/srv/tftp/grub/grub.cfg"])
    assert subprocess.run([checker, str(cfg)], capture_output=True).returncode == 0
    cfg.write_bytes(cfg.read_bytes().replace(b"\nfi\n", b"\n"))  # the check can fail: an unterminated if
    assert subprocess.run([checker, str(cfg)], capture_output=True).returncode != 0


def grub_cmdline(cfg: str, mac: str) -> str:
    """The kernel command line GRUB builds for `mac`: its regexp, `set` and `if` lines, evaluated as GRUB does."""
    pattern = re.search(r"^regexp (?:--set=\d:m\d )+'([^']+)' \"\$net_default_mac\"$", cfg, re.M)
    assert pattern is not None
    groups = re.fullmatch(pattern.group(1).lstrip("^").rstrip("$"), mac)
    assert groups is not None, "GRUB's regexp does not match $net_default_mac"
    values = {f"m{i}": g for i, g in enumerate(groups.groups(), 1)}
    bootif = re.search(r'^set bootif="([^"]+)"$', cfg, re.M)
    assert bootif is not None
    values["bootif"] = re.sub(r"\$(m\d)", lambda m: values[m.group(1)], bootif.group(1))
    values["nodeargs"] = ""
    for node_mac, args in re.findall(r'if \[ "\$net_default_mac" = "([^"]+)" \]; then\n  set nodeargs="([^"]*)"', cfg):
        if node_mac == mac:
            values["nodeargs"] = args
    linux = re.search(r"^  linux \S+ (.*)$", cfg, re.M)
    assert linux is not None
    return re.sub(r"\$(\w+)", lambda m: values[m.group(1)], linux.group(1)).strip()


def ipxe_cmdline(script: str, mac: str) -> str:
    """The command line iPXE builds: ${net0/mac:hexhyp} is the MAC with hyphens, ${nodeargs} from iseq lines."""
    nodeargs = ""
    for node_mac, args in re.findall(r"^iseq \$\{net0/mac\} (\S+) && set nodeargs (.*) \|\|$", script, re.M):
        if node_mac == mac:
            nodeargs = args
    kernel = re.search(r"^kernel \S+ (.*)$", script, re.M)
    assert kernel is not None
    line = kernel.group(1).replace("${net0/mac:hexhyp}", mac.replace(":", "-")).replace("${nodeargs}", nodeargs)
    return " ".join(word for word in line.split() if not word.startswith("initrd="))


@pytest.mark.parametrize("loader", ["grub", "ipxe"])
@pytest.mark.parametrize("mac", ["00:23:24:94:34:ae", "44:8a:5b:dd:d8:ba"])
def test_boot_script_reads_each_loaders_bootif(loader: str, mac: str, tmp_path: Path) -> None:
    require_program("dash")
    text = configs(BOTH)
    cmdline = (
        grub_cmdline(text["/srv/tftp/grub/grub.cfg"].decode(), mac)
        if loader == "grub"
        else ipxe_cmdline(text["/srv/tftp/nfsroot.ipxe"].decode(), mac)
    )
    node_id = mac.replace(":", "")
    assert f"BOOTIF=01-{mac.replace(':', '-')}" in cmdline.split()
    node = FakeNode(tmp_path, cluster_from(spec()))
    # The node's only interface has another MAC: the id can come from BOOTIF alone.
    node.set_cmdline(CMDLINE.split(" ip=")[0] + " " + cmdline)
    node.remove_interface("eth0")
    node.add_interface("eth7", "52:54:00:ab:cd:01")
    result = node.boot("dash", render_bootscript(node.cluster), None, kmsg=True, tools="host")
    assert result.returncode == 0, result.stderr
    assert f"nfsroot: node id {node_id} from BOOTIF (kernel command line)" in result.kmsg
    expected = "alpha" if mac == "00:23:24:94:34:ae" else f"worker-node-{node_id}"
    assert (node.node_dir(node_id) / "hostname").read_text() == expected + "\n"


def test_plan_renames_boot_files_in_grub_and_ipxe() -> None:
    mapping = {
        "vmlinuz-6.1.0-21-amd64": "vmlinuz-6.1.0-21-amd64.aaaaaaaaaaaa",
        "initrd.img-6.1.0-21-amd64": "initrd.img-6.1.0-21-amd64.bbbbbbbbbbbb",
        "nfsroot-0123456789abcdef.img": "nfsroot-fedcba9876543210.img",  # rollback swaps ours too
    }
    text = configs(BOTH)
    grub = rewrite_boot_names(text["/srv/tftp/grub/grub.cfg"].decode(), mapping)
    assert "  linux /boot/vmlinuz-6.1.0-21-amd64.aaaaaaaaaaaa root=/dev/nfs " in grub
    assert "  initrd /boot/initrd.img-6.1.0-21-amd64.bbbbbbbbbbbb /nfsroot-fedcba9876543210.img\n" in grub
    # iPXE fetches over HTTP by default: the URL's path is renamed, the http://gateway/ base kept.
    ipxe = rewrite_boot_names(text["/srv/tftp/nfsroot.ipxe"].decode(), mapping)
    assert (
        "kernel http://192.168.0.254/boot/vmlinuz-6.1.0-21-amd64.aaaaaaaaaaaa "
        "initrd=initrd.img-6.1.0-21-amd64.bbbbbbbbbbbb initrd=nfsroot-fedcba9876543210.img root=/dev/nfs " in ipxe
    )
    assert (
        "\ninitrd http://192.168.0.254/boot/initrd.img-6.1.0-21-amd64.bbbbbbbbbbbb"
        "\ninitrd http://192.168.0.254/nfsroot-fedcba9876543210.img\n" in ipxe
    )
    assert "BOOTIF=01-${net0/mac:hexhyp}" in ipxe and "BOOTIF=$bootif $nodeargs" in grub  # arguments untouched


@pytest.mark.parametrize(
    ("firmware", "names"),
    [
        ("{uefi: shim}", ["pxelinux.0", "ldlinux.c32", "shimx64.efi", "grubx64.efi"]),
        ("{uefi: grub}", ["pxelinux.0", "ldlinux.c32", "grubx64.efi"]),
        ("{uefi: ipxe, bios: ipxe}", ["pxelinux.0", "ldlinux.c32", "snponly.efi", "undionly.kpxe"]),
    ],
)
def test_loader_files_come_from_debian_packages(firmware: str, names: list[str]) -> None:
    cluster = parse(spec_text(append=[f"firmware: {firmware}"]))
    need(all(Path(path).is_file() for _, path, _ in wanted_loaders(cluster)), "a loader package is not installed")
    artifacts = outputs.loader(cluster).artifacts
    assert [a.path.rsplit("/", 1)[1] for a in artifacts] == names
    sources = {name: (path, package) for name, path, package in ALL_LOADER_FILES}
    for a in artifacts:
        path, package = sources[a.path.rsplit("/", 1)[1]]
        assert a.data == Path(path).read_bytes() and a.role == "loader"
        version = subprocess.run(
            ["dpkg-query", "--show", "--showformat=${Version}", package], capture_output=True, text=True, check=True
        ).stdout
        assert f"package {package} {version}" in a.fields


def _odd_length_distro_initrd() -> bytes:
    """A distro-like initrd: a plain archive, then a compressed one whose length is not a multiple of 4."""
    import gzip

    plain, main = io.BytesIO(), io.BytesIO()
    write_archive([Entry.file("kernel/x86/microcode/GenuineIntel.bin", b"u" * 10, 0o644)], plain, mtime=0)
    write_archive([Entry.file("init", b"#!/bin/sh\n", 0o755)], main, mtime=0)
    for level in range(1, 10):
        data = plain.getvalue() + gzip.compress(main.getvalue(), compresslevel=level, mtime=0)
        if len(data) % 4:
            return data
    raise AssertionError("every gzip level gave a multiple of 4")


def test_overlay_survives_the_efi_stub_joining_initrds_without_padding() -> None:
    distro = _odd_length_distro_initrd()
    plain = outputs.overlay_image(parse(spec_text()))[1]
    name, safe = outputs.overlay_image(parse(IPXE_EFI))
    assert name.startswith("nfsroot-") and safe != plain
    with pytest.raises(ArchiveError, match="4-byte-aligned"):  # what the kernel does with the plain one
        [m.name for s in scan(io.BytesIO(distro + plain), "joined") for m in s.members()]
    members = [m.name for s in scan(io.BytesIO(distro + safe), "joined") for m in s.members()]
    assert "scripts/init-bottom/nfsroot" in members and "init" in members
    assert outputs.overlay_image(parse(IPXE_EFI)) == (name, safe)  # reproducible


def test_arm64_grub_is_installed_beside_the_others_and_reads_the_same_grub_cfg() -> None:
    cluster = parse(spec_text(append=["firmware: {arm64: grub}"]))
    assert wanted_loaders(cluster)[-1] == GRUB_ARM64
    assert GRUB_ARM64[1] == "/usr/lib/grub/arm64-efi-signed/grubnetaa64.efi.signed"
    (artifact,) = render_loader(cluster, [LoaderFile("grubaa64.efi", "grub-efi-arm64-signed", "1+2.06", b"MZ")])
    assert artifact.path == "/srv/tftp/grubaa64.efi" and "firmware" in artifact.fields
    assert "/srv/tftp/grub/grub.cfg" in configs(spec_text(append=["firmware: {arm64: grub}"]))


def test_a_missing_arm64_package_says_how_to_install_it_through_multiarch(tmp_path: Path) -> None:
    absent = ("grubaa64.efi", str(tmp_path / "grubnetaa64.efi.signed"), "grub-efi-arm64-signed")
    with pytest.raises(LoaderMissingError) as caught:
        read_loader_files((absent,))
    assert "dpkg --add-architecture arm64 && apt-get update && apt-get install grub-efi-arm64-signed:arm64" in str(
        caught.value
    )


# The default group boots UEFI through shim; control-plane (the second known node) through iPXE.
GROUP_IPXE = spec_text(
    replace={25: '    - {mac: "44:8a:5b:dd:d8:ba", group: control-plane}'},
    append=["firmware: {uefi: shim}", "groups: {control-plane: {firmware: {uefi: ipxe}}}"],
)


def test_every_groups_loaders_are_installed_and_configured() -> None:
    from pipeline.render.httpserver import render_httpserver

    cluster = parse(GROUP_IPXE)
    names = [name for name, _, _ in wanted_loaders(cluster)]
    assert names == ["pxelinux.0", "ldlinux.c32", "shimx64.efi", "grubx64.efi", "snponly.efi"]
    (files,) = [render_loader(cluster, [LoaderFile("snponly.efi", "ipxe", "1", b"MZ")])]
    assert files[0].fields[:2] == ("gateway.tftp_root", "groups.control-plane.firmware")
    # Only the group boots iPXE, yet its nodes need the script (holding its entry) and the HTTP server.
    tftp = {Path(a.path).name: a.data for a in outputs.pxelinux(cluster, INITRDS, {"control-plane": INITRDS}).artifacts}
    assert "grub.cfg" in tftp and "nfsroot.ipxe" in tftp
    assert b"44:8a:5b:dd:d8:ba" in tftp["nfsroot.ipxe"] and b"http://192.168.0.254/" in tftp["nfsroot.ipxe"]
    (nginx,) = render_httpserver(cluster)
    assert nginx.fields == ("name", "gateway", "firmware", "groups.control-plane.firmware")
    assert render_httpserver(parse(spec_text(append=["firmware: {uefi: shim}"]))) == []
    # The group's overlay is the one the EFI stub can join (compressed); the default group's stays as it was.
    views = cluster.groups_resolved()
    assert outputs.overlay_image(views[1].cluster)[1] != outputs.overlay_image(views[0].cluster)[1]
    assert outputs.overlay_image(views[1].cluster) == outputs.overlay_image(parse(IPXE_EFI))


def test_a_groups_loader_needs_its_package_like_the_cluster_wide_one() -> None:
    text = spec_text(
        replace={25: '    - {mac: "44:8a:5b:dd:d8:ba", group: arm}'},
        append=["groups: {arm: {firmware: {arm64: grub}}}"],
    )
    cluster = parse(text)
    assert GRUB_ARM64 in wanted_loaders(cluster) and GRUB_ARM64 not in wanted_loaders(parse(spec_text()))
    if not Path(GRUB_ARM64[1]).is_file():  # not installed here: the build stops, saying how to install it
        with pytest.raises(LoaderMissingError, match="apt-get install grub-efi-arm64-signed:arm64"):
            outputs.loader(cluster)
