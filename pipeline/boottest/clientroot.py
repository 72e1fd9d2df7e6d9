"""The test client root: a tiny busybox system served as the read-only NFS root during boot tests.

Its /sbin/init is the guest's own witness: it prints a report on the serial console (hostname, mounts,
where the spec's symlinks resolve, the kernel command line), writes a marker file through every writable
mount so the gateway side can see the node really wrote there, and powers the machine off.

A static busybox (Debian's busybox-static, unpacked from its .deb because installing it conflicts with
the busybox package) is preferred; without one, the host's dynamic busybox is used together with the
shared libraries `ldd` names, which boots just as well but depends on the host's libc.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from pipeline.boottest.errors import BootPrerequisiteError
from pipeline.fsutil import write_atomic
from pipeline.run import run

REPORT_BEGIN = "NFSROOT-BOOTTEST-REPORT-BEGIN"
REPORT_END = "NFSROOT-BOOTTEST-REPORT-END"
REPORT_PREFIX = "nfsroot-boottest: "
MARKER_PREFIX = "boottest-"

# Applets the init script uses; linked by name so the script reads like a normal shell script.
APPLETS = (
    "sh", "cat", "echo", "hostname", "mount", "umount", "readlink", "mkdir", "poweroff", "sync", "sleep",
    "uname", "sed", "ls", "date", "grep", "tr", "cut",
)  # fmt: skip

SKELETON = "/usr/lib/nfsroot/skel"
CACHE_ENV = "NFSROOT_BOOTTEST_CACHE"
BUSYBOX_ENV = "NFSROOT_BUSYBOX_STATIC"


@dataclass(frozen=True)
class ClientRootLayout:
    """What the client root must carry for a given cluster: the spec's symlinks and writable mount points."""

    symlinks: Mapping[str, str]
    writable_mounts: Sequence[str]


def cache_dir() -> Path:
    env = os.environ.get(CACHE_ENV)
    if env:
        return Path(env)
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "nfsroot-pipeline"


def static_busybox_path() -> Path:
    """Where the unpacked busybox-static binary lives (it may not exist yet)."""
    env = os.environ.get(BUSYBOX_ENV)
    if env:
        return Path(env)
    return cache_dir() / "busybox-static" / "bin" / "busybox"


def fetch_static_busybox(dest: Path | None = None, *, timeout: float = 300) -> Path:
    """Download Debian's busybox-static with apt and unpack it; returns the binary's path."""
    binary = dest or static_busybox_path()
    if binary.is_file():
        return binary
    root = binary.parent.parent
    download = root.parent / "busybox-static-deb"
    download.mkdir(parents=True, exist_ok=True)
    for old in download.glob("*.deb"):
        old.unlink()
    run(["apt-get", "download", "busybox-static"], cwd=download, timeout=timeout)
    debs = sorted(download.glob("busybox-static_*.deb"))
    if not debs:
        raise BootPrerequisiteError("apt-get download busybox-static produced no .deb")
    run(["dpkg-deb", "-x", debs[-1], root], timeout=timeout)
    if not binary.is_file():
        raise BootPrerequisiteError(f"{debs[-1].name} holds no bin/busybox")
    return binary


def _shared_libraries(binary: Path) -> list[Path]:
    out = run(["ldd", binary], timeout=30).stdout.decode()
    libs: list[Path] = []
    for line in out.splitlines():
        match = re.search(r"(/\S+)\s+\(0x", line)
        if match:
            libs.append(Path(match.group(1)))
    return libs


def find_busybox() -> tuple[Path, list[Path]]:
    """The busybox to install and the shared libraries it needs ([] for the static one)."""
    static = static_busybox_path()
    if static.is_file():
        return static, []
    host = shutil.which("busybox")
    if host is None:
        raise BootPrerequisiteError(
            f"no busybox: unpack Debian's busybox-static to {static} "
            f"(`nfsroot boottest --fetch-busybox`) or install the busybox package"
        )
    return Path(host), _shared_libraries(Path(host))


def shared_checks(links: str, mounts: str) -> str:
    """Report lines both test roots print (the busybox init here, the real root's verdict unit): the mounts,
    each symlink and where it resolves, and one marker written per writable mount. `links` and `mounts` are
    already shell-quoted words; the lines expect $P (the report prefix) and $node."""
    return f"""while read -r dev mnt fstype opts rest; do
  echo "${{P}}mount=$mnt $fstype $dev $opts"
done < /proc/mounts
for link in {links}; do
  echo "${{P}}link=$link -> $(readlink "$link") resolves $(readlink -f "$link")"
  if [ -r "$link" ]; then echo "${{P}}link-readable=$link"; fi
done
for m in {mounts}; do
  f="$m/{MARKER_PREFIX}$node"
  if echo "node=$node hostname=$(hostname)" > "$f" 2>/dev/null && sync; then
    echo "${{P}}wrote=$f"
  else
    echo "${{P}}write-failed=$f"
  fi
done
"""


def render_init(layout: ClientRootLayout) -> str:
    """The client root's /sbin/init: report, write one marker per writable mount, power off."""
    links = " ".join(shlex.quote(p) for p in sorted(layout.symlinks))
    mounts = " ".join(shlex.quote(m) for m in layout.writable_mounts)
    return f"""#!/bin/sh
# nfsroot-pipeline boot-test init: reports what this node sees, then powers off.
export PATH=/bin:/sbin
P={shlex.quote(REPORT_PREFIX)}
[ -e /proc/self ] || mount -t proc proc /proc
[ -e /sys/kernel ] || mount -t sysfs sysfs /sys
node=$(sed -n 's/.*BOOTIF=01-\\([0-9a-fA-F-]*\\).*/\\1/p' /proc/cmdline | tr -d - | tr A-F a-f)
echo {REPORT_BEGIN}
echo "${{P}}node=$node"
echo "${{P}}hostname=$(hostname)"
echo "${{P}}kernel=$(uname -r)"
echo "${{P}}cmdline=$(cat /proc/cmdline)"
{shared_checks(links, mounts)}echo {REPORT_END}
sync
poweroff -f
sleep 30
"""


def _stock_content(path: str) -> bytes:
    """What a fresh Debian root holds at `path` (for the files the spec usually symlinks)."""
    return {"hostname": b"localhost\n", "hosts": b"127.0.0.1\tlocalhost\n"}.get(Path(path).name, b"")


def build_client_root(dest: Path, layout: ClientRootLayout, *, make_symlinks: bool = True) -> Path:
    """Create the client root under `dest` (which must not exist or be empty); returns `dest`.

    With `make_symlinks=False` the spec's symlink paths are left as regular files, as in a freshly installed
    root, for the build's manifest to turn into symlinks the way `apply` does (moving each file to the
    skeleton).

    Never rebuild a client root that a live NFS export serves: the nodes would hold stale handles.
    """
    busybox, libs = find_busybox()
    dest.mkdir(parents=True, exist_ok=True)
    if any(dest.iterdir()):
        raise BootPrerequisiteError(f"client root {dest} is not empty")
    for d in ("bin", "sbin", "etc", "proc", "sys", "dev", "run", "tmp", "root", "var"):
        (dest / d).mkdir(parents=True, exist_ok=True)
    os.chmod(dest / "tmp", 0o1777)
    shutil.copy2(busybox, dest / "bin" / "busybox")
    os.chmod(dest / "bin" / "busybox", 0o755)
    for lib in libs:
        copy = dest / lib.relative_to("/")
        copy.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(lib.resolve(), copy)
    for applet in APPLETS:
        (dest / "bin" / applet).symlink_to("busybox")
    for mount in layout.writable_mounts:
        (dest / mount.lstrip("/")).mkdir(parents=True, exist_ok=True)
    for name, target in sorted(layout.symlinks.items()):
        link = dest / name.lstrip("/")
        link.parent.mkdir(parents=True, exist_ok=True)
        if make_symlinks:
            write_atomic(dest / SKELETON.lstrip("/") / name.lstrip("/"), _stock_content(name))
            link.symlink_to(target)
        else:
            write_atomic(link, _stock_content(name))
    write_atomic(dest / "sbin" / "init", render_init(layout).encode(), mode=0o755)
    return dest
