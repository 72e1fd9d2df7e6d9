"""Prerequisites of tests: a missing one skips the test locally, but fails it in CI, where .ci/run provides it."""

from __future__ import annotations

import os
import shutil

import pytest

IN_CI = os.environ.get("CI") == "true"


def need(ok: bool, reason: str) -> None:
    if not ok:
        if IN_CI:
            pytest.fail(f"prerequisite missing in CI: {reason}")
        pytest.skip(reason)


def require_program(name: str) -> str:
    """The program's path, also found in /usr/sbin and /sbin when PATH lacks them (mkinitramfs, setcap)."""
    found = shutil.which(name) or next(
        (p for d in ("/usr/sbin", "/sbin") if os.access(p := f"{d}/{name}", os.X_OK)), None
    )
    need(found is not None, f"{name} is not installed")
    assert found is not None
    return found
