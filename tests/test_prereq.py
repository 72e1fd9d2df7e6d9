"""Missing prerequisites: reported at the skipped test with the Debian package to install; CI is deterministic."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from tests.prereq import PACKAGES

REPO = Path(__file__).resolve().parent.parent
INNER = """
from tests.prereq import require_program

def helper():
    require_program("xz")
    return require_program("nfsroot-no-such-program")

def test_first():
    helper()

def test_second():
    helper()
"""


def run_inner(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch, ci: bool) -> pytest.RunResult:
    pytester.makeconftest((REPO / "tests" / "conftest.py").read_text())
    pytester.makepyfile(test_inner=INNER)
    monkeypatch.setenv("PYTHONPATH", str(REPO))
    monkeypatch.delenv("HYPOTHESIS_PROFILE", raising=False)
    if ci:
        monkeypatch.setenv("CI", "true")
    else:
        monkeypatch.delenv("CI", raising=False)
    return pytester.runpytest_subprocess("-rs", "-p", "no:cacheprovider")


def test_skips_name_the_test_and_where_it_is(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> None:
    result = run_inner(pytester, monkeypatch, ci=False)
    result.assert_outcomes(skipped=2)
    lines = [line for line in result.outlines if line.startswith("SKIPPED")]
    assert lines == [
        "SKIPPED [1] test_inner.py:7: test_first: nfsroot-no-such-program is not installed"
        " (its Debian package is not in tests/prereq.py's list)",
        "SKIPPED [1] test_inner.py:10: test_second: nfsroot-no-such-program is not installed"
        " (its Debian package is not in tests/prereq.py's list)",
    ]


def test_in_ci_a_missing_prerequisite_fails(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> None:
    result = run_inner(pytester, monkeypatch, ci=True)
    result.assert_outcomes(failed=2)
    result.stdout.fnmatch_lines(["*prerequisite missing in CI: nfsroot-no-such-program is not installed*"])


def test_every_program_tests_ask_for_has_a_package_ci_installs() -> None:
    asked = set()
    for path in (REPO / "tests").rglob("*.py"):
        if path.name == "test_prereq.py":  # its inner test asks for a program that does not exist
            continue
        asked |= set(re.findall(r"\brequire(?:_program|_tool)?\(\"([^\"]+)\"\)", path.read_text()))
    asked |= {"dash", "busybox", "/usr/lib/klibc/bin/sh", "zstd", "xz", "gzip"}  # through SHELLS and loops
    assert asked <= set(PACKAGES), sorted(asked - set(PACKAGES))
    listed = {re.sub(r"#.*", "", line).strip() for line in (REPO / ".ci/apt-packages").read_text().splitlines()}
    assert set(PACKAGES.values()) <= listed, sorted(set(PACKAGES.values()) - listed)


def test_hypothesis_is_derandomized_under_ci(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> None:
    pytester.makeconftest((REPO / "tests" / "conftest.py").read_text())
    pytester.makepyfile(
        test_profile="""
from hypothesis import settings

def test_profile():
    print("derandomize", settings.default.derandomize)
"""
    )
    for ci, expected in ((True, "derandomize True"), (False, "derandomize False")):
        if ci:
            monkeypatch.setenv("CI", "true")
        else:
            monkeypatch.delenv("CI", raising=False)
        monkeypatch.delenv("HYPOTHESIS_PROFILE", raising=False)
        result = pytester.runpytest_subprocess("-s", "-p", "no:cacheprovider")
        result.stdout.fnmatch_lines([f"*{expected}*"])
