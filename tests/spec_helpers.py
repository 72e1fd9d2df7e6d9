"""A valid spec as text, line by line, so error tests can change one line and know its number."""

from __future__ import annotations

from pipeline.errors import SpecError
from pipeline.spec.load import parse_cluster
from pipeline.spec.model import Cluster

BASE_LINES = [
    "name: homelab",  # 1
    "gateway:",  # 2
    "  address: 192.168.0.254",  # 3
    "  network: 192.168.0.0/24",  # 4
    "  tftp_root: /srv/tftp",  # 5
    "shares:",  # 6
    "  clients: {path: /clients, access: ro, options: [no_root_squash, no_subtree_check, async]}",  # 7
    "  workers: {path: /workers, access: rw, options: [no_subtree_check, async]}",  # 8
    "root: {share: clients, options: [ro]}",  # 9
    "writable:",  # 10
    "  - {mount: /var/local, share: workers, per_node: true}",  # 11
    "  - {mount: /home, share: workers, subdir: home}",  # 12
    "symlinks:",  # 13
    "  /etc/hostname: /var/local/hostname",  # 14
    "  /etc/hosts: /var/local/hosts",  # 15
    "boot:",  # 16
    "  kernel: 6.1.0-21-amd64",  # 17
    "  method: overlay",  # 18
    "  cmdline: [nfsrootdebug]",  # 19
    "  sysappend: [ip, bootif, cpu]",  # 20
    "nodes:",  # 21
    '  hostname: "worker-node-{mac}"',  # 22
    "  known:",  # 23
    '    - {mac: "00:23:24:94:34:ae"}',  # 24
    '    - {mac: "44:8a:5b:dd:d8:ba"}',  # 25
    "deploy: {root: gateway/}",  # 26
]


def spec_text(replace: dict[int, str] | None = None, append: list[str] | None = None) -> str:
    lines = list(BASE_LINES)
    for number, text in (replace or {}).items():
        lines[number - 1] = text
    return "\n".join(lines + (append or [])) + "\n"


def parse(text: str) -> Cluster:
    return parse_cluster(text, "cluster.yaml")[0]


def problems(text: str) -> list[str]:
    try:
        parse_cluster(text, "cluster.yaml")
    except SpecError as exc:
        return [str(p) for p in exc.problems]
    raise AssertionError("the spec was accepted")


def issue_13_spec(second_subdir: str | None) -> dict[str, object]:
    """The shape hypothesis found for issue 13: two per_node mounts of one share, a file of the same name in each.
    Without a subdir on the second, both nodes' files land in one directory (the loader refuses it); with one,
    it is valid (the boot-script property test pins it)."""
    second: dict[str, object] = {"mount": "/y", "share": "b", "per_node": True}
    if second_subdir is not None:
        second["subdir"] = second_subdir
    return {
        "name": "a",
        "gateway": {"address": "10.0.2.2", "network": "10.0.2.0/24"},
        "shares": {"a": {"path": "/a", "access": "ro"}, "b": {"path": "/b", "access": "rw"}},
        "root": {"share": "a"},
        "writable": [{"mount": "/x", "share": "b", "per_node": True}, second],
        "symlinks": {"/etc/hostname": "/x/hostname", "/etc/hosts": "/y/hostname"},
        "boot": {"kernel": "6.1.0-21-amd64"},
        "nodes": {"hostname": "{mac}"},
    }
