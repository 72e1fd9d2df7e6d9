"""Golden plan outputs (text and JSON) for fixed scenarios. Regenerate with UPDATE_GOLDEN=1 and review the diff."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from pipeline.state.changes import Plan
from pipeline.state.plan import PlanOptions
from pipeline.state.render import plan_from_json, plan_to_json, render_text
from tests.deploy_helpers import D, F, L, Spec, deploy, make_build, make_tree, plan_for

GOLDEN = Path(__file__).parent / "golden" / "plan"
EXPORTS = "/etc/exports.d/nfsroot.exports"
PXE = "/srv/tftp/pxelinux.cfg/default"


@pytest.fixture(autouse=True)
def fixed_umask() -> Iterator[None]:
    old = os.umask(0o022)  # directory modes land in the JSON's observed fingerprints
    yield
    os.umask(old)


def _v1() -> dict[str, Spec]:
    return {
        "/clients/etc/hostname": L(
            "/var/local/hostname",
            preserve="/clients/usr/lib/nfsroot/skel/etc/hostname",
            fields=("symlinks./etc/hostname",),
        ),
        EXPORTS: F(
            "/clients 192.168.0.0/24(ro,no_root_squash,no_subtree_check)\n",
            role="exports",
            fields=("shares.clients", "gateway.network"),
        ),
        PXE: F(
            "DEFAULT nfsroot\nLABEL nfsroot\n  KERNEL vmlinuz\n  INITRD nfsroot/initrd-1.img\n",
            role="pxelinux",
            fields=("boot.kernel", "boot.initrd"),
        ),
        "/srv/tftp/nfsroot/initrd-1.img": F(b"\x00\x01initrd one", role="initrd", fields=("boot.initrd",)),
        "/etc/nfsroot/hosts": F("192.168.0.1 worker-node-0023249434ae\n", role="hosts", fields=("nodes.known",)),
        "/workers": D("0755", fields=("shares.workers",)),
    }


def _v2() -> dict[str, Spec]:
    v2 = _v1()
    del v2["/etc/nfsroot/hosts"]
    del v2["/srv/tftp/nfsroot/initrd-1.img"]
    v2[EXPORTS] = F(
        "/clients 192.168.0.0/24(ro,no_root_squash,no_subtree_check)\n/workers 192.168.0.0/24(rw,no_subtree_check)\n",
        role="exports",
        fields=("shares.clients", "shares.workers", "gateway.network"),
    )
    v2[PXE] = F(
        "DEFAULT nfsroot\nLABEL nfsroot\n  KERNEL vmlinuz\n  INITRD nfsroot/initrd-2.img\n",
        role="pxelinux",
        fields=("boot.kernel", "boot.initrd"),
    )
    v2["/srv/tftp/nfsroot/initrd-2.img"] = F(b"\x00\x02initrd two", role="initrd", fields=("boot.initrd",))
    v2["/workers"] = D("0770", fields=("shares.workers",))
    v2["/clients/etc/hosts"] = L(
        "/var/local/hosts", preserve="/clients/usr/lib/nfsroot/skel/etc/hosts", fields=("symlinks./etc/hosts",)
    )
    return v2


def _scenario(tmp_path: Path, name: str) -> tuple[Plan, Path]:
    target = make_tree(
        tmp_path / "target",
        {
            "/clients/etc/hostname": "debian\n",
            "/clients/etc/hosts": "127.0.0.1 localhost\n",
            EXPORTS: "/srv/old *(rw)\n",
        },
    )
    if name == "first-deploy":
        return plan_for(make_build(tmp_path / "b1", _v1()), target), target
    deploy(make_build(tmp_path / "b1", _v1()), target)
    if name == "no-changes":
        return plan_for(make_build(tmp_path / "b1", _v1()), target), target
    return plan_for(make_build(tmp_path / "b2", _v2()), target, PlanOptions(keep_initrds=1)), target


def _check(path: Path, actual: str) -> None:
    if os.environ.get("UPDATE_GOLDEN") == "1":
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(actual)
    assert path.exists(), f"{path} is missing: run with UPDATE_GOLDEN=1 and review it"
    assert actual == path.read_text(), f"{path.name} differs; if intended, rerun with UPDATE_GOLDEN=1 and review"


@pytest.mark.parametrize("name", ["first-deploy", "update", "no-changes"])
def test_plan_golden(tmp_path: Path, name: str) -> None:
    plan, target = _scenario(tmp_path, name)
    _check(GOLDEN / f"{name}.txt", render_text(plan, "TARGET", reload=("exportfs", "-ra")))
    as_json = plan_to_json(plan)
    _check(GOLDEN / f"{name}.json", as_json.replace(json.dumps(str(target))[1:-1], "TARGET"))
    assert plan_from_json(as_json, "plan.json") == plan
