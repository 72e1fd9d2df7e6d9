"""Read-only-root profiles: what a distribution's root needs per node beyond the spec's own symlinks.

`root.profile: debian-systemd` makes a stock Debian + systemd root boot clean from a read-only NFS root
(measured by booting one; see docs/profile.md for every path and why). It adds, all inside the node's own
directory (the per-node writable mount, /var/local in the seed), so each node still makes ONE NFS mount:
- bind mounts of per-node directories onto the paths systemd and daemons write (/var/log, /var/lib/systemd …);
  the boot script seeds each from the root's own directory at the node's first boot, then never touches it;
- symlinks for single files (machine-id, ssh host keys, resolv.conf, adjtime), like the spec's `symlinks:`;
- a tmpfs on /tmp, mounted by the boot script;
- a oneshot unit in the root that generates the node's ssh host keys at its first boot, before sshd starts.

Everything here is a pure function of the spec; the renderers of the symlink plan and the boot script read it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from pipeline.render.artifact import Artifact
from pipeline.spec.model import SKELETON_DIR, Cluster

FIELD = "root.profile"
# Under the node's directory: <node mount>/state/<path> is what is bound onto <path>.
STATE_DIR = "state"
SSH_KEY_TYPES = ("ecdsa", "ed25519", "rsa")
SSH_DIR = "ssh"
KEYGEN_SCRIPT = "/usr/lib/nfsroot/ssh-hostkeys"
KEYGEN_UNIT = "nfsroot-ssh-hostkeys.service"
UNIT_DIR = "/etc/systemd/system"

LinkHow = Literal["seed", "machine-id", "ssh-key", "fixed"]


@dataclass(frozen=True)
class Bind:
    """A directory of the root that each node gets its own copy of, bound over it at boot."""

    path: str
    mode: int  # of the mount point, when apply has to create it in the root
    why: str
    subdirs: tuple[str, ...] = ()  # created in the node's copy when missing (journal/ for journald)


@dataclass(frozen=True)
class Link:
    """A file of the root replaced by a symlink; `target` is absolute as the node sees it."""

    path: str
    target: str
    how: LinkHow
    why: str


BINDS: tuple[Bind, ...] = (
    Bind(
        "/var/log",
        0o755,
        "journald persists the journal in journal/; wtmp, btmp, lastlog and daemons' logs",
        ("journal",),
    ),
    Bind("/var/tmp", 0o1777, "programs' temporary files that survive a reboot (mode 1777)"),
    Bind(
        "/var/lib/systemd",
        0o755,
        "StateDirectory= of systemd's units: timesync, linger (logind), backlight, rfkill, pstore; random-seed, "
        "timers, coredumps",
    ),
    Bind("/var/lib/private", 0o700, "StateDirectory= of units with DynamicUser=yes"),
    Bind("/var/lib/dhcp", 0o755, "DHCP clients keep their leases here"),
    Bind("/var/spool", 0o755, "cron, at and mail queues"),
)
TMPFS = "/tmp"


def enabled(cluster: Cluster) -> bool:
    return cluster.root.profile != "none"


def binds(cluster: Cluster) -> tuple[Bind, ...]:
    if not enabled(cluster):
        return ()
    # A path the spec already mounts or links is the spec's business.
    taken = {w.mount for w in cluster.writable} | set(cluster.symlinks)
    return tuple(b for b in BINDS if b.path not in taken)


def writable_paths(cluster: Cluster) -> tuple[str, ...]:
    """The directories the profile makes writable on a node: its binds and its tmpfs."""
    if not enabled(cluster):
        return ()
    tmpfs = () if TMPFS in {w.mount for w in cluster.writable} else (TMPFS,)
    return tuple(b.path for b in binds(cluster)) + tmpfs


def bind_source(cluster: Cluster, bind: Bind) -> str:
    """Where a node's copy of `bind.path` lives, as the node sees it."""
    return f"{cluster.node_dir.mount.rstrip('/')}/{STATE_DIR}{bind.path}"


def links(cluster: Cluster) -> tuple[Link, ...]:
    if not enabled(cluster):
        return ()
    node = cluster.node_dir.mount.rstrip("/")
    found = [
        Link(
            "/etc/machine-id",
            f"{node}/machine-id",
            "machine-id",
            "written once by the boot script from the kernel's random UUID, then stable: every node its own id",
        ),
        Link(
            "/var/lib/dbus/machine-id",
            "/etc/machine-id",
            "fixed",
            "D-Bus reads its id here; systemd-tmpfiles would try to create this link at boot",
        ),
        Link("/etc/resolv.conf", f"{node}/resolv.conf", "seed", "DHCP clients rewrite it; seeded from the root's"),
        Link("/etc/adjtime", f"{node}/adjtime", "seed", "hwclock and timedated write the clock's drift"),
    ]
    for kind in SSH_KEY_TYPES:
        for suffix in ("", ".pub"):
            name = f"ssh_host_{kind}_key{suffix}"
            found.append(
                Link(
                    f"/etc/ssh/{name}",
                    f"{node}/{SSH_DIR}/{name}",
                    "ssh-key",
                    f"generated per node at first boot by {KEYGEN_UNIT}: the root's baked keys would be shared",
                )
            )
    taken = set(cluster.symlinks) | {w.mount for w in cluster.writable}
    return tuple(link for link in found if link.path not in taken)


def _in_root(cluster: Cluster, path: str) -> str:
    return cluster.root_share.path.rstrip("/") + path


def _sh(value: str) -> str:
    return "'" + value.replace("'", "'\\''") + "'"


def keygen_script(cluster: Cluster) -> bytes:
    """The node-side script the unit runs: one key per type, written next to its final name and renamed."""
    ssh_dir = f"{cluster.node_dir.mount.rstrip('/')}/{SSH_DIR}"
    types = " ".join(SSH_KEY_TYPES)
    return f"""#!/bin/sh
# Generated by nfsroot-pipeline (root.profile: {cluster.root.profile}): this node's own ssh host keys, made
# at its first boot in its writable directory, where /etc/ssh/ssh_host_*_key link to. Not `ssh-keygen -A`:
# it would replace the symlinks in the read-only /etc/ssh.
set -eu
dir={_sh(ssh_dir)}
mkdir -p "$dir"
chmod 0755 "$dir"
for type in {types}; do
	key="$dir/ssh_host_${{type}}_key"
	[ -s "$key" ] && [ -s "$key.pub" ] && continue
	rm -f "$key.tmp" "$key.tmp.pub"
	ssh-keygen -q -N '' -C "root@$(hostname)" -t "$type" -f "$key.tmp"
	mv "$key.tmp.pub" "$key.pub"
	mv "$key.tmp" "$key"
	echo "generated $key"
done
""".encode()


def keygen_unit(cluster: Cluster) -> bytes:
    node = cluster.node_dir.mount
    return f"""# Generated by nfsroot-pipeline (root.profile: {cluster.root.profile}).
[Unit]
Description=Per-node SSH host keys in {node}
Documentation=man:ssh-keygen(1)
RequiresMountsFor={node}
ConditionPathIsReadWrite={node}
Before=ssh.service ssh.socket

[Service]
Type=oneshot
RemainAfterExit=yes
ExecStart={KEYGEN_SCRIPT}

[Install]
WantedBy=multi-user.target
""".encode()


def artifacts(cluster: Cluster) -> list[Artifact]:
    """Mount points, symlinks and the key unit the profile puts into the read-only root."""
    if not enabled(cluster):
        return []
    found: list[Artifact] = []
    for b in binds(cluster):
        found.append(Artifact(_in_root(cluster, b.path), "dir", "mountpoint", (FIELD, b.path), mode=b.mode))
    if TMPFS not in {w.mount for w in cluster.writable}:
        found.append(Artifact(_in_root(cluster, TMPFS), "dir", "mountpoint", (FIELD, TMPFS), mode=0o1777))
    for link in links(cluster):
        found.append(
            Artifact(
                _in_root(cluster, link.path),
                "symlink",
                "symlink",
                (FIELD, link.path),
                target=link.target,
                preserve=_in_root(cluster, SKELETON_DIR + link.path),
            )
        )
    if any(link.how == "ssh-key" for link in links(cluster)):
        unit = f"{UNIT_DIR}/{KEYGEN_UNIT}"
        found += [
            Artifact(_in_root(cluster, KEYGEN_SCRIPT), "file", "profile", (FIELD,), keygen_script(cluster), 0o755),
            Artifact(_in_root(cluster, unit), "file", "profile", (FIELD,), keygen_unit(cluster), 0o644),
            Artifact(
                _in_root(cluster, f"{UNIT_DIR}/multi-user.target.wants/{KEYGEN_UNIT}"),
                "symlink",
                "profile",
                (FIELD,),
                target=unit,
            ),
        ]
    return found


def review(cluster: Cluster) -> dict[str, object]:
    """The profile's paths with their reasons, for the symlink plan's review text and JSON."""
    return {
        "name": cluster.root.profile,
        "binds": [
            {"path": b.path, "from": bind_source(cluster, b), "why": b.why, "subdirs": list(b.subdirs)}
            for b in binds(cluster)
        ],
        "tmpfs": [TMPFS] if enabled(cluster) else [],
        "links": [{"path": x.path, "target": x.target, "how": x.how, "why": x.why} for x in links(cluster)],
    }
