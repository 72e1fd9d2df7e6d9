"""`nfsroot boottest`: PXE-boot what `doit` built in QEMU against an NFS server on loopback.

Prints one line per node (PASS/FAIL, timings, serial log) and, for a failed node, each failed check.
Exit status: 0 when every node passed, 1 otherwise (or when the test could not run at all).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from pathlib import Path
from typing import Any

from pipeline.boottest.clientroot import fetch_static_busybox
from pipeline.boottest.harness import BootOptions, BootRun, run_boottest
from pipeline.boottest.httpd import generated_http
from pipeline.boottest.lan import FIRMWARE, LanSettings, generated_dnsmasq
from pipeline.boottest.qemu import VmSettings
from pipeline.boottest.realroot import run_root_boottest
from pipeline.boottest.target import DEFAULT_TEST_MACS
from pipeline.boottest.verdict import NodeResult
from pipeline.cli import EXIT_ERROR, EXIT_OK, bounded_int
from pipeline.spec.load import load_cluster

DEFAULT_TIMEOUT = 240
REAL_ROOT_TIMEOUT = 900.0  # systemd under TCG on a shared machine took up to 6 minutes to multi-user
TIMING_ORDER = ("kernel", "nfs_root", "init_bottom", "init", "report", "exit")


def _timings(result: NodeResult) -> str:
    return " ".join(f"{k}={result.timings[k]:.1f}s" for k in TIMING_ORDER if k in result.timings)


def _as_json(run: BootRun) -> dict[str, Any]:
    return {
        "ok": run.ok,
        "workdir": str(run.workdir),
        "notes": run.notes,
        "nodes": [
            {
                "mac": r.mac,
                "node_id": r.node_id,
                "hostname": r.hostname,
                "ok": r.ok,
                "failure": r.failure,
                "timings": r.timings,
                "serial_log": str(r.serial_log),
                "checks": [{"name": c.name, "ok": c.ok, "detail": "" if c.ok else c.detail} for c in r.checks],
            }
            for r in run.results
        ],
    }


def _print(run: BootRun) -> None:
    for note in run.notes:
        print(f"note: {note}")
    for r in run.results:
        print(f"{'PASS' if r.ok else 'FAIL'} {r.mac} {r.hostname}  {_timings(r)}  log: {r.serial_log}")
        if not r.ok:
            if r.failure:
                print(f"  boot failed: {r.failure}")
            for check in r.failed_checks:
                print(f"  check failed: {check.name}: {check.detail}")
    passed = sum(r.ok for r in run.results)
    print(f"{passed} passed, {len(run.results) - passed} failed")


def _boottest(args: argparse.Namespace) -> int:
    if args.fetch_busybox:
        print(f"static busybox: {fetch_static_busybox()}", file=sys.stderr)
    spec = Path(args.file)
    cluster, _warnings = load_cluster(spec)
    macs = args.mac or [n.mac for n in cluster.nodes.known[:2]] or list(DEFAULT_TEST_MACS)
    options = BootOptions(
        parallel=not args.sequential,
        vm=VmSettings(accel=args.accel, memory_mb=args.memory, timeout=args.timeout),
        network=args.network,
        lan=LanSettings(args.firmware, generated_dnsmasq(cluster), generated_http(cluster)) if args.firmware else None,
    )
    if args.root is not None:
        if args.timeout == DEFAULT_TIMEOUT:
            options = dataclasses.replace(options, vm=dataclasses.replace(options.vm, timeout=REAL_ROOT_TIMEOUT))
        run = run_root_boottest(Path(args.build), cluster, args.root, macs, workdir=args.workdir, options=options)
    else:
        run = run_boottest(Path(args.build), cluster, macs, workdir=args.workdir, options=options)
    if args.json:
        json.dump(_as_json(run), sys.stdout, indent=2)
        print()
    else:
        _print(run)
    return EXIT_OK if run.ok else EXIT_ERROR


def register(sub: Any) -> None:
    p = sub.add_parser(
        "boottest",
        help="PXE-boot the built artifacts in QEMU against a loopback NFS server and check every node",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--build", default="build", help="what `doit` built (default: %(default)s)")
    p.add_argument("--workdir", type=Path, help="scratch and logs (default: BUILD/boottest)")
    p.add_argument(
        "--mac", action="append", help="boot a node with this MAC (repeatable; default: the first two known nodes)"
    )
    p.add_argument("--sequential", action="store_true", help="boot the nodes one after the other")
    p.add_argument(
        "--root",
        type=Path,
        help="boot this root (e.g. your Debian root) instead of the busybox test root; a copy is served, "
        "the directory itself is never modified; each node must reach `running` with no failed unit",
    )
    p.add_argument(
        "--timeout",
        type=bounded_int(10, 86400, "seconds per node"),
        default=DEFAULT_TIMEOUT,
        help=f"seconds per node (default: %(default)s; {REAL_ROOT_TIMEOUT:.0f} with --root)",
    )
    p.add_argument("--accel", default="tcg", help="QEMU accelerator (default: %(default)s)")
    p.add_argument(
        "--memory",
        type=bounded_int(256, 65536, "MiB per node; a Debian kernel and initrd need at least 256"),
        default=768,
        help="MiB per node (default: %(default)s)",
    )
    p.add_argument(
        "--network",
        choices=("auto", "netns", "host"),
        default="auto",
        help="run servers and VMs in a private loopback-only network namespace (auto: when root)",
    )
    p.add_argument(
        "--firmware",
        choices=tuple(FIRMWARE),
        help="boot over a bridge in a network namespace through the spec's generated dnsmasq (dhcp section), "
        "with this firmware; which loader each gets is the spec's firmware section",
    )
    p.add_argument("--fetch-busybox", action="store_true", help="download Debian's busybox-static first (apt)")
    p.add_argument("--json", action="store_true", help="print the results as JSON")
    p.set_defaults(handler=_boottest)
