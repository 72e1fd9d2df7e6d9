"""What `doit` shows the user (issue 13 papercuts): a spec error reads exactly as `nfsroot validate` prints it,
`doit clean` says what it removed, and `doit plan`'s exit status is the documented one."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.spec_helpers import spec_text

REPO = Path(__file__).resolve().parents[1]
ENV = {k: v for k, v in os.environ.items() if not k.startswith("NFSROOT_")}


def _doit(workdir: Path, *args: str) -> subprocess.CompletedProcess[str]:
    command, rest = (args[0], args[1:]) if args and args[0] in ("clean", "list") else ("run", args)
    argv = [sys.executable, "-m", "doit", command, "-f", str(REPO / "pipeline/tasks.py"), "-d", str(workdir)]
    return subprocess.run(
        [*argv, "--db-file", str(workdir / ".doit.db"), *rest], capture_output=True, text=True, env=ENV, check=False
    )


def _nfsroot(workdir: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "pipeline", *args], cwd=workdir, capture_output=True, text=True, env=ENV, check=False
    )


@pytest.fixture
def workdir(tmp_path: Path) -> Path:
    (tmp_path / "cluster.yaml").write_text(spec_text())
    return tmp_path


@pytest.mark.parametrize(
    "edit",
    [{3: "  address: 10.0.0.1"}, {3: "  address: 10.0.0.1", 4: "  network: 300.0.0.0/24", 9: "root: {share: nope}"}],
    ids=["one-problem", "several-problems"],
)
def test_a_spec_error_under_doit_reads_as_the_console_script_prints_it(workdir: Path, edit: dict[int, str]) -> None:
    (workdir / "cluster.yaml").write_text(spec_text(edit))
    cli = _nfsroot(workdir, "validate")
    assert cli.returncode == 1 and cli.stderr.endswith("found; nothing was written\n"), cli.stderr
    doit = _doit(workdir)
    assert doit.returncode == 1
    assert doit.stderr == cli.stderr
    assert doit.stdout == ".  spec\n"  # no "TaskFailed - taskid:spec", no empty "spec <stdout>:" block


def test_doit_clean_says_what_it_removed(workdir: Path) -> None:
    assert _doit(workdir).returncode == 0
    dry = _doit(workdir, "clean", "--dry-run")
    assert dry.stdout == "would remove build/\n" and (workdir / "build").is_dir()
    proc = _doit(workdir, "clean")
    assert proc.returncode == 0
    assert proc.stdout == "removed build/\n", proc.stdout
    assert "executing" not in proc.stdout + proc.stderr
    assert not (workdir / "build").exists()
    again = _doit(workdir, "clean")
    assert again.returncode == 0 and again.stdout == ""


def test_doit_plan_exits_0_with_pending_changes_as_documented(workdir: Path) -> None:
    assert _doit(workdir).returncode == 0
    # plan resolves the nodes' kernel in the target root (gateway/clients): give it one.
    version = "6.1.0-21-amd64"
    boot = workdir / "gateway/clients/boot"
    boot.mkdir(parents=True)
    (boot / f"vmlinuz-{version}").write_bytes(b"kernel")
    (boot / f"initrd.img-{version}").write_bytes(b"initrd")
    (workdir / f"gateway/clients/lib/modules/{version}").mkdir(parents=True)
    doit = _doit(workdir, "plan")
    assert doit.returncode == 0, doit.stdout + doit.stderr
    cli = _nfsroot(workdir, "plan")
    assert cli.returncode == 2, cli.stdout + cli.stderr
    listing = _doit(workdir, "list")
    assert "(exits 0; `nfsroot plan` exits 2 on changes)" in listing.stdout


@pytest.mark.parametrize("epoch", ["²", "-1", "1e9", "4294967296"])
def test_a_malformed_source_date_epoch_is_an_error_not_a_crash_or_a_silent_zero(workdir: Path, epoch: str) -> None:
    env = {**ENV, "SOURCE_DATE_EPOCH": epoch}
    argv = [sys.executable, "-m", "doit", "run", "-f", str(REPO / "pipeline/tasks.py"), "-d", str(workdir)]
    doit = subprocess.run(
        [*argv, "--db-file", str(workdir / ".doit.db")], capture_output=True, text=True, env=env, check=False
    )
    assert doit.returncode == 1
    assert "SOURCE_DATE_EPOCH=" in doit.stderr and "is not a number of seconds" in doit.stderr, doit.stderr
    assert "Traceback" not in doit.stdout + doit.stderr
    assert not (workdir / "build/gateway/srv/tftp").exists() or not any(
        p.name.startswith("nfsroot-") for p in (workdir / "build/gateway/srv/tftp").iterdir()
    )
