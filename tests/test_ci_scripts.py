"""The set-up script and the CI job: shellcheck-clean, and the README's Quick start is what .ci/run runs."""

from __future__ import annotations

import subprocess
from pathlib import Path

from tests.prereq import require_program

REPO = Path(__file__).resolve().parent.parent


def test_scripts_are_shellcheck_clean() -> None:
    proc = subprocess.run(
        [require_program("shellcheck"), "setup", ".ci/run"], cwd=REPO, capture_output=True, text=True, check=False
    )
    assert proc.returncode == 0, proc.stdout


def test_readme_quick_start_is_two_commands_starting_with_setup() -> None:
    # .ci/run extracts and runs exactly these lines; a README edit that breaks the form fails here first.
    proc = subprocess.run(
        ["bash", "-c", "source <(sed -n '/^readme_commands()/,/^}/p' .ci/run) && readme_commands"],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=True,
    )
    lines = proc.stdout.splitlines()
    assert len(lines) == 2, lines
    assert lines[0].startswith("./setup && ") and " doit" in lines[0]
    assert "pytest" in lines[1]
