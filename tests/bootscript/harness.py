"""Run the rendered boot script outside an initramfs: a fake node (root, /proc, /sys, /run) and a fake gateway.

The stubs in `bin/` stand in for nfsmount, umount, hostname and sleep; `functions` stands in for
initramfs-tools' /scripts/functions (panic). Everything else the script runs (mkdir, cat, mv, cp, rm) is the
real program. A "mount" turns the empty mount point into a symlink to the matching gateway directory, so the
script's writes land in `gateway/` where the test reads them, and anything written to the read-only root
itself shows up as a difference in `root_snapshot()`.
"""

from __future__ import annotations

import copy
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from pipeline.spec.load import parse_cluster
from pipeline.spec.model import Cluster
from tests.prereq import IN_CI, require_program

HERE = Path(__file__).resolve().parent
STUB_BIN = HERE / "bin"
STUB_FUNCTIONS = HERE / "functions"

SHELLS: dict[str, list[str]] = {
    "dash": ["dash"],
    "busybox": ["busybox", "sh"],
    # klibc's own sh: what runs the script in an initramfs built without busybox.
    "klibc": ["/usr/lib/klibc/bin/sh"],
}
KLIBC_BIN = Path("/usr/lib/klibc/bin")

GATEWAY = "192.168.0.254"
MAC = "00:23:24:94:34:ae"
NODE_ID = "0023249434ae"
CMDLINE = (
    "BOOT_IMAGE=vmlinuz-6.1.0-21-amd64 root=/dev/nfs nfsroot=192.168.0.254:/clients,ro ip=dhcp "
    "ip=192.168.0.4:192.168.0.254:192.168.0.254:255.255.255.0 BOOTIF=01-00-23-24-94-34-ae CPU=6PVXL"
)
SKEL_HOSTS = "127.0.0.1 localhost\n::1 localhost ip6-localhost ip6-loopback\nff02::1 ip6-allnodes\n"

# The seed's cluster plus symlinks that get seeded from the skeleton (a plain file and a private key in a
# subdirectory).
BASE_SPEC: dict[str, Any] = {
    "name": "homelab",
    "gateway": {"address": GATEWAY, "network": "192.168.0.0/24"},
    "shares": {
        "clients": {"path": "/clients", "access": "ro"},
        "workers": {"path": "/workers", "access": "rw"},
    },
    "root": {"share": "clients"},
    "writable": [
        {"mount": "/var/local", "share": "workers", "per_node": True},
        {"mount": "/home", "share": "workers", "subdir": "home"},
    ],
    "symlinks": {
        "/etc/hostname": "/var/local/hostname",
        "/etc/hosts": "/var/local/hosts",
        "/etc/adjtime": "/var/local/adjtime",
        "/etc/ssh/ssh_host_ed25519_key": "/var/local/ssh/ssh_host_ed25519_key",
    },
    "boot": {"kernel": "6.1.0-21-amd64", "mount_retries": 3},
    "nodes": {"hostname": "worker-node-{mac}"},
}


def ci() -> bool:
    return IN_CI


def shell_argv(shell: str) -> list[str]:
    # Absolute: the script's PATH may hold no shell at all.
    program, *args = SHELLS[shell]
    return [require_program(program), *args]


def spec(**changes: Any) -> dict[str, Any]:
    """BASE_SPEC with top-level parts replaced or, for dicts given as {"merge": {...}}, updated."""
    data = copy.deepcopy(BASE_SPEC)
    for key, value in changes.items():
        if isinstance(value, dict) and set(value) == {"merge"}:
            data[key].update(value["merge"])
        else:
            data[key] = value
    return data


# Legal in the spec but as awkward as it gets: leading hyphens, @ + . in paths, several shares and per-node
# mounts, a subdir on a per-node mount, every kind of klibc option, the id twice in the host name.
HOSTILE_SPEC: dict[str, Any] = spec(
    name="x-y--z",
    shares={
        "clients": {"path": "/-rf/clients", "access": "ro"},
        "a": {"path": "/srv/@a+b/.x", "access": "rw"},
        "b": {"path": "/-b", "access": "rw"},
    },
    writable=[
        {"mount": "/var/-local", "share": "a", "per_node": True, "options": ["rw", "nolock", "vers=3", "port=2049"]},
        {"mount": "/-o", "share": "b", "per_node": True, "subdir": "...", "options": ["tcp", "rw"]},
        {"mount": "/home/+@", "share": "a", "subdir": "h/--", "options": ["rw", "soft", "timeo=600"]},
    ],
    symlinks={
        "/etc/hostname": "/var/-local/hostname",
        "/etc/hosts": "/-o/h",
        "/etc/-x": "/home/+@/-x",
        "/etc/a@b": "/var/-local/a@b",
    },
    root={"share": "clients"},
    boot={"kernel": "6.1.0-21-amd64", "on_failure": "continue", "mount_retries": 0},
    nodes={"hostname": "n{mac}-{mac}"},
)


def cluster_from(data: dict[str, Any]) -> Cluster:
    cluster, _warnings = parse_cluster(yaml.safe_dump(data), "cluster.yaml")
    return cluster


@dataclass
class Boot:
    returncode: int
    stdout: str
    stderr: str
    calls: list[str]
    kmsg: list[str]


class FakeNode:
    """One node's view of the world for one or more boots, and the gateway it boots from."""

    def __init__(self, base: Path, cluster: Cluster) -> None:
        self.base = base
        self.cluster = cluster
        self.root = base / "root"
        self.gateway = base / "gateway"
        self.proc = base / "proc"
        self.sys = base / "sys"
        self.run = base / "run"
        self.kmsg = base / "kmsg"
        self.log = base / "calls.log"
        self.fail = base / "fail"
        for d in (
            self.root,
            self.gateway,
            self.proc / "sys" / "kernel",
            self.sys / "class" / "net",
            self.run,
            self.fail,
        ):
            d.mkdir(parents=True)
        # The read-only root: mount points and the skeleton of the symlinked files.
        for w in cluster.writable:
            (self.root / w.mount.lstrip("/")).mkdir(parents=True, exist_ok=True)
        self.write_root("usr/lib/nfsroot/skel/etc/hosts", SKEL_HOSTS)
        # The gateway: the exported shares; shared subdirectories exist (the deploy step makes them).
        for share in cluster.shares.values():
            (self.gateway / share.path.lstrip("/")).mkdir(parents=True, exist_ok=True)
        for w in cluster.nfs_writable:
            if not w.per_node:
                (self.gateway / cluster.writable_export(w).lstrip("/")).mkdir(parents=True, exist_ok=True)
        self.set_cmdline(CMDLINE)
        self.add_interface("lo", "00:00:00:00:00:00", flags="0x9")
        self.add_interface("eth0", MAC)

    def write_root(self, relative: str, text: str, mode: int = 0o644) -> Path:
        path = self.root / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
        path.chmod(mode)
        return path

    def set_cmdline(self, text: str) -> None:
        (self.proc / "cmdline").write_text(text + "\n")

    def add_interface(self, name: str, mac: str, flags: str = "0x1003") -> None:
        d = self.sys / "class" / "net" / name
        d.mkdir(parents=True, exist_ok=True)
        (d / "address").write_text(mac + "\n")
        (d / "flags").write_text(flags + "\n")

    def remove_interface(self, name: str) -> None:
        shutil.rmtree(self.sys / "class" / "net" / name)

    def fail_mount(self, export: str, times: int | str) -> None:
        """Make the stub nfsmount fail for an export: `times` times, or "always"."""
        (self.fail / export.replace("/", "_")).write_text(f"{times}\n")

    def node_dir(self, node_id: str = NODE_ID) -> Path:
        return self.gateway / "workers" / node_id

    def reboot(self) -> None:
        """Power off: the mounts vanish, the mount points are plain directories of the root again."""
        for w in self.cluster.writable:
            mp = self.root / w.mount.lstrip("/")
            if mp.is_symlink():
                mp.unlink()
                mp.mkdir()
        shutil.rmtree(self.run / "nfsroot", ignore_errors=True)
        self.log.unlink(missing_ok=True)
        self.kmsg.write_text("")

    def root_snapshot(self) -> dict[str, str]:
        """The read-only root's content, not following the mounts (symlinks) the stub made."""
        found: dict[str, str] = {}
        for path in sorted(self.root.rglob("*")):
            rel = str(path.relative_to(self.root))
            if path.is_symlink():
                found[rel] = "mounted"
            elif path.is_dir():
                found[rel] = "dir"
            else:
                found[rel] = path.read_text()
        return found

    def tool_path(self, tools: str) -> str:
        """PATH for the script: the stubs, then the host's tools, busybox's applets only, or klibc's only
        (no cp, rm, hostname, tr: the script must cope)."""
        if tools == "host":
            return f"{STUB_BIN}:/usr/bin:/bin"
        bindir = self.base / f"{tools}-bin"
        stubs = self.base / f"{tools}-stubs"
        if not bindir.exists():
            bindir.mkdir()
            stubs.mkdir()
            if tools == "busybox":
                busybox = require_program("busybox")
                listed = subprocess.run([busybox, "--list"], capture_output=True, text=True, check=True)
                for applet in listed.stdout.split():
                    (bindir / applet).symlink_to(busybox)
                for stub in STUB_BIN.iterdir():
                    (stubs / stub.name).symlink_to(stub)
            elif tools == "klibc":
                require_program(str(KLIBC_BIN / "sh"))
                for tool in KLIBC_BIN.iterdir():
                    (bindir / tool.name).symlink_to(tool)
                for stub in STUB_BIN.iterdir():
                    if stub.name != "hostname":  # klibc has none: the script writes /proc instead
                        (stubs / stub.name).symlink_to(stub)
            else:
                raise ValueError(tools)
        return f"{stubs}:{bindir}"

    def boot(
        self,
        shell: str,
        script: bytes,
        env: dict[str, str] | None = None,
        kmsg: bool = True,
        tools: str = "host",
    ) -> Boot:
        script_path = self.base / "nfsroot"
        script_path.write_bytes(script)
        script_path.chmod(0o755)
        self.kmsg.touch()
        environment = {
            "PATH": self.tool_path(tools),
            "rootmnt": str(self.root),
            "NFSROOT_PROC": str(self.proc),
            "NFSROOT_SYS": str(self.sys),
            "NFSROOT_RUN": str(self.run),
            "NFSROOT_KMSG": str(self.kmsg if kmsg else self.base / "no-kmsg"),
            "NFSROOT_FUNCTIONS": str(STUB_FUNCTIONS),
            "STUB_LOG": str(self.log),
            "STUB_GATEWAY": str(self.gateway),
            "STUB_SERVER": self.cluster.gateway.address,
            "STUB_FAIL": str(self.fail),
            **(env or {}),
        }
        done = subprocess.run(
            [*shell_argv(shell), str(script_path)],
            env=environment,
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
        calls = self.log.read_text().splitlines() if self.log.exists() else []
        return Boot(done.returncode, done.stdout, done.stderr, calls, self.kmsg.read_text().splitlines())
