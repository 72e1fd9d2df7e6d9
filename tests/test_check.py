"""`doit check`: the committed generated/ copy and the schema must match a fresh render of cluster.yaml."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from tests.spec_helpers import spec_text

REPO = Path(__file__).resolve().parents[1]


def _doit(workdir: Path, *tasks: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("NFSROOT_")}
    argv = [sys.executable, "-m", "doit", "run", "-f", str(REPO / "pipeline/tasks.py"), "-d", str(workdir)]
    return subprocess.run(
        [*argv, "--db-file", str(workdir / ".doit.db"), *tasks], capture_output=True, text=True, env=env, check=False
    )


def test_check_passes_after_doit_and_fails_when_stale(tmp_path: Path) -> None:
    (tmp_path / "cluster.yaml").write_text(spec_text())
    assert _doit(tmp_path).returncode == 0
    ok = _doit(tmp_path, "check")
    assert ok.returncode == 0, ok.stdout + ok.stderr
    assert "generated/ and schema/cluster.schema.json are up to date" in ok.stdout + ok.stderr

    (tmp_path / "cluster.yaml").write_text(spec_text({19: "  cmdline: [nfsrootdebug, quiet]"}))
    stale = _doit(tmp_path, "check")
    assert stale.returncode != 0
    out = stale.stdout + stale.stderr
    assert "gateway/srv/tftp/pxelinux.cfg/default: stale" in out
    assert "+APPEND root=/dev/nfs nfsroot=192.168.0.254:/clients,ro ip=dhcp nfsrootdebug quiet" in out

    assert _doit(tmp_path).returncode == 0  # doit refreshes generated/
    (tmp_path / "generated" / "review" / "extra.txt").write_text("x")
    extra = _doit(tmp_path, "check")
    assert "review/extra.txt: committed but no longer generated" in extra.stdout + extra.stderr


def test_committed_outputs_of_this_repository_are_fresh() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "doit", "check"], cwd=REPO, capture_output=True, text=True, check=False
    )
    assert proc.returncode == 0, "run `doit` and commit generated/ and schema/:\n" + proc.stdout + proc.stderr
