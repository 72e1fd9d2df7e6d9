"""The root's own kernel and distro initrd, served from `<tftp_root>/boot/`: requests resolved at plan time.

The build never sees the root (it lives on the gateway), so it names each boot file by the spec's choice:
`boot/vmlinuz-<version>` or `boot/vmlinuz-newest`. The pxelinux configs carry these names; `plan` finds the
file in the target root, checks the version's /lib/modules, and serves it under a name that holds its version
and content hash (`boot/vmlinuz-6.1.0-21-amd64.<sha12>`), rewriting the configs to match. A new kernel or a
regenerated initrd is therefore a new file beside the old one, and going back is a change of config only.
"""

from __future__ import annotations

from pipeline.render.artifact import Artifact, RootFile
from pipeline.spec.model import Cluster

BOOT_SUBDIR = "boot"  # under the TFTP root
KERNEL_PREFIX = "vmlinuz-"
INITRD_PREFIX = "initrd.img-"
FIELDS = ("boot.kernel", "root.share")


def kernel_name(cluster: Cluster) -> str:
    """The kernel as pxelinux.cfg names it before plan resolves it (relative to the TFTP root)."""
    return f"{BOOT_SUBDIR}/{KERNEL_PREFIX}{cluster.boot.kernel}"


def distro_initrd_name(cluster: Cluster) -> str:
    return f"{BOOT_SUBDIR}/{INITRD_PREFIX}{cluster.boot.kernel}"


def _served(cluster: Cluster, name: str) -> str:
    return f"{cluster.gateway.tftp_root.rstrip('/')}/{name}"


def render_bootfiles(cluster: Cluster) -> list[Artifact]:
    root = cluster.root_share.path.rstrip("/")
    wanted = [(KERNEL_PREFIX, kernel_name(cluster), "kernel")]
    if cluster.boot.method == "overlay":  # repack serves its own rewritten initrd instead of the distro's
        wanted.append((INITRD_PREFIX, distro_initrd_name(cluster), "initrd"))
    return [
        Artifact(
            _served(cluster, name),
            "rootfile",
            role,
            FIELDS,
            rootfile=RootFile(f"{root}/boot", prefix, cluster.boot.kernel, f"{root}/lib/modules"),
        )
        for prefix, name, role in wanted
    ]
