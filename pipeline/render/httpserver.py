"""The gateway's HTTP server for iPXE: an nginx server block serving the TFTP root read-only.

iPXE fetches the kernel and initrds over HTTP when `firmware.transport` is http (the default: 7-13x faster
than TFTP in benchmarks/bench_bootstorm.py). nginx, because it is what a gateway operator already runs and
knows (Debian's nginx-light is enough), serves static files with sendfile, logs every request, and reads a
server block from conf.d/ without touching the rest of its configuration. It listens on the gateway address
only, so a web server already on the gateway's other addresses is not disturbed.
"""

from __future__ import annotations

from pipeline.render.artifact import Artifact
from pipeline.render.firmware import uses_http, uses_ipxe
from pipeline.render.templating import render
from pipeline.spec.model import Cluster

TEMPLATE = "nginx-nfsroot.conf.j2"
FIELDS = ("name", "gateway", "firmware")


def render_httpserver(cluster: Cluster) -> list[Artifact]:
    if not uses_http(cluster):
        return []
    http = cluster.firmware.http
    data = render(
        TEMPLATE,
        name=cluster.name,
        address=cluster.gateway.ip,
        port=http.port,
        root=cluster.gateway.tftp_root.rstrip("/") or "/",
    )
    # The groups whose own firmware asks for iPXE are a reason too (the cluster-wide settings may not).
    groups = tuple(
        f"{v.field}.firmware"
        for v in cluster.groups_resolved()
        if v.field and (g := cluster.groups.get(v.name)) is not None and g.firmware is not None and uses_ipxe(v.cluster)
    )
    return [Artifact(http.config_file, "file", "httpserver", (*FIELDS, *groups), data)]
