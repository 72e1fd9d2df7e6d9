"""Changes as value objects: what a plan proposes and what apply carries out. Equal changes compare equal,
so tests assert on plans without executing anything."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

# keygen: generate a known node's missing ssh host keys in its directory; known_hosts: write a known_hosts
# assembled by apply from the keys on the share (pipeline/state/hostkeys.py); mkhome: a user's home on a shared
# mount, copied from the root (pipeline/state/homes.py).
Op = Literal["mkdir", "create", "update", "chmod", "replace", "remove", "keygen", "known_hosts", "mkhome"]
OPS: tuple[Op, ...] = ("mkdir", "create", "update", "chmod", "replace", "remove", "keygen", "known_hosts", "mkhome")


@dataclass(frozen=True)
class Change:
    """One step that makes one path of the target match the desired state.

    `old` is the observed fingerprint (see observe.Fact.fingerprint) a saved plan is checked against.
    The new content comes from `staged` (a file under build/, checked by `sha256`), from `copy_from` (a file
    of the target root itself, checked the same way) or from `content`
    (text the plan generated itself: the deployed-state record, a capabilities remedy).
    """

    op: Op
    path: str
    kind: str  # the kind after the change; for `remove`, the kind removed
    reason: str
    role: str = ""
    fields: tuple[str, ...] = ()
    old: str = "missing"
    mode: int | None = None
    old_mode: int | None = None
    sha256: str | None = None
    staged: str | None = None
    copy_from: str | None = None  # a file of the target root to copy (the root's kernel or initrd)
    content: str | None = None
    target: str | None = None
    old_target: str | None = None
    preserve: str | None = None  # the replaced regular file is copied here (the node skeleton)
    keep_as: str | None = None  # a replaced initrd is kept here for rollback
    backup: bool = False  # the replaced original is kept in the timestamped backup directory
    diff: str | None = None

    @property
    def old_kind(self) -> str:
        return self.old.split(":", 1)[0]


@dataclass(frozen=True)
class Plan:
    cluster: str
    target: str
    changes: tuple[Change, ...]
    observed: dict[str, str] = field(default_factory=dict)  # path -> fingerprint, every path looked at
    journal: str = ""  # record written before the first change so an interrupted apply can be finished
    reload_exports: bool = False
    reload_services: tuple[str, ...] = ()  # roles of owned services (pipeline.state.services) to reload
    warnings: tuple[str, ...] = ()

    @property
    def summary(self) -> dict[str, int]:
        counts = {"create": 0, "change": 0, "replace": 0, "remove": 0}
        for c in self.changes:
            if c.op in ("mkdir", "create", "keygen", "mkhome") or (c.op == "known_hosts" and c.old_kind == "missing"):
                counts["create"] += 1
            elif c.op in ("update", "chmod", "known_hosts"):
                counts["change"] += 1
            else:
                counts[c.op] += 1
        return counts
