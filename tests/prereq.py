"""Prerequisites of tests: a missing one skips the test locally, but fails it in CI, where .ci/run provides it.

The skip or failure is reported at the test that needed the program (tests/conftest.py moves it there), with
the Debian package that provides the program, so `pytest -rs` says which test skipped and what to install.
"""

from __future__ import annotations

import os
import shutil

import pytest

IN_CI = os.environ.get("CI") == "true"

# The Debian package of each program a test asks for by name; every package is listed in .ci/apt-packages
# (tests/test_prereq.py checks both).
PACKAGES: dict[str, str] = {
    "busybox": "busybox",
    "cpio": "cpio",
    "dash": "dash",
    "getcap": "libcap2-bin",
    "gzip": "gzip",
    "lsinitramfs": "initramfs-tools",
    "lz4": "lz4",
    "mkinitramfs": "initramfs-tools",
    "setcap": "libcap2-bin",
    "shellcheck": "shellcheck",
    "unmkinitramfs": "initramfs-tools",
    "xz": "xz-utils",
    "zstd": "zstd",
    "bzip2": "bzip2",
    "/usr/lib/klibc/bin/sh": "klibc-utils",
    "chattr": "e2fsprogs",
    "mount": "mount",
    "umount": "mount",
    "useradd": "passwd",
    "dnsmasq": "dnsmasq-base",
    "grub-script-check": "grub-common",
    "ssh-keygen": "openssh-client",
    "nginx": "nginx-light",
    "mkfs.xfs": "xfsprogs",
    "mkfs.ext4": "e2fsprogs",
    "losetup": "mount",
    "findmnt": "util-linux",
    "unshare": "util-linux",
}


def need(ok: bool, reason: str) -> None:
    __tracebackhide__ = True  # report the caller's line, not this one
    if not ok:
        if IN_CI:
            pytest.fail(f"prerequisite missing in CI: {reason}")
        pytest.skip(reason)


def package_of(program: str) -> str:
    """The Debian package providing `program`, as words for a message."""
    package = PACKAGES.get(program)
    return f"package {package}" if package else "its Debian package is not in tests/prereq.py's list"


def require_program(name: str) -> str:
    """The program's path, also found in /usr/sbin and /sbin when PATH lacks them (mkinitramfs, setcap)."""
    __tracebackhide__ = True
    found = shutil.which(name) or next(
        (p for d in ("/usr/sbin", "/sbin") if os.access(p := f"{d}/{name}", os.X_OK)), None
    )
    need(found is not None, f"{name} is not installed ({package_of(name)})")
    assert found is not None
    return found
