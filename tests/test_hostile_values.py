"""Hostile strings in any free-text field are rejected by the spec or cannot break a rendered artifact."""

from __future__ import annotations

import itertools
from typing import Any

import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pipeline.errors import SpecError
from pipeline.render.bootfiles import distro_initrd_name, render_bootfiles
from pipeline.render.exports import render_exports
from pipeline.render.hosts import render_hosts
from pipeline.render.pxelinux import render_pxelinux
from pipeline.render.symlinks import render_symlink_artifacts, render_symlink_review
from pipeline.spec.load import parse_cluster
from pipeline.spec.model import Cluster
from tests.spec_helpers import spec_text

BASE: dict[str, Any] = yaml.safe_load(spec_text())
DANGEROUS = set("'\"$`;&|<>()\\\n\r\t #*?[]{}!~\x00\x7f")

# Where a string can go: a path into the spec document.
FIELDS: list[tuple[str | int, ...]] = [
    ("name",),
    ("gateway", "tftp_root"),
    ("shares", "clients", "path"),
    ("shares", "workers", "options", 0),
    ("shares", "workers", "clients"),
    ("root", "options", 0),
    ("writable", 0, "mount"),
    ("writable", 1, "subdir"),
    ("writable", 1, "options", 0),
    ("boot", "kernel"),
    ("boot", "cmdline", 0),
    ("nodes", "hostname"),
    ("nodes", "known", 0, "hostname"),
    ("nodes", "known", 1, "cmdline"),
    ("boot", "repack", "source"),
    ("deploy", "root"),
    ("deploy", "exports_file"),
    ("deploy", "hosts_file"),
    ("deploy", "reload", 0),
]

hostile = st.one_of(
    st.text(alphabet=st.sampled_from(sorted(DANGEROUS) + list("ab/.-=:,{}")), min_size=1, max_size=12),
    st.sampled_from(["$(reboot)", "`id`", "a;b", "x\ny", "/a b", "'; rm -rf / #", "{mac}$", "ro\nrw", "a,b"]),
    st.builds(
        lambda a, b: f"{a}{b}",
        st.sampled_from(["/etc/x", "vmlinuz", "w-{mac}", "ro", "quiet"]),
        st.sampled_from(sorted(DANGEROUS)),
    ),
)


def _put(doc: Any, path: tuple[str | int, ...], value: str) -> None:
    for key, nxt in itertools.pairwise(path):
        if isinstance(doc, dict) and key not in doc:
            doc[key] = [] if isinstance(nxt, int) else {}
        doc = doc[key]
    last = path[-1]
    if isinstance(doc, list) and isinstance(last, int) and last >= len(doc):
        doc.append(value)
    elif path[-1] == "cmdline" and path[0] == "nodes":
        doc[last] = [value]
    else:
        doc[last] = value


def _render(cluster: Cluster) -> list[bytes]:
    arts = render_exports(cluster) + render_hosts(cluster) + render_symlink_artifacts(cluster)
    arts += render_pxelinux(cluster, [distro_initrd_name(cluster), "nfsroot-0.img"]) + render_bootfiles(cluster)
    texts = [a.data for a in arts] + [a.target.encode() for a in arts] + [a.path.encode() for a in arts]
    return texts + [d.data for d in render_symlink_review(cluster) if d.name.endswith(".txt")]


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(field=st.sampled_from(FIELDS), value=hostile)
def test_hostile_value_is_rejected_or_harmless(field: tuple[str | int, ...], value: str) -> None:
    doc = yaml.safe_load(spec_text())
    _put(doc, field, value)
    text = yaml.safe_dump(doc, allow_unicode=True)
    try:
        cluster, _ = parse_cluster(text, "cluster.yaml")
    except SpecError as exc:
        assert exc.problems, "a rejection must say why"
        return
    # Accepted: the value was plain enough. Nothing rendered may then carry a character that could quote,
    # expand, separate or comment, beyond what the renderers put there themselves.
    baseline = parse_cluster(spec_text(), "cluster.yaml")[0]
    allowed = set().union(*(set(t.decode()) for t in _render(baseline)))
    for rendered in _render(cluster):
        extra = (set(rendered.decode()) - allowed) & DANGEROUS
        assert not extra, f"{field}={value!r} put {extra} into {rendered[:200]!r}"
    assert set(value) & DANGEROUS <= {"{", "}"}, f"{field}={value!r} was accepted with dangerous characters"
