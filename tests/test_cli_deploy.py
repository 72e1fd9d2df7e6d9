"""The deploy CLI: numbers in the spec's ranges (issue 12 defect 10), the reload it will really run and
NFSROOT_SPEC / NFSROOT_BUILD (issue 13 papercuts)."""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest

from pipeline.cli import EXIT_CHANGES, EXIT_OK, EXIT_USAGE, main
from tests.deploy_helpers import F, deploy, make_build

CLUSTER_YAML = Path(__file__).resolve().parents[1] / "cluster.yaml"


def _generation(tmp_path: Path, n: int) -> Path:
    return make_build(
        tmp_path / f"build{n}",
        {
            f"/srv/tftp/nfsroot/initrd-{n}.img": F(f"initrd {n}\n", role="initrd"),
            "/srv/tftp/pxelinux.cfg/default": F(f"LABEL x\n  INITRD nfsroot/initrd-{n}.img\n", role="pxelinux"),
        },
    )


@pytest.mark.parametrize(
    ("command", "flag", "value"),
    [
        ("apply", "--keep-initrds", "-1"),
        ("apply", "--keep-initrds", "0"),
        ("plan", "--keep-initrds", "101"),
        ("plan", "--keep-initrds", "two"),
        ("plan", "--keep-initrds", "\u0661\u0662"),  # Arabic-Indic 12: int() takes it, the spec does not
        ("rollback", "--steps", "-1"),
        ("rollback", "--steps", "0"),
        ("rollback", "--steps", "1e3"),
    ],
)
def test_numbers_out_of_the_spec_range_are_refused_before_anything_runs(
    tmp_path: Path, command: str, flag: str, value: str, capsys: pytest.CaptureFixture[str]
) -> None:
    target = tmp_path / "t"
    target.mkdir()
    for n in (1, 2, 3):
        deploy(_generation(tmp_path, n), target)
    before = (target / "srv/tftp/pxelinux.cfg/default").read_text()
    kept = sorted(os.listdir(target / "srv/tftp/nfsroot"))
    args = ["-f", str(tmp_path / "none.yaml"), command, "--target", str(target), "--build", str(tmp_path / "build3")]
    with pytest.raises(SystemExit) as exit_info:
        main([*args, f"{flag}={value}", *(["--no-reload"] if command == "apply" else [])])
    assert exit_info.value.code == EXIT_USAGE  # not 2, which `plan` uses for "changes pending"
    err = capsys.readouterr().err
    lo, hi = (1, 100)
    assert f"{flag}: must be a whole number from {lo} to {hi}" in err and repr(value) in err
    assert (target / "srv/tftp/pxelinux.cfg/default").read_text() == before
    assert sorted(os.listdir(target / "srv/tftp/nfsroot")) == kept


def _spec_with_reload(tmp_path: Path, reload: str) -> Path:
    spec = tmp_path / "cluster.yaml"
    text, n = re.subn(r"(?m)^  reload: .*$", f"  reload: {reload}", CLUSTER_YAML.read_text())
    assert n == 1
    spec.write_text(text)
    return spec


@pytest.mark.parametrize(
    ("reload", "shown"),
    [
        ("[]", "reloading is disabled"),
        ("[systemctl, reload, nfs-server]", "apply will run `systemctl reload nfs-server` afterwards"),
    ],
)
def test_apply_says_which_reload_it_will_really_run(
    tmp_path: Path, reload: str, shown: str, capsys: pytest.CaptureFixture[str]
) -> None:
    spec = _spec_with_reload(tmp_path, reload)
    build = make_build(tmp_path / "build", {"/etc/exports": F("/clients *(ro)\n", role="exports")})
    target = tmp_path / "t"
    target.mkdir()
    common = ["-f", str(spec), "--build", str(build), "--target", str(target)]
    assert main([common[0], common[1], "plan", *common[2:]]) == EXIT_CHANGES
    assert shown in capsys.readouterr().out
    assert main([common[0], common[1], "apply", *common[2:], "--no-reload"]) == EXIT_OK
    out = capsys.readouterr().out
    assert "exportfs -ra" not in out
    assert "reloading is disabled" in out


def test_nfsroot_honours_nfsroot_spec_and_nfsroot_build(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    spec = _spec_with_reload(tmp_path, "[]")
    build = make_build(tmp_path / "elsewhere", {"/etc/hosts": "x\n"})
    target = tmp_path / "t"
    target.mkdir()
    monkeypatch.chdir(tmp_path / "t")  # neither cluster.yaml nor build/ here
    monkeypatch.setenv("NFSROOT_SPEC", str(spec))
    monkeypatch.setenv("NFSROOT_BUILD", str(build))
    assert main(["plan", "--target", str(target)]) == EXIT_CHANGES
    out = capsys.readouterr().out
    assert "+ create   /etc/hosts" in out
    assert 'cluster "homelab"' in out
    monkeypatch.delenv("NFSROOT_BUILD")
    assert main(["plan", "--target", str(target)]) == 1
    assert "build/manifest.json" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("flag", "value", "lo", "hi"),
    [
        ("--timeout", "-1", 10, 86400),
        ("--timeout", "0", 10, 86400),
        ("--timeout", "nan", 10, 86400),
        ("--memory", "0", 256, 65536),
        ("--memory", "-768", 256, 65536),
        ("--memory", "\u0667\u0666\u0668", 256, 65536),  # Arabic-Indic 768
    ],
)
def test_boottest_numbers_are_range_checked_before_anything_boots(
    tmp_path: Path, flag: str, value: str, lo: int, hi: int, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["-f", str(tmp_path / "none.yaml"), "boottest", f"{flag}={value}"])
    assert exit_info.value.code == EXIT_USAGE
    err = capsys.readouterr().err
    assert f"{flag}: must be a whole number from {lo} to {hi}" in err and repr(value) in err


def test_keep_initrds_without_a_spec_defaults_to_the_spec_default(tmp_path: Path) -> None:
    from pipeline.cli import build_parser
    from pipeline.cli.deploy import settings
    from pipeline.spec.model import Deploy

    args = build_parser().parse_args(
        ["-f", str(tmp_path / "none.yaml"), "plan", "--target", str(tmp_path / "t"), "--build", str(tmp_path / "b")]
    )
    assert settings(args).keep_initrds == Deploy.model_fields["keep_initrds"].default == 3
