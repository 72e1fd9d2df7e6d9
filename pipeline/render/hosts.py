"""A hosts file for the gateway: the nodes that have fixed addresses, by name."""

from __future__ import annotations

import ipaddress

from pipeline.render.artifact import Artifact
from pipeline.render.templating import render
from pipeline.spec.model import Cluster

TEMPLATE = "hosts.j2"


def render_hosts(cluster: Cluster) -> list[Artifact]:
    hosts = sorted(
        ((node.address, cluster.hostname_for(node)) for node in cluster.nodes.known if node.address),
        key=lambda pair: ipaddress.IPv4Address(pair[0]),
    )
    data = render(TEMPLATE, name=cluster.name, hosts=hosts)
    return [Artifact(cluster.deploy.hosts_file, "file", "hosts", ("name", "nodes", "deploy.hosts_file"), data)]
