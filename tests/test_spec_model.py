"""Valid specs: normalisation, derived values and lint warnings."""

from __future__ import annotations

from pathlib import Path

import pytest

from pipeline.spec.load import load_cluster, parse_cluster
from pipeline.spec.model import Cluster
from pipeline.spec.types import SYSAPPEND_BITS, node_id
from tests.spec_helpers import parse, spec_text

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("written", ["00:23:24:94:34:AE", "00-23-24-94-34-ae", "0023249434Ae", " 0023249434ae"])
def test_mac_forms_are_normalised(written: str) -> None:
    cluster = parse(spec_text({24: f'    - {{mac: "{written}"}}'}))
    node = cluster.nodes.known[0]
    assert node.mac == "00:23:24:94:34:ae"
    assert node.id == node_id(written) == "0023249434ae"


def test_shipped_cluster_is_the_seed() -> None:
    cluster, warnings = load_cluster(REPO / "cluster.yaml")
    assert cluster.gateway.address == "192.168.0.254"
    assert cluster.nfsroot_arg == "192.168.0.254:/clients,ro"
    assert cluster.sysappend_bits == 11
    assert [cluster.hostname_for(n) for n in cluster.nodes.known] == [
        "worker-node-0023249434ae",
        "worker-node-448a5bddd8ba",
    ]
    assert cluster.writable_export(cluster.node_dir, "0023249434ae") == "/workers/0023249434ae"
    assert cluster.writable_export(cluster.writable[1]) == "/workers/home"
    # The seed exports /workers read-write with no_root_squash to the whole subnet: legal, but said out loud.
    assert [str(w).replace(str(REPO) + "/", "") for w in warnings] == [
        "cluster.yaml:15:50: shares.workers.options: read-write with no_root_squash for all of 192.168.0.0/24: "
        "root on any host there owns /workers (drop no_root_squash unless nodes must write as root, or narrow "
        "clients to the nodes' addresses)"
    ]


def test_sysappend_bits_cover_every_name() -> None:
    names = list(SYSAPPEND_BITS)
    cluster = parse(spec_text({20: f"  sysappend: [{', '.join(names)}]"}))
    assert cluster.sysappend_bits == 0x7FFFF


def test_missing_bootif_is_a_warning() -> None:
    _, warnings = parse_cluster(spec_text({20: "  sysappend: [ip]"}), "cluster.yaml")
    assert [w.field for w in warnings] == ["boot.sysappend"]


def test_direct_construction_enforces_semantics() -> None:
    data = parse(spec_text()).model_dump(mode="json")
    data["gateway"]["address"] = "10.9.9.9"
    with pytest.raises(ValueError, match=r"gateway\.address: 10\.9\.9\.9 is not inside"):
        Cluster.model_validate(data)


def test_model_is_frozen() -> None:
    cluster = parse(spec_text())
    with pytest.raises(ValueError):
        cluster.name = "other"  # type: ignore[misc]
