#!/usr/bin/env python3
"""Benchmark of the spec → artifacts path (issue 2): large clusters and no-op builds.

Generates clusters of 1,000 and 10,000 nodes (every node with a fixed address, every tenth with a host name
override so it gets its own pxelinux file), then measures in fresh temporary directories:
  - render: load + validate + render every family, timed inside a fresh process each time, as doit and the
    console script run it once per process (median of --repeat processes; imports excluded);
  - full doit: a first `doit` run (subprocess);
  - no-op doit vs `doit list`: medians of --repeat runs of each on the built tree.
Targets: 10,000 nodes render in ≤ 10x the 1,000-node time; a no-op `doit` takes ≤ 1.5x `doit list`.

Run: python3 benchmarks/bench_spec.py [--repeat 5]
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from pipeline import outputs  # noqa: E402
from pipeline.runtime import tune_gc  # noqa: E402
from pipeline.spec.load import load_cluster  # noqa: E402


def cluster_yaml(nodes: int) -> str:
    lines = [
        "name: bench",
        "gateway: {address: 10.0.0.1, network: 10.0.0.0/16, tftp_root: /srv/tftp}",
        "shares:",
        "  clients: {path: /clients, access: ro, options: [no_subtree_check, async]}",
        "  workers: {path: /workers, access: rw, options: [no_subtree_check, async]}",
        "root: {share: clients}",
        "writable:",
        "  - {mount: /var/local, share: workers, per_node: true}",
        "  - {mount: /home, share: workers, subdir: home}",
        "symlinks: {/etc/hostname: /var/local/hostname, /etc/hosts: /var/local/hosts}",
        "boot: {kernel: 6.1.0-21-amd64, sysappend: [ip, bootif]}",
        "nodes:",
        '  hostname: "node-{mac}"',
        "  known:",
    ]
    for i in range(nodes):
        mac = f"02:00:00:{(i >> 16) & 0xFF:02x}:{(i >> 8) & 0xFF:02x}:{i & 0xFF:02x}"
        address = f"10.0.{(i + 2) // 256}.{(i + 2) % 256}"
        extra = f", hostname: n{i}" if i % 10 == 0 else ""
        lines.append(f'    - {{mac: "{mac}", address: {address}{extra}}}')
    return "\n".join(lines) + "\n"


def render_once(spec: Path) -> float:
    start = time.perf_counter()
    cluster, _ = load_cluster(spec)
    for render in outputs.SIMPLE.values():
        render(cluster)
    outputs.pxelinux(cluster, outputs.initrd_names(cluster, spec.parent))
    return time.perf_counter() - start


def render_in_child(spec: Path) -> float:
    out = subprocess.run([sys.executable, __file__, "--child", str(spec)], check=True, capture_output=True, text=True)
    return float(out.stdout)


def doit(workdir: Path, *args: str) -> float:
    argv = [sys.executable, "-m", "doit", *args[:1], "-f", str(REPO / "pipeline/tasks.py"), "-d", str(workdir)]
    argv += ["--db-file", str(workdir / ".doit.db"), *args[1:]]
    start = time.perf_counter()
    subprocess.run(argv, check=True, capture_output=True)
    return time.perf_counter() - start


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--sizes", type=int, nargs="+", default=[1000, 10000])
    parser.add_argument("--child", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    tune_gc()  # as the doit tasks and the console script do
    if args.child:
        print(render_once(args.child))
        return 0
    renders: dict[int, float] = {}
    print(f"{'nodes':>6} {'render s':>9} {'first doit s':>13} {'no-op doit s':>13} {'doit list s':>12} {'ratio':>6}")
    for size in args.sizes:
        with tempfile.TemporaryDirectory() as tmp:
            work = Path(tmp)
            spec = work / "cluster.yaml"
            spec.write_text(cluster_yaml(size))
            renders[size] = statistics.median(render_in_child(spec) for _ in range(args.repeat))
            first = doit(work, "run")
            noop = statistics.median(doit(work, "run") for _ in range(args.repeat))
            listing = statistics.median(doit(work, "list") for _ in range(args.repeat))
            print(
                f"{size:>6} {renders[size]:>9.3f} {first:>13.3f} {noop:>13.3f} {listing:>12.3f} {noop / listing:>6.2f}"
            )
    if len(args.sizes) >= 2:
        small, large = args.sizes[0], args.sizes[-1]
        ratio = renders[large] / renders[small]
        print(f"render {large} / render {small} = {ratio:.2f} (target ≤ {large / small:.0f})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
