"""`nfsroot rollback`: point the deployed pxelinux configs back at a previous initrd generation.

Apply keeps the previous initrds (deploy.keep_initrds generations, recorded in the deployed-state record).
Rolling back rewrites the INITRD lines (and `initrd=` in APPEND lines) of every deployed pxelinux file,
replacing each current initrd's file name by the kept one, as an ordinary plan: atomic writes, originals
backed up. The next `plan` shows the configs drifting back to the manifest, as it should.
"""

from __future__ import annotations

import hashlib
import re
from pathlib import Path

from pipeline.errors import PipelineError
from pipeline.state.changes import Change, Plan
from pipeline.state.observe import observe_path
from pipeline.state.plan import text_diff
from pipeline.state.record import STATE_PATH, parse_record
from pipeline.state.rootfs import TargetRoot

_INITRD_LINE = re.compile(r"^(\s*initrd\s+)(\S+)(.*)$", re.IGNORECASE)
_APPEND_ARG = re.compile(r"(\binitrd=)([^\s]+)")


class RollbackError(PipelineError):
    """There is nothing to roll back to, or the deployed configs do not mention the current initrd."""


def _basename(path: str) -> str:
    return path.rsplit("/", 1)[-1]


def _swap_items(items: str, mapping: dict[str, str]) -> str:
    out = []
    for item in items.split(","):
        head, _, name = item.rpartition("/")
        new = mapping.get(name)
        out.append(f"{head}/{new}" if new and head else new or item)
    return ",".join(out)


def rewrite_initrds(text: str, mapping: dict[str, str]) -> str:
    """Replace initrd file names (basename -> basename) in INITRD lines and APPEND initrd= arguments."""
    lines = []
    for line in text.splitlines(keepends=True):
        body = line.rstrip("\n")
        end = line[len(body) :]
        m = _INITRD_LINE.match(body)
        if m:
            body = m.group(1) + _swap_items(m.group(2), mapping) + m.group(3)
        elif body.lstrip().lower().startswith("append"):
            body = _APPEND_ARG.sub(lambda a: a.group(1) + _swap_items(a.group(2), mapping), body)
        lines.append(body + end)
    return "".join(lines)


def rollback_plan(target: Path, steps: int = 1) -> Plan:
    """The changes that point pxelinux at the initrd generation `steps` back; raises RollbackError if none."""
    with TargetRoot(target) as root:
        state = observe_path(root, STATE_PATH)
        if state.kind != "file" or state.text is None:
            raise RollbackError(f"nothing was deployed to {target} (no {STATE_PATH})")
        record = parse_record(state.text)
        if len(record.initrds) <= steps:
            raise RollbackError(
                f"no initrd generation {steps} back is kept ({len(record.initrds)} recorded; see deploy.keep_initrds)"
            )
        current, previous = record.initrds[0], record.initrds[steps]
        if len(current) != len(previous):
            raise RollbackError(
                f"the previous initrd generation has {len(previous)} files, the current {len(current)}; "
                "edit the pxelinux files by hand"
            )
        for path in previous:
            if observe_path(root, path).kind != "file":
                raise RollbackError(f"the kept initrd {path} is missing from the target")
        mapping = {_basename(c): _basename(p) for c, p in zip(current, previous, strict=True) if c != p}
        changes: list[Change] = []
        texts: list[str] = []
        for path, deployed in sorted(record.entries.items()):
            if deployed.role != "pxelinux" or deployed.kind != "file":
                continue
            fact = observe_path(root, path)
            if fact.kind != "file" or fact.text is None:
                continue
            texts.append(fact.text)
            new = rewrite_initrds(fact.text, mapping)
            if new == fact.text:
                continue
            changes.append(
                Change(
                    "update",
                    path,
                    "file",
                    f"rollback to initrd generation -{steps}: {', '.join(previous)}",
                    "pxelinux",
                    old=fact.fingerprint,
                    mode=fact.mode,
                    old_mode=fact.mode,
                    sha256=hashlib.sha256(new.encode()).hexdigest(),
                    content=new,
                    backup=True,
                    diff=text_diff(path, fact.text, new, "rollback"),
                )
            )
        already = any(name in (t or "") for t in texts for name in mapping.values())
    if not changes and mapping and not already:
        raise RollbackError("no deployed pxelinux file mentions the current initrd; nothing to roll back")
    return Plan(cluster=record.cluster, target=str(target), changes=tuple(changes))
