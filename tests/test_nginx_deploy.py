"""The nginx server block in plan and apply, like dnsmasq's configuration (pipeline/state/services.py):
checked by `nginx -t` in plan, reloaded by apply only when it changed, an owed reload finished by the next apply."""

from __future__ import annotations

import os
import sys
import traceback
from pathlib import Path

import pytest

from pipeline.cli import EXIT_CHANGES, EXIT_ERROR, EXIT_OK, main
from pipeline.render.httpserver import render_httpserver
from pipeline.state import services
from pipeline.state.apply import CRASH_ENV, ApplyOptions
from pipeline.state.record import STATE_PATH, parse_record
from pipeline.state.render import plan_from_json, plan_to_json, render_text
from tests.deploy_helpers import F, deploy, make_build, plan_for
from tests.prereq import require_program
from tests.spec_helpers import parse, spec_text

CONF = "/etc/nginx/conf.d/nfsroot.conf"
IPXE_HTTP = spec_text(append=["firmware: {bios: ipxe, uefi: ipxe}"])
(_ARTIFACT,) = render_httpserver(parse(IPXE_HTTP))
GOOD = _ARTIFACT.data
BAD = GOOD.replace(b"autoindex off;", b"autoindex;")


def _counter(tmp_path: Path) -> tuple[ApplyOptions, Path]:
    marker = tmp_path / "nginx-reloads"
    argv = (sys.executable, "-c", "import sys; open(sys.argv[1], 'a').write(' '.join(sys.argv[1:]) + '\\n')")
    return ApplyOptions(reload_argv=None, service_reloads={"httpserver": (*argv, str(marker))}), marker


def _count(marker: Path) -> int:
    return len(marker.read_text().splitlines()) if marker.exists() else 0


def _build(tmp_path: Path, n: int, conf: bytes, hosts: str) -> Path:
    return make_build(tmp_path / f"b{n}", {CONF: F(conf, role="httpserver"), "/etc/nfsroot/hosts": hosts})


def test_reload_runs_exactly_when_the_server_block_changed(tmp_path: Path) -> None:
    opts, marker = _counter(tmp_path)
    target = tmp_path / "t"
    target.mkdir()
    deploy(_build(tmp_path, 1, GOOD, "a\n"), target, opts)
    assert _count(marker) == 1 and (target / CONF.lstrip("/")).read_bytes() == GOOD
    assert marker.read_text() == f"{marker}\n"  # the user's argv, as given
    deploy(_build(tmp_path, 2, GOOD, "b\n"), target, opts)  # only the hosts file changed
    assert _count(marker) == 1
    deploy(_build(tmp_path, 3, GOOD + b"# more\n", "b\n"), target, opts)
    assert _count(marker) == 2
    deploy(_build(tmp_path, 3, GOOD + b"# more\n", "b\n"), target, opts)  # nothing changed
    assert _count(marker) == 2
    deploy(make_build(tmp_path / "b4", {"/etc/nfsroot/hosts": "b\n"}), target, opts)  # server block removed
    assert _count(marker) == 3


def _run_killed(build: Path, target: Path, opts: ApplyOptions, steps: int) -> int:
    """Fork; the child applies with the crash hook set and dies after `steps` steps (status 137)."""
    pid = os.fork()
    if pid == 0:  # child: never return into pytest
        code = 0
        try:
            os.environ[CRASH_ENV] = str(steps)
            deploy(build, target, opts)
        except BaseException:
            traceback.print_exc()
            code = 3
        os._exit(code)
    _, status = os.waitpid(pid, 0)
    return os.waitstatus_to_exitcode(status)


def test_a_crash_between_write_and_reload_is_redone_by_the_next_apply(tmp_path: Path) -> None:
    """Killed after every step in turn: whenever the new server block is in place but nginx was not reloaded,
    the record owes the reload and the next apply runs it, once."""
    opts, marker = _counter(tmp_path)
    build = _build(tmp_path, 1, GOOD, "a\n")
    owed = 0
    for steps in range(1, 40):
        target = tmp_path / f"t{steps}"
        target.mkdir()
        marker.unlink(missing_ok=True)
        status = _run_killed(build, target, opts, steps)
        if status == 0:  # the whole apply took fewer steps: every crash point was tried
            break
        assert status == 137
        if (target / CONF.lstrip("/")).exists() and _count(marker) == 0:
            owed += 1
            record = parse_record((target / STATE_PATH.lstrip("/")).read_text())
            assert record.services_pending == ("httpserver",)
            plan = plan_for(build, target)
            assert plan.reload_services == ("httpserver",)
            assert plan_from_json(plan_to_json(plan), "saved.json").reload_services == ("httpserver",)
            deploy(build, target, opts)
            assert _count(marker) == 1
        else:  # killed before the write (reloaded now) or after the reload (the record still owes it: again)
            deploy(build, target, opts)
            assert _count(marker) >= 1
        assert plan_for(build, target).changes == ()
    else:
        pytest.fail("apply never completed within 40 steps")
    assert owed >= 1  # the window between write and reload was hit


def test_a_failed_reload_is_retried_by_the_next_apply(tmp_path: Path) -> None:
    target = tmp_path / "t"
    target.mkdir()
    build = _build(tmp_path, 1, GOOD, "a\n")
    failing = ApplyOptions(reload_argv=None, service_reloads={"httpserver": (sys.executable, "-c", "exit(4)")})
    with pytest.raises(Exception, match="exit code 4"):
        deploy(build, target, failing)
    plan = plan_for(build, target)
    assert plan.reload_services == ("httpserver",) and [c.path for c in plan.changes] == [STATE_PATH]
    opts, marker = _counter(tmp_path)
    deploy(build, target, opts)
    assert _count(marker) == 1 and plan_for(build, target).changes == ()


def test_plan_text_names_the_reload(tmp_path: Path) -> None:
    target = tmp_path / "t"
    target.mkdir()
    plan = plan_for(_build(tmp_path, 1, GOOD, "a\n"), target)
    text = render_text(plan, reload=None, service_reloads={"httpserver": ("systemctl", "reload", "nginx")})
    assert "The nginx server block changes: apply will run `systemctl reload nginx` afterwards." in text
    off = render_text(plan, reload=None)
    assert "The nginx server block changes: reloading is disabled (firmware.http.reload: []), reload nginx" in off


def _spec(tmp_path: Path, http: str) -> Path:
    spec = tmp_path / "cluster.yaml"
    spec.write_text(spec_text(append=[f"firmware: {{bios: ipxe, uefi: ipxe{http}}}"]))
    return spec


def test_cli_plan_refuses_a_server_block_nginx_rejects(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """nginx -t runs on a host that does not hold the gateway address (192.168.0.254), without /etc/nginx."""
    require_program("nginx")
    require_program("unshare")
    target = tmp_path / "t"
    target.mkdir()
    spec = str(_spec(tmp_path, ", http: {reload: []}"))
    bad = _build(tmp_path, 1, BAD, "a\n")
    assert main(["-f", spec, "plan", "--build", str(bad), "--target", str(target)]) == EXIT_ERROR
    err = capsys.readouterr().err
    assert f"{CONF}: nginx rejects the built configuration" in err
    assert 'invalid number of arguments in "autoindex" directive' in err  # nginx's own message
    assert main(["-f", spec, "apply", "--build", str(bad), "--target", str(target)]) == EXIT_ERROR
    assert not (target / CONF.lstrip("/")).exists()  # nothing written
    good = _build(tmp_path, 2, GOOD, "a\n")
    assert main(["-f", spec, "plan", "--build", str(good), "--target", str(target)]) == EXIT_CHANGES
    out = capsys.readouterr().out
    assert "warning" not in out  # checked, not skipped
    assert "The nginx server block changes: reloading is disabled (firmware.http.reload: [])" in out


def test_nginx_missing_is_a_warning_naming_nginx_light(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    (empty := tmp_path / "empty-path").mkdir()
    monkeypatch.setenv("PATH", str(empty))
    monkeypatch.setattr(services, "SBIN", ())
    target = tmp_path / "t"
    target.mkdir()
    spec = str(_spec(tmp_path, ", http: {reload: []}"))
    build = _build(tmp_path, 1, BAD, "a\n")  # not checked, so not refused
    assert main(["-f", spec, "plan", "--build", str(build), "--target", str(target)]) == EXIT_CHANGES
    out = capsys.readouterr().out
    assert (
        "warning: nginx is not installed here, so the nginx server block was not checked (apt-get install "
        "nginx-light)" in out
    )


def test_cli_apply_runs_the_specs_http_reload(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    require_program("nginx")
    require_program("unshare")
    marker = tmp_path / "reloaded"
    script = tmp_path / "reload-nginx"
    script.write_text(f'#!/bin/sh\necho reload "$@" >> {marker}\n')
    script.chmod(0o755)
    spec = _spec(tmp_path, f", http: {{reload: [{script}, --graceful]}}")
    target = tmp_path / "t"
    target.mkdir()
    build = _build(tmp_path, 1, GOOD, "a\n")
    args = ["--build", str(build), "--target", str(target)]
    assert main(["-f", str(spec), "plan", *args]) == EXIT_CHANGES
    assert f"apply will run `{script} --graceful` afterwards" in capsys.readouterr().out
    assert main(["-f", str(spec), "apply", *args, "--no-reload"]) == EXIT_OK  # --no-reload: nothing runs
    assert not marker.exists()
    (target / CONF.lstrip("/")).unlink()
    assert main(["-f", str(spec), "apply", *args]) == EXIT_OK
    assert marker.read_text() == "reload --graceful\n"
    assert f"nginx reloaded: {script} --graceful" in capsys.readouterr().out
    assert main(["-f", str(spec), "apply", *args]) == EXIT_OK  # unchanged: no reload
    assert marker.read_text() == "reload --graceful\n"


def test_the_default_reload_is_systemctl_reload_nginx() -> None:
    assert parse(IPXE_HTTP).firmware.http.reload == ("systemctl", "reload", "nginx")


@pytest.mark.parametrize("build_name", ["b", "b[1]*?"])
def test_check_accepts_the_block_wherever_the_build_is(tmp_path: Path, build_name: str) -> None:
    """nginx reads `include` with *?[ as a glob; a build directory named so is still checked, and can fail."""
    require_program("nginx")
    require_program("unshare")
    (tmp_path / "t").mkdir()
    for block, ok in ((GOOD, True), (BAD, False)):
        build = make_build(tmp_path / build_name, {CONF: F(block, role="httpserver")})
        plan = plan_for(build, tmp_path / "t")
        if ok:
            assert services.check_services(plan, build) == plan  # no warning: really checked
        else:
            with pytest.raises(services.ServiceConfigError, match='arguments in "autoindex" directive'):
                services.check_services(plan, build)


def test_switching_to_tftp_removes_the_block_and_reloads_nginx(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    require_program("nginx")
    require_program("unshare")
    marker = tmp_path / "reloaded"
    script = tmp_path / "reload-nginx"
    script.write_text(f"#!/bin/sh\necho reload >> {marker}\n")
    script.chmod(0o755)
    target = tmp_path / "t"
    target.mkdir()
    spec = _spec(tmp_path, f", http: {{reload: [{script}]}}")
    assert (
        main(["-f", str(spec), "apply", "--build", str(_build(tmp_path, 1, GOOD, "a\n")), "--target", str(target)])
        == EXIT_OK
    )
    spec = _spec(tmp_path, f", transport: tftp, http: {{reload: [{script}]}}")
    tftp = make_build(tmp_path / "b2", {"/etc/nfsroot/hosts": "a\n"})
    assert main(["-f", str(spec), "apply", "--build", str(tftp), "--target", str(target)]) == EXIT_OK
    assert not (target / CONF.lstrip("/")).exists()
    assert marker.read_text() == "reload\nreload\n"  # nginx no longer serves the removed block
