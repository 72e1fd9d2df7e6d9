"""`doit boottest` on the shipped cluster.yaml, exactly as a user runs it: the seed's two nodes boot.

Slow (one parallel boot, about 25 s under TCG): marked `boot`. Missing prerequisites: skipped locally,
failed in CI.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from pipeline.boottest.prereqs import missing_prerequisites
from tests.prereq import need

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.boot
def test_doit_boottest_boots_the_seed_cluster(tmp_path: Path) -> None:
    missing = missing_prerequisites()
    need(not missing, "missing: " + "; ".join(missing))
    shutil.copy(REPO / "cluster.yaml", tmp_path / "cluster.yaml")
    env = {k: v for k, v in os.environ.items() if not k.startswith("NFSROOT_")}
    argv = [sys.executable, "-m", "doit", "run", "-f", str(REPO / "pipeline/tasks.py"), "-d", str(tmp_path)]
    proc = subprocess.run(
        [*argv, "--db-file", str(tmp_path / ".doit.db"), "boottest"],
        capture_output=True, text=True, env=env, timeout=600, check=False,
    )  # fmt: skip
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out
    assert "PASS 00:23:24:94:34:ae worker-node-0023249434ae" in out
    assert "PASS 44:8a:5b:dd:d8:ba worker-node-448a5bddd8ba" in out
    assert "2 passed, 0 failed" in out
    workers = tmp_path / "build" / "boottest" / "shares" / "workers"
    assert (workers / "0023249434ae" / "hostname").read_text() == "worker-node-0023249434ae\n"
    assert "worker-node-448a5bddd8ba" in (workers / "448a5bddd8ba" / "hosts").read_text()
    assert "BOOTIF=01-44-8a-5b-dd-d8-ba" in (workers / "448a5bddd8ba" / "cmdline").read_text()
