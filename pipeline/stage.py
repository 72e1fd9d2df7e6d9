"""Writing rendered outputs into build/: the staged gateway tree, manifest fragments, manifest, generated/.

Each family's task writes its files and a fragment listing its manifest entries; files a family staged
before and no longer produces are removed, so build/ never serves a stale file.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from pipeline.errors import PipelineError
from pipeline.fsutil import write_if_changed
from pipeline.render.artifact import Artifact, ReviewDoc
from pipeline.seal import Record, write_seal
from pipeline.workspace import Workspace

MANIFEST_FORMAT = 1


def _dump(data: Any) -> bytes:
    return (json.dumps(data, indent=1, sort_keys=True) + "\n").encode()


def _relative(ws: Workspace, path: Path) -> str:
    return path.relative_to(ws.build).as_posix()


def stage_family(
    ws: Workspace,
    family: str,
    artifacts: Iterable[Artifact],
    reviews: Iterable[ReviewDoc] = (),
    extra_entries: Iterable[dict[str, Any]] = (),
    extra: dict[str, Any] | None = None,
    inputs: Record | None = None,
) -> None:
    """Stage a family's files and its fragment, and seal them with the inputs as they were read."""
    entries: list[dict[str, Any]] = list(extra_entries)
    written: list[str] = [str(e["staged"]) for e in entries if e.get("staged")]
    for artifact in artifacts:
        staged = None
        if artifact.kind == "file":
            target = ws.staged(artifact.path)
            write_if_changed(target, artifact.data, artifact.mode)
            staged = _relative(ws, target)
            written.append(staged)
        entries.append(artifact.manifest_entry(staged))
    for doc in reviews:
        target = ws.review / doc.name
        write_if_changed(target, doc.data)
        written.append(_relative(ws, target))
    fragment_path = ws.fragment(family)
    _remove_stale(ws, family, set(written))
    fragment = {"family": family, "entries": sorted(entries, key=lambda e: str(e["path"])), "files": sorted(written)}
    fragment |= extra or {}
    write_if_changed(fragment_path, _dump(fragment))
    write_seal(ws.seal(f"render.{family}"), [*(ws.build / name for name in sorted(written)), fragment_path], inputs)


def _files_of(ws: Workspace, family: str) -> list[str]:
    try:
        files = json.loads(ws.fragment(family).read_bytes()).get("files", [])
    except (OSError, ValueError, AttributeError):
        return []
    return [str(name) for name in files] if isinstance(files, list) else []


def _remove_stale(ws: Workspace, family: str, keep: set[str]) -> None:
    """Remove what this family staged before and no longer produces, unless another family now stages it
    (two families may swap an output path; the one that runs second must not delete the other's file)."""
    others = [p.stem for p in ws.parts.glob("*.json") if p.stem != family]
    claimed = {name for other in others for name in _files_of(ws, other)}
    for name in _files_of(ws, family):
        if name not in keep and name not in claimed and ".." not in Path(name).parts:
            with contextlib.suppress(FileNotFoundError):
                (ws.build / name).unlink()


def read_fragment(ws: Workspace, family: str) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(ws.fragment(family).read_bytes())
    return data


def merge_manifest(ws: Workspace, cluster_name: str, families: Iterable[str]) -> None:
    """Merge the fragments into build/manifest.json; two families may only agree on a path, never disagree."""
    merged: dict[str, tuple[str, dict[str, Any]]] = {}
    for family in families:
        for entry in read_fragment(ws, family)["entries"]:
            path = entry["path"]
            if path in merged:
                other_family, other = merged[path]
                if other["kind"] != entry["kind"] or (entry["kind"] != "dir" and other != entry):
                    raise PipelineError(
                        f"{path} is produced by both {other_family} and {family} with different content"
                    )
                if entry["kind"] == "dir":
                    other["fields"] = sorted(set(other["fields"]) | set(entry["fields"]))
                continue
            merged[path] = (family, dict(entry))
    manifest = {
        "format": MANIFEST_FORMAT,
        "cluster": cluster_name,
        "entries": [merged[path][1] for path in sorted(merged)],
    }
    write_if_changed(ws.manifest, _dump(manifest))
    write_seal(ws.seal("manifest"), [ws.manifest])


def sync_tree(root: Path, files: dict[str, bytes]) -> list[str]:
    """Make `root` hold exactly `files` (relative path → bytes); returns the paths it changed."""
    changed = []
    for rel, data in sorted(files.items()):
        if write_if_changed(root / rel, data):
            changed.append(rel)
    if root.exists():
        for path in sorted(root.rglob("*"), reverse=True):
            rel = path.relative_to(root).as_posix()
            if path.is_file() and rel not in files:
                path.unlink()
                changed.append(rel)
            elif path.is_dir() and not any(path.iterdir()):
                path.rmdir()
    return changed
