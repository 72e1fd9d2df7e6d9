"""Fixture trees for the plan/apply tests: `{path: content}` -> a staged build (manifest + files) or a target."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import stat
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from pipeline.state.apply import ApplyOptions, ApplyResult
from pipeline.state.changes import Change, Plan
from pipeline.state.deploy import DEFAULT_PLAN_OPTIONS, apply_target, plan_target
from pipeline.state.plan import PlanOptions
from pipeline.state.record import STATE_PATH, Record, parse_record
from tests.prereq import require_program


@dataclass(frozen=True)
class F:
    content: str | bytes
    mode: str = "0644"
    role: str = "file"
    fields: tuple[str, ...] = ()


@dataclass(frozen=True)
class L:
    target: str
    preserve: str | None = None
    role: str = "symlink"
    fields: tuple[str, ...] = ()


@dataclass(frozen=True)
class D:
    mode: str = "0755"
    role: str = "share-dir"
    fields: tuple[str, ...] = field(default_factory=tuple)


Spec = str | bytes | F | L | D


def _as_bytes(content: str | bytes) -> bytes:
    return content.encode() if isinstance(content, str) else content


def make_build(build: Path, tree: Mapping[str, Spec], cluster: str = "homelab") -> Path:
    """Stage `tree` (gateway path -> content) into build/ with a manifest.json, as the doit tasks would."""
    if build.exists():
        shutil.rmtree(build)
    build.mkdir(parents=True)
    entries = []
    for path, spec in sorted(tree.items()):
        if isinstance(spec, str | bytes):
            spec = F(spec)
        if isinstance(spec, F):
            data = _as_bytes(spec.content)
            staged = "gateway" + path
            dest = build / staged
            dest.parent.mkdir(parents=True, exist_ok=True)
            dest.write_bytes(data)
            entries.append(
                {
                    "path": path,
                    "kind": "file",
                    "mode": spec.mode,
                    "sha256": hashlib.sha256(data).hexdigest(),
                    "size": len(data),
                    "staged": staged,
                    "role": spec.role,
                    "fields": list(spec.fields),
                }
            )
        elif isinstance(spec, L):
            entry: dict[str, object] = {
                "path": path,
                "kind": "symlink",
                "target": spec.target,
                "role": spec.role,
                "fields": list(spec.fields),
            }
            if spec.preserve:
                entry["preserve"] = spec.preserve
            entries.append(entry)
        else:
            entries.append(
                {"path": path, "kind": "dir", "mode": spec.mode, "role": spec.role, "fields": list(spec.fields)}
            )
    manifest = {"format": 1, "cluster": cluster, "entries": entries}
    (build / "manifest.json").write_text(json.dumps(manifest, indent=2))
    return build


def make_tree(root: Path, tree: Mapping[str, Spec]) -> Path:
    """Create files, symlinks and dirs under `root` (gateway paths), with the modes given."""
    root.mkdir(parents=True, exist_ok=True)
    for path, spec in sorted(tree.items()):
        dest = root / path.lstrip("/")
        dest.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(spec, str | bytes):
            spec = F(spec)
        if isinstance(spec, F):
            dest.write_bytes(_as_bytes(spec.content))
            os.chmod(dest, int(spec.mode, 8))
        elif isinstance(spec, L):
            os.symlink(spec.target, dest)
        else:
            dest.mkdir(exist_ok=True)
            os.chmod(dest, int(spec.mode, 8))
    return root


def snapshot(root: Path) -> dict[str, tuple[str, int, int, str]]:
    """Every object under root: (kind, mode, mtime_ns, content or link text) keyed by gateway path."""
    out: dict[str, tuple[str, int, int, str]] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            p = Path(dirpath) / name
            st = p.lstat()
            rel = "/" + str(p.relative_to(root))
            if stat.S_ISLNK(st.st_mode):
                out[rel] = ("symlink", 0, st.st_mtime_ns, os.readlink(p))
            elif stat.S_ISDIR(st.st_mode):
                out[rel] = ("dir", stat.S_IMODE(st.st_mode), st.st_mtime_ns, "")
            else:
                digest = hashlib.sha256(p.read_bytes()).hexdigest()
                out[rel] = ("file", stat.S_IMODE(st.st_mode), st.st_mtime_ns, digest)
    return out


def record_of(target: Path) -> Record:
    path = target / STATE_PATH.lstrip("/")
    return parse_record(path.read_text()) if path.exists() else Record()


def plan_for(
    build: Path, target: Path, opts: PlanOptions = DEFAULT_PLAN_OPTIONS, extra: tuple[Change, ...] = ()
) -> Plan:
    return plan_target(build, target, opts, extra)


def deploy(
    build: Path, target: Path, opts: ApplyOptions | None = None, plan_opts: PlanOptions = DEFAULT_PLAN_OPTIONS
) -> ApplyResult:
    return apply_target(build, target, opts or ApplyOptions(reload_argv=None), plan_opts)


require_tool = require_program
