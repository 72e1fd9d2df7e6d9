#!/usr/bin/env python3
"""CPU of a `doit` run after a cluster.yaml edit vs LTSP's `ltsp initrd` (issue 13 item 4), A/B in one run.

Both regenerate the small extra initrd a node boots with beside the distro's. Measured as the CPU time
(user + system) of the child process and everything it runs (os.wait4's rusage), alternating A and B so
machine load hits both alike; medians of --repeat runs. Goal: doit ≤ 1.0x ltsp initrd.

- doit: a copy of the repository's cluster.yaml in a temporary directory, built once; then each run edits
  `boot.cmdline` (which changes the boot script, hence the overlay initrd, pxelinux files, manifest and
  generated/) and runs `doit` — the whole edit → rebuild cycle a user pays.
- ltsp: `ltsp --tftp-dir=<temporary directory> initrd`. That applet copies /usr/share/ltsp and /etc/ltsp into
  a mktemp directory, syntax-checks the scripts, packs them with `find | cpio` and moves ltsp.img into
  $TFTP_DIR/ltsp/: given its own TFTP directory it writes nothing else on the host (read from
  /usr/share/ltsp/common/initrd/*.sh).

Also measured, alternated with them: what starting Python and importing doit and the spec loader cost alone,
the floor under any run that validates a spec.

Installs nothing; without `ltsp` on PATH (Debian package ltsp) it says so and exits 0.

Run: python3 benchmarks/bench_ltsp.py [--repeat 11]
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
CMDLINE = "  cmdline: [nfsrootdebug]"
LABELS = ("doit after a boot-script edit", "ltsp initrd", "no-op doit")
# What any run that validates a spec pays before doing anything: starting Python, importing doit, and
# importing the spec loader (pydantic, the models, PyYAML). Printed to show where the ratio's floor is.
FLOORS = {
    "python -c pass": "pass",
    "python: import doit": "import doit.doit_cmd",
    "python: import doit + the spec loader (floor)": "import doit.doit_cmd, pipeline.spec.load",
}


def cpu_of(argv: list[str], cwd: Path, env: dict[str, str]) -> float:
    """User + system CPU seconds of argv and all its descendants; fails loudly if the command fails."""
    proc = subprocess.Popen(argv, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    assert proc.stdout is not None
    output = proc.stdout.read()
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(argv)} exited with {proc.returncode}:\n{output.decode(errors='replace')}")
    return usage.ru_utime + usage.ru_stime


def doit_argv() -> list[str]:
    doit = Path(sys.executable).with_name("doit")
    return [str(doit)] if doit.exists() else [sys.executable, "-m", "doit"]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=11)
    args = parser.parse_args()
    ltsp = shutil.which("ltsp")
    if ltsp is None:
        print("skipped: `ltsp` is not installed (Debian package ltsp); nothing measured")
        return 0
    # PYTHONDONTWRITEBYTECODE (set on this project's machines) makes every run compile the project's modules
    # from source again (~20 ms); a user's Python caches them after the first run, so the runs here do too.
    drop = ("NFSROOT_", "DOIT", "PYTHONDONTWRITEBYTECODE")
    env = {k: v for k, v in os.environ.items() if not k.startswith(drop)}
    with tempfile.TemporaryDirectory(prefix="bench-ltsp-") as tmp:
        work = Path(tmp)
        spec_text = (REPO / "cluster.yaml").read_text()
        if CMDLINE not in spec_text:
            raise SystemExit(f"cluster.yaml no longer has the line {CMDLINE.strip()!r} this benchmark edits")
        spec = work / "cluster.yaml"
        spec.write_text(spec_text)
        shutil.copytree(REPO / "schema", work / "schema")
        shutil.copy(REPO / "pyproject.toml", work)  # doit reads its [tool.doit] settings, as in a user's checkout
        base = [*doit_argv(), "-f", str(REPO / "pipeline" / "tasks.py"), "-d", str(work)]
        doit = [*base, "--db-file", str(work / ".doit.db")]
        cpu_of(doit, work, env)  # the first build, not measured
        (work / "tftp").mkdir()
        ltsp_argv = [ltsp, f"--tftp-dir={work / 'tftp'}", "initrd"]
        cpu_of(ltsp_argv, work, env)  # warm the page cache alike
        for code in FLOORS.values():  # and compile what the floor runs import, as the first build did
            cpu_of([sys.executable, "-c", code], work, {**env, "PYTHONPATH": str(REPO)})
        runs: dict[str, list[float]] = {label: [] for label in (*LABELS, *FLOORS)}
        for i in range(args.repeat):
            spec.write_text(spec_text.replace(CMDLINE, f"  cmdline: [nfsrootdebug, 'bench={i % 2}']"))
            runs[LABELS[0]].append(cpu_of(doit, work, env))
            runs[LABELS[1]].append(cpu_of(ltsp_argv, work, env))
            runs[LABELS[2]].append(cpu_of(doit, work, env))
            for label, code in FLOORS.items():
                runs[label].append(cpu_of([sys.executable, "-c", code], work, {**env, "PYTHONPATH": str(REPO)}))
    print(f"{'run':<52} {'median CPU s':>12} {'min':>7} {'max':>7}")
    for label, values in runs.items():
        print(f"{label:<52} {statistics.median(values):>12.3f} {min(values):>7.3f} {max(values):>7.3f}")
    ratio = statistics.median(runs[LABELS[0]]) / statistics.median(runs[LABELS[1]])
    print(f"doit / ltsp initrd = {ratio:.2f} (goal ≤ 1.0), medians of {args.repeat} runs each, alternated")
    if "PYTHONDONTWRITEBYTECODE" in os.environ:
        print("(PYTHONDONTWRITEBYTECODE was removed for the measured runs: Python caches bytecode, as by default)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
