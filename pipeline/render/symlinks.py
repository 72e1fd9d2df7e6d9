"""The symlink plan: what the read-only root must hold and what each node's writable directory will hold.

On the gateway, `/clients/etc/hostname` becomes a symlink to `/var/local/hostname`; a node sees its own
`/workers/<id>/hostname` there. The original file is kept as the skeleton the boot script seeds from.
"""

from __future__ import annotations

import json

from pipeline.render import preset, profile, storage
from pipeline.render.artifact import Artifact, ReviewDoc
from pipeline.render.templating import render
from pipeline.spec.model import SKELETON_DIR, Cluster, Writable

TEMPLATE = "symlinks.txt.j2"
# Written by the boot script at every boot; every other symlinked file is seeded once from its skeleton.
GENERATED = {"/etc/hostname": "the node's host name", "/etc/hosts": "skeleton hosts plus the node's loopback names"}
BOOT_FILES = {"cmdline": "the kernel command line of the last boot", "nfsroot-boot": "what the boot script did"}


def _in_root(cluster: Cluster, path: str) -> str:
    return cluster.root_share.path.rstrip("/") + path


def _mount_of(cluster: Cluster, path: str) -> Writable:
    for w in cluster.writable:
        if path.startswith(w.mount.rstrip("/") + "/"):
            return w
    raise ValueError(f"{path} is not under a writable mount")  # the model's semantics rule this out


def render_symlink_artifacts(cluster: Cluster) -> list[Artifact]:
    artifacts = []
    for i, w in enumerate(cluster.writable):
        # A mount point cannot be created at boot on a read-only root, so it must exist in the root itself.
        artifacts.append(
            Artifact(_in_root(cluster, w.mount), "dir", "mountpoint", (f"writable.{i}.mount",), mode=0o755)
        )
    for source, target in sorted(cluster.symlinks.items()):
        artifacts.append(
            Artifact(
                _in_root(cluster, source),
                "symlink",
                "symlink",
                (f"symlinks.{source}",),
                target=target,
                preserve=_in_root(cluster, SKELETON_DIR + source),
            )
        )
    return artifacts + profile.artifacts(cluster) + preset.artifacts(cluster) + storage.artifacts(cluster)


def symlink_plan(cluster: Cluster) -> dict[str, object]:
    links: list[dict[str, str | bool]] = []
    for source, target in sorted(cluster.symlinks.items()):
        w = _mount_of(cluster, target)
        relative = target[len(w.mount.rstrip("/")) + 1 :]
        links.append(
            {
                "path": source,
                "target": target,
                "in_root": _in_root(cluster, source),
                "skeleton": _in_root(cluster, SKELETON_DIR + source),
                "per_node": w.per_node,
                "on_gateway": cluster.writable_export(w, "<node id>") + "/" + relative,
                "content": GENERATED.get(source, "seeded from the skeleton at first boot, then the node's own"),
                "from": f"symlinks.{source}",
            }
        )
    node_dir = cluster.node_dir
    nodes = []
    for node in cluster.nodes.known:
        directory = cluster.writable_export(node_dir, node.id)
        files = {
            str(link["on_gateway"]).replace("<node id>", node.id): str(link["content"])
            for link in links
            if link["per_node"]
        }
        files |= {f"{directory}/{name}": what for name, what in BOOT_FILES.items()}
        nodes.append(
            {
                "mac": node.mac,
                "id": node.id,
                "hostname": cluster.hostname_for(node),
                "directory": directory,
                "files": dict(sorted(files.items())),
            }
        )
    plan: dict[str, object] = {
        "cluster": cluster.name,
        "root": cluster.root_share.path,
        "skeleton": _in_root(cluster, SKELETON_DIR),
        "mounts": [
            {"mount": w.mount, "from": cluster.writable_export(w, "<node id>"), "per_node": w.per_node}
            for w in cluster.nfs_writable
        ],
        "symlinks": links,
        "nodes": nodes,
        "profile": profile.review(cluster),
    }
    # Only when used: the seed's review stays byte for byte what it was before storage kinds existed.
    if storage.entries(cluster):
        plan["storage"] = storage.review(cluster)
    if preset.enabled(cluster):
        plan["preset"] = preset.review(cluster)
    return plan


def render_symlink_review(cluster: Cluster) -> list[ReviewDoc]:
    plan = symlink_plan(cluster)
    text = render(TEMPLATE, plan=plan)
    as_json = (json.dumps(plan, indent=2, sort_keys=True) + "\n").encode()
    fields = ("root", "writable", "symlinks", "nodes", "preset")
    return [ReviewDoc("symlinks.txt", text, fields), ReviewDoc("symlinks.json", as_json, fields)]
