"""A plan as text (in the style of `terraform plan`, with unified diffs) and as JSON (docs/plan.md)."""

from __future__ import annotations

import json
import shlex
from collections.abc import Mapping
from dataclasses import fields
from pathlib import Path
from typing import Any, cast

from pipeline.errors import PipelineError
from pipeline.state.changes import OPS, Change, Op, Plan
from pipeline.state.manifest import check_gateway_path
from pipeline.state.services import BY_ROLE, SERVICE_ROLES
from pipeline.textsafe import printable

PLAN_FORMAT = 1
_SYMBOL = {
    "mkdir": "+",
    "create": "+",
    "update": "~",
    "chmod": "~",
    "replace": "-/+",
    "remove": "-",
    "keygen": "+",
    "known_hosts": "~",
    "mkhome": "+",
}


class PlanFileError(PipelineError):
    """A saved plan file cannot be used."""


def _what(c: Change) -> str:
    if c.op == "remove":
        return f"({c.kind})"
    if c.op == "chmod":
        return f"(mode {c.old_mode:04o} -> {c.mode:04o})" if c.old_mode is not None and c.mode is not None else ""
    if c.op == "mkhome":
        return f"(home dir {c.mode or 0:04o}, owner {c.content}, from {c.copy_from})"
    if c.op == "keygen":
        return f"(ssh host keys: {(c.content or '').partition(chr(10))[2]})"
    if c.kind == "symlink":
        new = f"symlink -> {c.target}"
        return f"({c.old_kind} -> {new})" if c.op == "replace" else f"({new})"
    new = f"{c.kind} {c.mode:04o}" if c.mode is not None else c.kind
    return f"({c.old_kind} -> {new})" if c.op == "replace" else f"({new})"


def _keeps(c: Change) -> list[str]:
    out = []
    if c.preserve:
        out.append(f"original kept at {c.preserve} (node skeleton)")
    if c.keep_as:
        out.append(f"previous initrd kept at {c.keep_as} (rollback)")
    if c.backup:
        out.append("original kept in the backup directory")
    return out


def _diff_line(line: str) -> str:
    """A diff line with its control characters escaped, tabs kept (they are ordinary in text files)."""
    return "\t".join(printable(part) for part in line.split("\t"))


def render_text(
    plan: Plan,
    target_label: str | None = None,
    diffs: bool = True,
    *,
    reload: tuple[str, ...] | None,
    service_reloads: Mapping[str, tuple[str, ...]] | None = None,
) -> str:
    """The plan as a terraform-style summary; `reload` is the exports reload command that will really run,
    None when disabled (no default: a guessed command is what the plan used to print, issue 13);
    `service_reloads` the reload command of each owned service by role, missing when disabled."""
    # Paths, link targets, reasons and diffs come from the target and may hold newlines or ESC sequences
    # (issue 12 defect 11): every such value goes through printable(), so no line can be faked.
    lines = [f'nfsroot plan: cluster "{printable(plan.cluster)}", target {printable(target_label or plan.target)}', ""]
    lines.extend(f"warning: {printable(w)}" for w in plan.warnings)
    if plan.warnings:
        lines.append("")
    if not plan.changes:
        lines.append("No changes. The target matches the build.")
        return "\n".join(lines) + "\n"
    for c in plan.changes:
        symbol = "+" if c.op == "known_hosts" and c.old_kind == "missing" else _SYMBOL[c.op]
        lines.append(f"{symbol:>3} {c.op:<8} {printable(c.path)}  {printable(_what(c))}".rstrip())
        lines.append(f"      reason: {printable(c.reason)}")
        lines.extend(f"      {printable(note)}" for note in _keeps(c))
        if diffs and c.diff:
            lines.extend(f"      {_diff_line(line)}".rstrip() for line in c.diff.splitlines())
    lines.append("")
    if plan.reload_exports and reload:
        lines.append(f"The exports change: apply will run `{printable(shlex.join(reload))}` afterwards.")
    elif plan.reload_exports:
        lines.append(
            "The exports change: reloading is disabled (deploy.reload: [] or --no-reload), "
            "so reload the NFS server yourself."
        )
    for role in plan.reload_services:
        service = BY_ROLE[role]
        argv = (service_reloads or {}).get(role)
        if argv:
            lines.append(f"The {service.label} changes: apply will run `{printable(shlex.join(argv))}` afterwards.")
        else:
            lines.append(
                f"The {service.label} changes: reloading is disabled ({service.reload_field}: []), "
                f"{service.by_hand} yourself."
            )
    s = plan.summary
    lines.append(
        f"Plan: {s['create']} to create, {s['change']} to change, {s['replace']} to replace, {s['remove']} to remove."
    )
    return "\n".join(lines) + "\n"


def _encode(c: Change) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for f in fields(Change):
        value = getattr(c, f.name)
        if f.name in ("mode", "old_mode") and value is not None:
            value = f"{value:04o}"
        elif f.name == "fields":
            value = list(value)
        out[f.name] = value
    return out


def plan_to_json(plan: Plan) -> str:
    doc = {
        "format": PLAN_FORMAT,
        "cluster": plan.cluster,
        "target": plan.target,
        "summary": plan.summary,
        "reload_exports": plan.reload_exports,
        "changes": [_encode(c) for c in plan.changes],
        "observed": plan.observed,
        "journal": plan.journal,
        "warnings": list(plan.warnings),
    }
    for role in plan.reload_services:  # only when true: plans without DHCP or HTTP read as before
        doc[f"reload_{role}"] = True
    return json.dumps(doc, indent=2, sort_keys=True) + "\n"


def _decode(raw: dict[str, Any]) -> Change:
    names = {f.name for f in fields(Change)}
    if set(raw) != names:
        raise ValueError(f"unexpected or missing keys {sorted(set(raw) ^ names)}")
    if raw["op"] not in OPS:
        raise ValueError(f"unknown op {raw['op']!r}")
    check_gateway_path(raw["path"])
    for key in ("preserve", "keep_as", "copy_from"):
        if raw[key] is not None:
            check_gateway_path(raw[key])
    if raw["staged"] is not None and (raw["staged"].startswith("/") or ".." in raw["staged"].split("/")):
        raise ValueError(f"bad staged path {raw['staged']!r}")
    values = dict(raw)
    for key in ("mode", "old_mode"):
        if values[key] is not None:
            values[key] = int(values[key], 8)
    values["fields"] = tuple(values["fields"])
    values["op"] = cast(Op, values["op"])
    return Change(**values)


def plan_from_json(text: str, where: str) -> Plan:
    """A plan saved with `nfsroot plan --out`; validated, since apply acts on it."""
    try:
        doc = json.loads(text)
        if doc.get("format") != PLAN_FORMAT:
            raise ValueError(f"unknown plan format {doc.get('format')!r}")
        changes = tuple(_decode(c) for c in doc["changes"])
        observed = {str(k): str(v) for k, v in doc["observed"].items()}
        return Plan(
            cluster=str(doc["cluster"]),
            target=str(doc["target"]),
            changes=changes,
            observed=observed,
            journal=str(doc["journal"]),
            reload_exports=bool(doc["reload_exports"]),
            reload_services=tuple(role for role in SERVICE_ROLES if doc.get(f"reload_{role}", False) is True),
            warnings=tuple(str(w) for w in doc["warnings"]),
        )
    # RecursionError: json recurses per nesting level, and this file is not ours to trust (issue 12 defect 8).
    except (ValueError, KeyError, TypeError, AttributeError, RecursionError) as exc:
        raise PlanFileError(f"{where}: not a usable plan file ({exc})") from None


def read_plan_file(path: Path) -> Plan:
    """Read and validate a plan saved with `nfsroot plan --out`; any reason it cannot be read is one PlanFileError."""
    try:
        text = path.read_bytes().decode("utf-8")
    except OSError as exc:
        raise PlanFileError(f"{path}: cannot read the saved plan ({exc.strerror or exc})") from None
    except UnicodeDecodeError as exc:
        raise PlanFileError(f"{path}: not a usable plan file (not UTF-8 at byte {exc.start})") from None
    return plan_from_json(text, str(path))
