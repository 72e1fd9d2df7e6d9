"""Session-wide test settings: where skips are reported, and hypothesis's profiles."""

from __future__ import annotations

import os
from collections.abc import Generator

import pytest
from hypothesis import settings

pytest_plugins = ["pytester"]  # tests/test_prereq.py runs pytest on a test of its own

# Under CI no test may pass or fail by the luck of a random draw: the same examples every run (a failure found
# locally is pinned as an explicit example once understood). Locally the draw stays random, to find new ones.
settings.register_profile("ci", derandomize=True, print_blob=True)
settings.register_profile("dev")
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci" if os.environ.get("CI") == "true" else "dev"))


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Generator[None, object, object]:
    """A skip raised inside a helper (tests/prereq.py, a fixture) is reported at the test that skipped, by name,
    so `pytest -rs` tells the skipped tests apart instead of listing one helper line for all of them."""
    report = yield
    assert isinstance(report, pytest.TestReport)
    if report.skipped and isinstance(report.longrepr, tuple) and not hasattr(report, "wasxfail"):
        path, line, _ = item.location
        reason = report.longrepr[2].removeprefix("Skipped: ")
        report.longrepr = (path, (line or 0) + 1, f"{item.name.partition('[')[0]}: {reason}")
    return report
