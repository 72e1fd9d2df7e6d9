"""`nfsroot boottest --root DIR`: boot the user's own root, as the build would deploy it, before real machines do.

The root is never modified: the harness serves a copy (`WORKDIR/served/root`), applies the build's share
entries to it the way `apply` would (symlinks with their skeleton, mount points, the profile's unit), adds the
verdict unit, and boots the nodes. Besides the busybox harness's checks (mounts, symlinks, writes through
every writable mount), each node is judged by systemd: `is-system-running` must say running, with no
failed unit.
"""

from __future__ import annotations

import dataclasses
import shutil
from collections.abc import Sequence
from pathlib import Path

from pipeline.boottest.debianroot import clone_root
from pipeline.boottest.errors import BootTestError
from pipeline.boottest.harness import BootOptions, BootRun, boot_target, prepare_shares
from pipeline.boottest.shares import apply_share_entries
from pipeline.boottest.target import DEFAULT_TEST_MACS, from_cluster
from pipeline.boottest.verdict import Check, GuestReport, local_path
from pipeline.boottest.verdictunit import VERDICT_FILE
from pipeline.boottest.verdictunit import install as install_verdict
from pipeline.spec.model import Cluster


def first_user(root: Path) -> str:
    """The first ordinary user (uid 1000-59999) of the root's passwd, for the user-side checks."""
    try:
        lines = (root / "etc/passwd").read_text(errors="replace").splitlines()
    except OSError:
        return "nobody"
    for line in lines:
        fields = line.split(":")
        if len(fields) >= 7 and fields[2].isdigit() and 1000 <= int(fields[2]) < 60000:
            return fields[0]
    return "nobody"


def read_verdict(path: Path) -> GuestReport | None:
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return None
    values: dict[str, list[str]] = {}
    for line in text.splitlines():
        if line.startswith("nfsroot-boottest: ") and "=" in line:
            key, _, value = line.removeprefix("nfsroot-boottest: ").partition("=")
            values.setdefault(key, []).append(value)
    return GuestReport({k: tuple(v) for k, v in values.items()})


def systemd_checks(verdict: GuestReport | None) -> list[Check]:
    if verdict is None:
        return [Check("verdict unit", False, "the node wrote no verdict (did systemd reach multi-user?)")]
    state = verdict.first("state")
    failed = (verdict.first("failed") or "").strip()
    return [
        Check("systemctl is-system-running", state == "running", f"{state} (failed units: {failed or 'none'})"),
        Check("failed units", failed == "", failed),
    ]


def run_root_boottest(
    build_dir: Path,
    cluster: Cluster,
    root: Path,
    macs: Sequence[str] = DEFAULT_TEST_MACS,
    workdir: Path | None = None,
    options: BootOptions | None = None,
) -> BootRun:
    options = options or BootOptions()
    if not (root / "etc").is_dir():
        raise BootTestError(f"{root} does not look like a root file system (no etc/)")
    target = from_cluster(cluster, build_dir.resolve(), macs)
    work = (workdir or build_dir / "boottest-root").resolve()
    served = work / "served"
    if served.exists():
        shutil.rmtree(served)  # our own copy from the last run; never the user's root
    clients = clone_root(root.resolve(), served / "root")
    shares = prepare_shares(target, served, clients)
    assert target.manifest is not None
    apply_share_entries(target.manifest, build_dir.resolve(), shares)
    writable = [w.mount for w in cluster.writable]
    install_verdict(clients, cluster.node_dir.mount, writable, cluster.symlinks, first_user(clients))
    run = boot_target(target, work / "boot", dataclasses.replace(options, share_dirs=shares))
    node_mount = target.node_dir_mount
    for result in run.results:
        node_dir = local_path(target, shares, node_mount.export_for(result.node_id)) if node_mount else None
        result.checks += systemd_checks(read_verdict(node_dir / VERDICT_FILE) if node_dir else None)
    run.notes.append(f"served a copy of {root} ({clients}); {root} itself was not modified")
    return run
