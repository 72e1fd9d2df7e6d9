"""pxelinux.cfg/default for every node, and pxelinux.cfg/01-<mac> for nodes with overrides."""

from __future__ import annotations

from collections.abc import Sequence

from pipeline.render.artifact import Artifact
from pipeline.render.bootfiles import kernel_name
from pipeline.render.templating import render
from pipeline.spec.model import Cluster, Node

TEMPLATE = "pxelinux.cfg.j2"
BASE_FIELDS = ("name", "gateway", "root", "shares", "boot")


def config_dir(cluster: Cluster) -> str:
    return f"{cluster.gateway.tftp_root.rstrip('/')}/pxelinux.cfg"


def mac_filename(mac: str) -> str:
    """pxelinux looks for 01-<mac with hyphens> (ARP type 1: Ethernet) before falling back to default."""
    return "01-" + mac.replace(":", "-")


def append_args(cluster: Cluster, node: Node | None = None) -> list[str]:
    args = ["root=/dev/nfs", f"nfsroot={cluster.nfsroot_arg}", "ip=dhcp", *cluster.boot.cmdline]
    if node is not None:
        args.extend(node.cmdline)
        if node.hostname:
            # The boot script prefers this to the pattern; it only exists where a per-node file does.
            args.append(f"nfsroot.hostname={node.hostname}")
    return args


def render_pxelinux(cluster: Cluster, initrds: Sequence[str], *, default: bool = True) -> list[Artifact]:
    """`initrds` are the INITRD file names in load order (the distro's, then ours for the overlay method).

    `default`: this spec is what unknown nodes boot (pxelinux.cfg/default); otherwise (a node group's
    effective spec) every one of its nodes needs a file of its own, since `default` boots other settings."""
    base = {
        "name": cluster.name,
        "kernel": kernel_name(cluster),
        "initrds": list(initrds),
        "sysappend": cluster.sysappend_bits,
    }
    directory = config_dir(cluster)
    artifacts = [Artifact(directory, "dir", "pxelinux", ("gateway.tftp_root",), mode=0o755)]
    if default:
        data = render(TEMPLATE, node=None, append=append_args(cluster), **base)
        artifacts.append(Artifact(f"{directory}/default", "file", "pxelinux", BASE_FIELDS, data))
    for i, node in enumerate(cluster.nodes.known):
        if default and not node.customised:
            continue
        data = render(TEMPLATE, node=node.mac, append=append_args(cluster, node), **base)
        artifacts.append(
            Artifact(
                f"{directory}/{mac_filename(node.mac)}", "file", "pxelinux", (*BASE_FIELDS, f"nodes.known.{i}"), data
            )
        )
    return artifacts
