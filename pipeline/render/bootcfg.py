"""GRUB and iPXE configurations beside pxelinux's: the same kernel, initrds and command line, per node by MAC.

- GRUB: Debian's signed netboot GRUB has the fixed prefix /grub, reads only `grub/grub.cfg` at the TFTP root
  and looks up no per-MAC file, so grub.cfg itself dispatches on `$net_default_mac` (lowercase, colons) and
  builds `BOOTIF=01-aa-bb-…` from it with `regexp`.
- iPXE: `BOOTIF=01-${net0/mac:hexhyp}`, per node by comparing `${net0/mac}`. The EFI stub finds each initrd by
  the `initrd=` name on the kernel line; it joins them without padding, which is why our overlay is compressed.
  With firmware.transport http the kernel and initrds are http:// URLs on the gateway (render/httpserver.py);
  `initrd=` keeps the bare name, which iPXE gives an image fetched from a URL.

Both carry the boot files' names as pxelinux does (boot/vmlinuz-<version>), with the role `pxelinux`, so plan
rewrites them to the resolved names and rollback points them back, by the same code (pipeline/state/pxecfg.py).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from pipeline.render.artifact import Artifact
from pipeline.render.bootfiles import kernel_name
from pipeline.render.firmware import IPXE_SCRIPT, http_base, uses_grub, uses_ipxe
from pipeline.render.pxelinux import append_args
from pipeline.render.templating import render
from pipeline.spec.model import Cluster

GRUB_CFG = "grub/grub.cfg"  # the signed netboot GRUB's fixed prefix (/grub) at the TFTP root
FIELDS = ("name", "gateway", "root", "shares", "boot", "firmware")


def _per_node(cluster: Cluster, every: bool = False) -> list[tuple[str, list[str]]]:
    """(MAC, extra arguments) of each node with overrides (or of `every` node): what pxelinux's 01-<mac>
    files add to the kernel line of their spec."""
    common = len(append_args(cluster))
    return [(n.mac, append_args(cluster, n)[common:]) for n in cluster.nodes.known if every or n.customised]


@dataclass(frozen=True)
class Entry:
    """A node group's boot entry besides the default one: its own kernel, initrds and command line, chosen
    by its nodes' MACs (their entries come after the default's in both files)."""

    id: str
    cluster: Cluster  # the group's effective spec (pipeline.spec.groups)
    initrds: Sequence[str]

    def context(self) -> dict[str, object]:
        return {
            "id": self.id,
            "kernel": kernel_name(self.cluster),
            "initrds": list(self.initrds),
            "initrd_args": _initrd_args(self.initrds),
            "append": append_args(self.cluster),
            "nodes": _per_node(self.cluster, every=True),
        }


def _initrd_args(initrds: Sequence[str]) -> list[str]:
    return [f"initrd={name.rpartition('/')[2]}" for name in initrds]


def render_bootcfg(cluster: Cluster, initrds: Sequence[str], entries: Sequence[Entry] = ()) -> list[Artifact]:
    tftp = cluster.gateway.tftp_root.rstrip("/")
    context = {
        "name": cluster.name,
        "kernel": kernel_name(cluster),
        "initrds": list(initrds),
        "append": append_args(cluster),
        "nodes": _per_node(cluster),
        "groups": [e.context() for e in entries],
    }
    fields = (*FIELDS, "nodes.known") if context["nodes"] else FIELDS
    fields = (*fields, *(f"groups.{e.id}" for e in entries))
    # Written when any group's nodes boot that loader (a group may choose other loaders than the default's);
    # each holds every group's entry, as a node's MAC decides the entry, and its group the loader.
    specs = (cluster, *(e.cluster for e in entries))
    ipxe = any(uses_ipxe(c) for c in specs)
    artifacts = []
    if any(uses_grub(c) for c in specs):
        artifacts += [
            Artifact(f"{tftp}/grub", "dir", "pxelinux", ("firmware",), mode=0o755),
            Artifact(f"{tftp}/{GRUB_CFG}", "file", "pxelinux", fields, render("grub.cfg.j2", **context)),
        ]
    if ipxe:
        data = render("nfsroot.ipxe.j2", initrd_args=_initrd_args(initrds), base=http_base(cluster, ipxe), **context)
        artifacts.append(Artifact(f"{tftp}/{IPXE_SCRIPT}", "file", "pxelinux", fields, data))
    return artifacts
