"""`nfsroot boottest --root`: the parts that need no VM (the user picked for the checks, systemd's verdict)."""

from __future__ import annotations

from pathlib import Path

import pytest

from pipeline.boottest.errors import BootTestError
from pipeline.boottest.realroot import first_user, read_verdict, run_root_boottest, systemd_checks
from pipeline.boottest.verdictunit import render_script
from pipeline.spec.load import load_cluster

REPO = Path(__file__).resolve().parents[1]


def test_first_ordinary_user_of_the_root(tmp_path: Path) -> None:
    (tmp_path / "etc").mkdir()
    (tmp_path / "etc/passwd").write_text(
        "root:x:0:0:root:/root:/bin/bash\nsystemd-timesync:x:997:997::/:/usr/sbin/nologin\n"
        "user:x:1000:1000::/home/user:/bin/bash\nnobody:x:65534:65534::/nonexistent:/usr/sbin/nologin\n"
    )
    assert first_user(tmp_path) == "user"
    assert first_user(tmp_path / "missing") == "nobody"


def test_systemd_judges(tmp_path: Path) -> None:
    verdict = tmp_path / "boottest-verdict"
    verdict.write_text("nfsroot-boottest: state=running\nnfsroot-boottest: failed= \n")
    assert all(c.ok for c in systemd_checks(read_verdict(verdict)))
    verdict.write_text("nfsroot-boottest: state=degraded\nnfsroot-boottest: failed=systemd-timesyncd.service \n")
    bad = [c for c in systemd_checks(read_verdict(verdict)) if not c.ok]
    assert [c.name for c in bad] == ["systemctl is-system-running", "failed units"]
    assert "systemd-timesyncd.service" in bad[0].detail
    assert not any(c.ok for c in systemd_checks(read_verdict(tmp_path / "none")))


def test_a_directory_that_is_no_root_is_refused_before_anything_runs(tmp_path: Path) -> None:
    cluster, _ = load_cluster(REPO / "cluster.yaml")
    with pytest.raises(BootTestError, match="does not look like a root"):
        run_root_boottest(tmp_path / "build", cluster, tmp_path)


def test_the_verdict_script_quotes_what_it_is_given() -> None:
    script = render_script("/var/local", ["/var/local", "/home"], {"/etc/hostname": "/var/local/hostname"}, "a'b")
    assert "U='a'\"'\"'b'" in script
    assert "out=/var/local/boottest-verdict" in script
