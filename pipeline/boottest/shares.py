"""Put the build's share entries (build/manifest.json) into the directories the test NFS server exports.

On a real gateway `apply` creates, under the exported shares, the mount points, the shared writable
directories and the symlinks of the read-only root (moving the file a symlink replaces to its `preserve`
path, the skeleton the boot script seeds from). Doing the same here means the nodes boot what the manifest
describes, not the harness's idea of it. Only entries under a share are applied, each confined to it.
"""

from __future__ import annotations

import json
import os
import posixpath
import shutil
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from pipeline.boottest.errors import BootTestError


def _local(shares: Mapping[str, Path], path: str) -> tuple[Path, Path] | None:
    """(share directory, host path) of gateway `path` when it is inside one of `shares` (longest match)."""
    best: str | None = None
    for share in shares:
        prefix = share.rstrip("/")
        if (path == share or path.startswith(prefix + "/")) and (best is None or len(share) > len(best)):
            best = share
    if best is None:
        return None
    rel = posixpath.relpath(posixpath.normpath(path), best)
    if rel == ".":
        return shares[best], shares[best]
    if rel.startswith("..") or posixpath.isabs(rel):
        raise BootTestError(f"manifest entry {path} escapes its share {best}")
    return shares[best], shares[best] / rel


def _mkdirs(root_of: Path, path: Path) -> None:
    path.mkdir(parents=True, exist_ok=True)
    if path.is_symlink() or not path.resolve().is_relative_to(root_of.resolve()):
        raise BootTestError(f"{path} leaves {root_of}")


def apply_share_entries(manifest: Path, build: Path, shares: Mapping[str, Path]) -> list[str]:
    """Apply the manifest's dir, symlink and file entries that lie under `shares`; returns their paths."""
    try:
        data: dict[str, Any] = json.loads(manifest.read_text())
    except (OSError, ValueError) as exc:
        raise BootTestError(f"cannot read {manifest}: {exc}") from exc
    applied: list[str] = []
    for entry in sorted(data.get("entries", []), key=lambda e: e["path"]):
        located = _local(shares, entry["path"])
        if located is None:
            continue
        share_root, dest = located
        kind = entry["kind"]
        if kind == "dir":
            _mkdirs(share_root, dest)
        elif kind == "symlink":
            _mkdirs(share_root, dest.parent)
            if dest.is_symlink():
                dest.unlink()
            elif dest.exists():
                kept = _local(shares, entry["preserve"]) if entry.get("preserve") else None
                if kept is None or dest.is_dir():
                    raise BootTestError(f"{entry['path']} exists and has no preserve path")
                _mkdirs(kept[0], kept[1].parent)
                os.replace(dest, kept[1])
            dest.symlink_to(entry["target"])
        elif kind == "file":
            _mkdirs(share_root, dest.parent)
            shutil.copyfile(build / entry["staged"], dest)
            os.chmod(dest, int(entry["mode"], 8))
        else:
            raise BootTestError(f"manifest entry {entry['path']}: unknown kind {kind!r}")
        applied.append(entry["path"])
    return applied
