"""What a boot test needs on this machine, as messages naming the Debian package that brings each part."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from pipeline.boottest.clientroot import static_busybox_path
from pipeline.boottest.nfsserver import PLUGIN_DIRS
from pipeline.boottest.qemu import NIC_ROM, QEMU
from pipeline.boottest.tftp import LDLINUX, PXELINUX

_PROGRAMS = (
    (QEMU, "qemu-system-x86"),
    ("ganesha.nfsd", "nfs-ganesha"),
    ("rpcbind", "rpcbind"),
    ("rpcinfo", "rpcbind"),
    ("showmount", "nfs-common"),
    ("ip", "iproute2"),
)


def installed_kernels(boot: Path = Path("/boot")) -> list[str]:
    """Kernel versions with both /boot/vmlinuz-<v> and /boot/initrd.img-<v>, newest name last."""
    versions = [p.name.removeprefix("vmlinuz-") for p in boot.glob("vmlinuz-*")]
    return sorted(v for v in versions if (boot / f"initrd.img-{v}").is_file())


def missing_prerequisites() -> list[str]:
    missing = []
    if os.geteuid() != 0:
        missing.append("root (ganesha serves files as their owners; the network namespace needs CAP_SYS_ADMIN)")
    for program, package in _PROGRAMS:
        if shutil.which(program) is None:
            missing.append(f"{program} (package {package})")
    for path, package in (PXELINUX, LDLINUX, (NIC_ROM, "ipxe-qemu")):
        if not path.is_file():
            missing.append(f"{path} (package {package})")
    if not any((Path(d) / "libfsalvfs.so").is_file() for d in PLUGIN_DIRS):
        missing.append("ganesha's VFS backend (package nfs-ganesha-vfs)")
    if not static_busybox_path().is_file() and shutil.which("busybox") is None:
        missing.append("busybox (Debian's busybox-static unpacked, or package busybox)")
    if not installed_kernels():
        missing.append("a kernel and initrd in /boot (packages linux-image-amd64 and initramfs-tools)")
    return missing
