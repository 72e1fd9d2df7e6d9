"""`nfsroot validate`: what it prints and how it exits."""

from __future__ import annotations

from pathlib import Path

import pytest

from pipeline.cli import EXIT_ERROR, EXIT_OK, main
from tests.spec_helpers import spec_text


def _spec(tmp_path: Path, text: str) -> str:
    path = tmp_path / "cluster.yaml"
    path.write_text(text)
    return str(path)


def test_strict_failure_says_it_failed_because_of_strict(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = _spec(tmp_path, spec_text({20: "  sysappend: [ip]"}))  # valid, with one warning: no bootif
    assert main(["-f", path, "validate"]) == EXIT_OK
    capsys.readouterr()
    assert main(["-f", path, "validate", "--strict"]) == EXIT_ERROR
    out, err = capsys.readouterr()
    assert out == ""
    assert err.splitlines() == [
        f"warning: {path}:20:14: boot.sysappend: without bootif the boot script must guess the MAC from the "
        "interface (add bootif (pxelinux SYSAPPEND 2))",
        f"{path}: validation failed because of --strict: 1 warning counts as an error "
        "(fix it, or run without --strict to accept it)",
    ]


def test_valid_spec_passes_strict(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = _spec(tmp_path, spec_text())
    assert main(["-f", path, "validate", "--strict"]) == EXIT_OK
    assert capsys.readouterr().out == f"{path}: cluster 'homelab' is valid (2 shares, 2 known nodes)\n"
