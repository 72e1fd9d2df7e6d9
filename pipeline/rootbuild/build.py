"""Run mmdebstrap for the spec's `rootfs`, into `build/rootfs/rootfs-<key>.tar`, once per key.

The key (recipe.cache_key) covers the section, the users hook, the epoch and mmdebstrap's version, so a
second run with the same inputs costs nothing, and any change builds a new tarball next to the old one.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

from pipeline.fsutil import write_atomic
from pipeline.rootbuild.recipe import HOOK_NAME, cache_key, mmdebstrap_argv, tarball_name, users_script
from pipeline.run import run
from pipeline.spec.rootfs import RootBuild

# Used when SOURCE_DATE_EPOCH is unset. Not 0: shadow writes the epoch's day as the password's last change,
# and day 0 means "must change the password at the next login".
DEFAULT_EPOCH = 1704067200  # 2024-01-01T00:00:00Z


def root_epoch() -> int:
    value = os.environ.get("SOURCE_DATE_EPOCH", "")
    return int(value) if value.isascii() and value.isdigit() and int(value) > 0 else DEFAULT_EPOCH


def mmdebstrap_version() -> str:
    return run(["mmdebstrap", "--version"]).stdout.decode().strip()


def build_root(build: RootBuild, out_dir: Path, timeout: float = 3600) -> tuple[Path, bool]:
    """The tarball of the root (built now, or earlier with the same key) and whether it was built now."""
    epoch = root_epoch()
    key = cache_key(build, epoch, mmdebstrap_version())
    out = out_dir / tarball_name(key)
    if out.is_file():
        return out, False
    out_dir.mkdir(parents=True, exist_ok=True)
    hook = out_dir / f".{key}.{HOOK_NAME}"
    partial = out_dir / f".{key}.tar.partial"
    write_atomic(hook, users_script(build))
    env = {**os.environ, "SOURCE_DATE_EPOCH": str(epoch)}
    try:
        run(mmdebstrap_argv(build, str(hook), str(partial)), env=env, timeout=timeout)
        os.replace(partial, out)  # complete or absent: a killed build leaves no tarball under the final name
    finally:
        for leftover in (hook, partial):
            with contextlib.suppress(FileNotFoundError):
                leftover.unlink()
    return out, True
