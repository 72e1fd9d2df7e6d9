"""The boot test end to end: client root, TFTP directory, NFS server, QEMU nodes, verdicts.

Layout of the work directory (kept after the run for inspection; emptied at the start of the next one):
```
WORKDIR/tftp/          what QEMU's TFTP server serves
WORKDIR/clientroot/    the read-only root share (the busybox test client root)
WORKDIR/shares/<n>/    one empty directory per other share (the writable ones get written into)
WORKDIR/nfs/           ganesha.conf and the server logs
WORKDIR/logs/          <node id>.serial.log and <node id>.qemu.log
```
"""

from __future__ import annotations

import contextlib
import posixpath
import re
import shutil
import signal
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from pipeline.boottest import qemu
from pipeline.boottest.clientroot import ClientRootLayout, build_client_root
from pipeline.boottest.errors import BootTestError
from pipeline.boottest.lan import Lan, LanSettings
from pipeline.boottest.nfsserver import CLIENT_ADDRESS, Export, NfsServer, nfs_server
from pipeline.boottest.proc import NetworkSandbox, network_sandbox
from pipeline.boottest.shares import apply_share_entries
from pipeline.boottest.target import DEFAULT_TEST_MACS, NODE, BootTarget, from_cluster
from pipeline.boottest.tftp import assemble_tftp
from pipeline.boottest.verdict import NodeResult, gateway_checks, guest_checks, parse_report
from pipeline.spec.model import Cluster


@dataclass(frozen=True)
class BootOptions:
    parallel: bool = True
    vm: qemu.VmSettings = field(default_factory=qemu.VmSettings)
    network: str = "auto"  # "netns", "host" or "auto"; see proc.network_sandbox
    with_rpcbind: bool = True  # False only to test the diagnosis of a missing rpcbind
    # Called once the NFS server is up, before any node boots (tests use it to break things on purpose).
    before_boot: Callable[[NfsServer], object] | None = None
    # Serve these directories (gateway path -> local directory) as the shares, as `apply` left them, instead
    # of a busybox client root: a real root's boot test. They are kept from one run to the next.
    share_dirs: Mapping[str, Path] | None = None
    # Boot over a bridge in the namespace through the generated dnsmasq, with this firmware (lan.py).
    lan: LanSettings | None = None


@dataclass
class BootRun:
    """What one harness run produced: per-node results plus the notes the harness wants the user to see."""

    results: list[NodeResult]
    notes: list[str]
    workdir: Path

    @property
    def ok(self) -> bool:
        return bool(self.results) and all(r.ok for r in self.results)


def _share_dir_name(path: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]", "_", path.strip("/")) or "root"


def prepare_shares(target: BootTarget, workdir: Path, client_root: Path) -> dict[str, Path]:
    """The served directory of every share, with what `apply` creates before any node boots."""
    exports: dict[str, Path] = {}
    for share in sorted(target.shares):
        exports[share] = client_root if share == target.root_share else workdir / "shares" / _share_dir_name(share)
        exports[share].mkdir(parents=True, exist_ok=True)
    # What `apply` creates on the gateway before any node boots: shared writable directories, and the
    # parents of the per-node ones (the boot script creates each node's own directory).
    for w in target.writable:
        gateway_path = posixpath.dirname(w.export) if w.per_node else w.export
        if NODE in gateway_path:
            raise BootTestError(f"writable mount {w.mount}: the node id must be the last part of {w.export}")
        holder = target.share_of(gateway_path)
        if holder is None:
            raise BootTestError(f"writable mount {w.mount}: {w.export} is under no share")
        rel = posixpath.relpath(gateway_path, holder)
        if rel != ".":
            (exports[holder] / rel).mkdir(parents=True, exist_ok=True)
    return exports


def _explain(failure: str | None, serial: str, exports: dict[str, Path]) -> str | None:
    """Add to a failed NFS root mount what the node asked for and what the server offers."""
    if failure is None or "NFS root mount" not in failure:
        return failure
    match = re.search(r"nfsroot=(\S+)", serial)
    asked = match.group(1) if match else "?"
    return f"{failure} [nfsroot={asked}; the server exports {', '.join(sorted(exports))}]"


def _result(target: BootTarget, exports: dict[str, Path], run: qemu.VmRun) -> NodeResult:
    report = parse_report(run.text)
    failure = _explain(run.failure, run.text, exports)
    result = NodeResult(run.node.mac, run.node.id, run.node.hostname, run.serial_log, failure=failure)
    result.timings = dict(run.milestones)
    if run.finished is not None:
        result.timings["exit"] = run.finished
    result.report = report
    result.checks = guest_checks(target, run.node, report) + gateway_checks(target, exports, run.node)
    return result


@contextlib.contextmanager
def _sigterm_unwinds() -> Iterator[None]:
    """Turn SIGTERM (a CI timeout, `kill`) into KeyboardInterrupt, so the with-blocks stop every process."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def interrupt(signum: int, frame: object) -> None:
        raise KeyboardInterrupt(f"signal {signum}")

    previous = signal.signal(signal.SIGTERM, interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


@contextlib.contextmanager
def _lan(
    options: BootOptions, sandbox: NetworkSandbox, target: BootTarget, workdir: Path, tftp: Path
) -> Iterator[Lan | None]:
    if options.lan is None:
        yield None
        return
    lan = Lan(options.lan, sandbox, target.gateway, target.network, workdir / "lan", tftp)
    try:
        lan.start()
        yield lan
    finally:
        lan.stop()


def boot_target(target: BootTarget, workdir: Path, options: BootOptions = BootOptions()) -> BootRun:
    """Boot every node of `target` against a fresh NFS server; servers and VMs are stopped before returning."""
    with _sigterm_unwinds():
        # Absolute: the paths go into ganesha's config, and ganesha does not resolve relative ones.
        return _boot_target(target, workdir.resolve(), options)


def _boot_target(target: BootTarget, workdir: Path, options: BootOptions) -> BootRun:
    if not target.nodes:
        raise BootTestError("no nodes to boot")
    if len({n.id for n in target.nodes}) != len(target.nodes):
        raise BootTestError("two test nodes share a MAC")
    # Only ever emptied while no server exports it (a live export must not lose files under it).
    if workdir.exists():
        shutil.rmtree(workdir)
    workdir.mkdir(parents=True)
    logs = workdir / "logs"
    logs.mkdir()
    if options.share_dirs is not None:
        exports = {share: Path(options.share_dirs[share]).resolve() for share in target.shares}
    else:
        layout = ClientRootLayout(dict(target.symlinks), list(dict.fromkeys(w.mount for w in target.writable)))
        client_root = build_client_root(workdir / "clientroot", layout, make_symlinks=target.manifest is None)
        exports = prepare_shares(target, workdir, client_root)
        if target.manifest is not None:
            apply_share_entries(target.manifest, target.manifest.parent, exports)
    tftp = assemble_tftp(target, workdir / "tftp")
    notes = list(tftp.notes)
    qemu.check_qemu()
    results: list[NodeResult] = []
    with (
        network_sandbox("netns" if options.lan else options.network) as sandbox,
        _lan(options, sandbox, target, workdir, tftp.path) as lan,
    ):
        notes.append(f"servers and nodes ran in {sandbox.describe()}")
        share_list = [Export(p, exports[p], target.shares[p]) for p in sorted(exports)]
        clients = f"{CLIENT_ADDRESS}, {target.network}" if lan else CLIENT_ADDRESS
        argv_for = (lambda node, log: lan.qemu_argv(node, log, options.vm.accel, options.vm.memory_mb)) if lan else None
        with nfs_server(
            share_list, workdir / "nfs", sandbox, with_rpcbind=options.with_rpcbind, clients=clients
        ) as server:
            if options.before_boot is not None:
                options.before_boot(server)
            nodes_all = list(target.nodes)
            batches = [nodes_all] if options.parallel else [[n] for n in nodes_all]
            for nodes in batches:
                problem = server.health()
                if problem:
                    # Fail fast: a node cannot mount anything from this server.
                    for node in nodes:
                        log = logs / f"{node.id}.serial.log"
                        results.append(
                            NodeResult(node.mac, node.id, node.hostname, log, failure=f"NFS server: {problem}")
                        )
                    continue
                gw, net = target.gateway, target.network
                with qemu.running_vms(nodes, tftp.path, logs, sandbox, gw, net, options.vm, argv_for) as runs:
                    qemu.watch(runs, options.vm, health=server.health)
                results.extend(_result(target, exports, run) for run in runs)
    return BootRun(results, notes, workdir)


def run_boottest(
    build_dir: Path,
    cluster: Cluster,
    macs: Sequence[str] = DEFAULT_TEST_MACS,
    workdir: Path | None = None,
    options: BootOptions = BootOptions(),
) -> BootRun:
    """Boot what `doit` built into `build_dir` for `cluster`, one node per MAC."""
    target = from_cluster(cluster, build_dir.resolve(), macs)
    return boot_target(target, workdir or build_dir / "boottest", options)
