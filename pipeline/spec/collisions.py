"""Paths on the gateway that two things would claim: each rule names the spec field that causes it.

apply writes shares' directories, the exports and hosts files, the pxelinux configuration, symlinks in the
root share and its own record; none of them may be, hold or sit inside another that it manages differently.
"""

from __future__ import annotations

import posixpath
from collections.abc import Iterator
from typing import TYPE_CHECKING

from pipeline.state.record import BACKUP_ROOT, STATE_PATH

if TYPE_CHECKING:
    from pipeline.spec.model import Cluster

Loc = tuple[str | int, ...]
Finding = tuple[Loc, str, str]

# Directories on the gateway that apply keeps for itself.
_OWN_DIRS = (
    ("nfsroot-pipeline's deployed-state record", posixpath.dirname(STATE_PATH)),
    ("nfsroot-pipeline's backups", BACKUP_ROOT),
)


def under(path: str, parent: str) -> bool:
    return parent == "/" or path == parent or path.startswith(parent.rstrip("/") + "/")


def strictly_under(path: str, parent: str) -> bool:
    return path != parent and under(path, parent)


def collision_problems(c: Cluster) -> list[Finding]:
    return list(_deploy(c)) + list(_own_dirs(c)) + list(_symlinks_in_root(c))


def _relation(path: str, other: str) -> str | None:
    if path == other:
        return "is"
    if strictly_under(path, other):
        return "is inside"
    if strictly_under(other, path):
        return "contains"
    return None


_OWNED_HINT = (
    "apply owns this file: keep it apart from the shares, the TFTP root, the other file "
    "and nfsroot-pipeline's own directories"
)


def _own_dirs(c: Cluster) -> Iterator[Finding]:
    """Shares and the TFTP root stay apart from apply's record and backups (a read-write share holding them
    would let any node's root rewrite what apply believes it deployed)."""
    places: list[tuple[Loc, str, str]] = [
        (("shares", name, "path"), share.path, "export") for name, share in c.shares.items()
    ]
    places.append((("gateway", "tftp_root"), c.gateway.tftp_root, "serve"))
    for loc, path, verb in places:
        found = [(relation, f"{what} ({own})") for what, own in _OWN_DIRS if (relation := _relation(path, own))]
        if found:
            relation, what = found[0]
            yield (
                loc,
                f"{path} {relation} {what}",
                f"apply keeps its record and backups there: {verb} another directory",
            )


def _symlinks_in_root(c: Cluster) -> Iterator[Finding]:
    """A symlink is created at the root share's path + its source: it must not replace a directory that the
    pipeline manages there (a share nested in the root, the TFTP root, a writable mount's gateway directory)."""
    root = c.shares.get(c.root.share)
    if root is None:
        return
    places = [(f"share {name!r} ({share.path})", share.path) for name, share in c.shares.items() if share is not root]
    places.append((f"the TFTP root ({c.gateway.tftp_root})", c.gateway.tftp_root))
    places += [(f"{what} ({path})", path) for what, path in _OWN_DIRS]
    places += [
        (f"the gateway directory of writable[{i}] ({c.writable_parent(w)})", c.writable_parent(w))
        for i, w in enumerate(c.writable)
        if w.share is not None and w.share in c.shares
    ]
    for source in c.symlinks:
        if source == "/":
            continue
        on_gateway = root.path.rstrip("/") + source
        found = [
            (relation, what) for what, path in places if (relation := _relation(on_gateway, path)) in ("is", "contains")
        ]
        if found:
            relation, what = found[0]
            yield (
                ("symlinks", source),
                f"{source} is {on_gateway} on the gateway, which {relation} {what}",
                "a symlink there would replace a directory the pipeline manages",
            )


def _deploy(c: Cluster) -> Iterator[Finding]:
    """The two files apply writes outside the shares must not be, hold or sit in anything else it manages."""
    places = [(f"share {name!r} ({share.path})", share.path) for name, share in c.shares.items()]
    places.append((f"the TFTP root ({c.gateway.tftp_root})", c.gateway.tftp_root))
    places += [(f"{what} ({path})", path) for what, path in _OWN_DIRS]
    deploy = c.deploy
    for field, path in (("exports_file", deploy.exports_file), ("hosts_file", deploy.hosts_file)):
        found = [(relation, what) for what, other in places if (relation := _relation(path, other))]
        if field == "exports_file" and (relation := _relation(path, deploy.hosts_file)):
            what = "also deploy.hosts_file" if relation == "is" else f"deploy.hosts_file ({deploy.hosts_file})"
            found.insert(0, (relation, what))
        if found:
            relation, what = found[0]
            yield ("deploy", field), f"{path} {relation} {what}", _OWNED_HINT
