"""Whether the client root holds the programs its storage unit runs (mkfs.ext4, e2fsck, mkfs.xfs, blkid …).

Found at plan time, before anything is applied: a root without xfsprogs would otherwise boot every node into a
failed nfsroot-storage.service. Looked up without following a symlinked bin directory out of the target.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from pathlib import Path

from pipeline.errors import PipelineError

BIN_DIRS = ("usr/sbin", "usr/bin", "sbin", "bin")


def _has(root: Path, tool: str) -> bool:
    for d in BIN_DIRS:
        directory = root / d
        # A merged-/usr root has sbin -> usr/sbin; an absolute link would point at this machine's own /usr.
        if directory.is_symlink() or not directory.is_dir():
            continue
        if (directory / tool).is_symlink() or (directory / tool).is_file():
            return True
    return False


def missing_tools(root: Path, needed: Iterable[tuple[str, str, str]]) -> list[tuple[str, str, str]]:
    """The (field, tool, package) of `needed` that the root at `root` lacks."""
    return [(field, tool, package) for field, tool, package in needed if not _has(root, tool)]


def check_storage_tools(
    root: Path, client_root: str, needed: Iterable[tuple[str, str, str]], locate: Callable[[str], str] | None
) -> None:
    """Raise one error naming every missing program, the spec field that needs it and the package to install."""
    missing = missing_tools(root, needed)
    if not missing:
        return
    lines = []
    for field, tool, package in missing:
        where = locate("preset" if field.startswith("preset") else field) if locate else ""
        lines.append(f"{where}{field}: the client root {client_root} has no {tool}: install {package} in the root")
    raise PipelineError(
        "; ".join(lines) + " (nfsroot-storage.service runs them at boot: without them it fails on every node)"
    )
