"""A real Debian bookworm root for boot tests, built with mmdebstrap and cached outside the checkout.

The root is what a user would adopt: minbase plus systemd, udev, dbus, timesyncd, openssh-server and ping,
a user `user` with a home in /home/user, and the installer's `127.0.1.1 debian` line in /etc/hosts. The
modules of the kernel the boot test serves (the one installed on this machine, from /boot) are hard-linked
into its /lib/modules, so udev and modprobe@ units find them.

Cached at `<cache>/roots/<key>`, where the key hashes every input (suite, mirror, packages, the user, the
kernel version, this module's recipe version): built into `<key>.tmp` and renamed, so a half-built root is
never used. A test serves a copy (`clone_root`), never the cache itself.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from dataclasses import asdict, dataclass
from pathlib import Path

from pipeline.boottest.errors import BootPrerequisiteError
from pipeline.fsutil import write_atomic
from pipeline.run import run

CACHE_ENV = "NFSROOT_ROOT_CACHE"
DEFAULT_CACHE = Path("/var/cache/nfsroot-pipeline/roots")
RECIPE = 1  # bump when the customisation below changes


@dataclass(frozen=True)
class RootRecipe:
    suite: str = "bookworm"
    mirror: str = "http://deb.debian.org/debian"
    packages: tuple[str, ...] = (
        "systemd", "systemd-sysv", "udev", "dbus", "systemd-timesyncd", "openssh-server", "iputils-ping", "kmod",
    )  # fmt: skip
    user: str = "user"
    uid: int = 1000
    installer_hostname: str = "debian"
    kernel: str = ""  # the version whose modules go into /lib/modules ("" for none)
    recipe: int = RECIPE

    def key(self) -> str:
        return hashlib.sha256(json.dumps(asdict(self), sort_keys=True).encode()).hexdigest()[:16]


# The second cached root, for tests/test_boot_containerd.py: containerd (1.6 in bookworm) and runc, and the
# e2fsprogs nfsroot-storage.service runs to make and check the per-node ext4 image containerd's state lives on.
CONTAINERD_PACKAGES = ("containerd", "runc", "e2fsprogs")


def containerd_recipe() -> RootRecipe:
    return RootRecipe(packages=RootRecipe().packages + CONTAINERD_PACKAGES, kernel=installed_kernel())


def cache_root() -> Path:
    return Path(os.environ.get(CACHE_ENV) or DEFAULT_CACHE)


def installed_kernel() -> str:
    """The one kernel version in /boot that the boot test serves, or "" when it is not exactly one."""
    versions = sorted(p.name.removeprefix("vmlinuz-") for p in Path("/boot").glob("vmlinuz-*") if p.is_file())
    return versions[0] if len(versions) == 1 else ""


def _customise(root: Path, recipe: RootRecipe) -> None:
    run(
        ["chroot", root, "useradd", "--create-home", "--uid", str(recipe.uid), "--shell", "/bin/bash", recipe.user],
        timeout=120,
    )
    # What the Debian installer leaves behind: the image's own name on 127.0.1.1.
    write_atomic(root / "etc/hostname", f"{recipe.installer_hostname}\n".encode())
    hosts = (
        f"127.0.0.1\tlocalhost\n127.0.1.1\t{recipe.installer_hostname}\n\n::1\tlocalhost ip6-localhost ip6-loopback\n"
    )
    write_atomic(root / "etc/hosts", hosts.encode())
    if recipe.kernel:
        modules = Path("/usr/lib/modules") / recipe.kernel
        if not modules.is_dir():
            raise BootPrerequisiteError(f"{modules} is missing: the served kernel's modules must go into the root")
        dest = root / "usr/lib/modules" / recipe.kernel
        dest.parent.mkdir(parents=True, exist_ok=True)
        run(["cp", "-a", "--link", modules, dest], timeout=600)


def debian_root(recipe: RootRecipe | None = None, *, timeout: float = 1800) -> Path:
    """The cached root for `recipe`, built first when missing."""
    recipe = recipe or RootRecipe(kernel=installed_kernel())
    if shutil.which("mmdebstrap") is None:
        raise BootPrerequisiteError("mmdebstrap not found: install mmdebstrap")
    cache = cache_root()
    final = cache / recipe.key()
    if (final / "etc/os-release").exists():
        return final
    cache.mkdir(parents=True, exist_ok=True)
    tmp = cache / f"{recipe.key()}.tmp"
    if tmp.exists():
        shutil.rmtree(tmp)
    run(
        [
            "mmdebstrap", "--mode=root", "--variant=minbase", "--include=" + ",".join(recipe.packages),
            recipe.suite, tmp, recipe.mirror,
        ],
        timeout=timeout,
    )  # fmt: skip
    _customise(tmp, recipe)
    write_atomic(tmp / ".nfsroot-root-recipe.json", (json.dumps(asdict(recipe), indent=2) + "\n").encode())
    os.rename(tmp, final)
    return final


def clone_root(source: Path, dest: Path) -> Path:
    """A full copy of `source` at `dest` (not hard links: apply chmods ping in place for the setuid remedy)."""
    if dest.exists():
        raise BootPrerequisiteError(f"{dest} exists")
    dest.parent.mkdir(parents=True, exist_ok=True)
    run(["cp", "-a", "--reflink=auto", source, dest], timeout=600)
    (dest / ".nfsroot-root-recipe.json").unlink(missing_ok=True)
    return dest
