#!/usr/bin/env python3
"""Benchmark: the seed's manual initrd rebuild (build.sh) against nfsroot-pipeline's overlay and repack.

On one real Debian initrd (built here with mkinitramfs for the installed kernel, or given with --initrd):
  setup     unmkinitramfs once; early.cpio from the early/ tree (untimed, as the seed did it beforehand)
  build.sh  find . -print0 | cpio --null --create --format=newc > main.cpio; gzip --best main.cpio;
            cat early.cpio main.cpio.gz > out                                   (timed, in bash)
  overlay   (a) a whole `doit` run after a cluster.yaml edit (method: overlay) in a scratch workspace,
            and the overlay step alone: overlay_files + build_overlay + writing the file
  repack    (b) pipeline.archive.repack on the same initrd: time, size, peak RSS (of its own process)

Every timed step runs in a child process. Peak RSS of repack is the child's own VmHWM (ru_maxrss would include
the parent's, which Linux carries across fork and exec). Run:
    python3 benchmarks/bench_initrd.py [--initrd PATH] [--repeat N] [--json FILE]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent

BUILD_SH = r"""
set -euo pipefail
cd "$1/main"
find . -print0 | cpio --null --create --format=newc --quiet > "$1/main.cpio"
gzip --best "$1/main.cpio"
cat "$1/early.cpio" "$1/main.cpio.gz" > "$1/out.img"
"""

CHILD_REPACK = r"""
import json, re, sys, time
from pathlib import Path
from pipeline.archive.overlay import overlay_files
from pipeline.archive.repack import repack
src, out, level, threads = Path(sys.argv[1]), Path(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
start = time.perf_counter()
repack(src, overlay_files(b"#!/bin/sh\nexit 0\n"), out, level=level, threads=threads, mtime=0)
hwm = re.search(r"VmHWM:\s*(\d+) kB", Path("/proc/self/status").read_text())
print(json.dumps({"seconds": time.perf_counter() - start, "rss_mb": int(hwm.group(1)) / 1024}))
"""

CHILD_OVERLAY = r"""
import json, sys, time
from pathlib import Path
start = time.perf_counter()
from pipeline.archive.overlay import build_overlay, content_name, overlay_files
from pipeline.fsutil import write_atomic
script = Path(sys.argv[1]).read_bytes()
data = build_overlay(overlay_files(script), mtime=0)
write_atomic(Path(sys.argv[2]) / content_name(data), data)
print(json.dumps({"seconds": time.perf_counter() - start}))
"""


def sh(argv: list[str], **kw: object) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(argv, check=True, capture_output=True, **kw)  # type: ignore[call-overload, no-any-return]


def real_initrd(work: Path) -> Path:
    kver = sorted(p.name for p in Path("/lib/modules").iterdir() if (p / "modules.dep").exists())[-1]
    out = work / f"initrd.img-{kver}"
    sh(["mkinitramfs", "-o", str(out), kver])
    return out


def timed_child(argv: list[str], env: dict[str, str] | None = None, cwd: Path | None = None) -> tuple[float, float]:
    """Wall seconds and peak RSS (MB) of one child process (wait4 gives that child's own rusage)."""
    start = time.perf_counter()
    proc = subprocess.Popen(argv, env=env, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(proc.pid, 0)
    elapsed = time.perf_counter() - start
    out, err = proc.communicate()
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"failed: {argv}\n{out.decode()}\n{err.decode()}")
    return elapsed, usage.ru_maxrss / 1024


def bench_build_sh(initrd: Path, work: Path) -> dict[str, float]:
    unpacked = work / "seed"
    sh(["unmkinitramfs", str(initrd), str(unpacked)])
    if not (unpacked / "main").is_dir():  # no early archive: unmkinitramfs unpacks flat
        flat = work / "flat"
        unpacked.rename(flat)
        unpacked.mkdir()
        flat.rename(unpacked / "main")
    early = unpacked / "early.cpio"
    if (unpacked / "early").is_dir():
        names = sh(["find", ".", "-print0"], cwd=unpacked / "early").stdout
        early.write_bytes(sh(["cpio", "--null", "--create", "--format=newc", "--quiet"], input=names,
                             cwd=unpacked / "early").stdout)  # fmt: skip
    else:
        early.write_bytes(b"")
    seconds, rss = timed_child(["bash", "-c", BUILD_SH, "build.sh", str(unpacked)])
    return {"seconds": seconds, "bytes": (unpacked / "out.img").stat().st_size, "rss_mb": rss}


def bench_repack(initrd: Path, work: Path, level: int, threads: int) -> dict[str, float]:
    out = work / "repacked.img"
    env = dict(os.environ, PYTHONPATH=str(REPO))
    start = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, "-c", CHILD_REPACK, str(initrd), str(out), str(level), str(threads)],
        env=env, capture_output=True, check=True,
    )  # fmt: skip
    wall = time.perf_counter() - start
    inner = json.loads(proc.stdout)
    return {"seconds": inner["seconds"], "process_seconds": wall, "bytes": out.stat().st_size,
            "rss_mb": inner["rss_mb"]}  # fmt: skip


def bench_overlay_step(work: Path) -> dict[str, float]:
    script = work / "script"
    script.write_bytes(b"#!/bin/sh\n" + b"# boot script\n" * 300)
    env = dict(os.environ, PYTHONPATH=str(REPO))
    proc = sh([sys.executable, "-c", CHILD_OVERLAY, str(script), str(work)], env=env)
    return json.loads(proc.stdout)  # type: ignore[no-any-return]


def bench_doit(work: Path) -> dict[str, float] | None:
    """A whole `doit` run (overlay method) after an edit of cluster.yaml, in a scratch copy of the inputs."""
    if not (REPO / "pipeline" / "tasks.py").exists() or not (REPO / "cluster.yaml").exists():
        return None
    scratch = work / "doit"
    scratch.mkdir()
    for name in ("cluster.yaml", "pyproject.toml"):
        shutil.copy(REPO / name, scratch / name)
    for name in ("schema", "templates"):
        if (REPO / name).is_dir():
            shutil.copytree(REPO / name, scratch / name)
    (scratch / "pipeline").symlink_to(REPO / "pipeline")  # the dodoFile pyproject names, and the package
    env = dict(os.environ, PYTHONPATH=str(REPO))
    doit = [sys.executable, "-m", "doit"]
    sh(doit, cwd=scratch, env=env)  # the first build, untimed
    spec = scratch / "cluster.yaml"
    text = spec.read_text()
    edited = text.replace('hostname: "worker-node-{mac}"', 'hostname: "node-{mac}"')
    if edited == text or "method: overlay" not in text:
        return None
    spec.write_text(edited)  # changes the boot script, hence the overlay initrd
    seconds, rss = timed_child(doit, env=env, cwd=scratch)
    return {"seconds": seconds, "rss_mb": rss}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--initrd", type=Path, help="a Debian initrd (default: build one with mkinitramfs)")
    parser.add_argument("--level", type=int, default=None, help="zstd level for repack (default: the library's)")
    parser.add_argument("--threads", type=int, default=0, help="zstd threads for repack (0: all CPUs)")
    parser.add_argument("--repeat", type=int, default=3, help="runs of each of ours (best is reported)")
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args()
    sys.path.insert(0, str(REPO))
    from pipeline.archive.repack import DEFAULT_ZSTD_LEVEL
    from pipeline.archive.segments import split_segments

    level = args.level if args.level is not None else DEFAULT_ZSTD_LEVEL
    with tempfile.TemporaryDirectory(prefix="bench-initrd-") as tmp:
        work = Path(tmp)
        initrd = args.initrd or real_initrd(work)
        segments = split_segments(initrd)
        print(f"initrd: {initrd} ({initrd.stat().st_size} bytes; segments: "
              + ", ".join(f"{s.compression.value}/{s.entries}" for s in segments) + ")")  # fmt: skip
        seed = bench_build_sh(initrd, work)
        repacks = [bench_repack(initrd, work, level, args.threads) for _ in range(args.repeat)]
        rep = min(repacks, key=lambda r: r["seconds"])
        steps = [bench_overlay_step(work) for _ in range(args.repeat)]
        step = min(steps, key=lambda r: r["seconds"])
        doit = bench_doit(work)
    results = {
        "build_sh": seed,
        "repack": {**rep, "level": level, "threads": args.threads},
        "overlay_step": step,
        "doit_overlay_run": doit,
        "cpus": os.cpu_count(),
        "load_avg_1min": os.getloadavg()[0],
    }
    s = seed["seconds"]
    print(f"build.sh             {s:8.2f} s  {seed['bytes']:>11} bytes")
    print(f"repack (zstd -{level})    {rep['seconds']:8.2f} s  {rep['bytes']:>11} bytes  peak RSS {rep['rss_mb']:.0f} MB"
          f"  = 1/{s / rep['seconds']:.0f} of the time, {100 * rep['bytes'] / seed['bytes']:.1f}% of the size"
          f"  (process incl. start-up {rep['process_seconds']:.2f} s)")  # fmt: skip
    print(f"overlay step         {step['seconds'] * 1000:8.1f} ms = 1/{s / step['seconds']:.0f} of build.sh")
    if doit:
        print(f"doit after an edit   {doit['seconds']:8.2f} s  = 1/{s / doit['seconds']:.0f} of build.sh"
              f"  (whole run: interpreter, task loading, every changed task; peak RSS {doit['rss_mb']:.0f} MB)")  # fmt: skip
    else:
        print("doit after an edit   (not measured: pipeline/tasks.py or an overlay cluster.yaml is missing)")
    if args.json:
        args.json.write_text(json.dumps(results, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
