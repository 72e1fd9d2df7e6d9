"""`nfsroot rollback`: point the deployed pxelinux configs back at a previous boot generation.

Apply keeps the previous generations (deploy.keep_initrds of them, recorded in the deployed-state record):
each is the kernel, the distro initrd and our overlay the configs named. Rolling back rewrites the KERNEL
and INITRD lines (and `initrd=` in APPEND lines) of every deployed pxelinux file, replacing each current
file name by the kept one, as an ordinary plan: atomic writes, originals
backed up. The next `plan` shows the configs drifting back to the manifest, as it should.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

from pipeline.errors import PipelineError
from pipeline.state.changes import Change, Plan
from pipeline.state.observe import observe_path
from pipeline.state.plan import text_diff
from pipeline.state.pxecfg import rewrite_boot_names
from pipeline.state.record import STATE_PATH, parse_record
from pipeline.state.rootfs import TargetRoot


class RollbackError(PipelineError):
    """There is nothing to roll back to, or the deployed configs do not mention the current initrd."""


def _basename(path: str) -> str:
    return path.rsplit("/", 1)[-1]


def rewrite_initrds(text: str, mapping: dict[str, str]) -> str:
    """Kept for callers of the old name: rewrite_boot_names handles KERNEL lines too."""
    return rewrite_boot_names(text, mapping)


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
            new = rewrite_boot_names(fact.text, mapping)
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
