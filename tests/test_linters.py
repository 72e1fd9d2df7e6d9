"""ruff and mypy (strict) over the package and tests, as tests, so CI enforces them."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def test_ruff() -> None:
    proc = subprocess.run([sys.executable, "-m", "ruff", "check", "pipeline", "tests", "benchmarks"], cwd=REPO,
                          capture_output=True, text=True, check=False)  # fmt: skip
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_mypy_strict() -> None:
    proc = subprocess.run([sys.executable, "-m", "mypy"], cwd=REPO, capture_output=True, text=True, check=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_ruff_format() -> None:
    # CONTRIBUTING asks for `ruff format` clean code; only a test makes CI hold anyone to it.
    proc = subprocess.run([sys.executable, "-m", "ruff", "format", "--check", "pipeline", "tests", "benchmarks"],
                          cwd=REPO, capture_output=True, text=True, check=False)  # fmt: skip
    assert proc.returncode == 0, proc.stdout + proc.stderr
