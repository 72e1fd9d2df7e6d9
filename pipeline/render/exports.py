"""NFS exports in exports(5) syntax, and the share directories the gateway must have."""

from __future__ import annotations

import ipaddress

from pipeline.render.artifact import Artifact
from pipeline.render.templating import render
from pipeline.spec.model import Cluster

TEMPLATE = "exports.j2"


def render_exports(cluster: Cluster) -> list[Artifact]:
    exports = []
    fields = ["name", "gateway.network"]
    for name, share in sorted(cluster.shares.items(), key=lambda item: item[1].path):
        net = ipaddress.IPv4Network(cluster.export_clients(share))
        # The seed writes network/netmask; exportfs accepts both, and matching the seed keeps diffs familiar.
        clients = f"{net.network_address}/{net.netmask}" if net.prefixlen < 32 else str(net.network_address)
        exports.append({"path": share.path, "clients": clients, "options": [share.access, *share.options]})
        fields.append(f"shares.{name}")
    data = render(TEMPLATE, name=cluster.name, exports=exports)
    artifacts = [Artifact(cluster.deploy.exports_file, "file", "exports", (*fields, "deploy.exports_file"), data)]
    for name, share in sorted(cluster.shares.items()):
        artifacts.append(Artifact(share.path, "dir", "share-dir", (f"shares.{name}.path",), mode=0o755))
    for i, w in enumerate(cluster.writable):
        if w.share is None:  # storage other than nfs: nothing on the gateway beyond the node directory
            continue
        # Shared writable directories (the seed's /workers/home) must exist before any node mounts them;
        # per-node directories are created by each node at its first boot.
        parent = cluster.writable_parent(w)
        if parent != cluster.shares[w.share].path:
            artifacts.append(Artifact(parent, "dir", "share-dir", (f"writable.{i}",), mode=0o755))
        if not w.per_node:
            path = cluster.writable_export(w)
            if path != parent:
                artifacts.append(Artifact(path, "dir", "share-dir", (f"writable.{i}",), mode=0o755))
    return _dedupe(artifacts)


def _dedupe(artifacts: list[Artifact]) -> list[Artifact]:
    seen: dict[str, Artifact] = {}
    for a in artifacts:
        seen.setdefault(a.path, a)
    return list(seen.values())
