"""The dnsmasq configuration in plan and apply: checked by `dnsmasq --test`, reloaded only when it changed."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from pipeline.cli import EXIT_CHANGES, EXIT_ERROR, EXIT_OK, main
from pipeline.errors import ExternalCommandError
from pipeline.render.dnsmasq import render_dnsmasq
from pipeline.state.apply import ApplyOptions
from pipeline.state.record import STATE_PATH
from pipeline.state.render import plan_from_json, plan_to_json, render_text
from tests.deploy_helpers import F, deploy, make_build, plan_for
from tests.prereq import require_program
from tests.spec_helpers import parse, spec_text

CONF = "/etc/dnsmasq.d/nfsroot.conf"
GOOD = render_dnsmasq(parse(spec_text(append=["dhcp: {range_start: 192.168.0.10, range_end: 192.168.0.20}"])))[0].data
BAD = GOOD.replace(b"255.255.255.0,12h\n", b"255.255.255.0,12x\n")


def _counter(tmp_path: Path) -> tuple[ApplyOptions, Path]:
    marker = tmp_path / "dnsmasq-reloads"
    argv = (sys.executable, "-c", "import sys; open(sys.argv[1], 'a').write('reload\\n')", str(marker))
    return ApplyOptions(reload_argv=None, service_reloads={"dnsmasq": argv}), marker


def _count(marker: Path) -> int:
    return len(marker.read_text().splitlines()) if marker.exists() else 0


def _build(tmp_path: Path, n: int, conf: bytes, hosts: str) -> Path:
    return make_build(tmp_path / f"b{n}", {CONF: F(conf, role="dnsmasq"), "/etc/nfsroot/hosts": hosts})


def test_reload_runs_exactly_when_the_configuration_changed(tmp_path: Path) -> None:
    opts, marker = _counter(tmp_path)
    target = tmp_path / "t"
    target.mkdir()
    deploy(_build(tmp_path, 1, GOOD, "a\n"), target, opts)
    assert _count(marker) == 1 and (target / CONF.lstrip("/")).read_bytes() == GOOD
    deploy(_build(tmp_path, 2, GOOD, "b\n"), target, opts)  # only the hosts file changed
    assert _count(marker) == 1
    deploy(_build(tmp_path, 3, GOOD + b"# more\n", "b\n"), target, opts)
    assert _count(marker) == 2
    deploy(_build(tmp_path, 3, GOOD + b"# more\n", "b\n"), target, opts)  # nothing changed
    assert _count(marker) == 2
    deploy(make_build(tmp_path / "b4", {"/etc/nfsroot/hosts": "b\n"}), target, opts)  # configuration removed
    assert _count(marker) == 3


def test_a_failed_reload_is_retried_by_the_next_apply(tmp_path: Path) -> None:
    target = tmp_path / "t"
    target.mkdir()
    build = _build(tmp_path, 1, GOOD, "a\n")
    failing = ApplyOptions(reload_argv=None, service_reloads={"dnsmasq": (sys.executable, "-c", "raise SystemExit(4)")})
    with pytest.raises(ExternalCommandError, match="exit code 4"):
        deploy(build, target, failing)
    plan = plan_for(build, target)
    assert (
        plan.reload_services == ("dnsmasq",)
        and not plan.reload_exports
        and [c.path for c in plan.changes] == [STATE_PATH]
    )
    assert plan_from_json(plan_to_json(plan), "saved.json").reload_services == ("dnsmasq",)  # a saved plan keeps it
    opts, marker = _counter(tmp_path)
    deploy(build, target, opts)
    assert _count(marker) == 1
    assert plan_for(build, target).changes == ()


def test_cli_plan_and_apply_check_the_configuration(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    require_program("dnsmasq")
    target = tmp_path / "t"
    target.mkdir()
    spec = str(tmp_path / "no-cluster.yaml")
    bad = _build(tmp_path, 1, BAD, "a\n")
    assert main(["-f", spec, "plan", "--build", str(bad), "--target", str(target)]) == EXIT_ERROR
    err = capsys.readouterr().err
    assert f"{CONF}: dnsmasq rejects the built configuration" in err and "bad dhcp-range" in err
    assert main(["-f", spec, "apply", "--build", str(bad), "--target", str(target), "--no-reload"]) == EXIT_ERROR
    assert not (target / CONF.lstrip("/")).exists()  # nothing written
    good = _build(tmp_path, 2, GOOD, "a\n")
    assert main(["-f", spec, "plan", "--build", str(good), "--target", str(target)]) == EXIT_CHANGES
    out = capsys.readouterr().out
    assert "The dnsmasq configuration changes: reloading is disabled (dhcp.reload: [])" in out
    assert main(["-f", spec, "apply", "--build", str(good), "--target", str(target), "--no-reload"]) == EXIT_OK
    assert (target / CONF.lstrip("/")).read_bytes() == GOOD


def test_plan_text_with_a_reload_command(tmp_path: Path) -> None:
    target = tmp_path / "t"
    target.mkdir()
    plan = plan_for(_build(tmp_path, 1, GOOD, "a\n"), target)
    text = render_text(plan, reload=None, service_reloads={"dnsmasq": ("systemctl", "restart", "dnsmasq")})
    assert "The dnsmasq configuration changes: apply will run `systemctl restart dnsmasq` afterwards." in text


def test_cli_apply_runs_the_specs_dhcp_reload(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    require_program("dnsmasq")
    marker = tmp_path / "reloaded"
    script = tmp_path / "reload-dnsmasq"
    script.write_text(f"#!/bin/sh\necho reload >> {marker}\n")
    script.chmod(0o755)
    spec = tmp_path / "cluster.yaml"
    dhcp = f"dhcp: {{range_start: 192.168.0.10, range_end: 192.168.0.20, reload: [{script}]}}"
    spec.write_text(spec_text(append=[dhcp]))
    target = tmp_path / "t"
    target.mkdir()
    build = _build(tmp_path, 1, GOOD, "a\n")
    args = ["-f", str(spec), "--build", str(build), "--target", str(target)]
    assert main(["-f", str(spec), "plan", *args[2:]]) == EXIT_CHANGES
    assert f"apply will run `{script}` afterwards" in capsys.readouterr().out
    assert main(["-f", str(spec), "apply", *args[2:], "--no-reload"]) == EXIT_OK  # --no-reload: neither runs
    assert not marker.exists()
    (target / CONF.lstrip("/")).unlink()
    assert main(["-f", str(spec), "apply", *args[2:]]) == EXIT_OK
    assert marker.read_text() == "reload\n"
    assert f"dnsmasq reloaded: {script}" in capsys.readouterr().out
