"""Make a new generation ready before it goes live: the manifest's entries for the root share applied to it.

`apply` writes the symlinks, mount points, node skeleton and capability remedies into the root share
(`/clients/...`). For a built root those must land in the new generation *before* `/clients` points at it,
never in a live one: so the entries under the share are re-rooted to `/clients.generations/<key>/...` and
planned and applied there like any plan (atomic, originals kept). After the switch, the regular `apply`
finds them already right. The deployed-state record is left to that regular apply.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from pipeline.state.apply import ApplyOptions, apply_plan
from pipeline.state.capabilities import capability_changes
from pipeline.state.manifest import DirEntry, FileEntry, RootFileEntry, SymlinkEntry, load_desired
from pipeline.state.observe import observe_paths
from pipeline.state.plan import PlanOptions, make_plan, paths_to_observe
from pipeline.state.record import STATE_PATH, Record
from pipeline.state.rootfs import TargetRoot


def _rerooted(path: str, share: str, generation: str) -> str | None:
    if path == share or path.startswith(share + "/"):
        return generation + path[len(share) :]
    return None


def prepare_generation(build: Path, target: Path, share: str, generation: str, remedy: str = "none") -> int:
    """Apply the build's entries under `share` to the gateway path `generation`; returns how many changed."""
    desired = load_desired(build)
    entries: list[FileEntry | SymlinkEntry | DirEntry] = []
    for entry in desired.entries:
        path = _rerooted(entry.path, share, generation)
        if path is None or isinstance(entry, RootFileEntry):
            continue
        update: dict[str, str] = {"path": path}
        if isinstance(entry, SymlinkEntry) and entry.preserve:
            update["preserve"] = _rerooted(entry.preserve, share, generation) or entry.preserve
        entries.append(entry.model_copy(update=update))
    texts = {new: t for p, t in desired.texts.items() if (new := _rerooted(p, share, generation))}
    manifest = desired.manifest.model_copy(update={"entries": tuple(sorted(entries, key=lambda e: e.path))})
    sub = replace(desired, manifest=manifest, texts=texts, rewritten=frozenset())
    extra = capability_changes(target, generation, remedy)
    with TargetRoot(target) as root:
        observed = observe_paths(root, paths_to_observe(sub, Record()) | {c.path for c in extra})
    plan = make_plan(sub, observed, Record(), str(target.resolve()), PlanOptions(), extra)
    changes = tuple(c for c in plan.changes if c.path != STATE_PATH)
    apply_plan(replace(plan, changes=changes, journal="", reload_exports=False), target, build, ApplyOptions(None))
    return len(changes)
