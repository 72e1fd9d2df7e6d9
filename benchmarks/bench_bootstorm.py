#!/usr/bin/env python3
"""Boot-storm benchmark (issue 10): N nodes fetching kernel + initrds at once, over TFTP from the generated
dnsmasq and over HTTP, to choose the default transport.

Everything runs in a network namespace this script makes (loopback and a bridge holding the gateway
address, as in the boot tests: pipeline/boottest/lan.py), so no packet leaves the machine. The dnsmasq
configuration is the one the pipeline generates (proxy mode, TFTP root moved to a scratch directory holding
this machine's /boot kernel and initrd and a gzip overlay). HTTP is Python's ThreadingHTTPServer on the
same address. Each simulated node is one curl fetching the kernel, the distro initrd and the overlay in
turn (TFTP with 1468-byte blocks, as iPXE and GRUB ask; plain TFTP's 512 is slower still).
Reported per N: median and slowest node time, aggregate throughput.

Run as root: python3 benchmarks/bench_bootstorm.py [--nodes 1 8 32 128]
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from pipeline.boottest.lan import BRIDGE, Lan, LanSettings, generated_dnsmasq  # noqa: E402
from pipeline.boottest.proc import Daemon, network_sandbox, wait_until  # noqa: E402
from pipeline.spec.load import parse_cluster  # noqa: E402
from tests.spec_helpers import spec_text  # noqa: E402

GATEWAY = "192.168.0.254"


def files(tftp: Path) -> list[str]:
    boot = sorted(Path("/boot").glob("vmlinuz-*"))[-1]
    version = boot.name.removeprefix("vmlinuz-")
    (tftp / "boot").mkdir(parents=True)
    names = [f"boot/vmlinuz-{version}", f"boot/initrd.img-{version}"]
    for name in names:
        shutil.copyfile(Path("/") / name, tftp / name)
    (tftp / "nfsroot-overlay.img").write_bytes(os.urandom(16 * 1024))
    return [*names, "nfsroot-overlay.img"]


def storm(ns: str, scheme: str, names: list[str], n: int) -> tuple[list[float], float]:
    urls = [f"{scheme}://{GATEWAY}{':8080' if scheme == 'http' else ''}/{name}" for name in names]
    argv = ["ip", "netns", "exec", ns, "nice", "-n", "10", "curl", "-sS", "--fail", "--tftp-blksize", "1468",
            "-w", "%{time_total}\\n"]  # fmt: skip
    for url in urls:
        argv += ["-o", "/dev/null", url]
    start = time.monotonic()
    procs = [subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE) for _ in range(n)]
    times = []
    for p in procs:
        out, err = p.communicate(timeout=1800)
        if p.returncode != 0:
            raise SystemExit(f"curl failed ({p.returncode}): {err.decode().strip()}")
        times.append(sum(float(t) for t in out.split()))
    return times, time.monotonic() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--nodes", type=int, nargs="+", default=[1, 8, 32, 128])
    parser.add_argument("--transports", nargs="+", choices=("tftp", "http"), default=["tftp", "http"])
    parser.add_argument(
        "--tftp-max",
        type=int,
        help="override the generated dnsmasq's tftp-max (dhcp.tftp_max), e.g. 50: its own default",
    )
    args = parser.parse_args()
    cluster = parse_cluster(spec_text(append=["dhcp: {mode: proxy}"]), "bench.yaml")[0]
    with tempfile.TemporaryDirectory(prefix="bootstorm-") as tmp, network_sandbox("netns") as sandbox:
        work = Path(tmp)
        tftp = work / "tftp"
        names = files(tftp)
        size = sum((tftp / n).stat().st_size for n in names)
        assert sandbox.name is not None
        lan = Lan(LanSettings("seabios", generated_dnsmasq(cluster)), sandbox, GATEWAY, "192.168.0.0/24", work, tftp)
        if args.tftp_max is not None:  # the command line overrides the generated configuration's tftp-max
            lan.dnsmasq.argv.append(f"--tftp-max={args.tftp_max}")
        lan.start()
        http = Daemon(
            "http",
            sandbox.wrap([sys.executable, "-m", "http.server", "8080", "--bind", GATEWAY, "--directory", str(tftp)]),
            work / "http.log",
        ).start()
        try:
            wait_until(lambda: "Serving HTTP" in http.log_tail(), 10)
            print(f"{len(names)} files, {size / 1e6:.1f} MB per node; dnsmasq on {BRIDGE} in {sandbox.name}")
            print("| transport | nodes | median node s | slowest node s | aggregate MB/s |")
            print("| --- | --- | --- | --- | --- |")
            for scheme in args.transports:
                for n in args.nodes:
                    times, wall = storm(sandbox.name, scheme, names, n)
                    rate = n * size / wall / 1e6
                    print(f"| {scheme} | {n} | {statistics.median(times):.2f} | {max(times):.2f} | {rate:.0f} |")
                    sys.stdout.flush()
        finally:
            http.stop()
            lan.stop()


if __name__ == "__main__":
    main()
